"""A tick's records produced as whole batches: byte-identical to kafka-python's own
per-record ``send`` path, split where it splits, readable as ordinary records."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from kafka.producer.record_accumulator import RecordAccumulator
from kafka.record.memory_records import MemoryRecords
from kafka.structs import TopicPartition

from pipeline.sinks.batch_produce import BatchProducer, append_records, record_bytes

TP = TopicPartition("tank.forecasts", 2)
TS = 1_700_000_000_123


def records(n: int, seed: int = 0) -> list[tuple[bytes, bytes]]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        size = int(rng.choice([0, 1, 60, 127, 128, 450, 3000, 20000]))
        out.append((f"T{i:05d}".encode(), bytes(rng.integers(32, 127, size, dtype=np.uint8))))
    return out


def drained(acc: RecordAccumulator) -> list[tuple[int, bytes]]:
    """(record count, closed batch bytes) of every batch queued for TP, in order."""
    out = []
    for batch in acc._batches[TP]:
        batch.records.close()
        out.append((batch.record_count, bytes(batch.records.buffer())))
    return out


@pytest.mark.parametrize("batch_size", [16384, 2000, 256 * 1024])
@pytest.mark.parametrize("compression", [0, 1])  # none, gzip
def test_batches_are_byte_identical_to_the_per_record_path(
    batch_size: int, compression: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A gzip header carries the time of compression (whole seconds): two compressions
    # on either side of a second differed in 4 bytes and the batch CRC (seen once in
    # CI). Both paths compress through kafka.codec.gzip_encode; pin its clock.
    monkeypatch.setattr(gzip.time, "time", lambda: 1_700_000_000.0)
    recs = records(300)
    send_path = RecordAccumulator(batch_size=batch_size, compression_attrs=compression)
    for key, value in recs:
        send_path.append(TP, TS, key, value, [])
    bulk = RecordAccumulator(batch_size=batch_size, compression_attrs=compression)
    batches = append_records(bulk, TP, recs, TS)
    expected, got = drained(send_path), drained(bulk)
    assert len(expected) > (1 if batch_size < 100_000 else 0)  # the split is exercised
    assert got == expected
    assert [b.record_count for b in batches] == [n for n, _ in expected]
    assert set(bulk._incomplete.all()) == set(batches)  # flush() waits for them


def test_records_read_back_with_their_keys_values_and_offsets() -> None:
    recs = records(50, seed=3)
    acc = RecordAccumulator(batch_size=16384)
    append_records(acc, TP, recs, TS)
    got = []
    for _, buf in drained(acc):
        for batch in MemoryRecords(buf):
            for offset, rec in enumerate(batch):
                assert rec.offset == offset and rec.timestamp == TS and not rec.headers
                got.append((rec.key, rec.value))
    assert got == recs


def test_record_bytes_match_the_builders_varints() -> None:
    # Lengths crossing the 1- and 2-byte varint limits, and past the lookup table.
    for size in (0, 63, 64, 8191, 8192, 20000, 70000):
        key, value = b"k", b"x" * size
        acc = RecordAccumulator(batch_size=1 << 20)
        acc.append(TP, TS, key, value, [])
        ((_, buf),) = drained(acc)
        assert record_bytes(0, key, value) in buf


class _FakeProducer:
    """Not a KafkaProducer: BatchProducer falls back to one send() per record."""

    def __init__(self, fail_on: bytes | None = None) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.fail_on = fail_on

    def send(self, topic: str, key: bytes, value: bytes) -> None:
        if key == self.fail_on:
            raise RuntimeError("buffer full")
        self.sent.append((topic, key, value))


def test_without_kafka_python_internals_it_sends_record_by_record() -> None:
    errors: list[int] = []
    producer = _FakeProducer(fail_on=b"T00001")
    bp = BatchProducer(producer, "t", lambda n, exc: errors.append(n))
    assert not bp.fast
    recs = records(3)
    assert bp.send(recs) == 2
    assert producer.sent == [("t", k, v) for k, v in recs if k != b"T00001"]
    assert errors == [1]
