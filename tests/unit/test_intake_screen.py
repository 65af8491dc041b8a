"""Issue 10 items 3 and 9: one tank's clock cannot silence its neighbours, and a burst of
new tank ids is bounded -- the assembler's intake screen (pure, no Kafka)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.assembler import Columns, CommitPoint, TickAssembler

INTERVAL = 60.0
T0 = 1_700_000_000.0
DAY = 86400.0
YEARS_975 = 975 * 365.25 * DAY


def cols(readings: list[tuple[str, float]], first_offset: int) -> Columns:
    n = len(readings)
    return Columns(
        tank_ids=[t for t, _ in readings],
        ts=np.asarray([ts for _, ts in readings], np.float64),
        values=np.tile([100.0, 20.0], (n, 1)),
        event=np.zeros(n, bool),
        offsets=np.arange(first_offset, first_offset + n, dtype=np.int64),
        kafka_ts=np.zeros(n),
    )


def fleet_tick(k: int, tanks: str = "ABC") -> list[tuple[str, float]]:
    return [(t, T0 + k * INTERVAL + 1.0) for t in tanks]


def run(
    a: TickAssembler, batches: list[list[tuple[str, float]]], offset: int = 0
) -> tuple[list[tuple[int, str]], dict[str, set[int]], int]:
    """Feed batches to partition 0; returns (rejected as (offset, reason)), applied ticks
    per tank, next offset."""
    rejected = []
    applied: dict[str, set[int]] = {}
    ids = a.registry
    for batch in batches:
        c = cols(batch, offset)
        for i, reason in a.add_columns(0, c):
            rejected.append((int(c.offsets[i]), reason))
        offset += len(batch)
        a.advance(0, offset)
        for ct in a.close(()):
            for row in ct.rows.tolist():
                applied.setdefault(ids.tank_at(row) or "?", set()).add(ct.tick)
    return rejected, applied, offset


@pytest.mark.parametrize("skew", [DAY, YEARS_975])
@pytest.mark.parametrize("one_batch", [True, False])  # 1000x replay vs 1x: same decisions
def test_a_clock_far_ahead_is_dead_lettered_and_never_moves_the_watermark(
    skew: float, one_batch: bool
) -> None:
    a = TickAssembler(INTERVAL, 120.0, 3, max_skew_s=3600.0)
    k0 = int(T0 // INTERVAL)
    stream = [r for k in range(5) for r in fleet_tick(k)]
    stream.append(("B", T0 + 5 * INTERVAL + skew))  # offset 15: B's clock is wrong
    stream += [r for k in range(5, 10) for r in fleet_tick(k)]
    batches = [stream] if one_batch else [[r] for r in stream]
    rejected, applied, _ = run(a, batches)
    assert rejected == [(15, "clock_skew")]
    assert a.dropped == {"late": 0, "duplicate": 0}  # before the fix: every later reading late
    for tank in "ABC":  # the tank's own later correct readings are applied, too
        assert {k - k0 for k in applied[tank]} >= set(range(9))
    points = a.commit_points([0])
    assert points[0].max_ts < T0 + 11 * INTERVAL  # nothing the bad reading set is persisted


@pytest.mark.parametrize("skew", [DAY, YEARS_975])
def test_after_a_restart_the_same_clock_is_still_rejected(skew: float) -> None:
    a = TickAssembler(INTERVAL, 120.0, 3, max_skew_s=3600.0)
    _, _, offset = run(a, [[r for k in range(5) for r in fleet_tick(k)]])
    point = a.commit_points([0])[0]
    b = TickAssembler(INTERVAL, 120.0, 3, max_skew_s=3600.0)  # the restarted process
    b.assign(0, CommitPoint(point.offset, point.max_ts))
    for tank in "ABC":
        b.restore_tank(tank, 0, int(T0 // INTERVAL) + 3)
    batch = [("B", T0 + 5 * INTERVAL + skew)] + [r for k in range(5, 8) for r in fleet_tick(k)]
    rejected, applied, _ = run(b, [batch], offset)
    assert rejected == [(offset, "clock_skew")]
    assert b.dropped["late"] == 0 and len(applied["A"]) >= 2 and len(applied["B"]) >= 2
    assert b.commit_points([0])[0].max_ts < T0 + 9 * INTERVAL


def test_a_fleet_that_really_jumps_is_followed_once_most_tanks_agree() -> None:
    a = TickAssembler(INTERVAL, 120.0, 3, max_skew_s=3600.0)
    run(a, [fleet_tick(k) for k in range(3)])
    later = [(t, ts + DAY) for t, ts in fleet_tick(3)] + [
        (t, ts + DAY) for k in range(4, 6) for t, ts in fleet_tick(k)
    ]
    rejected, _applied, _ = run(a, [later], 9)
    assert rejected == [(9, "clock_skew")]  # only A's first reading, before B agreed
    assert a.commit_points([0])[0].max_ts > T0 + DAY


def test_skew_check_off_by_default() -> None:
    a = TickAssembler(INTERVAL, 120.0, 3)
    rejected, _, _ = run(a, [[*fleet_tick(0), ("B", T0 + DAY)]])
    assert rejected == []


def test_new_tanks_beyond_the_limit_are_rejected() -> None:
    a = TickAssembler(INTERVAL, 120.0, 3, max_tanks=2)
    rejected, applied, _ = run(a, [fleet_tick(0, "ABCD"), fleet_tick(1, "ABCD")])
    assert rejected == [(2, "too_many_tanks"), (3, "too_many_tanks"), (6, "too_many_tanks"),
                        (7, "too_many_tanks")]  # fmt: skip
    assert set(applied) == {"A", "B"} and len(a.registry) == 2


def test_idle_tanks_are_retired_and_come_back_with_their_last_tick() -> None:
    """Item 9: a tank silent for ``idle_s`` of event time frees its row; when it reports
    again it gets a row back, is listed in ``revived`` (the service restores its state
    from the checkpoint), and its old tick is still a duplicate."""
    a = TickAssembler(INTERVAL, 120.0, 3)
    run(a, [fleet_tick(0, "ABC"), fleet_tick(1, "ABC")])
    run(a, [fleet_tick(k, "AB") for k in range(2, 40)], 6)  # C goes quiet
    idle = a.idle(30 * INTERVAL, [0])
    assert [t for t, _ in idle] == ["C"]
    a.retire(idle)
    assert "C" not in a.registry and a.retired == 1 and len(a.registry) == 2
    k0 = int(T0 // INTERVAL)
    c_row = None
    rejected, _applied, _ = run(a, [[("C", T0 + 1 * INTERVAL + 5.0), *fleet_tick(40, "ABC")]], 200)
    assert rejected == [] and sum(a.dropped.values()) == 1  # C's tick 1 again: dropped
    assert [t for t, _ in a.revived] == ["C"] and a.retired == 0
    c_row = a.registry.row("C")
    assert int(a.last_applied[c_row]) == k0 + 40
