"""``tank.state`` really compacted by Apache Kafka, then a restore from it.

A private broker with the test's aggressive cleaner settings (segments roll every
second, any dirty closed segment is cleaned within about a second): the first half of
the reliability history runs with a checkpoint every 0.1 s, so every tank's state is
written many times; the pipeline stops, and the test waits until the log cleaner has
really removed superseded records (offsets missing from the topic). A second instance
with an empty local state directory -- the compacted topic is its only source --
restores the tanks and runs the second half: forecasts and final states equal the
uninterrupted reference.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from pipeline.checkpoint import PARTITION_KEY
from tests.integration.helpers import (
    ServiceThread,
    _read_all,
    model_interval_s,
    pipeline_settings,
    produce_readings,
    read_forecasts,
    topic_partitions,
    unique_topics,
    wait_until,
)
from tests.reliability.support import assert_matches_reference

pytestmark = [pytest.mark.reliability, pytest.mark.integration, pytest.mark.slow]

SPLIT_TICK = 150


def state_offsets(bootstrap: str, topic: str) -> tuple[int, int, int]:
    """(records present, offsets written, distinct keys) of the state topic."""
    from kafka import KafkaConsumer, TopicPartition

    msgs = _read_all(bootstrap, topic)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        tps = [TopicPartition(topic, p) for p in topic_partitions(consumer, topic)]
        written = sum(consumer.end_offsets(tps).values())
    finally:
        consumer.close()
    return len(msgs), written, len({(m.partition, m.key) for m in msgs})


def test_restore_from_a_compacted_state_topic_equals_the_reference(
    reliability_reference: dict[str, Any],
    model_copy: Path,
    apache_kafka_factory: Any,
    tmp_path: Path,
) -> None:
    history = reliability_reference["history"]
    t0 = history[0].ts - (history[0].ts % model_interval_s())
    cut = t0 + SPLIT_TICK * model_interval_s()
    first = [r for r in history if r.ts < cut]
    second = [r for r in history if r.ts >= cut]
    kafka = apache_kafka_factory(name="compact")
    bootstrap = kafka.bootstrap
    topics = unique_topics(bootstrap, "compact")
    group = f"g-{topics.readings}"

    def settings(state_dir: Path) -> Any:
        return pipeline_settings(
            bootstrap, topics, state_dir, group, model_dir=model_copy, checkpoint_interval_s=0.1
        )

    # First half, paced, so that many checkpoints rewrite every tank's state.
    with ServiceThread(settings(tmp_path / "a")) as a:
        produce_readings(bootstrap, topics.readings, first, per_tick_sleep_s=0.05)
        wait_until(lambda: a.service.stats["consumed"] >= len(first), 60, "first half consumed")
        a.stop()
    present, written, keys = state_offsets(bootstrap, topics.state)
    print(f"tank.state once stopped: {present} records of {written} offsets, {keys} keys")
    assert written > 10 * keys, "too few checkpoints to show compaction"

    def compacted() -> bool:
        nonlocal present
        present, _, _ = state_offsets(bootstrap, topics.state)
        return present < written / 3

    wait_until(compacted, 120, "the log cleaner to compact tank.state")
    print(f"tank.state after cleaning: {present} records of {written} offsets")
    # What survived still holds every tank and every partition's commit point.
    survivors = _read_all(bootstrap, topics.state)
    assert {m.key for m in survivors if m.key != PARTITION_KEY} == {
        r.tank_id.encode() for r in history
    }

    # Second half on a fresh instance whose only source of state is the compacted topic.
    produce_readings(bootstrap, topics.readings, second)
    registry = CollectorRegistry()
    with ServiceThread(settings(tmp_path / "b"), registry) as b:
        want = reliability_reference["forecasts"].keys()
        wait_until(
            lambda: want <= read_forecasts(bootstrap, topics.forecasts).keys(),
            120,
            "every forecast of the reference",
        )
        b.stop()
    assert registry.get_sample_value("tankwatch_state_resets_total", {"reason": "new_tank"}) in (
        None,
        0.0,
    ), "a tank started afresh instead of being restored"
    # Forecasts (repeats must be identical) and final states equal the reference.
    assert_matches_reference(reliability_reference, bootstrap, topics)
