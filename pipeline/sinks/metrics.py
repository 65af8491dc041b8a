"""Prometheus metrics: one object built from an injected CollectorRegistry.

Pipeline series are ordinary prometheus_client metrics. Per-tank series are rendered
as text from the latest :class:`~pipeline.sinks.view.FleetView` when scraped (once per
published view, see :mod:`pipeline.sinks.exposition`), so a tick costs no per-series
Python work and frequent scrapes cost little. ``/metrics`` serves
:meth:`PipelineMetrics.exposition`. Base units: pressure is exported in pascals
(kPa x 1000), temperature in degrees Celsius, times in seconds.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)

from pipeline.assembler import RESET_REASONS
from pipeline.sinks.exposition import KPA_TO_PA, render_tank_families
from pipeline.sinks.view import FleetView

__all__ = ["KPA_TO_PA", "PipelineMetrics", "TankSeries"]

#: Tanks that get their own ``tankwatch_clock_skew_readings_total`` series.
CLOCK_SKEW_TANKS = 1000
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_TICK_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class TankSeries:
    """Per-tank gauges of the latest fleet view (label ``tank_id``), as text.

    Rendered by :func:`~pipeline.sinks.exposition.render_tank_families` once per
    published view (cached: many scrapes of one view cost one render) and appended to
    the registry's text by :meth:`PipelineMetrics.exposition`. Deliberately not a
    registry collector: building per-series objects is what this avoids.
    """

    def __init__(self) -> None:
        self.view = FleetView()
        self.enabled = True
        self._lock = threading.Lock()
        self._rendered_for: FleetView | None = None
        self._rendered = b""

    def text(self) -> bytes:
        """The per-tank families of the current view, Prometheus text (UTF-8)."""
        if not self.enabled:
            return b""
        with self._lock:  # concurrent scrapes of a new view render it once
            view = self.view
            if self._rendered_for is not view:
                self._rendered = render_tank_families(view)
                self._rendered_for = view
            return self._rendered


class PipelineMetrics:
    """Every metric of the pipeline, registered in ``registry`` (tests pass a fresh one)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        model_version: str,
        engine: str,
        tick_interval_s: float,
        reject_reasons: Sequence[str] = (),
        per_tank: bool = True,
        sources: dict[str, list[str]] | None = None,
        horizons: Sequence[int] = (),
    ) -> None:
        r = registry
        self.registry = registry
        self.consumed = Counter(
            "tankwatch_readings_consumed", "Messages consumed from the readings topic.", registry=r
        )
        self.rejected = Counter(
            "tankwatch_readings_rejected",
            "Messages sent to the DLQ, by reason.",
            ["reason"],
            registry=r,
        )
        for reason in reject_reasons:
            self.rejected.labels(reason)
        self.dropped = Counter(
            "tankwatch_readings_dropped",
            "Valid readings dropped, by reason.",
            ["reason"],
            registry=r,
        )
        for reason in ("late", "duplicate"):
            self.dropped.labels(reason)
        self.ticks = Counter(
            "tankwatch_ticks_closed",
            "Ticks applied, by what closed them.",
            ["trigger"],
            registry=r,
        )
        for trigger in ("complete", "watermark", "catchup"):
            self.ticks.labels(trigger)
        self.resets = Counter(
            "tankwatch_state_resets",
            "Per-row LSTM state resets, by reason.",
            ["reason"],
            registry=r,
        )
        for reason in RESET_REASONS[1:]:
            self.resets.labels(reason)
        self.transactions = Counter(
            "tankwatch_transactions",
            "Checkpoint transactions (exactly-once outputs), by outcome.",
            ["outcome"],
            registry=r,
        )
        for outcome in ("committed", "aborted"):
            self.transactions.labels(outcome)
        self.consumers_replaced = Counter(
            "tankwatch_consumers_replaced",
            "Group consumers replaced after being stuck outside their group (see "
            "pipeline/membership.py).",
            registry=r,
        )
        self.transaction_open = Gauge(
            "tankwatch_transaction_open_seconds",
            "Age of the open checkpoint transaction (0 when none or not transactional).",
            registry=r,
        )
        self.tick_seconds = Histogram(
            "tankwatch_tick_processing_seconds",
            "Time to apply one closed tick.",
            buckets=_TICK_BUCKETS,
            registry=r,
        )
        self.latency = Histogram(
            "tankwatch_end_to_end_latency_seconds",
            "Kafka timestamp of a tick's last reading to its forecast published.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.lag = Gauge(
            "tankwatch_consumer_lag_messages",
            "High-water mark minus position.",
            ["partition"],
            registry=r,
        )
        self.lag_age = Gauge(
            "tankwatch_consumer_lag_age_seconds",
            "Seconds since the lag was last confirmed by a broker round trip "
            "(grows while the broker does not answer: the lag figures are stale).",
            registry=r,
        )
        self.tanks = Gauge("tankwatch_tanks", "Tanks assigned to this instance.", registry=r)
        self.holt_withheld = Gauge(
            "tankwatch_holt_withheld_tanks",
            "Tanks served persistence where the skill gate says Holt: their own one-step "
            "errors say Holt does not fit them (per tank: tank_holt_withheld).",
            registry=r,
        )
        self.open_ticks = Gauge(
            "tankwatch_open_ticks", "Ticks holding readings, not closed yet.", registry=r
        )
        self.held_readings = Gauge(
            "tankwatch_held_readings", "Readings held in open ticks.", registry=r
        )
        self.checkpoints = Counter(
            "tankwatch_checkpoints",
            "Checkpoints written (state durable, then commit).",
            registry=r,
        )
        self.checkpoint_failures = Counter(
            "tankwatch_checkpoint_failures",
            "Checkpoints that did not complete (offsets not committed), by reason: "
            "local_file (state dir not writable / full), broker, or fenced (this "
            "instance's group membership or transactional id was taken over).",
            ["reason"],
            registry=r,
        )
        for reason in ("local_file", "broker", "fenced"):
            self.checkpoint_failures.labels(reason)
        self.checkpoint_seconds = Histogram(
            "tankwatch_checkpoint_seconds", "Time to write one checkpoint.", registry=r
        )
        self.broker_up = Gauge(
            "tankwatch_broker_up", "1 while polls and commits succeed.", registry=r
        )
        self.last_tick = Gauge(
            "tankwatch_last_tick_timestamp_seconds",
            "Event time of the last closed tick.",
            registry=r,
        )
        self.model_info = Info("tankwatch_model", "The model being served.", registry=r)
        self.model_info.info(
            {
                "model_version": model_version,
                "engine": engine,
                "tick_interval_seconds": f"{tick_interval_s:g}",
            }
        )
        # Which forecaster serves each feature and reported horizon (models.serving):
        # 1 on the served source's series, per (feature, horizon_ticks).
        self.forecast_source = Gauge(
            "tankwatch_forecast_source",
            "1 for the forecaster serving this feature and horizon (skill gate).",
            ["feature", "horizon_ticks", "source"],
            registry=r,
        )
        for feature, per in (sources or {}).items():
            for h, src in zip(horizons, per, strict=True):
                self.forecast_source.labels(feature, str(h), src).set(1)
        self.partitions_blocked = Gauge(
            "tankwatch_partitions_blocked",
            "Partitions paused on a record batch the client cannot decode (codec library "
            "missing or corrupt batch); nothing past it is committed.",
            registry=r,
        )
        self.undecodable_batches = Counter(
            "tankwatch_undecodable_batches",
            "Times a partition was paused on a record batch that could not be decoded.",
            registry=r,
        )
        self._blocked_seen: set[int] = set()
        self.horizons = Counter(
            "tankwatch_horizons_computed",
            "Per-tick forecast horizons, by where they were computed: the horizon worker "
            "process or the loop (pipeline/horizon_worker.py).",
            ["where"],
            registry=r,
        )
        for where in ("worker", "loop"):
            self.horizons.labels(where)
        self._horizons_seen: dict[str, int] = {}
        self.horizon_worker_stopped = Gauge(
            "tankwatch_horizon_worker_stopped",
            "1 while the horizon worker this instance uses is stopped (it died, hung or "
            "could not start; a new one is started after a minute): horizons are "
            "computed in the loop meanwhile, at a lower throughput. 0 while it runs or "
            "when none is used.",
            registry=r,
        )
        self.horizon_worker_restarts = Counter(
            "tankwatch_horizon_worker_restarts",
            "Horizon workers started in place of one that stopped.",
            registry=r,
        )
        self.tanks_retired = Counter(
            "tankwatch_tanks_retired",
            "Idle tanks whose rows were freed (state kept in the checkpoint).",
            registry=r,
        )
        self.tanks_revived = Counter(
            "tankwatch_tanks_revived",
            "Retired tanks that reported again and got their state back.",
            registry=r,
        )
        self.foreign_checkpoints = Counter(
            "tankwatch_checkpoint_foreign_records",
            "Checkpoint records ignored at restore because they belong to another broker "
            "or topic incarnation (topic id differs, or commit point past the log end).",
            registry=r,
        )
        self.corrupt_checkpoints = Counter(
            "tankwatch_checkpoint_corrupt_records",
            "Checkpoint records that could not be read (not JSON, a field missing, a state "
            "that disagrees with its layout), skipped: their tanks started afresh or from "
            "an older record.",
            registry=r,
        )
        self.dead_letters_truncated = Counter(
            "tankwatch_dead_letters_truncated",
            "Dead letters whose value was cut (larger than the DLQ limit, or refused by the "
            "broker); headers carry the original size.",
            registry=r,
        )
        self.clock_skew = Counter(
            "tankwatch_clock_skew_readings",
            "Readings dead-lettered because their clock ran too far ahead of the fleet, "
            f'per tank (the first {CLOCK_SKEW_TANKS} tanks; others under tank_id="_other").',
            ["tank_id"],
            registry=r,
        )
        self._skew_tanks: set[str] = set()
        self.tank_series = TankSeries()
        self.tank_series.enabled = per_tank

    def set_blocked(self, blocked: dict[int, str]) -> None:
        """Publish the consumer's blocked partitions (counting newly blocked ones)."""
        new = set(blocked) - self._blocked_seen
        if new:
            self.undecodable_batches.inc(len(new))
        self._blocked_seen = set(blocked)
        self.partitions_blocked.set(len(blocked))

    def count_clock_skew(self, tank_id: str) -> None:
        """One ``clock_skew`` rejection of ``tank_id`` (series bounded: a flood of new
        ids with wrong clocks must not grow /metrics without end)."""
        if tank_id not in self._skew_tanks:
            if len(self._skew_tanks) >= CLOCK_SKEW_TANKS:
                tank_id = "_other"  # never a tank id (those start with a letter or digit)
            else:
                self._skew_tanks.add(tank_id)
        self.clock_skew.labels(tank_id).inc()

    def set_horizon_worker(self, by_where: Mapping[str, int], stopped: bool) -> None:
        """The per-tick horizons computed so far by where (the counter follows
        ``ForecastStep.horizons_by_where``), and whether the horizon worker is stopped."""
        for where, n in by_where.items():
            seen = self._horizons_seen.get(where, 0)
            if n > seen:
                self.horizons.labels(where).inc(n - seen)
                self._horizons_seen[where] = n
        self.horizon_worker_stopped.set(int(stopped))

    def set_view(self, view: FleetView) -> None:
        """Publish the latest fleet view to the per-tank collector."""
        self.tank_series.view = view

    def exposition(self) -> bytes:
        """The ``/metrics`` body: the registry in text format, then the per-tank
        families from the cached text (no per-series objects)."""
        return generate_latest(self.registry) + self.tank_series.text()
