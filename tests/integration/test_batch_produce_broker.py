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
