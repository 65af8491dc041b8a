"""Metrics from a fresh registry: names, base units, per-tank series from the view."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pipeline.sinks.exposition import escape_label, render_tank_families
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
        clips=np.asarray([0, 0, 4], np.int64),
        out_of_range=np.asarray([3, 0, 0], np.int64),
        outside_input_range=np.asarray([2, 0, 0], np.int64),
        calibrated=np.asarray([False, True, True]),
        holt_withheld=np.asarray([False, False, True]),
        horizons_reported=(1, 5, 15, 30),
    )


SOURCES = {"pressure_kpa": ["lstm", "lstm", "lstm", "persistence"], "temperature_c": ["lstm"] * 4}


def metrics(per_tank: bool = True) -> tuple[CollectorRegistry, PipelineMetrics]:
    reg = CollectorRegistry()
    m = PipelineMetrics(
        reg,
        "lstm-x",
        "numpy",
        60.0,
        REJECT_REASONS,
        per_tank=per_tank,
        sources=SOURCES,
        horizons=(1, 5, 15, 30),
    )
    m.set_view(view())
    return reg, m


def served_value(m: PipelineMetrics):
    """Look up a sample in what ``/metrics`` serves (name, labels) -> value or None."""
    served = _samples(m.exposition())
    return lambda name, labels=None: served.get((name, tuple(sorted((labels or {}).items()))))


def test_per_tank_series_in_base_units() -> None:
    _, m = metrics()
    v = view()
    get = served_value(m)
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
    assert get("tank_forecast_clips_total", {"tank_id": "C"}) == 4.0
    assert get("tank_readings_outside_trained_range_total", {"tank_id": "A"}) == 2.0
    # The trained value-range check (input_checks): only tanks that had such a reading.
    assert get("tank_out_of_range_readings_total", {"tank_id": "A"}) == 3.0
    assert get("tank_out_of_range_readings_total", {"tank_id": "C"}) is None
    assert get("tank_anomaly_calibrated", {"tank_id": "A"}) == 0.0
    assert get("tank_holt_withheld", {"tank_id": "C"}) == 1.0
    assert get("tank_holt_withheld", {"tank_id": "A"}) == 0.0
    src = {"feature": "pressure_kpa", "horizon_ticks": "30", "source": "persistence"}
    assert get("tankwatch_forecast_source", src) == 1.0


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
    reg, m = metrics(per_tank=False)
    assert served_value(m)("tank_pressure_pascals", {"tank_id": "A"}) is None
    assert reg.get_sample_value("tankwatch_readings_consumed_total") == 0.0


@pytest.mark.prometheus
def test_promtool_accepts_the_exposition() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (make sysdeps)")
    _, m = metrics()
    check = subprocess.run(
        [promtool, "check", "metrics"], input=m.exposition(), capture_output=True
    )
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()


def _samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text.decode())
        for s in fam.samples
        if not s.name.endswith("_created")
    }


def test_exposition_serves_what_the_registry_holds() -> None:
    reg, m = metrics()
    served = _samples(m.exposition())
    assert served == _samples(generate_latest(reg)) | _samples(render_tank_families(view()))
    key = ("tank_forecast_pressure_pascals", (("horizon_ticks", "5"), ("tank_id", "C")))
    assert served[key] == pytest.approx(float(view().horizons[2, 4, 0]) * 1000)
    assert ("tank_residual_temperature_celsius", (("tank_id", "A"),)) not in served  # NaN
    assert served[("tankwatch_open_ticks", ())] == 0.0
    assert served[("tankwatch_held_readings", ())] == 0.0


def test_exposition_renders_a_view_once() -> None:
    _, m = metrics()
    first = m.tank_series.text()
    assert m.tank_series.text() is first  # same view: cached bytes
    m.set_view(view())
    assert m.tank_series.text() is not first
    assert m.tank_series.text() == first


def test_label_values_are_escaped() -> None:
    odd = 'a"b\\c\nd'
    assert escape_label(odd) == 'a\\"b\\\\c\\nd'
    v = view()
    text = render_tank_families(
        FleetView(**{**v.__dict__, "ids": [odd, None, "C"]})  # type: ignore[arg-type]
    )
    served = _samples(text)
    assert served[("tank_pressure_pascals", (("tank_id", odd),))] == pytest.approx(250500.0)


def test_large_and_infinite_values_use_go_formatting() -> None:
    v = view()
    big = FleetView(
        **{**v.__dict__, "actual": np.asarray([[5000.0, np.inf], [0, 0], [1.5, -np.inf]])}  # type: ignore[arg-type]
    )
    text = render_tank_families(big).decode()
    assert 'tank_pressure_pascals{tank_id="A"} 5e+06\n' in text
    assert 'tank_temperature_celsius{tank_id="A"} +Inf\n' in text
    assert 'tank_temperature_celsius{tank_id="C"} -Inf\n' in text


def test_exposition_without_per_tank_series() -> None:
    _, m = metrics(per_tank=False)
    text = m.exposition().decode()
    assert "tankwatch_readings_consumed_total 0.0" in text
    assert "tank_pressure_pascals" not in text
