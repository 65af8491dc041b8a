"""Issue 10 items 5, 6, 7 and 9: what a careless operator or a real plant does.

* a local checkpoint from another broker incarnation (the in-memory broker restarted,
  or a topic deleted and recreated) must not make the consumer skip new data (item 5);
* a state directory that cannot be written: refused at start, and a run-time failure
  is its own health reason and metric, and the exit without a final checkpoint is
  non-zero (item 6);
* a dead letter near the broker's 1 MiB limit is kept, cut, with headers saying so
  (item 7);
* a burst of new tank ids is bounded by ``max_tanks`` (excess to the DLQ), idle tanks
  are retired and come back with their state (item 9).
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tankwatch.broker import EmbeddedBroker
from tankwatch.topics import Topics, create_topics
from tests.integration.helpers import (
    ServiceThread,
    http_get,
    pipeline_settings,
    produce_raw,
    produce_readings,
    read_dlq,
    synthetic_history,
    wait_consumed,
    wait_until,
)
from tests.reliability.support import PipelineProcess, instance_env, run_cli

pytestmark = [pytest.mark.reliability, pytest.mark.integration]


def test_a_checkpoint_of_another_broker_incarnation_never_skips_new_data(
    model_copy: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    topics = Topics()
    big = synthetic_history(n_tanks=4, n_ticks=60, seed=1)
    small = synthetic_history(n_tanks=4, n_ticks=20, seed=2)
    with EmbeddedBroker(log_path=tmp_path / "a.log") as broker:
        create_topics(broker.bootstrap, topics, 2)
        produce_readings(broker.bootstrap, topics.readings, big)
        settings = pipeline_settings(broker.bootstrap, topics, state, "g", model_dir=model_copy)
        with ServiceThread(settings) as run:
            wait_consumed(run.service, len(big), 60)
    # The in-memory broker restarted: same names, empty topics, new topic ids. The local
    # file's commit points (~120 per partition) lie beyond the new logs' ends (~40).
    with EmbeddedBroker(log_path=tmp_path / "b.log") as broker:
        create_topics(broker.bootstrap, topics, 2)
        produce_readings(broker.bootstrap, topics.readings, small)
        settings = pipeline_settings(broker.bootstrap, topics, state, "g", model_dir=model_copy)
        with ServiceThread(settings) as run:
            wait_consumed(run.service, len(small), 60)  # before the fix: 0 consumed, timeout
            stats = run.service.stats
            foreign = run.registry.get_sample_value("tankwatch_checkpoint_foreign_records_total")
    print(f"foreign checkpoint: consumed {stats['consumed']} of {len(small)}; foreign {foreign}")
    assert stats["consumed"] == len(small) and stats["dropped"] == {"late": 0, "duplicate": 0}
    assert foreign and foreign >= 2


@pytest.mark.parametrize("where", ["under-a-file", "/proc/self"])
def test_an_unwritable_state_dir_is_refused_at_start(
    where: str, kafka_bootstrap: str, make_topics: Any, model_copy: Path, tmp_path: Path
) -> None:
    # /proc/self exists and is a directory, but no one (root included) can create a file
    # there: the read-only case. Before the fix the service started and ran on.
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    state = str(blocker / "state") if where == "under-a-file" else where
    topics = make_topics()
    env = instance_env(kafka_bootstrap, topics, Path(state), "g", TANKWATCH_MODEL=str(model_copy))
    proc = run_cli(["run"], env=env)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "TANKWATCH_STATE_DIR" in lines[0] and "not writable" in lines[0]


def test_a_state_dir_failing_at_run_time_is_visible_and_the_exit_non_zero(
    kafka_bootstrap: str, make_topics: Any, model_copy: Path, tmp_path: Path
) -> None:
    topics = make_topics()
    state = tmp_path / "state"
    # The local checkpoint file is what fails here; with exactly-once outputs (the
    # default on Apache Kafka) tank.state alone is the checkpoint and no file is written.
    env = instance_env(kafka_bootstrap, topics, state, f"g-{topics.readings}",
                       TANKWATCH_MODEL=str(model_copy),
                       TANKWATCH_EXACTLY_ONCE="off")  # fmt: skip
    history = synthetic_history(n_tanks=4, n_ticks=40, seed=3)
    proc = PipelineProcess(env, tmp_path / "pipeline.log")
    try:
        proc.start().wait_healthy()
        produce_readings(kafka_bootstrap, topics.readings, history[: len(history) // 2])
        wait_until(lambda: proc.metric("tankwatch_checkpoints_total") >= 1, 60, "a checkpoint")
        shutil.rmtree(state)  # the disk "fails": the directory is gone, a file in its place
        state.write_text("x")
        produce_readings(kafka_bootstrap, topics.readings, history[len(history) // 2 :])
        wait_until(
            lambda: proc.metric("tankwatch_checkpoint_failures_total", reason="local_file") >= 1,
            60,
            "a failed local checkpoint counted",
        )
        status, body = http_get(proc.url + "/healthz", 3.0)
        health = json.loads(body)
        print(f"state dir failure: /healthz {status} {health['reason']}")
        assert status == 503 and health["reason"].startswith("checkpoint failing")
        assert health["broker_up"] is True  # not "broker unreachable" any more
        code = proc.stop()
        assert code != 0, proc.log_tail()  # before the fix: 0, as if all was well
        assert "without a final checkpoint" in proc.log_tail()
    finally:
        proc.ensure_dead()


def test_a_dead_letter_near_one_mebibyte_is_kept_cut_with_headers(
    kafka_bootstrap: str, make_topics: Any, model_copy: Path, tmp_path: Path
) -> None:
    topics = make_topics()
    env = instance_env(kafka_bootstrap, topics, tmp_path / "s", f"g-{topics.readings}",
                       TANKWATCH_MODEL=str(model_copy))  # fmt: skip
    proc = PipelineProcess(env, tmp_path / "pipeline.log")
    size = 1_000_000
    big = b'{"tank_id":"P001","pad":"' + b"x" * (size - 40) + b'"}'
    big = big + b" " * (size - len(big))
    try:
        proc.start().wait_healthy()
        produce_raw(kafka_bootstrap, topics.readings, [(b"P001", big)], max_request_size=2 << 20)
        wait_until(lambda: proc.metric("tankwatch_dead_letters_truncated_total") >= 1, 60,
                   "dead letter truncated")  # fmt: skip
        assert proc.stop() == 0, proc.log_tail()
    finally:
        proc.ensure_dead()
    letters = read_dlq(kafka_bootstrap, topics.dlq)
    assert len(letters) == 1  # before the fix: 0 (the send failed and the offset committed)
    key, value, headers = letters[0]
    assert key == b"P001" and headers["reason"] == "oversized"
    assert headers["truncated"] == "true" and headers["original_size"] == str(size)
    assert value == big[: 512 * 1024]
    assert headers["source_topic"] == topics.readings and headers["source_offset"] == "0"


def test_a_burst_of_new_tank_ids_is_bounded(
    kafka_bootstrap: str, make_topics: Any, model_copy: Path, tmp_path: Path
) -> None:
    topics = make_topics()
    env = instance_env(kafka_bootstrap, topics, tmp_path / "s", f"g-{topics.readings}",
                       TANKWATCH_MODEL=str(model_copy), TANKWATCH_MAX_TANKS="20")  # fmt: skip
    proc = PipelineProcess(env, tmp_path / "pipeline.log")
    fleet = synthetic_history(n_tanks=4, n_ticks=10, seed=4)
    t_last = max(r.ts for r in fleet)
    burst = [
        (f"B{i:04d}".encode(), json.dumps({"tank_id": f"B{i:04d}", "ts": t_last,
         "pressure_kpa": 100.0, "temperature_c": 10.0}).encode())
        for i in range(300)
    ]  # fmt: skip
    try:
        proc.start().wait_healthy()
        produce_readings(kafka_bootstrap, topics.readings, fleet)
        wait_until(lambda: proc.metric("tankwatch_tanks") == 4, 60, "the fleet tracked")
        produce_raw(kafka_bootstrap, topics.readings, burst)
        wait_until(
            lambda: proc.metric("tankwatch_readings_consumed_total") >= len(fleet) + len(burst),
            60,
            "the burst consumed",
        )
        wait_until(lambda: proc.metric("tankwatch_tanks") == 20, 30, "20 tanks tracked")
        rejected = proc.metric("tankwatch_readings_rejected_total", reason="too_many_tanks")
        assert proc.stop() == 0, proc.log_tail()
    finally:
        proc.ensure_dead()
    dlq = Counter(h["reason"] for _, _, h in read_dlq(kafka_bootstrap, topics.dlq))
    print(f"burst: 300 new ids, limit 20: {rejected:.0f} to the DLQ as too_many_tanks")
    assert dlq["too_many_tanks"] == rejected == 284  # before the fix: all 304 tracked


def test_an_idle_tank_is_retired_and_comes_back_with_its_state(
    kafka_bootstrap: str, make_topics: Any, model_copy: Path, tmp_path: Path
) -> None:
    from tests.integration.helpers import read_forecasts

    topics = make_topics()
    # Idle tanks are retired only without exactly-once outputs (docs/pipeline.md).
    env = instance_env(kafka_bootstrap, topics, tmp_path / "s", f"g-{topics.readings}",
                       TANKWATCH_MODEL=str(model_copy), TANKWATCH_TANK_IDLE_S="1800",
                       TANKWATCH_EXACTLY_ONCE="off")  # fmt: skip
    proc = PipelineProcess(env, tmp_path / "pipeline.log")
    # T003 falls silent after tick 19 and reports again at tick 81: idle for 30 min
    # (30 ticks of event time) long before that.
    fleet = synthetic_history(n_tanks=16, n_ticks=90, seed=4, gaps=[(3, 20, 80)])
    try:
        proc.start().wait_healthy()
        produce_readings(
            kafka_bootstrap, topics.readings, [r for r in fleet if r.ts < fleet[0].ts + 70 * 60]
        )
        wait_until(lambda: proc.metric("tankwatch_tanks_retired_total") >= 1, 60, "T003 retired")
        wait_until(lambda: proc.metric("tankwatch_tanks") == 15, 30, "15 tanks tracked")
        produce_readings(
            kafka_bootstrap, topics.readings, [r for r in fleet if r.ts >= fleet[0].ts + 70 * 60]
        )
        wait_until(lambda: proc.metric("tankwatch_tanks_revived_total") >= 1, 60, "T003 back")
        # The revival is counted when T003's reading is taken in, before its tick closes;
        # stopping then raced the forecasts this test reads (failed 1 in ~10 CI runs).
        # Seen: 81 ticks closed at the revival, so tick 81 (T003's return) not yet.
        wait_until(
            lambda: (
                proc.metric("tankwatch_readings_consumed_total") >= len(fleet)
                and proc.metric("tankwatch_open_ticks") == 0
            ),
            60,
            "every tick closed",
        )
        retired = proc.metric("tankwatch_tanks_retired_total")
        assert proc.stop() == 0, proc.log_tail()
    finally:
        proc.ensure_dead()
    assert retired == 1
    recs = read_forecasts(kafka_bootstrap, topics.forecasts)
    first = min(t for _, t in recs)
    after_gap = [tick for tank, tick in recs if tank == "T003" and tick > first + 20]
    t003 = sorted(t for k, t in recs if k == "T003")
    assert after_gap, f"no forecast of T003 after its gap; its ticks: {t003}"
    back = min(after_gap)
    # It continued from its checkpointed state: the reset on return is the gap's, not
    # a "new_tank" start from nothing.
    assert recs[("T003", back)]["reset"] == "gap"


def test_a_corrupt_journal_line_is_counted_and_its_tank_restored_from_the_topic(
    kafka_bootstrap: str, make_topics: Any, model_copy: Path, tmp_path: Path
) -> None:
    """A damaged local journal (a disk error, an edit by hand) loses nothing silently:
    the unreadable line is counted on /metrics and its tank continues from tank.state."""
    topics = make_topics(2)
    state = tmp_path / "state"
    fleet = synthetic_history(n_tanks=4, n_ticks=30, seed=6)
    t_split = fleet[0].ts + 20 * 60
    first = [r for r in fleet if r.ts < t_split]
    settings = pipeline_settings(
        kafka_bootstrap, topics, state, model_dir=model_copy, exactly_once="off"
    )
    produce_readings(kafka_bootstrap, topics.readings, first)
    with ServiceThread(settings) as run:
        wait_consumed(run.service, len(first), 60)
    (journal,) = state.glob("*.jsonl")
    lines = journal.read_bytes().splitlines(keepends=True)
    victim = max(i for i, line in enumerate(lines) if b'"tank_id":"T001"' in line)
    lines[victim] = b"#" * (len(lines[victim]) - 1) + b"\n"  # same length, unreadable
    journal.write_bytes(b"".join(lines))
    second = [r for r in fleet if r.ts >= t_split]
    produce_readings(kafka_bootstrap, topics.readings, second)
    with ServiceThread(settings) as run:
        wait_consumed(run.service, len(second), 60)
        reg = run.registry
        assert reg is not None
        corrupt = reg.get_sample_value("tankwatch_checkpoint_corrupt_records_total")
        new_tanks = reg.get_sample_value("tankwatch_state_resets_total", {"reason": "new_tank"})
    print(f"corrupt journal line: counted {corrupt}; tanks started afresh: {new_tanks}")
    assert corrupt == 1
    assert new_tanks == 0  # T001 came back from tank.state, not from nothing
