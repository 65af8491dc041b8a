"""A faster reader of fetched record batches for kafka-python's consumer.

Why: with the forecasts topic off, 53 % of the loop thread went to kafka-python turning
fetched bytes into ``ConsumerRecord``s (py-spy, ``bench/profile_pipeline.py``): seven
``decode_varint`` calls, a ``DefaultRecord`` and a ``ConsumerRecord`` per record, each
through several Python calls. :class:`FastPartitionRecords` reads a batch's records in
one loop with the varints inlined, and yields the same ``ConsumerRecord`` tuples.

What is kept: kafka-python decides everything about *batches* -- CRC, decompression,
aborted transactions and control batches under ``read_committed``, the fetch position,
metrics. :meth:`FastPartitionRecords._unpack_records` follows kafka-python 3.0's own
method line by line there; only the loop over one batch's records is replaced
(:func:`batch_records`).

Safety net: :func:`install` first runs both readers on batches it builds with
kafka-python's own builder (keys, null values, headers, multi-byte varints, log-append
time, gzip) and installs the fast one on that consumer only if every record is equal;
otherwise the consumer keeps kafka-python's reader (a newer kafka-python whose
internals moved degrades to the stock speed, never to wrong records). Unit tests
compare the two on random batches.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterator
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["FastPartitionRecords", "batch_records", "install"]

try:
    from kafka.consumer.fetcher import ConsumerRecord, Fetcher, IsolationLevel
    from kafka.errors import CorruptRecordError
    from kafka.record.default_records import DefaultRecordBatch
    from kafka.record.util import decode_varint

    _Base: Any = Fetcher.PartitionRecords
except (ImportError, AttributeError):  # another kafka-python: install() declines
    _Base = object


def batch_records(batch: Any, tp: Any, leader_epoch: int) -> tuple[list[Any], int]:
    """The ConsumerRecords of a v2 ``batch`` (decompressed here), as kafka-python's
    ``DefaultRecordBatch`` iteration plus ``_unpack_records`` build them without
    deserializers, and their total length (the consumer's ``bytes_read``).
    CorruptRecordError as kafka-python raises it (kafka-python raises it on reaching
    the bad record, this before the batch's first: the consumer gets the error either
    way, and no record of a corrupt batch is applied twice)."""
    batch._maybe_uncompress()
    buf = batch._buffer
    pos = batch._pos
    end = len(buf)
    base = batch.base_offset
    ts_type = batch.timestamp_type
    fixed_ts = batch.max_timestamp if ts_type == DefaultRecordBatch.LOG_APPEND_TIME else None
    first_ts = batch.first_timestamp
    topic, partition = tp.topic, tp.partition
    dv = decode_varint
    new = tuple.__new__  # ConsumerRecord(...) without its Python-level __new__
    out: list[Any] = []
    total = 0
    try:
        for _ in range(batch._num_records):
            # Each varint: one or two bytes (zigzag) inline; longer ones via kafka-python.
            b = buf[pos]
            if b < 0x80:
                length = (b >> 1) ^ -(b & 1)
                pos += 1
            elif buf[pos + 1] < 0x80:
                b = (b & 0x7F) | (buf[pos + 1] << 7)
                length = (b >> 1) ^ -(b & 1)
                pos += 2
            else:
                length, pos = dv(buf, pos)
            start = pos
            if buf[pos] < 0x80:  # attributes: unused, as in kafka-python
                pos += 1
            else:
                _, pos = dv(buf, pos)
            b = buf[pos]
            if b < 0x80:
                ts_delta = (b >> 1) ^ -(b & 1)
                pos += 1
            elif buf[pos + 1] < 0x80:
                b = (b & 0x7F) | (buf[pos + 1] << 7)
                ts_delta = (b >> 1) ^ -(b & 1)
                pos += 2
            else:
                ts_delta, pos = dv(buf, pos)
            b = buf[pos]
            if b < 0x80:
                offset_delta = (b >> 1) ^ -(b & 1)
                pos += 1
            elif buf[pos + 1] < 0x80:
                b = (b & 0x7F) | (buf[pos + 1] << 7)
                offset_delta = (b >> 1) ^ -(b & 1)
                pos += 2
            else:
                offset_delta, pos = dv(buf, pos)
            b = buf[pos]
            if b < 0x80:
                key_len = (b >> 1) ^ -(b & 1)
                pos += 1
            elif buf[pos + 1] < 0x80:
                b = (b & 0x7F) | (buf[pos + 1] << 7)
                key_len = (b >> 1) ^ -(b & 1)
                pos += 2
            else:
                key_len, pos = dv(buf, pos)
            if key_len >= 0:
                key: bytes | None = bytes(buf[pos : pos + key_len])
                pos += key_len
            else:
                key = None
            b = buf[pos]
            if b < 0x80:
                value_len = (b >> 1) ^ -(b & 1)
                pos += 1
            elif buf[pos + 1] < 0x80:
                b = (b & 0x7F) | (buf[pos + 1] << 7)
                value_len = (b >> 1) ^ -(b & 1)
                pos += 2
            else:
                value_len, pos = dv(buf, pos)
            if value_len >= 0:
                value: bytes | None = bytes(buf[pos : pos + value_len])
                pos += value_len
            else:
                value = None
            b = buf[pos]
            if b < 0x80:
                header_count = (b >> 1) ^ -(b & 1)
                pos += 1
            elif buf[pos + 1] < 0x80:
                b = (b & 0x7F) | (buf[pos + 1] << 7)
                header_count = (b >> 1) ^ -(b & 1)
                pos += 2
            else:
                header_count, pos = dv(buf, pos)
            headers: list[tuple[str, bytes | None]] = []
            header_size = -1
            if header_count:
                if header_count < 0:
                    raise CorruptRecordError(
                        f"Found invalid number of record headers {header_count}"
                    )
                header_size = 0
                for _h in range(header_count):
                    h_key_len, pos = dv(buf, pos)
                    if h_key_len < 0:
                        raise CorruptRecordError(f"Invalid negative header key size {h_key_len}")
                    h_key = buf[pos : pos + h_key_len].decode("utf-8")
                    pos += h_key_len
                    h_value_len, pos = dv(buf, pos)
                    if h_value_len >= 0:
                        h_value: bytes | None = bytes(buf[pos : pos + h_value_len])
                        pos += h_value_len
                    else:
                        h_value = None
                    headers.append((h_key, h_value))
                    header_size += len(h_key.encode("utf-8")) + (
                        len(h_value) if h_value is not None else 0
                    )
            if pos - start != length:
                raise CorruptRecordError(
                    f"Invalid record size: expected to read {length} bytes in record "
                    f"payload, but instead read {pos - start}"
                )
            total += length
            out.append(new(ConsumerRecord, (
                topic, partition, leader_epoch, base + offset_delta,
                first_ts + ts_delta if fixed_ts is None else fixed_ts, ts_type,
                key, value, headers, None,
                -1 if key is None else key_len, -1 if value is None else value_len,
                header_size,
            )))  # fmt: skip
    except (ValueError, IndexError) as err:
        raise CorruptRecordError(f"Found invalid record structure: {err!r}") from None
    if pos != end:
        raise CorruptRecordError(f"{end - pos} unconsumed bytes after all records consumed")
    batch._pos = pos
    return out, total


class FastPartitionRecords(_Base):
    """kafka-python's ``Fetcher.PartitionRecords`` with :func:`batch_records` as the
    per-record loop (deserializers and per-record CRCs are not used by the pipeline:
    v2 records carry no CRC of their own, and ``install`` declines a consumer with
    deserializers). One difference, in kafka-python's fetch metrics only: a batch's
    records and bytes are counted when the batch is read, not record by record, so a
    partition drained mid-batch (seek, pause) reports the whole batch."""

    def _unpack_records(
        self, tp: Any, records: Any, key_deserializer: Any, value_deserializer: Any
    ) -> Iterator[Any]:
        # The batch-level logic below is kafka-python 3.0's _unpack_records, unchanged.
        try:
            batch = records.next_batch()
            last_batch = None
            while batch is not None:
                last_batch = batch
                if self.check_crcs and not batch.validate_crc():
                    raise CorruptRecordError(
                        f"Record batch for partition {self.topic_partition} at offset "
                        f"{batch.base_offset} failed crc check"
                    )
                if batch.magic != 2:  # old message formats (no headers)
                    yield from self._legacy_records(tp, batch)
                    batch = records.next_batch()
                    continue
                self.leader_epoch = batch.leader_epoch
                if (
                    self.isolation_level == IsolationLevel.READ_COMMITTED
                    and batch.has_producer_id()
                ):
                    self._consume_aborted_transactions_up_to(batch.last_offset)
                    producer_id = batch.producer_id
                    if self._contains_abort_marker(batch):
                        self.aborted_producer_ids.discard(producer_id)
                    elif self._is_batch_aborted(batch):
                        self.next_fetch_offset = batch.next_offset
                        batch = records.next_batch()
                        continue
                if batch.is_control_batch:
                    self.next_fetch_offset = batch.next_offset
                    batch = records.next_batch()
                    continue
                got, size = batch_records(batch, tp, self.leader_epoch)
                self.records_read += len(got)
                self.bytes_read += size
                for record in got:
                    self.next_fetch_offset = record[3] + 1  # .offset
                    yield record
                batch = records.next_batch()
            else:
                if last_batch and last_batch.magic == 2:
                    self.next_fetch_offset = last_batch.next_offset
                self.drain()
        except StopIteration:
            log.exception("StopIteration raised unpacking messageset")
            raise RuntimeError("StopIteration raised unpacking messageset") from None

    def _legacy_records(self, tp: Any, batch: Any) -> Iterator[Any]:
        """A pre-v2 (magic 0/1) batch's records, as kafka-python's loop builds them."""
        for record in batch:
            if self.check_crcs and not record.validate_crc():
                raise CorruptRecordError(
                    f"Record for partition {self.topic_partition} at offset "
                    f"{record.offset} failed crc check"
                )
            key, value = record.key, record.value
            self.records_read += 1
            self.bytes_read += record.size_in_bytes
            self.next_fetch_offset = record.offset + 1
            yield ConsumerRecord(
                tp.topic, tp.partition, self.leader_epoch, record.offset, record.timestamp,
                record.timestamp_type, key, value, record.headers, record.checksum,
                -1 if key is None else len(key), -1 if value is None else len(value), -1,
            )  # fmt: skip


def _sample_batches() -> list[bytes]:
    """Batches that exercise every branch of :func:`batch_records`, built by kafka-python."""
    from kafka.record.default_records import DefaultRecordBatchBuilder

    out = []
    for codec, ts_type, transactional in ((0, 0, 0), (1, 0, 0), (0, 1, 1)):
        bld = DefaultRecordBatchBuilder(
            magic=2, compression_type=codec, is_transactional=transactional,
            producer_id=7 if transactional else -1, producer_epoch=0 if transactional else -1,
            base_sequence=0 if transactional else -1, batch_size=1 << 20,
        )  # fmt: skip
        for i in range(200):
            key = None if i % 7 == 3 else (b"k%d" % i) * (1 + i % 40)
            value = None if i % 11 == 5 else b"v" * (i * 3)
            headers = [("h\u00e9", b"x" * (i % 90)), ("n", None)] if i % 5 == 0 else []
            bld.append(i, timestamp=1_700_000_000_000 + i * 997 - 50_000, key=key,
                       value=value, headers=headers)  # fmt: skip
        buf = bld.build()
        if ts_type:  # log-append time: the broker sets attribute bit 3
            attrs_at = 21  # offset(8) length(4) epoch(4) magic(1) crc(4)
            attrs = struct.unpack_from(">h", buf, attrs_at)[0] | 0x08
            struct.pack_into(">h", buf, attrs_at, attrs)
        out.append(bytes(buf))
    return out


def _agrees() -> bool:
    """Do the stock and fast readers give equal records on :func:`_sample_batches`?"""
    from kafka.record.memory_records import MemoryRecords
    from kafka.structs import TopicPartition

    tp = TopicPartition("self-check", 3)
    for data in _sample_batches():
        got = []
        for cls in (_Base, FastPartitionRecords):
            pr = cls(0, tp, MemoryRecords(data), check_crcs=False)
            got.append((pr.take(), pr.next_fetch_offset, pr.bytes_read, pr.records_read))
        if got[0] != got[1] or not got[0][0]:
            return False
    return True


_checked: bool | None = None


def install(consumer: Any) -> bool:
    """Use :class:`FastPartitionRecords` in this KafkaConsumer (not process-wide); False
    (stock reader kept) when the consumer has deserializers, or when this
    kafka-python's internals differ from what it was written for -- said in a warning
    (once per process for the self-check), as the consumer is then slower."""
    global _checked
    fetcher = getattr(consumer, "_fetcher", None)
    if fetcher is not None and (
        fetcher.config.get("key_deserializer") or fetcher.config.get("value_deserializer")
    ):
        return False
    if _checked is None:
        why = ""
        try:
            if _Base is object:
                why = "no Fetcher.PartitionRecords"
            elif not _agrees():
                why = "its reader and ours disagree on sample batches"
        except Exception as exc:  # any internals mismatch: keep the stock reader
            why = f"self-check failed: {exc}"
        _checked = not why
        if why:
            _slower(why)
    if not _checked:
        return False
    if fetcher is None or not hasattr(fetcher, "PartitionRecords"):
        _slower("the consumer has no fetcher with PartitionRecords")
        return False
    fetcher.PartitionRecords = FastPartitionRecords
    return True


def _slower(why: str) -> None:
    log.warning(
        "kafka-python's internals differ: using its own, slower record reader",
        extra={"reason": why},
    )
