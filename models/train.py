"""``tankwatch train``: fit the stateful LSTM on a history CSV and write an artifact.

Steps: load readings (closing CSV summary, drop limit) -> tick interval (inferred
from the data unless given) -> sparse tick grid -> split (by time or per tank,
:mod:`models.splits`) -> scaler on train -> stateful batches
(:mod:`models.dataprep`) -> ``fit`` with
``shuffle=False``, per-row state resets at segment starts and a full reset every
epoch, early stopping on validation loss -> fold the change scale into the head ->
artifact (model.keras, weights.npz, metadata.json, plots/loss.png) -> evaluation on
the holdout (:mod:`models.evaluate`), stored in the artifact.

Reproducible: the same data, options and seed give the same weights (Keras seeds
plus TensorFlow's deterministic ops; threads as TensorFlow defaults).
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.artifact import FEATURES, UNITS, save_artifact
from models.dataprep import (
    Batches,
    TickGrid,
    build_grid,
    infer_interval,
    load_csv,
    make_batches,
    segment_deltas,
)
from models.fingerprint import data_fingerprint
from models.scaler import Scaler
from models.splits import SPLIT_MODES, Split, make_split
from tankwatch.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = ["TrainConfig", "TrainResult", "data_fingerprint", "train"]


@dataclass(frozen=True)
class TrainConfig:
    """Every training option (the CLI maps flags/env vars onto these)."""

    data: tuple[Path, ...]
    out: Path
    seed: int = 7
    units: int = 24
    layers: int = 1
    window: int = 32
    epochs: int = 40
    patience: int = 5
    learning_rate: float = 3e-3
    input_gain: float = 1.0
    loss: str = "mse"
    #: Tick interval, s; None = inferred from the data (:func:`infer_interval`).
    interval_s: float | None = None
    max_gap_ticks: int = 10
    val_fraction: float = 0.1
    holdout_fraction: float = 0.2
    #: ``time`` (one split for the fleet) or ``per_tank`` (:mod:`models.splits`).
    split: str = "time"
    #: Share of bad CSV rows that stops training (None = no limit, --allow-drops).
    drop_limit: float | None = 0.03
    labels: Path | None = None
    evaluate: bool = True
    progress: bool = True
    csv_options: Any = None  # producers.csv_source.CsvOptions or None (bundled format)
    #: Per-row level/scale normalisation (models.engines.rownorm); EWMA weights per tick.
    row_norm: bool = True
    level_alpha: float = 0.0005
    scale_alpha: float = 0.002
    #: "absolute" or "gauge": the fleet's pressure reference (physical lower bound).
    pressure_reference: str = "absolute"
    #: Forecast change limits = this x the largest training change per horizon.
    bounds_margin: float = 2.0
    bounds_horizon: int = 30
    extra: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        if self.pressure_reference not in ("absolute", "gauge"):
            raise ConfigError("pressure reference must be 'absolute' or 'gauge'")
        if self.units < 1 or self.layers < 1 or self.window < 2 or self.epochs < 1:
            raise ConfigError("units, layers, epochs must be >= 1 and window >= 2")
        if not (0 < self.val_fraction < 1 and 0 < self.holdout_fraction < 1):
            raise ConfigError("--val-fraction and --holdout-fraction must be in (0, 1)")
        if self.val_fraction + self.holdout_fraction >= 0.9:
            raise ConfigError("validation + holdout fractions must leave >= 10% for training")
        if self.split not in SPLIT_MODES:
            raise ConfigError(f"--split must be one of {', '.join(SPLIT_MODES)}")
        if self.interval_s is not None and not self.interval_s > 0:
            raise ConfigError("--interval must be > 0")
        for path in self.data:
            if not path.is_file():
                raise ConfigError(f"training data {path} does not exist")


@dataclass(frozen=True)
class TrainResult:
    out: Path
    model_version: str
    epochs_run: int
    best_val_loss: float
    seconds: float
    evaluation: dict[str, Any] | None
    #: The tick interval used, s, and whether it was inferred from the data.
    interval_s: float = 0.0
    interval_inferred: bool = False
    #: The CSV LoadResult (for the closing summary) and readings per part.
    csv: Any = None
    readings: tuple[int, int, int] = (0, 0, 0)


def fleet_reference(config: TrainConfig) -> str:
    """The pressure reference of the training data: the CSV option when CSV options are
    given (the flag users set), else ``config.pressure_reference`` (frames handed in)."""
    if config.csv_options is not None:
        return str(getattr(config.csv_options, "pressure_reference", "absolute"))
    return config.pressure_reference


def _say(config: TrainConfig, text: str) -> None:
    if config.progress:
        print(text, file=sys.stderr, flush=True)


def _callbacks(
    keras: Any, model: Any, train: Batches, val: Batches, config: TrainConfig
) -> list[Any]:
    from models.network import lstm_layers

    state_vars = [v for layer in lstm_layers(model) for v in layer.states]

    def reset_rows(rows: np.ndarray) -> None:
        if rows.any():
            keep = (~rows).astype(np.float32)[:, None]
            for v in state_vars:
                v.assign(v.numpy() * keep)

    def reset_all() -> None:
        for v in state_vars:
            v.assign(np.zeros(v.shape, np.float32))

    class StateResets(keras.callbacks.Callback):
        """Batch w is window w of every lane: reset the rows whose segment starts there."""

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            reset_all()

        def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
            reset_rows(train.resets[batch])

        def on_test_begin(self, logs: Any = None) -> None:
            reset_all()

        def on_test_batch_begin(self, batch: int, logs: Any = None) -> None:
            reset_rows(val.resets[batch])

    class Progress(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.t0 = time.monotonic()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            logs = logs or {}
            _say(
                config,
                f"epoch {epoch + 1}/{config.epochs}: loss {logs.get('loss', float('nan')):.4f} "
                f"val_loss {logs.get('val_loss', float('nan')):.4f} "
                f"({time.monotonic() - self.t0:.1f} s)",
            )

    stop = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=config.patience, restore_best_weights=True
    )
    return [StateResets(), Progress(), stop]


def _loss_plot(history: dict[str, list[float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    epochs = np.arange(1, len(history["loss"]) + 1)
    ax.plot(epochs, history["loss"], label="train")
    if "val_loss" in history:
        ax.plot(epochs, history["val_loss"], label="validation")
    ax.axhline(1.0, color="grey", linestyle=":", label="~persistence")
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE of normalised change")
    ax.set_title("training loss")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


@dataclass(frozen=True)
class Prepared:
    """The data ready for fitting (no TensorFlow involved)."""

    grid: TickGrid
    split: Split
    scaler: Scaler
    interval_s: float
    interval_inferred: bool
    csv: Any  # producers.csv_source.LoadResult


def prepare(config: TrainConfig, frame: Any = None) -> Prepared:
    """Load the data; pick the interval; build the grid, split and scaler.

    ``frame``: readings already loaded (``load_readings`` columns), e.g. a benchmark's
    data outside the CSV reader's limits; ``config.data`` then only names them.
    """
    loaded = None
    if frame is None:
        loaded = load_csv(list(config.data), config.csv_options, config.drop_limit)
        frame = loaded.frame
    inferred = config.interval_s is None
    interval = infer_interval(frame) if config.interval_s is None else float(config.interval_s)
    grid = build_grid(frame, interval, config.max_gap_ticks, FEATURES)
    split = make_split(grid, config.split, config.val_fraction, config.holdout_fraction)
    train_grid = grid.restrict(split.train)
    if train_grid.present.sum() < 2 * config.window:
        raise ConfigError(
            f"too little training data: {int(train_grid.present.sum())} readings in the "
            f"training part (need at least {2 * config.window})"
        )
    fitted = Scaler.fit(train_grid.values)
    scaler = Scaler(fitted.mean, (fitted.std / config.input_gain).astype(np.float32))
    return Prepared(grid, split, scaler, interval, inferred, loaded)


def value_range(grid: TickGrid) -> dict[str, list[float]]:
    """``{feature: [min, max]}`` of the readings in ``grid`` (physical units)."""
    flat = grid.values[grid.present]
    return {
        name: [float(np.min(flat[:, i])), float(np.max(flat[:, i]))]
        for i, name in enumerate(FEATURES)
    }


def _bounds(train_grid: TickGrid, config: TrainConfig) -> Any:
    """Forecast bounds (models.bounds) from the training slice and the physical limits."""
    from models.bounds import PHYSICAL_LOWER, Bounds, max_changes

    segment = np.cumsum(train_grid.boundary, axis=0, dtype=np.int64)
    change = max_changes(
        train_grid.values,
        train_grid.present,
        segment,
        config.bounds_horizon,
        config.bounds_margin,
    )
    lower = np.asarray([PHYSICAL_LOWER[f][fleet_reference(config)] for f in FEATURES], np.float32)
    return Bounds(change, lower, np.full(len(FEATURES), np.inf, np.float32))


def train(config: TrainConfig, frame: Any = None) -> TrainResult:
    """Train, write the artifact at ``config.out``, evaluate it; see the module doc.

    ``frame``: see :func:`prepare` (evaluation then needs ``config.evaluate=False``).
    """
    config.check()
    t_start = time.monotonic()
    prep = prepare(config, frame)
    grid, scaler, split = prep.grid, prep.scaler, prep.split
    train_grid = grid.restrict(split.train)
    val_grid = grid.restrict(split.validation)
    from models.engines import rownorm

    norm = None
    frames: list[Any] = [None, None]
    if config.row_norm:
        norm = rownorm.fit(
            train_grid.values,
            train_grid.present,
            train_grid.boundary,
            config.level_alpha,
            config.scale_alpha,
        )
        frames = [
            rownorm.series(norm, g.values, g.present, g.boundary) for g in (train_grid, val_grid)
        ]
        delta = rownorm.deltas(
            train_grid.values, train_grid.present, train_grid.boundary, frames[0][1]
        )
    else:
        delta = segment_deltas(train_grid, scaler)
    train_b = make_batches(train_grid, scaler, config.window, delta, frames[0])
    val_b = make_batches(val_grid, scaler, config.window, delta, frames[1])
    bounds = _bounds(train_grid, config)
    lanes = len(grid.tank_ids)
    n_train, n_val, n_hold = split.readings(grid)
    how = (
        "inferred from the data: the typical spacing of a tank's readings; --interval to override"
        if prep.interval_inferred
        else "--interval"
    )
    _say(config, f"tick interval: {prep.interval_s:g} s ({how})")
    _say(
        config,
        f"data: {lanes} tanks, {grid.n_ticks} ticks with data of {prep.interval_s:g} s; "
        f"{config.split.replace('_', '-')} split: train {n_train} / validation {n_val} / "
        f"holdout {n_hold} readings; {train_b.windows} windows of {config.window}",
    )

    from models.network import build_model, fold_delta_scale, import_keras, weights_to_arrays

    keras = import_keras()
    import tensorflow as tf

    keras.utils.set_random_seed(config.seed)
    tf.config.experimental.enable_op_determinism()

    model = build_model(
        lanes,
        config.window,
        len(FEATURES),
        config.units,
        config.layers,
        with_mask_input=True,
        change_input=True,
    )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=config.learning_rate, clipnorm=1.0),
        loss=keras.losses.Huber(delta=1.0) if config.loss == "huber" else "mse",
    )
    history = model.fit(
        [train_b.x, train_b.dx, train_b.mask],
        train_b.y,
        sample_weight=train_b.weight,
        batch_size=lanes,
        epochs=config.epochs,
        shuffle=False,
        validation_data=([val_b.x, val_b.dx, val_b.mask], val_b.y, val_b.weight),
        validation_batch_size=lanes,
        callbacks=_callbacks(keras, model, train_b, val_b, config),
        verbose=0,
    ).history

    arrays = fold_delta_scale(weights_to_arrays(model), delta, change_input=True)
    final = build_model(
        lanes, None, len(FEATURES), config.units, config.layers, residual=True, change_input=True
    )
    from models.network import arrays_to_weights

    arrays_to_weights(final, arrays)
    fingerprint = data_fingerprint(config.data)
    # "-rn": per-row normalised. Checkpoints are restored only into the model version
    # that wrote them, and a row-normalised model must never continue the h and c of
    # one trained on globally scaled inputs from the same data.
    tag = "-rn" if norm is not None else ""
    model_version = f"lstm-{config.units}x{config.layers}{tag}-{fingerprint[:8]}"
    val_losses = history.get("val_loss", [float("nan")])
    best = float(np.nanmin(val_losses))
    reference = fleet_reference(config)
    split_json = split.to_json(grid)
    hold_ticks = [t for t in split_json["holdout_start_tick_by_tank"].values() if t is not None]
    metadata: dict[str, Any] = {
        "model_version": model_version,
        "features": list(FEATURES),
        "units": {f: UNITS[f] for f in FEATURES},
        # What the pressure feature is; data declared otherwise is refused.
        "pressure_reference": reference,
        # The readings the model was fitted on: `run` counts readings outside it.
        "value_range": value_range(train_grid),
        "scaler": scaler.to_json(),
        "tick_interval_s": float(prep.interval_s),
        "tick_interval_source": "inferred" if prep.interval_inferred else "given",
        "max_gap_ticks": int(config.max_gap_ticks),
        "units_per_layer": int(config.units),
        "layers": int(config.layers),
        "residual": True,
        "change_input": True,
        **({"row_norm": norm.to_json()} if norm is not None else {}),
        "bounds": bounds.to_json(),
        # Readings the model was trained on (pipeline: out-of-range marking).
        "input_range": {
            "min": [float(v) for v in np.nanmin(train_grid.values, axis=(0, 1))],
            "max": [float(v) for v in np.nanmax(train_grid.values, axis=(0, 1))],
        },
        "parameters": int(final.count_params()),
        "training": {
            "seed": config.seed,
            "epochs_max": config.epochs,
            "epochs_run": len(history["loss"]),
            "best_val_loss": best,
            "patience": config.patience,
            "window": config.window,
            "batch_size": lanes,
            "learning_rate": config.learning_rate,
            "delta_scale": [float(v) for v in delta],
            "loss": "MSE of (next - current) / delta_scale in scaled units; 1.0 ~ persistence",
            "data_files": [p.name for p in config.data],
            "data_fingerprint_sha256": fingerprint,
            "tanks": list(grid.tank_ids),
            "split": split_json,
            # The earliest starts over the tanks (for a time split: the split itself).
            "split_ticks": {
                "first_tick": grid.k0,
                "validation_start": split_json["validation_start_tick"],
                "holdout_start": min(hold_ticks) if hold_ticks else None,
                "end": int(grid.ticks()[-1]) + 1,
            },
            "history": {k: [float(v) for v in vals] for k, vals in history.items()},
            "command": config.extra.get("command", ""),
        },
        "evaluation": {},
    }
    out = save_artifact(config.out, final, arrays, metadata)
    _loss_plot(history, out / "plots" / "loss.png")
    _say(config, f"wrote {out} ({model_version}); best val_loss {best:.4f}")

    evaluation = None
    if config.evaluate:
        from models.evaluate import EvalConfig, evaluate

        evaluation = evaluate(
            EvalConfig(
                model=out,
                data=config.data,
                out=out,
                labels=config.labels,
                csv_options=config.csv_options,
                progress=config.progress,
                drop_limit=None,  # checked above
            )
        )
    return TrainResult(
        out=out,
        model_version=model_version,
        epochs_run=len(history["loss"]),
        best_val_loss=best,
        seconds=time.monotonic() - t_start,
        evaluation=evaluation,
        interval_s=prep.interval_s,
        interval_inferred=prep.interval_inferred,
        csv=prep.csv,
        readings=(n_train, n_val, n_hold),
    )


def config_summary(config: TrainConfig) -> dict[str, Any]:
    """The config as JSON-friendly values (for logs)."""
    out = asdict(config)
    out["data"] = [str(p) for p in config.data]
    out["out"] = str(config.out)
    out["labels"] = str(config.labels) if config.labels else None
    out["csv_options"] = repr(config.csv_options)
    return out
