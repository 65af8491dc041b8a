"""``tankwatch train`` and ``tankwatch evaluate``: argument parsing only.

Every option has a flag and, where it makes sense, an environment variable
(``TANKWATCH_MODEL`` names the artifact directory). The work is in
:mod:`models.train` and :mod:`models.evaluate`; TensorFlow is only imported once a
command runs.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from pipeline.config import option_from_env
from producers.replay_cli import add_csv_format_args, csv_options_from_args
from tankwatch.cli import positive_float, positive_int
from tankwatch.errors import ConfigError

DEFAULT_MODEL = "models/artifacts/default"
DEFAULT_DATA = "data/history.csv.gz"


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def _fraction(text: str) -> float:
    value = positive_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1), got {text}")
    return value


def _csv_options(args: argparse.Namespace) -> Any:
    """A CsvOptions, or None when every option is at its default (bundled format)."""
    from producers.csv_source import CsvOptions

    options = csv_options_from_args(args)
    return None if options == CsvOptions() else options


def _paths(values: list[str], what: str) -> tuple[Path, ...]:
    paths = tuple(Path(v) for v in values)
    for path in paths:
        if not path.is_file():
            raise ConfigError(f"{what} {path} does not exist or is not a file")
    return paths


def _out_dir(value: str, what: str) -> Path:
    path = Path(value)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{what} {path} exists and is not a directory")
    return path


def _train(args: argparse.Namespace) -> int:
    from models.train import TrainConfig, train

    config = TrainConfig(
        data=_paths(args.data, "training data"),
        out=_out_dir(args.out, "--out"),
        seed=args.seed,
        units=args.units,
        layers=args.layers,
        window=args.window,
        epochs=args.epochs,
        patience=args.patience,
        learning_rate=args.learning_rate,
        input_gain=args.input_gain,
        loss=args.loss,
        interval_s=args.interval,
        max_gap_ticks=args.max_gap_ticks,
        val_fraction=args.val_fraction,
        holdout_fraction=args.holdout_fraction,
        labels=_paths([args.labels], "labels file")[0] if args.labels else None,
        evaluate=not args.no_evaluate,
        progress=not args.quiet,
        csv_options=_csv_options(args),
        extra={"command": "tankwatch " + shlex.join(sys.argv[1:]) if sys.argv else ""},
    )
    result = train(config)
    print(
        f"trained {result.model_version} in {result.seconds:.0f} s "
        f"({result.epochs_run} epochs, best val_loss {result.best_val_loss:.4f}) -> {result.out}"
    )
    if result.evaluation:
        _print_eval(result.evaluation)
    return 0


def _print_eval(summary: dict[str, Any]) -> None:
    for name, rows in summary["fleet"].items():
        ratios = ", ".join(f"h{h} {rows[str(h)]['rmse_ratio']:.3f}" for h in summary["horizons"])
        print(f"{name}: RMSE / persistence: {ratios}")


def _evaluate(args: argparse.Namespace) -> int:
    from models.evaluate import EvalConfig, evaluate

    model = Path(args.model)
    summary = evaluate(
        EvalConfig(
            model=model,
            data=_paths(args.data, "data file"),
            out=_out_dir(args.out or str(model), "--out"),
            labels=_paths([args.labels], "labels file")[0] if args.labels else None,
            engine=args.engine,
            holdout_fraction=args.holdout_fraction,
            plot_tanks=args.plot_tanks,
            csv_options=_csv_options(args),
            progress=not args.quiet,
        )
    )
    _print_eval(summary)
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``train`` and ``evaluate`` to the ``tankwatch`` command."""
    t = sub.add_parser(
        "train",
        help="train the stateful LSTM on a history CSV and write a model artifact",
        description="Train the stateful LSTM (next-step, many-to-many) on readings from "
        "CSV files, write the artifact directory and evaluate it on the time-based holdout.",
    )
    t.add_argument(
        "--data",
        nargs="+",
        default=[_env("TANKWATCH_TRAIN_DATA", DEFAULT_DATA)],
        help="history CSV file(s) (env TANKWATCH_TRAIN_DATA; default %(default)s)",
    )
    t.add_argument(
        "--out",
        default=_env("TANKWATCH_MODEL", DEFAULT_MODEL),
        help="artifact directory to write (env TANKWATCH_MODEL; default %(default)s)",
    )
    t.add_argument(
        "--seed",
        type=int,
        # Checked by the one options table: a bad value is one line, not a traceback
        # in every subcommand (this default is read whenever the parser is built).
        default=option_from_env("seed", 7),
        help="random seed (env TANKWATCH_SEED; default %(default)s)",
    )
    t.add_argument("--units", type=positive_int, default=48, help="LSTM units per layer")
    t.add_argument("--layers", type=positive_int, default=1, help="LSTM layers")
    t.add_argument(
        "--window",
        type=positive_int,
        default=32,
        help="training window (ticks per batch; truncated BPTT length)",
    )
    t.add_argument("--epochs", type=positive_int, default=40, help="maximum epochs")
    t.add_argument(
        "--patience",
        type=positive_int,
        default=5,
        help="early stopping: epochs without validation improvement",
    )
    t.add_argument("--learning-rate", type=positive_float, default=3e-3, help="Adam step size")
    t.add_argument(
        "--input-gain",
        type=positive_float,
        default=1.0,
        help="scaler std = training std / gain (larger = finer input resolution)",
    )
    t.add_argument("--loss", choices=["mse", "huber"], default="mse", help="training loss")
    t.add_argument(
        "--interval",
        type=positive_float,
        default=option_from_env("tick_interval", 60.0),
        help="tick interval in seconds (env TANKWATCH_TICK_INTERVAL; default 60)",
    )
    t.add_argument(
        "--max-gap-ticks",
        type=positive_int,
        default=10,
        help="a longer gap in a tank's readings resets its state (default 10)",
    )
    t.add_argument(
        "--val-fraction",
        type=_fraction,
        default=0.1,
        help="validation share of the time range, before the holdout",
    )
    t.add_argument(
        "--holdout-fraction",
        type=_fraction,
        default=0.2,
        help="holdout share of the time range (the end), for evaluation",
    )
    t.add_argument(
        "--labels",
        default=None,
        help="anomaly labels CSV (default: labels.csv beside the data, if any)",
    )
    t.add_argument("--no-evaluate", action="store_true", help="skip the holdout evaluation")
    t.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    add_csv_format_args(t)
    t.set_defaults(func=_train)

    e = sub.add_parser(
        "evaluate",
        help="stream a history through a model and report errors vs persistence",
        description="Stream readings tick by tick through an engine as the pipeline would; "
        "write evaluation.md, evaluation.json and plots.",
    )
    e.add_argument(
        "--model",
        default=_env("TANKWATCH_MODEL", DEFAULT_MODEL),
        help="artifact directory (env TANKWATCH_MODEL; default %(default)s)",
    )
    e.add_argument(
        "--data",
        nargs="+",
        default=[_env("TANKWATCH_EVAL_DATA", DEFAULT_DATA)],
        help="history CSV file(s) (env TANKWATCH_EVAL_DATA; default %(default)s)",
    )
    e.add_argument(
        "--out",
        default=None,
        help="report directory (default: the artifact, whose metadata then stores the summary)",
    )
    e.add_argument(
        "--labels",
        default=None,
        help="anomaly labels CSV (default: labels.csv beside the data, if any)",
    )
    e.add_argument(
        "--engine",
        choices=["numpy", "keras"],
        default=_env("TANKWATCH_ENGINE", "numpy"),
        help="inference engine (env TANKWATCH_ENGINE; default %(default)s)",
    )
    e.add_argument(
        "--holdout-fraction",
        type=_fraction,
        default=0.2,
        help="holdout share when the data is not the model's training data",
    )
    e.add_argument("--plot-tanks", type=positive_int, default=3, help="tanks to plot")
    e.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    add_csv_format_args(e)
    e.set_defaults(func=_evaluate)
