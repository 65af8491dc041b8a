"""Checkpoint encoding benchmark: the ``tank.state`` records of a whole fleet.

Times what a checkpoint does before it produces anything -- snapshot the tanks' state
and encode one JSON record per tank -- on the shipped model, two ways in the same run:
the per-tank path the pipeline had before (``ForecastStep.snapshot`` -> a dict per
``TankState`` through ``json.dumps``; the unit tests' reference encoder, the baseline)
and the columnar one it uses now (``snapshot_columns`` -> ``encode_columns``). Checks
that both give the same bytes. Usage::

    .venv/bin/python bench/checkpoint.py [--tanks 1000 10000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models.anomaly import AnomalyScorer
from models.artifact import load_artifact, load_forecaster
from pipeline.assembler import ClosedTick
from pipeline.checkpoint import encode_columns
from pipeline.config import default_model_dir
from pipeline.forecast_step import ForecastStep
from tests.unit.test_checkpoint import reference_encode_state


def fleet_step(n: int, ticks: int = 3) -> ForecastStep:
    """A ForecastStep of the shipped model with ``n`` tanks that applied ``ticks`` ticks."""
    art = load_artifact(default_model_dir())
    engine = load_forecaster(default_model_dir(), "numpy", 0)
    step = ForecastStep(engine, AnomalyScorer(0, warmup=2), 30, (1, 5, 15, 30), art.scaler.std)
    step.ensure_capacity(n)
    rows = np.arange(n)
    rng = np.random.default_rng(0)
    for t in range(ticks):
        x = np.column_stack([240 + rng.normal(0, 2, n), 18 + rng.normal(0, 0.5, n)])
        step.apply(
            ClosedTick(
                tick=t,
                trigger="complete",
                rows=rows.astype(np.intp),
                x=x.astype(np.float32),
                ts=np.full(n, t * 60.0),
                prev_tick=np.full(n, t - 1, np.int64),
                reset_reason=np.zeros(n, np.int8),
                partitions=(rows % 4).astype(np.int32),
                offsets=rows.astype(np.int64),
                kafka_ts=np.zeros(n),
            )
        )
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tanks", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print("| tanks | round | per tank (baseline) ms | columns ms | speed-up | same bytes |")
    print("|---:|---:|---:|---:|---:|---|")
    for n in args.tanks:
        step = fleet_step(n)
        tanks = [(f"T{r:05d}", r) for r in range(n)]
        last = np.full(step.capacity, 2, np.int64)
        part = (np.arange(step.capacity) % 4).astype(np.int32)
        for k in range(args.rounds):
            t0 = time.perf_counter()
            a = [reference_encode_state(s, "g", "m", "i") for s in step.snapshot(tanks, last, part)]
            t1 = time.perf_counter()
            b = encode_columns(step.snapshot_columns(tanks, last, part), "g", "m", "i")
            t2 = time.perf_counter()
            base, new = (t1 - t0) * 1000, (t2 - t1) * 1000
            print(f"| {n:,} | {k + 1} | {base:.0f} | {new:.0f} | {base / new:.1f}x | {a == b} |")


if __name__ == "__main__":
    main()
