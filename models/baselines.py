"""Per-row online baselines beside the LSTM: persistence and damped-trend Holt.

* **Persistence**: the last reading, at every horizon.
* **Holt, damped trend** (Gardner & McKenzie): per row and feature a level ``l`` and
  a trend ``b``; with a reading ``x``::

      l' = a x + (1 - a)(l + phi b)
      b' = beta (l' - l) + (1 - beta) phi b
      forecast(h) = l' + (phi + phi^2 + ... + phi^h) b'

  After a reset the first reading sets ``l = x, b = 0``. Damping (``phi < 1``) keeps
  a long horizon from running away along a short-lived slope.

Vectorised over rows; O(1) work and a few floats per row and feature. The state is
checkpointed with the tank (``snapshot``/``restore`` as plain float64 arrays), reset
on the same boundaries as the LSTM, and never sees a masked row.

**Does Holt fit this tank?** The skill gate (:mod:`models.serving`) picks Holt for a
horizon when it beat persistence on the training holdout as a whole. On 3W wells it
never trained on, Holt won big on some runs and lost ~10 % on the others, at every
horizon alike, and each run's *one-step* errors told which kind it was (docs/model.md
"Real data"). So each row also keeps exponentially weighted mean squared one-step
errors of Holt and of persistence (``err_alpha``, bias-corrected by ``err_weight``);
:meth:`trusted` is False where, with enough evidence, Holt's is above persistence's
times ``veto_ratio``^2, and there the pipeline serves persistence instead of Holt.
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
    #: One-step error tracking (see the module docstring): weight of the newest error
    #: (~1 / the number of ticks remembered), Holt's RMSE allowed relative to
    #: persistence's, and the evidence (bias-correction weight) needed before vetoing.
    err_alpha: float = 0.01
    veto_ratio: float = 1.0
    min_weight: float = 0.5


class HoltBaseline:
    """``level``, ``trend``, ``last`` (n, F) float64; NaN level = no reading since reset."""

    def __init__(self, n_rows: int = 0, n_features: int = 2, params: HoltParams | None = None):
        self.params = params or HoltParams()
        self.nf = n_features
        self.level: F64 = np.full((n_rows, n_features), np.nan)
        self.trend: F64 = np.zeros((n_rows, n_features))
        self.last: F64 = np.full((n_rows, n_features), np.nan)
        #: EW mean squared one-step errors of Holt and persistence, and the weight of
        #: the evidence behind them (1 - (1 - err_alpha)^updates).
        self.err_holt: F64 = np.zeros((n_rows, n_features))
        self.err_pers: F64 = np.zeros((n_rows, n_features))
        self.err_weight: F64 = np.zeros((n_rows, n_features))

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
        # This reading against what each forecast for it one tick ago (rows with a
        # previous reading since their reset only).
        seen = ~first & np.isfinite(xv)
        if seen.any():
            a = p.err_alpha
            eh = np.where(seen, (xv - (lv + p.phi * tr)) ** 2, 0.0)
            ep = np.where(seen, (xv - self.last[idx]) ** 2, 0.0)
            keep = np.where(seen, 1.0 - a, 1.0)
            add = np.where(seen, a, 0.0)
            self.err_holt[idx] = keep * self.err_holt[idx] + add * eh
            self.err_pers[idx] = keep * self.err_pers[idx] + add * ep
            self.err_weight[idx] = keep * self.err_weight[idx] + add
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

    def trusted(self, rows: NDArray[np.intp]) -> NDArray[np.bool_]:
        """(n, F) False where this row's own one-step errors say Holt does not fit it:
        enough evidence (``min_weight``) and Holt's EW mean squared error above
        persistence's times ``veto_ratio``^2. True otherwise (the gate decides)."""
        p = self.params
        w = self.err_weight[rows]
        if not np.isfinite(p.veto_ratio):  # the check switched off
            return np.ones(w.shape, bool)
        worse = self.err_holt[rows] > (p.veto_ratio**2) * self.err_pers[rows]
        return np.asarray(~((w >= p.min_weight) & worse), bool)

    def or_persistence(
        self, fc: NDArray[np.floating], reading: NDArray[np.floating], rows: NDArray[np.intp]
    ) -> NDArray[np.floating]:
        """Holt's forecasts ``fc`` (H', n, F) for ``rows``, with the ``reading`` (n, F)
        -- persistence -- where :meth:`trusted` says Holt does not fit the row. What
        the pipeline serves wherever the skill gate says Holt (and ``models.evaluate``
        scores as served)."""
        fits = self.trusted(rows)
        if fits.all():
            return fc
        return np.where(fits[None], fc, np.asarray(reading, fc.dtype)[None])

    def persistence(self, horizon: int, rows: NDArray[np.intp] | None = None) -> F64:
        idx = np.arange(self.n_rows) if rows is None else np.asarray(rows, np.intp)
        return np.broadcast_to(self.last[idx][None], (horizon, idx.size, self.nf)).copy()

    def reset_rows(self, rows: NDArray[np.intp]) -> None:
        # The errors too: after a boundary (maintenance, a long gap) the tank may
        # behave otherwise, and until the evidence is back the gate decides.
        self.level[rows] = np.nan
        self.trend[rows] = 0.0
        self.last[rows] = np.nan
        self.err_holt[rows] = 0.0
        self.err_pers[rows] = 0.0
        self.err_weight[rows] = 0.0

    def add_rows(self, n: int) -> int:
        first = self.n_rows
        self.level = np.concatenate([self.level, np.full((n, self.nf), np.nan)])
        self.trend = np.concatenate([self.trend, np.zeros((n, self.nf))])
        self.last = np.concatenate([self.last, np.full((n, self.nf), np.nan)])
        zeros = np.zeros((n, self.nf))
        self.err_holt = np.concatenate([self.err_holt, zeros])
        self.err_pers = np.concatenate([self.err_pers, zeros])
        self.err_weight = np.concatenate([self.err_weight, zeros])
        return first

    def snapshot(self, rows: NDArray[np.intp]) -> dict[str, F64]:
        return {
            "holt_level": self.level[rows].copy(),
            "holt_trend": self.trend[rows].copy(),
            "holt_last": self.last[rows].copy(),
            "holt_err": self.err_holt[rows].copy(),
            "pers_err": self.err_pers[rows].copy(),
            "err_weight": self.err_weight[rows].copy(),
        }

    def restore(self, rows: NDArray[np.intp], state: dict[str, F64]) -> None:
        """From :meth:`snapshot`; missing keys (an older checkpoint) restore as reset."""
        self.reset_rows(rows)
        if "holt_level" in state:
            self.level[rows] = state["holt_level"]
            self.trend[rows] = state["holt_trend"]
            self.last[rows] = state["holt_last"]
        if "holt_err" in state:  # (older checkpoints: no evidence yet, the gate decides)
            self.err_holt[rows] = state["holt_err"]
            self.err_pers[rows] = state["pers_err"]
            self.err_weight[rows] = state["err_weight"]
