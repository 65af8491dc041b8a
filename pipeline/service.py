"""The loop: poll -> decode -> DLQ | assembler -> forecast step -> sinks -> checkpoint.

One thread does all the work (Kafka clients, model, arrays); HTTP threads only read
published snapshots. Ordering that makes state exactly-once: forecasts and dead
letters are flushed, then the checkpoint (file + ``tank.state``) is made durable, then
offsets are committed -- every ``checkpoint_interval_s``, on revoke and on shutdown.
SIGTERM/SIGINT (main thread only) or :meth:`Service.request_stop` end the loop after
the current batch. A broker outage never ends it: health goes red
(``tankwatch_broker_up`` 0, ``/healthz`` 503) and it recovers by itself.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

import numpy as np
from numpy.typing import NDArray

from pipeline.api import Dashboard, FleetQuery, model_json
from pipeline.assembler import RESET_REASONS, Columns, TickAssembler
from pipeline.checkpoint import Checkpointer
from pipeline.config import Settings
from pipeline.dlq import DeadLetters
from pipeline.forecast_step import ForecastStep, StepOutput
from pipeline.horizon_worker import HorizonWorker
from pipeline.http import HttpServer
from pipeline.input_checks import InputChecks
from pipeline.membership import JoinWatch, join_limit_s
from pipeline.ownership import PartitionOwnership
from pipeline.ports import ConsumerFactory, ConsumerLike, ModelInfo
from pipeline.sinks.forecasts import ForecastSink
from pipeline.sinks.history import History
from pipeline.sinks.metrics import PipelineMetrics
from pipeline.sinks.view import FleetView
from tankwatch.codec import decode_batch
from tankwatch.errors import TankwatchError

__all__ = ["ModelInfo", "Service"]

log = logging.getLogger(__name__)

#: Seconds between broker round trips that refresh health and lag when idle.
PROBE_INTERVAL_S = 2.0
#: A flush or commit blocked this long means the broker is not answering: health goes
#: red while the loop is still waiting (it cannot run a probe then).
BROKER_WAIT_S = 3.0


#: After SIGTERM/SIGINT, seconds the loop gets to finish, checkpoint and close before
#: the process exits anyway (non-zero).
STOP_GRACE_S = 45.0
#: A horizon worker that stopped is replaced by a new one once it has been gone this
#: long (and no tick waits for it); the horizons are computed in the loop meanwhile.
WORKER_RESTART_S = 60.0


def _exit_stuck(signum: int) -> None:
    log.error("did not stop within %.0f s of the signal: exiting", STOP_GRACE_S)
    os._exit(128 + signum)


def _unhealthy(alive: bool, up: bool, problem: str | None, blocked: dict[int, str]) -> str | None:
    """The first reason ``/healthz`` is not OK, or None (the order is the order in which
    an operator should look)."""
    if not alive:
        return "loop stalled"
    if not up:
        return "broker unreachable"
    if problem is not None:
        return f"checkpoint failing: {problem}"
    if blocked:
        parts = ", ".join(f"{p} ({e})" for p, e in sorted(blocked.items()))
        return f"undecodable batch on partition(s) {parts}"
    return None


class Service(PartitionOwnership):
    """One pipeline instance; built by :func:`pipeline.bootstrap.build_service`."""

    def __init__(
        self,
        settings: Settings,
        model: ModelInfo,
        make_consumer: ConsumerFactory,
        producer: Any,
        assembler: TickAssembler,
        step: ForecastStep,
        checkpointer: Checkpointer,
        dlq: DeadLetters,
        forecasts: ForecastSink | None,
        history: History,
        metrics: PipelineMetrics,
    ) -> None:
        self.settings = settings
        self.model = model
        self.registry = metrics.registry
        self._make_consumer = make_consumer
        self._consumer: ConsumerLike | None = None
        self.producer = producer
        self.assembler = assembler
        self.step = step
        self.checkpointer = checkpointer
        self.dlq = dlq
        self.forecasts = forecasts
        self.history = history
        self.metrics = metrics
        self._stop = threading.Event()
        self._lock = threading.Lock()  # guards history reads against the loop's writes
        # Serialises the loop's batch/checkpoint work with rebalance callbacks, which
        # kafka-python 3 runs on its IO thread. Never held across a blocking consumer
        # call (commit, probe): the IO thread may be waiting for it.
        self._work = threading.RLock()
        self._assigned: set[int] = set()
        self._dirty = np.zeros(0, bool)
        self._view = FleetView(horizons_reported=settings.horizons_reported)
        self.input_checks = InputChecks(model.tick_interval_s, model.value_range)
        self._broker_up = False
        self._broker_lost = False  # lost at least once since start (see _set_broker)
        self._blocked_since: float | None = None  # monotonic start of a broker wait
        self._last_loop = 0.0
        self._running = False
        self._fatal: BaseException | None = None
        self._checkpoint_problem: str | None = None
        self._consumed = 0
        self._ticks: dict[str, int] = {"complete": 0, "watermark": 0, "catchup": 0}
        self._checkpoints = 0
        # Checkpoint records skipped so far that /metrics already counts.
        self._skips_counted = {"foreign": 0, "corrupt": 0}
        self._last_points: dict[int, tuple[int, float]] = {}
        self._next_horizon = 0.0
        self._epoch = 0  # bumped by every assignment (see _iterate)
        self._callbacks_running = 0
        self._consumer_gen = 0  # callbacks of a replaced consumer are ignored
        self._join_watch = JoinWatch(
            join_limit_s(settings.session_timeout_ms, settings.max_poll_interval_ms)
        )
        self._assigned_at: dict[int, int] = {}
        # Applied ticks whose records wait for their horizon (the step's worker):
        # outputs, their newest Kafka timestamps, the newest closed tick.
        self._held: list[StepOutput] = []
        self._held_kafka_ts: list[float] = []
        self._held_tick: int | None = None
        #: Starts a horizon worker (set by use_horizon_worker): one that stopped is
        #: replaced after WORKER_RESTART_S (see _restart_worker).
        self.start_worker: Callable[[], HorizonWorker] | None = None
        self._worker_gone_at: float | None = None
        self.worker_restarts = 0
        # Evaluated at scrape time: the loop may be blocked on the broker right then.
        metrics.broker_up.set_function(lambda: 1.0 if self.broker_up_now() else 0.0)
        self._lag_confirmed = time.monotonic()  # last probe the broker answered
        metrics.lag_age.set_function(lambda: time.monotonic() - self._lag_confirmed)
        self.dashboard = Dashboard(
            lambda: self._view,
            history,
            self._lock,
            model_json(
                model.model_version,
                model.engine,
                model.tick_interval_s,
                model.max_gap_ticks,
                settings.horizons_reported,
                settings.horizon,
                model.sources,
            )
            | self._model_checks_json(model),
            model.tick_interval_s,
        )
        self._http = HttpServer(self, settings.http_host, settings.http_port)
        self._http.start()

    # ------------------------------------------------------------- control
    @property
    def http_url(self) -> str:
        return self._http.url

    def request_stop(self) -> None:
        """Finish the current batch, checkpoint, commit and return from :meth:`run`."""
        self._stop.set()

    @property
    def stats(self) -> dict[str, Any]:
        """Counters for tests, consistent at batch boundaries (waits for a running batch)."""
        with self._work:
            return self._stats()

    def _stats(self) -> dict[str, Any]:
        return {
            "running": self._running,
            "broker_up": self._broker_up,
            "assigned": sorted(self._assigned),
            "tanks": len(self.assembler.registry),
            "consumed": self._consumed,
            "rejected": dict(self.dlq.by_reason),
            "dropped": dict(self.assembler.dropped),
            "ticks": dict(self._ticks),
            "steps": self.step.steps,
            "checkpoints": self._checkpoints,
            "open_ticks": len(self.assembler.open_ticks),
            "held": self.assembler.held(),
            "forecasts_sent": self.forecasts.sent if self.forecasts else 0,
            # Ticks whose horizon the worker computed (0: none, or no worker).
            "horizon_worker_jobs": self.step.worker.jobs if self.step.worker else 0,
            "horizon_worker_restarts": self.worker_restarts,
        }

    def run(self, stop: threading.Event | None = None) -> None:
        """Run until ``stop`` (or :meth:`request_stop`, SIGTERM, SIGINT); then shut down."""
        if stop is not None:
            self._stop = stop
        restore = self._install_signals()
        final_error: TankwatchError | None = None
        self._running = True
        try:
            self._consumer = self._new_consumer()
            next_ckpt = time.monotonic() + self.settings.checkpoint_interval_s
            next_probe = 0.0
            while not self._stop.is_set():
                self._iterate()
                now = time.monotonic()
                if now >= next_probe:
                    self._probe()
                    self._check_membership(now)
                    self._restart_worker(now)
                    next_probe = now + PROBE_INTERVAL_S
                if now >= next_ckpt:
                    self._try_checkpoint(None)
                    next_ckpt = time.monotonic() + self.settings.checkpoint_interval_s
            if not self._try_checkpoint(None):
                # Exiting without the final checkpoint loses nothing (offsets were not
                # committed past it) but must not look like a clean stop.
                final_error = TankwatchError(
                    "stopped without a final checkpoint: "
                    + (self._checkpoint_problem or "the broker did not take it")
                )
        finally:
            self._running = False
            if self._consumer is not None:
                self._consumer.close()
            try:
                self.producer.flush(timeout=10)
                self.producer.close(timeout=5)
            except Exception as exc:
                log.warning("producer close failed", extra={"error": str(exc)})
            if self.step.worker is not None:
                self.step.worker.close()
            self._http.stop()
            restore()
        if self._fatal is not None:
            raise self._fatal
        if final_error is not None:
            raise final_error

    def _install_signals(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def handler(signum: int, frame: FrameType | None) -> None:
            if self._stop.is_set():  # a second signal: the operator means it
                log.error("second stop signal: exiting without a final checkpoint")
                os._exit(128 + signum)
            log.info("stopping", extra={"signal": signum})
            self._stop.set()
            # Last line of defence: a loop stuck where it cannot see the flag (a client
            # library spinning) must not make SIGTERM a no-op. Nothing is lost by it:
            # offsets were never committed past the last durable checkpoint.
            watchdog = threading.Timer(STOP_GRACE_S, _exit_stuck, args=(signum,))
            watchdog.daemon = True
            watchdog.start()

        old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}

        def restore() -> None:
            for s, h in old.items():
                signal.signal(s, h)

        return restore

    # ---------------------------------------------------------------- loop
    def _iterate(self) -> None:
        assert self._consumer is not None
        try:
            # While a horizon is computed in the worker, only take what has arrived:
            # its tick's records go out right after (see _drain).
            batch = self._consumer.poll(0 if self._held else self.settings.poll_timeout_ms)
        except Exception as exc:  # the client normally retries by itself; be safe
            self._set_broker(False, exc)
            time.sleep(0.5)
            return
        # An assignment completed inside poll() preceded the fetch (kafka-python drops
        # fetched data that does not match a seek); one completed after it returned did not.
        epoch = self._epoch
        self._last_loop = time.monotonic()
        blocked = getattr(self._consumer, "blocked", None)
        if blocked is not None:
            self.metrics.set_blocked(blocked)
        if self._fatal is not None:
            raise self._fatal
        lagging = self._consumer.lagging()
        with self._work:  # rebalance callbacks (IO thread) wait for the batch to finish
            n = 0
            if batch:
                self._set_broker(True)
                # Records polled before a partition was (re)assigned (kafka-python 3 may
                # finish a rebalance on its IO thread after poll() returned) predate its
                # seek to the checkpoint and will be delivered again from there; taking
                # them now would raise the partition's max event time too early.
                batch = {p: m for p, m in batch.items() if self._assigned_at.get(p, 0) <= epoch}
                n = self._intake(batch)
            ticks = self.assembler.close(lagging)
            self.metrics.open_ticks.set(self.assembler.open_count())
            self.metrics.held_readings.set(self.assembler.held())
            if ticks:
                self._apply(ticks)
            else:
                if not batch:  # nothing to read right now: the oldest held tick goes out
                    self._drain(oldest_only=True)
                if self._refresh_horizons():  # a quiet stream still gets its horizons
                    self._publish_view(None)
            self._consumed += n  # after the ticks: stats never show unprocessed input
        # Let a waiting rebalance callback (IO thread) or stats reader take the lock: a
        # released lock is not handed over while this thread keeps the GIL.
        time.sleep(0)

    def _intake(self, batch: dict[int, list[Any]]) -> int:
        """Decode a poll's messages (bad ones to the DLQ) into the assembler, one
        partition at a time as columns; returns how many messages were consumed."""
        topic = self.settings.topics.readings
        before = dict(self.assembler.dropped)
        n = 0
        for partition, msgs in batch.items():
            if partition not in self._assigned:
                continue
            n += len(msgs)
            d = decode_batch(
                [m.value for m in msgs],
                [m.key for m in msgs],
                self.model.pressure_range,
                require_key=True,
            )
            for i, exc in d.rejected:
                m = msgs[i]
                self.dlq.send(m.key, m.value, exc.reason, topic, partition, m.offset)
                self.metrics.rejected.labels(exc.reason).inc()
            if d.index:
                kept = [msgs[i] for i in d.index] if d.rejected else msgs
                values = np.column_stack((d.pressure_kpa, d.temperature_c)).astype(np.float64)
                ts = np.asarray(d.ts, np.float64)
                # Counted per tank there; /metrics and the page show the counts of
                # the next published view (exposition.render_tank_families).
                self.input_checks.observe(d.tank_ids, ts, values)
                if self.input_checks.cadence_message and not self._model_warnings:
                    self._model_warnings.append(self.input_checks.cadence_message)
                cols = Columns(
                    tank_ids=d.tank_ids,
                    ts=ts,
                    values=values,
                    event=np.asarray(d.event, bool),
                    offsets=np.fromiter((m.offset for m in kept), np.int64, len(kept)),
                    kafka_ts=np.fromiter((m.timestamp for m in kept), np.float64, len(kept))
                    / 1000.0,
                )
                # Valid readings the assembler refuses (a clock far ahead, a tank beyond
                # the limit) are dead letters too, with their own reasons.
                for i, reason in self.assembler.add_columns(partition, cols):
                    m = kept[i]
                    self.dlq.send(m.key, m.value, reason, topic, partition, m.offset)
                    self.metrics.rejected.labels(reason).inc()
                    if reason == "clock_skew":
                        self.metrics.count_clock_skew(d.tank_ids[i])
            self.assembler.advance(partition, msgs[-1].offset + 1)
            if self.assembler.revived:
                self._revive()
        self.metrics.consumed.inc(n)
        for reason, count in self.assembler.dropped.items():
            if count > before[reason]:
                self.metrics.dropped.labels(reason).inc(count - before[reason])
        return n

    def _apply(self, ticks: list[Any]) -> None:
        cap = self.assembler.capacity
        self.step.ensure_capacity(cap)
        self.history.ensure_capacity(self.step.capacity)
        if self._dirty.shape[0] < self.step.capacity:
            self._dirty = np.concatenate(
                [self._dirty, np.zeros(self.step.capacity - self._dirty.shape[0], bool)]
            )
        ids = self.assembler.registry.ids()
        # Horizons cost H cell evaluations per row: per tick only when the forecast
        # records carry them; for the page and metrics at most every
        # horizon_interval_s, batched over every row stepped since.
        per_tick = self.forecasts is not None
        for ct in ticks:
            t0 = time.perf_counter()
            self.step.assign_phases(ct.rows, ids)
            # With a horizon worker this queues this tick's horizon (and the
            # formatting of its records) there, after finishing the oldest if
            # MAX_IN_FLIGHT are queued; finished ticks' records are produced here
            # while the worker runs.
            out = self.step.apply(ct, per_tick, ids if per_tick else None)
            self._send_held()
            self._held.append(out)
            self._held_kafka_ts.append(float(ct.kafka_ts.max()))
            values = np.concatenate(
                [ct.x, out.expected, out.score[:, None], out.flag[:, None]], axis=1
            ).astype(np.float32)
            with self._lock:
                self.history.append(ct.rows, ct.ts, values)
            self._dirty[ct.rows] = True
            self.metrics.tick_seconds.observe(time.perf_counter() - t0)
            self._ticks[ct.trigger] += 1
            self.metrics.ticks.labels(ct.trigger).inc()
            reasons = np.bincount(ct.reset_reason, minlength=len(RESET_REASONS))
            for k in range(1, len(RESET_REASONS)):
                if reasons[k]:
                    self.metrics.resets.labels(RESET_REASONS[k]).inc(int(reasons[k]))
        self._refresh_horizons()
        closed = [ct.tick for ct in ticks if ct.trigger != "catchup"]
        if closed:
            self._held_tick = max(max(closed), self._held_tick or 0)
        if not self.step.pending:
            self._drain()
            return
        # The last tick's horizon is still running in the worker: its records wait for
        # it (_drain) while the loop reads the next poll. The page shows these ticks'
        # readings, forecasts and scores now (/api never lags what stats count as
        # consumed), and their horizons once _drain has them.
        self._publish_view(self._held_tick)

    def use_horizon_worker(self, start: Callable[[], HorizonWorker]) -> None:
        """Compute per-tick horizons in a worker that ``start`` starts: now, and again
        whenever one stopped (:meth:`_restart_worker`)."""
        self.start_worker = start
        self._start_worker(time.monotonic())

    def _start_worker(self, now: float) -> bool:
        """Start a horizon worker; if no process can start, the loop goes on computing
        horizons and it is tried again WORKER_RESTART_S later."""
        assert self.start_worker is not None
        try:
            self.step.worker = self.start_worker()
        except OSError as exc:
            self._worker_gone_at = now
            log.warning("horizon worker could not be started", extra={"error": str(exc)})
            return False
        return True

    def _restart_worker(self, now: float) -> None:
        """Replace a horizon worker that stopped (it died, hung or could not start) once
        it has been gone WORKER_RESTART_S: a crash costs a minute of slower ticks, not
        the instance's throughput until someone restarts it. Only between ticks (none
        waits for the old one), so every queued horizon is finished where it started."""
        if self.start_worker is None:
            return
        w = self.step.worker
        if w is not None and w.alive:
            self._worker_gone_at = None
            return
        if self._worker_gone_at is None:
            self._worker_gone_at = now
            return
        if now - self._worker_gone_at < WORKER_RESTART_S or self.step.pending:
            return
        with self._work:  # not while a rebalance callback finishes ticks with the old one
            if self.step.pending or not self._start_worker(now):
                return
        self._worker_gone_at = None
        self.worker_restarts += 1
        self.metrics.horizon_worker_restarts.inc()
        log.warning("horizon worker restarted", extra={"restarts": self.worker_restarts})

    def _send_held(self) -> None:
        """Produce the records of the held ticks whose horizons are complete (the
        oldest ones: records keep tick order)."""
        k = 0
        while k < len(self._held) and not self.step.is_pending(self._held[k]):
            k += 1
        if not k:
            return
        outputs, kafka_ts = self._held[:k], self._held_kafka_ts[:k]
        self._held, self._held_kafka_ts = self._held[k:], self._held_kafka_ts[k:]
        if self.forecasts is not None:
            ids = self.assembler.registry.ids()
            for out in outputs:
                self.forecasts.publish(out, ids)
        now = time.time()
        for kts in kafka_ts:
            self.metrics.latency.observe(max(0.0, now - kts))

    def _drain(self, oldest_only: bool = False) -> None:
        """Finish the horizons running in the worker (waits for them; ``oldest_only``:
        for the oldest), then publish the page and the finished ticks' records: the
        page and /metrics first, the records (one per tank) after. Called (in full)
        before anything that flushes, commits, checkpoints or moves rows, so outputs
        and offsets keep the order they have without a worker."""
        if oldest_only:
            self.step.collect_oldest()
        else:
            self.step.collect()
        if self.step.pending:  # another still runs: the finished ticks' records go out
            self._send_held()
            return
        last, self._held_tick = self._held_tick, None
        if self._held or last is not None:
            self._publish_view(last)
        self._send_held()

    def _refresh_horizons(self) -> bool:
        """Horizons of rows stepped since the last refresh, if one is due."""
        now = time.monotonic()
        if now < self._next_horizon or not self.step.stale.any():
            return False
        self.step.refresh_horizons()
        self._next_horizon = now + self.settings.horizon_interval_s
        return True

    def _model_checks_json(self, model: ModelInfo) -> dict[str, Any]:
        """The pressure reference, limits, trained value range and data warnings for the
        ``model`` object of /api/fleet (``warnings`` fills in once the cadence is judged)."""
        self._model_warnings: list[str] = []
        vr = model.value_range
        return {
            "pressure_reference": model.pressure_reference,
            "pressure_limits_kpa": list(model.pressure_range),
            "value_range": None
            if vr is None
            else {"low": [float(v) for v in vr[0]], "high": [float(v) for v in vr[1]]},
            "warnings": self._model_warnings,
        }

    def _value_range_counts(self, ids: list[str | None], n: int) -> NDArray[np.int64]:
        """(n,) readings per row outside the trained value range (input_checks)."""
        out = np.zeros(n, np.int64)
        counts = self.input_checks.out_of_range
        if counts:
            for i, t in enumerate(ids[:n]):
                if t is not None:
                    out[i] = counts.get(t, 0)
        return out

    def _publish_view(self, last_tick: int | None) -> None:
        n = self.assembler.capacity
        ids = self.assembler.registry.ids()
        f = self.step.fleet
        last_tick_ts = self._view.last_tick_ts
        if last_tick is not None:
            last_tick_ts = last_tick * self.assembler.interval
            self.metrics.last_tick.set(last_tick_ts)
        self._view = FleetView(
            ids=ids,
            actual=f.actual[:n].copy(),
            forecast=f.held[:n].copy(),
            horizons=f.horizons[:n].copy(),
            residual=f.residual[:n].copy(),
            score=f.score[:n].copy(),
            flag=f.flag[:n].copy(),
            last_ts=f.last_ts[:n].copy(),
            resets=f.resets[:n].copy(),
            clips=f.clips[:n].copy(),
            # The page's out_of_range mark: readings outside the trained value range
            # (input_checks, per tank id). The model's own wider input-range check
            # (forecast_step: flags withheld) shows as `calibrated` / its metric.
            out_of_range=self._value_range_counts(ids, n),
            outside_input_range=f.out_of_range[:n].copy(),
            calibrated=f.calibrated[:n].copy(),
            holt_withheld=self.step.holt_withheld(n),
            horizons_reported=self.settings.horizons_reported,
            last_tick_ts=last_tick_ts,
            published=time.time(),
        )
        self.metrics.set_view(self._view)
        w = self.step.worker
        self.metrics.set_horizon_worker(
            self.step.horizons_by_where,
            stopped=self.start_worker is not None and (w is None or not w.alive),
        )
        self.metrics.tanks.set(len(self.assembler.registry))
        self.metrics.holt_withheld.set(int(self._view.holt_withheld.sum()))

    # -------------------------------------------------------- broker health
    def _set_broker(self, up: bool, exc: BaseException | None = None) -> None:
        # Reaching the broker is news only after it was lost (info on start-up: the
        # first probe always flips the initial False); losing it is a warning, with
        # the error only when there is one.
        if up and not self._broker_up:
            if self._broker_lost:
                log.warning("broker reachable again")
            else:
                log.info("broker up")
        elif not up and self._broker_up:
            self._broker_lost = True
            log.warning("broker unreachable", extra={"error": str(exc)} if exc else {})
        self._broker_up = up

    def broker_up_now(self) -> bool:
        """The last probe's verdict, unless the loop has been stuck on the broker for
        longer than :data:`BROKER_WAIT_S` (read by HTTP threads at scrape time)."""
        since = self._blocked_since
        stuck = since is not None and time.monotonic() - since > BROKER_WAIT_S
        return self._broker_up and not stuck

    @contextlib.contextmanager
    def _broker_wait(self) -> Iterator[None]:
        """Mark a blocking broker call (flush, commit) so health can see it hang."""
        self._blocked_since = time.monotonic()
        try:
            yield
        finally:
            self._blocked_since = None

    def _new_consumer(self) -> ConsumerLike:
        """A group consumer whose rebalance callbacks act only while it is current."""
        self._consumer_gen += 1
        gen = self._consumer_gen

        def revoked(partitions: list[int]) -> dict[int, int]:
            return self._on_revoked(partitions) if gen == self._consumer_gen else {}

        def assigned(partitions: list[int]) -> None:
            if gen == self._consumer_gen:
                self._on_assigned(partitions)

        def lost(partitions: list[int]) -> None:
            if gen == self._consumer_gen:
                self._on_lost(partitions)

        return self._make_consumer(revoked, assigned, lost)

    def _check_membership(self, now: float) -> None:
        """Replace a consumer stuck outside its group (pipeline.membership)."""
        stuck = self._consumer
        if stuck is None:
            return
        if not self._join_watch.stuck(stuck.in_stable_group(), self._callbacks_running > 0, now):
            return
        log.warning(
            "consumer stuck outside its group; replacing it",
            extra={"seconds": self._join_watch.limit_s, "partitions": sorted(self._assigned)},
        )
        self.metrics.consumers_replaced.inc()
        # No checkpoint: others may own them now.
        self._on_lost(sorted(self._assigned), "consumer stuck outside its group, replaced")
        self._consumer = self._new_consumer()  # from here on the old one's callbacks are ignored
        # Its close may hang on the very IO thread that is stuck: not on this thread.
        threading.Thread(target=stuck.close, name="close-stuck-consumer", daemon=True).start()

    def _probe(self) -> None:
        assert self._consumer is not None
        ok = self._consumer.probe()
        self._set_broker(ok)
        if ok:  # the high-water marks behind the lag are as fresh as this round trip
            self._lag_confirmed = time.monotonic()
        for p, lag in self._consumer.lag().items():
            if lag is not None:
                self.metrics.lag.labels(str(p)).set(lag)

    # ----------------------------------------------------------------- API
    def metrics_text(self) -> bytes:
        """The ``/metrics`` body (per-tank text rendered once per published view)."""
        return self.metrics.exposition()

    def health(self) -> tuple[bool, dict[str, Any]]:
        alive = self._running and time.monotonic() - self._last_loop < 30.0
        up = self.broker_up_now()
        problem = self._checkpoint_problem
        blocked = dict(getattr(self._consumer, "blocked", None) or {})
        reason = _unhealthy(alive, up, problem, blocked)
        ok = reason is None
        return ok, {
            "status": "ok" if ok else "unavailable",
            "reason": reason,
            "loop_alive": alive,
            "broker_up": up,
            "checkpoint_ok": problem is None,
            "blocked_partitions": sorted(blocked),
            "assigned_partitions": sorted(self._assigned),
            "out_of_group_s": round(self._join_watch.out_of_group_s(time.monotonic()), 1),
            "tanks": len(self.assembler.registry),
            "model_version": self.model.model_version,
        }

    def fleet_json(self, query: FleetQuery | None = None) -> dict[str, Any]:
        return self.dashboard.fleet_json(query)

    def tank_json(self, tank_id: str) -> dict[str, Any] | None:
        return self.dashboard.tank_json(tank_id)
