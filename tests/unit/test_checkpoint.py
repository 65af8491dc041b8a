"""Checkpoint records: exact round trip, the restore merge rules, and that a restored
tank continues exactly as if it had never stopped (real NumPy engine, no Kafka)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models.anomaly import AnomalyScorer
from models.artifact import load_artifact, load_forecaster
from pipeline.assembler import NO_TICK, ClosedTick, CommitPoint
from pipeline.checkpoint import (
    PARTITION_KEY,
    Checkpointer,
    b64_rows,
    decode_point,
    decode_state,
    encode_columns,
    encode_point,
    encode_state,
)
from pipeline.config import default_model_dir
from pipeline.forecast_step import ForecastStep, TankState


def offline(
    ck: Checkpointer,
    topic: list[tuple[bytes, bytes | None]],
    inc: str = "",
    bounds: dict[int, tuple[int | None, int | None]] | None = None,
) -> None:
    """No broker: ``tank.state`` holds ``topic``; the readings topic has id ``inc`` and
    these (start, end) bounds per partition (unknown if None)."""
    ck._read_topic = lambda partitions: topic  # type: ignore[method-assign]
    ck._readings_bounds = lambda partitions: (inc, bounds or {})  # type: ignore[method-assign]


class RecordingProducer:
    """Stands in for the Kafka producer: keeps what was sent (a unit-test fake)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes, int]] = []
        self.flushes = 0

    def send(self, topic: str, key: bytes, value: bytes, partition: int) -> None:
        self.sent.append((topic, key, value, partition))

    def flush(self, timeout: float | None = None) -> None:
        self.flushes += 1


def make_step(n: int = 4) -> ForecastStep:
    art = load_artifact(default_model_dir())
    engine = load_forecaster(default_model_dir(), "numpy", 0)
    step = ForecastStep(engine, AnomalyScorer(0, warmup=2), 30, (1, 5, 15, 30), art.scaler.std)
    step.ensure_capacity(n)
    return step


def tick(
    t: int, rows: list[int], x: np.ndarray, prev: list[int], reason: list[int] | None = None
) -> ClosedTick:
    n = len(rows)
    return ClosedTick(
        tick=t,
        trigger="complete",
        rows=np.asarray(rows, np.intp),
        x=np.asarray(x, np.float32).reshape(n, 2),
        ts=np.full(n, t * 60.0),
        prev_tick=np.asarray(prev, np.int64),
        reset_reason=np.asarray(reason or [0] * n, np.int8),
        partitions=np.zeros(n, np.int32),
        offsets=np.arange(n, dtype=np.int64),
        kafka_ts=np.zeros(n),
    )


def series(k: int, t: int) -> list[float]:
    return [240.0 + 5 * math.sin(t / 7 + k), 18.0 + math.cos(t / 5 + k)]


def run_ticks(step: ForecastStep, rows: list[int], t0: int, t1: int) -> list[Any]:
    outs = []
    for t in range(t0, t1):
        x = np.asarray([series(r, t) for r in rows])
        outs.append(step.apply(tick(t, rows, x, [t - 1] * len(rows))))
    return outs


def test_state_record_round_trip_is_exact() -> None:
    step = make_step()
    run_ticks(step, [0, 1, 2, 3], 0, 12)
    (state,) = step.snapshot([("T1", 1)], np.full(4, 11, np.int64), np.zeros(4, np.int32))
    back = decode_state(encode_state(state))
    assert (back.tank_id, back.partition, back.last_tick, back.last_ts) == (
        "T1",
        0,
        11,
        state.last_ts,
    )
    for a, b in (
        (state.h, back.h),
        (state.c, back.c),
        (state.held, back.held),
        (state.actual, back.actual),
    ):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    # NaN = "none yet" (e.g. the departure detector's reference level) must survive too.
    assert all(
        np.array_equal(state.anomaly[k], back.anomaly[k], equal_nan=True) for k in state.anomaly
    )
    assert state.extra and back.extra and set(state.extra) == set(back.extra)
    assert all(np.array_equal(state.extra[k], back.extra[k], equal_nan=True) for k in state.extra)
    p, point = decode_point(encode_point(3, CommitPoint(42, -math.inf)))
    assert (p, point) == (3, CommitPoint(42, -math.inf))


def _record_head(v: int, s: TankState, group: str, model: str, inc: str) -> dict[str, Any]:
    """The fields every ``tank.state`` record starts with, in order, either format."""
    return {
        "v": v,
        "group": group,
        "model": model,
        "inc": inc,
        "tank_id": s.tank_id,
        "partition": s.partition,
        "tick": s.last_tick,
        "ts": s.last_ts if math.isfinite(s.last_ts) else None,
    }


def reference_encode_state(s: TankState, group: str, model: str, inc: str) -> bytes:
    """The format-2 record as a dict through json.dumps, one array at a time: the bytes
    encode_columns must write. Also bench/checkpoint.py's baseline."""
    import base64
    import json

    arrays = [
        ("h", "f4", s.h),
        ("c", "f4", s.c),
        ("held", "f4", s.held),
        ("actual", "f4", s.actual),
        *(("anomaly." + k, "f8", v) for k, v in s.anomaly.items()),
        *(("extra." + k, "f8", v) for k, v in (s.extra or {}).items()),
    ]
    layout = ",".join(f"{n}:{d}:{'x'.join(map(str, np.shape(v)))}" for n, d, v in arrays)
    blob = b"".join(np.asarray(v, "<" + d).tobytes() for _, d, v in arrays)
    obj = {
        **_record_head(2, s, group, model, inc),
        "layout": layout,
        "state": base64.b64encode(blob).decode(),
    }
    return json.dumps(obj, separators=(",", ":")).encode()


def format1_record(s: TankState, group: str, model: str, inc: str) -> bytes:
    """A record as format 1 wrote it (a base64 field per array), before format 2."""
    import base64
    import json

    def b64(a: Any, dtype: Any) -> str:
        return base64.b64encode(np.ascontiguousarray(a, dtype=dtype).tobytes()).decode()

    layers, units = s.h.shape
    obj = {
        **_record_head(1, s, group, model, inc),
        "layers": layers,
        "units": units,
        "h": b64(s.h, np.float32),
        "c": b64(s.c, np.float32),
        "held": b64(s.held, np.float32),
        "actual": b64(s.actual, np.float32),
        "anomaly": {k: [b64(v, np.float64), list(np.shape(v))] for k, v in s.anomaly.items()},
        "extra": {k: [b64(v, np.float64), list(np.shape(v))] for k, v in (s.extra or {}).items()},
    }
    return json.dumps(obj, separators=(",", ":")).encode()


def assert_same_state(a: TankState, b: TankState) -> None:
    assert (a.tank_id, a.partition, a.last_tick) == (b.tank_id, b.partition, b.last_tick)
    assert a.last_ts == b.last_ts or (math.isnan(a.last_ts) and math.isnan(b.last_ts))
    for x, y in ((a.h, b.h), (a.c, b.c), (a.held, b.held), (a.actual, b.actual)):
        assert x.dtype == y.dtype == np.float32 and np.array_equal(x, y, equal_nan=True)
    for d, e in ((a.anomaly, b.anomaly), (a.extra or {}, b.extra or {})):
        assert list(d) == list(e)
        for k in d:
            assert np.shape(d[k]) == np.shape(e[k]), k
            assert np.array_equal(np.asarray(d[k], np.float64), e[k], equal_nan=True), k


def test_format1_records_still_restore() -> None:
    """Checkpoints written before format 2 (an upgrade) restore to the same state."""
    step = make_step()
    run_ticks(step, [0, 1, 2, 3], 0, 12)
    states = step.snapshot(
        [("T1", 1), ("tank-7.b", 2)], np.full(4, 11, np.int64), np.zeros(4, np.int32)
    )
    for st in states:
        assert_same_state(decode_state(format1_record(st, "g", "m", "i")), st)
        assert_same_state(decode_state(encode_state(st, "g", "m", "i")), st)


@pytest.mark.parametrize(
    "change",
    [
        lambda o: o.update(state=o["state"][:-8]),  # blob shorter than its layout
        lambda o: o.update(state="!!" + o["state"][2:]),  # not base64
        lambda o: o.update(layout=o["layout"].replace("h:f4", "h:i8", 1)),
        lambda o: o.update(layout=o["layout"].replace("c:f4:1x", "c:f4:2x", 1)),
        lambda o: o.update(v=3),
        lambda o: o.pop("layout"),
    ],
)
def test_corrupt_format2_record_is_rejected(change: Any) -> None:
    import json

    step = make_step()
    run_ticks(step, [0], 0, 3)
    (st,) = step.snapshot([("A", 0)], np.full(4, 2, np.int64), np.zeros(4, np.int32))
    o = json.loads(encode_state(st))
    change(o)
    with pytest.raises((ValueError, KeyError)):
        decode_state(json.dumps(o).encode())


def test_state_record_bytes_equal_the_json_dumps_reference() -> None:
    step = make_step()
    run_ticks(step, [0, 1, 2, 3], 0, 12)
    states = step.snapshot(
        [("T1", 1), ("tank-7.b", 2)], np.full(4, 11, np.int64), np.zeros(4, np.int32)
    )
    rng = np.random.default_rng(3)
    odd = TankState(
        tank_id="T_ü",
        partition=3,
        last_tick=-1,
        last_ts=float("nan"),
        h=rng.normal(size=(2, 5)).astype(np.float32),
        c=rng.normal(size=(2, 5)).astype(np.float32),
        held=np.asarray([np.nan, 1.5], np.float32),
        actual=np.asarray([np.inf, -0.0], np.float32),
        anomaly={"ewma": rng.normal(size=(2, 3)), "n": np.float64(4.0), "e": np.zeros(0)},
        extra={},
    )
    timed = [
        dataclasses.replace(st, last_ts=ts)
        for st, ts in zip(states, (1.7e9 + 0.125, 1e-7), strict=True)
    ]
    cases = [*states, *timed, odd]
    for group, model, inc in [("", "", ""), ("g-1", "lstm-48x1-rn", "abc"), ('q"\\é%s', "m%", "")]:
        for st in cases:
            got = encode_state(st, group, model, inc)
            assert got == reference_encode_state(st, group, model, inc), (st.tank_id, group)
            back = decode_state(got)
            assert back.tank_id == st.tank_id and back.last_tick == st.last_tick


def test_b64_rows_equals_base64_of_each_row() -> None:
    import base64

    rng = np.random.default_rng(5)
    for length in (0, 1, 2, 3, 4, 8, 192, 193):
        raw = rng.integers(0, 256, size=(9, length), dtype=np.uint8)
        assert b64_rows(raw) == [base64.b64encode(r.tobytes()).decode() for r in raw]


def test_encode_columns_equals_encode_state_record_by_record() -> None:
    step = make_step()
    rows = list(range(12))
    run_ticks(step, rows, 0, 12)
    run_ticks(step, rows[:5], 12, 14)  # rows at different ticks
    last = np.full(12, 11, np.int64)
    last[:5] = 13
    last[7] = NO_TICK  # never applied: skipped
    tanks = [(f"T{r:02d}", r) for r in rows]
    cols = step.snapshot_columns(tanks, last, np.arange(12) % 3)
    states = cols.states()
    assert [s.tank_id for s in states] == [t for t, r in tanks if r != 7]
    for group, model, inc in [("g", "m", "i"), ('q"\\é', "", "")]:
        got = encode_columns(cols, group, model, inc)
        assert got == [encode_state(st, group, model, inc) for st in states]
        assert got == [reference_encode_state(st, group, model, inc) for st in states]
    assert encode_columns(step.snapshot_columns([], last, np.zeros(12, np.int32))) == []


def test_restored_tank_continues_exactly() -> None:
    """Stop after tick 11, restore into a fresh engine at a different row, continue:
    the forecasts equal those of the uninterrupted run bit for bit."""
    full = make_step()
    run_ticks(full, [0, 1, 2, 3], 0, 12)
    (state,) = full.snapshot([("T2", 2)], np.full(4, 11, np.int64), np.zeros(4, np.int32))
    restored = make_step(8)
    restored.restore(5, decode_state(encode_state(state)))
    for t in range(12, 20):
        a = full.apply(tick(t, [2], np.asarray([series(2, t)]), [t - 1]))
        b = restored.apply(tick(t, [5], np.asarray([series(2, t)]), [t - 1]))
        np.testing.assert_array_equal(a.forecast, b.forecast)
        np.testing.assert_array_equal(a.horizons, b.horizons)
        np.testing.assert_array_equal(a.residual, b.residual)
        np.testing.assert_array_equal(a.score, b.score)


def test_save_writes_file_then_topic_with_partition_record_last(tmp_path: Path) -> None:
    producer = RecordingProducer()
    ck = Checkpointer(producer, "unused:0", "st", tmp_path, "g", "readings")
    step = make_step()
    run_ticks(step, [0, 1], 0, 3)
    states = step.snapshot(
        [("A", 0), ("B", 1)], np.full(4, 2, np.int64), np.asarray([1, 1, 0, 0], np.int32)
    )
    ck.save(states, {1: CommitPoint(17, 99.5)})
    assert [(k, p) for _, k, _, p in producer.sent] == [(b"A", 1), (b"B", 1), (PARTITION_KEY, 1)]
    assert producer.flushes == 1 and ck.path.exists()
    # A new checkpointer (a restarted process) finds the same state in the file alone.
    again = Checkpointer(RecordingProducer(), "unused:0", "st", tmp_path, "g", "readings")
    offline(again, [])
    tanks, points = again.load([1])
    assert set(tanks) == {"A", "B"} and points == {1: CommitPoint(17, 99.5)}
    assert again.load([0]) == ({}, {})


def test_restore_prefers_larger_tick_and_larger_offset(tmp_path: Path) -> None:
    step = make_step()
    run_ticks(step, [0], 0, 3)
    (old,) = step.snapshot([("A", 0)], np.full(4, 2, np.int64), np.zeros(4, np.int32))
    run_ticks(step, [0], 3, 6)
    (new,) = step.snapshot([("A", 0)], np.full(4, 5, np.int64), np.zeros(4, np.int32))
    ck = Checkpointer(RecordingProducer(), "unused:0", "st", tmp_path, "g", "r")
    ck.save([old], {0: CommitPoint(10, 1.0)})  # the local file holds the older state
    topic = [
        (b"A", encode_state(new, "g")),
        (PARTITION_KEY, encode_point(0, CommitPoint(30, 3.0), "g")),
        (b"A", encode_state(old, "g")),
        (b"A", b"{corrupt"),
        # Another consumer group's records on the same topic are never taken.
        (PARTITION_KEY, encode_point(0, CommitPoint(99, 9.0), "other")),
    ]
    offline(ck, topic)
    tanks, points = ck.load([0])
    assert tanks["A"].last_tick == 5 and np.array_equal(tanks["A"].h, new.h)
    assert points == {0: CommitPoint(30, 3.0)}
    assert ck.corrupt_records == 1  # b"{corrupt": skipped, and counted


def test_corrupt_checkpoint_records_are_skipped_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing is dropped silently: an unreadable journal line and an unreadable
    tank.state record are counted; the tanks fall back to what can be read. The
    warnings say where: the journal line's byte offset, the topic record's key."""
    import json
    import logging

    step = make_step()
    run_ticks(step, [0], 0, 3)
    a, b = step.snapshot([("A", 0), ("B", 0)], np.full(4, 2, np.int64), np.zeros(4, np.int32))
    ck = Checkpointer(RecordingProducer(), "unused:0", "st", tmp_path, "g", "r")
    ck.save([a], {0: CommitPoint(10, 1.0)})
    with open(ck.path, "ab") as f:
        f.write(b'{"tank_id": "A", garbage\n')  # a whole, unreadable line
    bad_b = json.loads(encode_state(b, "g"))
    bad_b["state"] = bad_b["state"][:-8]  # shorter than its layout
    good_bytes = ck.path.stat().st_size - len(b'{"tank_id": "A", garbage\n')
    with caplog.at_level(logging.WARNING, logger="pipeline.checkpoint"):
        again = Checkpointer(RecordingProducer(), "unused:0", "st", tmp_path, "g", "r")
        assert again.corrupt_records == 1
        offline(again, [(b"B", json.dumps(bad_b).encode()), (b"C", b"\xff\xfe")])
        tanks, _ = again.load([0])
    assert set(tanks) == {"A"} and np.array_equal(tanks["A"].h, a.h)
    assert again.corrupt_records == 3
    warned = [r for r in caplog.records if r.getMessage() == "skipping a corrupt checkpoint record"]
    assert len(warned) == 3
    assert f"line at byte {good_bytes} " in warned[0].error and not hasattr(warned[0], "key")
    assert sorted(r.key for r in warned[1:]) == ["B", "C"]


def test_a_tombstone_in_the_state_topic_is_skipped_and_counted(tmp_path: Path) -> None:
    step = make_step()
    run_ticks(step, [0], 0, 3)
    (state,) = step.snapshot([("A", 0)], np.full(4, 2, np.int64), np.zeros(4, np.int32))
    ck = Checkpointer(RecordingProducer(), "unused:0", "st", tmp_path, "g", "r")
    topic: list[tuple[bytes, bytes | None]] = [
        (b"A", encode_state(state, "g")),
        (b"A", None),  # someone "deleting" a key of the compacted topic
        (b"B", None),
        (PARTITION_KEY, encode_point(0, CommitPoint(30, 3.0), "g")),
    ]
    offline(ck, topic)
    tanks, points = ck.load([0])
    assert list(tanks) == ["A"] and np.array_equal(tanks["A"].h, state.h)
    assert points == {0: CommitPoint(30, 3.0)}
    assert ck.foreign_records == 2


def test_unwritable_state_dir_is_a_config_error(tmp_path: Path) -> None:
    from tankwatch.errors import ConfigError

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="is not writable"):
        Checkpointer(RecordingProducer(), "unused:0", "st", blocker / "sub", "g", "r")


def test_state_record_carries_only_plain_types() -> None:
    s = TankState(
        "A",
        0,
        1,
        float("nan"),
        np.zeros((1, 4), np.float32),
        np.zeros((1, 4), np.float32),
        np.full(2, np.nan, np.float32),
        np.zeros(2, np.float32),
        {"mean": np.zeros(2)},
    )
    back = decode_state(encode_state(s))
    assert math.isnan(back.last_ts) and np.isnan(back.held).all()


def test_another_models_state_is_not_restored(tmp_path: Path) -> None:
    """A switched artifact must not inherit h/c it cannot interpret: those tanks start
    fresh (the commit point still holds, so no reading is applied twice)."""
    step = make_step()
    run_ticks(step, [0], 0, 3)
    (mine,) = step.snapshot([("A", 0)], np.full(4, 2, np.int64), np.zeros(4, np.int32))
    (theirs,) = step.snapshot([("B", 0)], np.full(4, 2, np.int64), np.zeros(4, np.int32))
    ck = Checkpointer(RecordingProducer(), "unused:0", "st", tmp_path, "g", "r", model_version="m2")
    topic = [
        (b"A", encode_state(mine, "g", "m2")),
        (b"B", encode_state(theirs, "g", "m1")),
        (PARTITION_KEY, encode_point(0, CommitPoint(30, 3.0), "g")),
    ]
    offline(ck, topic)
    tanks, points = ck.load([0])
    assert set(tanks) == {"A"} and ck.foreign_model_records == 1
    assert points == {0: CommitPoint(30, 3.0)}


# --- issue 10 item 6: a state dir that cannot be written ------------------------------


def test_unwritable_state_dir_is_a_one_line_config_error(tmp_path: Path) -> None:
    from pipeline.checkpoint import check_writable
    from tankwatch.errors import ConfigError

    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError) as exc:
        check_writable(blocker / "state")  # works as root too (chmod would not)
    text = str(exc.value)
    assert "--state-dir / TANKWATCH_STATE_DIR" in text and "\n" not in text
    with pytest.raises(ConfigError):
        Checkpointer(RecordingProducer(), "b:1", "tank.state", blocker / "s", "g", "r")
    with pytest.raises(ConfigError):  # exists, is a directory, cannot take a file
        check_writable(Path("/proc/self"))


def test_a_failed_local_write_is_a_local_checkpoint_error(tmp_path: Path) -> None:
    import shutil

    from pipeline.checkpoint import LocalCheckpointError

    state = tmp_path / "state"
    producer = RecordingProducer()
    ck = Checkpointer(producer, "b:1", "tank.state", state, "g", "r")
    shutil.rmtree(state)
    state.write_text("the directory is gone (full or read-only disk stands in here)")
    with pytest.raises(LocalCheckpointError):
        ck.save([], {0: CommitPoint(5, 1.0)})
    assert producer.sent == []  # the topic is not written ahead of the file


# --- issue 10 item 5: a checkpoint of another broker or topic incarnation -------------


def test_a_local_file_of_another_incarnation_is_ignored(tmp_path: Path) -> None:
    step = make_step()
    run_ticks(step, [0], 0, 3)
    (state,) = step.snapshot([("A", 0)], np.full(4, 2, np.int64), np.zeros(4, np.int32))
    old = Checkpointer(RecordingProducer(), "unused:0", "st", tmp_path, "g", "r")
    offline(old, [], inc="topic-id-1")
    old.load([0])
    old.save([state], {0: CommitPoint(5000, 99.0)})  # the old topic had 5,000+ readings
    # The topic was recreated (or the in-memory broker restarted): a new topic id, and
    # tank.state holds a point of the new incarnation at 40.
    new = Checkpointer(RecordingProducer(), "unused:0", "st", tmp_path, "g", "r")
    offline(new, [(PARTITION_KEY, encode_point(0, CommitPoint(40, 7.0), "g", "topic-id-2"))],
            inc="topic-id-2", bounds={0: (0, 100)})  # fmt: skip
    tanks, points = new.load([0])
    assert tanks == {} and points == {0: CommitPoint(40, 7.0)}  # before: 5000 won
    assert new.foreign_records == 2  # the file's tank and point


def test_a_commit_point_beyond_the_log_end_falls_back_to_the_log_start(tmp_path: Path) -> None:
    ck = Checkpointer(RecordingProducer(), "unused:0", "st", tmp_path, "g", "r")
    # Records without a topic id (older format, or the id is unknown): only the log end
    # can tell. The partition now holds offsets 0..99.
    offline(
        ck, [(PARTITION_KEY, encode_point(0, CommitPoint(5000, 99.0), "g"))], bounds={0: (0, 100)}
    )
    _, points = ck.load([0])
    assert points[0].offset == 0 and points[0].max_ts == -math.inf
    assert ck.foreign_records == 1


def test_the_journal_appends_only_what_changed_and_compacts(tmp_path: Path) -> None:
    """Issue 10 item 9: a checkpoint writes the tanks stepped since the last one, not
    every tank ever seen; the journal stays bounded by compaction."""
    step = make_step()
    tanks = [(f"T{i:03d}", i % 4) for i in range(4)]
    run_ticks(step, [0, 1, 2, 3], 0, 3)
    states = step.snapshot(tanks, np.full(4, 2, np.int64), np.zeros(4, np.int32))
    ck = Checkpointer(RecordingProducer(), "unused:0", "st", tmp_path, "g", "r")
    ck.save(states, {0: CommitPoint(10, 1.0)})
    first = ck.bytes_written
    ck.save(states[:1], {0: CommitPoint(11, 1.0)})
    assert ck.bytes_written - first < first / 2  # one tank + one point, not all four
    for k in range(3000):  # many checkpoints of one tank: compaction keeps it small
        ck.save(states[:1], {0: CommitPoint(12 + k, 1.0)})
    assert ck.path.stat().st_size < 3 * (1 << 20)
    again = Checkpointer(RecordingProducer(), "unused:0", "st", tmp_path, "g", "r")
    offline(again, [])
    got, points = again.load([0])
    assert set(got) == {t for t, _ in tanks} and points == {0: CommitPoint(3011, 1.0)}
    assert again.local_state("T002") is not None


def test_a_checkpoint_of_most_tanks_rewrites_the_journal_compacted(tmp_path: Path) -> None:
    """When every tank changed, the journal is rewritten (not appended, then compacted):
    it stays at its live size, and a restart reads the newest state and points."""
    step = make_step()
    tanks = [(f"T{i:03d}", i % 4) for i in range(4)]
    ck = Checkpointer(RecordingProducer(), "unused:0", "st", tmp_path, "g", "r")
    ck.compact_slack = 0  # as a 10,000-tank journal: past the slack at once
    sizes = []
    for k in range(6):
        run_ticks(step, [0, 1, 2, 3], k, k + 1)
        states = step.snapshot(tanks, np.full(4, k, np.int64), np.zeros(4, np.int32))
        ck.save(states, {0: CommitPoint(10 + k, 1.0), 1: CommitPoint(5, 2.0)})
        sizes.append(ck.path.stat().st_size)
        assert ck._size == sizes[-1]
    assert max(sizes) < 2.5 * min(sizes)  # bounded, not growing by a fleet per save
    again = Checkpointer(RecordingProducer(), "unused:0", "st", tmp_path, "g", "r")
    offline(again, [])
    got, points = again.load([0, 1])
    assert {t: s.last_tick for t, s in got.items()} == {t: 5 for t, _ in tanks}
    assert points == {0: CommitPoint(15, 1.0), 1: CommitPoint(5, 2.0)}
    (last,) = step.snapshot([tanks[2]], np.full(4, 5, np.int64), np.zeros(4, np.int32))
    assert_same_state(got["T002"], last)
