"""Forecaster in plain NumPy (float32): the LSTM cell re-implemented, no TensorFlow.

Per layer l, with gate order i, f, c, o along the 4U axis (Keras's fused layout)::

    z = [x, h] @ [W; R] + b            (n, 4U)
    i, f, o = sigmoid(z_i), sigmoid(z_f), sigmoid(z_o);  g = tanh(z_c)
    c' = f * c + i * g;   h' = o * tanh(c')

and the head is ``y = h_top @ D + d`` (plus ``x`` when the artifact is ``residual``).
It reproduces Keras to ~1e-7.

Only unmasked rows are computed (gathered by fancy indexing, scattered back), so a
tick where a few tanks reported costs in proportion to those tanks. When every row
reported, the gather/scatter is skipped and preallocated buffers are reused.
"""

from __future__ import annotations

import numpy as np

from models.engines.base import BoolArray, FloatArray, IndexArray, RowState
from models.engines.common import check_horizon, check_row_state, check_rows, check_step_inputs
from models.scaler import Scaler
from tankwatch.errors import InputError

__all__ = ["NumpyEngine"]


def _sigmoid_(z: FloatArray) -> FloatArray:
    """In-place logistic via tanh (one transcendental, no overflow warnings)."""
    z *= 0.5
    np.tanh(z, out=z)
    z *= 0.5
    z += 0.5
    return z


class NumpyEngine:
    """Stateful LSTM forecaster over ``n_rows`` independent rows (tanks).

    ``weights``: the arrays of ``weights.npz`` (layout in :mod:`models.network`);
    ``residual``: the network adds its scaled input to the head (metadata ``residual``).
    State: ``h``, ``c`` (layers, N, U) float32 in scaled units; ``last`` (N, F) float32,
    the held next-step forecast in physical units (NaN until a row is first stepped).
    """

    def __init__(
        self,
        weights: dict[str, FloatArray],
        scaler: Scaler,
        n_rows: int = 0,
        residual: bool = False,
        change_input: bool = False,
    ) -> None:
        if change_input and not residual:
            raise InputError("change_input needs a residual network (previous reading is derived)")
        self._residual = bool(residual)
        self._change_input = bool(change_input)
        layers = 0
        while f"lstm{layers}_kernel" in weights:
            layers += 1
        if layers == 0:
            raise InputError("weights hold no LSTM layer (lstm0_kernel missing)")
        self._layers = layers
        self._units = int(weights["lstm0_recurrent"].shape[0])
        self._nf = int(weights["dense_kernel"].shape[1])
        self._fin0 = int(weights["lstm0_kernel"].shape[0])
        # [W; R] stacked so each layer is one matmul on the concatenated [x, h].
        self._kernels = [
            np.ascontiguousarray(
                np.vstack([weights[f"lstm{i}_kernel"], weights[f"lstm{i}_recurrent"]]),
                dtype=np.float32,
            )
            for i in range(layers)
        ]
        self._biases = [np.asarray(weights[f"lstm{i}_bias"], np.float32) for i in range(layers)]
        self._head_w = np.asarray(weights["dense_kernel"], np.float32)
        self._head_b = np.asarray(weights["dense_bias"], np.float32)
        self._mean = scaler.mean.astype(np.float32)
        self._std = scaler.std.astype(np.float32)
        self._h = np.zeros((layers, 0, self._units), np.float32)
        self._c = np.zeros((layers, 0, self._units), np.float32)
        self._last = np.zeros((0, self._nf), np.float32)
        self._bufs: dict[int, tuple[FloatArray, FloatArray]] = {}
        if n_rows:
            self.add_rows(n_rows)

    # -- properties ---------------------------------------------------------------
    @property
    def n_rows(self) -> int:
        return int(self._last.shape[0])

    @property
    def n_features(self) -> int:
        return self._nf

    @property
    def units(self) -> int:
        return self._units

    @property
    def layers(self) -> int:
        return self._layers

    # -- the cell -----------------------------------------------------------------
    def _buffers(self, n: int) -> tuple[FloatArray, FloatArray]:
        """Reusable (n, F_in_max + U) input and (n, 4U) gate buffers for full-fleet ticks."""
        bufs = self._bufs.get(n)
        if bufs is None:
            width = max(self._fin0, self._units) + self._units
            bufs = (
                np.empty((n, width), np.float32),
                np.empty((n, 4 * self._units), np.float32),
            )
            self._bufs = {n: bufs}  # keep only the current fleet size
        return bufs

    def _head(self, h_top: FloatArray) -> FloatArray:
        out: FloatArray = h_top @ self._head_w
        out += self._head_b
        return out

    def _with_change(self, xs: FloatArray, last: FloatArray, h_top: FloatArray) -> FloatArray:
        """[xs, dx] (n, 2F): dx = xs - previous reading, 0 where the row has none.

        The previous reading (scaled) is ``held forecast - head(h_top)``: the residual
        network's own identity, so RowState (h, c, last_forecast) is all it needs.
        """
        prev = (last - self._mean) / self._std
        prev -= self._head(h_top)
        dx = xs - prev
        dx[~np.isfinite(dx).all(axis=1)] = 0.0  # never stepped / just reset
        return np.concatenate([xs, dx], axis=1)

    def _cell(
        self, xs: FloatArray, h: FloatArray, c: FloatArray, buffers: bool, inp0: FloatArray
    ) -> FloatArray:
        """Advance (layers, n, U) h and c in place for scaled readings xs (n, F);
        ``inp0`` is the first layer's input (xs, or [xs, dx]).

        Returns the scaled network output (n, F).
        """
        n = xs.shape[0]
        u = self._units
        if buffers:
            inp_buf, z_buf = self._buffers(n)
        else:
            inp_buf = np.empty((n, max(self._fin0, u) + u), np.float32)
            z_buf = np.empty((n, 4 * u), np.float32)
        below = inp0
        for layer in range(self._layers):
            fin = below.shape[1]
            inp = inp_buf[:, : fin + u]
            inp[:, :fin] = below
            inp[:, fin:] = h[layer]
            z = np.matmul(inp, self._kernels[layer], out=z_buf)
            z += self._biases[layer]
            _sigmoid_(z[:, : 2 * u])  # i, f
            np.tanh(z[:, 2 * u : 3 * u], out=z[:, 2 * u : 3 * u])  # candidate
            _sigmoid_(z[:, 3 * u :])  # o
            cl = c[layer]
            cl *= z[:, u : 2 * u]
            cl += z[:, :u] * z[:, 2 * u : 3 * u]
            hl = h[layer]
            np.tanh(cl, out=hl)
            hl *= z[:, 3 * u :]
            below = hl
        out = self._head(below)
        if self._residual:
            out += xs  # the head predicts the change from this reading
        return out

    # -- Forecaster ---------------------------------------------------------------
    def step(self, x: FloatArray, mask: BoolArray) -> FloatArray:
        """One tick: x (N, F) physical units, mask (N,) True = has a reading.

        Returns a copy of the held next-step forecasts (N, F), physical units.
        """
        xs, ms = check_step_inputs(x, mask, self.n_rows, self._nf)
        if ms.all():
            scaled = (xs - self._mean) / self._std
            inp0 = (
                self._with_change(scaled, self._last, self._h[-1]) if self._change_input else scaled
            )
            y = self._cell(scaled, self._h, self._c, True, inp0)
            np.multiply(y, self._std, out=self._last)
            self._last += self._mean
        else:
            idx = np.flatnonzero(ms)
            if idx.size:
                scaled = (xs[idx] - self._mean) / self._std
                h = self._h[:, idx]
                c = self._c[:, idx]
                inp0 = (
                    self._with_change(scaled, self._last[idx], h[-1])
                    if self._change_input
                    else scaled
                )
                y = self._cell(scaled, h, c, False, inp0)
                self._h[:, idx] = h
                self._c[:, idx] = c
                self._last[idx] = y * self._std + self._mean
        return self._last.copy()

    def forecast(self, horizon: int, rows: IndexArray | None = None) -> FloatArray:
        """(horizon, n, F): ``[0]`` is the held forecast, then predictions fed back.

        Runs on copies of h and c; the live state is untouched. Rows never stepped
        (held forecast NaN) come out NaN at every horizon.
        """
        horizon = check_horizon(horizon)
        idx = np.arange(self.n_rows) if rows is None else check_rows(rows, self.n_rows)
        out = np.empty((horizon, idx.size, self._nf), np.float32)
        out[0] = self._last[idx]
        if horizon > 1 and idx.size:
            h = self._h[:, idx]  # fancy indexing copies: the live state stays as it is
            c = self._c[:, idx]
            for k in range(1, horizon):
                scaled = (out[k - 1] - self._mean) / self._std
                inp0 = (
                    self._with_change(scaled, out[k - 1], h[-1]) if self._change_input else scaled
                )
                y = self._cell(scaled, h, c, False, inp0)
                out[k] = y * self._std + self._mean
        return out

    def reset_rows(self, rows: IndexArray) -> None:
        idx = check_rows(rows, self.n_rows)
        self._h[:, idx] = 0.0
        self._c[:, idx] = 0.0
        self._last[idx] = np.nan

    def add_rows(self, n: int) -> int:
        if n < 0:
            raise InputError(f"cannot add {n} rows")
        first = self.n_rows
        zeros = np.zeros((self._layers, n, self._units), np.float32)
        self._h = np.concatenate([self._h, zeros], axis=1)
        self._c = np.concatenate([self._c, zeros], axis=1)
        self._last = np.concatenate([self._last, np.full((n, self._nf), np.nan, np.float32)])
        return first

    def remove_rows(self, rows: IndexArray) -> None:
        idx = np.unique(check_rows(rows, self.n_rows))
        self._h = np.delete(self._h, idx, axis=1)
        self._c = np.delete(self._c, idx, axis=1)
        self._last = np.delete(self._last, idx, axis=0)

    def snapshot(self, rows: IndexArray) -> RowState:
        idx = check_rows(rows, self.n_rows)
        return RowState(h=self._h[:, idx], c=self._c[:, idx], last_forecast=self._last[idx])

    def restore(self, rows: IndexArray, state: RowState) -> None:
        idx = check_rows(rows, self.n_rows)
        check_row_state(state, idx.size, self._layers, self._units, self._nf)
        self._h[:, idx] = state.h
        self._c[:, idx] = state.c
        self._last[idx] = state.last_forecast
