"""Prometheus metrics: one object built from an injected CollectorRegistry.

Pipeline series are ordinary prometheus_client metrics. Per-tank series come from a
custom collector that reads the latest :class:`~pipeline.sinks.view.FleetView` at
scrape time, so a tick costs no per-series Python work. Base units: pressure is
exported in pascals (kPa x 1000), temperature in degrees Celsius, times in seconds.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pipeline.assembler import RESET_REASONS
from pipeline.sinks.view import FleetView

__all__ = ["PipelineMetrics", "TankCollector"]

KPA_TO_PA = 1000.0
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_TICK_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class TankCollector(Collector):
    """Per-tank gauges straight from the latest fleet view (label ``tank_id``)."""

    def __init__(self) -> None:
        self.view = FleetView()
        self.enabled = True

    def collect(self) -> Iterator[Metric]:
        v = self.view
        if not self.enabled:
            return
        live = [(i, t) for i, t in enumerate(v.ids) if t is not None]
        rows = np.asarray([i for i, _ in live], np.intp)
        ids = [t for _, t in live]

        def gauge(
            name: str,
            doc: str,
            values: np.ndarray,
            extra: dict[str, str] | None = None,
            fam: GaugeMetricFamily | None = None,
        ) -> GaugeMetricFamily:
            labels = ["tank_id", *(extra or {})]
            g = fam or GaugeMetricFamily(name, doc, labels=labels)
            tail = list((extra or {}).values())
            for tank_id, value in zip(ids, values.tolist(), strict=True):
                if value == value:  # skip NaN: no value yet
                    g.add_metric([tank_id, *tail], value)
            return g

        if rows.size == 0:
            return
        yield gauge(
            "tank_pressure_pascals", "Last pressure reading.", v.actual[rows, 0] * KPA_TO_PA
        )
        yield gauge("tank_temperature_celsius", "Last temperature reading.", v.actual[rows, 1])
        fp = GaugeMetricFamily(
            "tank_forecast_pressure_pascals",
            "Pressure forecast h ticks ahead.",
            labels=["tank_id", "horizon_ticks"],
        )
        ft = GaugeMetricFamily(
            "tank_forecast_temperature_celsius",
            "Temperature forecast h ticks ahead.",
            labels=["tank_id", "horizon_ticks"],
        )
        for h in v.horizons_reported:  # view.horizons[:, h - 1] is tick + h
            gauge("", "", v.horizons[rows, h - 1, 0] * KPA_TO_PA, {"horizon_ticks": str(h)}, fp)
            gauge("", "", v.horizons[rows, h - 1, 1], {"horizon_ticks": str(h)}, ft)
        yield fp
        yield ft
        yield gauge(
            "tank_residual_pressure_pascals",
            "Actual minus forecast pressure.",
            v.residual[rows, 0] * KPA_TO_PA,
        )
        yield gauge(
            "tank_residual_temperature_celsius",
            "Actual minus forecast temperature.",
            v.residual[rows, 1],
        )
        yield gauge("tank_anomaly_score", "Residual anomaly score (sigmas).", v.score[rows])
        yield gauge(
            "tank_anomaly_flag",
            "1 while the tank is flagged anomalous.",
            v.flag[rows].astype(np.float64),
        )
        yield gauge(
            "tank_last_reading_timestamp_seconds",
            "Event time of the last applied reading.",
            v.last_ts[rows],
        )
        resets = CounterMetricFamily(
            "tank_state_resets",
            "LSTM state resets of the tank by reason.",
            labels=["tank_id", "reason"],
        )
        counts = v.resets[rows].tolist()
        for tank_id, row_counts in zip(ids, counts, strict=True):
            for k in range(1, len(RESET_REASONS)):
                resets.add_metric([tank_id, RESET_REASONS[k]], row_counts[k])
        yield resets


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
        self.tanks = Gauge("tankwatch_tanks", "Tanks assigned to this instance.", registry=r)
        self.checkpoints = Counter(
            "tankwatch_checkpoints",
            "Checkpoints written (state durable, then commit).",
            registry=r,
        )
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
        self.tank_collector = TankCollector()
        self.tank_collector.enabled = per_tank
        r.register(self.tank_collector)

    def set_view(self, view: FleetView) -> None:
        """Publish the latest fleet view to the per-tank collector."""
        self.tank_collector.view = view
