"""The part of the service that owns partitions: checkpoints and rebalances.

A checkpoint flushes the outputs, makes the state of the tanks stepped since the last
one durable (:class:`~pipeline.checkpoint.Checkpointer`) and then commits, per partition,
the commit point's offset. On revoke the revoked partitions are checkpointed and their
rows freed; on assign their state is restored and the consumer seeks to the commit
point; on loss (membership expired) they are just forgotten.

kafka-python 3 calls the rebalance hooks on its IO thread, so every method here takes
the service's work lock, and none holds it across a blocking consumer call.

With exactly-once outputs (``self.producer`` is a
:class:`~pipeline.transactions.TransactionalOutputs`) a checkpoint always covers every
assigned partition and ends the open transaction: outputs since the last checkpoint,
state and commit-point records and the consumed offsets commit together (the commit
blocks on the producer, never on the consumer, so it runs under the work lock). An
aborted transaction discarded outputs the in-memory state already reflects, so the
partitions are rewound: forgotten and restored from the last committed checkpoint.
On loss the open transaction is aborted the same way.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.assembler import TickAssembler
from pipeline.checkpoint import Checkpointer, LocalCheckpointError
from pipeline.config import Settings
from pipeline.dlq import DeadLetters
from pipeline.forecast_step import ForecastStep
from pipeline.sinks.history import History
from pipeline.sinks.metrics import PipelineMetrics
from pipeline.transactions import TransactionAborted
from tankwatch.errors import BrokerError

if TYPE_CHECKING:
    from pipeline.ports import ConsumerLike

__all__ = ["PartitionOwnership"]

log = logging.getLogger(__name__)


class PartitionOwnership:
    """Mixin of :class:`~pipeline.service.Service` (which sets these attributes)."""

    _consumer: ConsumerLike | None
    _work: threading.RLock
    _lock: threading.Lock
    _assigned: set[int]
    _assigned_at: dict[int, int]
    _epoch: int
    _dirty: np.ndarray
    _last_points: dict[int, tuple[int, float]]
    _checkpoints: int
    _skips_counted: dict[str, int]
    #: Rebalance callbacks running now (the JoinWatch does not count their time).
    _callbacks_running: int
    _fatal: BaseException | None
    #: Why the last checkpoint failed locally (None = fine); shown by ``/healthz``.
    _checkpoint_problem: str | None
    producer: Any
    settings: Settings
    assembler: TickAssembler
    step: ForecastStep
    checkpointer: Checkpointer
    dlq: DeadLetters
    history: History
    metrics: PipelineMetrics

    def _set_broker(self, up: bool, exc: BaseException | None = None) -> None:
        raise NotImplementedError

    @contextlib.contextmanager
    def _rebalance_callback(self) -> Iterator[None]:
        """The work lock for a rebalance callback (kafka-python's IO thread); while one
        runs, the rebalance is making progress, however long a restore takes."""
        self._callbacks_running += 1
        try:
            with self._work:
                yield
        finally:
            self._callbacks_running -= 1

    def _publish_view(self, last_tick: int | None) -> None:
        raise NotImplementedError

    def _drain(self) -> None:
        """Publish ticks held for a horizon computed in the worker (Service)."""
        raise NotImplementedError

    def _broker_wait(self) -> contextlib.AbstractContextManager[None]:
        raise NotImplementedError

    # ---------------------------------------------------------- checkpoints
    def _try_checkpoint(self, partitions: list[int] | None) -> bool:
        try:
            self.checkpoint(partitions)
        except Exception as exc:
            self._checkpoint_failed(exc)
            return False
        self._checkpoint_problem = None
        return True

    def _checkpoint_failed(self, exc: BaseException) -> None:
        """Count a failed checkpoint and say why in health: a local write failure is
        its own state (the broker is fine), anything else means the broker."""
        if isinstance(exc, LocalCheckpointError):
            self._checkpoint_problem = str(exc)
            self.metrics.checkpoint_failures.labels("local_file").inc()
        elif isinstance(exc, TransactionAborted) and not exc.broker_fault:
            # Fenced or evicted: the broker is fine, this instance was out of date (its
            # partitions are being or were reassigned); counted, not a broker outage.
            self.metrics.checkpoint_failures.labels("fenced").inc()
        else:
            self._set_broker(False, exc)
            self.metrics.checkpoint_failures.labels("broker").inc()
        log.warning("checkpoint failed; offsets not committed", extra={"error": str(exc)})

    def checkpoint(self, partitions: list[int] | None = None) -> None:
        """Flush outputs, make the state durable, then commit (all assigned if None)."""
        if self._consumer is None:
            return
        with self._broker_wait():
            if self._transactional():
                with self._work:
                    self._drain()  # outputs before the offsets that cover them
                    aborted = self._commit_transaction()
                    if aborted is not None:
                        self._rewind(sorted(self._assigned))
                        raise TransactionAborted(
                            "checkpoint transaction aborted; partitions rewound",
                            broker_fault=aborted.broker_fault,
                        )
                return
            with self._work:
                self._drain()  # outputs before the offsets that cover them
                offsets = self._save_checkpoint(partitions)
            if offsets:
                self._consumer.commit(offsets)

    # ------------------------------------------------------- exactly-once
    def _transactional(self) -> bool:
        return bool(getattr(self.producer, "exactly_once", False))

    def _commit_transaction(self) -> TransactionAborted | None:
        """Checkpoint every assigned partition in the open transaction and commit it with
        the consumed offsets (caller holds the work lock). Not None: aborted, the outputs
        since the last checkpoint are gone and the caller must rewind. A flush that
        timed out raises BrokerError and leaves the transaction open for the next try."""
        assert self._consumer is not None
        offsets = self._save_checkpoint(None, force=self.producer.in_transaction)
        try:
            self.producer.commit(offsets, self._consumer.group_metadata())
        except TransactionAborted as exc:
            if exc.broker_fault:  # not when only this instance was out of date
                self._set_broker(False, exc)
            log.warning("checkpoint transaction aborted", extra={"error": str(exc)})
            return exc
        return None

    def _rewind(self, partitions: list[int]) -> None:
        """Back to the last committed checkpoint of these partitions (after an abort)."""
        if partitions:
            self._forget(partitions)
            self._restore(partitions)

    def _save_checkpoint(self, partitions: list[int] | None, force: bool = False) -> dict[int, int]:
        """The durable half of a checkpoint; returns the offsets to commit (may be {}).
        ``force``: write the commit points even if nothing changed since the last one."""
        wanted = sorted(self._assigned if partitions is None else set(partitions) & self._assigned)
        if not wanted:
            return {}
        t0 = time.perf_counter()
        points = self.assembler.commit_points(wanted)
        part = self.assembler.row_partition
        dirty = self._dirty
        # The changed tanks of these partitions, in row order (vectorised: a per-tank
        # test was ~25 ms of a 10,000-tank checkpoint).
        n = min(dirty.shape[0], part.shape[0])
        rows = np.flatnonzero(dirty[:n] & np.isin(part[:n], list(points)))
        ids = self.assembler.registry.ids()
        tanks = [(t, r) for r in rows.tolist() if (t := ids[r]) is not None]
        summary = {p: (pt.offset, pt.max_ts) for p, pt in points.items()}
        unchanged = all(self._last_points.get(p) == s for p, s in summary.items())
        if not tanks and unchanged and not force:
            return {}  # nothing new since the last checkpoint
        states = self.step.snapshot_columns(tanks, self.assembler.last_applied, part)
        try:
            self.producer.flush(timeout=self.checkpointer.timeout_s)
        except Exception as exc:
            raise BrokerError(f"flushing outputs failed: {exc}") from None
        # No dead letter may be lost: one that failed is sent again (header-only)
        # before the commit passes its source offset.
        self.dlq.resend_failed(self.checkpointer.timeout_s)
        self.checkpointer.save(states, points)
        for _, r in tanks:
            dirty[r] = False
        self._retire_idle(list(points))
        self._last_points.update(summary)
        self._checkpoints += 1
        self.metrics.checkpoints.inc()
        self.metrics.checkpoint_seconds.observe(time.perf_counter() - t0)
        return {p: pt.offset for p, pt in points.items()}

    def _retire_idle(self, partitions: list[int]) -> None:
        """Free the rows of tanks idle longer than ``tank_idle_s`` (event time) whose
        state the checkpoint just made durable; :meth:`_revive` brings them back.

        Not with exactly-once outputs: there the local journal is not written (it could
        hold state whose outputs were later aborted), so a retired tank could only come
        back from ``tank.state``, which is not read per tank at run time yet; such a
        tank would restart fresh. ``max_tanks`` still bounds memory in that mode."""
        if self._transactional():
            return
        dirty = self._dirty
        idle = [
            (t, r)
            for t, r in self.assembler.idle(self.settings.tank_idle_s, partitions)
            if not (r < dirty.shape[0] and dirty[r])
        ]
        if not idle:
            return
        rows = np.asarray([r for _, r in idle], np.intp)
        self.assembler.retire(idle)
        self.step.free(rows)
        with self._lock:
            self.history.clear(rows)
        self.metrics.tanks_retired.inc(len(idle))
        self._publish_view(None)  # the page and the tank gauge drop them now
        log.info("idle tanks retired", extra={"tanks": len(idle)})

    def _revive(self) -> None:
        """Restore the state of retired tanks that reported again (from the local
        checkpoint journal; the same state is in ``tank.state``)."""
        revived, self.assembler.revived = self.assembler.revived, []
        for tank_id, row in revived:
            state = self.checkpointer.local_state(tank_id)
            self.step.ensure_capacity(self.assembler.capacity)
            if state is not None:
                self.step.restore(row, state)
                self.metrics.tanks_revived.inc()
            else:  # no state to continue from: a fresh start, reset and counted as new
                self.assembler.renew(row)
        self._count_skipped_records()

    def _count_skipped_records(self) -> None:
        """Bring the counters of skipped checkpoint records up to the checkpointer's
        (foreign ones: another incarnation; corrupt ones: unreadable, including lines
        of the local journal found when it was opened)."""
        ck, seen = self.checkpointer, self._skips_counted
        for kind, now, counter in (
            ("foreign", ck.foreign_records, self.metrics.foreign_checkpoints),
            ("corrupt", ck.corrupt_records, self.metrics.corrupt_checkpoints),
        ):
            if now > seen[kind]:
                counter.inc(now - seen[kind])
                seen[kind] = now

    # ----------------------------------------------------------- rebalance
    def _on_revoked(self, partitions: list[int]) -> dict[int, int]:
        """Checkpoint the revoked partitions' tanks, free their rows; returns the offsets
        for the consumer to commit before the partitions go to another member."""
        with self._rebalance_callback():
            gone = [p for p in partitions if p in self._assigned]
            if not gone:
                return {}
            self._drain()
            if self._transactional():
                # The open transaction holds every partition's outputs: commit them all.
                try:
                    ok = self._commit_transaction() is None
                except Exception as exc:
                    self._set_broker(False, exc)
                    log.warning("checkpoint on revoke failed", extra={"error": str(exc)})
                    self.producer.abort()
                    ok = False
                self._forget(gone)
                if not ok:
                    self._rewind(sorted(self._assigned))
                return {}  # the offsets went with the transaction
            try:
                offsets = self._save_checkpoint(gone)
            except Exception as exc:
                self._checkpoint_failed(exc)
                offsets = {}
            self._forget(gone)
            return offsets

    def _on_lost(self, partitions: list[int], why: str = "session expired") -> None:
        """Membership expired (or the consumer is being replaced: ``why``): another
        member may own these already, so no checkpoint."""
        with self._rebalance_callback():
            self._drain()  # as without the worker: those ticks' records were sent
            gone = [p for p in partitions if p in self._assigned]
            open_txn = self._transactional() and self.producer.in_transaction
            log.warning(
                f"group membership lost ({why}); partitions dropped without a checkpoint",
                extra={"partitions": gone, "open_transaction_aborted": open_txn},
            )
            self._forget(gone)
            if open_txn:
                # Outputs of the lost partitions must not become visible; the others'
                # go with them and are produced again from their last checkpoint.
                self.producer.abort()
                self._rewind(sorted(self._assigned))

    def _forget(self, gone: list[int]) -> None:
        if not gone:
            return
        released = self.assembler.revoke(gone)
        rows = np.asarray([r for _, r in released], np.intp)
        if rows.size:
            self.step.free(rows)
            with self._lock:
                self.history.clear(rows)
            self._dirty[rows[rows < self._dirty.shape[0]]] = False
        self._assigned -= set(gone)
        for p in gone:
            self._last_points.pop(p, None)
            with contextlib.suppress(KeyError):
                self.metrics.lag.remove(str(p))
        self._publish_view(None)
        log.info("partitions released", extra={"partitions": gone, "tanks": len(released)})

    def _on_assigned(self, partitions: list[int]) -> None:
        with self._rebalance_callback():
            self._drain()
            self._restore([p for p in partitions if p not in self._assigned])

    def _restore(self, new: list[int]) -> None:
        """Load the state of newly assigned partitions and seek to their checkpoints."""
        if not new:
            return
        try:
            tanks, points = self.checkpointer.load(new)
        except Exception as exc:  # without the state we must not process these partitions
            self._fatal = BrokerError(f"restoring state of partitions {new} failed: {exc}")
            return
        finally:
            self._count_skipped_records()
        assert self._consumer is not None
        for p in new:
            point = points.get(p)
            self.assembler.assign(p, point)
            if point is not None:
                self._consumer.seek(p, point.offset)
                self._last_points[p] = (point.offset, point.max_ts)
        for state in tanks.values():
            row = self.assembler.restore_tank(state.tank_id, state.partition, state.last_tick)
            self.step.ensure_capacity(self.assembler.capacity)
            self.step.restore(row, state)
        self.history.ensure_capacity(self.step.capacity)
        self._assigned |= set(new)
        self._epoch += 1
        for p in new:
            self._assigned_at[p] = self._epoch
        self._publish_view(None)
        log.info("partitions assigned", extra={"partitions": new, "restored_tanks": len(tanks)})
