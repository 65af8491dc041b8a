"""Forecaster in plain NumPy (float32): the LSTM cell re-implemented, no TensorFlow.

Per layer l, with gate order i, f, c, o along the 4U axis (Keras's fused layout)::

    z = [x, h] @ [W; R] + b            (n, 4U)
    i, f, o = sigmoid(z_i), sigmoid(z_f), sigmoid(z_o);  g = tanh(z_c)
    c' = f * c + i * g;   h' = o * tanh(c')

and the head is ``y = h_top @ D + d`` (plus ``x`` when the artifact is ``residual``).
It reproduces Keras to ~1e-7. Inputs are normalised per row (``(x - level) / scale``,
:mod:`models.engines.rownorm`) and outputs mapped back with the same frame.

Speed (the cell is memory-bound: a dozen elementwise passes per matmul):

* internally the gate columns are reordered to i, f, o, c and the sigmoid columns of
  the kernel and bias pre-halved, so one ``tanh`` over all 4U columns plus
  ``0.5 * t + 0.5`` on the first 3U gives every gate (sigmoid(z) = (1 + tanh(z/2))/2);
* only unmasked rows are computed (gathered by fancy indexing, scattered back), so a
  tick where a few tanks reported costs in proportion to those tanks; when every row
  reported the gather/scatter is skipped (the matrix products themselves run on rows
  padded to a multiple of :data:`PAD_ROWS`, so a row's bits never depend on the others);
* buffers are preallocated per size and reused;
* ``forecast`` runs the horizon in chunks of rows (rows are independent), so a
  chunk's h, c and gates stay in the CPU cache for all the steps (the single-layer
  kernel in larger chunks: there the per-call cost of NumPy weighs more, see
  :data:`FUSED_CHUNK`);
* the horizon of a single-layer network runs transposed (gate blocks and state are
  contiguous rows), one matmul per step with the bias folded in, buffers reused:
  under the global scaler each fed-back input is a linear function of the previous
  step's ``s`` (scaled input) and ``h`` (see :func:`_horizon_weights`), so from the
  second step on one matmul of ``[1, s, h]`` gives the next gates *and* this step's
  output (:meth:`NumpyEngine._horizon_fused`); under a per-row frame the next input
  is not linear in them (the frame follows the forecast), so each step is one
  matmul for the gates, one small one for the head and a few passes over (F, m)
  rows for the frame (:meth:`NumpyEngine._horizon_rownorm`). Deeper networks step
  :meth:`NumpyEngine._cell`. Every row's horizon is the same bits whatever rows it
  runs with (columns padded, see :func:`_padded`).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from models.engines.base import BoolArray, FloatArray, IndexArray, RowState
from models.engines.common import (
    check_horizon,
    check_row_state,
    check_rows,
    check_step_inputs,
    network_shape,
)
from models.engines.rownorm import Frame, RowNorm
from models.scaler import Scaler
from tankwatch.errors import InputError

__all__ = ["NumpyEngine"]


#: Rows per chunk in ``forecast``'s generic paths: a chunk's gates (rows x 4U float32)
#: fit in L2.
FORECAST_CHUNK = 1024
#: Rows per chunk of the single-layer (fused) horizon. Larger than the generic paths':
#: each step is ~15 NumPy calls per chunk, and at 10,000 rows the calls' own cost
#: outweighed keeping a chunk's gates in L2. ``bench``-style timings of
#: ``forecast(30)`` at 10,000 rows, one BLAS thread, two runs each (2026-11-28):
#: LSTM(24) 53.7 / 54.2 ms at 1,024 rows per chunk, 48.2 / 47.5 at 2,048,
#: 46.5 / 45.4 at 4,096, 46.7 / 44.9 at 8,192; LSTM(48) 115.5 / 111.2, 108.4 / 107.4,
#: 107.3 / 106.1, 108.3 / 110.1. The same bits at every size (rows are padded, see
#: PAD_ROWS and _padded).
FUSED_CHUNK = 4096
#: Threads for the horizon of a single-layer network (``NumpyEngine.horizon_threads``,
#: env TANKWATCH_HORIZON_THREADS). One by default: on the loaded 2-core machine of
#: docs/performance.md two threads made the 10,000-row horizon slower in wall time
#: (three runs: 637, 742, 450 ms vs 639, 146, 153 ms; a tick waits for its slower
#: half), for ~8 % more CPU.
#: Two pay off only with a core to spare; unlike OpenBLAS's threads they never spin.
HORIZON_THREADS = int(os.environ.get("TANKWATCH_HORIZON_THREADS", "1"))
#: Every matrix product runs on a multiple of this many rows (the horizon's: columns,
#: see _horizon_fused), zero rows appended. Why: OpenBLAS computes the rows of a
#: partial block (SkylakeX kernel: the last ``n % 4`` rows of the head's product) and a
#: 1-row product (gemv) with another summation order, so a tank's step and forecast
#: would depend on how many rows were computed with it and where it sat among them --
#: and a restarted instance, which restores tanks into other rows and catches up in
#: smaller ticks, would not reproduce an uninterrupted run bit for bit
#: (docs/reliability.md, the "T004 drift").
PAD_ROWS = 16
#: Fewer rows than twice this run in the calling thread (a hand-off costs ~0.1 ms).
MIN_THREAD_ROWS = 256


def _padded(m: int) -> int:
    """m rows rounded up to a multiple of :data:`PAD_ROWS` (so no row sits in a partial
    OpenBLAS block: see PAD_ROWS), but not to a multiple of 512. Rows of a (.., 512k)
    float32 matrix map to the same cache sets: the gates matmul ran at 74-82 GFLOP/s
    for 1,024 columns and ~100 for 1,008 or 1,040 (one core here), and the elementwise
    passes slowed down likewise."""
    mp = -(-m // PAD_ROWS) * PAD_ROWS
    return mp + PAD_ROWS if mp % 512 == 0 else mp


def _internal_gates(a: FloatArray, units: int) -> FloatArray:
    """Keras gate blocks (i, f, c, o) along the last axis -> (i/2, f/2, o/2, c)."""
    u = units
    i, f, g, o = a[..., :u], a[..., u : 2 * u], a[..., 2 * u : 3 * u], a[..., 3 * u :]
    return np.ascontiguousarray(np.concatenate([i * 0.5, f * 0.5, o * 0.5, g], axis=-1))


def _horizon_weights(
    weights: dict[str, FloatArray], units: int, residual: bool, change_input: bool
) -> tuple[FloatArray, FloatArray]:
    """Precomputed layouts for :meth:`NumpyEngine.forecast` (float32, computed in float64).

    Returns ``first`` (1 + F_in + U, 4U): ``[1, inp0, h] @ first`` is the first step's
    pre-activations; and ``fed`` (1 + F + U, 4U + F): ``[1, s_k, h_k] @ fed`` gives the
    pre-activations of step k+1 (first 4U columns) and the scaled output ``y_k`` of step
    k (last F columns). Gate columns in the internal order (module docstring).

    Derivation: ``y_k = s_k Qs + h_k D + d`` (``Qs`` = I when residual, else 0); the next
    input is ``x = y_k`` and, with ``change_input``, ``dx = y_k - s_k``; so with
    ``W = Wx + Wdx``: ``z_{k+1} = s_k (Qs W - Wdx) + h_k (D W + R) + (b + d W)``.
    """
    k0 = np.asarray(weights["lstm0_kernel"], np.float64)
    rec = np.asarray(weights["lstm0_recurrent"], np.float64)
    b = np.asarray(weights["lstm0_bias"], np.float64)
    dk = np.asarray(weights["dense_kernel"], np.float64)
    db = np.asarray(weights["dense_bias"], np.float64)
    nf = dk.shape[1]
    first = np.vstack([b[None, :], k0, rec])
    wx = k0[:nf]
    wdx = k0[nf : 2 * nf] if change_input else np.zeros_like(wx)
    w = wx + wdx
    qs = np.eye(nf) if residual else np.zeros((nf, nf))
    gates = np.vstack([(b + db @ w)[None, :], qs @ w - wdx, dk @ w + rec])
    head = np.vstack([db[None, :], qs, dk])
    return (
        _internal_gates(first.astype(np.float32), units),
        np.ascontiguousarray(
            np.hstack([_internal_gates(gates.astype(np.float32), units), head.astype(np.float32)])
        ),
    )


def _rownorm_weights(
    weights: dict[str, FloatArray], units: int
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Layouts for :meth:`NumpyEngine._horizon_rownorm` (single layer, float32).

    Returns ``gates`` (4U, F_in + U + 1): ``gates @ [inp; 2h; 1]`` are a step's
    pre-activations, gate rows in the internal order (module docstring); ``head``
    (U, F): ``2h @ head`` is ``h @ D``; ``bias`` (F, 1), the head's bias. The kernel
    keeps ``2h`` (see there), so the rows multiplying h are halved; halving is exact
    in binary floating point, so every product is the one of the unhalved weights.
    """
    k0 = np.asarray(weights["lstm0_kernel"], np.float32)
    rec = np.asarray(weights["lstm0_recurrent"], np.float32)
    b = np.asarray(weights["lstm0_bias"], np.float32)
    stacked = np.vstack([k0, rec * np.float32(0.5), b[None, :]])
    gates = np.ascontiguousarray(_internal_gates(stacked, units).T)
    dk = np.asarray(weights["dense_kernel"], np.float32)
    head = dk * np.float32(0.5)
    bias = np.asarray(weights["dense_bias"], np.float32).reshape(-1, 1).copy()
    return gates, head, bias


class NumpyEngine:
    """Stateful LSTM forecaster over ``n_rows`` independent rows (tanks).

    ``weights``: the arrays of ``weights.npz`` (layout in :mod:`models.network`);
    ``residual``: the network adds its scaled input to the head (metadata ``residual``);
    ``change_input``: the first layer also sees ``dx`` (metadata ``change_input``),
    derived from the held forecast and the top h — no extra state; ``row_norm``: the
    artifact's per-row normalisation (None: the global scaler as a constant frame).
    State: ``h``, ``c`` (layers, N, U) float32 in network units; ``last`` (N, F) float32,
    the held next-step forecast in physical units (NaN until a row is first stepped);
    ``level``, ``scale`` (N, F) float32, each row's frame.
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
        self._layers = layers
        self._units = units
        self._nf = n_features
        self._fin0 = int(weights["lstm0_kernel"].shape[0])
        # [W; R] stacked so each layer is one matmul on the concatenated [x, h]; gate
        # columns in the internal order (see the module docstring).
        self._kernels = [
            _internal_gates(
                np.vstack([weights[f"lstm{i}_kernel"], weights[f"lstm{i}_recurrent"]]).astype(
                    np.float32
                ),
                self._units,
            )
            for i in range(layers)
        ]
        self._biases = [
            _internal_gates(np.asarray(weights[f"lstm{i}_bias"], np.float32), self._units)
            for i in range(layers)
        ]
        # The horizon's fused layouts (single-layer networks; deeper ones step _cell).
        fused = (
            _horizon_weights(weights, units, self._residual, self._change_input)
            if layers == 1
            else None
        )
        #: Transposed copies (what ``_horizon_fused`` multiplies with).
        self._fused_t = (
            None
            if fused is None
            else (np.ascontiguousarray(fused[0].T), np.ascontiguousarray(fused[1].T))
        )
        self._head_w = np.asarray(weights["dense_kernel"], np.float32)
        self._head_b = np.asarray(weights["dense_bias"], np.float32)
        self._mean = scaler.mean.astype(np.float32)
        self._std = scaler.std.astype(np.float32)
        self._frame = Frame(row_norm, scaler.mean, scaler.std)
        #: The per-row-normalised single-layer horizon's layouts (_horizon_rownorm).
        self._fused_rn = (
            _rownorm_weights(weights, units) if layers == 1 and row_norm is not None else None
        )
        if row_norm is not None:
            # The folded kernel folds a constant frame (the global scaler) into its
            # matrices; a per-row frame moves every step (_horizon_rownorm instead).
            self._fused_t = None
        self._local = threading.local()  # per-thread buffers of _horizon_rownorm
        self._h = np.zeros((layers, 0, self._units), np.float32)
        self._c = np.zeros((layers, 0, self._units), np.float32)
        self._last = np.zeros((0, self._nf), np.float32)
        self._level, self._scale = self._frame.fresh(0)
        self._bufs: dict[int, tuple[list[FloatArray], FloatArray, FloatArray]] = {}
        self.horizon_threads = max(1, HORIZON_THREADS)
        self._pool: ThreadPoolExecutor | None = None
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
    def _buffers(self, n: int) -> tuple[list[FloatArray], FloatArray, FloatArray]:
        """Reusable buffers for n rows: per-layer inputs (p, F_in + U), gates (p, 4U),
        and a (n, U) scratch; p = ``_padded(n)``, rows n..p stay zero (never written).

        Each layer's input buffer is its own C-contiguous array: a strided view would
        make ``matmul`` leave BLAS for a slow loop. A few recent sizes are kept (the
        fleet, the reporting rows of a tick, forecast chunks).
        """
        bufs = self._bufs.get(n)
        if bufs is None:
            u = self._units
            p = _padded(n)
            widths = [self._fin0 + u] + [2 * u] * (self._layers - 1)
            bufs = (
                [np.zeros((p, w), np.float32) for w in widths],
                np.zeros((p, 4 * u), np.float32),
                np.empty((n, u), np.float32),
            )
            recent = list(self._bufs.items())[-3:]
            self._bufs = {**dict(recent), n: bufs}
        return bufs

    def _head(self, h_top: FloatArray) -> FloatArray:
        """``h_top @ D + d`` (n, F), the product on zero-padded rows (see PAD_ROWS): a
        tank's step must be the same bits whether it reports alone (catch-up), with an
        incomplete tick or with the whole fleet, at whatever row a restart gave it."""
        n = h_top.shape[0]
        p = _padded(n)
        if p != n:
            padded = np.zeros((p, h_top.shape[1]), np.float32)
            padded[:n] = h_top
            h_top = padded
        out: FloatArray = (h_top @ self._head_w)[:n]
        out += self._head_b
        return out

    def _inputs(
        self,
        x: FloatArray,
        last: FloatArray,
        h_top: FloatArray,
        level: FloatArray,
        scale: FloatArray,
    ) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
        """Network inputs for readings x (n, F) physical: (z, first-layer input, new
        level, new scale). ``last``/``h_top``/``level``/``scale`` are the rows' state
        before this reading (the previous reading is derived from them for ``dx``)."""
        level2, scale2 = self._frame.update(level, scale, x)
        z = (x - level2) / scale2
        if not self._change_input:
            return z, z, level2, scale2
        prev = self._frame.previous(last, self._head(h_top), scale)
        dx = self._frame.change_input(x, prev, scale2)
        return z, np.concatenate([z, dx], axis=1), level2, scale2

    def _with_change(
        self,
        xs: FloatArray,
        last: FloatArray,
        h_top: FloatArray | None,
        head: FloatArray | None = None,
    ) -> FloatArray:
        """[xs, dx] (n, 2F): dx = xs - previous reading, 0 where the row has none.

        The previous reading (scaled) is ``held forecast - head(h_top)``: the residual
        network's own identity, so RowState (h, c, last_forecast) is all it needs.
        ``head``: ``head(h_top)`` when the caller has it already.
        """
        prev = (last - self._mean) / self._std
        if head is None:
            assert h_top is not None
            head = self._head(h_top)
        prev -= head
        dx = xs - prev
        dx[~np.isfinite(dx).all(axis=1)] = 0.0  # never stepped / just reset
        return np.concatenate([xs, dx], axis=1)

    def _cell(self, xs: FloatArray, h: FloatArray, c: FloatArray, inp0: FloatArray) -> FloatArray:
        """Advance (layers, n, U) h and c in place for scaled readings xs (n, F);
        ``inp0`` is the first layer's input (xs, or [xs, dx]).

        Returns the scaled network output (n, F).
        """
        n = xs.shape[0]
        u = self._units
        inp_bufs, z_buf, tmp = self._buffers(n)
        below = inp0
        for layer in range(self._layers):
            fin = below.shape[1]
            inp = inp_bufs[layer]
            inp[:n, :fin] = below
            inp[:n, fin:] = h[layer]
            # All padded rows (see PAD_ROWS and _buffers); the gates of the first n.
            z = np.matmul(inp, self._kernels[layer], out=z_buf)[:n]
            z += self._biases[layer]
            np.tanh(z, out=z)  # i/2, f/2, o/2 pre-halved: tanh; candidate: tanh
            gates = z[:, : 3 * u]
            gates *= 0.5
            gates += 0.5  # sigmoid(z) = (1 + tanh(z / 2)) / 2
            cl = c[layer]
            cl *= z[:, u : 2 * u]
            np.multiply(z[:, :u], z[:, 3 * u :], out=tmp)
            cl += tmp
            hl = h[layer]
            np.tanh(cl, out=hl)
            hl *= z[:, 2 * u : 3 * u]
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
            z, inp0, level, scale = self._inputs(
                xs, self._last, self._h[-1], self._level, self._scale
            )
            y = self._cell(z, self._h, self._c, inp0)
            np.multiply(y, scale, out=self._last)
            self._last += level
            self._level, self._scale = level, scale
        else:
            idx = np.flatnonzero(ms)
            if idx.size:
                h = self._h[:, idx]
                c = self._c[:, idx]
                z, inp0, level, scale = self._inputs(
                    xs[idx], self._last[idx], h[-1], self._level[idx], self._scale[idx]
                )
                y = self._cell(z, h, c, inp0)
                self._h[:, idx] = h
                self._c[:, idx] = c
                self._last[idx] = y * scale + level
                self._level[idx] = level
                self._scale[idx] = scale
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
        if horizon == 1:
            return out
        if self._fused_t is not None or self._fused_rn is not None:
            self._forecast_fused(idx, out)
            return out
        if self._frame.norm is None:
            self._forecast_global(idx, horizon, out)
            return out
        for lo in range(0, idx.size, FORECAST_CHUNK):
            rows_ = idx[lo : lo + FORECAST_CHUNK]
            # Copies (the live state stays as it is), padded to a multiple of PAD_ROWS
            # rows as in _horizon_fused: OpenBLAS sums a row in a partial block of the
            # matrix another way, so without it a tank's 30-tick forecast depended on
            # how many rows were forecast with it (~1e-6 relative: a restarted or
            # rebalanced instance would not reproduce its forecasts exactly). Padding
            # rows: zero state, level 0, scale 1 (finite, and rows never mix).
            m = rows_.size
            mp = _padded(m)
            h = np.zeros((self._layers, mp, self._units), np.float32)
            h[:, :m] = self._h[:, rows_]
            c = np.zeros_like(h)
            c[:, :m] = self._c[:, rows_]
            level = np.zeros((mp, self._nf), np.float32)
            level[:m] = self._level[rows_]
            scale = np.ones((mp, self._nf), np.float32)
            scale[:m] = self._scale[rows_]
            block = np.zeros((horizon, mp, self._nf), np.float32)
            block[0, :m] = out[0, lo : lo + m]
            frame = self._frame
            # Each forecast is fed back as the next reading; the frame follows it as
            # it would follow readings (training saw the same recursion). The first
            # step derives the previous reading from the state; later ones know it.
            z, inp0, level, scale = self._inputs(block[0], block[0], h[-1], level, scale)
            for k in range(1, horizon):
                if k > 1:
                    u, prev = block[k - 1], block[k - 2]
                    level, scale = frame.update(level, scale, u)
                    z = (u - level) / scale
                    inp0 = (
                        np.concatenate([z, (u - prev) / scale], axis=1) if self._change_input else z
                    )
                y = self._cell(z, h, c, inp0)
                np.multiply(y, scale, out=block[k])
                block[k] += level
            out[1:, lo : lo + m] = block[1:, :m]
        return out

    def _forecast_global(self, idx: IndexArray, horizon: int, out: FloatArray) -> None:
        """The generic horizon under the global scaler (no per-row frame), in scaled
        units throughout: the fed-back change is exactly ``y - scaled``."""
        for lo in range(0, idx.size, FORECAST_CHUNK):
            rows_ = idx[lo : lo + FORECAST_CHUNK]
            h = self._h[:, rows_]  # fancy indexing copies: the live state stays as it is
            c = self._c[:, rows_]
            block = out[:, lo : lo + FORECAST_CHUNK]
            scaled = (block[0] - self._mean) / self._std
            inp0 = self._with_change(scaled, block[0], h[-1]) if self._change_input else scaled
            for k in range(1, horizon):
                y = self._cell(scaled, h, c, inp0)
                np.multiply(y, self._std, out=block[k])
                block[k] += self._mean
                inp0 = np.concatenate([y, y - scaled], axis=1) if self._change_input else y
                scaled = y

    def _forecast_fused(self, idx: IndexArray, out: FloatArray) -> None:
        """The single-layer horizon of rows ``idx`` into ``out`` (H, n, F), in chunks
        of rows (_horizon_rownorm under a per-row frame, else _horizon_fused), spread
        over :data:`HORIZON_THREADS` threads when there are enough rows (NumPy
        releases the GIL in matmul and the ufuncs; chunks write disjoint slices).
        """
        n = idx.size
        if n == 0:
            return
        threads = self.horizon_threads if n >= 2 * MIN_THREAD_ROWS else 1
        chunk = min(FUSED_CHUNK, -(-n // threads))
        bounds = [(lo, min(n, lo + chunk)) for lo in range(0, n, chunk)]

        def run(lo_hi: tuple[int, int]) -> None:
            lo, hi = lo_hi
            rows_ = idx[lo:hi]
            block = out[:, lo:hi]
            if self._fused_rn is not None:
                self._horizon_rownorm(rows_, block)
                return
            scaled = (block[0] - self._mean) / self._std
            m = hi - lo
            # h padded like the horizon's matrices (see _horizon_fused), so the head
            # inside _with_change sums each row the same way whatever m is.
            hp = np.zeros((_padded(m), self._units), np.float32)
            hp[:m] = self._h[0, rows_]
            h = hp[:m]
            inp0 = (
                self._with_change(scaled, block[0], None, self._head(hp)[:m])
                if self._change_input
                else scaled
            )
            self._horizon_fused(scaled, inp0, h, self._c[0, rows_], block)

        if threads == 1 or len(bounds) == 1:
            for b in bounds:
                run(b)
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(threads, thread_name_prefix="horizon")
        list(self._pool.map(run, bounds))

    def _horizon_fused(
        self, scaled: FloatArray, inp0: FloatArray, h: FloatArray, c: FloatArray, block: FloatArray
    ) -> None:
        """Steps 1..H-1 of a single-layer horizon for one chunk of m rows, written to
        ``block[1:]`` (H, m, F) in physical units.

        Step 1 from ``first.T @ [1, inp0, h].T``; then each step's matmul of ``fed.T``
        with ``[1, s, h].T`` yields the next gates and the current output
        (``_horizon_weights``). Transposed, every gate block and the state are
        contiguous (m-long rows), which the elementwise passes run fastest on.
        """
        first_t, fed_t = self._fused_t  # type: ignore[misc]
        m, u, nf = h.shape[0], self._units, self._nf
        # Columns padded to a multiple of PAD_ROWS (zeros): OpenBLAS computes a
        # column that sits in a partial block of the matrix (or in a small matrix) with
        # another summation order, so without this a row's forecast would depend on
        # how many rows were forecast with it (differences ~1e-6 after 29 steps).
        mp = _padded(m)
        g4 = 4 * u
        a0 = np.zeros((first_t.shape[1], mp), np.float32)  # [1; inp0; h]
        a0[0, :m] = 1.0
        a0[1 : 1 + inp0.shape[1], :m] = inp0.T
        a0[1 + inp0.shape[1] :, :m] = h.T
        z = np.empty((fed_t.shape[0], mp), np.float32)  # [gates; y]
        zg = z[:g4]
        np.matmul(first_t, a0, out=zg)
        a = np.zeros((fed_t.shape[1], mp), np.float32)  # [1; s; h], h written in place
        a[0, :m] = 1.0
        a[1 : 1 + nf, :m] = scaled.T
        hs = a[1 + nf :]
        ct = np.zeros((u, mp), np.float32)
        ct[:, :m] = c.T
        tmp = np.empty((u, mp), np.float32)
        i_g, f_g, o_g, g_g = zg[:u], zg[u : 2 * u], zg[2 * u : 3 * u], zg[3 * u :]
        gates = zg[: 3 * u]
        ys = block[1:]  # scaled outputs first, converted to physical units at the end
        last = ys.shape[0] - 1
        for k in range(ys.shape[0]):
            np.tanh(zg, out=zg)  # i/2, f/2, o/2 pre-halved: tanh; candidate: tanh
            gates *= 0.5
            gates += 0.5  # sigmoid(z) = (1 + tanh(z / 2)) / 2
            ct *= f_g
            np.multiply(i_g, g_g, out=tmp)
            ct += tmp
            np.tanh(ct, out=hs)
            hs *= o_g
            if k == last:  # only this step's output is needed
                ys[k] = (fed_t[g4:] @ a)[:, :m].T
                break
            np.matmul(fed_t, a, out=z)
            a[1 : 1 + nf] = z[g4:]
            ys[k] = z[g4:, :m].T
        ys *= self._std
        ys += self._mean

    def _rn_buffers(self, mp: int, horizon: int) -> dict[str, FloatArray]:
        """This thread's buffers for a chunk of mp (padded) rows (a few sizes kept)."""
        cache: dict[tuple[int, int], dict[str, FloatArray]] | None = getattr(
            self._local, "bufs", None
        )
        if cache is None:
            cache = self._local.bufs = {}
        bufs = cache.get((mp, horizon))
        if bufs is None:
            gates_w = self._fused_rn[0]  # type: ignore[index]
            u, nf = self._units, self._nf
            bufs = {
                "a": np.empty((gates_w.shape[1], mp), np.float32),  # [inp; 2h; 1]
                "z": np.empty((4 * u, mp), np.float32),
                "c": np.empty((u, mp), np.float32),
                "tmp": np.empty((u, mp), np.float32),
                "y": np.empty((nf, mp), np.float32),
                "yt": np.empty((mp, nf), np.float32),
                "ht": np.empty((mp, u), np.float32),
                "t": np.empty((nf, mp), np.float32),
                "level": np.empty((nf, mp), np.float32),
                "scale": np.empty((nf, mp), np.float32),
                "x": np.empty((horizon, nf, mp), np.float32),
            }
            recent = list(cache.items())[-3:]
            cache.clear()
            cache.update(recent)
            cache[(mp, horizon)] = bufs
        return bufs

    def _horizon_rownorm(self, rows_: IndexArray, block: FloatArray) -> None:
        """Steps 1..H-1 of the single-layer per-row-normalised horizon for one chunk of
        rows, written to ``block[1:]`` (H, m, F) physical; ``block[0]`` holds the held
        forecasts. Same recurrence as the generic loop in :meth:`forecast` (a forecast
        fed back as the next reading, the frame following it):

        * transposed layout (gate blocks and state are contiguous m-long rows), columns
          padded to a multiple of PAD_ROWS (see _horizon_fused: a row's forecast is
          then the same bits whatever rows run with it);
        * one matmul per step of ``[inp; 2h; 1]`` for the gates (the bias last, so
          it is added to the finished sum as _cell adds it) and one of the head;
        * the sigmoid gates are kept as ``1 + tanh(z/2)`` (= 2 sigmoid(z): one pass
          instead of two), so ``c' = (c (1 + t_f) + (1 + t_i) g) / 2`` and the kernel
          keeps ``2h = (1 + t_o) tanh(c')``, the halving folded into the weights that
          multiply h. Scaling by 2 is exact, so these are the same bits as the
          sigmoid form;
        * the frame advances in place on (F, m) rows (RowNorm.advance_t, the bits of
          RowNorm.update); all buffers are preallocated per thread.

        With this OpenBLAS the output is the same bits as the step-by-step loop's
        (tests/unit/test_engines.py); a different summation order anywhere would not
        stay small: in a per-row frame the float32 rounding of a ~100 kPa forecast is
        ~1e-5 of a small scale, and 29 fed-back steps amplified such differences to
        ~1e-3 (scaled) in a few rows of 10,000 (docs/performance.md).
        """
        gates_w, head_w, head_b = self._fused_rn  # type: ignore[misc]
        norm = self._frame.norm
        assert norm is not None
        m, u, nf = rows_.size, self._units, self._nf
        horizon = block.shape[0]
        mp = _padded(m)
        # Step 1's inputs exactly as the generic loop computes them (row layout, padded
        # rows: zero state, level 0, scale 1): the first fed-back reading is the held
        # forecast, and the previous reading is derived from the state.
        h0 = np.zeros((mp, u), np.float32)
        h0[:m] = self._h[0, rows_]
        level0 = np.zeros((mp, nf), np.float32)
        level0[:m] = self._level[rows_]
        scale0 = np.ones((mp, nf), np.float32)
        scale0[:m] = self._scale[rows_]
        x0 = np.zeros((mp, nf), np.float32)
        x0[:m] = block[0]
        _, inp0, level0, scale0 = self._inputs(x0, x0, h0, level0, scale0)

        b = self._rn_buffers(mp, horizon)
        a, zg, ct, tmp, y, t = b["a"], b["z"], b["c"], b["tmp"], b["y"], b["t"]
        yt, ht = b["yt"], b["ht"]
        level, scale, xs = b["level"], b["scale"], b["x"]
        fin = inp0.shape[1]
        a[-1] = 1.0
        a[:fin] = inp0.T
        hb = a[fin:-1]  # 2h, written in place every step
        np.multiply(h0.T, np.float32(2), out=hb)
        zs = a[:nf]  # the scaled reading of the step
        dxs = a[nf : 2 * nf] if self._change_input else None
        ct[:, :m] = self._c[0, rows_].T
        ct[:, m:] = 0.0
        level[:] = level0.T
        scale[:] = scale0.T
        xs[0] = x0.T
        sig = zg[: 3 * u]
        i_g, f_g, o_g, g_g = zg[:u], zg[u : 2 * u], zg[2 * u : 3 * u], zg[3 * u :]
        for k in range(1, horizon):
            np.matmul(gates_w, a, out=zg)
            np.tanh(zg, out=zg)  # i/2, f/2, o/2 pre-halved: tanh; candidate: tanh
            sig += 1.0  # 2 sigmoid(z) = 1 + tanh(z / 2)
            ct *= f_g
            np.multiply(i_g, g_g, out=tmp)
            ct += tmp
            ct *= 0.5
            np.tanh(ct, out=hb)
            hb *= o_g
            # The head in row layout (a transposed copy of 2h): OpenBLAS sums a
            # (2 x U) @ (U x m) product in another order than _cell's (m x U) @ (U x 2),
            # and with it the horizon would differ from the step-by-step one
            # (bits, but in a per-row frame float32 rounding of the physical forecast
            # is amplified up to ~1e-3 in some rows). Costs ~7 % of the horizon.
            np.copyto(ht, hb.T)
            np.matmul(ht, head_w, out=yt)
            np.copyto(y, yt.T)
            y += head_b
            if self._residual:
                y += zs  # the head predicts the change from this reading
            xk = xs[k]
            np.multiply(y, scale, out=xk)
            xk += level
            if k == horizon - 1:
                break
            # The forecast is the next reading: the frame follows it, then the inputs.
            norm.advance_t(level, scale, xk, t)
            np.subtract(xk, level, out=zs)
            zs /= scale
            if dxs is not None:
                np.subtract(xk, xs[k - 1], out=dxs)
                dxs /= scale
        block[1:] = xs[1:, :, :m].transpose(0, 2, 1)

    def reset_rows(self, rows: IndexArray) -> None:
        idx = check_rows(rows, self.n_rows)
        self._h[:, idx] = 0.0
        self._c[:, idx] = 0.0
        self._last[idx] = np.nan
        self._level[idx], self._scale[idx] = self._frame.fresh(idx.size)

    def add_rows(self, n: int) -> int:
        if n < 0:
            raise InputError(f"cannot add {n} rows")
        first = self.n_rows
        zeros = np.zeros((self._layers, n, self._units), np.float32)
        self._h = np.concatenate([self._h, zeros], axis=1)
        self._c = np.concatenate([self._c, zeros], axis=1)
        self._last = np.concatenate([self._last, np.full((n, self._nf), np.nan, np.float32)])
        level, scale = self._frame.fresh(n)
        self._level = np.concatenate([self._level, level])
        self._scale = np.concatenate([self._scale, scale])
        return first

    def remove_rows(self, rows: IndexArray) -> None:
        idx = np.unique(check_rows(rows, self.n_rows))
        self._h = np.delete(self._h, idx, axis=1)
        self._c = np.delete(self._c, idx, axis=1)
        self._last = np.delete(self._last, idx, axis=0)
        self._level = np.delete(self._level, idx, axis=0)
        self._scale = np.delete(self._scale, idx, axis=0)

    def snapshot(self, rows: IndexArray) -> RowState:
        idx = check_rows(rows, self.n_rows)
        return RowState(
            h=self._h[:, idx],
            c=self._c[:, idx],
            last_forecast=self._last[idx],
            level=self._level[idx],
            scale=self._scale[idx],
        )

    def restore(self, rows: IndexArray, state: RowState) -> None:
        idx = check_rows(rows, self.n_rows)
        check_row_state(state, idx.size, self._layers, self._units, self._nf)
        self._h[:, idx] = state.h
        self._c[:, idx] = state.c
        self._last[idx] = state.last_forecast
        fresh_level, fresh_scale = self._frame.fresh(idx.size)
        self._level[idx] = fresh_level if state.level is None else state.level
        self._scale[idx] = fresh_scale if state.scale is None else state.scale
