"""Anomaly scorer: residual EWMA (warm-up, k-consecutive flags, masking), the stuck-channel
and drift detectors on synthetic episodes of their kind, fleet changes, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest

from models.anomaly import AnomalyScorer, AnomalyState
from tankwatch.errors import InputError


def feed(
    scorer: AnomalyScorer,
    residuals: np.ndarray,
    mask: np.ndarray | None = None,
    actual: np.ndarray | None = None,
):
    """Feed (T, N, F) residuals (and readings); return (T, N) scores and flags."""
    scores, flags = [], []
    for t, r in enumerate(residuals):
        m = np.ones(r.shape[0], bool) if mask is None else mask
        s, f = scorer.update(r, m, actual=None if actual is None else actual[t])
        scores.append(s)
        flags.append(f)
    return np.array(scores), np.array(flags)


def noise(t: int, n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 1.0, (t, n, 2))


def test_flag_needs_k_consecutive_exceedances() -> None:
    scorer = AnomalyScorer(2, alpha=0.05, threshold=4.0, consecutive=3, warmup=20)
    feed(scorer, noise(200, 2))
    spikes = np.zeros((6, 2, 2))
    spikes[:, 0, 1] = 50.0  # row 0: a sustained anomaly on temperature
    spikes[0, 1, 0] = 50.0  # row 1: a single spike, then normal
    scores, flags = feed(scorer, spikes)
    assert (scores[:, 0] > 4.0).all()
    assert flags[:, 0].tolist() == [False, False, True, True, True, True]
    assert scores[0, 1] > 4.0 and not flags[:, 1].any()


def test_warmup_reports_zero_and_reset_restarts_it() -> None:
    scorer = AnomalyScorer(1, warmup=10, consecutive=1)
    r = noise(10, 1)
    r[5] = 100.0
    scores, flags = feed(scorer, r)
    assert not scores.any() and not flags.any()
    feed(scorer, noise(100, 1, seed=1))
    scorer.reset_rows([0])
    scores, _ = feed(scorer, noise(10, 1, seed=2) + 100.0)
    assert not scores.any()


def test_clipped_update_keeps_a_long_anomaly_flagged() -> None:
    scorer = AnomalyScorer(1, alpha=0.05, threshold=4.0, consecutive=3, warmup=20)
    feed(scorer, noise(300, 1))
    _, flags = feed(scorer, np.full((60, 1, 2), 30.0))
    assert flags[2:].all()  # a one-hour shift is still anomalous at its end


def test_masked_rows_keep_state_and_report_previous_values() -> None:
    scorer = AnomalyScorer(2, warmup=0, consecutive=1)
    feed(scorer, noise(50, 2))
    before = scorer.snapshot([0, 1])
    r = np.array([[99.0, 99.0], [np.nan, np.nan]])  # NaN is fine where masked out
    s, f = scorer.update(r, np.array([True, False]))
    after = scorer.snapshot([0, 1])
    assert s[1] == before.score[1] and not f[1]
    for name, value in before.to_dict().items():
        np.testing.assert_array_equal(after.to_dict()[name][1], value[1])
    assert f[0]


def test_nan_in_unmasked_row_raises_and_changes_nothing() -> None:
    scorer = AnomalyScorer(2)
    feed(scorer, noise(5, 2))
    before = scorer.snapshot([0, 1])
    with pytest.raises(InputError):
        scorer.update(np.array([[0.0, 0.0], [np.inf, 0.0]]), np.ones(2, bool))
    with pytest.raises(InputError):
        scorer.update(np.zeros((3, 2)), np.ones(3, bool))
    after = scorer.snapshot([0, 1])
    for name, value in before.to_dict().items():
        np.testing.assert_array_equal(after.to_dict()[name], value)


def test_fleet_changes_and_snapshot_restore_reproduce_an_undisturbed_run() -> None:
    r = noise(120, 3, seed=5)
    r[80:90, 2] += 20.0
    ref = AnomalyScorer(3, warmup=10)
    ref_scores, ref_flags = feed(ref, r)

    s = AnomalyScorer(3, warmup=10)
    feed(s, r[:40])
    parked = AnomalyState.from_dict(s.snapshot([1]).to_dict())  # via the storage form
    s.remove_rows([1])  # rows: tank0, tank2
    assert s.add_rows(1) == 2  # rows: tank0, tank2, tank1
    s.restore([2], parked)
    order = [0, 2, 1]
    scores, flags = feed(s, r[40:, order])
    np.testing.assert_allclose(scores, ref_scores[40:, order])
    np.testing.assert_array_equal(flags, ref_flags[40:, order])
    assert ref_flags[:, 2].any()


def test_bad_parameters_and_states_are_input_errors() -> None:
    with pytest.raises(InputError):
        AnomalyScorer(1, alpha=0.0)
    s = AnomalyScorer(2)
    with pytest.raises(InputError):
        s.restore([0], s.snapshot([0, 1]))
    with pytest.raises(InputError):
        s.update(np.zeros((2, 2)), np.ones(2, bool), actual=np.zeros((2, 3)))
    with pytest.raises(InputError):
        s.update(np.zeros((2, 2)), np.ones(2, bool), actual=np.array([[0.0, np.nan], [0, 0]]))
    with pytest.raises(InputError):
        AnomalyScorer(1, stuck_p_min=0.5, stuck_prior=0.1)
    with pytest.raises(InputError, match="lacks 'run'"):
        AnomalyState.from_dict({"mean": [], "var": [], "count": [], "score": []})
    with pytest.raises(InputError):
        s.reset_rows([5])


def readings(
    t: int, n: int, step: float = 1e-3, noise: float = 5e-3, seed: int = 0, wave: float = 1.0
) -> np.ndarray:
    """(T, N, 2) smooth signal + noise rounded to ``step`` (like 3-decimal sensor data;
    with the defaults a reading repeats the previous one ~5-10 % of the time)."""
    rng = np.random.default_rng(seed)
    base = wave * np.sin(np.arange(t) / 200.0)[:, None, None] * np.ones((1, n, 2))
    return np.round((base + rng.normal(0, noise, (t, n, 2))) / step) * step


def test_stuck_channel_flags_a_frozen_reading_and_never_learns_it() -> None:
    x = readings(1600, 2)
    x[1000:1200, 0, 1] = x[1000, 0, 1]  # row 0: temperature frozen for 200 ticks
    scorer = AnomalyScorer(2, stuck_min=10, drift_limit=np.inf)
    scores, flags = feed(scorer, np.zeros((1600, 2, 2)), actual=x)
    assert not flags[:1000].any() and not flags[:, 1].any()  # normal noise: quiet
    first = 1000 + int(np.argmax(flags[1000:, 0]))
    assert 1000 + 10 <= first <= 1000 + 30  # within stuck_min + a few updates
    assert flags[first:1200, 0].all()  # stays flagged to the end of the episode
    assert np.all(np.diff(scores[first:1200, 0]) > 0)  # the longer, the worse
    assert not flags[1201:, 0].any()  # the channel moves again: quiet


def test_coarse_sensor_learns_its_repeat_rate_and_stays_quiet() -> None:
    # Resolution 2 noise sigmas: half the readings repeat; runs of 10-25 are normal here
    # (a flat signal, so only the resolution makes readings repeat).
    x = readings(6000, 1, step=0.02, noise=0.01, wave=0.0)
    same = np.diff(x[:, 0, 0]) == 0
    assert same.mean() > 0.5
    _, flags = feed(AnomalyScorer(1, drift_limit=np.inf), np.zeros((6000, 1, 2)), actual=x)
    assert not flags[2000:].any()  # after ~1/stuck_alpha readings p0 has adapted


def test_drift_cusum_flags_a_persistent_bias_not_short_transients() -> None:
    rng = np.random.default_rng(3)
    r = rng.normal(0, 1.0, (2600, 3, 2))
    r[1500:, 0, 0] += 1.0  # row 0: the forecaster keeps missing by one sigma
    r[1500::100, 1, 1] += 30.0  # row 1: two-tick transients every 100 ticks
    r[1501::100, 1, 1] += 30.0
    scorer = AnomalyScorer(3, threshold=5.0, consecutive=3, drift_limit=60.0)
    _, flags = feed(scorer, r)
    assert not flags[:1500].any()  # plain noise (row 2 throughout): quiet
    assert not flags[:, 1:].any()
    first = 1500 + int(np.argmax(flags[1500:, 0]))
    assert flags[1500:, 0].any() and first < 1800
    assert flags[first:, 0].all()  # a lasting bias stays flagged


def test_checkpoint_round_trip_continues_every_detector_identically() -> None:
    n, t = 3, 1400
    x = readings(t, n, seed=4)
    x[700:800, 0, 0] = x[700, 0, 0]  # stuck episode across the snapshot
    r = np.random.default_rng(5).normal(0, 1.0, (t, n, 2))
    r[600:, 2, 1] += 1.5  # drift episode across the snapshot
    mask = np.ones(n, bool)
    ref = AnomalyScorer(n, drift_limit=60.0)
    ref_scores, ref_flags = feed(ref, r, mask, x)

    s = AnomalyScorer(n, drift_limit=60.0)
    feed(s, r[:750], mask, x[:750])
    stored = {k: np.array(v, copy=True) for k, v in s.snapshot(list(range(n))).to_dict().items()}
    fresh = AnomalyScorer(n, drift_limit=60.0)  # a new process after a crash
    fresh.restore(list(range(n)), AnomalyState.from_dict(stored))
    scores, flags = feed(fresh, r[750:], mask, x[750:])
    np.testing.assert_array_equal(scores, ref_scores[750:])
    np.testing.assert_array_equal(flags, ref_flags[750:])
    assert ref_flags[750:800, 0].all() and ref_flags[-1, 2]  # both episodes were live


def test_state_of_the_residual_only_scorer_restores_with_fresh_new_detectors() -> None:
    old = {
        "mean": np.zeros((1, 2)),
        "var": np.ones((1, 2)),
        "count": np.full(1, 100.0),
        "run": np.zeros(1),
        "score": np.zeros(1),
    }
    state = AnomalyState.from_dict(old)
    s = AnomalyScorer(1)
    s.restore([0], state)
    assert np.isnan(state.last).all() and not state.rep.any() and not state.cpos.any()
    np.testing.assert_array_equal(state.p0, s.stuck_prior)
    score, flag = s.update(np.zeros((1, 2)), np.ones(1, bool), actual=np.zeros((1, 2)))
    assert score[0] == 0.0 and not flag[0]
