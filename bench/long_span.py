"""Long-span evaluation benchmark: cost must follow the readings, not the calendar.

Generates an archive shaped like a real plant export (issue 15): 35 tanks, one file
each in four folders with repeating names, semicolon-separated with decimal commas,
gauge pressure in bar (negative under vacuum), 1-second readings in short runs spread
over a month (about 38,000 readings, 2.6 million seconds). A 1-second model (the
shipped model's weights, re-labelled with ``tick_interval_s`` 1 and gauge pressure:
the weights do not change the cost) evaluates it through ``tankwatch evaluate`` in a
child process; the table shows wall time and the child's peak RSS against the target
(< 30 s, < 500 MB on 2 cores), and the grid rows streamed against the dense grid of
the span that the evaluation used to build. Usage::

    .venv/bin/python bench/long_span.py [--tanks 35] [--readings 38000] [--days 30]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGET_S = 30.0
TARGET_MB = 500.0
FOLDERS = ("valve1", "valve2", "pump", "line")


def write_archive(root: Path, tanks: int, readings: int, days: float, seed: int = 0) -> int:
    """One file per tank; each tank's runs (2-4, minutes long) at random days. Returns
    the number of readings written."""
    rng = np.random.default_rng(seed)
    t0 = pd.Timestamp("2024-05-01T00:00:00Z").timestamp()
    per_tank = readings // tanks
    total = 0
    for j in range(tanks):
        runs = int(rng.integers(2, 5))
        lengths = np.full(runs, per_tank // runs)
        lengths[: per_tank - lengths.sum()] += 1
        starts = np.sort(rng.uniform(0, days * 86400 - 3600, runs)).round()
        lines = ["Zeit;Druck;Temp"]
        for start, n in zip(starts, lengths, strict=True):
            k = np.arange(n)
            ts = t0 + start + k
            p_bar = 0.03 * np.sin(k / 30 + j) - 0.01 + rng.normal(0, 0.0005, n)
            t_c = 25 + 3 * np.sin(k / 90 + j) + rng.normal(0, 0.02, n)
            stamps = pd.to_datetime(ts, unit="s").strftime("%d.%m.%Y %H:%M:%S")
            lines += [
                f"{s};{p:.5f};{t:.3f}".replace(".", ",").replace(",", ".", 2)
                for s, p, t in zip(stamps, p_bar, t_c, strict=True)
            ]  # decimal commas; the date's two dots stay
            total += int(n)
        path = root / FOLDERS[j % len(FOLDERS)] / f"{j // len(FOLDERS)}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return total


def one_second_model(out: Path) -> Path:
    """The shipped model's weights as a 1-second gauge-pressure artifact."""
    from models.artifact import default_model_dir

    shutil.copytree(default_model_dir(), out)
    meta_path = out / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["tick_interval_s"] = 1.0
    meta["pressure_reference"] = "gauge"
    meta["training"]["data_fingerprint_sha256"] = "0" * 64  # not this data: score all of it
    meta.pop("value_range", None)
    meta_path.write_text(json.dumps(meta))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tanks", type=int, default=35)
    ap.add_argument("--readings", type=int, default=38000)
    ap.add_argument("--days", type=float, default=30.0)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="long-span-") as tmp:
        root = Path(tmp)
        n = write_archive(root / "export", args.tanks, args.readings, args.days)
        files = sorted(
            str(p.relative_to(root / "export")) for p in (root / "export").rglob("*.csv")
        )
        model = one_second_model(root / "model")
        cmd = [
            sys.executable, "-m", "tankwatch.cli", "evaluate", "--model", str(model),
            "--data", *files, "--sep", ";", "--decimal", ",", "--time-col", "Zeit",
            "--time-format", "%d.%m.%Y %H:%M:%S", "--pressure-col", "Druck",
            "--pressure-unit", "bar", "--pressure-reference", "gauge",
            "--temperature-col", "Temp", "--event-col", "none", "--tank-from-filename",
            "--out", str(root / "eval"), "--quiet",
        ]  # fmt: skip
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=root / "export", capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        if proc.returncode != 0:
            sys.exit(f"evaluate failed:\n{proc.stderr}")
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        peak_mb = usage.ru_maxrss / 1024.0
        cpu_s = usage.ru_utime + usage.ru_stime
        summary = json.loads((root / "eval" / "evaluation.json").read_text())
        ticks = pd.read_csv(root / "eval" / "ticks.csv.gz", usecols=["tank_id", "ts"])
        span = pd.to_datetime(ticks["ts"]).agg(["min", "max"])
        span_s = (span["max"] - span["min"]).total_seconds()
        inp = summary["input"]

    print(f"long-span evaluation: {args.tanks} tanks, 1 s ticks, {n:,} readings over "
          f"{span_s / 86400:.1f} days (dense grid would be {span_s + 1:,.0f} ticks)\n")  # fmt: skip
    load = os.getloadavg()[0]
    print(f"(load average {load:.1f} on {os.cpu_count()} cores during the run: on a shared "
          "machine wall time is CPU time stretched by the other jobs)\n")  # fmt: skip
    print("| measure | value | target | ok |")
    print("|---|---:|---:|---|")
    print(f"| readings used | {inp['rows_used']:,} | {n:,} | {inp['rows_used'] == n} |")
    print(f"| tanks | {len(inp['tanks'])} | {args.tanks} | {len(inp['tanks']) == args.tanks} |")
    print(f"| ticks scored | {summary['holdout']['ticks']:,} | - | |")
    print(f"| per-tick rows | {len(ticks):,} | {n:,} | {len(ticks) == n} |")
    print(f"| wall time, s | {seconds:.1f} | < {TARGET_S:g} | {seconds < TARGET_S} |")
    print(f"| CPU time (user + sys), s | {cpu_s:.1f} | - | |")
    print(f"| peak RSS, MB | {peak_mb:.0f} | < {TARGET_MB:g} | {peak_mb < TARGET_MB} |")


if __name__ == "__main__":
    main()
