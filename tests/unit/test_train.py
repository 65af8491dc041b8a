"""Training end to end on a tiny synthetic history (a few tanks, 1-2 epochs)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.artifact import load_artifact, load_forecaster
from models.train import TrainConfig, train
from tests.conftest import REPO

T0 = pd.Timestamp("2024-03-01T00:00:00Z")


def write_history(path: Path, tanks: int = 3, ticks: int = 400, seed: int = 0) -> Path:
    """Smooth daily-ish curves + noise, a few missing readings and one refill event."""
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(ticks):
        ts = (T0 + pd.Timedelta(minutes=k)).strftime("%Y-%m-%dT%H:%M:%SZ")
        for j in range(tanks):
            if rng.random() < 0.03:
                continue
            p = 101.3 + 1.5 * np.sin(k / 40 + j) + rng.normal(0, 0.005)
            t = 12.0 + 4.0 * np.sin(k / 60 + 2 * j) + rng.normal(0, 0.01)
            event = "refill" if (j == 0 and k == 150) else ""
            rows.append(f"{ts},T{j + 1:02d},{p:.3f},{t:.3f},{event}")
    path.write_text("ts,tank_id,pressure_kpa,temperature_c,event\n" + "\n".join(rows) + "\n")
    return path


def tiny_config(data: Path, out: Path, **kw: object) -> TrainConfig:
    base: dict[str, object] = {
        "data": (data,),
        "out": out,
        "seed": 3,
        "units": 4,
        "window": 16,
        "epochs": 2,
        "patience": 2,
        "evaluate": False,
        "progress": False,
    }
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("train")
    data = write_history(root / "h.csv")
    result = train(tiny_config(data, root / "art"))
    return data, result.out


def test_artifact_has_the_documented_contents(trained: tuple[Path, Path]) -> None:
    data, out = trained
    a = load_artifact(out)
    meta = a.metadata
    assert meta["format_version"] == 2
    assert meta["features"] == ["pressure_kpa", "temperature_c"]
    assert meta["tick_interval_s"] == 60.0 and meta["max_gap_ticks"] == 10
    assert meta["units_per_layer"] == 4 and meta["layers"] == 1
    assert meta["residual"] is True and meta["change_input"] is True
    tr = meta["training"]
    assert tr["seed"] == 3 and tr["batch_size"] == 3 and tr["window"] == 16
    assert len(tr["data_fingerprint_sha256"]) == 64
    assert tr["split_ticks"]["validation_start"] < tr["split_ticks"]["holdout_start"]
    assert len(tr["history"]["loss"]) == tr["epochs_run"] >= 1
    assert meta["parameters"] > 0 and meta["size_bytes"]["weights.npz"] > 0
    assert (out / "plots" / "loss.png").stat().st_size > 1000
    assert a.model_version.startswith("lstm-4x1-")
    # The scaler comes from the training slice only: mean of the first 70% of ticks.
    frame = pd.read_csv(data)
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    cut = T0 + pd.Timedelta(
        minutes=tr["split_ticks"]["validation_start"] - tr["split_ticks"]["first_tick"]
    )
    train_mean = frame[frame["ts"] < cut][["pressure_kpa", "temperature_c"]].mean().to_numpy()
    np.testing.assert_allclose(a.scaler.mean, train_mean, rtol=1e-5)


def test_saved_keras_model_and_numpy_engine_agree(trained: tuple[Path, Path]) -> None:
    _, out = trained
    engines = [load_forecaster(out, engine=e, n_rows=2) for e in ("numpy", "keras")]
    rng = np.random.default_rng(0)
    x = np.array([[101.3, 12.0], [102.0, 14.0]], np.float32)
    std = load_artifact(out).scaler.std
    for _ in range(20):
        x = (x + rng.normal(0, 0.02, x.shape)).astype(np.float32)
        mask = rng.random(2) < 0.8
        ys = [e.step(x, mask) for e in engines]
        np.testing.assert_allclose(ys[0] / std, ys[1] / std, atol=1e-5, equal_nan=True)
    np.testing.assert_allclose(
        engines[0].forecast(10) / std, engines[1].forecast(10) / std, atol=1e-5
    )


def test_training_is_reproducible_by_seed(trained: tuple[Path, Path], tmp_path: Path) -> None:
    data, out = trained
    again = train(tiny_config(data, tmp_path / "again")).out
    with np.load(out / "weights.npz") as a, np.load(again / "weights.npz") as b:
        for name in a.files:
            np.testing.assert_array_equal(a[name], b[name])
    meta_a = json.loads((out / "metadata.json").read_text())
    meta_b = json.loads((again / "metadata.json").read_text())
    assert meta_a["scaler"] == meta_b["scaler"]
    assert meta_a["training"]["history"] == meta_b["training"]["history"]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tankwatch.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_bad_paths_are_one_line_errors(tmp_path: Path) -> None:
    proc = _cli("train", "--data", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("tankwatch: error: training data")
    assert "Traceback" not in proc.stderr
    proc = _cli(
        "evaluate", "--model", str(tmp_path / "nope"), "--data", str(REPO / "pyproject.toml")
    )
    assert proc.returncode == 2
    assert "tankwatch: error: model artifact" in proc.stderr and "Traceback" not in proc.stderr


def test_evaluation_uses_the_training_holdout(trained: tuple[Path, Path], tmp_path: Path) -> None:
    from models.evaluate import EvalConfig, evaluate

    data, out = trained
    summary = evaluate(EvalConfig(model=out, data=(data,), out=tmp_path / "rep", progress=False))
    split = load_artifact(out).metadata["training"]["split_ticks"]
    assert summary["holdout"]["rule"].startswith("the training holdout")
    start = pd.Timestamp(summary["holdout"]["start"]).timestamp()
    assert start == split["holdout_start"] * 60.0
    assert summary["holdout"]["ticks"] == split["end"] - split["holdout_start"]


def test_defaults_never_point_at_the_shipped_artifact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from models.artifact import default_model_dir
    from pipeline.config import Settings
    from tankwatch.cli import build_parser

    for var in ("TANKWATCH_MODEL", "TANKWATCH_TRAIN_OUT", "TANKWATCH_EVAL_OUT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)  # anywhere but the repository
    parser = build_parser()
    ev = parser.parse_args(["evaluate"])
    tr = parser.parse_args(["train"])
    shipped = default_model_dir().resolve()
    # The same default model for evaluate and run, wherever the command runs from.
    assert Path(ev.model).resolve() == shipped == Settings.from_env(environ={}).model_dir
    assert Path(ev.data[0]).is_file() and Path(tr.data[0]) == Path(ev.data[0])
    # Outputs go below the current directory, never into the shipped artifact.
    assert (tmp_path / ev.out).resolve() != shipped and (tmp_path / tr.out).resolve() != shipped
    assert ev.out == "tankwatch-eval" and tr.out == "tankwatch-model"
    assert tr.interval is None and tr.split == "time" and ev.holdout_fraction is None
