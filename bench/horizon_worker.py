"""Horizon worker round trip: one tick's horizon and records, in the loop or in the
child (``pipeline/horizon_worker.py``), for growing fleets.

For each fleet size the same ticks are applied by two ``ForecastStep`` objects built
as the service builds them (the shipped artifact, its serving plan): one computes the
horizon and formats the records in the loop (``encode_records``, as the sink does),
the other queues them in a worker and waits for the answer (``apply`` then
``collect``; the records formatted in the child). Printed per tick, median of
``--ticks`` after two warm-up ticks:

* ``in the loop``: ``apply`` with the horizon + ``encode_records`` (the baseline);
* ``with the worker``: ``apply`` (the step, the snapshot, queueing the job) +
  ``collect`` (waiting for the answer, unpickling it): the tick's latency when the
  loop has nothing else to do;
* ``loop CPU with the worker``: the loop thread's CPU over the same calls (what the
  worker saves the loop).

Usage::

    .venv/bin/python bench/horizon_worker.py [--tanks 1000 10000] [--ticks 10]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import machine, table
from models.anomaly import AnomalyScorer
from models.artifact import load_artifact, load_forecaster
from models.serving import ServingPlan
from pipeline.assembler import ClosedTick
from pipeline.config import default_model_dir
from pipeline.forecast_step import ForecastStep
from pipeline.horizon_worker import HorizonWorker
from pipeline.sinks.forecasts import encode_records

REPORTED = (1, 5, 15, 30)
ENCODE_ARGS = (60.0, REPORTED, "bench", "tank.readings", {"pressure_kpa": ["lstm"] * 5})


def _step(n: int) -> ForecastStep:
    art = load_artifact(default_model_dir())
    engine = load_forecaster(default_model_dir(), "numpy", 0)
    step = ForecastStep(
        engine,
        AnomalyScorer(0, warmup=2),
        30,
        REPORTED,
        art.scaler.std,
        ServingPlan.from_artifact(art),
    )
    step.ensure_capacity(n)
    return step


def _tick(t: int, n: int) -> ClosedTick:
    k = np.arange(n)
    x = np.column_stack((240 + 5 * np.sin(t / 7 + k), 18 + np.cos(t / 5 + k)))
    return ClosedTick(
        tick=t,
        trigger="complete",
        rows=k.astype(np.intp),
        x=x.astype(np.float32),
        ts=np.full(n, t * 60.0),
        prev_tick=np.full(n, t - 1 if t else -9, np.int64),
        reset_reason=np.full(n, 1 if t == 0 else 0, np.int8),
        partitions=np.zeros(n, np.int32),
        offsets=np.arange(n, dtype=np.int64),
        kafka_ts=np.zeros(n),
    )


def measure(n: int, ticks: int, worker: HorizonWorker) -> list[str]:
    ids: list[str | None] = [f"T{k:05d}" for k in range(n)]
    plain, offloaded = _step(n), _step(n)
    offloaded.worker = worker
    loop_ms, worker_ms, worker_cpu_ms = [], [], []
    for t in range(ticks + 2):
        ct = _tick(t, n)
        t0 = time.perf_counter()
        out = plain.apply(ct, True)
        records = encode_records(out, ids, *ENCODE_ARGS)
        loop_ms.append((time.perf_counter() - t0) * 1000)
        t0, c0 = time.perf_counter(), time.thread_time()
        out2 = offloaded.apply(ct, True, ids)
        offloaded.collect()
        worker_ms.append((time.perf_counter() - t0) * 1000)
        worker_cpu_ms.append((time.thread_time() - c0) * 1000)
        assert out2.encoded == records, "the worker's records differ"
    loop_ms, worker_ms, worker_cpu_ms = loop_ms[2:], worker_ms[2:], worker_cpu_ms[2:]
    return [
        f"{n:,}",
        f"{statistics.median(loop_ms):.1f}",
        f"{statistics.median(worker_ms):.1f}",
        f"{statistics.median(worker_cpu_ms):.1f}",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tanks", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--ticks", type=int, default=10)
    args = parser.parse_args()
    print(f"machine: {machine()}", flush=True)
    worker = HorizonWorker(default_model_dir())
    try:
        if not worker.ready(60):
            print("the horizon worker did not start", file=sys.stderr)
            return 1
        worker.configure(ENCODE_ARGS)
        rows = [measure(n, args.ticks, worker) for n in args.tanks]
    finally:
        worker.close()
    print(
        "\nOne tick's horizon (30 steps) and forecast records, median ms per tick "
        f"over {args.ticks} ticks\n"
    )
    print(
        table(
            ["tanks", "in the loop (baseline)", "with the worker: wall", "with it: loop CPU"],
            rows,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
