"""Per-row (per-tank) level and scale: what makes one fleet model level-invariant.

The network never sees a reading's absolute value. Each row carries an exponentially
weighted **level** ``L`` and a robust **scale** ``S`` (an EWMA of the absolute deviation
from the level) per feature; the network input is ``z = (x - L) / S`` and its head
predicts the next change in units of ``S``. A tank at 85 °C and one at 10 °C, or an
absolute and a gauge pressure sensor, look alike to it. The update, per row with a
reading ``x`` (all float32, elementwise per feature)::

    first reading after a reset (L is NaN):  L' = x,  S' = S (= scale0)
    otherwise:  S' = max((1 - a_s) S + a_s |x - L|, floor),  L' = (1 - a_l) L + a_l x

``x -> x + b`` leaves ``z`` and the predicted change unchanged exactly (the first
reading sets the level); ``x -> a x`` too once the prior ``scale0`` is forgotten
(~1 / a_s readings). ``L`` and ``S`` are per-row state beside h and c: reset, masked,
snapshot and restored exactly like them (``RowState.level``/``scale``), so a restored
row continues bit-for-bit.

Both engines and training call :func:`update` and :func:`series` (the same float32
arithmetic), so what the network was trained on is what it is fed.
Without row normalisation (older artifacts) the engines use the artifact's global
scaler as a constant frame: level = mean, scale = std, never updated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["RowNorm", "series"]

F32 = NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class RowNorm:
    """Parameters: EWMA weights ``level_alpha``, ``scale_alpha``; ``scale0`` (F,) the
    scale a row starts from after a reset and ``floor`` (F,) its lower bound, physical
    units (training-fleet typical scale and a small fraction of it)."""

    level_alpha: float
    scale_alpha: float
    scale0: F32
    floor: F32

    def fresh(self, n: int) -> tuple[F32, F32]:
        """(level, scale) of n reset rows: level NaN (no reading yet), scale ``scale0``."""
        nf = self.scale0.shape[0]
        return (
            np.full((n, nf), np.nan, np.float32),
            np.broadcast_to(self.scale0, (n, nf)).astype(np.float32),
        )

    def update(self, level: F32, scale: F32, x: F32) -> tuple[F32, F32]:
        """New (level, scale) (n, F) after readings ``x`` (n, F); inputs are not modified."""
        first = np.isnan(level)
        dev = np.abs(x - level)
        a_s = np.float32(self.scale_alpha)
        a_l = np.float32(self.level_alpha)
        s_new = np.where(first, scale, (np.float32(1) - a_s) * scale + a_s * dev)
        s_new = np.maximum(s_new, self.floor).astype(np.float32)
        l_new = np.where(first, x, (np.float32(1) - a_l) * level + a_l * x).astype(np.float32)
        return l_new, s_new

    def advance(self, level: F32, scale: F32, x: F32, tmp: F32) -> None:
        """:meth:`update` in place, for rows that already have a level (the horizon's
        fed-back steps): the same float32 operations in the same order, so the same
        bits (a row without a level comes out NaN instead). (n, F) arrays; ``tmp`` is
        scratch of x's shape."""
        self._advance(level, scale, x, tmp, self.floor)

    def advance_t(self, level: F32, scale: F32, x: F32, tmp: F32) -> None:
        """:meth:`advance` for transposed (F, n) arrays."""
        self._advance(level, scale, x, tmp, self.floor[:, None])

    def _advance(self, level: F32, scale: F32, x: F32, tmp: F32, floor: F32) -> None:
        a_s = np.float32(self.scale_alpha)
        a_l = np.float32(self.level_alpha)
        np.subtract(x, level, out=tmp)
        np.abs(tmp, out=tmp)  # dev
        scale *= np.float32(1) - a_s
        tmp *= a_s
        scale += tmp
        np.maximum(scale, floor, out=scale)
        level *= np.float32(1) - a_l
        np.multiply(x, a_l, out=tmp)
        level += tmp

    def to_json(self) -> dict[str, Any]:
        return {
            "level_alpha": self.level_alpha,
            "scale_alpha": self.scale_alpha,
            "scale0": [float(v) for v in self.scale0],
            "floor": [float(v) for v in self.floor],
        }

    @classmethod
    def from_json(cls, obj: Any, n_features: int) -> RowNorm:
        """Parse :meth:`to_json` output; ValueError naming what is wrong."""
        if not isinstance(obj, dict):
            raise ValueError("row_norm must be an object")
        try:
            a_l = float(obj["level_alpha"])
            a_s = float(obj["scale_alpha"])
            s0 = np.asarray(obj["scale0"], np.float32)
            fl = np.asarray(obj["floor"], np.float32)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"row_norm is malformed ({exc})") from None
        if not (0 < a_l <= 1 and 0 < a_s <= 1):
            raise ValueError("row_norm alphas must be in (0, 1]")
        if s0.shape != (n_features,) or fl.shape != (n_features,):
            raise ValueError(f"row_norm scale0/floor must hold {n_features} numbers")
        if not (np.isfinite(s0).all() and np.isfinite(fl).all() and (fl > 0).all()):
            raise ValueError("row_norm scale0/floor must be finite and floor > 0")
        return cls(a_l, a_s, s0, fl)


def series(
    norm: RowNorm,
    values: NDArray[np.floating[Any]],
    present: NDArray[np.bool_],
    boundary: NDArray[np.bool_],
) -> tuple[F32, F32]:
    """(level, scale) (K, N, F) after each tick's update, for a tick grid.

    ``values`` (K, N, F) physical, ``present`` (K, N), ``boundary`` (K, N) (reset
    before that reading). Where a row has no reading, its previous values carry over
    (as in the engines, where a masked row keeps its state).
    """
    n_ticks, n, _ = values.shape
    level, scale = norm.fresh(n)
    out_l = np.empty(values.shape, np.float32)
    out_s = np.empty(values.shape, np.float32)
    vals = values.astype(np.float32)
    fresh_l, fresh_s = norm.fresh(n)
    for k in range(n_ticks):
        b = boundary[k]
        if b.any():
            level[b] = fresh_l[b]
            scale[b] = fresh_s[b]
        m = present[k]
        if m.any():
            new_l, new_s = norm.update(level[m], scale[m], vals[k, m])
            level[m] = new_l
            scale[m] = new_s
        out_l[k] = level
        out_s[k] = scale
    return out_l, out_s


class Frame:
    """The (level, scale) an engine normalises a row with: per-row :class:`RowNorm`
    state, or — for an artifact without row normalisation — the global scaler's
    ``mean``/``std`` as a constant frame (``update`` then changes nothing)."""

    def __init__(self, norm: RowNorm | None, mean: F32, std: F32) -> None:
        self.norm = norm
        self._mean = np.asarray(mean, np.float32)
        self._std = np.asarray(std, np.float32)

    def fresh(self, n: int) -> tuple[F32, F32]:
        if self.norm is not None:
            return self.norm.fresh(n)
        nf = self._mean.shape[0]
        return (
            np.broadcast_to(self._mean, (n, nf)).astype(np.float32),
            np.broadcast_to(self._std, (n, nf)).astype(np.float32),
        )

    def update(self, level: F32, scale: F32, x: F32) -> tuple[F32, F32]:
        if self.norm is not None:
            return self.norm.update(level, scale, x)
        return level, scale

    def previous(self, last: F32, change: F32, scale: F32) -> F32:
        """The row's previous reading (physical), from its held forecast ``last`` and
        the change ``change`` the head predicted (network units): ``held = prev +
        change * scale`` is the residual network's own identity, so no extra state."""
        prev: F32 = last - change * scale
        return prev

    @staticmethod
    def change_input(x: F32, prev: F32, scale: F32) -> F32:
        """dx (n, F) in network units; 0 where a row has no previous reading."""
        dx: F32 = ((x - prev) / scale).astype(np.float32)
        dx[~np.isfinite(dx).all(axis=1)] = 0.0
        return dx


def fit(
    values: NDArray[np.floating[Any]],
    present: NDArray[np.bool_],
    boundary: NDArray[np.bool_],
    level_alpha: float = 0.005,
    scale_alpha: float = 0.005,
    floor: float = 0.1,
) -> RowNorm:
    """RowNorm for a training grid: ``scale0`` = median of the rows' scales once warm
    (from a first pass started at the global std), ``floor`` = that fraction of it.

    The floor matters: in a quiet spell the scale would shrink towards the sensor
    noise, and the loss (changes in units of the scale) would then be dominated by
    unpredictable noise steps.
    """
    vals = np.asarray(values, np.float32)
    std = np.nanstd(vals.reshape(-1, vals.shape[-1]), axis=0).astype(np.float32)
    std = np.where(np.isfinite(std) & (std > 0), std, 1.0).astype(np.float32)
    first = RowNorm(level_alpha, scale_alpha, std, (std * 1e-4).astype(np.float32))
    _, scale = series(first, vals, present, boundary)
    seen = np.cumsum(boundary, axis=0)
    since = np.zeros(present.shape, np.int64)  # readings since the row's last reset
    count = np.zeros(present.shape[1], np.int64)
    for k in range(present.shape[0]):
        count[boundary[k]] = 0
        count += present[k]
        since[k] = count
    warm = present & (since > 1.0 / scale_alpha) & (seen > 0)
    s = scale[warm] if warm.any() else scale[present]
    scale0 = np.median(s, axis=0).astype(np.float32)
    scale0 = np.where(scale0 > 0, scale0, std).astype(np.float32)
    return RowNorm(level_alpha, scale_alpha, scale0, (scale0 * floor).astype(np.float32))


def deltas(
    values: NDArray[np.floating[Any]],
    present: NDArray[np.bool_],
    boundary: NDArray[np.bool_],
    scale: F32,
) -> F32:
    """(F,) RMS of one-tick changes in frame units, ``(x[t+1] - x[t]) / scale[t]``, over
    consecutive readings of one segment (the training target's normaliser, so the loss
    is ~1.0 for persistence)."""
    ok = present[:-1] & present[1:] & ~boundary[1:]
    d = ((values[1:] - values[:-1]) / scale[:-1])[ok]
    if d.size == 0:
        return np.ones(values.shape[-1], np.float32)
    rms = np.sqrt(np.mean(d.astype(np.float64) ** 2, axis=0))
    return np.where(rms > 1e-6, rms, 1.0).astype(np.float32)
