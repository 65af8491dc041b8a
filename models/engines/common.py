"""Input checks shared by the engines (pure NumPy; no TensorFlow).

Every check runs before an engine touches its state, so a rejected call leaves the
engine exactly as it was.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from models.engines.base import BoolArray, FloatArray, IndexArray, RowState
from tankwatch.errors import InputError


def network_shape(
    weights: dict[str, FloatArray], residual: bool, change_input: bool
) -> tuple[int, int, int]:
    """(layers, units, features) of an artifact's weights; both engines build from it.

    Raises InputError on an inconsistent network (no LSTM layer, or a change input
    without the residual head the previous reading is derived from).
    """
    if change_input and not residual:
        raise InputError("change_input needs a residual network (previous reading is derived)")
    layers = 0
    while f"lstm{layers}_kernel" in weights:
        layers += 1
    if layers == 0:
        raise InputError("weights hold no LSTM layer (lstm0_kernel missing)")
    units = int(weights["lstm0_recurrent"].shape[0])
    n_features = int(weights["dense_kernel"].shape[1])
    return layers, units, n_features


def check_step_inputs(
    x: NDArray[Any], mask: NDArray[Any], n_rows: int, n_features: int
) -> tuple[FloatArray, BoolArray]:
    """Validate one tick's inputs; returns (x as float32 (N, F), mask as bool (N,)).

    Raises InputError on a wrong shape or a NaN/inf in an unmasked row. Masked rows
    may hold anything (NaN is the natural filler for a missing reading).
    """
    xs = np.asarray(x, dtype=np.float32)
    ms = np.asarray(mask)
    if xs.shape != (n_rows, n_features):
        raise InputError(f"x must have shape ({n_rows}, {n_features}), got {xs.shape}")
    if ms.shape != (n_rows,):
        raise InputError(f"mask must have shape ({n_rows},), got {ms.shape}")
    if ms.dtype != np.bool_:
        ms = ms.astype(bool)
    live = xs if ms.all() else xs[ms]
    if not np.isfinite(live).all():
        bad = np.flatnonzero(ms & ~np.isfinite(xs).all(axis=1))
        raise InputError(f"NaN or inf in unmasked rows {bad[:10].tolist()}")
    return xs, ms


def check_rows(rows: NDArray[Any] | list[int], n_rows: int) -> IndexArray:
    """Row indices as a 1-D intp array, each in [0, n_rows); raises InputError otherwise."""
    idx = np.asarray(rows, dtype=np.intp).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= n_rows):
        raise InputError(f"row index out of range [0, {n_rows}): {idx.tolist()[:10]}")
    return idx


def check_horizon(horizon: int) -> int:
    if int(horizon) < 1:
        raise InputError(f"horizon must be >= 1, got {horizon}")
    return int(horizon)


def check_row_state(state: RowState, n: int, layers: int, units: int, n_features: int) -> None:
    """A snapshot must match the engine's shapes: h, c (layers, n, units); last (n, F)."""
    want = (layers, n, units)
    if state.h.shape != want or state.c.shape != want:
        raise InputError(
            f"state h/c must have shape {want}, got {state.h.shape} and {state.c.shape}"
        )
    if state.last_forecast.shape != (n, n_features):
        raise InputError(
            f"state last_forecast must have shape ({n}, {n_features}), "
            f"got {state.last_forecast.shape}"
        )
    for name in ("level", "scale"):
        arr = getattr(state, name)
        if arr is not None and arr.shape != (n, n_features):
            raise InputError(f"state {name} must have shape ({n}, {n_features}), got {arr.shape}")
