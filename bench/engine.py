"""Engine benchmark: milliseconds per tick for N tanks, printed as a markdown table.

For N = 100, 1,000, 10,000 (``--sizes``) and the artifact's weights (``--model``):

* naive  — ``model.predict`` on a stateful batch-N Keras model, every tick (the
  straightforward way; a few repetitions only, it is slow);
* step   — each engine's ``step`` with ~10% of rows masked and ~1% reset per tick;
* step+H — ``step`` plus a ``forecast(30)`` of every row; for NumPy also with the
  single-layer horizon kernel switched off (``numpy, step-by-step H``: one ``_cell``
  call per horizon step, the straightforward path; for a per-row-normalised model
  the kernel's forecasts are the same bits, under the global scaler within float32
  rounding) and, with ``--horizon-threads 2``, on two horizon threads;
* matmul — the bare NumPy matrix products of one cell step for N rows (the floor
  any engine doing the same arithmetic can reach).

Ratios are against the same run's numbers, so they hold on any machine. Usage::

    .venv/bin/python bench/engine.py [--model DIR] [--sizes 100 1000 10000]
    # where the time goes, one variant at a time (no table):
    .venv/bin/py-spy record -r 200 -f raw -o prof.txt -- .venv/bin/python bench/engine.py \
        --skip-naive --engines numpy --sizes 10000 --profile 40 --no-step-by-step

The pipeline runs OpenBLAS on one thread (pipeline/bootstrap.py); so should this
(``OPENBLAS_NUM_THREADS=1``), or its default threads spin on a loaded machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from models.artifact import load_artifact, load_forecaster  # noqa: E402
from models.engines.base import Forecaster  # noqa: E402

HORIZON = 30


def timed(fn: Callable[[], object], reps: int, warmup: int = 1) -> float:
    """Best wall time of ``fn`` over ``reps`` runs, in milliseconds.

    The best, not the median: the machine is shared (2 cores, other jobs), and the
    minimum is the least disturbed estimate of the cost (as ``timeit`` advises).
    """
    return timed_both(fn, reps, warmup)[0]


def timed_both(fn: Callable[[], object], reps: int, warmup: int = 1) -> tuple[float, float]:
    """Best wall time and best CPU time (this process, all threads) of ``fn``, ms.

    On a loaded machine the wall time mostly measures the other jobs; the CPU time
    (summed over the threads that did the work) much less so.
    """
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append((time.perf_counter() - t0) * 1000.0)
        cpu.append((time.process_time() - c0) * 1000.0)
    return min(wall), min(cpu)


class Ticks:
    """Pre-generated inputs: random walks, ~10% masked, ~1% of rows reset per tick."""

    def __init__(self, n: int, mean: np.ndarray, std: np.ndarray, count: int = 16) -> None:
        rng = np.random.default_rng(0)
        self.x = (mean + std * rng.normal(0, 0.5, (count, n, 2))).astype(np.float32)
        self.mask = rng.random((count, n)) < 0.9
        self.resets = [np.flatnonzero(rng.random(n) < 0.01) for _ in range(count)]
        self.i = 0

    def next(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        i = self.i % len(self.resets)
        self.i += 1
        return self.x[i], self.mask[i], self.resets[i]


def engine_tick(engine: Forecaster, ticks: Ticks, horizon: int) -> Callable[[], object]:
    def run() -> object:
        x, mask, resets = ticks.next()
        if resets.size:
            engine.reset_rows(resets)
        y = engine.step(x, mask)
        return engine.forecast(horizon) if horizon > 1 else y

    return run


def naive_predict(model_dir: Path, n: int, ticks: Ticks) -> Callable[[], object]:
    """model.predict on a stateful batch-N copy of the trained model, one tick per call."""
    from models.network import arrays_to_weights, build_model

    art = load_artifact(model_dir)
    model = build_model(
        n,
        1,
        2,
        art.units_per_layer,
        art.layers,
        with_mask_input=True,
        residual=art.residual,
        change_input=art.change_input,
    )
    arrays_to_weights(model, art.weights)
    mean, std = art.scaler.mean, art.scaler.std

    def run() -> object:
        x, mask, _ = ticks.next()
        xs = ((x - mean) / std)[:, None, :]
        inputs = [xs]
        if art.change_input:
            inputs.append(np.zeros_like(xs))
        inputs.append(mask[:, None])
        return model.predict(inputs, batch_size=n, verbose=0)

    return run


def bare_matmul(n: int, fin: int, units: int, layers: int, nf: int) -> Callable[[], object]:
    rng = np.random.default_rng(1)
    mats = []
    for layer in range(layers):
        width = (fin if layer == 0 else units) + units
        mats.append(
            (
                rng.normal(size=(n, width)).astype(np.float32),
                rng.normal(size=(width, 4 * units)).astype(np.float32),
            )
        )
    h = rng.normal(size=(n, units)).astype(np.float32)
    head = rng.normal(size=(units, nf)).astype(np.float32)

    def run() -> object:
        for a, b in mats:
            a @ b
        return h @ head

    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default=os.environ.get("TANKWATCH_MODEL", str(ROOT / "models/artifacts/default"))
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--engines", nargs="+", default=["numpy", "keras"])
    parser.add_argument(
        "--skip-naive", action="store_true", help="no model.predict column (no TensorFlow)"
    )
    parser.add_argument(
        "--horizon-threads",
        type=int,
        nargs="+",
        default=[1],
        help="NumPy horizon thread counts to time (one row each)",
    )
    parser.add_argument(
        "--no-step-by-step",
        action="store_true",
        help="no 'numpy, step-by-step H' row (the reference horizon path)",
    )
    parser.add_argument("--only-step-by-step", action="store_true", help="only that row (NumPy)")
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="TICKS",
        help="for a profiler: run TICKS untimed ticks of step + horizon per engine row "
        "(no naive, no matmul, no table)",
    )
    args = parser.parse_args()
    model_dir = Path(args.model)
    art = load_artifact(model_dir)
    fin = art.weights["lstm0_kernel"].shape[0]
    print(
        f"model {art.model_version}: {art.layers} x LSTM({art.units_per_layer}), "
        f"{fin} LSTM inputs; horizon {HORIZON}; best-of-n ms per tick; "
        f"{os.cpu_count()} CPUs",
        file=sys.stderr,
    )
    step_by_step = "only" if args.only_step_by_step else not args.no_step_by_step
    rows = []
    for n in args.sizes:
        ticks = Ticks(n, art.scaler.mean, art.scaler.std)
        if args.profile:
            for kind in args.engines:
                for label, setup in variants(kind, args.horizon_threads, step_by_step):
                    engine = load_forecaster(model_dir, engine=kind, n_rows=n)
                    setup(engine)
                    tick = engine_tick(engine, ticks, HORIZON)
                    for _ in range(args.profile):
                        tick()
                    print(f"  N={n} {label}: {args.profile} ticks", file=sys.stderr)
            continue
        naive_reps = 5 if n <= 1000 else 3
        naive = (
            float("nan")
            if args.skip_naive
            else timed(naive_predict(model_dir, n, ticks), naive_reps, warmup=2)
        )
        mm = timed(bare_matmul(n, fin, art.units_per_layer, art.layers, 2), 50)
        for kind in args.engines:
            for label, setup in variants(kind, args.horizon_threads, step_by_step):
                engine = load_forecaster(model_dir, engine=kind, n_rows=n)
                setup(engine)
                reps = max(15, min(200, int(20000 / n)))
                step, step_cpu = timed_both(engine_tick(engine, ticks, 1), reps, warmup=3)
                step_h, step_h_cpu = timed_both(
                    engine_tick(engine, ticks, HORIZON), max(9, reps // 10), warmup=1
                )
                rows.append((n, label, naive, step, step_cpu, step_h, step_h_cpu, mm))
                print(f"  N={n} {label}: done", file=sys.stderr, flush=True)
    if args.profile:
        return 0
    print(
        "| N | engine | naive predict (a) | step (b) | (b) CPU ms "
        "| step + 30-tick horizon (c) | (c) CPU ms | a / b | bare matmul | b / matmul |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n, label, naive, step, step_cpu, step_h, step_h_cpu, mm in rows:
        print(
            f"| {n:,} | {label} | {naive:.2f} | {step:.3f} | {step_cpu:.3f} | {step_h:.2f} "
            f"| {step_h_cpu:.2f} | {naive / step:.0f}x | {mm:.3f} | {step / mm:.1f}x |"
        )
    return 0


def variants(
    kind: str, threads: list[int], step_by_step: bool | str = True
) -> list[tuple[str, Callable[[Forecaster], None]]]:
    """(label, engine setup) of each row for an engine kind: NumPy's horizon kernel
    on each thread count asked for, then (``step_by_step``; ``"only"``: alone) its
    step-by-step horizon, the reference path."""
    if kind != "numpy":
        return [(kind, lambda engine: None)]
    out: list[tuple[str, Callable[[Forecaster], None]]] = []
    for t in threads if step_by_step != "only" else []:

        def on_threads(engine: Forecaster, t: int = t) -> None:
            engine.horizon_threads = t  # type: ignore[attr-defined]

        out.append(("numpy" if t == 1 else f"numpy, {t} horizon threads", on_threads))

    def reference(engine: Forecaster) -> None:
        engine._fused_t = None  # type: ignore[attr-defined]
        engine._fused_rn = None  # type: ignore[attr-defined]

    if step_by_step:
        out.append(("numpy, step-by-step H", reference))
    return out


if __name__ == "__main__":
    sys.exit(main())
