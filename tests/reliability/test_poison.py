"""Thousands of malformed messages of every rejection kind, interleaved with a good
history: the pipeline neither crashes nor stalls, every bad message lands in the DLQ
exactly once with the right ``reason`` header (matched by source partition/offset),
the ``tankwatch_readings_rejected_total`` counter agrees per reason, and the good
tanks' forecasts and states equal a clean run's."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tankwatch.codec import REJECT_REASONS, encode_reading
from tankwatch.topics import Topics
from tests.integration.helpers import (
    assert_forecasts_equal,
    assert_states_equal,
    read_dlq,
    read_forecasts,
    read_state,
)
from tests.reliability.poison import poison_batch
from tests.reliability.support import (
    REFERENCE_TOL,
    PipelineProcess,
    instance_env,
    wait_all_applied,
)

pytestmark = [pytest.mark.reliability, pytest.mark.integration]

#: Poison items per reason: 12 reasons x 220 = 2,640 malformed messages.
PER_REASON = 220


def produce_interleaved(
    bootstrap: str, topic: str, good: list[Any], poison: list[tuple[str, Any, Any]]
) -> dict[tuple[int, int], tuple[str, Any, Any]]:
    """Produce ``good`` readings with ``poison`` spread evenly between them; returns
    (partition, offset) -> (expected reason, key, value) of every poison message."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    futures = []
    try:
        j = 0
        for i, reading in enumerate(good):
            key, value = encode_reading(reading)
            producer.send(topic, key=key, value=value)
            while j < len(poison) and j * len(good) <= i * len(poison):
                _reason, pkey, pvalue = poison[j]
                futures.append((poison[j], producer.send(topic, key=pkey, value=pvalue)))
                j += 1
        for item in poison[j:]:
            futures.append((item, producer.send(topic, key=item[1], value=item[2])))
        producer.flush()
        expected = {}
        for item, fut in futures:
            md = fut.get(timeout=30)
            expected[(md.partition, md.offset)] = item
        return expected
    finally:
        producer.close()


def test_poison_goes_to_the_dlq_and_good_tanks_are_untouched(
    reliability_reference: dict[str, Any],
    model_copy: Path,
    kafka_bootstrap: str,
    make_topics: Callable[..., Topics],
    tmp_path: Path,
) -> None:
    history = reliability_reference["history"]
    poison = poison_batch(PER_REASON)
    assert {r for r, _, _ in poison} == set(REJECT_REASONS)
    topics = make_topics()
    env = instance_env(
        kafka_bootstrap,
        topics,
        tmp_path / "state",
        f"g-{topics.readings}",
        TANKWATCH_MODEL=str(model_copy),
    )
    proc = PipelineProcess(env, tmp_path / "pipeline.log")
    try:
        proc.start().wait_healthy()
        expected = produce_interleaved(kafka_bootstrap, topics.readings, history, poison)
        assert len(expected) == len(poison)
        wait_all_applied([proc], history, 90)  # no stall: every good tank reaches its end
        rejected = {
            r: proc.metric("tankwatch_readings_rejected_total", reason=r) for r in REJECT_REASONS
        }
        assert proc.alive()
        assert proc.stop() == 0, proc.log_tail()  # no crash: a clean exit
    finally:
        proc.ensure_dead()
    want = Counter(reason for reason, _, _ in expected.values())
    print(f"poison: {len(poison)} messages with {len(history)} good ones; by reason {dict(want)}")
    assert rejected == {r: float(want[r]) for r in REJECT_REASONS}
    dlq = read_dlq(kafka_bootstrap, topics.dlq)
    got: dict[tuple[int, int], tuple[str, Any, Any]] = {}
    for key, value, headers in dlq:
        coords = (int(headers["source_partition"]), int(headers["source_offset"]))
        assert coords not in got, f"dead letter {coords} repeated without a crash"
        assert headers["source_topic"] == topics.readings
        got[coords] = (headers["reason"], key, value)
    # Same source coordinates, same reason, the original key and bytes kept as they were.
    assert got.keys() == expected.keys()
    wrong = [(c, expected[c][0], got[c][0]) for c in expected if got[c] != expected[c]]
    assert not wrong, f"{len(wrong)} dead letters differ, e.g. (coords, want, got) {wrong[:3]}"
    assert_forecasts_equal(
        reliability_reference["forecasts"],
        read_forecasts(kafka_bootstrap, topics.forecasts),
        REFERENCE_TOL,
    )
    assert_states_equal(
        reliability_reference["state"], read_state(kafka_bootstrap, topics.state), REFERENCE_TOL
    )
