"""Per-tank checkpoints: a local file and the compacted ``tank.state`` topic.

A checkpoint holds, per tank, everything that continues it exactly
(:class:`~pipeline.forecast_step.TankState`: h, c, held forecast, anomaly state, last
applied tick) and, per partition, the :class:`~pipeline.assembler.CommitPoint` (resume
offset and the max event time before it). Order of a checkpoint, which makes the state
exactly-once: local file (write, fsync, rename) -> ``tank.state`` (tank records, then
the partition record, explicitly to the partition with the readings' number; producer
flushed with acks=all) -> only then are offsets committed (by the caller).

Values are compact JSON with base64 arrays (float32 state, float64 anomaly statistics),
so any Kafka tool can inspect them. Restore reads the assigned partitions of
``tank.state`` to their end (latest value per key wins; compaction is not relied on)
and the local file, and keeps per tank the record with the larger last applied tick,
per partition the commit point with the larger offset.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import os
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.assembler import CommitPoint
from pipeline.forecast_step import TankState
from tankwatch.errors import BrokerError, ConfigError

__all__ = [
    "PARTITION_KEY",
    "Checkpointer",
    "decode_point",
    "decode_state",
    "encode_point",
    "encode_state",
]

log = logging.getLogger(__name__)

#: Key of the per-partition commit-point record (cannot collide with a tank id, which
#: must start with a letter or digit).
PARTITION_KEY = b"__partition__"
FORMAT = 1


def _b64(a: np.ndarray, dtype: type) -> str:
    return base64.b64encode(np.ascontiguousarray(a, dtype=dtype).tobytes()).decode()


def _unb64(text: str, dtype: type, shape: tuple[int, ...]) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype=dtype).reshape(shape).copy()


def encode_state(s: TankState, group: str = "", model: str = "") -> bytes:
    """One tank's state as the ``tank.state`` value (JSON, base64 arrays); ``group`` is
    the consumer group that wrote it and ``model`` the model version whose state it is
    (restore ignores other groups' records and other models' states)."""
    layers, units = s.h.shape
    obj = {
        "v": FORMAT,
        "group": group,
        "model": model,
        "tank_id": s.tank_id,
        "partition": s.partition,
        "tick": s.last_tick,
        "ts": s.last_ts if math.isfinite(s.last_ts) else None,
        "layers": layers,
        "units": units,
        "h": _b64(s.h, np.float32),
        "c": _b64(s.c, np.float32),
        "held": _b64(s.held, np.float32),
        "actual": _b64(s.actual, np.float32),
        "anomaly": {k: [_b64(v, np.float64), list(np.shape(v))] for k, v in s.anomaly.items()},
        # Engine level/scale and baseline state (absent in older records: restored fresh).
        "extra": {k: [_b64(v, np.float64), list(np.shape(v))] for k, v in (s.extra or {}).items()},
    }
    return json.dumps(obj, separators=(",", ":")).encode()


def decode_state(value: bytes) -> TankState:
    """Inverse of :func:`encode_state` (ValueError/KeyError on a corrupt record)."""
    return _state_of(json.loads(value))


def _state_of(o: dict[str, Any]) -> TankState:
    if o.get("v") != FORMAT:
        raise ValueError(f"unsupported state format {o.get('v')!r}")
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


def encode_point(partition: int, point: CommitPoint, group: str = "") -> bytes:
    """A partition's commit point as a ``tank.state`` value."""
    max_ts = point.max_ts if math.isfinite(point.max_ts) else None
    obj = {
        "v": FORMAT,
        "group": group,
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
    """

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
    ) -> None:
        self.producer = producer
        self.model_version = model_version
        self.bootstrap = bootstrap
        self.topic = state_topic
        self.group = group
        self.timeout_s = timeout_s
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create state dir {state_dir}: {exc}") from None
        safe = "".join(
            ch if ch.isalnum() or ch in "._-" else "_" for ch in group + "." + readings_topic
        )
        self.path = state_dir / f"{safe}.json"
        # The file's contents, kept in memory so a checkpoint writes only the whole file.
        self._file_tanks: dict[str, str] = {}
        self._file_points: dict[str, dict[str, Any]] = {}
        self._load_file()
        self.records_written = 0
        self.foreign_model_records = 0

    # ------------------------------------------------------------- writing
    def save(self, states: list[TankState], points: dict[int, CommitPoint]) -> None:
        """Make these states and commit points durable (file, then topic, flushed).

        Raises BrokerError if the topic write does not complete within the timeout; the
        caller must then not commit offsets.
        """
        encoded = [(s, encode_state(s, self.group, self.model_version)) for s in states]
        for s, value in encoded:
            self._file_tanks[s.tank_id] = value.decode()
        for p, pt in points.items():
            self._file_points[str(p)] = json.loads(encode_point(p, pt, self.group))
        self._write_file()
        try:
            for s, value in encoded:
                self.producer.send(
                    self.topic, key=s.tank_id.encode(), value=value, partition=s.partition
                )
            # The partition record goes last: on one partition, the idempotent producer
            # keeps order, so when it is durable so are the tank records before it.
            for p, pt in points.items():
                self.producer.send(
                    self.topic,
                    key=PARTITION_KEY,
                    value=encode_point(p, pt, self.group),
                    partition=p,
                )
            self.producer.flush(timeout=self.timeout_s)
        except Exception as exc:  # KafkaTimeoutError & co: the checkpoint did not land
            raise BrokerError(f"writing {self.topic} failed: {exc}") from None
        self.records_written += len(encoded) + len(points)

    def _write_file(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        data = json.dumps({"v": FORMAT, "tanks": self._file_tanks, "points": self._file_points})
        with open(tmp, "w") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        try:  # make the rename itself durable
            fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            pass

    def _load_file(self) -> None:
        if not self.path.exists():
            return
        try:
            data = json.loads(self.path.read_text())
            self._file_tanks = dict(data.get("tanks", {}))
            self._file_points = dict(data.get("points", {}))
        except (OSError, ValueError) as exc:
            log.warning(
                "ignoring unreadable local checkpoint",
                extra={"path": str(self.path), "error": str(exc)},
            )
            self._file_tanks, self._file_points = {}, {}

    # ------------------------------------------------------------- reading
    def load(
        self, partitions: Collection[int]
    ) -> tuple[dict[str, TankState], dict[int, CommitPoint]]:
        """States of tanks in these partitions and their commit points (file + topic)."""
        wanted = set(partitions)
        tanks: dict[str, TankState] = {}
        points: dict[int, CommitPoint] = {}
        for text in self._file_tanks.values():
            self._merge_tank(tanks, _parse(text.encode()), wanted)
        for obj in self._file_points.values():
            self._merge_point(points, obj, wanted)
        for key, value in self._read_topic(wanted):
            o = _parse(value)
            # One state topic may be shared by mistake: never take another group's state.
            if o is None or _text_field(o, "group") != self.group:
                continue
            if key == PARTITION_KEY:
                self._merge_point(points, o, wanted)
            else:
                self._merge_tank(tanks, o, wanted)
        return tanks, points

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
            log.warning("skipping corrupt state record", extra={"error": str(exc)})
            return
        if s.partition not in wanted:
            return
        old = tanks.get(s.tank_id)
        if old is None or s.last_tick >= old.last_tick:
            tanks[s.tank_id] = s

    @staticmethod
    def _merge_point(points: dict[int, CommitPoint], o: dict[str, Any], wanted: set[int]) -> None:
        try:
            p, pt = _point_of(o)
        except (ValueError, KeyError, TypeError):
            return
        if p in wanted and (p not in points or pt.offset >= points[p].offset):
            points[p] = pt

    def _read_topic(self, partitions: set[int]) -> list[tuple[bytes, bytes]]:
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
        )
        try:
            tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            return read_to_end(consumer, tps, self.timeout_s, self.topic)
        finally:
            consumer.close()
