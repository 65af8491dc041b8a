"""Forecaster on a Keras stateful model of batch N (the live fleet size).

The trained weights are copied into a freshly built one-step model
(``Input(batch_shape=(N, 1, F))``, the change input ``dx`` when the artifact has
``change_input``, and a boolean mask input) whose LSTM layers keep h and c in their
state variables. The step is a compiled ``tf.function``. ``dx`` is derived from the
held forecast and the top layer's h (see :mod:`models.network`), exactly as the NumPy
engine does. When the fleet size changes (``add_rows``/``remove_rows``) the model is
rebuilt for the new N and the surviving rows' state is copied over — other rows never
change.

TensorFlow is imported lazily (first engine built), so importing this module is cheap.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from models.engines.base import BoolArray, FloatArray, IndexArray, RowState
from models.engines.common import (
    check_horizon,
    check_row_state,
    check_rows,
    check_step_inputs,
    network_shape,
)
from models.engines.rownorm import Frame, RowNorm
from models.network import arrays_to_weights, build_model, lstm_layers
from models.scaler import Scaler
from tankwatch.errors import InputError

__all__ = ["KerasEngine"]


class KerasEngine:
    """Stateful LSTM forecaster running the Keras model itself, one step per tick.

    ``weights``: the arrays of ``weights.npz`` (layout in :mod:`models.network`);
    ``residual``/``change_input``/``row_norm``: the artifact's network options.
    h and c live in the Keras layers' state variables, (N, U) per layer, network units;
    each row's level and scale (:mod:`models.engines.rownorm`) in NumPy arrays here,
    computed by the same code as in the NumPy engine.
    """

    def __init__(
        self,
        weights: dict[str, FloatArray],
        scaler: Scaler,
        n_rows: int = 0,
        residual: bool = False,
        change_input: bool = False,
        row_norm: RowNorm | None = None,
    ) -> None:
        self._residual = bool(residual)
        self._change_input = bool(change_input)
        layers, units, n_features = network_shape(weights, residual, change_input)
        self._weights = {k: np.asarray(v, np.float32) for k, v in weights.items()}
        self._layers = layers
        self._units = units
        self._nf = n_features
        self._frame = Frame(row_norm, scaler.mean, scaler.std)
        self._n = 0
        self._model: Any = None
        self._fn: Any = None
        self._last = np.zeros((0, self._nf), np.float32)
        self._level, self._scale = self._frame.fresh(0)
        if n_rows:
            self.add_rows(n_rows)

    @property
    def n_rows(self) -> int:
        return self._n

    @property
    def n_features(self) -> int:
        return self._nf

    # -- state access ---------------------------------------------------------------
    def _state_vars(self) -> list[tuple[Any, Any]]:
        """[(h, c)] variables per layer, each (N, U)."""
        return [(layer.states[0], layer.states[1]) for layer in lstm_layers(self._model)]

    def _get_state(self) -> tuple[FloatArray, FloatArray]:
        if self._model is None:
            empty = np.zeros((self._layers, 0, self._units), np.float32)
            return empty, empty.copy()
        pairs = self._state_vars()
        h = np.stack([np.asarray(hv.numpy(), np.float32) for hv, _ in pairs])
        c = np.stack([np.asarray(cv.numpy(), np.float32) for _, cv in pairs])
        return h, c

    def _set_state(self, h: FloatArray, c: FloatArray) -> None:
        if self._model is None:
            return
        for layer, (hv, cv) in enumerate(self._state_vars()):
            hv.assign(h[layer])
            cv.assign(c[layer])

    def _rebuild(self, n: int, h: FloatArray, c: FloatArray) -> None:
        """Build a batch-n one-step model with the weights copied; load h, c (layers, n, U)."""
        self._n = n
        if n == 0:
            self._model = None
            self._fn = None
            return
        import tensorflow as tf

        model = build_model(
            n,
            1,
            self._nf,
            self._units,
            self._layers,
            with_mask_input=True,
            residual=self._residual,
            change_input=self._change_input,
        )
        arrays_to_weights(model, self._weights)
        self._model = model
        self._fn = tf.function(lambda inputs: model(inputs, training=False))
        self._set_state(h, c)

    def _inputs(
        self, x: FloatArray, last: FloatArray, level: FloatArray, scale: FloatArray
    ) -> tuple[FloatArray, FloatArray | None, FloatArray, FloatArray]:
        """(z, dx or None, new level, new scale) for readings x (N, F), as the NumPy
        engine computes them; the previous reading is ``held - head(h_top) * scale``."""
        level2, scale2 = self._frame.update(level, scale, x)
        z = ((x - level2) / scale2).astype(np.float32)
        if not self._change_input:
            return z, None, level2, scale2
        h_top = np.asarray(lstm_layers(self._model)[-1].states[0].numpy(), np.float32)
        head = h_top @ self._weights["dense_kernel"] + self._weights["dense_bias"]
        prev = self._frame.previous(last, head, scale)
        return z, self._frame.change_input(x, prev, scale2), level2, scale2

    def _run(self, z: FloatArray, dx: FloatArray | None, mask: BoolArray) -> FloatArray:
        """One compiled step for all N rows; returns network outputs (N, F)."""
        inputs: list[NDArray[Any]] = [np.nan_to_num(z)[:, None, :]]
        if dx is not None:
            inputs.append(np.where(mask[:, None], dx, 0.0).astype(np.float32)[:, None, :])
        inputs.append(mask[:, None])
        y = self._fn(inputs)
        return np.asarray(y.numpy()[:, 0, :], np.float32)

    # -- Forecaster -------------------------------------------------------------------
    def step(self, x: FloatArray, mask: BoolArray) -> FloatArray:
        """One tick: x (N, F) physical units, mask (N,). Returns held forecasts (N, F)."""
        xs, ms = check_step_inputs(x, mask, self._n, self._nf)
        if ms.any():
            # Masked rows may carry NaN; zero them so nothing non-finite enters the graph
            # (Keras selects the old state for them anyway).
            xs = np.where(ms[:, None], xs, 0.0).astype(np.float32)
            z, dx, level, scale = self._inputs(xs, self._last, self._level, self._scale)
            y = self._run(z, dx, ms)
            self._last[ms] = (y * scale + level)[ms]
            self._level[ms] = level[ms]
            self._scale[ms] = scale[ms]
        return self._last.copy()

    def forecast(self, horizon: int, rows: IndexArray | None = None) -> FloatArray:
        """(horizon, n, F) on a copy of the state: h, c are saved and put back after."""
        horizon = check_horizon(horizon)
        idx = np.arange(self._n) if rows is None else check_rows(rows, self._n)
        out = np.empty((horizon, self._n, self._nf), np.float32)
        out[0] = self._last
        if horizon > 1 and self._n:
            h, c = self._get_state()
            never = ~np.isfinite(self._last).all(axis=1)
            all_rows = np.ones(self._n, dtype=bool)
            level, scale = self._level.copy(), self._scale.copy()
            try:
                for k in range(1, horizon):
                    # Fed back: out[k - 1] is both this input and the held forecast
                    # the previous input is derived from (out[0] is the live held one).
                    z, dx, level, scale = self._inputs(out[k - 1], out[k - 1], level, scale)
                    out[k] = self._run(z, dx, all_rows) * scale + level
                    out[k][never] = np.nan
            finally:
                self._set_state(h, c)
        return out[:, idx]

    def reset_rows(self, rows: IndexArray) -> None:
        idx = check_rows(rows, self._n)
        if idx.size == 0:
            return
        h, c = self._get_state()
        h[:, idx] = 0.0
        c[:, idx] = 0.0
        self._set_state(h, c)
        self._last[idx] = np.nan
        self._level[idx], self._scale[idx] = self._frame.fresh(idx.size)

    def add_rows(self, n: int) -> int:
        if n < 0:
            raise InputError(f"cannot add {n} rows")
        first = self._n
        if n == 0:
            return first
        h, c = self._get_state()
        zeros = np.zeros((self._layers, n, self._units), np.float32)
        self._rebuild(first + n, np.concatenate([h, zeros], 1), np.concatenate([c, zeros], 1))
        self._last = np.concatenate([self._last, np.full((n, self._nf), np.nan, np.float32)])
        level, scale = self._frame.fresh(n)
        self._level = np.concatenate([self._level, level])
        self._scale = np.concatenate([self._scale, scale])
        return first

    def remove_rows(self, rows: IndexArray) -> None:
        idx = np.unique(check_rows(rows, self._n))
        if idx.size == 0:
            return
        h, c = self._get_state()
        self._rebuild(self._n - idx.size, np.delete(h, idx, 1), np.delete(c, idx, 1))
        self._last = np.delete(self._last, idx, axis=0)
        self._level = np.delete(self._level, idx, axis=0)
        self._scale = np.delete(self._scale, idx, axis=0)

    def snapshot(self, rows: IndexArray) -> RowState:
        idx = check_rows(rows, self._n)
        h, c = self._get_state()
        return RowState(
            h=h[:, idx],
            c=c[:, idx],
            last_forecast=self._last[idx].copy(),
            level=self._level[idx].copy(),
            scale=self._scale[idx].copy(),
        )

    def restore(self, rows: IndexArray, state: RowState) -> None:
        idx = check_rows(rows, self._n)
        check_row_state(state, idx.size, self._layers, self._units, self._nf)
        h, c = self._get_state()
        h[:, idx] = state.h
        c[:, idx] = state.c
        self._set_state(h, c)
        self._last[idx] = state.last_forecast
        fresh_level, fresh_scale = self._frame.fresh(idx.size)
        self._level[idx] = fresh_level if state.level is None else state.level
        self._scale[idx] = fresh_scale if state.scale is None else state.scale
