"""Exactly-once outputs on Apache Kafka: one transaction per checkpoint.

Everything here reads the outputs as a downstream consumer with
``isolation_level='read_committed'`` would, and asserts *no repeats at all* -- not the
"repeats are identical" of the at-least-once mode:

* a pipeline SIGKILLed mid-run and started again: every (tank, tick) forecast and every
  dead letter exactly once, equal to an uninterrupted run;
* a frozen instance (SIGSTOP past its session timeout, then SIGCONT) on a compacted
  ``tank.state``: its partitions move to the other instance, and what it writes after
  waking up is aborted -- committed state records never go back in tick and commit
  points never go back in offset, the instance reports aborted transactions, and the
  final state equals a single-instance run.

The broker is a private Apache Kafka (``tankwatch.apache_kafka``) with aggressive
compaction and a 1 s check for timed-out transactions.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.checkpoint import PARTITION_KEY, decode_point, decode_state
from tests.integration.helpers import (
    assert_forecasts_equal,
    assert_states_equal,
    http_get,
    produce_raw,
    synthetic_history,
    topic_partitions,
    unique_topics,
    wait_until,
)
from tests.reliability.conftest import RELIABILITY_HISTORY, run_reference_with
from tests.reliability.support import (
    REFERENCE_TOL,
    PipelineProcess,
    instance_env,
    replay_thread,
    wait_all_applied,
)

apache_kafka = pytest.importorskip("tankwatch.apache_kafka")

pytestmark = [pytest.mark.integration, pytest.mark.reliability]


@pytest.fixture(scope="module")
def eos_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A private Apache Kafka: compaction within seconds, timed-out transactions
    aborted within a second of their timeout."""
    props = apache_kafka.test_props(compaction=True)
    props["transaction.abort.timed.out.transaction.cleanup.interval.ms"] = "1000"
    kafka = apache_kafka.ApacheKafka(tmp_path_factory.mktemp("eos-kafka"), extra_props=props)
    with kafka:
        yield kafka


@pytest.fixture(scope="module")
def eos_reference(
    eos_kafka: Any, tmp_path_factory: pytest.TempPathFactory, model_copy: Path
) -> dict[str, Any]:
    """An uninterrupted single-instance run (exactly-once mode, as auto picks it)."""
    history = synthetic_history(**RELIABILITY_HISTORY)
    return run_reference_with(
        eos_kafka.bootstrap, history, tmp_path_factory.mktemp("eos-ref"), model_copy
    )


# -------------------------------------------------------------- committed view
def read_committed(
    bootstrap: str, topic: str, timeout_s: float = 60.0, isolation: str = "read_committed"
) -> list[Any]:
    """Every record a read_committed consumer sees, in log order per partition.

    Done when each partition's position reached its high-water mark, which in
    read_committed mode also means no transaction in it is still open."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        group_id=None,
        isolation_level=isolation,
    )
    try:
        tps = [TopicPartition(topic, p) for p in topic_partitions(consumer, topic)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        out: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while True:
            for msgs in consumer.poll(timeout_ms=200).values():
                out.extend(msgs)
            if all(
                (hw := consumer.highwater(tp)) is not None and consumer.position(tp) >= hw
                for tp in tps
            ):
                return out
            assert time.monotonic() < deadline, f"reading {topic} (read_committed) timed out"
    finally:
        consumer.close()


def roll_segments(bootstrap: str, topic: str, key: bytes) -> None:
    """One tombstone of ``key`` in every partition of ``topic`` (not transactional)."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        for p in sorted(producer.partitions_for(topic)):
            producer.send(topic, key=key, value=None, partition=p)
        producer.flush(30)
    finally:
        producer.close()


def committed_forecasts(bootstrap: str, topic: str) -> dict[tuple[str, int], dict[str, Any]]:
    """Forecast records by (tank, tick); asserts that none is there twice."""
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for m in read_committed(bootstrap, topic):
        rec = json.loads(m.value)
        key = (rec["tank_id"], rec["tick"])
        assert key not in out, f"forecast {key} committed twice"
        out[key] = rec
    return out


def committed_state(bootstrap: str, topic: str) -> dict[str, Any]:
    """Latest committed state per tank; asserts that, in log order, no tank's committed
    state goes back in tick and no partition's commit point goes back in offset (what a
    fenced instance's late writes did before transactions)."""
    states: dict[str, Any] = {}
    points: dict[int, int] = {}
    for m in read_committed(bootstrap, topic):
        if m.value is None:  # a tombstone (roll_segments); restore skips them too
            continue
        if m.key == PARTITION_KEY:
            p, pt = decode_point(m.value)
            assert pt.offset >= points.get(p, -1), f"commit point of {p} went back"
            points[p] = pt.offset
            continue
        s = decode_state(m.value)
        old = states.get(s.tank_id)
        assert old is None or s.last_tick >= old.last_tick, (
            f"{s.tank_id}: committed state went back from tick {old.last_tick} to {s.last_tick}"
        )
        states[s.tank_id] = s
    return states


# ---------------------------------------------------------------------- tests
def test_sigkill_mid_run_forecasts_and_dead_letters_exactly_once(
    eos_kafka: Any, eos_reference: dict[str, Any], model_copy: Path, tmp_path: Path
) -> None:
    bootstrap = eos_kafka.bootstrap
    history = eos_reference["history"]
    topics = unique_topics(bootstrap, "eos-kill")
    group = f"g-{topics.readings}"
    proc = PipelineProcess(
        instance_env(bootstrap, topics, tmp_path / "state", group, TANKWATCH_MODEL=str(model_copy)),
        tmp_path / "run.log",
    )
    poison = [(b"T000", b"{not json"), (b"T001", b'{"tank_id": "T001"}')]
    producer = replay_thread(bootstrap, topics.readings, history, 0.03)
    try:
        proc.start().wait_healthy(60)
        produce_raw(bootstrap, topics.readings, poison)
        producer.start()
        wait_until(lambda: proc.metric("tankwatch_ticks_closed_total") >= 100, 60, "tick 100")
        done = proc.metric("tankwatch_checkpoints_total")
        wait_until(
            lambda: proc.metric("tankwatch_checkpoints_total") > done,
            30,
            "a checkpoint after tick 100",
        )
        assert proc.kill() == -signal.SIGKILL
        proc.start().wait_healthy(60)
        producer.join(120)
        assert not producer.is_alive(), "replay did not finish"
        wait_all_applied([proc], history, 90)
        assert proc.stop() == 0, proc.log_tail()
    finally:
        proc.ensure_dead()
    got = committed_forecasts(bootstrap, topics.forecasts)  # no (tank, tick) twice
    assert_forecasts_equal(eos_reference["forecasts"], got, REFERENCE_TOL)
    dead = read_committed(bootstrap, topics.dlq)
    assert sorted(m.value for m in dead) == sorted(v for _, v in poison), "dead letters"
    assert_states_equal(
        eos_reference["state"], committed_state(bootstrap, topics.state), REFERENCE_TOL
    )


def test_frozen_instance_is_fenced_and_state_matches_single_instance(
    eos_kafka: Any, eos_reference: dict[str, Any], model_copy: Path, tmp_path: Path
) -> None:
    bootstrap = eos_kafka.bootstrap
    history = eos_reference["history"]
    topics = unique_topics(bootstrap, "eos-zombie")
    group = f"g-{topics.readings}"
    # a checkpoints every 2 s, so it can be frozen with a transaction it has just
    # begun (below): the zombie then certainly holds outputs that must never show.
    a, b = (
        PipelineProcess(
            instance_env(
                bootstrap, topics, tmp_path / f"state-{n}", group,
                TANKWATCH_MODEL=str(model_copy), TANKWATCH_CHECKPOINT_INTERVAL_S=interval,
            ),
            tmp_path / f"{n}.log",
        )
        for n, interval in (("a", "2"), ("b", "0.5"))
    )  # fmt: skip
    producer = replay_thread(bootstrap, topics.readings, history, 0.05)
    session_s = int(a.env["TANKWATCH_SESSION_TIMEOUT_MS"]) / 1000
    try:
        a.start().wait_healthy(60)
        b.start().wait_healthy(60)

        def owned(p: PipelineProcess) -> list[int]:
            try:
                _, body = http_get(p.url + "/healthz", 2.0)
                return list(json.loads(body)["assigned_partitions"])
            except (OSError, ValueError, KeyError):
                return []

        wait_until(
            lambda: bool(owned(a)) and sorted(owned(a) + owned(b)) == [0, 1, 2, 3],
            60,
            "the group split between the two instances",
        )
        producer.start()
        wait_until(lambda: a.metric("tankwatch_ticks_closed_total") >= 80, 60, "a at tick 80")
        # Frozen at most 0.5 s into a transaction, ~1.5 s before its checkpoint would
        # commit it. (Frozen between a checkpoint and the next send, a zombie has
        # nothing open to abort -- the case this test must not fall into by chance.)
        wait_until(
            lambda: 0 < a.metric("tankwatch_transaction_open_seconds") <= 0.5,
            30,
            "a having just begun a transaction",
        )
        a.signal(signal.SIGSTOP)  # a zombie: alive, but silent past its session timeout
        try:
            wait_until(lambda: owned(b) == [0, 1, 2, 3], 60, "b owning every partition")
            # Keep it frozen a while longer (b writes on, a's open transaction times out).
            time.sleep(2 * session_s)
        finally:
            a.signal(signal.SIGCONT)
        try:
            wait_until(
                lambda: a.metric("tankwatch_transactions_total", outcome="aborted") >= 1,
                60,
                "the woken instance aborting its stale transaction",
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- a's log:\n{a.log_tail()}") from None
        producer.join(120)
        assert not producer.is_alive(), "replay did not finish"
        wait_all_applied([a, b], history, 120)
        # Every checkpoint wrote at least one commit-point record (aborted ones too).
        written = sum(p.metric("tankwatch_checkpoints_total") for p in (a, b))
        assert a.stop() == 0, a.log_tail()
        assert b.stop() == 0, b.log_tail()
    finally:
        a.ensure_dead()
        b.ensure_dead()

    def points_left() -> dict[int, int]:
        everything = read_committed(bootstrap, topics.state, isolation="read_uncommitted")
        per_partition: dict[int, int] = {}
        for m in everything:
            if m.key == PARTITION_KEY:
                per_partition[m.partition] = per_partition.get(m.partition, 0) + 1
        return per_partition

    before = points_left()
    assert written > 2 * len(before), f"too few checkpoints ({written}) to show compaction"
    # The cleaner never touches a partition's active segment. Close it: a segment rolls
    # on the first append past log.roll.ms (1 s), so one tombstone per partition (of a
    # key no tank has; restore skips tombstones) rolls every commit point into a closed,
    # cleanable segment -- and after compaction exactly one per partition is left.
    time.sleep(1.5)
    roll_segments(bootstrap, topics.state, b"roll")
    try:
        wait_until(
            lambda: points_left() == {p: 1 for p in before},
            90,
            f"compaction of {topics.state} to one commit point per partition",
        )
    except AssertionError as exc:
        segments = sorted(
            f"{f.parent.name}/{f.name}:{f.stat().st_size}"
            for f in eos_kafka.nodes[0].data_dir.glob(f"{topics.state}-*/*.log")
        )
        raise AssertionError(
            f"{exc}: commit points per partition {points_left()} (before: {before}, "
            f"{written} written); segments {segments}"
        ) from None
    assert_states_equal(
        eos_reference["state"], committed_state(bootstrap, topics.state), REFERENCE_TOL
    )
    got = committed_forecasts(bootstrap, topics.forecasts)
    assert_forecasts_equal(eos_reference["forecasts"], got, REFERENCE_TOL)
