"""A plant's messy CSV archive through ``replay``, ``train`` and ``evaluate`` (issue 15).

The archive: experiments in nested folders whose file names repeat (``valve1/0.csv``,
``valve2/0.csv``, ...), one file per tank, semicolon-separated with decimal commas,
gauge pressure in bar with negative (vacuum) readings, 1-second readings, and each
tank's runs weeks apart. A few deliberately bad rows must be counted by reason. Each
command runs as the user would run it (``python -m tankwatch.cli``) from a directory
that is not the repository.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tankwatch.codec import pressure_limits
from tankwatch.topics import Topics
from tests.integration.test_replay import consume_all

pytestmark = pytest.mark.integration

T0 = pd.Timestamp("2024-05-02T08:00:00")  # naive local time in the files (UTC)
FOLDERS = ("valve1", "valve2", "pump")
FILES_PER_FOLDER = 2  # 0.csv and 1.csv in every folder: names repeat across folders
RUNS = 2  # runs per file, three weeks apart
RUN_LEN = 240  # 1-second readings per run
BAD_ROWS = {"cannot parse time": 1, "temperature": 1}  # per file, see _write_file


def _tank_value(j: int, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gauge pressure (bar) swinging through zero, and temperature (degC)."""
    p_bar = 0.02 * np.sin(k / 25.0 + j) - 0.005 + 0.001 * j
    t_c = 20.0 + 2.0 * np.sin(k / 40.0 + 2 * j)
    return p_bar, t_c


def _fmt(x: float) -> str:
    return f"{x:.5f}".replace(".", ",")


def _write_file(path: Path, j: int) -> None:
    lines = ["Zeit;Druck;Temp"]
    for run in range(RUNS):
        start = T0 + pd.Timedelta(days=21 * run, hours=j)
        k = np.arange(RUN_LEN)
        p, t = _tank_value(j, k + 1000 * run)
        for i in range(RUN_LEN):
            ts = (start + pd.Timedelta(seconds=int(i))).strftime("%d.%m.%Y %H:%M:%S")
            lines.append(f"{ts};{_fmt(p[i])};{_fmt(t[i])}")
    # Two bad rows per file, in the middle of the first run.
    lines.insert(10, "32.13.2024 99:00:00;0,001;20,0")  # unparseable time
    lines.insert(20, f"{(T0 + pd.Timedelta(hours=j, seconds=500)).strftime('%d.%m.%Y %H:%M:%S')}"
                     ";0,001;kaputt")  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    root = tmp_path_factory.mktemp("plant") / "export"
    files = []
    j = 0
    for folder in FOLDERS:
        for n in range(FILES_PER_FOLDER):
            path = root / "2024" / folder / f"{n}.csv"
            _write_file(path, j)
            files.append(path)
            j += 1
    return root, files


FORMAT = [
    "--sep", ";", "--decimal", ",", "--time-col", "Zeit", "--time-format", "%d.%m.%Y %H:%M:%S",
    "--pressure-col", "Druck", "--pressure-unit", "bar", "--pressure-reference", "gauge",
    "--temperature-col", "Temp", "--event-col", "none", "--tank-from-filename",
]  # fmt: skip
N_FILES = len(FOLDERS) * FILES_PER_FOLDER
GOOD = N_FILES * RUNS * RUN_LEN
EXPECTED_TANKS = sorted(f"{f}-{n}" for f in FOLDERS for n in range(FILES_PER_FOLDER))


def _tankwatch(cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "TANKWATCH_"))}
    return subprocess.run(
        [sys.executable, "-m", "tankwatch.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=env,
    )


def _summary(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.startswith("tankwatch: csv: ")]
    assert len(lines) == 1, stderr
    return lines[0]


def _assert_counts(summary: str, used: int | None = None) -> None:
    read = GOOD + 2 * N_FILES
    assert f"read {read:,} rows from {N_FILES} file(s)" in summary, summary
    assert f"used {used if used is not None else GOOD:,}" in summary, summary
    assert f"dropped {2 * N_FILES:,}" in summary, summary
    assert f"cannot parse time in column 'Zeit' {N_FILES}" in summary, summary
    assert f"temperature in 'Temp' is not a number {N_FILES}" in summary, summary


def test_replay_train_evaluate_a_messy_archive(
    archive: tuple[Path, list[Path]],
    kafka_bootstrap: str,
    make_topics: Callable[..., Topics],
    tmp_path: Path,
) -> None:
    root, files = archive
    rel = [str(f.relative_to(root)) for f in files]
    work = root  # run from the archive's folder, not from the repository

    # --- replay: every valid reading, keyed by the path-derived tank id -------------
    topics = make_topics(partitions=2)
    proc = _tankwatch(
        work, "replay", *rel, *FORMAT, "--bootstrap", kafka_bootstrap,
        "--topic", topics.readings, "--no-progress",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    _assert_counts(_summary(proc.stderr))
    got = consume_all(
        kafka_bootstrap, topics.readings, GOOD, pressure_range=pressure_limits("gauge")
    )
    assert len(got) == GOOD
    per_tank = Counter(r.tank_id for _, _, r in got)
    assert sorted(per_tank) == EXPECTED_TANKS
    assert set(per_tank.values()) == {RUNS * RUN_LEN}
    pressures = np.array([r.pressure_kpa for _, _, r in got])
    assert (pressures < 0).sum() > GOOD // 4  # gauge vacuum readings kept, in kPa
    assert pressures.min() > -3.0 and pressures.max() < 3.0

    # --- train: per-tank split, inferred 1-second interval ---------------------------
    model = tmp_path / "model"
    proc = _tankwatch(
        work, "train", "--data", *rel, *FORMAT, "--split", "per-tank", "--out", str(model),
        "--epochs", "2", "--units", "8", "--window", "16", "--quiet", "--no-evaluate",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    summary = _summary(proc.stderr)
    _assert_counts(summary)
    assert "tick interval 1 s (inferred)" in summary
    import json

    meta = json.loads((model / "metadata.json").read_text())
    assert meta["tick_interval_s"] == 1.0 and meta["tick_interval_source"] == "inferred"
    assert meta["pressure_reference"] == "gauge"
    low, high = meta["value_range"]["pressure_kpa"]
    assert low < 0 < high
    split = meta["training"]["split"]
    assert split["mode"] == "per_tank"
    assert sorted(split["holdout_start_tick_by_tank"]) == EXPECTED_TANKS
    # 70/10/20 of each tank's 480 readings: every tank is in every part.
    assert split["readings"] == {
        "train": N_FILES * 336,
        "validation": N_FILES * 48,
        "holdout": N_FILES * 96,
    }

    # --- evaluate on its own data: the per-tank holdout; per-tick table ------------
    out = tmp_path / "eval"
    proc = _tankwatch(
        work, "evaluate", "--model", str(model), "--data", *rel, *FORMAT,
        "--out", str(out), "--quiet",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr  # same cadence, same reference, same range
    summary = _summary(proc.stderr)
    _assert_counts(summary)
    assert "scored: the training holdout" in summary
    ticks = pd.read_csv(out / "ticks.csv.gz")
    assert len(ticks) == GOOD
    assert sorted(ticks["tank_id"].unique()) == EXPECTED_TANKS
    assert ticks["scored"].sum() == N_FILES * 96
    assert (ticks["pressure_kpa"] < 0).any()
    for h in (1, 5, 15, 30):
        assert f"forecast_pressure_kpa_h{h}" in ticks
    held = ticks[ticks["scored"] == 1]
    assert held["forecast_pressure_kpa_h5"].notna().mean() > 0.8
    times = pd.to_datetime(ticks["ts"], utc=True)
    assert (times.max() - times.min()) > pd.Timedelta(days=20)  # the runs weeks apart

    # The model refuses the data declared in the other pressure reference (one line).
    proc = _tankwatch(
        work, "evaluate", "--model", str(model), "--data", *rel,
        *[a if a != "gauge" else "absolute" for a in FORMAT], "--out", str(tmp_path / "e2"),
        "--allow-drops",
    )  # fmt: skip
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tankwatch: error: model "), proc.stderr
    assert "trained on gauge pressure" in lines[0] and "declared absolute" in lines[0]


def test_collision_and_drop_limit_are_one_line_errors(
    archive: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    root, files = archive
    rel = [str(f.relative_to(root)) for f in files]
    # A template that drops the folder makes valve1/0.csv and valve2/0.csv one tank.
    proc = _tankwatch(
        root, "train", "--data", *rel, *FORMAT, "--tank-id-template", "{stem}",
        "--out", str(tmp_path / "m"),
    )  # fmt: skip
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tankwatch: error: tank id collision")
    assert "valve1/0.csv" in lines[0] and "valve2/0.csv" in lines[0]

    # Absolute limits on gauge data drop every vacuum reading: far above the limit.
    fmt = [a if a != "gauge" else "absolute" for a in FORMAT]
    proc = _tankwatch(root, "train", "--data", *rel, *fmt, "--out", str(tmp_path / "m"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tankwatch: error: "), proc.stderr
    assert "dropped, more than the 3% limit" in lines[0] and "--allow-drops" in lines[0]
    assert "pressure outside 0..5000 kPa (absolute)" in lines[0]
    assert not (tmp_path / "m").exists()


def test_gzip_files_read_the_same(archive: tuple[Path, list[Path]], tmp_path: Path) -> None:
    # The same archive compressed (.csv.gz) gives the same tank ids and counts.
    from producers.csv_source import CsvOptions, load_frame

    root, files = archive
    gz = []
    for f in files:
        target = tmp_path / f.relative_to(root).with_suffix(".csv.gz")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(gzip.compress(f.read_bytes()))
        gz.append(target)
    opts = CsvOptions(
        sep=";", decimal=",", time_col="Zeit", time_format="%d.%m.%Y %H:%M:%S",
        pressure_col="Druck", pressure_unit="bar", pressure_reference="gauge",
        temperature_col="Temp", event_col=None, tank_from_filename=True,
    )  # fmt: skip
    r = load_frame(gz, opts)
    assert sorted(r.frame.tank_id.unique()) == EXPECTED_TANKS
    assert len(r.frame) == GOOD and r.bad_rows == 2 * N_FILES and r.rows_read == GOOD + r.bad_rows
