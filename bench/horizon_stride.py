"""Horizon stride: what computing each tank's horizon every k ticks saves, and costs.

``--horizon-stride k`` (docs/performance.md) computes a tank's horizon every k ticks,
``horizon + k - 1`` ticks ahead, each tank on its own phase; the records in between
carry it at its age. Two tables, every stride and the stride-1 baseline in the same run:

* **speed**: CPU ms per tick of ``ForecastStep.apply`` (step, serving, anomaly scoring
  and the horizon; the shipped model, ``--tanks`` rows all present every tick), rounds
  interleaved over the strides, and without any horizon as the floor;
* **accuracy**: RMSE of the served horizon at the reported leads against the readings
  that came, divided by persistence's, with the damped-Holt baseline beside, on the
  simulator's holdout (the shipped model) and, with ``--3w``, on the unseen 3W wells
  (a model trained on the training wells exactly as ``bench/quality.py`` trains it).

    .venv/bin/python bench/horizon_stride.py                        # speed + simulator
    .venv/bin/python bench/horizon_stride.py --3w ../shared/data/3w # + real data
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import table  # noqa: E402
from models.anomaly import AnomalyScorer  # noqa: E402
from models.artifact import load_artifact, load_forecaster  # noqa: E402
from models.dataprep import TickGrid, build_grid  # noqa: E402
from models.serving import ServingPlan  # noqa: E402
from pipeline.assembler import ClosedTick  # noqa: E402
from pipeline.config import default_model_dir  # noqa: E402
from pipeline.forecast_step import ForecastStep  # noqa: E402

REPORTED = (1, 5, 15, 30)
H = 30


def make_step(model_dir: Path, n: int, stride: int) -> ForecastStep:
    art = load_artifact(model_dir)
    step = ForecastStep(
        load_forecaster(model_dir, "numpy", 0),
        AnomalyScorer(0),
        H,
        REPORTED,
        art.scaler.std,
        ServingPlan.from_artifact(art),
        horizon_stride=stride,
    )
    step.ensure_capacity(n)
    step.assign_phases(np.arange(n), [f"T{i:05d}" for i in range(n)])
    return step


def closed(
    t: int, rows: np.ndarray, x: np.ndarray, prev: np.ndarray, reset: np.ndarray
) -> ClosedTick:
    n = rows.size
    return ClosedTick(
        tick=t,
        trigger="complete",
        rows=rows.astype(np.intp),
        x=x.astype(np.float32),
        ts=np.full(n, float(t)),
        prev_tick=prev.astype(np.int64),
        reset_reason=reset.astype(np.int8),
        partitions=np.zeros(n, np.int32),
        offsets=np.zeros(n, np.int64),
        kafka_ts=np.zeros(n),
    )


# ------------------------------------------------------------------------ speed
def speed(n: int, strides: list[int], rounds: int, ticks: int) -> list[list[Any]]:
    model_dir = default_model_dir()
    variants: list[tuple[str, int, bool]] = [("no horizon (floor)", 1, False)]
    variants += [(f"stride {k}" + (" (baseline)" if k == 1 else ""), k, True) for k in strides]
    steps = {name: make_step(model_dir, n, k) for name, k, _ in variants}
    # The engine's share (the LSTM horizon alone, what bench/engine.py times) beside the
    # whole apply(): wrap each step's engine.forecast with a CPU clock.
    engine_ms: dict[str, list[float]] = {name: [] for name, _, _ in variants}
    for name, _, _ in variants:
        eng = steps[name].engine
        inner = eng.forecast

        def timed(horizon: int, rows: Any = None, _inner: Any = inner, _name: str = name) -> Any:
            c0 = time.process_time()
            try:
                return _inner(horizon, rows)
            finally:
                engine_ms[_name][-1] += (time.process_time() - c0) * 1000

        eng.forecast = timed  # type: ignore[method-assign]
    rng = np.random.default_rng(0)
    rows = np.arange(n)
    x = np.column_stack([240 + rng.normal(0, 2, n), 18 + rng.normal(0, 0.5, n)])
    cpu: dict[str, list[float]] = {name: [] for name, _, _ in variants}
    t = 0
    warm = 2
    for r in range(rounds):
        for name, _, with_h in variants:  # interleaved: same conditions for each
            s = steps[name]
            for i in range(ticks + (warm if r == 0 else 0)):
                tt = t + i
                x = x + rng.normal(0, [0.3, 0.02], (n, 2))
                reset = np.full(n, 1 if tt == 0 else 0)
                ct = closed(tt, rows, x, np.full(n, tt - 1), reset)
                engine_ms[name].append(0.0)
                c0 = time.process_time()
                s.apply(ct, with_horizon=with_h)
                if r > 0 or i >= warm:
                    cpu[name].append((time.process_time() - c0) * 1000)
                else:
                    engine_ms[name].pop()
            print(f"  {n:,} tanks, round {r + 1}: {name} done", file=sys.stderr)
        t += ticks + (warm if r == 0 else 0)
    floor = float(np.mean(cpu[variants[0][0]]))
    base = float(np.mean(cpu["stride 1 (baseline)"])) if 1 in strides else float("nan")
    out = []
    for name, _, with_h in variants:
        per_round = np.asarray(cpu[name]).reshape(rounds, ticks).mean(axis=1)
        mean = float(per_round.mean())
        out.append(
            [
                f"{n:,}",
                name,
                " / ".join(f"{v:.1f}" for v in per_round),
                f"{np.percentile(cpu[name], 99):.1f}",
                f"{mean - floor:.1f}" if with_h else "-",
                f"{(mean - floor) / (base - floor):.2f}" if with_h else "-",
                f"{np.mean(engine_ms[name]):.1f}" if with_h else "-",
            ]
        )
    return out


# --------------------------------------------------------------------- accuracy
def accuracy(model_dir: Path, grid: TickGrid, start: int, strides: list[int]) -> dict[str, Any]:
    """Per stride: (sq error sums (3, len(REPORTED), F) for served / persistence / Holt,
    counts (len(REPORTED), F)), over forecasts made at ticks >= start."""
    n_ticks, n, nf = grid.values.shape
    leads = np.asarray(REPORTED)
    tick_no = grid.ticks()
    row_of = {int(t): i for i, t in enumerate(tick_no.tolist())}
    seg = np.cumsum(grid.boundary, axis=0)  # (K, N) segment number of each tick
    results: dict[int, Any] = {}
    # Stride 1 once more without the per-tank Holt check (models.baselines
    # HoltBaseline.trusted): what the gate alone serves, in the same run.
    runs = [("1, no per-tank Holt check", 1, False)] + [(str(k), k, True) for k in strides]
    for label, k, check in runs:
        step = make_step(model_dir, n, k)
        if not check:
            step.holt.params = dataclasses.replace(step.holt.params, veto_ratio=float("inf"))
        step.assign_phases(np.arange(n), list(grid.tank_ids))
        sq = np.zeros((3, leads.size, nf))
        cnt = np.zeros((leads.size, nf))
        last = np.full(n, -(10**9), np.int64)
        t0 = time.monotonic()
        for i in range(n_ticks):
            rows = np.flatnonzero(grid.present[i])
            if rows.size == 0:
                continue
            t = int(tick_no[i])
            x = grid.values[i, rows]
            reset = grid.boundary[i, rows] | (last[rows] < 0)
            out = step.apply(closed(t, rows, x, last[rows], reset))
            last[rows] = t
            if i < start:
                continue
            holt = step.holt.forecast(H, rows)[leads - 1]  # (R, n, F)
            for j, h in enumerate(leads.tolist()):
                row_of_target = row_of.get(t + h)  # the grid may be sparse
                if row_of_target is None:
                    continue
                target = grid.values[row_of_target, rows]
                # Scored within a segment, as models.evaluate scores: no reset between.
                same = seg[row_of_target, rows] == seg[i, rows]
                ok = (grid.present[row_of_target, rows] & same)[:, None] & np.isfinite(target)
                for m, fc in enumerate((out.horizons[:, j], x, holt[j])):
                    err = np.where(ok, fc - target, 0.0)
                    sq[m, j] += (err.astype(np.float64) ** 2).sum(axis=0)
                cnt[j] += ok.sum(axis=0)
        took = time.monotonic() - t0
        print(f"  stride {label}: {n_ticks} ticks in {took:.0f} s", file=sys.stderr)
        results[label] = (sq, cnt)
    return results


def accuracy_rows(name: str, features: list[str], res: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for k, (sq, cnt) in res.items():  # k: the stride (and variant)
        rmse = np.sqrt(sq / np.maximum(cnt, 1))  # (3, R, F)
        for fi, feat in enumerate(features):
            for j, h in enumerate(REPORTED):
                if h == 1:
                    continue  # the next step is fresh at every stride
                p = rmse[1, j, fi]
                rows.append(
                    [
                        name,
                        feat,
                        h,
                        k,
                        f"{rmse[0, j, fi]:.4g}",
                        f"{rmse[0, j, fi] / p:.3f}",
                        f"{rmse[2, j, fi] / p:.3f}",
                        int(cnt[j, fi]),
                    ]
                )
    return rows


def sim_grid() -> tuple[Path, TickGrid, int]:
    from models.dataprep import load_readings
    from models.evaluate import EvalConfig, _scored

    art_dir = default_model_dir()
    art = load_artifact(art_dir)
    data = REPO / "data" / "history.csv.gz"
    grid = build_grid(load_readings([data]), art.tick_interval_s, art.max_gap_ticks, art.features)
    scored, _ = _scored(art, grid, EvalConfig(model=art_dir, data=(data,), out=art_dir))
    holdout = int(np.argmax(scored.any(axis=1))) if scored.any() else grid.n_ticks
    return art_dir, grid, holdout


def w3_grid(root: Path, work: Path) -> tuple[Path, TickGrid, int]:
    """The unseen wells of ``bench/quality.py``, and a model trained as it trains one
    (its split and default settings)."""
    from bench.quality import frame_of, parser, split_and_train

    art_dir, _, test_runs = split_and_train(root, work, parser().parse_args([]))
    art = load_artifact(art_dir)
    grid = build_grid(frame_of(test_runs), 1.0, art.max_gap_ticks, art.features)
    return art_dir, grid, 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tanks", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--strides", type=int, nargs="+", default=[1, 2, 3, 4])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ticks", type=int, default=12, help="timed ticks per round and stride")
    ap.add_argument("--3w", dest="w3", type=Path, help="the 3W folder (../shared/data/3w)")
    ap.add_argument("--no-speed", action="store_true")
    ap.add_argument("--no-accuracy", action="store_true")
    args = ap.parse_args()
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")  # as the pipeline runs (bootstrap.py)
    if 1 not in args.strides:
        args.strides = [1, *args.strides]  # the baseline is always measured
    if args.w3 is not None and not (args.w3 / "data").is_dir():
        print(f"--3w: {args.w3}/data is not a folder (the 3W data set's root)", file=sys.stderr)
        return 2
    if not args.no_speed:
        rows = []
        for n in args.tanks:
            rows += speed(n, args.strides, args.rounds, args.ticks)
        print(
            "\nCPU ms per tick of ForecastStep.apply (all rows present), mean of each round; "
            "horizon part = minus the no-horizon floor (engine horizon + serving + bounds)\n"
        )
        print(
            table(
                [
                    "tanks",
                    "variant",
                    "mean per round",
                    "p99",
                    "horizon part",
                    "vs stride 1",
                    "of which engine.forecast",
                ],
                rows,
            )
        )
    if not args.no_accuracy:
        rows = []
        art_dir, grid, start = sim_grid()
        feats = list(load_artifact(art_dir).features)
        rows += accuracy_rows(
            "simulator holdout", feats, accuracy(art_dir, grid, start, args.strides)
        )
        if args.w3 is not None:
            with tempfile.TemporaryDirectory() as tmp:
                art_dir, grid, start = w3_grid(args.w3, Path(tmp))
                res = accuracy(art_dir, grid, start, args.strides)
            rows += accuracy_rows("3W unseen wells", feats, res)
        print("\nServed horizon RMSE / persistence (Holt's beside), every stride in one run:\n")
        print(
            table(
                [
                    "data",
                    "feature",
                    "lead",
                    "stride",
                    "RMSE",
                    "served / pers.",
                    "Holt / pers.",
                    "n",
                ],
                rows,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
