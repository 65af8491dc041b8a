"""Forecast records produced a tick at a time land exactly where, and as, kafka-python's
per-record ``send`` puts them: same partition per key, same order, same bytes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from pipeline.bootstrap import make_producer
from pipeline.sinks.batch_produce import BatchProducer
from tankwatch.topics import Topics


def read_all(bootstrap: str, topic: str, partitions: int, total: int) -> dict[int, list[Any]]:
    """(key, value) per partition, in offset order, until ``total`` records were read.

    Not up to ``end_offsets``: the embedded broker reports a partition's end as the last
    batch's base offset + 1, short of the real end when that batch holds many records.
    """
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    out: dict[int, list[Any]] = {p: [] for p in range(partitions)}
    deadline = time.monotonic() + 60
    while sum(len(v) for v in out.values()) < total and time.monotonic() < deadline:
        for tp, msgs in consumer.poll(timeout_ms=500).items():
            out[tp.partition].extend((m.offset, m.key, m.value) for m in msgs)
    consumer.close()
    return out


def test_batches_land_like_per_record_sends(
    kafka_bootstrap: str, make_topics: Callable[..., Topics]
) -> None:
    topics = make_topics(4)
    records = [
        (f"T{k:05d}".encode(), f'{{"tank_id":"T{k:05d}","tick":{t}}}'.encode() * (1 + k % 7))
        for t in range(3)
        for k in range(700)
    ]
    producer = make_producer(kafka_bootstrap)
    try:
        errors: list[int] = []
        bulk = BatchProducer(producer, topics.forecasts, lambda n, exc: errors.append(n))
        producer.send(topics.forecasts, key=b"warm-up", value=b"{}")  # topic metadata
        producer.flush()
        assert bulk.fast
        for t in range(3):  # one call per tick, as the sink does
            assert bulk.send(records[t * 700 : (t + 1) * 700]) == 700
        for key, value in [(b"warm-up", b"{}"), *records]:
            producer.send(topics.dlq, key=key, value=value)
        producer.flush()
        assert errors == []
    finally:
        producer.close()
    got = read_all(kafka_bootstrap, topics.forecasts, 4, len(records) + 1)
    expected = read_all(kafka_bootstrap, topics.dlq, 4, len(records) + 1)
    assert sum(len(v) for v in got.values()) == len(records) + 1
    assert got == expected  # offsets, keys and values per partition


def test_records_for_a_given_partition_land_like_sends_to_it(
    kafka_bootstrap: str, make_topics: Callable[..., Topics]
) -> None:
    topics = make_topics(4)
    records = [(f"T{k:05d}".encode(), b'{"h":[%d]}' % k) for k in range(500)]
    producer = make_producer(kafka_bootstrap)
    try:
        errors: list[int] = []
        bulk = BatchProducer(producer, topics.state, lambda n, exc: errors.append(n))
        producer.send(topics.state, key=b"warm-up", value=b"{}", partition=0)
        producer.flush()
        assert bulk.send_to(3, records[:300]) == 300
        assert bulk.send_to(1, records[300:]) == 200
        producer.send(topics.state, key=b"__partition__", value=b"{}", partition=3)  # after
        producer.send(topics.dlq, key=b"warm-up", value=b"{}", partition=0)
        for i, (key, value) in enumerate(records):
            producer.send(topics.dlq, key=key, value=value, partition=3 if i < 300 else 1)
        producer.send(topics.dlq, key=b"__partition__", value=b"{}", partition=3)
        producer.flush()
        assert errors == []
    finally:
        producer.close()
    got = read_all(kafka_bootstrap, topics.state, 4, len(records) + 2)
    expected = read_all(kafka_bootstrap, topics.dlq, 4, len(records) + 2)
    assert got == expected
    assert got[3][-1][1] == b"__partition__"  # order within the partition kept


def test_batches_through_a_transaction_commit_and_abort_with_it(
    kafka_bootstrap: str, make_topics: Callable[..., Topics], broker_kind: str
) -> None:
    """Exactly-once mode: the batch path appends into the checkpoint's transaction (no
    per-record fallback), so a committed transaction's records are all visible to a
    read_committed reader, in send order, and an aborted one's are not."""
    import uuid

    import pytest

    from pipeline.transactions import TransactionalOutputs

    if broker_kind == "embedded":
        pytest.skip("the embedded broker has no transaction coordinator")
    topics = make_topics(4)
    warm = make_producer(kafka_bootstrap)
    warm.send(topics.forecasts, key=b"warm-up", value=b"{}")  # topic metadata
    warm.flush()
    warm.close()
    tid = f"batch-txn-{uuid.uuid4().hex[:8]}"
    outputs = TransactionalOutputs(
        lambda: make_producer(kafka_bootstrap, transactional_id=tid), topics.readings
    )
    committed = [(f"T{k:04d}".encode(), b'{"tick":1,"k":%d}' % k) for k in range(600)]
    aborted = [(f"T{k:04d}".encode(), b'{"tick":2,"k":%d}' % k) for k in range(600)]
    try:
        errors: list[int] = []
        bulk = BatchProducer(outputs, topics.forecasts, lambda n, exc: errors.append(n))
        assert not bulk.fast  # the wrapper itself is no KafkaProducer ...
        assert bulk.send(committed) == 600
        assert bulk._checked_ok  # ... but its producer took the batch path
        outputs.flush(30)
        outputs.commit({}, None)
        assert bulk.send(aborted) == 600
        outputs.flush(30)
        outputs.abort()
        assert errors == [] and outputs.commits == 1 and outputs.aborts == 1
    finally:
        outputs.close(5)

    consumer = KafkaConsumer(
        bootstrap_servers=kafka_bootstrap,
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    tps = [TopicPartition(topics.forecasts, p) for p in range(4)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    got: list[tuple[bytes, bytes]] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for msgs in consumer.poll(timeout_ms=500).values():
            got.extend((m.key, m.value) for m in msgs if m.key != b"warm-up")
        if all(consumer.position(tp) >= (consumer.highwater(tp) or 1 << 62) for tp in tps):
            break
    consumer.close()
    assert sorted(got) == sorted(committed)  # all of the committed, none of the aborted
    by_key: dict[bytes, list[bytes]] = {}
    for key, value in got:
        by_key.setdefault(key, []).append(value)
    assert all(len(v) == 1 for v in by_key.values())
