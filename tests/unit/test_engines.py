"""Both inference engines against a Keras stateful reference model, plus their contracts.

The reference is the plain Keras model (``models.network.build_model`` with a mask
input) with one permanent row per tank, fed one step at a time: a tank that is not in
the engine's fleet is simply masked there, which is exactly what snapshot/remove/add/
restore must reproduce. Tolerance: 1e-5 in scaled units.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import numpy as np
import pytest

from models.engines.base import Forecaster, RowState
from models.engines.keras_engine import KerasEngine
from models.engines.numpy_engine import NumpyEngine
from models.engines.rownorm import RowNorm
from models.scaler import Scaler
from tankwatch.errors import InputError
from tests.conftest import REPO

F = 2
SCALER = Scaler(np.array([250.0, 20.0], np.float32), np.array([20.0, 5.0], np.float32))
TOL = 1e-5
#: Per-row normalisation as ``tankwatch train`` writes it (fast alphas so the frame
#: moves a lot within the test).
NORM = RowNorm(0.2, 0.1, np.array([5.0, 1.0], np.float32), np.array([0.05, 0.01], np.float32))


def random_weights(
    units: int, layers: int, seed: int, change_input: bool = False
) -> dict[str, np.ndarray]:
    """Weights in the weights.npz layout, large enough to exercise the nonlinearity."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for layer in range(layers):
        fin = (2 * F if change_input else F) if layer == 0 else units
        out[f"lstm{layer}_kernel"] = rng.normal(0, 0.6, (fin, 4 * units)).astype(np.float32)
        out[f"lstm{layer}_recurrent"] = rng.normal(0, 0.4, (units, 4 * units)).astype(np.float32)
        out[f"lstm{layer}_bias"] = rng.normal(0, 0.3, 4 * units).astype(np.float32)
    out["dense_kernel"] = rng.normal(0, 0.5, (units, F)).astype(np.float32)
    out["dense_bias"] = rng.normal(0, 0.1, F).astype(np.float32)
    return out


class KerasReference:
    """The Keras stateful model itself, one permanent row per tank, one step per call.

    With ``change`` it is given the true change since each tank's previous reading
    (kept here, independently of the engines' derivation of it).
    """

    def __init__(
        self,
        weights: dict[str, np.ndarray],
        n_tanks: int,
        units: int,
        layers: int,
        residual: bool,
        change: bool,
        norm: RowNorm | None = None,
    ):
        import tensorflow as tf

        from models.network import arrays_to_weights, build_model, lstm_layers

        self.model = build_model(
            n_tanks,
            1,
            F,
            units,
            layers,
            with_mask_input=True,
            residual=residual,
            change_input=change,
        )
        arrays_to_weights(self.model, weights)
        self.fn = tf.function(lambda inputs: self.model(inputs, training=False))
        self.vars = [v for layer in lstm_layers(self.model) for v in layer.states]
        self.last = np.full((n_tanks, F), np.nan, np.float32)
        self.prev = np.full((n_tanks, F), np.nan, np.float32)  # previous scaled reading
        self.change = change
        self.n = n_tanks
        # Per-row frame, kept here with its own scalar arithmetic (not RowNorm.update).
        self.norm = norm
        self.level = np.full((n_tanks, F), np.nan)
        self.scale = np.zeros((n_tanks, F)) + (norm.scale0 if norm else 0.0)
        self.prev_x = np.full((n_tanks, F), np.nan)  # previous physical reading

    def _frame(self, x: np.ndarray, tanks: np.ndarray, level: np.ndarray, scale: np.ndarray):
        """Update level/scale of ``tanks`` with x (physical) in place, elementwise."""
        assert self.norm is not None
        for k in tanks:
            for f in range(F):
                if np.isnan(level[k, f]):
                    level[k, f] = x[k, f]
                    continue
                s = (1 - self.norm.scale_alpha) * scale[k, f]
                s += self.norm.scale_alpha * abs(x[k, f] - level[k, f])
                scale[k, f] = max(s, self.norm.floor[f])
                level[k, f] = (1 - self.norm.level_alpha) * level[k, f]
                level[k, f] += self.norm.level_alpha * x[k, f]

    def _normed_call(self, x, prev_x, mask, level, scale) -> np.ndarray:
        """Physical next-step output of a per-row-normalised step (state advances)."""
        self._frame(x, np.flatnonzero(mask), level, scale)
        z = np.where(mask[:, None], (x - level) / scale, 0.0).astype(np.float32)
        inputs = [z[:, None, :]]
        if self.change:
            dx = np.nan_to_num((x - prev_x) / scale).astype(np.float32)
            inputs.append(np.where(mask[:, None], dx, 0.0).astype(np.float32)[:, None, :])
        inputs.append(mask[:, None])
        y = self.fn(inputs).numpy()[:, 0]
        return y * scale + level

    def _call(self, xs: np.ndarray, prev: np.ndarray, mask: np.ndarray) -> np.ndarray:
        inputs = [xs[:, None, :]]
        if self.change:
            inputs.append(np.nan_to_num(xs - prev)[:, None, :])
        inputs.append(mask[:, None])
        return self.fn(inputs).numpy()[:, 0]

    def step(self, x: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if self.norm is not None:
            out = self._normed_call(x, self.prev_x, mask, self.level, self.scale)
            self.last[mask] = out[mask]
            self.prev_x[mask] = x[mask]
            return self.last.copy()
        xs = np.where(mask[:, None], SCALER.transform(x), 0.0).astype(np.float32)
        y = self._call(xs, self.prev, mask)
        self.last[mask] = SCALER.inverse(y[mask])
        self.prev[mask] = xs[mask]
        return self.last.copy()

    def reset(self, tanks: list[int]) -> None:
        keep = np.ones((self.n, 1), np.float32)
        keep[tanks] = 0.0
        for v in self.vars:
            v.assign(v.numpy() * keep)
        self.last[tanks] = np.nan
        self.prev[tanks] = np.nan
        self.prev_x[tanks] = np.nan
        self.level[tanks] = np.nan
        if self.norm is not None:
            self.scale[tanks] = self.norm.scale0

    def forecast(self, horizon: int) -> np.ndarray:
        saved = [v.numpy() for v in self.vars]
        out = [self.last.copy()]
        if self.norm is not None:
            level, scale, prev_x = self.level.copy(), self.scale.copy(), self.prev_x.copy()
            for _ in range(horizon - 1):
                x = out[-1]
                y = self._normed_call(x, prev_x, np.ones(self.n, bool), level, scale)
                prev_x = x
                out.append(y)
            for v, s in zip(self.vars, saved, strict=True):
                v.assign(s)
            return np.stack(out)
        prev = self.prev.copy()
        for _ in range(horizon - 1):
            xs = np.nan_to_num(SCALER.transform(out[-1]))
            y = self._call(xs, prev, np.ones(self.n, bool))
            prev = xs
            out.append(SCALER.inverse(y))
        for v, s in zip(self.vars, saved, strict=True):
            v.assign(s)
        return np.stack(out)


def make_engine(
    kind: str,
    weights: dict[str, np.ndarray],
    n_rows: int,
    residual: bool = False,
    change: bool = False,
    norm: RowNorm | None = None,
) -> Forecaster:
    if kind == "numpy":
        return NumpyEngine(weights, SCALER, n_rows, residual, change, norm)
    return KerasEngine(weights, SCALER, n_rows, residual, change, norm)


def assert_close(actual: np.ndarray, expected: np.ndarray) -> None:
    """Scaled-units comparison; NaN (never stepped) must match NaN."""
    a = (np.asarray(actual) - SCALER.mean) / SCALER.std
    e = (np.asarray(expected) - SCALER.mean) / SCALER.std
    np.testing.assert_allclose(a, e, rtol=0, atol=TOL, equal_nan=True)


@pytest.mark.parametrize(
    ("kind", "residual", "change", "normed", "layers"),
    [
        ("numpy", True, True, True, 2),  # what tankwatch train builds
        ("keras", True, True, True, 2),
        ("numpy", True, True, True, 1),  # ... as shipped: the single-layer horizon kernel
        ("numpy", False, False, True, 1),
        ("numpy", True, True, False, 2),  # before per-row normalisation
        ("keras", True, True, False, 2),
        ("numpy", False, False, False, 2),  # the plain architecture
        ("keras", False, False, False, 2),
    ],
)
def test_engine_matches_keras_reference_through_masks_resets_and_fleet_changes(
    kind: str, residual: bool, change: bool, normed: bool, layers: int
) -> None:
    units, n_tanks, ticks = 8, 9, 120
    weights = random_weights(units, layers, seed=3, change_input=change)
    norm = NORM if normed else None
    ref = KerasReference(weights, n_tanks, units, layers, residual, change, norm)
    engine = make_engine(kind, weights, 5, residual, change, norm)
    fleet = [0, 1, 2, 3, 4]  # fleet[row] = tank id; the engine only knows rows
    parked: dict[int, RowState] = {}  # tanks removed from the fleet, with their state
    rng = np.random.default_rng(11)
    x = SCALER.mean + SCALER.std * rng.normal(0, 1.0, (n_tanks, F)).astype(np.float32)
    checked_forecasts = 0
    for t in range(ticks):
        x = (x + SCALER.std * rng.normal(0, 0.3, (n_tanks, F))).astype(np.float32)
        present = np.zeros(n_tanks, bool)
        present[fleet] = True
        mask = present & (rng.random(n_tanks) < 0.75)
        # Boundary resets of single rows.
        for row, tank in enumerate(fleet):
            if rng.random() < 0.03:
                engine.reset_rows(np.array([row]))
                ref.reset([tank])
        x_rows = x[fleet].copy()
        m_rows = mask[fleet]
        x_rows[~m_rows] = np.nan  # masked rows may carry anything
        got = engine.step(x_rows, m_rows)
        want = ref.step(x, mask)
        assert_close(got, want[fleet])
        if t % 20 == 7:
            rows = np.array(sorted(rng.choice(len(fleet), size=3, replace=False)))
            fc = engine.forecast(6, rows)
            assert fc.shape == (6, 3, F)
            assert_close(fc, ref.forecast(6)[:, np.array(fleet)[rows]])
            checked_forecasts += 1
        # Fleet changes every 20 ticks: park one tank (snapshot + remove), bring one
        # back (add + restore) or admit a never-seen tank (add, zero state).
        if t % 20 == 19:
            row = int(rng.integers(len(fleet)))
            tank = fleet.pop(row)
            parked[tank] = engine.snapshot(np.array([row]))
            engine.remove_rows(np.array([row]))
        if t % 20 == 9:
            outside = [k for k in range(n_tanks) if k not in fleet]
            tank = int(rng.choice(outside))
            first = engine.add_rows(1)
            assert first == len(fleet)
            fleet.append(tank)
            if tank in parked:
                engine.restore(np.array([first]), parked.pop(tank))
            else:
                ref.reset([tank])
        assert engine.n_rows == len(fleet)
    assert checked_forecasts >= 5


@pytest.mark.parametrize("kind", ["numpy", "keras"])
def test_row_normalised_engine_is_invariant_to_each_tanks_level(kind: str) -> None:
    """Tanks shifted by +60 °C and +400 kPa (each its own offset) get the same
    forecasts, shifted by the same offset: the network only sees x - level."""
    weights = random_weights(8, 1, seed=4, change_input=True)
    base = make_engine(kind, weights, 4, True, True, NORM)
    shifted = make_engine(kind, weights, 4, True, True, NORM)
    offset = np.array([[400.0, 60.0], [-90.0, -15.0], [0.0, 60.0], [1000.0, 0.0]], np.float32)
    rng = np.random.default_rng(8)
    x = SCALER.mean + SCALER.std * rng.normal(size=(4, F)).astype(np.float32)
    for _ in range(40):
        x = (x + SCALER.std * rng.normal(0, 0.05, (4, F))).astype(np.float32)
        y0 = base.step(x, np.ones(4, bool))
        y1 = shifted.step(x + offset, np.ones(4, bool))
        np.testing.assert_allclose(y1 - offset, y0, rtol=0, atol=2e-3)
    np.testing.assert_allclose(shifted.forecast(30) - offset, base.forecast(30), rtol=0, atol=5e-3)


@pytest.mark.parametrize("kind", ["numpy", "keras"])
def test_non_finite_unmasked_input_raises_before_any_state_change(kind: str) -> None:
    engine = make_engine(kind, random_weights(4, 1, seed=1), 3)
    x = np.array([[250, 20], [240, 19], [260, 21]], np.float32)
    engine.step(x, np.ones(3, bool))
    before = engine.snapshot(np.arange(3))
    bad = x.copy()
    bad[1, 0] = np.inf
    with pytest.raises(InputError, match=r"rows \[1\]"):
        engine.step(bad, np.ones(3, bool))
    after = engine.snapshot(np.arange(3))
    np.testing.assert_array_equal(before.h, after.h)
    np.testing.assert_array_equal(before.c, after.c)
    np.testing.assert_array_equal(before.last_forecast, after.last_forecast)
    # The same NaN in a masked row is fine and leaves that row alone.
    bad[1, 0] = np.nan
    engine.step(bad, np.array([True, False, True]))
    np.testing.assert_array_equal(engine.snapshot(np.array([1])).h, before.h[:, [1]])


@pytest.mark.parametrize("kind", ["numpy", "keras"])
def test_shape_errors_are_input_errors(kind: str) -> None:
    engine = make_engine(kind, random_weights(4, 1, seed=1), 2)
    with pytest.raises(InputError):
        engine.step(np.zeros((3, F), np.float32), np.ones(3, bool))
    with pytest.raises(InputError):
        engine.step(np.zeros((2, F), np.float32), np.ones(3, bool))
    with pytest.raises(InputError):
        engine.reset_rows(np.array([2]))
    with pytest.raises(InputError):
        engine.forecast(0)
    with pytest.raises(InputError):
        engine.restore(np.array([0]), engine.snapshot(np.array([0, 1])))


def test_numpy_forecast_leaves_live_state_untouched_and_starts_with_held_forecast() -> None:
    weights = random_weights(6, 1, seed=5)
    a, b = NumpyEngine(weights, SCALER, 4), NumpyEngine(weights, SCALER, 4)
    rng = np.random.default_rng(0)
    for _ in range(10):
        x = (SCALER.mean + SCALER.std * rng.normal(size=(4, F))).astype(np.float32)
        ya = a.step(x, np.ones(4, bool))
        yb = b.step(x, np.ones(4, bool))
        fc = a.forecast(30)
        np.testing.assert_array_equal(fc[0], ya)
        assert np.isfinite(fc).all()
        np.testing.assert_array_equal(ya, yb)  # the forecast did not move a's state


def test_numpy_rows_are_independent_of_batch_composition() -> None:
    """A row stepped alone gives the same bits as inside the full batch (catch-up relies
    on it; the products run on padded rows, see numpy_engine.PAD_ROWS)."""
    weights = random_weights(8, 2, seed=9)
    full, single = NumpyEngine(weights, SCALER, 6), NumpyEngine(weights, SCALER, 6)
    rng = np.random.default_rng(4)
    for _ in range(20):
        x = (SCALER.mean + SCALER.std * rng.normal(size=(6, F))).astype(np.float32)
        y_full = full.step(x, np.ones(6, bool))
        for row in range(6):
            m = np.zeros(6, bool)
            m[row] = True
            y_single = single.step(x, m)
        np.testing.assert_array_equal(y_single, y_full)


def test_numpy_reset_add_remove_semantics() -> None:
    engine = NumpyEngine(random_weights(4, 1, seed=2), SCALER, 0)
    assert engine.n_rows == 0
    assert engine.add_rows(3) == 0
    x = np.array([[250, 20], [240, 19], [260, 21]], np.float32)
    y = engine.step(x, np.ones(3, bool))
    engine.reset_rows(np.array([1]))
    snap = engine.snapshot(np.arange(3))
    assert np.isnan(snap.last_forecast[1]).all()
    assert not snap.h[:, 1].any() and not snap.c[:, 1].any()
    np.testing.assert_array_equal(snap.last_forecast[[0, 2]], y[[0, 2]])
    assert engine.add_rows(2) == 3
    engine.remove_rows(np.array([0, 3]))
    after = engine.snapshot(np.arange(engine.n_rows))
    assert engine.n_rows == 3
    np.testing.assert_array_equal(after.last_forecast[1], y[2])  # old row 2 moved up to 1
    np.testing.assert_array_equal(after.h[:, 1], snap.h[:, 2])


def _run(code: str) -> Any:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )


def test_numpy_path_never_imports_tensorflow() -> None:
    code = (
        "import sys, numpy as np\n"
        "from models.artifact import load_forecaster\n"
        "f = load_forecaster('models/artifacts/default', engine='numpy', n_rows=2)\n"
        "f.step(np.array([[250., 20.], [251., 21.]], np.float32), np.ones(2, bool))\n"
        "f.forecast(5)\n"
        "import models.engines.keras_engine, models.network, models.anomaly\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')]\n"
        "print(bad)\n"
        "assert not bad\n"
    )
    proc = _run(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_forecast_over_many_rows_matches_keras_engine() -> None:
    """More rows than one forecast chunk (NumPy runs the horizon in row chunks)."""
    from models.engines.numpy_engine import FUSED_CHUNK

    n = 2 * FUSED_CHUNK + 37
    weights = random_weights(4, 1, seed=8, change_input=True)
    engines = [make_engine(kind, weights, n, True, True) for kind in ("numpy", "keras")]
    rng = np.random.default_rng(2)
    for _ in range(3):
        x = (SCALER.mean + SCALER.std * rng.normal(size=(n, F))).astype(np.float32)
        mask = rng.random(n) < 0.9
        for e in engines:
            e.step(x, mask)
    rows = np.sort(rng.choice(n, size=FUSED_CHUNK + 5, replace=False))
    assert_close(engines[0].forecast(8), engines[1].forecast(8))
    assert_close(engines[0].forecast(8, rows), engines[1].forecast(8)[:, rows])


@pytest.mark.parametrize("kind", ["numpy", "keras"])
def test_empty_fleet_grows_and_shrinks_back_to_empty(kind: str) -> None:
    engine = make_engine(kind, random_weights(4, 1, seed=6, change_input=True), 0, True, True)
    empty = np.zeros((0, F), np.float32)
    assert engine.step(empty, np.zeros(0, bool)).shape == (0, F)
    assert engine.forecast(5).shape == (5, 0, F)
    assert engine.add_rows(2) == 0
    y = engine.step(np.array([[250, 20], [240, 19]], np.float32), np.ones(2, bool))
    assert np.isfinite(y).all()
    fc = engine.forecast(3, np.array([1]))
    np.testing.assert_array_equal(fc[0], y[[1]])
    engine.remove_rows(np.array([0, 1]))
    assert engine.n_rows == 0
    assert engine.step(empty, np.zeros(0, bool)).shape == (0, F)


def _horizon_float64(engine: Any, weights: dict[str, np.ndarray], horizon: int) -> np.ndarray:
    """The same recurrence in float64 from the engine's state (single layer, Keras gate
    order i, f, c, o): what both float32 kernels approximate."""
    w = {k: np.asarray(v, np.float64) for k, v in weights.items()}
    mean, std = SCALER.mean.astype(np.float64), SCALER.std.astype(np.float64)
    snap = engine.snapshot(np.arange(engine.n_rows))
    h, c = snap.h[0].astype(np.float64), snap.c[0].astype(np.float64)
    last = snap.last_forecast.astype(np.float64)
    residual, change = engine._residual, engine._change_input
    u = h.shape[1]
    s = (last - mean) / std
    head = h @ w["dense_kernel"] + w["dense_bias"]
    dx = np.where(np.isfinite(s).all(axis=1)[:, None], head, 0.0)  # s - (s - head(h))
    x = np.concatenate([s, dx], axis=1) if change else s
    out = [last]

    def sig(v: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-v))

    for _ in range(1, horizon):
        z = x @ w["lstm0_kernel"] + h @ w["lstm0_recurrent"] + w["lstm0_bias"]
        i, f, g, o = (
            sig(z[:, :u]),
            sig(z[:, u : 2 * u]),
            np.tanh(z[:, 2 * u : 3 * u]),
            sig(z[:, 3 * u :]),
        )
        c = f * c + i * g
        h = o * np.tanh(c)
        y = h @ w["dense_kernel"] + w["dense_bias"] + (s if residual else 0.0)
        out.append(y * std + mean)
        x = np.concatenate([y, y - s], axis=1) if change else y
        s = y
    return np.stack(out)


@pytest.mark.parametrize(("residual", "change"), [(True, True), (True, False), (False, False)])
def test_fused_horizon_matches_the_step_by_step_cell(residual: bool, change: bool) -> None:
    """The single-layer horizon (folded weights, transposed, threaded) against the same
    recurrence in float64 and against the generic loop of ``_cell`` calls it replaces;
    rows never stepped stay NaN; one thread and two give the same numbers.

    Both kernels are float32: over 29 fed-back steps on these random weights each
    strays up to ~1.4e-5 (scaled units) from float64 on a few elements (99.9 % within
    1e-5); on the shipped artifact the fused one is the closer (docs/performance.md)."""
    weights = random_weights(4 if change else 2, 1, seed=12, change_input=change)
    n = 3 * 512 + 11
    engine = make_engine("numpy", weights, n, residual, change)
    rng = np.random.default_rng(4)
    for _ in range(4):
        x = (SCALER.mean + SCALER.std * rng.normal(size=(n, F))).astype(np.float32)
        engine.step(x, rng.random(n) < 0.9)
    engine.reset_rows(np.arange(0, n, 101))  # never stepped again: NaN
    rows = np.sort(rng.choice(n, size=900, replace=False))
    fused_t = engine._fused_t
    assert fused_t is not None
    engine.horizon_threads = 2
    threaded = engine.forecast(30)
    engine.horizon_threads = 1
    single = engine.forecast(30)
    some = engine.forecast(30, rows)
    few = {k: engine.forecast(30, rows[:k]) for k in (1, 3, 17, 100)}
    engine._fused_t = None  # the generic path: one _cell call per step
    generic = engine.forecast(30)
    exact = _horizon_float64(engine, weights, 30)
    for got in (single, generic):
        err = np.abs((got - exact) / SCALER.std)[1:, ~np.isnan(exact[1]).any(axis=1)]
        assert err.max() < 3e-5 and np.quantile(err, 0.999) < TOL
    # A row's horizon does not depend on which rows it is forecast with (a rebalance
    # changes them; restored output must match a single instance's), bit for bit.
    np.testing.assert_array_equal(some, single[:, rows])
    np.testing.assert_array_equal(threaded, single)
    for k, got in few.items():
        np.testing.assert_array_equal(got, single[:, rows[:k]])
    sc = lambda a: (a - SCALER.mean) / SCALER.std  # noqa: E731
    np.testing.assert_allclose(sc(single), sc(generic), rtol=0, atol=3e-5, equal_nan=True)
    assert np.isnan(single[:, ::101]).all()
    np.testing.assert_array_equal(engine.forecast(1), single[:1])


def test_row_normalised_horizon_is_bit_identical_whatever_rows_it_runs_with() -> None:
    """The shipped (per-row normalised) model: a tank's 30-tick forecast is the same bits
    alone, in a subset or in the whole fleet; restarted and rebalanced instances forecast
    a tank with other rows, and the reliability suites compare their output at 1e-6."""
    from models.artifact import load_forecaster

    n = 300
    engine = load_forecaster(REPO / "models" / "artifacts" / "default", "numpy", n_rows=n)
    rng = np.random.default_rng(11)
    level = np.array([101.3, 15.0], np.float32)
    for _ in range(40):
        engine.step((level + rng.normal(0, 0.5, (n, F))).astype(np.float32), np.ones(n, bool))
    full = engine.forecast(30)
    for size in (1, 3, 17, 43, 120, 299):
        rows = np.sort(rng.choice(n, size, replace=False))
        np.testing.assert_array_equal(engine.forecast(30, rows), full[:, rows])


def test_row_normalised_step_is_bit_identical_whatever_rows_it_runs_with() -> None:
    """The shipped model: a tank's step is the same bits whether it is stepped with the
    whole fleet, with an incomplete tick's rows, or alone (a catch-up tick), at whatever
    row it sits. A restarted instance restores its tanks into other rows and catches up
    tick by tick, and the reliability suites compare it with an uninterrupted run.

    Engine ``a`` steps every tank each tick in row order; ``b`` holds the tanks in
    permuted rows and steps each tick's readings in several calls of random size
    (1..n). Readings near 0 keep the network output's last bits visible in the physical
    forecast (next to a level of ~200 kPa most of them are rounded away, which made the
    reliability drift rare and confined to one tank, docs/reliability.md)."""
    from models.artifact import load_forecaster

    n_tanks, capacity, ticks = 13, 21, 60  # neither a multiple of 4 nor of 16
    model = REPO / "models" / "artifacts" / "default"
    a = load_forecaster(model, "numpy", n_rows=capacity)
    b = load_forecaster(model, "numpy", n_rows=capacity)
    rng = np.random.default_rng(5)
    row_b = rng.permutation(capacity)[:n_tanks]  # tank k sits in row row_b[k] of b
    tanks = np.arange(n_tanks)
    level = rng.normal(0, 0.3, (n_tanks, F))
    sizes = set()
    for t in range(ticks):
        if t == ticks // 2:  # a refill-style reset of one tank mid-way
            a.reset_rows(np.array([3]))
            b.reset_rows(row_b[[3]])
        x = (level + rng.normal(0, 0.5, (n_tanks, F))).astype(np.float32)
        x_a = np.zeros((capacity, F), np.float32)
        x_a[:n_tanks] = x
        mask_a = np.zeros(capacity, bool)
        mask_a[:n_tanks] = True
        y_a = a.step(x_a, mask_a)[:n_tanks]
        x_b = np.zeros((capacity, F), np.float32)
        x_b[row_b] = x
        order = rng.permutation(n_tanks)
        cuts = np.sort(rng.choice(np.arange(1, n_tanks), rng.integers(1, 5), replace=False))
        for group in np.split(order, cuts):
            mask_b = np.zeros(capacity, bool)
            mask_b[row_b[group]] = True
            sizes.add(group.size)
            y_b = b.step(x_b, mask_b)
        np.testing.assert_array_equal(y_b[row_b], y_a, err_msg=f"tick {t}")
        sa, sb = a.snapshot(tanks), b.snapshot(row_b)
        for name in ("h", "c", "last_forecast", "level", "scale"):
            np.testing.assert_array_equal(
                getattr(sb, name), getattr(sa, name), err_msg=f"{name}, tick {t}"
            )
    assert 1 in sizes and len(sizes) > 4  # alone, and several batch compositions


def _stepped_row_normalised(
    weights: dict[str, np.ndarray], n: int, residual: bool, change: bool, seed: int
) -> NumpyEngine:
    """A per-row-normalised engine after random walks at each tank's own level, with
    masks and resets; some rows never stepped again (their horizon is NaN)."""
    engine = NumpyEngine(weights, SCALER, n, residual, change, NORM)
    rng = np.random.default_rng(seed)
    level = SCALER.mean + SCALER.std * rng.normal(0, 2, (n, F))
    walk = np.zeros((n, F))
    for t in range(30):
        walk += SCALER.std * rng.normal(0, 0.05, (n, F))
        engine.step((level + walk).astype(np.float32), rng.random(n) < 0.9)
        if t == 20:
            engine.reset_rows(rng.choice(n, n // 50, replace=False))
    engine.reset_rows(np.arange(0, n, 101))  # never stepped again: NaN
    return engine


@pytest.mark.parametrize(("residual", "change"), [(True, True), (True, False), (False, False)])
def test_row_normalised_horizon_kernel_gives_the_step_by_step_bits(
    residual: bool, change: bool
) -> None:
    """The single-layer per-row-normalised horizon (``_horizon_rownorm``: transposed,
    fused, threaded) against the straightforward loop of ``_cell`` steps it replaces,
    on random states: the same bits, for all rows, subsets of every padding case, more
    rows than a chunk, and two threads. (Its docstring says why nothing looser would
    do: in a per-row frame float32 differences grow to ~1e-3 in some rows.)"""
    from models.engines.numpy_engine import FUSED_CHUNK

    n = 2 * FUSED_CHUNK + 37
    weights = random_weights(8, 1, seed=21, change_input=change)
    engine = _stepped_row_normalised(weights, n, residual, change, seed=5)
    assert engine._fused_rn is not None
    engine.horizon_threads = 1
    fused = engine.forecast(30)
    engine.horizon_threads = 2
    threaded = engine.forecast(30)
    engine.horizon_threads = 1
    rng = np.random.default_rng(6)
    subsets = {k: np.sort(rng.choice(n, k, replace=False)) for k in (1, 3, 17, 500, 512, 1100)}
    parts = {k: engine.forecast(30, rows) for k, rows in subsets.items()}
    engine._fused_rn = None  # the generic path: one _cell call per step
    generic = engine.forecast(30)
    np.testing.assert_array_equal(fused, generic)
    np.testing.assert_array_equal(threaded, generic)
    for k, rows in subsets.items():
        np.testing.assert_array_equal(parts[k], generic[:, rows])
    assert np.isnan(fused[:, ::101]).all()
    assert np.isfinite(np.delete(fused, np.s_[::101], axis=1)).all()


def test_row_normalised_horizon_kernel_gives_the_step_by_step_bits_on_the_shipped_model() -> None:
    """The same on the shipped artifact (10,000-tank horizons are what the pipeline
    serves; bench/engine.py times both paths)."""
    from models.artifact import load_forecaster

    n = 3000
    engine = load_forecaster(REPO / "models" / "artifacts" / "default", "numpy", n_rows=n)
    assert isinstance(engine, NumpyEngine) and engine._fused_rn is not None
    rng = np.random.default_rng(13)
    level = np.array([101.3, 15.0]) + rng.normal(0, [1.0, 5.0], (n, F))
    walk = np.zeros((n, F))
    for t in range(60):
        walk += rng.normal(0, [0.03, 0.08], (n, F))
        engine.step((level + walk).astype(np.float32), rng.random(n) < 0.9)
        if t % 20 == 0:
            engine.reset_rows(rng.choice(n, 30, replace=False))
    fused = engine.forecast(30)
    engine._fused_rn = None
    np.testing.assert_array_equal(fused, engine.forecast(30))


def test_row_normalised_frame_advances_in_place_with_the_bits_of_update() -> None:
    """``RowNorm.advance_t`` (the horizon's in-place frame) is ``RowNorm.update`` for
    rows that have a level, bit for bit."""
    rng = np.random.default_rng(3)
    level = (SCALER.mean + SCALER.std * rng.normal(size=(500, F))).astype(np.float32)
    scale = np.abs(rng.normal(0, 1, (500, F))).astype(np.float32) * NORM.scale0
    x = (level + SCALER.std * rng.normal(0, 0.5, (500, F))).astype(np.float32)
    want_l, want_s = NORM.update(level, scale, x)
    lt, st, tmp = level.T.copy(), scale.T.copy(), np.empty((F, 500), np.float32)
    NORM.advance_t(lt, st, np.ascontiguousarray(x.T), tmp)
    np.testing.assert_array_equal(lt.T, want_l)
    np.testing.assert_array_equal(st.T, want_s)
    lr, sr = level.copy(), scale.copy()
    NORM.advance(lr, sr, x, np.empty_like(x))
    np.testing.assert_array_equal(lr, want_l)
    np.testing.assert_array_equal(sr, want_s)
