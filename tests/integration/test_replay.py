"""CSV replay into a real broker: keys, per-tank order, completeness, formats, pacing,
and the ``tankwatch replay`` command's behaviour on bad input and unreachable Kafka."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition

from producers.csv_source import CsvOptions, load_frame
from producers.replay import ReplayOptions, replay
from tankwatch.codec import PRESSURE_RANGE_KPA, Reading, decode_reading
from tankwatch.errors import BrokerError
from tankwatch.topics import Topics
from tests.integration.helpers import topic_partitions

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
HEADER = "ts,tank_id,pressure_kpa,temperature_c,event\n"
T0 = 1709251200.0


def consume_all(
    bootstrap: str,
    topic: str,
    expected: int,
    timeout_s: float = 30.0,
    pressure_range: tuple[float, float] = PRESSURE_RANGE_KPA,
):
    """Every message of ``topic`` (all partitions from the start) until ``expected``
    arrived or ``timeout_s`` passed; returns (partition, key, Reading) in offset order.
    ``pressure_range``: the fleet's limits (gauge data needs gauge limits to decode)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in topic_partitions(consumer, topic)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        out: list[tuple[int, bytes, Reading]] = []
        deadline = time.monotonic() + timeout_s
        while len(out) < expected and time.monotonic() < deadline:
            for tp, msgs in consumer.poll(timeout_ms=500, max_records=10000).items():
                out.extend(
                    (tp.partition, m.key, decode_reading(m.value, m.key, pressure_range))
                    for m in msgs
                )
        # One more short poll: more than expected must show up as a failure, not be hidden.
        for tp, msgs in consumer.poll(timeout_ms=300).items():
            out.extend(
                (tp.partition, m.key, decode_reading(m.value, m.key, pressure_range)) for m in msgs
            )
        return out
    finally:
        consumer.close()


def _write_history(path: Path, n_tanks: int = 5, n_ticks: int = 40) -> Path:
    rows = []
    for k in range(n_ticks):
        for i in range(1, n_tanks + 1):
            if (k + i) % 13 == 0:
                continue  # a missing reading
            event = "refill" if (k == 20 and i == 2) else ""
            ts = T0 + 60 * k
            rows.append(
                f"{_rfc(ts)},T{i:02d},{100 + i + k * 0.01:.3f},{10 + k * 0.1:.2f},{event}\n"
            )
    path.write_text(HEADER + "".join(rows))
    return path


def _rfc(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _check_per_tank(got: list[tuple[int, bytes, Reading]], frame) -> None:
    by_tank: dict[str, list[Reading]] = defaultdict(list)
    partitions: dict[str, set[int]] = defaultdict(set)
    for part, key, r in got:
        assert key == r.tank_id.encode()
        by_tank[r.tank_id].append(r)
        partitions[r.tank_id].add(part)
    assert all(len(p) == 1 for p in partitions.values())  # keyed: one partition per tank
    for tank, rows in frame.groupby("tank_id", sort=False):
        sent = by_tank[tank]
        assert [r.ts for r in sent] == rows["ts"].tolist()  # per-tank order preserved
        assert [r.pressure_kpa for r in sent] == pytest.approx(rows["pressure_kpa"].tolist())
        assert [r.event for r in sent] == rows["event"].tolist()


def test_replay_sends_every_valid_row_keyed_in_order(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path
) -> None:
    path = _write_history(tmp_path / "h.csv")
    with path.open("a") as fh:
        fh.write("garbage,T01,1,1,\n2024-03-01T05:00:00Z,T01,abc,1,\n")
    frame = load_frame(path).frame
    summary = replay(
        path, kafka_bootstrap, topics.readings, replay_options=ReplayOptions(progress=False)
    )
    assert summary.rows_sent == len(frame) and summary.bad_rows == 2 and summary.loops == 1
    got = consume_all(kafka_bootstrap, topics.readings, len(frame))
    assert len(got) == len(frame)
    _check_per_tank(got, frame)


def test_custom_format_replays_in_physical_units(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path
) -> None:
    (tmp_path / "A-1.txt").write_text("when|bar|degF\n1709251200|1.013|59\n1709251260|1.014|60.8\n")
    (tmp_path / "A-2.txt").write_text("when|bar|degF\n1709251230|1.02|50\n")
    opts = CsvOptions(
        sep="|",
        time_col="when",
        pressure_col="bar",
        temperature_col="degF",
        event_col=None,
        tank_from_filename=True,
        pressure_unit="bar",
        temperature_unit="F",
    )
    files = sorted(tmp_path.glob("*.txt"))
    summary = replay(files, kafka_bootstrap, topics.readings, opts, ReplayOptions(progress=False))
    assert summary.rows_sent == 3
    got = sorted(
        (r.ts, r.tank_id, r.pressure_kpa, r.temperature_c)
        for _, _, r in consume_all(kafka_bootstrap, topics.readings, 3)
    )
    assert got == [
        (T0, "A-1", pytest.approx(101.3), pytest.approx(15.0)),
        (T0 + 30, "A-2", pytest.approx(102.0), pytest.approx(10.0)),
        (T0 + 60, "A-1", pytest.approx(101.4), pytest.approx(16.0)),
    ]


def test_paced_replay_with_loops_keeps_event_time_increasing(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path
) -> None:
    path = _write_history(tmp_path / "h.csv", n_tanks=3, n_ticks=10)  # 9 minutes of event time
    frame = load_frame(path).frame
    # 540 s of event time at 600x per pass: about 1 s wall per pass (not asserted).
    opts = ReplayOptions(speed=600.0, loop=True, max_loops=2, progress=False)
    summary = replay(path, kafka_bootstrap, topics.readings, replay_options=opts)
    assert summary.loops == 2 and summary.rows_sent == 2 * len(frame)
    got = consume_all(kafka_bootstrap, topics.readings, 2 * len(frame))
    assert len(got) == 2 * len(frame)
    by_tank: dict[str, list[float]] = defaultdict(list)
    for _, _, r in got:
        by_tank[r.tank_id].append(r.ts)
    span = frame["ts"].max() - frame["ts"].min() + 60.0
    for tank, ts in by_tank.items():
        assert ts == sorted(ts) and len(set(ts)) == len(ts)
        first = frame.loc[frame["tank_id"] == tank, "ts"].tolist()
        assert ts == first + [t + span for t in first]


def test_stop_event_ends_a_slow_replay_cleanly(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path
) -> None:
    path = _write_history(tmp_path / "h.csv", n_tanks=2, n_ticks=100)
    stop = threading.Event()
    result: list = []
    opts = ReplayOptions(speed=60.0, loop=True, progress=False)  # would take ~100 s per pass
    worker = threading.Thread(
        target=lambda: result.append(
            replay(path, kafka_bootstrap, topics.readings, replay_options=opts, stop_event=stop)
        )
    )
    worker.start()
    deadline = time.monotonic() + 20
    while not result and time.monotonic() < deadline:
        time.sleep(0.5)
        stop.set()
    worker.join(timeout=20)
    assert not worker.is_alive()
    summary = result[0]
    assert summary.interrupted and 0 < summary.rows_sent < 200
    got = consume_all(kafka_bootstrap, topics.readings, summary.rows_sent, timeout_s=10)
    assert len(got) == summary.rows_sent  # what was counted as sent was flushed


def test_replay_to_a_missing_topic_is_a_broker_error(kafka_bootstrap: str, tmp_path: Path) -> None:
    path = _write_history(tmp_path / "h.csv", n_tanks=1, n_ticks=2)
    with pytest.raises(BrokerError, match="does not exist"):
        replay(
            path,
            kafka_bootstrap,
            "tank.readings.nope-never-created",
            replay_options=ReplayOptions(progress=False),
        )


# --- the command ----------------------------------------------------------------------------


def _tankwatch(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "TANKWATCH_"))}
    return subprocess.run(
        [sys.executable, "-m", "tankwatch.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=env,
    )


def test_cli_replays_the_bundled_format(
    kafka_bootstrap: str, make_topics: Callable[..., Topics], tmp_path: Path
) -> None:
    topics = make_topics(2)
    path = _write_history(tmp_path / "h.csv")
    n = len(load_frame(path).frame)
    proc = _tankwatch(
        "replay",
        str(path),
        "--bootstrap",
        kafka_bootstrap,
        "--topic",
        topics.readings,
        "--speed",
        "100000",
    )
    assert proc.returncode == 0, proc.stderr
    assert f"sent {n} readings" in proc.stderr
    assert len(consume_all(kafka_bootstrap, topics.readings, n)) == n


def test_cli_bad_file_is_one_line_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "nothere.csv"
    proc = _tankwatch("replay", str(bad), "--bootstrap", "127.0.0.1:1")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and "Traceback" not in proc.stderr
    cols = tmp_path / "cols.csv"
    cols.write_text("time,tank,p\n")
    proc = _tankwatch("replay", str(cols))
    assert proc.returncode == 2 and "missing column" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_cli_bad_flag_exits_2() -> None:
    proc = _tankwatch("replay", "x.csv", "--speed", "-3")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    proc = _tankwatch("replay", "x.csv", "--pressure-unit", "atm")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_cli_unreachable_broker_fails_fast_with_one_line(tmp_path: Path) -> None:
    path = _write_history(tmp_path / "h.csv", n_tanks=1, n_ticks=2)
    proc = _tankwatch("replay", str(path), "--bootstrap", "127.0.0.1:1", timeout=40)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "127.0.0.1:1" in lines[0] and "Traceback" not in proc.stderr
