"""Shared bits of the pipeline benchmarks: the machine, fleets, fast producing, tables.

Nothing here measures anything by itself; every figure a benchmark prints is measured
in the same run as the baseline it is divided by.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tankwatch.codec import format_ts

T0 = 1_700_000_000.0


def machine() -> str:
    """One line: cores, CPU model, RAM, Python (from /proc, as the docs quote it)."""
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {model}, {mem} RAM, Python {platform.python_version()}"


def fleet_values(
    n_tanks: int, n_ticks: int, interval_s: float, seed: int = 0
) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) of ``n_tanks`` x ``n_ticks`` readings in tick order, as the
    producers encode them (RFC 3339 ``ts``). Smooth cycles plus noise, physical units."""
    rng = np.random.default_rng(seed)
    base_p = 200 + 40 * rng.random(n_tanks)
    base_t = 15 + 10 * rng.random(n_tanks)
    keys = [f"T{k:05d}".encode() for k in range(n_tanks)]
    for t in range(n_ticks):
        phase = 2 * math.pi * t / 96.0 + np.arange(n_tanks)
        p = base_p + 8 * np.sin(phase) + rng.normal(0, 0.5, n_tanks)
        temp = base_t + 3 * np.cos(phase) + rng.normal(0, 0.1, n_tanks)
        ts = format_ts(T0 + t * interval_s + interval_s * 0.5)
        for k in range(n_tanks):
            value = (
                f'{{"tank_id":"{keys[k].decode()}","ts":"{ts}",'
                f'"pressure_kpa":{p[k]:.3f},"temperature_c":{temp[k]:.3f}}}'
            )
            yield keys[k], value.encode()


def producer(bootstrap: str) -> Any:
    """A throughput-tuned producer (idempotent, acks=all, as the pipeline's own)."""
    from kafka import KafkaProducer

    return KafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=20,
        batch_size=512 * 1024,
    )


def produce(bootstrap: str, topic: str, items: Iterator[tuple[bytes, bytes]]) -> tuple[int, float]:
    """Produce everything, flush; returns (count, seconds)."""
    p = producer(bootstrap)
    t0 = time.perf_counter()
    n = 0
    try:
        for key, value in items:
            p.send(topic, key=key, value=value)
            n += 1
        p.flush()
    finally:
        p.close()
    return n, time.perf_counter() - t0


def fast_artifact(src: Path, dst: Path, interval_s: float) -> Path:
    """A copy of an artifact with another tick interval (same weights) -- for paced
    runs at one tick per ``interval_s`` wall seconds with ``ts = now``."""
    import shutil

    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    meta = json.loads((dst / "metadata.json").read_text())
    meta["tick_interval_s"] = interval_s
    (dst / "metadata.json").write_text(json.dumps(meta, indent=2))
    return dst


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` percentile (0..100) of ``values``, NaN if empty."""
    return float(np.percentile(np.asarray(values), q)) if len(values) else math.nan


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table."""
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        out.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(out)
