"""Per-tank checkpoints: a local file and the compacted ``tank.state`` topic.

A checkpoint holds, per tank, everything that continues it exactly
(:class:`~pipeline.forecast_step.TankState`: h, c, held forecast, anomaly state, last
applied tick) and, per partition, the :class:`~pipeline.assembler.CommitPoint` (resume
offset and the max event time before it). Order of a checkpoint, which makes the state
exactly-once: local file (write, fsync, rename) -> ``tank.state`` (tank records, then
the partition record, explicitly to the partition with the readings' number; producer
flushed with acks=all) -> only then are offsets committed (by the caller).

Values are compact JSON with the state as one base64 blob and its layout (float32 LSTM
state, float64 anomaly and baseline statistics; :func:`encode_columns`), so any Kafka
tool can inspect them. Restore reads the assigned partitions of
``tank.state`` to their end (latest value per key wins; compaction is not relied on)
and the local file, and keeps per tank the record with the larger last applied tick,
per partition the commit point with the larger offset.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import math
import os
import re
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import record_batches
from pipeline.assembler import CommitPoint
from pipeline.forecast_step import StateColumns, TankState
from pipeline.sinks.batch_produce import BatchProducer
from tankwatch.errors import BrokerError, ConfigError, TankwatchError

__all__ = [
    "PARTITION_KEY",
    "Checkpointer",
    "LocalCheckpointError",
    "decode_point",
    "decode_state",
    "encode_columns",
    "encode_point",
    "encode_state",
]

log = logging.getLogger(__name__)

#: Key of the per-partition commit-point record (cannot collide with a tank id, which
#: must start with a letter or digit).
PARTITION_KEY = b"__partition__"
#: 2: one base64 blob per tank with its layout (1: a base64 field per array; restores).
FORMAT = 2


class LocalCheckpointError(TankwatchError):
    """The local checkpoint file could not be written (read-only or full disk): not a
    broker problem, and nothing may be committed until a checkpoint lands."""


def check_writable(state_dir: Path) -> None:
    """Create ``state_dir`` and prove a file can be written, synced and removed there
    (ConfigError, one line, otherwise): a service that cannot checkpoint must not start."""
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        probe = state_dir / f".write-test-{os.getpid()}"
        with open(probe, "w") as f:
            f.write("x" * 4096)  # a full disk fails here, not only on create
            f.flush()
            os.fsync(f.fileno())
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            f"--state-dir / TANKWATCH_STATE_DIR: {state_dir} is not writable "
            f"({exc.strerror or exc})"
        ) from None


def _fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (best effort: not every filesystem allows it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def _unb64(text: str, dtype: type, shape: tuple[int, ...]) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype=dtype).reshape(shape).copy()


#: Strings ``json.dumps`` writes as themselves between quotes (no escapes).
_PLAIN = re.compile(r"[A-Za-z0-9 _.,:;/@+=#-]*")


def _js(text: str) -> str:
    return f'"{text}"' if _PLAIN.fullmatch(text) else json.dumps(text)


def _int_js(v: Any) -> str:
    return str(v) if type(v) is int else json.dumps(v)


def encode_state(s: TankState, group: str = "", model: str = "", inc: str = "") -> bytes:
    """One tank's state as the ``tank.state`` value (JSON, base64 arrays); ``group`` is
    the consumer group that wrote it and ``model`` the model version whose state it is
    (restore ignores other groups' records and other models' states). The one-tank
    case of :func:`encode_columns`, which the checkpoints use."""
    return encode_columns(StateColumns.of([s]), group, model, inc)[0]


def b64_rows(raw: np.ndarray) -> list[str]:
    """Standard base64 of every row of a (n, L) uint8 array (``base64.b64encode(row)``
    for each row, same text) from one ``b64encode`` of the whole block: each row is
    zero-padded to a multiple of 3 bytes, so the rows' encodings are consecutive
    slices, and the padding's last characters become ``=`` as b64encode writes them."""
    n, length = raw.shape
    pad = (-length) % 3
    if pad:
        raw = np.concatenate([raw, np.zeros((n, pad), np.uint8)], axis=1)
    width = (length + pad) // 3 * 4
    text = base64.b64encode(np.ascontiguousarray(raw).tobytes()).decode("ascii")
    rows = [text[i * width : (i + 1) * width] for i in range(n)]
    if pad:
        rows = [r[:-pad] + "=" * pad for r in rows]
    return rows


def _field(name: str, block: np.ndarray, n: int, dtype: str) -> tuple[str, np.ndarray]:
    """One layout entry (``name:dtype:shape``) and the field's bytes, a row per tank."""
    a = np.ascontiguousarray(block, dtype=np.dtype("<" + dtype))
    shape = "x".join(str(d) for d in a.shape[1:])
    return f"{name}:{dtype}:{shape}", a.reshape(n, -1).view(np.uint8).reshape(n, -1)


def encode_columns(
    cols: StateColumns, group: str = "", model: str = "", inc: str = ""
) -> list[bytes]:
    """The ``tank.state`` value of every tank in ``cols``: JSON with the fields v (2),
    group, model, inc, tank_id, partition, tick, ts, and the state itself as one base64
    ``state`` blob whose ``layout`` says what it holds, in order:
    ``name:dtype:shape`` entries (``h:f4:1x48,c:f4:1x48,held:f4:2,actual:f4:2,
    anomaly.mean:f8:2,...,extra.holt_level:f8:2,...``; little-endian, a scalar's shape
    empty). The layout is the same for every tank of a checkpoint, so a record still
    explains itself to any Kafka tool.

    Why one blob: format 1 wrote 22 base64 fields in nested JSON per tank. At 10,000
    tanks its encoding was ~60 % of a checkpoint's pause of the loop (py-spy of
    ``bench/pipeline.py --parts scale --scale 10000``), and that pause was the slowest
    tick. Here the whole fleet's bytes are one array, one ``b64encode``, and one short
    template per tank. Format-1 records still restore (:func:`decode_state`)."""
    n = len(cols)
    if n == 0:
        return []
    fields = [
        _field("h", np.swapaxes(cols.h, 0, 1), n, "f4"),
        _field("c", np.swapaxes(cols.c, 0, 1), n, "f4"),
        _field("held", cols.held, n, "f4"),
        _field("actual", cols.actual, n, "f4"),
        *(_field("anomaly." + k, v, n, "f8") for k, v in cols.anomaly.items()),
        *(_field("extra." + k, v, n, "f8") for k, v in cols.extra.items()),
    ]
    layout = ",".join(name for name, _ in fields)
    if not _PLAIN.fullmatch(layout):
        raise ValueError(f"state array names must be plain words: {layout!r}")
    blobs = b64_rows(np.concatenate([b for _, b in fields], axis=1))
    # The constant part of every record, written once: only the tank's own fields and
    # its blob are formatted per tank.
    head = f'{{"v":{FORMAT},"group":{_js(group)},"model":{_js(model)},"inc":{_js(inc)},'
    head = head.replace("%", "%%")  # a group or model name is not a format string
    tmpl = head + '"tank_id":%s,"partition":%s,"tick":%s,"ts":%s,"layout":"' + layout
    tmpl += '","state":"%s"}'
    out = []
    for r in range(n):
        t = cols.last_ts[r]
        ts = "null" if not math.isfinite(t) else str(t) if type(t) is int else float.__repr__(t)
        out.append(
            (
                tmpl
                % (
                    _js(cols.tank_ids[r]), _int_js(cols.partitions[r]),
                    _int_js(cols.last_ticks[r]), ts, blobs[r],
                )
            ).encode()
        )  # fmt: skip
    return out


def decode_state(value: bytes) -> TankState:
    """Inverse of :func:`encode_state`, for format 2 and the older format 1
    (ValueError/KeyError on a corrupt record)."""
    return _state_of(json.loads(value))


#: Parsed layouts (layout text -> entries, total bytes): one per model and version in
#: practice; bounded so that odd records cannot grow it.
_LAYOUTS: dict[str, tuple[list[tuple[str, str, tuple[int, ...], int, int]], int]] = {}


def _parse_layout(text: str) -> tuple[list[tuple[str, str, tuple[int, ...], int, int]], int]:
    """``name:dtype:shape,...`` -> [(name, dtype, shape, byte offset, count)], total."""
    got = _LAYOUTS.get(text)
    if got is not None:
        return got
    entries = []
    offset = 0
    for item in text.split(","):
        name, dtype, dims = item.split(":")
        if dtype not in ("f4", "f8"):
            raise ValueError(f"unsupported dtype {dtype!r} in the state layout")
        shape = tuple(int(d) for d in dims.split("x")) if dims else ()
        if any(d < 0 for d in shape):
            raise ValueError(f"negative dimension in the state layout: {item!r}")
        count = math.prod(shape)
        entries.append((name, dtype, shape, offset, count))
        offset += count * int(dtype[1])
    if len(_LAYOUTS) < 64:
        _LAYOUTS[text] = (entries, offset)
    return entries, offset


def _state_of(o: dict[str, Any]) -> TankState:
    if o.get("v") == 1:
        return _state_of_v1(o)
    if o.get("v") != FORMAT:
        raise ValueError(f"unsupported state format {o.get('v')!r}")
    entries, total = _parse_layout(o["layout"])
    raw = base64.b64decode(o["state"], validate=True)
    if len(raw) != total:
        raise ValueError(f"state blob has {len(raw)} bytes, its layout {total}")
    arrays: dict[str, np.ndarray] = {}
    for name, dtype, shape, offset, count in entries:
        a = np.frombuffer(raw, np.dtype("<" + dtype), count, offset).reshape(shape)
        arrays[name] = a.astype(np.float32 if dtype == "f4" else np.float64)
    h, c = arrays["h"], arrays["c"]
    if h.ndim != 2 or c.shape != h.shape or arrays["actual"].shape != arrays["held"].shape:
        raise ValueError("state layout: h/c or held/actual shapes disagree")
    return TankState(
        tank_id=str(o["tank_id"]),
        partition=int(o["partition"]),
        last_tick=int(o["tick"]),
        last_ts=float("nan") if o["ts"] is None else float(o["ts"]),
        h=h,
        c=c,
        held=arrays["held"],
        actual=arrays["actual"],
        anomaly={k[8:]: v for k, v in arrays.items() if k.startswith("anomaly.")},
        extra={k[6:]: v for k, v in arrays.items() if k.startswith("extra.")},
    )


def _state_of_v1(o: dict[str, Any]) -> TankState:
    """A format-1 record (base64 field per array; written before format 2)."""
    shape = (int(o["layers"]), int(o["units"]))
    held = np.frombuffer(base64.b64decode(o["held"]), np.float32).copy()
    return TankState(
        tank_id=str(o["tank_id"]),
        partition=int(o["partition"]),
        last_tick=int(o["tick"]),
        last_ts=float("nan") if o["ts"] is None else float(o["ts"]),
        h=_unb64(o["h"], np.float32, shape),
        c=_unb64(o["c"], np.float32, shape),
        held=held,
        actual=_unb64(o["actual"], np.float32, held.shape),
        anomaly={k: _unb64(b, np.float64, tuple(sh)) for k, (b, sh) in o["anomaly"].items()},
        extra={k: _unb64(b, np.float64, tuple(sh)) for k, (b, sh) in o.get("extra", {}).items()},
    )


def encode_point(partition: int, point: CommitPoint, group: str = "", inc: str = "") -> bytes:
    """A partition's commit point as a ``tank.state`` value."""
    max_ts = point.max_ts if math.isfinite(point.max_ts) else None
    obj = {
        "v": FORMAT,
        "group": group,
        "inc": inc,
        "partition": partition,
        "offset": point.offset,
        "max_ts": max_ts,
    }
    return json.dumps(obj, separators=(",", ":")).encode()


def _text_field(o: dict[str, Any], name: str) -> str:
    """A string field of a parsed state record ("" if absent or not a string): the
    writer's ``group`` or ``model``."""
    v = o.get(name, "")
    return v if isinstance(v, str) else ""


def _parse(value: bytes) -> dict[str, Any] | None:
    """A ``tank.state`` value parsed once (None if it is not a JSON object)."""
    try:
        o = json.loads(value)
    except ValueError:
        return None
    return o if isinstance(o, dict) else None


def decode_point(value: bytes) -> tuple[int, CommitPoint]:
    return _point_of(json.loads(value))


def _point_of(o: dict[str, Any]) -> tuple[int, CommitPoint]:
    max_ts = -math.inf if o["max_ts"] is None else float(o["max_ts"])
    return int(o["partition"]), CommitPoint(int(o["offset"]), max_ts)


def read_to_end(consumer: Any, tps: list[Any], timeout_s: float, what: str) -> list[Any]:
    """Poll an assigned consumer until every partition's position reaches its high
    water mark as reported by *fetch* responses; returns the (key, value) pairs.

    Not ``end_offsets``: on Tansu (0.6) ListOffsets can report the base offset of the
    last batch instead of the end, which would silently drop the newest records.
    """
    out: list[tuple[bytes, bytes]] = []
    deadline = time.monotonic() + timeout_s
    while True:
        for msgs in consumer.poll(timeout_ms=200).values():
            out.extend((m.key, m.value) for m in msgs if m.key is not None and m.value is not None)
        done = True
        for tp in tps:
            hw = consumer.highwater(tp)
            if hw is None or consumer.position(tp) < hw:
                done = False
        if done:
            return out
        if time.monotonic() > deadline:
            raise BrokerError(f"reading {what} to its end timed out")


class Checkpointer:
    """Writes and reads checkpoints for one consumer group and readings topic.

    ``producer``: a KafkaProducer (acks=all); ``bootstrap``: for the restore reader;
    ``state_dir``: local directory (created); ``timeout_s``: bound on flush/restore.

    The local file is a journal (``<group>.<topic>.jsonl``): each checkpoint appends one
    line per tank stepped since the last one and one per partition, then fsyncs -- a
    checkpoint writes what changed, not every tank ever seen. Only an index (tank ->
    where its newest line is) stays in memory; the journal is compacted (rewritten with
    the newest line per key, fsync, rename) when it grows past twice its live size. A
    torn last line (a crash while appending) is skipped on load.

    Every record carries the *incarnation* of the readings topic (its topic id, learnt
    at each restore): a local file or ``tank.state`` record from a recreated topic or
    another broker is ignored, and so is a commit point beyond the partition's end. When
    a partition's commit points are all discarded so, it resumes from the log start
    (never past unread data); :attr:`foreign_records` counts them.

    A record that cannot be read (not JSON, a field missing, a state blob that disagrees
    with its layout) is skipped, warned about and counted in :attr:`corrupt_records`;
    its tank starts afresh, or from an older record of it that can be read.
    """

    #: Bytes a journal may exceed twice its live size by before it is rewritten
    #: compacted (small journals are left alone).
    compact_slack = 1 << 20

    def __init__(
        self,
        producer: Any,
        bootstrap: str,
        state_topic: str,
        state_dir: Path,
        group: str,
        readings_topic: str,
        timeout_s: float = 30.0,
        model_version: str = "",
        client_config: dict[str, Any] | None = None,
        use_file: bool = True,
    ) -> None:
        # client_config: more KafkaConsumer arguments for the restore reader (security;
        # isolation_level='read_committed' with exactly-once outputs). use_file=False
        # (exactly-once): tank.state alone is the checkpoint -- a file written before
        # the transaction commits could hold state whose outputs were aborted.
        self.client_config = dict(client_config or {})
        self.use_file = use_file
        self.producer = producer
        self.model_version = model_version
        self.bootstrap = bootstrap
        self.topic = state_topic
        self.readings_topic = readings_topic
        self.group = group
        self.timeout_s = timeout_s
        check_writable(state_dir)
        safe = "".join(
            ch if ch.isalnum() or ch in "._-" else "_" for ch in group + "." + readings_topic
        )
        self.path = state_dir / f"{safe}.jsonl"
        #: The readings topic's id as of the last restore ("" = unknown).
        self.incarnation = ""
        # Journal index: tank -> (offset, length, partition) of its newest line;
        # partition -> its newest commit-point line's object.
        self._index: dict[str, tuple[int, int, int]] = {}
        self._points: dict[int, dict[str, Any]] = {}
        self._size = 0
        self._live = 0  # bytes of the newest line per tank (what compaction keeps)
        self.corrupt_records = 0
        if use_file:
            self._load_file()
        self._live = sum(n for _, n, _ in self._index.values())
        self.records_written = 0
        self.bytes_written = 0
        self.foreign_model_records = 0
        self.foreign_records = 0

    # ------------------------------------------------------------- writing
    def save(self, states: StateColumns | list[TankState], points: dict[int, CommitPoint]) -> None:
        """Make these states and commit points durable (file, then topic, flushed).

        Raises LocalCheckpointError if the file cannot be written and BrokerError if
        the topic write does not complete within the timeout; the caller must then not
        commit offsets.
        """
        inc = self.incarnation
        cols = states if isinstance(states, StateColumns) else StateColumns.of(states)
        values = encode_columns(cols, self.group, self.model_version, inc)
        encoded = list(zip(zip(cols.tank_ids, cols.partitions, strict=True), values, strict=True))
        point_values = {p: encode_point(p, pt, self.group, inc) for p, pt in points.items()}
        if self.use_file:
            try:
                self._append(encoded, point_values)
            except OSError as exc:
                raise LocalCheckpointError(
                    f"writing {self.path} failed: {exc.strerror or exc}"
                ) from None
        failed: list[BaseException] = []
        try:
            # A partition's tank records at once, as whole batches (BatchProducer).
            by_partition: dict[int, list[tuple[bytes, bytes]]] = {}
            for (tank_id, partition), value in encoded:
                by_partition.setdefault(partition, []).append((tank_id.encode(), value))
            batch = BatchProducer(self.producer, self.topic, lambda n, exc: failed.append(exc))
            for p, records in by_partition.items():
                batch.send_to(p, records)
            # The partition record goes last: on one partition, the idempotent producer
            # keeps order, so when it is durable so are the tank records before it.
            for p, value in point_values.items():
                self.producer.send(self.topic, key=PARTITION_KEY, value=value, partition=p)
            self.producer.flush(timeout=self.timeout_s)
            if failed:
                raise failed[0]
        except Exception as exc:  # KafkaTimeoutError & co: the checkpoint did not land
            raise BrokerError(f"writing {self.topic} failed: {exc}") from None
        self.records_written += len(encoded) + len(points)

    def _append(
        self, encoded: list[tuple[tuple[str, int], bytes]], point_values: dict[int, bytes]
    ) -> None:
        """Append the changed records to the journal (points last), fsync. When that
        would take the journal past twice its live size, write the compacted journal
        instead (the same content, one rewrite): at 10,000 tanks that change every
        checkpoint it is every other checkpoint, and appending 15 MB and then reading 30
        MB back to compact cost ~120 ms more than the rewrite alone."""
        lengths = [len(value) + 1 for _, value in encoded]
        points = {p: json.loads(value) for p, value in point_values.items()}
        index = self._index
        live = self._live
        for ((tank, _), _v), n in zip(encoded, lengths, strict=True):
            old = index.get(tank)
            live += n - (old[1] if old else 0)
        point_bytes = sum(len(v) + 1 for v in point_values.values())
        new_bytes = sum(lengths) + point_bytes
        if self._size + new_bytes > 2 * live + self.compact_slack:
            self._rewrite(encoded, lengths, points)
        else:
            blob = b"".join([b"\n".join(v for _, v in encoded), b"\n"] if encoded else [])
            blob += b"".join(v + b"\n" for v in point_values.values())
            with open(self.path, "ab") as f:
                offset = f.tell()
                f.write(blob)
                f.flush()
                os.fsync(f.fileno())
            for ((tank, p), _v), n in zip(encoded, lengths, strict=True):
                index[tank] = (offset, n, p)
                offset += n
            self._points.update(points)
            self._size = offset + point_bytes
            self._live = live
        self.bytes_written += new_bytes

    def _rewrite(
        self,
        encoded: list[tuple[tuple[str, int], bytes]],
        lengths: list[int],
        points: dict[int, dict[str, Any]],
    ) -> None:
        """Write the journal afresh (temporary file, fsync, rename): the newest line of
        every tank not in ``encoded``, then ``encoded``'s records, then every
        partition's newest commit point (``points`` over the known ones)."""
        changed = {tank for (tank, _), _v in encoded}
        keep = [(t, e) for t, e in self._index.items() if t not in changed]
        index: dict[str, tuple[int, int, int]] = {}
        parts: list[bytes | memoryview] = []
        pos = 0
        if keep:
            # One read of the old journal, sliced per tank (a seek and a read per tank
            # were ~30 ms at 10,000 tanks).
            with open(self.path, "rb") as src:
                data = memoryview(src.read())
            for tank, (offset, length, p) in keep:
                index[tank] = (pos, length, p)
                parts.append(data[offset : offset + length])
                pos += length
        for ((tank, p), value), n in zip(encoded, lengths, strict=True):
            index[tank] = (pos, n, p)
            parts += (value, b"\n")
            pos += n
        live = pos
        all_points = {**self._points, **points}
        for obj in all_points.values():
            line = json.dumps(obj, separators=(",", ":")).encode() + b"\n"
            parts.append(line)
            pos += len(line)
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "wb") as dst:
            dst.write(b"".join(parts))
            dst.flush()
            os.fsync(dst.fileno())
        os.replace(tmp, self.path)
        _fsync_dir(self.path.parent)
        self._index, self._size, self._live, self._points = index, pos, live, all_points

    def _load_file(self) -> None:
        """Build the index from the journal (skipping a torn or corrupt line)."""
        if not self.path.exists():
            return
        try:
            with open(self.path, "rb") as f:
                offset = 0
                for line in f:
                    n = len(line)
                    whole = line.endswith(b"\n")  # else a torn last line: no news
                    o = _parse(line) if whole else None
                    if whole and o is None:
                        # No key to name (the line does not parse): where it is.
                        self._corrupt(
                            f"local file {self.path}", f"line at byte {offset} is not a JSON object"
                        )
                    if o is not None:
                        if "offset" in o and "tank_id" not in o:
                            with contextlib.suppress(KeyError, TypeError, ValueError):
                                self._points[int(o["partition"])] = o
                        elif isinstance(o.get("tank_id"), str):
                            with contextlib.suppress(KeyError, TypeError, ValueError):
                                self._index[o["tank_id"]] = (offset, n, int(o["partition"]))
                    offset += n
                self._size = offset
        except OSError as exc:
            log.warning(
                "ignoring unreadable local checkpoint",
                extra={"path": str(self.path), "error": str(exc)},
            )
            self._index, self._points = {}, {}

    def _read_line(self, tank_id: str, f: Any = None) -> dict[str, Any] | None:
        """The tank's newest journal line, parsed (``f``: the journal, already open)."""
        entry = self._index.get(tank_id)
        if entry is None:
            return None
        offset, length, _ = entry
        try:
            if f is None:
                with open(self.path, "rb") as own:
                    own.seek(offset)
                    return _parse(own.read(length))
            f.seek(offset)
            return _parse(f.read(length))
        except OSError:
            return None

    def local_state(self, tank_id: str) -> TankState | None:
        """The tank's newest state in the local journal (this incarnation, this model),
        or None: how a retired tank's state comes back when it reports again."""
        tanks: dict[str, TankState] = {}
        o = self._read_line(tank_id)
        if o is not None and self._same_incarnation(o):
            self._merge_tank(tanks, o, {int(o.get("partition", -1))})
        return tanks.get(tank_id)

    @property
    def local_tanks(self) -> int:
        """Tanks in the local journal's index."""
        return len(self._index)

    # ------------------------------------------------------------- reading
    def load(
        self, partitions: Collection[int]
    ) -> tuple[dict[str, TankState], dict[int, CommitPoint]]:
        """States of tanks in these partitions and their commit points (file + topic),
        from this incarnation of the readings topic only (see the class doc)."""
        wanted = set(partitions)
        inc, bounds = self._readings_bounds(wanted)
        if inc:
            self.incarnation = inc
        tanks: dict[str, TankState] = {}
        candidates: dict[int, list[CommitPoint]] = {}
        mine = [tank for tank, (_, _, p) in self._index.items() if p in wanted]
        if mine:
            with open(self.path, "rb") as f:
                for tank in mine:
                    o = self._read_line(tank, f)
                    if o is not None and self._same_incarnation(o, "local file"):
                        self._merge_tank(tanks, o, wanted)
        for obj in self._points.values():
            if self._same_incarnation(obj, "local file"):
                self._add_point(candidates, obj, wanted)
        for key, value in self._read_topic(wanted):
            if value is None:
                # A tombstone: this compacted topic is the pipeline's own, so one written
                # by hand (or a tool) is foreign; skipped and counted, never a crash.
                self.foreign_records += 1
                if self.foreign_records <= 3:
                    log.warning("ignoring a tombstone in the state topic", extra={"key": key})
                continue
            o = _parse(value)
            if o is None:
                self._corrupt(self.topic, "not a JSON object", key)
                continue
            # One state topic may be shared by mistake: never take another group's state.
            if _text_field(o, "group") != self.group:
                continue
            if not self._same_incarnation(o, self.topic):
                continue
            if key == PARTITION_KEY:
                self._add_point(candidates, o, wanted)
            else:
                self._merge_tank(tanks, o, wanted)
        points: dict[int, CommitPoint] = {}
        for p, pts in candidates.items():
            start, end = bounds.get(p, (None, None))
            ok = [pt for pt in pts if end is None or pt.offset <= end]
            if len(ok) < len(pts):
                self.foreign_records += len(pts) - len(ok)
                log.warning(
                    "commit point beyond the end of the partition: a checkpoint of another "
                    "broker or topic incarnation; falling back",
                    extra={"partition": p, "end": end, "points": [pt.offset for pt in pts]},
                )
            if ok:
                points[p] = max(ok, key=lambda pt: pt.offset)
            else:  # never seek past unread data: from the log start, judged afresh
                points[p] = CommitPoint(start or 0, -math.inf)
        return tanks, points

    def _corrupt(self, where: str, why: str, key: Any = None) -> None:
        """Count a record that cannot be read; the first few are logged."""
        self.corrupt_records += 1
        if self.corrupt_records <= 3:
            extra = {"source": where, "error": why}
            if key is not None:
                extra["key"] = key.decode(errors="replace") if isinstance(key, bytes) else str(key)
            log.warning("skipping a corrupt checkpoint record", extra=extra)

    def _same_incarnation(self, o: dict[str, Any], where: str = "") -> bool:
        inc = _text_field(o, "inc")
        if not inc or not self.incarnation or inc == self.incarnation:
            return True
        self.foreign_records += 1
        if where and self.foreign_records <= 3:
            log.warning(
                "ignoring a checkpoint record of another topic incarnation (topic or "
                "broker recreated)",
                extra={"source": where, "record_topic_id": inc, "topic_id": self.incarnation},
            )
        return False

    @staticmethod
    def _add_point(
        candidates: dict[int, list[CommitPoint]], o: dict[str, Any], wanted: set[int]
    ) -> None:
        try:
            p, pt = _point_of(o)
        except (ValueError, KeyError, TypeError):
            return
        if p in wanted:
            candidates.setdefault(p, []).append(pt)

    def _readings_bounds(
        self, partitions: set[int]
    ) -> tuple[str, dict[int, tuple[int | None, int | None]]]:
        """The readings topic's id and, per partition, (log start, end) -- the end from
        a fetch's high-water mark (Tansu's ListOffsets can report less). Unknown parts
        are None/"" (then nothing is discarded for them)."""
        if not partitions:
            return "", {}
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            group_id=None,
            request_timeout_ms=int(self.timeout_s * 1000) + 1000,
            **self.client_config,
        )
        try:
            tps = [TopicPartition(self.readings_topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            start = consumer.beginning_offsets(tps)
            consumer.seek_to_end(*tps)
            deadline = time.monotonic() + min(self.timeout_s, 10.0)
            while time.monotonic() < deadline:
                consumer.poll(timeout_ms=200, max_records=1)
                if all(consumer.highwater(tp) is not None for tp in tps):
                    break
            topic_id = consumer._client.cluster.topic_id(self.readings_topic)
            bounds = {tp.partition: (start.get(tp), consumer.highwater(tp)) for tp in tps}
            return (str(topic_id) if topic_id else ""), bounds
        except Exception as exc:  # bounds are a safety net; the restore goes on without
            log.warning("cannot read the readings topic's bounds", extra={"error": str(exc)})
            return "", {}
        finally:
            consumer.close()

    def _merge_tank(
        self, tanks: dict[str, TankState], o: dict[str, Any] | None, wanted: set[int]
    ) -> None:
        # Another model's h/c mean nothing to this one (a switched artifact): such a
        # tank starts from a fresh state, counted as a new tank, at the commit point.
        if self.model_version and (o is None or _text_field(o, "model") != self.model_version):
            self.foreign_model_records += 1
            return
        try:
            if o is None:
                raise ValueError("not a JSON object")
            s = _state_of(o)
        except (ValueError, KeyError, TypeError) as exc:
            self._corrupt("state record", str(exc), o.get("tank_id") if o else None)
            return
        if s.partition not in wanted:
            return
        old = tanks.get(s.tank_id)
        if old is None or s.last_tick >= old.last_tick:
            tanks[s.tank_id] = s

    def _read_topic(self, partitions: set[int]) -> list[tuple[bytes, bytes | None]]:
        """Every (key, value) in these partitions of the state topic, up to their end."""
        if not partitions:
            return []
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            group_id=None,
            max_poll_records=10000,
            request_timeout_ms=int(self.timeout_s * 1000) + 1000,
            **self.client_config,
        )
        record_batches.install(consumer)  # a restore reads every tank's latest state
        try:
            tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            return read_to_end(consumer, tps, self.timeout_s, self.topic)
        finally:
            consumer.close()
