"""The pipeline's record reader gives exactly what kafka-python's own gives.

Batches are built with kafka-python's builders (v2 with every field shape, gzip,
log-append time, transactions with abort markers under read_committed, control batches,
legacy v1), then read by ``Fetcher.PartitionRecords`` (stock) and
``FastPartitionRecords``, in chunks as ``poll(max_records)`` takes them; records, fetch
position and metrics must be equal, and a corrupt batch must raise for both.
"""

from __future__ import annotations

import struct
from collections import namedtuple
from typing import Any

import numpy as np
import pytest
from kafka.consumer.fetcher import Fetcher, IsolationLevel
from kafka.errors import CorruptRecordError
from kafka.record.default_records import DefaultRecordBatchBuilder
from kafka.record.legacy_records import LegacyRecordBatchBuilder
from kafka.record.memory_records import MemoryRecords
from kafka.structs import TopicPartition

from pipeline import record_batches
from pipeline.record_batches import FastPartitionRecords, install

TP = TopicPartition("tank.readings", 2)
Aborted = namedtuple("Aborted", "producer_id first_offset")
ATTRS_AT = 21  # v2 batch header: base offset 8, length 4, epoch 4, magic 1, crc 4


def v2_batch(
    rng: np.random.Generator,
    base: int,
    n: int,
    codec: int = 0,
    producer_id: int = -1,
    attrs: int = 0,
) -> tuple[bytes, int]:
    """A v2 batch of ``n`` random records from offset ``base`` (gaps between offsets,
    as compaction leaves them); returns it and the next free offset."""
    bld = DefaultRecordBatchBuilder(
        magic=2, compression_type=codec, is_transactional=producer_id >= 0,
        producer_id=producer_id, producer_epoch=0 if producer_id >= 0 else -1,
        base_sequence=0 if producer_id >= 0 else -1, batch_size=1 << 22,
    )  # fmt: skip
    delta = 0
    t0 = int(rng.integers(0, 2_000_000_000_000))
    for _ in range(n):
        size = int(rng.choice([0, 1, 30, 63, 64, 200, 9000, 20000]))
        key = None if rng.random() < 0.1 else rng.bytes(int(rng.integers(0, 80)))
        value = None if rng.random() < 0.05 else rng.bytes(size)
        headers = []
        if rng.random() < 0.3:
            for _ in range(int(rng.integers(1, 4))):
                hv = None if rng.random() < 0.2 else rng.bytes(int(rng.integers(0, 150)))
                headers.append((rng.choice(["reason", "é", "x" * 70]), hv))
        ts = t0 + int(rng.integers(-10_000_000, 10_000_000))
        bld.append(delta, timestamp=ts, key=key, value=value, headers=headers)
        delta += int(rng.choice([1, 1, 1, 2, 100]))
    buf = bld.build()
    struct.pack_into(">q", buf, 0, base)
    if attrs:
        a = struct.unpack_from(">h", buf, ATTRS_AT)[0] | attrs
        struct.pack_into(">h", buf, ATTRS_AT, a)
    return bytes(buf), base + delta


def control_batch(base: int, producer_id: int, abort: bool) -> bytes:
    bld = DefaultRecordBatchBuilder(2, 0, True, producer_id, 0, -1, 1 << 20)
    bld.append(0, timestamp=1, key=struct.pack(">hh", 0, 0 if abort else 1),
               value=struct.pack(">hi", 0, 5), headers=[])  # fmt: skip
    buf = bld.build()
    struct.pack_into(">q", buf, 0, base)
    a = struct.unpack_from(">h", buf, ATTRS_AT)[0] | 0x20  # control
    struct.pack_into(">h", buf, ATTRS_AT, a)
    return bytes(buf)


def read(cls: Any, data: bytes, fetch_offset: int = 0, chunk: int | None = None,
         **kw: Any) -> tuple[list[Any], int, int, int]:  # fmt: skip
    pr = cls(fetch_offset, TP, MemoryRecords(data), check_crcs=kw.pop("check_crcs", False), **kw)
    out: list[Any] = []
    while pr:  # until drained, as the fetcher takes them
        out += pr.take(chunk)
    return out, pr.next_fetch_offset, pr.bytes_read, pr.records_read


def assert_same(data: bytes, **kw: Any) -> list[Any]:
    stock = read(Fetcher.PartitionRecords, data, **kw)
    fast = read(FastPartitionRecords, data, **kw)
    assert fast == stock
    return stock[0]


@pytest.mark.parametrize("seed", range(12))
def test_random_batches_read_the_same(seed: int) -> None:
    rng = np.random.default_rng(seed)
    data, offset = b"", int(rng.integers(0, 1 << 40))
    for _ in range(int(rng.integers(1, 5))):
        codec = int(rng.choice([0, 1]))  # none, gzip
        attrs = 0x08 if rng.random() < 0.3 else 0  # log-append time
        batch, offset = v2_batch(rng, offset, int(rng.integers(1, 300)), codec, attrs=attrs)
        data += batch
    records = assert_same(data)
    assert records
    # From the middle of the data (a fetch inside a batch), in poll-sized chunks.
    mid = records[len(records) // 2].offset
    assert assert_same(data, fetch_offset=mid, chunk=int(rng.integers(1, 50)))[0].offset == mid


def test_crc_checked_batches_read_the_same() -> None:
    rng = np.random.default_rng(1)
    data = v2_batch(rng, 10, 50)[0] + v2_batch(rng, 100, 50, codec=1)[0]
    assert len(assert_same(data, check_crcs=True)) == 100


def test_read_committed_skips_aborted_and_control_batches_alike() -> None:
    rng = np.random.default_rng(2)
    committed, o1 = v2_batch(rng, 0, 20, producer_id=7)
    commit_marker = control_batch(o1, 7, abort=False)
    aborted, o2 = v2_batch(rng, o1 + 1, 20, producer_id=9)
    abort_marker = control_batch(o2, 9, abort=True)
    plain, o3 = v2_batch(rng, o2 + 1, 20)
    # The aborting producer's next transaction commits: its marker cleared the abort.
    again, o4 = v2_batch(rng, o3, 20, producer_id=9)
    data = (committed + commit_marker + aborted + abort_marker + plain + again
            + control_batch(o4, 9, abort=False))  # fmt: skip
    kw = {"isolation_level": IsolationLevel.READ_COMMITTED,
          "aborted_transactions": [Aborted(9, o1 + 1)]}  # fmt: skip
    got = assert_same(data, **kw)
    assert len(got) == 60  # all but the aborted batch and the markers
    assert len(assert_same(data)) == 80  # read_uncommitted: all but the markers


def test_legacy_message_format_reads_the_same() -> None:
    bld = LegacyRecordBatchBuilder(magic=1, compression_type=0, batch_size=1 << 20)
    for i in range(30):
        bld.append(i, timestamp=1_700_000_000_000 + i, key=None if i % 3 else b"k",
                   value=b"v" * i)  # fmt: skip
    assert len(assert_same(bytes(bld.build()), check_crcs=True)) == 30


@pytest.mark.parametrize("cut", [1, 5, 40])
def test_corrupt_batch_raises_for_both(cut: int) -> None:
    rng = np.random.default_rng(3)
    data = bytearray(v2_batch(rng, 0, 10)[0])
    # Shrink the last record's declared value length: the record no longer adds up.
    data = data[:-cut]
    struct.pack_into(">i", data, 8, len(data) - 12)  # batch length matches the bytes
    for cls in (Fetcher.PartitionRecords, FastPartitionRecords):
        with pytest.raises(CorruptRecordError):
            read(cls, bytes(data))


class _Fetcher:
    def __init__(self, **config: Any) -> None:
        self.config = config
        self.PartitionRecords = Fetcher.PartitionRecords


class _Consumer:
    def __init__(self, **config: Any) -> None:
        self._fetcher = _Fetcher(**config)


def test_install_swaps_the_reader_of_one_consumer_only() -> None:
    a, b = _Consumer(), _Consumer()
    assert install(a)
    assert a._fetcher.PartitionRecords is FastPartitionRecords
    assert b._fetcher.PartitionRecords is Fetcher.PartitionRecords
    assert Fetcher.PartitionRecords is not FastPartitionRecords


def test_install_declines_deserializers_and_a_failed_self_check(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    c = _Consumer(value_deserializer=lambda v: v)
    assert not install(c) and c._fetcher.PartitionRecords is Fetcher.PartitionRecords
    assert not caplog.records  # a consumer's own choice, nothing to warn about
    assert not install(object())  # no fetcher: the stock reader, said
    assert "slower record reader" in caplog.records[-1].getMessage()
    assert install(_Consumer())  # that consumer did not decide for the process
    monkeypatch.setattr(record_batches, "_checked", None)
    monkeypatch.setattr(record_batches, "_agrees", lambda: False)
    caplog.clear()
    d = _Consumer()
    assert not install(d) and d._fetcher.PartitionRecords is Fetcher.PartitionRecords
    assert [r.reason for r in caplog.records] == [  # type: ignore[attr-defined]
        "its reader and ours disagree on sample batches"
    ]
    assert not install(_Consumer()) and len(caplog.records) == 1  # once per process


def test_self_check_batches_pass() -> None:
    assert record_batches._agrees()
