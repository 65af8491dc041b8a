"""Tick assembly: decoded readings -> closed ticks of fixed-order rows. Pure, no Kafka.

The rules (docs/architecture.md, "Pipeline semantics"):

* tick ``k = floor(ts / interval)``; a tank's row comes from :class:`TankRegistry`;
* each partition has a watermark ``max event ts seen in it - allowed_lateness``; a
  reading whose tick ended at or before *its own partition's* watermark is ``late``
  (decided from the partition's order alone, so 1x and 1000x replays agree);
* a reading for a tick at or before the tank's last applied tick is a ``duplicate``;
  so is a second reading of a tank for its newest tick (first wins); a reading older
  than a reading of the *same tank* already accepted is ``late`` (per-tank order: a
  tank's readings are taken in partition order, never re-sorted, so whether one is
  applied cannot depend on when ticks closed);
* ticks close in order, when every tank still expected has a reading (``complete``:
  tanks seen within ``max_gap`` ticks before it and not already past it), or when the
  pipeline watermark passes their end (``watermark``); the pipeline watermark is the
  minimum over partitions that still have unread data (all caught up: the maximum);
* a reading that is not late, for a tick that already closed, of a tank whose last
  applied tick is earlier, is applied in a ``catchup`` tick where only its row is
  present (rows are independent, so its forecasts are what they would have been);
* a row is reset before its reading is applied on a new tank, an ``event``, or a gap
  of more than ``max_gap`` ticks since its last applied tick.

For checkpoints, :meth:`TickAssembler.commit_points` tells, per partition, the offset
to resume from (the smallest offset still held in an open tick, else the next offset)
and the partition's max event time *before* that offset, so a restart re-reads the
held readings and judges lateness exactly as the uninterrupted run did.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from pipeline.registry import TankRegistry
from tankwatch.codec import Reading

__all__ = [
    "NO_TICK",
    "RESET_REASONS",
    "ClosedTick",
    "Columns",
    "CommitPoint",
    "Polled",
    "TickAssembler",
]

#: "Never applied" marker in tick arrays (far below any real tick).
NO_TICK = np.iinfo(np.int64).min // 4
#: Reset reason codes in :attr:`ClosedTick.reset_reason` (0 = no reset).
RESET_REASONS = ("", "new_tank", "event", "gap")
_NEW, _EVENT, _GAP = 1, 2, 3

I64 = NDArray[np.int64]


class Polled(NamedTuple):
    """A decoded reading and where it came from (``kafka_ts`` in epoch seconds).

    A NamedTuple: one is built per message on the hot path.
    """

    reading: Reading
    partition: int
    offset: int
    kafka_ts: float


@dataclass(frozen=True, slots=True)
class Columns:
    """Decoded readings of one partition, in offset order -- one poll's worth, as
    columns: the hot path builds no object per reading.

    ``tank_ids`` (n,) str; ``ts`` (n,) float64 epoch seconds; ``values`` (n, 2)
    float64 pressure kPa and temperature C; ``event`` (n,) bool (a sequence-boundary
    event); ``offsets`` (n,) int64, increasing; ``kafka_ts`` (n,) float64 epoch seconds.
    """

    tank_ids: Sequence[str]
    ts: NDArray[np.float64]
    values: NDArray[np.float64]
    event: NDArray[np.bool_]
    offsets: I64
    kafka_ts: NDArray[np.float64]

    def __len__(self) -> int:
        return len(self.tank_ids)

    def subset(self, index: NDArray[np.intp]) -> Columns:
        """The readings at ``index`` (increasing), as Columns."""
        ids = self.tank_ids
        return Columns(
            tank_ids=[ids[i] for i in index.tolist()],
            ts=self.ts[index],
            values=self.values[index],
            event=self.event[index],
            offsets=self.offsets[index],
            kafka_ts=self.kafka_ts[index],
        )

    @classmethod
    def of(cls, records: Sequence[Polled]) -> Columns:
        """Columns of ``Polled`` records (all of one partition, in offset order)."""
        rs = [rec.reading for rec in records]
        return cls(
            tank_ids=[r.tank_id for r in rs],
            ts=np.asarray([r.ts for r in rs], np.float64),
            values=np.asarray([(r.pressure_kpa, r.temperature_c) for r in rs], np.float64).reshape(
                -1, 2
            ),
            event=np.asarray([r.event is not None for r in rs], bool),
            offsets=np.asarray([rec.offset for rec in records], np.int64),
            kafka_ts=np.asarray([rec.kafka_ts for rec in records], np.float64),
        )


@dataclass(frozen=True, slots=True)
class ClosedTick:
    """One step to apply: the present rows of one tick, in row order.

    ``rows`` (n,) intp; ``x`` (n, F) float32 physical units; ``ts``, ``kafka_ts`` (n,)
    float64 epoch seconds; ``prev_tick`` (n,) int64 last applied tick before this one
    (``NO_TICK`` for a new tank); ``reset_reason`` (n,) int8 index into
    :data:`RESET_REASONS` (0 = no reset); ``partitions``/``offsets`` (n,) source.
    """

    tick: int
    trigger: str
    rows: NDArray[np.intp]
    x: NDArray[np.float32]
    ts: NDArray[np.float64]
    prev_tick: I64
    reset_reason: NDArray[np.int8]
    partitions: NDArray[np.int32]
    offsets: I64
    kafka_ts: NDArray[np.float64]

    @property
    def reset_rows(self) -> NDArray[np.intp]:
        return self.rows[self.reset_reason > 0]


@dataclass(frozen=True, slots=True)
class CommitPoint:
    """Where a partition resumes: ``offset`` and its max event ts before it (seconds)."""

    offset: int
    max_ts: float


@dataclass
class _Partition:
    max_ts: float = -math.inf
    next_offset: int = 0
    #: Tanks whose newest reading was too far ahead (tank id -> its ts): the evidence
    #: that the whole fleet moved on, not one clock (see ``TickAssembler._screen``).
    ahead: dict[str, float] = field(default_factory=dict)


#: Reasons :meth:`TickAssembler.add_columns` rejects a valid reading for (DLQ + metric).
INTAKE_REJECTS = ("clock_skew", "too_many_tanks")


@dataclass(slots=True)
class _Chunk:
    """Readings of one open tick from one partition, in offset order (so ``offsets[0]``
    is the smallest and ``before[0]`` the partition's max event ts before it)."""

    partition: int
    rows: NDArray[np.intp]
    values: NDArray[np.float64]
    event: NDArray[np.bool_]
    ts: NDArray[np.float64]
    offsets: I64
    kafka_ts: NDArray[np.float64]
    before: NDArray[np.float64]


@dataclass
class _OpenTick:
    chunks: list[_Chunk] = field(default_factory=list)
    n: int = 0
    _rows: NDArray[np.intp] | None = None  # concatenated rows, cached between appends

    def append(self, chunk: _Chunk) -> None:
        self.chunks.append(chunk)
        self.n += len(chunk.rows)
        self._rows = None

    def rows(self) -> NDArray[np.intp]:
        if self._rows is None:
            self._rows = np.concatenate([c.rows for c in self.chunks])
        return self._rows


#: A reading waiting for a catch-up step: (tick, row, prev_tick, partition, offset,
#: pressure, temperature, event, ts, kafka_ts).
_Catchup = tuple[int, int, int, int, int, float, float, bool, float, float]


class TickAssembler:
    """Buckets readings into event-time ticks and closes them in order (see module doc).

    ``interval_s``: tick length; ``allowed_lateness_s``: watermark lag;
    ``max_gap_ticks``: gap that resets a row and ends "active".
    """

    def __init__(
        self,
        interval_s: float,
        allowed_lateness_s: float,
        max_gap_ticks: int,
        max_skew_s: float = 0.0,
        max_tanks: int = 0,
    ) -> None:
        if interval_s <= 0 or allowed_lateness_s < 0 or max_gap_ticks < 1:
            raise ValueError("interval_s > 0, allowed_lateness_s >= 0, max_gap_ticks >= 1")
        if max_skew_s < 0 or max_tanks < 0:
            raise ValueError("max_skew_s >= 0, max_tanks >= 0 (0 = off)")
        #: A reading more than this ahead of its partition's event time is rejected
        #: (0 = off); see :meth:`_screen`.
        self.max_skew = float(max_skew_s)
        #: Most tanks holding rows at once (0 = unbounded).
        self.max_tanks = int(max_tanks)
        self.interval = float(interval_s)
        self.lateness = float(allowed_lateness_s)
        self.max_gap = int(max_gap_ticks)
        self.registry = TankRegistry()
        self._last_applied: I64 = np.full(0, NO_TICK, np.int64)
        self._last_seen: I64 = np.full(0, NO_TICK, np.int64)
        self._row_partition: NDArray[np.int32] = np.full(0, -1, np.int32)
        self._parts: dict[int, _Partition] = {}
        self._open: dict[int, _OpenTick] = {}
        self._catchup: list[_Catchup] = []
        self.closed_upto: int | None = None
        self.dropped: dict[str, int] = {"late": 0, "duplicate": 0}
        # Retired (idle) tanks: tank id -> (last applied tick, partition). Their state
        # is in the checkpoint; a reading brings them back (:attr:`revived`).
        self._retired: dict[str, tuple[int, int]] = {}
        #: (tank_id, row) of retired tanks that reported again since the caller last
        #: drained this list: their state must be restored into the row.
        self.revived: list[tuple[str, int]] = []

    # ----------------------------------------------------------------- rows
    @property
    def capacity(self) -> int:
        return self.registry.capacity

    @property
    def last_applied(self) -> I64:
        """(capacity,) last applied tick per row (``NO_TICK`` = none). Read-only view."""
        return self._last_applied[: self.capacity]

    @property
    def row_partition(self) -> NDArray[np.int32]:
        """(capacity,) source partition per row (-1 = free row)."""
        return self._row_partition[: self.capacity]

    def _row(self, tank_id: str, partition: int) -> int:
        row = self.registry.get(tank_id)
        if row is None:
            row = self.registry.add(tank_id)
            if row >= self._last_applied.shape[0]:
                size = max(16, 2 * self._last_applied.shape[0])
                self._last_applied = _grow(self._last_applied, size, NO_TICK)
                self._last_seen = _grow(self._last_seen, size, NO_TICK)
                self._row_partition = _grow(self._row_partition, size, -1)
            self._last_applied[row] = NO_TICK
            self._last_seen[row] = NO_TICK
            self._row_partition[row] = partition
            back = self._retired.pop(tank_id, None)
            if back is not None:
                self._last_applied[row] = self._last_seen[row] = back[0]
                self.revived.append((tank_id, row))
        return row

    def idle(self, idle_s: float, partitions: Collection[int]) -> list[tuple[str, int]]:
        """(tank_id, row) of tanks in these partitions whose newest reading is more
        than ``idle_s`` of event time behind their partition's and that hold nothing
        (no reading waiting in an open tick or a catch-up)."""
        if idle_s <= 0:
            return []
        out = []
        cap = self.capacity
        seen, applied, part = self._last_seen[:cap], self._last_applied[:cap], self.row_partition
        for pid in partitions:
            p = self._parts.get(pid)
            if p is None or not math.isfinite(p.max_ts):
                continue
            limit = math.floor((p.max_ts - idle_s) / self.interval)
            rows = np.flatnonzero(
                (part == pid) & (seen < limit) & (seen == applied) & (seen != NO_TICK)
            )
            if rows.size:
                waiting = {c[1] for c in self._catchup}
                out += [
                    (t, int(r))
                    for r in rows.tolist()
                    if r not in waiting and (t := self.registry.tank_at(r)) is not None
                ]
        return out

    def retire(self, tanks: Sequence[tuple[str, int]]) -> None:
        """Free the rows of idle tanks (their state must be durable already); their
        last applied tick is remembered so that duplicates stay duplicates."""
        for tank_id, row in tanks:
            self._retired[tank_id] = (int(self._last_applied[row]), int(self._row_partition[row]))
            self._last_applied[row] = NO_TICK
            self._last_seen[row] = NO_TICK
            self._row_partition[row] = -1
        self.registry.release(t for t, _ in tanks)

    def renew(self, row: int) -> None:
        """Treat the tank in ``row`` as new (its retired state could not be found)."""
        self._last_applied[row] = NO_TICK

    @property
    def retired(self) -> int:
        """Tanks retired and not back yet."""
        return len(self._retired)

    def restore_tank(self, tank_id: str, partition: int, last_applied_tick: int) -> int:
        """Give a restored tank its row and last applied tick; returns the row."""
        row = self._row(tank_id, partition)
        self._last_applied[row] = last_applied_tick
        self._last_seen[row] = max(int(self._last_seen[row]), last_applied_tick)
        self._row_partition[row] = partition
        return row

    # ----------------------------------------------------------- partitions
    def assign(self, partition: int, point: CommitPoint | None = None) -> None:
        """Start tracking a partition, resuming at ``point`` (None = from scratch)."""
        p = _Partition()
        if point is not None:
            p.max_ts, p.next_offset = point.max_ts, point.offset
        self._parts[partition] = p

    def revoke(self, partitions: Collection[int]) -> list[tuple[str, int]]:
        """Forget partitions: drop their held readings (they will be re-read from the
        commit point by whoever gets them) and free their tanks' rows.

        Returns the (tank_id, row) pairs released, for the caller to reset its rows.
        """
        gone = set(partitions)
        for tick in list(self._open):
            ot = self._open[tick]
            if not any(c.partition in gone for c in ot.chunks):
                continue
            new = _OpenTick()
            for c in ot.chunks:
                if c.partition not in gone:
                    new.append(c)
            if new.n:
                self._open[tick] = new
            else:
                del self._open[tick]
        for p in gone:
            self._parts.pop(p, None)
        self._retired = {t: v for t, v in self._retired.items() if v[1] not in gone}
        self._catchup = [c for c in self._catchup if c[3] not in gone]
        released = []
        for tank_id, row in self.registry.items():
            if int(self._row_partition[row]) in gone:
                released.append((tank_id, row))
        self.registry.release(t for t, _ in released)
        for _, row in released:
            self._last_applied[row] = NO_TICK
            self._last_seen[row] = NO_TICK
            self._row_partition[row] = -1
        return released

    @property
    def partitions(self) -> list[int]:
        return sorted(self._parts)

    def advance(self, partition: int, next_offset: int) -> None:
        """Record that everything before ``next_offset`` of this partition was read
        (also rejected messages, which never reach :meth:`add`)."""
        p = self._parts.get(partition)
        if p is None:
            p = self._parts[partition] = _Partition()
        if next_offset > p.next_offset:
            p.next_offset = next_offset

    def partition_watermark(self, partition: int) -> float:
        """Max event ts seen in the partition minus the allowed lateness (seconds)."""
        p = self._parts.get(partition)
        return -math.inf if p is None else p.max_ts - self.lateness

    def watermark(self, lagging: Collection[int]) -> float:
        """Pipeline watermark: min over lagging partitions, max over all if none lags."""
        lag = [self.partition_watermark(p) for p in self._parts if p in lagging]
        if lag:
            return min(lag)
        if not self._parts:
            return -math.inf
        return max(self.partition_watermark(p) for p in self._parts)

    # --------------------------------------------------------------- intake
    def add(self, records: Iterable[Polled]) -> None:
        """Take decoded readings in partition order (late/duplicates are counted).

        Convenience form of :meth:`add_columns` (tests, small inputs): each run of
        consecutive records from one partition becomes one :class:`Columns`.
        """
        run: list[Polled] = []
        for rec in records:
            if run and rec.partition != run[-1].partition:
                self.add_columns(run[-1].partition, Columns.of(run))
                run = []
            run.append(rec)
        if run:
            self.add_columns(run[-1].partition, Columns.of(run))

    def add_columns(self, partition: int, cols: Columns) -> list[tuple[int, str]]:
        """Take one partition's decoded readings, in offset order.

        The rules are decided per reading in order (module doc). The common case --
        nothing late, every tank's ticks newer than its last one, no catch-up -- is
        decided for the whole poll with array operations; anything else takes the
        per-reading loop (:meth:`_decide`), which is the reference.

        Returns ``(index, reason)`` of the readings rejected before any rule applied
        (:data:`INTAKE_REJECTS`; the caller dead-letters them): a clock too far ahead,
        a new tank beyond ``max_tanks``.
        """
        n = len(cols)
        if n == 0:
            return []
        p = self._parts.get(partition)
        if p is None:
            p = self._parts[partition] = _Partition()
        rejected = self._screen(partition, p, cols)
        if rejected:
            bad = {i for i, _ in rejected}
            cols = cols.subset(np.asarray([i for i in range(n) if i not in bad], np.intp))
            n = len(cols)
            if n == 0:
                return rejected
        self._take(partition, p, cols)
        return rejected

    def _screen(self, partition: int, p: _Partition, cols: Columns) -> list[tuple[int, str]]:
        """Readings that must not reach the rules: ``clock_skew`` and ``too_many_tanks``.

        *Clock skew.* The partition's event time is the max ts of the readings accepted
        from it (``p.max_ts``, restored from the commit point after a restart). A reading
        more than ``max_skew`` ahead of it is rejected, so one tank's clock never moves
        the watermark its neighbours are judged by, and the bad max is never persisted.
        The fleet may really jump (producers paused longer than the skew): a reading is
        then taken once a strict majority of the partition's tanks have newest readings
        that far ahead -- the earlier of them are dead-lettered (kept, replayable).
        Decided in partition order only, so 1x and 1000x replays agree. The first
        reading a partition ever sees sets its event time (there is nothing to compare
        it with); a partition with a single tank cannot tell a wrong clock from a jump.
        """
        out: list[tuple[int, str]] = []
        ts = cols.ts
        ids = cols.tank_ids
        if self.max_skew > 0:
            running = np.maximum.accumulate(ts)
            before = np.empty(len(ts), np.float64)
            before[0] = p.max_ts
            np.maximum(running[:-1], p.max_ts, out=before[1:])
            # Assuming every reading is taken, none is ahead: then none is (induction).
            ahead = np.isfinite(before) & (ts > before + self.max_skew)
            if ahead.any() or p.ahead:
                out = self._screen_skew(
                    partition, p, ids, ts, int(np.argmax(ahead)) if ahead.any() else len(ts), before
                )
        if self.max_tanks:
            out = self._screen_new_tanks(ids, out)
        return out

    def _screen_skew(
        self,
        partition: int,
        p: _Partition,
        ids: Sequence[str],
        ts: NDArray[np.float64],
        first: int,
        before: NDArray[np.float64],
    ) -> list[tuple[int, str]]:
        """The per-reading form of the skew rule from index ``first`` on."""
        out: list[tuple[int, str]] = []
        ahead = p.ahead
        for i in range(first):  # taken: their tanks are no longer ahead
            if ahead:
                ahead.pop(ids[i], None)
        m = float(before[first]) if first < len(ts) else p.max_ts
        tanks = int(np.count_nonzero(self.row_partition == partition))
        registry = self.registry
        # Tanks of this partition not registered yet (first seen in this poll).
        fresh = {t for t in ids[:first] if t not in registry}
        skew = self.max_skew
        for i in range(first, len(ts)):
            t = float(ts[i])
            tank = ids[i]
            if tank not in registry:
                fresh.add(tank)
            if math.isfinite(m) and t > m + skew:
                ahead[tank] = t
                if 2 * len(ahead) <= tanks + len(fresh):
                    out.append((i, "clock_skew"))
                    continue
                ahead.clear()  # the majority moved on: so does the partition
            else:
                ahead.pop(tank, None)
            if t > m:
                m = t
        return out

    def _screen_new_tanks(
        self, ids: Sequence[str], out: list[tuple[int, str]]
    ) -> list[tuple[int, str]]:
        """Readings of new tanks beyond ``max_tanks`` (in order of first appearance)."""
        room = self.max_tanks - len(self.registry)
        registry = self.registry
        if all(t in registry for t in ids):
            return out
        skip = {i for i, _ in out}
        new: set[str] = set()
        for i, tank in enumerate(ids):
            if i in skip or tank in registry or tank in new:
                continue
            if len(new) < room:
                new.add(tank)
                continue
            out.append((i, "too_many_tanks"))
        out.sort()
        return out

    def _take(self, partition: int, p: _Partition, cols: Columns) -> None:
        """The lateness/duplicate/closing rules for readings that passed the screen."""
        n = len(cols)
        ts = cols.ts
        tick = np.floor(ts / self.interval).astype(np.int64)
        # The partition's max event ts before each reading (a late reading is older
        # than that max, so counting it in the running max changes nothing).
        running = np.maximum.accumulate(ts)
        before = np.empty(n, np.float64)
        before[0] = p.max_ts
        np.maximum(running[:-1], p.max_ts, out=before[1:])
        late = (tick + 1) * self.interval <= before - self.lateness
        rows = self._rows_of(cols.tank_ids, partition, late)
        if self._all_accepted(rows, tick, late):
            np.maximum.at(self._last_seen, rows, tick)
            keep: NDArray[np.intp] | None = None
        else:
            keep = self._decide(partition, cols, rows, tick, late)
        p.max_ts = max(p.max_ts, float(running[-1]))
        self._hold(partition, cols, rows, tick, before, keep)

    def _rows_of(
        self, ids: Sequence[str], partition: int, late: NDArray[np.bool_]
    ) -> NDArray[np.intp]:
        """Row per reading; new tanks get rows in order of first (not late) appearance.
        A late reading of an unknown tank gets no row (-1)."""
        get = self.registry.get
        found = [get(t) for t in ids]
        if None in found:
            is_late = late.tolist()
            for i, row in enumerate(found):
                if row is None and not is_late[i]:
                    found[i] = self._row(ids[i], partition)
            return np.asarray([-1 if r is None else r for r in found], np.intp)
        return np.asarray(found, np.intp)

    def _all_accepted(self, rows: NDArray[np.intp], tick: I64, late: NDArray[np.bool_]) -> bool:
        """No reading late, none a catch-up, and every tank's ticks strictly increase
        from its last seen tick (so every reading is held in an open tick)."""
        if late.any():
            return False
        if self.closed_upto is not None and int(tick.min()) <= self.closed_upto:
            return False
        if not (tick > self._last_seen[rows]).all():
            return False
        if len(rows) > 1:
            order = np.argsort(rows, kind="stable")
            r, k = rows[order], tick[order]
            same = r[1:] == r[:-1]
            if same.any() and not (k[1:][same] > k[:-1][same]).all():
                return False
        return True

    def _decide(
        self,
        partition: int,
        cols: Columns,
        rows: NDArray[np.intp],
        tick: I64,
        late: NDArray[np.bool_],
    ) -> NDArray[np.intp]:
        """The rules one reading at a time; returns the indices to hold in open ticks
        (late and duplicate readings are counted, catch-ups queued)."""
        last_applied, last_seen = self._last_applied, self._last_seen
        closed_upto = self.closed_upto
        dropped = self.dropped
        keep: list[int] = []
        values = cols.values
        for i, (is_late, row, tk) in enumerate(
            zip(late.tolist(), rows.tolist(), tick.tolist(), strict=True)
        ):
            if is_late:
                dropped["late"] += 1
                continue
            seen = int(last_seen[row])
            if tk <= seen:
                # Already applied, or a second reading for the tank's newest tick (first
                # wins), or older than a reading of the same tank already accepted: a
                # tank's readings are taken in partition order only, which keeps the
                # decision independent of when ticks happened to close.
                prev = int(last_applied[row])
                dropped["duplicate" if tk <= prev or tk == seen else "late"] += 1
                continue
            last_seen[row] = tk
            if closed_upto is not None and tk <= closed_upto:
                prev = int(last_applied[row])
                last_applied[row] = tk
                self._catchup.append(
                    (tk, row, prev, partition, int(cols.offsets[i]), float(values[i, 0]),
                     float(values[i, 1]), bool(cols.event[i]), float(cols.ts[i]),
                     float(cols.kafka_ts[i]))
                )  # fmt: skip
                continue
            keep.append(i)
        return np.asarray(keep, np.intp)

    def _hold(
        self,
        partition: int,
        cols: Columns,
        rows: NDArray[np.intp],
        tick: I64,
        before: NDArray[np.float64],
        keep: NDArray[np.intp] | None,
    ) -> None:
        """Append the kept readings (all if ``keep`` is None) to their open ticks."""
        values, event, ts, offsets, kafka_ts = (
            cols.values, cols.event, cols.ts, cols.offsets, cols.kafka_ts
        )  # fmt: skip
        if keep is not None:
            if not len(keep):
                return
            rows, tick, before = rows[keep], tick[keep], before[keep]
            values, event, ts = values[keep], event[keep], ts[keep]
            offsets, kafka_ts = offsets[keep], kafka_ts[keep]
        if tick[0] == tick[-1] and (tick == tick[0]).all():
            groups: list[tuple[int, slice | NDArray[np.intp]]] = [(int(tick[0]), slice(None))]
        else:  # stable: each group stays in offset order
            order = np.argsort(tick, kind="stable")
            ks = tick[order]
            cuts = np.flatnonzero(ks[1:] != ks[:-1]) + 1
            groups = [(int(tick[g[0]]), g) for g in np.split(order, cuts)]
        for k, g in groups:
            ot = self._open.get(k)
            if ot is None:
                ot = self._open[k] = _OpenTick()
            ot.append(
                _Chunk(partition, rows[g], values[g], event[g], ts[g], offsets[g], kafka_ts[g],
                       before[g])
            )  # fmt: skip

    # -------------------------------------------------------------- closing
    def close(self, lagging: Collection[int] = ()) -> list[ClosedTick]:
        """Catch-up ticks (in tick order), then every open tick that may close, in order.

        ``lagging``: partitions that still have unread data (position < high water).
        """
        out: list[ClosedTick] = []
        if self._catchup:
            pending, self._catchup = self._catchup, []
            pending.sort(key=lambda c: (c[0], c[1]))
            i = 0
            while i < len(pending):
                j = i
                while j < len(pending) and pending[j][0] == pending[i][0]:
                    j += 1
                out.append(self._catchup_tick(pending[i:j]))
                i = j
        wm = self.watermark(lagging)
        # A lagging partition that has not yet reached a tick may hold readings of tanks
        # this instance has not seen yet: such a tick is not "complete" until it has
        # (closing it anyway would only turn those readings into catch-up steps).
        behind = [self._parts[p].max_ts for p in lagging if p in self._parts]
        reached = min(behind) if behind else math.inf
        while self._open:
            tick = min(self._open)
            ot = self._open[tick]
            end = (tick + 1) * self.interval
            if end <= wm:
                trigger = "watermark"
            elif end <= reached and self._complete(tick, ot):
                trigger = "complete"
            else:
                break
            del self._open[tick]
            self.closed_upto = tick
            out.append(self._closed(tick, trigger, ot))
        return out

    def _complete(self, tick: int, ot: _OpenTick) -> bool:
        """Every tank still expected in ``tick`` has its reading there. Expected: newest
        reading at most ``tick`` and at most ``max_gap`` ticks before it. A tank that
        already sent a later tick is not expected (per-tank order: it never will)."""
        seen = self._last_seen[: self.capacity]
        expected = np.count_nonzero((seen >= tick - self.max_gap) & (seen <= tick))
        present = np.count_nonzero(seen[ot.rows()] == tick)
        return bool(present >= expected)

    def _closed(self, tick: int, trigger: str, ot: _OpenTick) -> ClosedTick:
        cs = ot.chunks
        rows = ot.rows()
        order = np.argsort(rows, kind="stable")
        rows = rows[order]
        prev = self._last_applied[rows].copy()
        self._last_applied[rows] = tick
        return self._build(
            tick,
            trigger,
            rows,
            prev,
            np.concatenate([c.values for c in cs])[order].astype(np.float32),
            np.concatenate([c.event for c in cs])[order],
            np.concatenate([c.ts for c in cs])[order],
            np.concatenate([np.full(len(c.rows), c.partition, np.int32) for c in cs])[order],
            np.concatenate([c.offsets for c in cs])[order],
            np.concatenate([c.kafka_ts for c in cs])[order],
        )

    def _catchup_tick(self, entries: list[_Catchup]) -> ClosedTick:
        return self._build(
            entries[0][0],
            "catchup",
            np.asarray([e[1] for e in entries], np.intp),
            np.asarray([e[2] for e in entries], np.int64),
            np.asarray([(e[5], e[6]) for e in entries], np.float32),
            np.asarray([e[7] for e in entries], bool),
            np.asarray([e[8] for e in entries], np.float64),
            np.asarray([e[3] for e in entries], np.int32),
            np.asarray([e[4] for e in entries], np.int64),
            np.asarray([e[9] for e in entries], np.float64),
        )

    def _build(
        self,
        tick: int,
        trigger: str,
        rows: NDArray[np.intp],
        prev: I64,
        x: NDArray[np.float32],
        event: NDArray[np.bool_],
        ts: NDArray[np.float64],
        partitions: NDArray[np.int32],
        offsets: I64,
        kafka_ts: NDArray[np.float64],
    ) -> ClosedTick:
        new = prev == NO_TICK
        gap = ~new & (tick - prev > self.max_gap)
        reason = np.where(new, _NEW, np.where(event, _EVENT, np.where(gap, _GAP, 0)))
        return ClosedTick(
            tick=tick,
            trigger=trigger,
            rows=rows,
            x=x,
            ts=ts,
            prev_tick=prev,
            reset_reason=reason.astype(np.int8),
            partitions=partitions,
            offsets=offsets,
            kafka_ts=kafka_ts,
        )

    # ---------------------------------------------------------- checkpoints
    def commit_points(self, partitions: Collection[int] | None = None) -> dict[int, CommitPoint]:
        """Per partition: resume offset and max event ts before it (see module doc).

        The offset is the smallest one still held in an open tick, else the next
        offset to read; it never passes a reading that has not been applied.
        """
        wanted = self._parts.keys() if partitions is None else partitions
        out: dict[int, CommitPoint] = {}
        for pid in wanted:
            p = self._parts.get(pid)
            if p is not None:
                out[pid] = CommitPoint(p.next_offset, p.max_ts)
        for ot in self._open.values():
            for c in ot.chunks:
                cp = out.get(c.partition)
                off = int(c.offsets[0])
                if cp is not None and off < cp.offset:
                    out[c.partition] = CommitPoint(off, float(c.before[0]))
        return out

    @property
    def open_ticks(self) -> list[int]:
        """Ticks holding readings, ascending."""
        return sorted(self._open)

    def open_count(self) -> int:
        """Number of open ticks (cheaper than ``len(open_ticks)``: no sort)."""
        return len(self._open)

    def held(self) -> int:
        """Readings held in open ticks."""
        return sum(ot.n for ot in self._open.values())


def _grow(a: NDArray[Any], size: int, fill: int) -> NDArray[Any]:
    out = np.full(size, fill, a.dtype)
    out[: a.shape[0]] = a
    return out
