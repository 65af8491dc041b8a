"""The unsupervised reference detector: an isolation forest on rolling windows.

As in the 3W paper's anomaly benchmark (one model per instance, trained on the first
part of its normal period; window statistics as features): per tank, trailing windows
of ``window`` readings give mean, std, min and max of every feature, standardised with
the calibration windows' mean and std; a scikit-learn ``IsolationForest`` is fit on the
calibration windows and a reading is abnormal when its window's anomaly score exceeds
the calibration scores' ``quantile`` (the same false-alarm budget our detector gets).
Causal: a reading's window ends at that reading.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

__all__ = [
    "calibrated_flags",
    "consecutive_flags",
    "isolation_forest_scores",
    "window_features",
]


def window_features(values: NDArray[np.floating[Any]], window: int) -> NDArray[np.float64]:
    """(K, 4F) trailing-window mean, std, min, max of one tank's readings (K, F);
    NaN rows (no reading) are skipped by pandas' rolling (min_periods = window // 2)."""
    frame = pd.DataFrame(np.asarray(values, np.float64))
    roll = frame.rolling(window, min_periods=max(2, window // 2))
    feats = pd.concat([roll.mean(), roll.std(), roll.min(), roll.max()], axis=1)
    return feats.to_numpy(np.float64)


def isolation_forest_scores(
    values: NDArray[np.floating[Any]],
    calibration: NDArray[np.bool_],
    window: int = 60,
    seed: int = 0,
) -> NDArray[np.float64]:
    """(K,) anomaly score of one tank (higher = more abnormal; NaN where no window),
    the forest fit on the windows ending at ``calibration`` (K,) readings."""
    from sklearn.ensemble import IsolationForest

    feats = window_features(values, window)
    ok = np.isfinite(feats).all(axis=1)
    cal = ok & calibration
    out = np.full(feats.shape[0], np.nan)
    if cal.sum() < 10:
        return out
    mu = feats[cal].mean(axis=0)
    sd = feats[cal].std(axis=0)
    sd = np.where(sd > 1e-12, sd, 1.0)
    z = (feats - mu) / sd
    forest = IsolationForest(n_estimators=100, random_state=seed).fit(z[cal])
    out[ok] = -forest.score_samples(z[ok])
    return out


def consecutive_flags(
    exceed: NDArray[np.bool_], present: NDArray[np.bool_], n: int
) -> NDArray[np.bool_]:
    """(K, N) True where a tank's last n readings (readings, not ticks) all exceeded."""
    out = np.zeros_like(exceed)
    run = np.zeros(exceed.shape[1])
    for k in range(exceed.shape[0]):
        p = present[k]
        run = np.where(p, np.where(exceed[k], run + 1, 0), run)
        out[k] = p & (run >= n)
    return out


def calibrated_flags(
    scores: NDArray[np.floating[Any]],
    present: NDArray[np.bool_],
    calibration: NDArray[np.bool_],
    quantile: float,
    consecutive: int = 3,
    margin: float = 1.0,
) -> NDArray[np.bool_]:
    """Flags (K, N) from scores (K, N) with a threshold per tank: ``margin`` x the
    ``quantile`` of that tank's scores over its ``calibration`` (K, N) readings
    (normal data: the quantile sets the false-alarm budget); a flag after
    ``consecutive`` exceedances. A tank without calibration readings never flags."""
    exceed = np.zeros(scores.shape, bool)
    for j in range(scores.shape[1]):
        cal = calibration[:, j] & np.isfinite(scores[:, j])
        thr = margin * np.quantile(scores[cal, j], quantile) if cal.any() else np.inf
        exceed[:, j] = np.nan_to_num(scores[:, j], nan=-np.inf) > thr
    return consecutive_flags(exceed, present, consecutive)
