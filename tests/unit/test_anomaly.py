"""EWMA residual scorer: warm-up, k-consecutive flags, masking, fleet changes, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest

from models.anomaly import AnomalyScorer, AnomalyState
from tankwatch.errors import InputError


def feed(scorer: AnomalyScorer, residuals: np.ndarray, mask: np.ndarray | None = None):
    """Feed (T, N, F) residuals; return (T, N) scores and flags."""
    scores, flags = [], []
    for r in residuals:
        m = np.ones(r.shape[0], bool) if mask is None else mask
        s, f = scorer.update(r, m)
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
    with pytest.raises(InputError, match="lacks 'run'"):
        AnomalyState.from_dict({"mean": [], "var": [], "count": [], "score": []})
    with pytest.raises(InputError):
        s.reset_rows([5])
