"""Artifact loading and validation: every broken part is named in the error."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from models.artifact import FEATURES, load_artifact, load_forecaster
from models.engines.base import Forecaster
from tankwatch.errors import ArtifactError, TankwatchError
from tests.conftest import REPO

DEFAULT = REPO / "models" / "artifacts" / "default"


@pytest.fixture
def art(tmp_path: Path) -> Path:
    """A writable copy of the committed default artifact."""
    dst = tmp_path / "art"
    shutil.copytree(DEFAULT, dst)
    return dst


def edit_meta(path: Path, change: Callable[[dict], None]) -> None:
    meta = json.loads((path / "metadata.json").read_text())
    change(meta)
    (path / "metadata.json").write_text(json.dumps(meta))


def test_default_artifact_loads_and_matches_the_contract() -> None:
    a = load_artifact(DEFAULT)
    assert a.features == FEATURES
    assert a.metadata["units"] == {"pressure_kpa": "kPa", "temperature_c": "degC"}
    assert a.tick_interval_s > 0 and a.max_gap_ticks >= 1
    inputs = 4 if a.change_input else 2  # levels (+ their change)
    assert a.weights["lstm0_kernel"].shape == (inputs, 4 * a.units_per_layer)
    assert a.model_version.startswith(f"lstm-{a.units_per_layer}x{a.layers}-")
    f = load_forecaster(DEFAULT, n_rows=3)
    assert isinstance(f, Forecaster)
    assert (f.n_rows, f.n_features) == (3, 2)


def test_keras_and_numpy_forecasters_from_one_artifact_agree() -> None:
    x = np.array([[250.0, 20.0], [255.0, 22.0]], np.float32)
    engines = [load_forecaster(DEFAULT, engine=e, n_rows=2) for e in ("numpy", "keras")]
    outs = [[e.step(x + k, np.ones(2, bool)) for k in range(5)] for e in engines]
    std = load_artifact(DEFAULT).scaler.std
    np.testing.assert_allclose(np.array(outs[0]) / std, np.array(outs[1]) / std, atol=1e-5)


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (lambda p: shutil.rmtree(p), "does not exist"),
        (lambda p: (p / "metadata.json").unlink(), "metadata.json is missing"),
        (lambda p: (p / "metadata.json").write_text("{not json"), "not valid JSON"),
        (lambda p: (p / "metadata.json").write_text("[1, 2]"), "JSON object"),
        (lambda p: (p / "weights.npz").unlink(), "weights.npz is missing"),
        (lambda p: (p / "weights.npz").write_bytes(b"garbage"), "weights.npz is corrupt"),
        (lambda p: (p / "model.keras").unlink(), "model.keras is missing"),
        (lambda p: (p / "model.keras").write_bytes(b"garbage"), "model.keras is corrupt"),
    ],
)
def test_broken_files_are_named(art: Path, breakage: Callable[[Path], None], message: str) -> None:
    breakage(art)
    with pytest.raises(ArtifactError, match=message):
        load_artifact(art)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.update(format_version=3), "format_version 3 is not supported"),
        (lambda m: m.pop("format_version"), "format_version None"),
        (lambda m: m.update(features=["temperature_c", "pressure_kpa"]), "feature order mismatch"),
        (lambda m: m["units"].update(pressure_kpa="bar"), "units mismatch for pressure_kpa"),
        (lambda m: m.update(scaler={"mean": [1.0], "std": [1.0]}), "scaler.mean"),
        (lambda m: m.update(scaler={"mean": [1.0, 2.0], "std": [1.0, 0.0]}), "std must be > 0"),
        (lambda m: m.update(tick_interval_s=0), "tick_interval_s"),
        (lambda m: m.update(max_gap_ticks="ten"), "max_gap_ticks"),
        (lambda m: m.update(units_per_layer=m["units_per_layer"] + 1), "shape"),
        (lambda m: m.update(layers=m["layers"] + 1), "lacks array 'lstm"),
        (lambda m: m.update(model_version=""), "model_version"),
        (lambda m: m.update(residual="yes"), "residual must be true or false"),
        (lambda m: m.update(residual=False), "change_input requires residual"),
        (lambda m: m.update(change_input=False), "lstm0_kernel has shape"),
    ],
)
def test_bad_metadata_is_named(art: Path, change: Callable[[dict], None], message: str) -> None:
    edit_meta(art, change)
    with pytest.raises(ArtifactError, match=message):
        load_artifact(art)


def test_weights_with_wrong_shape_or_nan_are_rejected(art: Path) -> None:
    with np.load(art / "weights.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["dense_bias"] = np.array([np.nan, 0.0], np.float32)
    np.savez(art / "weights.npz", **arrays)
    with pytest.raises(ArtifactError, match="dense_bias contains NaN"):
        load_artifact(art)
    arrays["dense_bias"] = np.zeros(3, np.float32)
    np.savez(art / "weights.npz", **arrays)
    with pytest.raises(ArtifactError, match="dense_bias has shape"):
        load_artifact(art)


def test_expected_features_is_checked_and_can_be_skipped(art: Path) -> None:
    with pytest.raises(ArtifactError, match="feature order mismatch"):
        load_artifact(art, expected_features=["temperature_c", "pressure_kpa"])
    assert load_artifact(art, expected_features=None).features == FEATURES


def test_unknown_engine_and_keras_weight_mismatch(art: Path) -> None:
    with pytest.raises(ArtifactError, match="unknown engine"):
        load_forecaster(art, engine="torch")
    with np.load(art / "weights.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["dense_bias"] = arrays["dense_bias"] + 1.0
    np.savez(art / "weights.npz", **arrays)
    with pytest.raises(ArtifactError, match="disagree on dense_bias"):
        load_forecaster(art, engine="keras")


def test_artifact_error_is_a_tankwatch_error(tmp_path: Path) -> None:
    with pytest.raises(TankwatchError, match=str(tmp_path / "nope")):
        load_artifact(tmp_path / "nope")
