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


def test_clip_and_serve_match_the_plain_broadcast_formulas() -> None:
    """clip and serve run on flat (H', n F) rows for speed; they must give what the
    plain (H', n, F) broadcasts give, NaN and inf forecasts, NaN readings, float64
    Holt inputs, horizons past the coded ones and a later first horizon included."""
    rng = np.random.default_rng(3)
    h, n = 30, 37
    bounds = Bounds(
        np.sort(rng.uniform(0.1, 3.0, (h, 2)), axis=0).astype(np.float32),
        np.array([0.0, -273.15], np.float32),
        np.array([np.inf, 60.0], np.float32),
    )
    reading = rng.normal([1.0, 55.0], [2.0, 5.0], (n, 2)).astype(np.float32)
    reading[4, 0] = np.nan
    for first_h, count in [(1, 1), (2, 29), (5, 33)]:
        spread = np.where(np.arange(n) < n // 2, 0.01, 3.0)[None, :, None]  # quiet, wild
        fc = (reading[None] + spread * rng.normal(0, 1, (count, n, 2))).astype(np.float32)
        fc[0, 1, 0], fc[-1, 2, 1], fc[-1, 3, 0] = np.nan, np.inf, -np.inf
        out, clips = bounds.clip(fc, reading, first_h)
        hi_idx = np.minimum(np.arange(first_h - 1, first_h - 1 + count), h - 1)
        span = bounds.max_change[hi_idx][:, None, :]
        lo = np.maximum(reading[None] - span, bounds.lower)
        hi = np.minimum(reading[None] + span, bounds.upper)
        want = np.clip(fc, lo, hi).astype(np.float32)
        moved = np.isfinite(fc) & (want != fc)
        np.testing.assert_array_equal(out, want)
        assert out.dtype == np.float32
        assert clips.tolist() == moved.any(axis=0).any(axis=1).astype(int).tolist()
        assert 0 < clips.sum() < n  # the case holds clipped and untouched rows

        codes = rng.integers(0, 3, (h, 2))
        pers = np.broadcast_to(reading[None], fc.shape)
        holt = rng.normal(0, 1, fc.shape)  # float64, as HoltBaseline.forecast returns
        c = codes[hi_idx][:, None, :]
        plain = np.asarray(np.where(c == 0, fc, np.where(c == 1, pers, holt)), np.float32)
        np.testing.assert_array_equal(serve(codes, fc, pers, holt, first_h), plain)


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


def test_holt_is_trusted_per_row_by_its_own_one_step_errors() -> None:
    """A steady ramp: Holt's one-step errors are far below persistence's, trusted. A
    sawtooth (6 ticks up, 6 down, a little noise): Holt's trend keeps going past each
    turn and does ~11 % worse than persistence (1.115 for every seed tried), so once
    there is enough evidence it is not trusted."""
    rng = np.random.default_rng(3)
    holt = HoltBaseline(2, 1)
    trusted = []
    saw = 100.0
    for t in range(400):
        saw += (1.0 if (t // 6) % 2 == 0 else -1.0) + rng.normal(0, 0.1)
        holt.update(np.array([[0.5 * t], [saw]]), np.array([True, True]))
        trusted.append(holt.trusted(np.array([0, 1]))[:, 0].tolist())
    assert holt.err_holt[0, 0] < 0.2 * holt.err_pers[0, 0]
    assert holt.err_holt[1, 0] > holt.err_pers[1, 0]
    # Both trusted until the evidence is in (min_weight 0.5: ~69 updates at 0.01).
    assert trusted[50] == [True, True] and trusted[-1] == [True, False]
    # Checkpointed and restored with the row; a reset forgets the evidence; a state
    # from before the check (no error keys) restores as no evidence.
    other = HoltBaseline(1, 1)
    other.restore(np.array([0]), holt.snapshot(np.array([1])))
    assert other.trusted(np.array([0])).tolist() == [[False]]
    old = {k: v for k, v in holt.snapshot(np.array([1])).items() if k.startswith("holt_")}
    old.pop("holt_err")
    other.restore(np.array([0]), old)
    assert other.trusted(np.array([0])).tolist() == [[True]] and other.err_weight[0, 0] == 0
    holt.reset_rows(np.array([1]))
    assert holt.trusted(np.array([1])).tolist() == [[True]]


def test_where_holt_does_not_fit_a_tank_it_is_served_persistence() -> None:
    art = load_artifact(default_model_dir())
    engine = load_forecaster(default_model_dir(), "numpy", 0)
    codes = np.tile(np.array([[0, 0]]), (30, 1))
    codes[1:] = 2  # Holt beyond the next step, for both features
    step = ForecastStep(
        engine, AnomalyScorer(0, warmup=2), 30, (1, 5, 30), art.scaler.std, ServingPlan(codes)
    )
    step.ensure_capacity(2)
    out = None
    for t in range(120):
        x = np.array([[100.0 + 0.2 * t, 10.0 + 0.1 * t]] * 2, np.float32)
        if t > 40:  # after that, Holt's own errors on row 1 say it does not fit
            step.holt.err_holt[1] = 4.0 * step.holt.err_pers[1] + 1.0
        out = step.apply(tick(t, [0, 1], x, [t - 1, t - 1]))
    assert out is not None
    x = out.tick.x
    # Row 0 follows its trend (Holt), row 1 is served its reading (persistence).
    assert (out.horizons[0, 1:, 0] > x[0, 0] + 0.5).all()
    np.testing.assert_array_equal(out.horizons[1, 1:], np.repeat(x[1:2], 2, axis=0))
    assert step.holt_withheld(2).tolist() == [False, True]  # visible: tank_holt_withheld
