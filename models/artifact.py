"""Model artifacts: a directory with the Keras model, plain weights and metadata.

Layout (``docs/architecture.md``)::

    model.keras     the trained Keras model (training batch size; stateful)
    weights.npz     the same weights as named float32 arrays (see models.network)
    metadata.json   format_version (2; 1 still read), model_version, features, units, scaler,
                    tick_interval_s, max_gap_ticks, units_per_layer, layers,
                    residual (bool: output = input + head, in scaled units),
                    change_input (bool: the LSTM also sees the change since the
                    previous reading; see models.network),
                    parameters, size_bytes, training{...}, evaluation{...}
    evaluation.md   optional report; plots/*.png

:func:`load_artifact` validates all of it without TensorFlow and raises
:class:`~tankwatch.errors.ArtifactError` naming the file and what is wrong.
:func:`load_forecaster` builds an engine; only ``engine="keras"`` imports TensorFlow.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.bounds import Bounds
from models.engines.base import FloatArray, Forecaster
from models.engines.rownorm import RowNorm
from models.scaler import Scaler
from tankwatch.errors import ArtifactError

__all__ = [
    "FEATURES",
    "FORMAT_VERSION",
    "UNITS",
    "Artifact",
    "default_model_dir",
    "load_artifact",
    "load_forecaster",
    "save_artifact",
    "update_metadata",
]

#: Written by this build. 2 added ``row_norm``, ``bounds``, ``serving``,
#: ``input_range``: a build that reads only 1 refuses such an artifact instead of
#: silently running it without the per-row frame. Both are read.
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
FEATURES: tuple[str, ...] = ("pressure_kpa", "temperature_c")
UNITS: dict[str, str] = {"pressure_kpa": "kPa", "temperature_c": "degC"}
MODEL_FILE = "model.keras"
WEIGHTS_FILE = "weights.npz"
METADATA_FILE = "metadata.json"


def default_model_dir() -> Path:
    """The shipped default artifact, next to the installed ``models`` package.

    Every command (``run``, ``demo``, ``evaluate``) resolves the default model here,
    whatever the current directory; ``TANKWATCH_MODEL`` / ``--model`` override it.
    """
    return Path(__file__).resolve().parent / "artifacts" / "default"


@dataclass(frozen=True)
class Artifact:
    """A validated artifact. ``weights`` follow the layout of :mod:`models.network`."""

    path: Path
    metadata: dict[str, Any]
    weights: dict[str, FloatArray]
    scaler: Scaler
    features: tuple[str, ...]
    units_per_layer: int
    layers: int
    tick_interval_s: float
    max_gap_ticks: int
    model_version: str
    residual: bool = False
    change_input: bool = False
    row_norm: RowNorm | None = None
    bounds: Bounds | None = None
    #: (H, F) source per horizon and feature ("lstm", "persistence", "holt"), from the
    #: holdout skill (models.serving); None: everything from the LSTM.
    serving: tuple[tuple[str, ...], ...] | None = None

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE


def _fail(path: Path, what: str) -> ArtifactError:
    return ArtifactError(f"model artifact {path}: {what}")


def _positive_int(meta: dict[str, Any], key: str, path: Path) -> int:
    value = meta.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _fail(path, f"{METADATA_FILE}: {key} must be an integer >= 1, got {value!r}")
    return value


def _read_metadata(path: Path) -> dict[str, Any]:
    meta_path = path / METADATA_FILE
    if not meta_path.is_file():
        raise _fail(path, f"{METADATA_FILE} is missing")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _fail(path, f"{METADATA_FILE} is not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise _fail(path, f"{METADATA_FILE} must hold a JSON object")
    return meta


def _check_weights(
    path: Path,
    weights: dict[str, FloatArray],
    n_features: int,
    units: int,
    layers: int,
    change_input: bool,
) -> None:
    """Every array present, of the shape the metadata implies, and finite."""
    expected: dict[str, tuple[int, ...]] = {}
    for layer in range(layers):
        fin = (2 * n_features if change_input else n_features) if layer == 0 else units
        expected[f"lstm{layer}_kernel"] = (fin, 4 * units)
        expected[f"lstm{layer}_recurrent"] = (units, 4 * units)
        expected[f"lstm{layer}_bias"] = (4 * units,)
    expected["dense_kernel"] = (units, n_features)
    expected["dense_bias"] = (n_features,)
    for name, shape in expected.items():
        if name not in weights:
            raise _fail(path, f"{WEIGHTS_FILE} lacks array {name!r}")
        if weights[name].shape != shape:
            raise _fail(
                path,
                f"{WEIGHTS_FILE}: {name} has shape {weights[name].shape}, metadata implies {shape}",
            )
        if not np.all(np.isfinite(weights[name])):
            raise _fail(path, f"{WEIGHTS_FILE}: {name} contains NaN or inf")
    extra = sorted(set(weights) - set(expected))
    if extra:
        raise _fail(path, f"{WEIGHTS_FILE} has unexpected arrays {extra} (layers mismatch?)")


def load_artifact(
    path: str | os.PathLike[str], expected_features: Sequence[str] | None = FEATURES
) -> Artifact:
    """Read and validate an artifact directory (no TensorFlow).

    ``expected_features``: the caller's feature order; a different order or set, or
    units other than :data:`UNITS`, raises ArtifactError. Pass None to skip that check.
    """
    root = Path(path)
    if not root.exists():
        raise _fail(root, "directory does not exist")
    if not root.is_dir():
        raise _fail(root, "is not a directory")
    meta = _read_metadata(root)

    version = meta.get("format_version")
    if isinstance(version, bool) or version not in READABLE_VERSIONS:
        raise _fail(
            root,
            f"format_version {version!r} is not supported (this build reads "
            f"{', '.join(str(v) for v in READABLE_VERSIONS)})",
        )
    features = meta.get("features")
    if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
        raise _fail(root, f"{METADATA_FILE}: features must be a list of names")
    if not features:
        raise _fail(root, f"{METADATA_FILE}: features is empty")
    if expected_features is not None and list(expected_features) != features:
        raise _fail(
            root,
            f"feature order mismatch: artifact has {features}, expected {list(expected_features)}",
        )
    units = meta.get("units")
    if not isinstance(units, dict):
        raise _fail(root, f"{METADATA_FILE}: units must be an object feature -> unit")
    for name in features:
        want = UNITS.get(name)
        if units.get(name) != want or want is None:
            raise _fail(
                root,
                f"units mismatch for {name}: artifact has {units.get(name)!r}, expected {want!r}",
            )
    try:
        scaler = Scaler.from_json(meta.get("scaler"), len(features))
    except ValueError as exc:
        raise _fail(root, f"{METADATA_FILE}: {exc}") from None
    interval = meta.get("tick_interval_s")
    if (
        isinstance(interval, bool)
        or not isinstance(interval, int | float)
        or not math.isfinite(interval)
        or interval <= 0
    ):
        raise _fail(
            root, f"{METADATA_FILE}: tick_interval_s must be a number > 0, got {interval!r}"
        )
    max_gap = _positive_int(meta, "max_gap_ticks", root)
    units_per_layer = _positive_int(meta, "units_per_layer", root)
    layers = _positive_int(meta, "layers", root)
    residual = meta.get("residual", False)
    if not isinstance(residual, bool):
        raise _fail(root, f"{METADATA_FILE}: residual must be true or false, got {residual!r}")
    change_input = meta.get("change_input", False)
    if not isinstance(change_input, bool):
        raise _fail(root, f"{METADATA_FILE}: change_input must be true or false")
    if change_input and not residual:
        raise _fail(root, f"{METADATA_FILE}: change_input requires residual")
    row_norm = bounds = serving = None
    try:
        if meta.get("row_norm") is not None:
            row_norm = RowNorm.from_json(meta["row_norm"], len(features))
        if meta.get("bounds") is not None:
            bounds = Bounds.from_json(meta["bounds"], len(features))
        if meta.get("serving") is not None:
            serving = _serving(meta["serving"], features)
    except ValueError as exc:
        raise _fail(root, f"{METADATA_FILE}: {exc}") from None
    model_version = meta.get("model_version")
    if not isinstance(model_version, str) or not model_version:
        raise _fail(root, f"{METADATA_FILE}: model_version must be a non-empty string")

    weights_path = root / WEIGHTS_FILE
    if not weights_path.is_file():
        raise _fail(root, f"{WEIGHTS_FILE} is missing")
    try:
        with np.load(weights_path, allow_pickle=False) as npz:
            weights = {k: np.asarray(npz[k], dtype=np.float32) for k in npz.files}
    except Exception as exc:  # zipfile/pickle/ValueError: all mean "corrupt file"
        raise _fail(root, f"{WEIGHTS_FILE} is corrupt ({type(exc).__name__}: {exc})") from None
    _check_weights(root, weights, len(features), units_per_layer, layers, change_input)

    model_path = root / MODEL_FILE
    if not model_path.is_file():
        raise _fail(root, f"{MODEL_FILE} is missing")
    if not zipfile.is_zipfile(model_path):
        raise _fail(root, f"{MODEL_FILE} is corrupt (not a .keras zip archive)")

    return Artifact(
        path=root,
        metadata=meta,
        weights=weights,
        scaler=scaler,
        features=tuple(features),
        units_per_layer=units_per_layer,
        layers=layers,
        tick_interval_s=float(interval),
        max_gap_ticks=max_gap,
        model_version=model_version,
        residual=residual,
        change_input=change_input,
        row_norm=row_norm,
        bounds=bounds,
        serving=serving,
    )


#: What a horizon may be served from (models.serving).
SOURCES = ("lstm", "persistence", "holt")


def _serving(obj: Any, features: list[str]) -> tuple[tuple[str, ...], ...]:
    """metadata ``serving.sources`` {feature: [source per horizon 1..H]} -> (H, F)."""
    if not isinstance(obj, dict) or not isinstance(obj.get("sources"), dict):
        raise ValueError("serving.sources must map each feature to a list of sources")
    cols = []
    for name in features:
        col = obj["sources"].get(name)
        if not isinstance(col, list) or not col or any(v not in SOURCES for v in col):
            raise ValueError(f"serving.sources.{name} must be a list of {list(SOURCES)}")
        cols.append(col)
    if len({len(c) for c in cols}) != 1:
        raise ValueError("serving.sources lists differ in length")
    return tuple(zip(*cols, strict=True))


def _keras_weights(artifact: Artifact) -> dict[str, FloatArray]:
    """Load model.keras (TensorFlow) and return its weights; must match weights.npz."""
    from models.network import import_keras, weights_to_arrays

    keras = import_keras()
    try:
        model = keras.models.load_model(artifact.model_path, compile=False)
        arrays = weights_to_arrays(model)
    except Exception as exc:  # Keras raises many types for a bad file
        raise _fail(
            artifact.path, f"{MODEL_FILE} cannot be loaded ({type(exc).__name__}: {exc})"
        ) from None
    for name, value in artifact.weights.items():
        if name not in arrays or arrays[name].shape != value.shape:
            raise _fail(artifact.path, f"{MODEL_FILE} and {WEIGHTS_FILE} disagree on {name}")
        if not np.allclose(arrays[name], value, rtol=0, atol=1e-7):
            raise _fail(artifact.path, f"{MODEL_FILE} and {WEIGHTS_FILE} disagree on {name}")
    return arrays


def load_forecaster(
    path: str | os.PathLike[str],
    engine: str = "numpy",
    n_rows: int = 0,
    expected_features: Sequence[str] | None = FEATURES,
) -> Forecaster:
    """Load and validate an artifact and return an engine with ``n_rows`` zero-state rows.

    ``engine``: ``"numpy"`` (no TensorFlow import) or ``"keras"``.
    """
    artifact = load_artifact(path, expected_features)
    if engine == "numpy":
        from models.engines.numpy_engine import NumpyEngine

        return NumpyEngine(
            artifact.weights,
            artifact.scaler,
            n_rows,
            artifact.residual,
            artifact.change_input,
            artifact.row_norm,
        )
    if engine == "keras":
        from models.engines.keras_engine import KerasEngine

        return KerasEngine(
            _keras_weights(artifact),
            artifact.scaler,
            n_rows,
            artifact.residual,
            artifact.change_input,
            artifact.row_norm,
        )
    raise ArtifactError(f"unknown engine {engine!r} (expected 'numpy' or 'keras')")


def save_artifact(
    out: str | os.PathLike[str],
    keras_model: Any,
    weights: dict[str, FloatArray],
    metadata: dict[str, Any],
) -> Path:
    """Write an artifact directory, replacing ``out`` only once everything is written.

    ``keras_model``: anything with ``.save(path)`` (a Keras model). ``metadata`` must
    already hold every required key; ``format_version`` is set here.
    """
    root = Path(out)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; an artifact is meant to be shared
    try:
        with warnings.catch_warnings():
            # Keras saves each variable through np.array(tf_tensor); TensorFlow 2.21's
            # EagerTensor.__array__ lacks NumPy 2's ``copy`` keyword, so NumPy warns
            # once per save. Nothing of ours to change; the file written is the same.
            warnings.filterwarnings(
                "ignore",
                message=r"__array__ implementation doesn't accept a copy keyword",
                category=DeprecationWarning,
            )
            keras_model.save(tmp / MODEL_FILE)
        arrays: dict[str, Any] = {k: np.asarray(v, np.float32) for k, v in weights.items()}
        np.savez(tmp / WEIGHTS_FILE, **arrays)
        meta = {"format_version": FORMAT_VERSION, **metadata}
        meta["size_bytes"] = {
            MODEL_FILE: (tmp / MODEL_FILE).stat().st_size,
            WEIGHTS_FILE: (tmp / WEIGHTS_FILE).stat().st_size,
        }
        (tmp / METADATA_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        load_artifact(tmp, meta.get("features"))  # never publish an artifact we cannot read
        if root.exists():
            old = root.with_name(f".{root.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            root.rename(old)
            tmp.rename(root)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


def update_metadata(path: str | os.PathLike[str], **fields: Any) -> None:
    """Set top-level metadata fields (e.g. ``evaluation``) atomically."""
    root = Path(path)
    meta = _read_metadata(root)
    meta.update(fields)
    tmp = root / f".{METADATA_FILE}.tmp"
    tmp.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, root / METADATA_FILE)
