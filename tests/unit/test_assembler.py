"""Tick assembly rules (pure; no Kafka). Interval 60 s, lateness 120 s, max_gap 3."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.assembler import (
    NO_TICK,
    RESET_REASONS,
    ClosedTick,
    CommitPoint,
    Polled,
    TickAssembler,
)
from tankwatch.codec import Reading

INTERVAL = 60.0


def rd(
    tank: str,
    tick: int,
    offset: int,
    partition: int = 0,
    frac: float = 0.5,
    event: str | None = None,
    value: float = 100.0,
) -> Polled:
    return Polled(
        Reading(tank, (tick + frac) * INTERVAL, value, 20.0, event), partition, offset, 0.0
    )


def asm() -> TickAssembler:
    return TickAssembler(INTERVAL, allowed_lateness_s=120.0, max_gap_ticks=3)


def applied(ticks: list[ClosedTick], a: TickAssembler) -> dict[str, list[tuple[int, float, str]]]:
    """Per tank: (tick, pressure, reset reason) in the order applied."""
    out: dict[str, list[tuple[int, float, str]]] = {}
    for ct in ticks:
        for i, row in enumerate(ct.rows.tolist()):
            tank = a.registry.tank_at(row)
            assert tank is not None
            out.setdefault(tank, []).append(
                (ct.tick, float(ct.x[i, 0]), RESET_REASONS[int(ct.reset_reason[i])])
            )
    return out


def test_complete_tick_closes_with_fixed_rows_and_values() -> None:
    a = asm()
    a.add([rd("B", 0, 0, value=2.0), rd("A", 0, 1, value=1.0)])
    (ct,) = a.close()
    assert (ct.tick, ct.trigger) == (0, "complete")
    assert a.registry.row("B") == 0 and a.registry.row("A") == 1  # first seen, first row
    assert ct.rows.tolist() == [0, 1]
    assert ct.x[:, 0].tolist() == [2.0, 1.0]
    assert ct.prev_tick.tolist() == [NO_TICK, NO_TICK]
    assert [RESET_REASONS[r] for r in ct.reset_reason] == ["new_tank", "new_tank"]


def test_tick_waits_for_every_active_tank() -> None:
    a = asm()
    a.add([rd("A", 0, 0), rd("B", 0, 1)])
    a.close()
    a.add([rd("A", 1, 2)])
    assert a.close() == []  # B is active and has not reported tick 1
    a.add([rd("B", 1, 3)])
    (ct,) = a.close()
    assert (ct.tick, ct.trigger, ct.rows.size) == (1, "complete", 2)


def test_several_readings_in_one_tick_first_wins() -> None:
    a = asm()
    a.add([rd("A", 0, 0, value=1.0), rd("A", 0, 1, value=9.0, frac=0.9)])
    (ct,) = a.close()
    assert ct.x[:, 0].tolist() == [1.0]
    assert a.dropped == {"late": 0, "duplicate": 1}


def test_duplicate_of_applied_tick_is_dropped() -> None:
    a = asm()
    a.add([rd("A", 0, 0)])
    a.close()
    a.add([rd("A", 0, 1)])
    assert a.close() == []
    assert a.dropped["duplicate"] == 1


def test_out_of_order_across_tanks_is_applied_in_tick_order() -> None:
    a = asm()
    a.add([rd("A", 0, 0), rd("B", 0, 1)])
    a.close()
    # A's tick-2 reading comes before B's tick-1 reading (same partition, within lateness).
    a.add([rd("A", 1, 2), rd("A", 2, 3), rd("B", 1, 4), rd("B", 2, 5)])
    ticks = a.close()
    assert [(c.tick, c.trigger, c.rows.size) for c in ticks] == [
        (1, "complete", 2),
        (2, "complete", 2),
    ]


def test_a_tanks_own_older_reading_is_late() -> None:
    """Per-tank order: B's tick-1 reading after its tick-2 reading is dropped, whether or
    not tick 2 was applied yet -- the decision depends on the partition's order only."""
    a = asm()
    a.add([rd("A", 0, 0), rd("B", 0, 1)])
    a.close()
    a.add([rd("B", 2, 2), rd("B", 1, 3), rd("A", 1, 4), rd("A", 2, 5)])
    got = applied(a.close(), a)
    assert [t for t, _, _ in got["B"]] == [2]
    assert a.dropped == {"late": 1, "duplicate": 0}


def test_late_is_decided_by_the_partitions_own_watermark() -> None:
    a = asm()
    a.add([rd("A", 5, 0)])  # partition max ts 5.5 ticks -> watermark 3.5 ticks
    a.add([rd("B", 2, 1), rd("C", 3, 2)])  # tick 2 ends at 3 <= 3.5: late; tick 3 ends at 4
    assert a.dropped["late"] == 1
    assert a.registry.get("B") is None  # a late reading creates no row
    assert "C" in a.registry


def test_gap_and_event_and_new_tank_reset_one_row() -> None:
    a = asm()
    a.add([rd("A", 0, 0), rd("B", 0, 1)])
    a.close()
    a.add([rd("A", 1, 2, event="refill"), rd("B", 1, 3)])
    (ct,) = a.close()
    assert [RESET_REASONS[r] for r in ct.reset_reason] == ["event", ""]
    # A silent for 4 ticks (> max_gap 3): reset by gap; B keeps reporting.
    readings = [rd("B", t, 10 + t) for t in range(2, 6)] + [rd("A", 6, 20), rd("B", 6, 21)]
    a.add(readings)
    got = applied(a.close(), a)
    assert got["A"] == [(6, 100.0, "gap")]
    assert all(reason == "" for _, _, reason in got["B"])


def test_new_tank_mid_run_gets_a_new_row_and_others_keep_theirs() -> None:
    a = asm()
    a.add([rd("A", 0, 0), rd("B", 0, 1)])
    a.close()
    a.add([rd("A", 1, 2), rd("B", 1, 3), rd("C", 1, 4)])
    (ct,) = a.close()
    assert (a.registry.row("A"), a.registry.row("B"), a.registry.row("C")) == (0, 1, 2)
    assert RESET_REASONS[int(ct.reset_reason[2])] == "new_tank"


def test_silent_tank_is_masked_and_watermark_closes_the_tick() -> None:
    a = asm()
    a.add([rd("A", 0, 0), rd("B", 0, 1)])
    a.close()
    a.add([rd("A", 1, 2)])
    assert a.close(lagging={0}) == []
    # Partition time moves on to tick 5.5: watermark 3.5 ticks passes the ends of 1 and 2.
    a.add([rd("A", 2, 3), rd("A", 3, 4), rd("A", 4, 5), rd("A", 5, 6)])
    ticks = a.close(lagging={0})
    assert [(c.tick, c.trigger) for c in ticks] == [(1, "watermark"), (2, "watermark")]
    assert all(c.rows.tolist() == [a.registry.row("A")] for c in ticks)


def test_pipeline_watermark_is_held_back_by_a_lagging_partition() -> None:
    a = asm()
    a.assign(0)
    a.assign(1)
    a.add([rd("A", 0, 0, partition=0), rd("B", 0, 0, partition=1)])
    assert [c.tick for c in a.close(lagging=set())] == [0]
    a.add([rd("A", t, t, partition=0) for t in range(1, 10)])
    # Partition 1 has unread data: its watermark (-inf after tick 0.5) holds tick 1.
    assert a.close(lagging={1}) == []
    assert a.watermark({1}) == a.partition_watermark(1)
    # Once partition 1 is caught up it no longer holds the pipeline back.
    # Ticks 1..3 still expect B (seen within max_gap): the watermark (7.5 ticks) closes
    # them; from tick 4 on B is no longer expected and A alone completes the tick.
    closed = a.close(lagging=set())
    assert [c.tick for c in closed] == list(range(1, 10))
    assert [c.trigger for c in closed[:6]] == ["watermark"] * 6
    assert closed[-1].trigger == "complete"


def test_complete_waits_until_lagging_partitions_reach_the_tick() -> None:
    """Tanks of a partition not read yet are unknown; a lagging partition that has not
    reached the end of a tick keeps it from closing as complete."""
    a = asm()
    a.assign(0)
    a.assign(1)
    a.add([rd("A", 0, 0, partition=0)])
    assert a.close(lagging={1}) == []  # partition 1 unread: B might be in tick 0
    a.add([rd("B", 0, 0, partition=1), rd("B", 1, 1, partition=1)])
    a.add([rd("A", 1, 1, partition=0)])
    ticks = a.close(lagging={1})
    assert [(c.tick, c.trigger, c.rows.size) for c in ticks] == [(0, "complete", 2)]


def test_catchup_applies_a_closed_tick_for_one_row() -> None:
    a = asm()
    a.add([rd("A", 0, 0, partition=0), rd("B", 0, 0, partition=1)])
    a.close()
    a.add([rd("A", t, t, partition=0) for t in range(1, 8)])
    a.close(lagging=set())  # partition 1 looked caught up: ticks 1..7 closed without B
    assert a.closed_upto == 7
    # B's tick-1 reading arrives: not late for partition 1 (its max is still tick 0.5).
    a.add([rd("B", 1, 1, partition=1, value=7.0), rd("B", 1, 2, partition=1)])
    (ct,) = a.close(lagging={1})
    assert (ct.tick, ct.trigger, ct.rows.tolist()) == (1, "catchup", [a.registry.row("B")])
    assert ct.x[0, 0] == 7.0 and ct.prev_tick.tolist() == [0]
    assert a.dropped["duplicate"] == 1  # the second tick-1 reading of B


def test_commit_point_never_passes_a_held_reading() -> None:
    a = asm()
    a.assign(0)
    a.add([rd("A", 0, 0), rd("B", 0, 1)])
    a.advance(0, 2)
    a.close()
    assert a.commit_points() == {0: CommitPoint(2, 0.5 * INTERVAL)}
    a.add([rd("A", 1, 2), rd("X", 1, 3, frac=0.7)])  # X is new; B has not reported tick 1
    a.add([rd("A", 2, 4)])
    a.advance(0, 5)
    assert a.close() == []  # tick 1 still waits for B
    point = a.commit_points()[0]
    assert point.offset == 2  # the oldest reading still held
    assert point.max_ts == 0.5 * INTERVAL  # partition max before offset 2


def test_revoke_frees_rows_and_drops_held_readings() -> None:
    a = asm()
    a.add([rd("A", 0, 0, partition=0), rd("B", 0, 0, partition=1)])
    a.close()
    a.add([rd("B", 1, 1, partition=1)])
    released = a.revoke([1])
    assert released == [("B", 1)]
    assert a.held() == 0 and "B" not in a.registry
    a.add([rd("C", 1, 1, partition=0)])
    assert a.registry.row("C") == 1  # the free row is reused
    assert a.last_applied[1] == NO_TICK


def test_restored_tank_is_not_new_and_old_ticks_are_duplicates() -> None:
    a = asm()
    a.assign(0, CommitPoint(10, 5.5 * INTERVAL))
    a.restore_tank("A", 0, last_applied_tick=5)
    a.add([rd("A", 5, 10), rd("A", 6, 11)])
    (ct,) = a.close()
    assert ct.tick == 6 and ct.prev_tick.tolist() == [5] and ct.reset_reason.tolist() == [0]
    assert a.dropped["duplicate"] == 1


# A tank's applied sequence must not depend on batching or on which partitions look
# caught up (that is what makes 1x and 1000x replay agree).
@st.composite
def streams(draw: st.DrawFn) -> list[list[Polled]]:
    n_parts = draw(st.integers(1, 3))
    out = []
    for p in range(n_parts):
        tanks = [f"P{p}T{k}" for k in range(draw(st.integers(1, 3)))]
        recs: list[Polled] = []
        for t in range(draw(st.integers(3, 25))):
            here = [k for k in tanks if draw(st.booleans()) or t == 0]
            order = draw(st.permutations(here))
            for tank in order:
                recs.append(
                    rd(
                        tank,
                        t,
                        len(recs),
                        p,
                        frac=draw(st.sampled_from([0.1, 0.5, 0.9])),
                        value=float(len(recs)),
                    )
                )
                if draw(st.integers(0, 9)) == 0:  # duplicate of the same tick
                    recs.append(rd(tank, t, len(recs), p, value=-1.0))
            if draw(st.integers(0, 12)) == 0:  # a stray old reading, maybe late
                old = max(0, t - draw(st.integers(1, 5)))
                recs.append(rd(draw(st.sampled_from(tanks)), old, len(recs), p, value=-2.0))
        out.append(recs)
    return out


def _feed(
    a: TickAssembler, parts: list[list[Polled]], chunks: list[int], lag_choices: list[bool]
) -> Iterator[list[ClosedTick]]:
    """Round-robin batches of ``chunks`` sizes from each partition into ``a``; yields the
    ticks closed after each batch (``lag_choices``: whether a lagging partition is
    reported as lagging -- sometimes the high water is not known yet)."""
    pos = [0] * len(parts)
    i = 0
    while any(pos[p] < len(parts[p]) for p in range(len(parts))):
        for p in range(len(parts)):
            n = chunks[i % len(chunks)]
            i += 1
            batch = parts[p][pos[p] : pos[p] + n]
            pos[p] += len(batch)
            a.add(batch)
            lagging = {q for q in range(len(parts)) if pos[q] < len(parts[q])}
            lagging = {q for q in lagging if lag_choices[(i + q) % len(lag_choices)]}
            yield a.close(lagging)


def _run(parts: list[list[Polled]], chunks: list[int], lag_choices: list[bool]) -> dict:
    a = asm()
    ticks = [ct for closed in _feed(a, parts, chunks, lag_choices) for ct in closed]
    ticks += a.close(set())
    return {k: v for k, v in applied(ticks, a).items()}


@settings(max_examples=60, deadline=None)
@given(
    streams(),
    st.lists(st.integers(1, 40), min_size=1, max_size=5),
    st.lists(st.booleans(), min_size=1, max_size=7),
)
def test_applied_sequence_is_independent_of_batching_and_lag(
    parts: list[list[Polled]], chunks: list[int], lag: list[bool]
) -> None:
    reference = _run(parts, [10**6], [True])
    got = _run(parts, chunks, lag)
    # Ticks still open at the end are not applied in either run; compare what both did.
    for tank in reference.keys() | got.keys():
        r, g = reference.get(tank, []), got.get(tank, [])
        n = min(len(r), len(g))
        assert r[:n] == g[:n], tank
        assert all(math.isfinite(v) for _, v, _ in g)


def test_tick_rows_are_sorted_and_arrays_align() -> None:
    a = asm()
    a.add([rd(f"T{k}", 0, k) for k in (3, 1, 2, 0)])
    (ct,) = a.close()
    assert np.all(np.diff(ct.rows) > 0)
    assert ct.x.shape == (4, 2) and ct.offsets.shape == ct.partitions.shape == (4,)


def _trace(parts: list[list[Polled]], chunks: list[int], per_reading: bool) -> list[object]:
    """Everything observable after each batch: closed ticks (every field), drop counts,
    commit points, held readings. ``per_reading`` forces the reference loop."""
    a = asm()
    if per_reading:
        a._all_accepted = lambda *args: False  # type: ignore[method-assign]
    out: list[object] = []
    for closed in _feed(a, parts, chunks, [True]):
        for ct in closed:
            out.append((ct.tick, ct.trigger, ct.rows.tolist(), ct.x.tolist(),
                        ct.ts.tolist(), ct.prev_tick.tolist(), ct.reset_reason.tolist(),
                        ct.partitions.tolist(), ct.offsets.tolist()))  # fmt: skip
        out.append((dict(a.dropped), a.commit_points(), a.held(), a.open_ticks))
    return out


@settings(max_examples=60, deadline=None)
@given(streams(), st.lists(st.integers(1, 40), min_size=1, max_size=5))
def test_whole_poll_fast_path_equals_the_per_reading_rules(
    parts: list[list[Polled]], chunks: list[int]
) -> None:
    assert _trace(parts, chunks, per_reading=False) == _trace(parts, chunks, per_reading=True)


def test_fast_path_is_taken_for_a_clean_poll() -> None:
    a = asm()
    seen: list[int] = []
    real = a._decide

    def spy(*args: object) -> object:
        seen.append(1)
        return real(*args)  # type: ignore[arg-type]

    a._decide = spy  # type: ignore[method-assign,assignment]
    a.add([rd(f"T{k}", t, 10 * t + k) for t in range(3) for k in range(10)])
    assert not seen  # every reading new and in order: decided for the whole poll
    a.add([rd("T0", 2, 99)])  # a second reading for the tick: the per-reading rules
    assert seen and a.dropped["duplicate"] == 1
