"""Anomaly scoring of forecast residuals: per-row EWMA statistics, vectorised.

For each row (tank) and feature, an exponentially weighted mean ``mu`` and variance
``var`` of the residual ``r = actual - forecast`` are kept. Each update:

* ``score = max_f |r - mu| / sqrt(var + eps)``, computed with the statistics *before*
  this residual is absorbed (an outlier is judged against the past, not itself);
* during the first ``max(warmup, 2)`` updates of a row the score is reported as 0
  (the statistics are not yet meaningful); until ``1/alpha`` updates the weight is
  ``1/(count+1)`` — the plain running mean and variance — so the start is unbiased;
* a residual that exceeds the threshold moves the mean by at most
  ``alpha·threshold·sigma`` and leaves the variance alone, so a long anomaly is not
  learned as normal within a few ticks (a plain EWMA would inflate sigma at once),
  while a lasting level shift is still absorbed, slowly;
* ``flag`` is True once the score exceeded ``threshold`` for ``consecutive``
  updates in a row.

Residual units: any, as long as a row always gets the same (the score is
standardised per row); the pipeline passes scaled units (residual / scaler std).
Masked rows are untouched and report their previous score and flag.

Checkpointing: :meth:`AnomalyScorer.snapshot` returns an :class:`AnomalyState` of
plain float64 arrays (``mean``, ``var`` (n, F); ``count``, ``run``, ``score`` (n,));
``AnomalyState.to_dict`` / ``from_dict`` turn it into ``{name: ndarray}`` for storage.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tankwatch.errors import InputError

__all__ = ["AnomalyScorer", "AnomalyState"]

F64 = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class AnomalyState:
    """Per-row scorer state, plain float64 arrays (n rows, F features).

    ``mean``, ``var``: (n, F) EWMA of the residual and of its squared deviation.
    ``count``: (n,) updates absorbed since the last reset (warm-up counter).
    ``run``: (n,) consecutive updates with score > threshold.
    ``score``: (n,) the last reported score.
    """

    mean: F64
    var: F64
    count: F64
    run: F64
    score: F64

    def to_dict(self) -> dict[str, F64]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AnomalyState:
        try:
            return cls(**{f.name: np.asarray(data[f.name], np.float64) for f in fields(cls)})
        except KeyError as exc:
            raise InputError(f"anomaly state lacks {exc.args[0]!r}") from None


class AnomalyScorer:
    """Vectorised EWMA residual scorer over ``n_rows`` independent rows.

    ``alpha``: EWMA weight of a new residual (0 < alpha <= 1; ~1/alpha ticks memory).
    ``threshold``: score (in sigmas) above which an update counts as an exceedance.
    ``consecutive``: exceedances in a row before the flag is raised.
    ``warmup``: updates after a reset during which the score is 0.
    """

    def __init__(
        self,
        n_rows: int = 0,
        alpha: float = 0.02,
        threshold: float = 4.0,
        consecutive: int = 3,
        warmup: int = 30,
        n_features: int = 2,
        eps: float = 1e-6,
    ) -> None:
        if not 0 < alpha <= 1:
            raise InputError(f"alpha must be in (0, 1], got {alpha}")
        if threshold <= 0 or consecutive < 1 or warmup < 0:
            raise InputError("threshold must be > 0, consecutive >= 1, warmup >= 0")
        self.alpha = float(alpha)
        self.threshold = float(threshold)
        self.consecutive = int(consecutive)
        self.warmup = int(warmup)
        self.eps = float(eps)
        self._nf = int(n_features)
        self._mean = np.zeros((0, self._nf))
        self._var = np.zeros((0, self._nf))
        self._count = np.zeros(0)
        self._run = np.zeros(0)
        self._score = np.zeros(0)
        if n_rows:
            self.add_rows(n_rows)

    @property
    def n_rows(self) -> int:
        return int(self._count.shape[0])

    @property
    def flags(self) -> NDArray[np.bool_]:
        """(N,) current flag of every row."""
        return self._run >= self.consecutive

    def _rows(self, rows: NDArray[Any] | list[int]) -> NDArray[np.intp]:
        idx = np.asarray(rows, dtype=np.intp).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self.n_rows):
            raise InputError(f"row index out of range [0, {self.n_rows}): {idx.tolist()[:10]}")
        return idx

    def update(
        self, residual: NDArray[Any], mask: NDArray[Any]
    ) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
        """Absorb one tick of residuals (N, F) for rows where ``mask`` (N,) is True.

        Returns copies of (score (N,), flag (N,)). Raises InputError (state unchanged)
        on a wrong shape or a NaN/inf residual in a masked-in row.
        """
        r_all = np.asarray(residual, dtype=np.float64)
        m = np.asarray(mask, dtype=bool)
        if r_all.shape != (self.n_rows, self._nf) or m.shape != (self.n_rows,):
            raise InputError(
                f"residual must be ({self.n_rows}, {self._nf}) and mask ({self.n_rows},), "
                f"got {r_all.shape} and {m.shape}"
            )
        idx = np.flatnonzero(m)
        if idx.size:
            r = r_all[idx]
            if not np.isfinite(r).all():
                raise InputError("NaN or inf residual in an unmasked row")
            mu = self._mean[idx]
            var = self._var[idx]
            sigma = np.sqrt(var + self.eps)
            dev = r - mu
            score = np.max(np.abs(dev) / sigma, axis=1)
            count = self._count[idx]
            # Fewer than 2 residuals give no spread at all: never score those.
            warm = count >= max(self.warmup, 2)
            score = np.where(warm, score, 0.0)
            exceed = warm & (score > self.threshold)
            limit = self.threshold * sigma
            clipped = np.where(exceed[:, None], np.clip(dev, -limit, limit), dev)
            # Weight max(alpha, 1/(count+1)): the plain running mean/variance until the
            # EWMA has seen ~1/alpha residuals, so the start is not biased towards 0.
            a = np.maximum(self.alpha, 1.0 / (count + 1.0))[:, None]
            new_mu = mu + a * clipped
            new_var = np.where(exceed[:, None], var, (1 - a) * (var + a * clipped**2))
            self._mean[idx] = new_mu
            self._var[idx] = new_var
            self._count[idx] = count + 1
            self._run[idx] = np.where(score > self.threshold, self._run[idx] + 1, 0.0)
            self._score[idx] = score
        return self._score.copy(), self.flags

    def reset_rows(self, rows: NDArray[Any] | list[int]) -> None:
        """Forget the statistics of these rows (e.g. on a sequence boundary)."""
        idx = self._rows(rows)
        self._mean[idx] = 0.0
        self._var[idx] = 0.0
        self._count[idx] = 0.0
        self._run[idx] = 0.0
        self._score[idx] = 0.0

    def add_rows(self, n: int) -> int:
        """Append n fresh rows; returns the index of the first."""
        if n < 0:
            raise InputError(f"cannot add {n} rows")
        first = self.n_rows
        self._mean = np.concatenate([self._mean, np.zeros((n, self._nf))])
        self._var = np.concatenate([self._var, np.zeros((n, self._nf))])
        self._count = np.concatenate([self._count, np.zeros(n)])
        self._run = np.concatenate([self._run, np.zeros(n)])
        self._score = np.concatenate([self._score, np.zeros(n)])
        return first

    def remove_rows(self, rows: NDArray[Any] | list[int]) -> None:
        """Delete rows; later rows move up, keeping their order."""
        idx = np.unique(self._rows(rows))
        self._mean = np.delete(self._mean, idx, axis=0)
        self._var = np.delete(self._var, idx, axis=0)
        self._count = np.delete(self._count, idx)
        self._run = np.delete(self._run, idx)
        self._score = np.delete(self._score, idx)

    def snapshot(self, rows: NDArray[Any] | list[int]) -> AnomalyState:
        """Copies of the state of these rows."""
        idx = self._rows(rows)
        return AnomalyState(
            mean=self._mean[idx],
            var=self._var[idx],
            count=self._count[idx],
            run=self._run[idx],
            score=self._score[idx],
        )

    def restore(self, rows: NDArray[Any] | list[int], state: AnomalyState) -> None:
        """Overwrite these rows from a snapshot of the same number of rows."""
        idx = self._rows(rows)
        n = idx.size
        if state.mean.shape != (n, self._nf) or state.var.shape != (n, self._nf):
            raise InputError(f"anomaly state mean/var must be ({n}, {self._nf})")
        if not state.count.shape == state.run.shape == state.score.shape == (n,):
            raise InputError(f"anomaly state count/run/score must be ({n},)")
        self._mean[idx] = state.mean
        self._var[idx] = state.var
        self._count[idx] = state.count
        self._run[idx] = state.run
        self._score[idx] = state.score
