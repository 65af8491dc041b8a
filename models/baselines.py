"""Per-row online baselines beside the LSTM: persistence and damped-trend Holt.

* **Persistence**: the last reading, at every horizon.
* **Holt, damped trend** (Gardner & McKenzie): per row and feature a level ``l`` and
  a trend ``b``; with a reading ``x``::

      l' = a x + (1 - a)(l + phi b)
      b' = beta (l' - l) + (1 - beta) phi b
      forecast(h) = l' + (phi + phi^2 + ... + phi^h) b'

  After a reset the first reading sets ``l = x, b = 0``. Damping (``phi < 1``) keeps
  a long horizon from running away along a short-lived slope.

Vectorised over rows; O(1) work and three floats per row and feature. The state is
checkpointed with the tank (``snapshot``/``restore`` as plain float64 arrays), reset
on the same boundaries as the LSTM, and never sees a masked row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = ["HoltBaseline", "HoltParams"]

F64 = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class HoltParams:
    """Defaults picked among six settings by the bundled history's holdout RMSE at
    h = 1 and 30 (docs/model.md); near-random-walk data wants a large ``alpha``."""

    alpha: float = 0.95
    beta: float = 0.05
    phi: float = 0.98


class HoltBaseline:
    """``level``, ``trend``, ``last`` (n, F) float64; NaN level = no reading since reset."""

    def __init__(self, n_rows: int = 0, n_features: int = 2, params: HoltParams | None = None):
        self.params = params or HoltParams()
        self.nf = n_features
        self.level: F64 = np.full((n_rows, n_features), np.nan)
        self.trend: F64 = np.zeros((n_rows, n_features))
        self.last: F64 = np.full((n_rows, n_features), np.nan)

    @property
    def n_rows(self) -> int:
        return int(self.level.shape[0])

    def update(self, x: NDArray[np.floating], mask: NDArray[np.bool_]) -> None:
        """Absorb readings x (N, F) of the rows where mask (N,) is True."""
        idx = np.flatnonzero(mask)
        if idx.size == 0:
            return
        p = self.params
        xv = np.asarray(x, np.float64)[idx]
        lv, tr = self.level[idx], self.trend[idx]
        first = np.isnan(lv)
        new_l = p.alpha * xv + (1 - p.alpha) * (lv + p.phi * tr)
        new_b = p.beta * (new_l - lv) + (1 - p.beta) * p.phi * tr
        self.level[idx] = np.where(first, xv, new_l)
        self.trend[idx] = np.where(first, 0.0, new_b)
        self.last[idx] = xv

    def forecast(self, horizon: int, rows: NDArray[np.intp] | None = None) -> F64:
        """(horizon, n, F) Holt forecasts for t+1..t+horizon (NaN for rows never updated)."""
        idx = np.arange(self.n_rows) if rows is None else np.asarray(rows, np.intp)
        phi = self.params.phi
        damp = np.cumsum(phi ** np.arange(1, horizon + 1))  # phi + ... + phi^h
        out: F64 = self.level[idx][None] + damp[:, None, None] * self.trend[idx][None]
        return out

    def persistence(self, horizon: int, rows: NDArray[np.intp] | None = None) -> F64:
        idx = np.arange(self.n_rows) if rows is None else np.asarray(rows, np.intp)
        return np.broadcast_to(self.last[idx][None], (horizon, idx.size, self.nf)).copy()

    def reset_rows(self, rows: NDArray[np.intp]) -> None:
        self.level[rows] = np.nan
        self.trend[rows] = 0.0
        self.last[rows] = np.nan

    def add_rows(self, n: int) -> int:
        first = self.n_rows
        self.level = np.concatenate([self.level, np.full((n, self.nf), np.nan)])
        self.trend = np.concatenate([self.trend, np.zeros((n, self.nf))])
        self.last = np.concatenate([self.last, np.full((n, self.nf), np.nan)])
        return first

    def snapshot(self, rows: NDArray[np.intp]) -> dict[str, F64]:
        return {
            "holt_level": self.level[rows].copy(),
            "holt_trend": self.trend[rows].copy(),
            "holt_last": self.last[rows].copy(),
        }

    def restore(self, rows: NDArray[np.intp], state: dict[str, F64]) -> None:
        """From :meth:`snapshot`; missing keys (an older checkpoint) restore as reset."""
        self.reset_rows(rows)
        if "holt_level" in state:
            self.level[rows] = state["holt_level"]
            self.trend[rows] = state["holt_trend"]
            self.last[rows] = state["holt_last"]
