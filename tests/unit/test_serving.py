"""Baselines, the skill gate, forecast bounds and out-of-range marking."""

from __future__ import annotations

import numpy as np

from models.anomaly import AnomalyScorer
from models.artifact import load_artifact, load_forecaster
from models.baselines import HoltBaseline, HoltParams
from models.bounds import Bounds
from models.serving import SOURCES, ServingPlan, choose, serve
from pipeline.config import default_model_dir
from pipeline.forecast_step import ForecastStep
from tests.unit.test_checkpoint import tick


def test_holt_follows_a_trend_damped_and_resets_per_row() -> None:
    holt = HoltBaseline(2, 1, HoltParams(alpha=0.9, beta=0.5, phi=0.9))
    for t in range(50):
        holt.update(np.array([[2.0 * t], [5.0]]), np.array([True, True]))
    fc = holt.forecast(30)
    assert 98.0 < fc[0, 0, 0] < 100.5  # next value of the line 2t is 100
    assert fc[29, 0, 0] < 98 + 2 * 30  # the trend is damped, not extrapolated forever
    np.testing.assert_allclose(fc[:, 1, 0], 5.0)  # a constant row stays constant
    holt.reset_rows(np.array([0]))
    assert np.isnan(holt.forecast(1)[0, 0, 0])
    state = holt.snapshot(np.array([1]))
    other = HoltBaseline(1, 1)
    other.restore(np.array([0]), state)
    np.testing.assert_array_equal(other.forecast(5)[:, 0], holt.forecast(5)[:, 1])


def test_gate_chooses_the_smallest_holdout_error_and_ties_go_to_persistence() -> None:
    rmse = np.array([[[0.5, 2.0, 0.95]], [[1.0, 1.0, 1.0]], [[0.7, 1.0, 0.94]]])  # (3, 1, F)
    codes = choose(rmse)
    # A 5-6 % win is within the margin: persistence stays.
    assert [SOURCES[c] for c in codes[0]] == ["lstm", "persistence", "persistence"]
    lstm, pers, holt = (np.full((2, 3, 2), v, np.float32) for v in (1.0, 2.0, 3.0))
    out = serve(np.array([[0, 2]]), lstm, pers, holt)
    assert (out[..., 0] == 1.0).all() and (out[..., 1] == 3.0).all()


def test_bounds_keep_forecasts_physical_and_count_clipped_rows() -> None:
    bounds = Bounds(
        np.array([[1.0, 1.0], [2.0, 2.0]], np.float32),
        np.array([0.0, -273.15], np.float32),
        np.array([np.inf, np.inf], np.float32),
    )
    reading = np.array([[0.5, 20.0], [50.0, 20.0]], np.float32)
    fc = np.array([[[-64.0, 20.5], [50.5, 20.0]], [[-3.0, 19.0], [51.0, 30.0]]], np.float32)
    out, clips = bounds.clip(fc, reading)
    assert (out[..., 0] >= 0).all()  # no negative absolute pressure
    assert out[1, 1, 1] == 22.0  # 2 ticks ahead moves at most max_change[1]
    assert clips.tolist() == [1, 1]


def test_forecast_step_serves_clips_and_withholds_flags_out_of_range() -> None:
    art = load_artifact(default_model_dir())
    engine = load_forecaster(default_model_dir(), "numpy", 0)
    # Serve persistence everywhere for pressure, Holt for temperature; tight bounds;
    # a trained range that reading row 1 is far outside.
    codes = np.tile(np.array([[1, 2]]), (30, 1))
    bounds = Bounds(
        np.full((30, 2), 0.5, np.float32),
        np.array([0.0, -273.15], np.float32),
        np.array([np.inf, np.inf], np.float32),
    )
    rng = (np.array([90.0, 0.0], np.float32), np.array([110.0, 30.0], np.float32))
    plan = ServingPlan(codes, bounds, rng)
    step = ForecastStep(
        engine,
        AnomalyScorer(0, warmup=2, threshold=0.01, consecutive=1),
        30,
        (1, 30),
        art.scaler.std,
        plan,
    )
    step.ensure_capacity(2)
    out = None
    for t in range(40):
        x = np.array([[100.0 + 0.1 * t, 10.0 + 0.3 * t], [500.0, 80.0]], np.float32)
        out = step.apply(tick(t, [0, 1], x, [t - 1, t - 1]))
    assert out is not None
    np.testing.assert_allclose(out.forecast[:, 0], [100.0 + 3.9, 500.0])  # persistence
    # Temperature: Holt on a +0.3/tick line, clipped to reading +- 0.5.
    assert (np.abs(out.horizons[:, :, 1] - np.array([[21.7], [80.0]])) <= 0.5 + 1e-4).all()
    assert step.fleet.clips[0] > 0  # Holt's 30-tick temperature runs past 0.5
    assert out.calibrated.tolist() == [True, False]
    assert not out.flag[1] and step.fleet.out_of_range.tolist()[:2] == [0, 40]
