"""Produce many keyed records at once through kafka-python, without a ``send`` per record.

``KafkaProducer.send`` costs ~18 us of Python per record (argument checks, the
partitioner's pure-Python murmur2, size estimate, a ``FutureRecordMetadata``, the
builder's per-record varint writes, a sender wake-up). A tick of forecasts is
thousands of records produced together, so :class:`BatchProducer` does that work once
per tick:

* a key's partition is computed once (kafka-python's own ``murmur2``, as its default
  partitioner does) and cached for as long as the topic's partition count holds;
* each record is encoded into the v2 record format directly (the bytes
  ``DefaultRecordBatchBuilder.append`` writes: attributes, timestamp delta 0, offset
  delta, key, value, no headers) and appended to a ``MemoryRecordsBuilder`` split at
  ``batch_size`` exactly as ``append`` splits it;
* the finished batches are handed to the producer's accumulator as ``ProducerBatch``
  objects (one future per batch, not per record), so the sender, retries,
  idempotence (sequence numbers are assigned when a batch is drained), transactions,
  ``flush`` and compression work on them unchanged.

This uses kafka-python internals (``_accumulator``, ``_sender``, ``_metadata``, the
builder's fields); :func:`supported` checks that they look as expected, and anything
unexpected (another partitioner, message format < 2, unknown topic metadata, a record
larger than ``max_request_size``) takes the ordinary ``send`` path, record by record.
Batches built here are byte-identical to what ``send`` with the same timestamp builds
from an empty accumulator (tests/unit/test_batch_produce.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from kafka.partitioner.default import DefaultPartitioner, murmur2
from kafka.producer.producer_batch import ProducerBatch
from kafka.record.default_records import DefaultRecordBatchBuilder
from kafka.record.memory_records import MemoryRecordsBuilder
from kafka.record.util import encode_varint
from kafka.structs import TopicPartition

__all__ = ["BatchProducer", "append_records", "record_bytes", "supported"]

log = logging.getLogger(__name__)


def _varint_table(n: int) -> list[bytes]:
    out = []
    for v in range(n):
        buf = bytearray()
        encode_varint(v, buf.append)
        out.append(bytes(buf))
    return out


#: Zigzag varints of 0..16383 (lengths and offset deltas of ordinary records).
_VARINT = _varint_table(1 << 14)


def _varint(v: int) -> bytes:
    if v < 16384:
        return _VARINT[v]
    buf = bytearray()
    encode_varint(v, buf.append)
    return bytes(buf)


def record_bytes(offset_delta: int, key: bytes, value: bytes) -> bytes:
    """One v2 record (length prefix included) with timestamp delta 0 and no headers:
    the bytes ``DefaultRecordBatchBuilder.append`` writes for it."""
    body = b"\x00\x00%s%s%s%s%s\x00" % (
        _varint(offset_delta),
        _varint(len(key)),
        key,
        _varint(len(value)),
        value,
    )
    return _varint(len(body)) + body


def append_records(
    accumulator: Any,
    tp: TopicPartition,
    records: Sequence[tuple[bytes, bytes]],
    timestamp_ms: int,
    now: float | None = None,
) -> list[ProducerBatch]:
    """Append ``records`` (key, value) to ``tp`` as new batches of the accumulator
    (split at its ``batch_size`` as ``append`` splits); returns the batches.

    Every record gets ``timestamp_ms``. An open batch already queued for ``tp`` is
    left as it is (it becomes sendable: it is no longer the last in its queue).
    """
    if not records:
        return []
    cfg = accumulator.config
    batch_size = cfg["batch_size"]
    now = time.monotonic() if now is None else now
    built: list[tuple[MemoryRecordsBuilder, int]] = []
    builder = MemoryRecordsBuilder(cfg["message_version"], cfg["compression_attrs"], batch_size)
    inner: Any = builder._builder
    buf: bytearray = inner._buffer
    n = 0
    biggest = 0
    for key, value in records:
        rec = record_bytes(n, key, value)
        # The split rule of DefaultRecordBatchBuilder.append: a record that would take
        # the batch past batch_size starts a new one (a batch's first always fits).
        if n and len(buf) + len(rec) > batch_size:
            built.append(_finish(builder, inner, n, timestamp_ms, biggest))
            builder = MemoryRecordsBuilder(
                cfg["message_version"], cfg["compression_attrs"], batch_size
            )
            inner = builder._builder
            buf = inner._buffer
            n = 0
            biggest = 0
            rec = record_bytes(0, key, value)
        buf += rec
        if len(rec) > biggest:
            biggest = len(rec)
        n += 1
    built.append(_finish(builder, inner, n, timestamp_ms, biggest))
    batches = []
    for b, size in built:
        batch = ProducerBatch(tp, b, now=now)
        batch.max_record_size = size
        batches.append(batch)
    accumulator._appends_in_progress.increment()
    try:
        with accumulator._tp_lock(tp):
            if accumulator._closed:
                from kafka.errors import IllegalStateError

                raise IllegalStateError("RecordAccumulator is closed")
            dq = accumulator._batches[tp]
            for batch in batches:
                dq.append(batch)
                accumulator._incomplete.add(batch)
    finally:
        accumulator._appends_in_progress.decrement()
    return batches


def _finish(
    builder: MemoryRecordsBuilder, inner: Any, n: int, timestamp_ms: int, biggest: int
) -> tuple[MemoryRecordsBuilder, int]:
    """Set the counters ``append`` would have kept for n records in ``builder``."""
    inner._first_timestamp = timestamp_ms
    inner._max_timestamp = timestamp_ms
    inner._num_records = n
    inner._last_offset = n - 1
    builder._next_offset = n
    return builder, biggest


def supported(producer: Any) -> bool:
    """Whether ``producer`` has the kafka-python internals :class:`BatchProducer` uses."""
    acc = getattr(producer, "_accumulator", None)
    return (
        acc is not None
        and getattr(acc, "config", {}).get("message_version") == 2
        and hasattr(acc, "_batches")
        and hasattr(acc, "_tp_lock")
        and hasattr(acc, "_incomplete")
        and hasattr(acc, "_appends_in_progress")
        and hasattr(producer, "_sender")
        and hasattr(producer, "_metadata")
        and isinstance(producer.config.get("partitioner"), DefaultPartitioner)
        and set(DefaultRecordBatchBuilder.__slots__)
        >= {"_buffer", "_first_timestamp", "_max_timestamp", "_num_records", "_last_offset"}
    )


class BatchProducer:
    """Produces lists of keyed records to one topic, a batch per partition at a time.

    ``on_error(n, exc)`` is called (on the producer's IO thread) with the number of
    records of a batch that failed for good.
    """

    def __init__(
        self, producer: Any, topic: str, on_error: Callable[[int, BaseException], None]
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.on_error = on_error
        self.fast = supported(producer)
        # A TransactionalOutputs hands out its KafkaProducer per send (it may replace
        # it after an abort): checked for the fast path once per producer object.
        self._checked: Any = None
        self._checked_ok = False
        self._parts: dict[bytes, int] = {}
        self._n_parts = 0
        self._max_record = int(getattr(producer, "config", {}).get("max_request_size", 1 << 20))

    def send(self, records: Sequence[tuple[bytes, bytes]]) -> int:
        """Produce every (key, value); returns how many were handed to the producer.
        Failures (refused now, or failed for good later) go to ``on_error``."""
        if not records:
            return 0
        producer = self._target()
        partitions = producer._metadata.partitions_for_topic(self.topic) if producer else None
        if not partitions:
            return self._send_each(records)  # send() waits for the metadata
        if len(partitions) != self._n_parts:
            self._parts.clear()
            self._n_parts = len(partitions)
        ordered = sorted(partitions)
        by_tp: dict[int, list[tuple[bytes, bytes]]] = {}
        slow: list[tuple[bytes, bytes]] = []
        parts = self._parts
        limit = self._max_record - 100  # batch header (61) + record overhead (21) + slack
        for key, value in records:
            if len(key) + len(value) > limit:
                slow.append((key, value))
                continue
            p = parts.get(key)
            if p is None:
                p = parts[key] = ordered[(murmur2(key) & 0x7FFFFFFF) % len(ordered)]
            group = by_tp.get(p)
            if group is None:
                by_tp[p] = [(key, value)]
            else:
                group.append((key, value))
        tm = getattr(producer, "_transaction_manager", None)
        ts = int(time.time() * 1000)
        sent = 0
        for p, group in by_tp.items():
            tp = TopicPartition(self.topic, p)
            try:
                if tm is not None and tm.is_transactional():
                    tm.maybe_add_partition_to_transaction(tp)
                batches = append_records(producer._accumulator, tp, group, ts)
            except Exception as exc:  # a closed or failed producer: as send() would raise
                self._refused(len(group), exc)
                continue
            sent += len(group)
            for batch in batches:
                count = batch.record_count
                batch.produce_future.add_errback(lambda exc, n=count: self.on_error(n, exc))
        if sent:
            producer._sender.wakeup()
        return sent + self._send_each(slow)

    def send_to(self, partition: int, records: Sequence[tuple[bytes, bytes]]) -> int:
        """Produce every (key, value) to one given partition (as ``send(...,
        partition=)``), in order; returns how many were handed to the producer."""
        if not records:
            return 0
        producer = self._target()
        known = producer._metadata.partitions_for_topic(self.topic) if producer else None
        limit = self._max_record - 100
        if not known or partition not in known or any(len(k) + len(v) > limit for k, v in records):
            return self._send_each(records, partition)
        tp = TopicPartition(self.topic, partition)
        tm = getattr(producer, "_transaction_manager", None)
        try:
            if tm is not None and tm.is_transactional():
                tm.maybe_add_partition_to_transaction(tp)
            batches = append_records(producer._accumulator, tp, records, int(time.time() * 1000))
        except Exception as exc:  # a closed or failed producer: as send() would raise
            self._refused(len(records), exc)
            return 0
        for batch in batches:
            count = batch.record_count
            batch.produce_future.add_errback(lambda exc, n=count: self.on_error(n, exc))
        producer._sender.wakeup()
        return len(records)

    def _target(self) -> Any:
        """The KafkaProducer to append batches to, or None for the per-record path.

        Through a transactional wrapper (``producer_for_batch``: the producer, in this
        checkpoint's transaction) the batches join the transaction exactly as its
        ``send`` would; a failed batch puts kafka-python's transaction manager in an
        abortable error, so the checkpoint's commit aborts, as for ``send``."""
        get = getattr(self.producer, "producer_for_batch", None)
        if get is None:
            return self.producer if self.fast else None
        try:
            producer = get()
        except Exception:  # the per-record path raises it again and reports it
            return None
        if producer is not self._checked:
            self._checked, self._checked_ok = producer, supported(producer)
        return producer if self._checked_ok else None

    def _refused(self, n: int, exc: BaseException) -> None:
        """Records the producer refused synchronously: reported, and a transaction they
        belonged to is marked failed (its commit must abort)."""
        note = getattr(self.producer, "note_send_error", None)
        if note is not None:
            note(exc)
        self.on_error(n, exc)

    def _send_each(
        self, records: Sequence[tuple[bytes, bytes]], partition: int | None = None
    ) -> int:
        """The ordinary path, record by record; a record ``send`` refuses is reported
        to ``on_error`` and not counted."""
        sent = 0
        for key, value in records:
            try:
                if partition is None:
                    self.producer.send(self.topic, key=key, value=value)
                else:
                    self.producer.send(self.topic, key=key, value=value, partition=partition)
                sent += 1
            except Exception as exc:  # buffer full / broker gone: never stall the stream
                self.on_error(1, exc)
        return sent
