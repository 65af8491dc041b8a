"""Metrics from a fresh registry: names, base units, per-tank series from the view."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from pipeline.sinks.metrics import PipelineMetrics
from pipeline.sinks.view import FleetView
from tankwatch.codec import REJECT_REASONS


def view() -> FleetView:
    n, h = 3, 30
    horizons = np.arange(n * h * 2, dtype=np.float32).reshape(n, h, 2)
    actual = np.asarray([[250.5, 20.25], [0, 0], [101.0, -3.5]], np.float32)
    residual = np.asarray([[0.5, np.nan], [0, 0], [-1.0, 0.25]], np.float32)
    return FleetView(
        ids=["A", None, "C"],
        actual=actual,
        forecast=actual,
        horizons=horizons,
        residual=residual,
        score=np.asarray([0.5, 0.0, 7.0]),
        flag=np.asarray([False, False, True]),
        last_ts=np.asarray([1.7e9, np.nan, 1.7e9 + 60]),
        resets=np.asarray([[0, 1, 0, 0], [0, 0, 0, 0], [0, 1, 2, 1]], np.int64),
        horizons_reported=(1, 5, 15, 30),
    )


def metrics(per_tank: bool = True) -> tuple[CollectorRegistry, PipelineMetrics]:
    reg = CollectorRegistry()
    m = PipelineMetrics(reg, "lstm-x", "numpy", 60.0, REJECT_REASONS, per_tank=per_tank)
    m.set_view(view())
    return reg, m


def test_per_tank_series_in_base_units() -> None:
    reg, _ = metrics()
    v = view()
    get = reg.get_sample_value
    assert get("tank_pressure_pascals", {"tank_id": "A"}) == pytest.approx(250500.0)
    assert get("tank_temperature_celsius", {"tank_id": "C"}) == -3.5
    for h in (1, 5, 15, 30):
        assert get("tank_forecast_pressure_pascals", {"tank_id": "C", "horizon_ticks": str(h)}) == (
            pytest.approx(float(v.horizons[2, h - 1, 0]) * 1000)
        )
        assert get(
            "tank_forecast_temperature_celsius", {"tank_id": "A", "horizon_ticks": str(h)}
        ) == (float(v.horizons[0, h - 1, 1]))
    assert get("tank_residual_pressure_pascals", {"tank_id": "C"}) == -1000.0
    assert get("tank_residual_temperature_celsius", {"tank_id": "A"}) is None  # NaN: no sample
    assert get("tank_anomaly_flag", {"tank_id": "C"}) == 1.0
    assert get("tank_anomaly_score", {"tank_id": "C"}) == 7.0
    assert get("tank_last_reading_timestamp_seconds", {"tank_id": "C"}) == 1.7e9 + 60
    assert get("tank_state_resets_total", {"tank_id": "C", "reason": "event"}) == 2.0
    assert get("tank_pressure_pascals", {"tank_id": "None"}) is None  # free rows are absent


def test_pipeline_series_exist_from_the_start() -> None:
    reg, m = metrics()
    get = reg.get_sample_value
    assert get("tankwatch_readings_rejected_total", {"reason": "bad_json"}) == 0.0
    assert get("tankwatch_readings_dropped_total", {"reason": "late"}) == 0.0
    assert get("tankwatch_ticks_closed_total", {"trigger": "catchup"}) == 0.0
    assert get("tankwatch_state_resets_total", {"reason": "gap"}) == 0.0
    assert (
        get(
            "tankwatch_model_info",
            {"model_version": "lstm-x", "engine": "numpy", "tick_interval_seconds": "60"},
        )
        == 1.0
    )
    m.latency.observe(0.2)
    assert get("tankwatch_end_to_end_latency_seconds_count") == 1.0


def test_per_tank_series_can_be_turned_off() -> None:
    reg, _ = metrics(per_tank=False)
    assert reg.get_sample_value("tank_pressure_pascals", {"tank_id": "A"}) is None
    assert reg.get_sample_value("tankwatch_readings_consumed_total") == 0.0


@pytest.mark.prometheus
def test_promtool_accepts_the_exposition() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (make sysdeps)")
    reg, _ = metrics()
    check = subprocess.run(
        [promtool, "check", "metrics"], input=generate_latest(reg), capture_output=True
    )
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()
