"""``tankwatch train`` and ``tankwatch evaluate``: argument parsing only.

Every option has a flag and, where it makes sense, an environment variable
(``TANKWATCH_MODEL`` names the artifact directory). The work is in
:mod:`models.train` and :mod:`models.evaluate`; TensorFlow is only imported once a
command runs.

Defaults never write into the shipped artifact: ``train`` writes ``./tankwatch-model``
and ``evaluate`` writes ``./tankwatch-eval`` unless told otherwise. The default model
and data are found next to the installed package (the same for every command,
wherever it runs from).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from models.artifact import default_model_dir
from pipeline.config import option_from_env
from producers.replay_cli import add_csv_format_args, csv_options_from_args, print_csv_summary
from tankwatch.cli import positive_float, positive_int
from tankwatch.errors import ConfigError

#: Where ``train`` and ``evaluate`` write without ``--out`` (relative to the current
#: directory; never the shipped artifact).
DEFAULT_TRAIN_OUT = "tankwatch-model"
DEFAULT_EVAL_OUT = "tankwatch-eval"


def default_data() -> Path:
    """The bundled history, next to the installed package (as ``demo`` finds it)."""
    return Path(__file__).resolve().parent.parent / "data" / "history.csv.gz"


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def _fraction(text: str) -> float:
    value = positive_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1), got {text}")
    return value


def _csv_options(args: argparse.Namespace, pressure_reference: str | None = None) -> Any:
    """A CsvOptions, or None when every option is at its default (bundled format)."""
    from producers.csv_source import CsvOptions

    options = csv_options_from_args(args, pressure_reference)
    return None if options == CsvOptions() else options


def _drop_limit(args: argparse.Namespace) -> float | None:
    return None if args.allow_drops else float(args.drop_limit)


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
        split=args.split.replace("-", "_"),
        drop_limit=_drop_limit(args),
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
    n_train, n_val, n_hold = result.readings
    source = "inferred" if result.interval_inferred else "given"
    print_csv_summary(
        result.csv,
        extra=f"tick interval {result.interval_s:g} s ({source}); "
        f"train/validation/holdout readings {n_train}/{n_val}/{n_hold}",
    )
    return 0


def _print_eval(summary: dict[str, Any]) -> None:
    for name, rows in summary["fleet"].items():
        ratios = ", ".join(f"h{h} {rows[str(h)]['rmse_ratio']:.3f}" for h in summary["horizons"])
        print(f"{name}: RMSE / persistence: {ratios}")


def _evaluate(args: argparse.Namespace) -> int:
    from models.artifact import load_artifact
    from models.data_checks import artifact_reference
    from models.evaluate import EvalConfig, evaluate

    model = Path(args.model)
    # Undeclared data is taken to be in the model's pressure reference.
    reference = artifact_reference(load_artifact(model).metadata)
    summary = evaluate(
        EvalConfig(
            model=model,
            data=_paths(args.data, "data file"),
            out=_out_dir(args.out, "--out"),
            labels=_paths([args.labels], "labels file")[0] if args.labels else None,
            engine=args.engine,
            holdout_fraction=args.holdout_fraction,
            plot_tanks=args.plot_tanks,
            csv_options=_csv_options(args, reference),
            progress=not args.quiet,
            drop_limit=_drop_limit(args),
            ticks_format=args.ticks_format,
        )
    )
    _print_eval(summary)
    inp = summary["input"]
    if summary.get("ticks_file"):
        print(f"per-tick results: {Path(args.out) / summary['ticks_file']}")
    from producers.csv_report import count_lines

    for line in count_lines(
        inp["rows_read"],
        inp["rows_read"] - inp["rows_dropped"],
        inp["dropped_by_reason"],
        inp["examples"],
        len(summary["data_files"]),
        used=inp["rows_used"],
        extra=f"{len(inp['tanks'])} tanks; scored: {summary['holdout']['rule']}",
    ):
        print(f"tankwatch: {line}", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``train`` and ``evaluate`` to the ``tankwatch`` command."""
    t = sub.add_parser(
        "train",
        help="train the stateful LSTM on a history CSV and write a model artifact",
        description="Train the stateful LSTM (next-step, many-to-many) on readings from "
        "CSV files, write the artifact directory and evaluate it on the holdout (--split: "
        "by time or per tank). The tick interval is inferred from the data unless given.",
    )
    t.add_argument(
        "--data",
        nargs="+",
        default=[_env("TANKWATCH_TRAIN_DATA", str(default_data()))],
        help="history CSV file(s) (env TANKWATCH_TRAIN_DATA; default: the bundled "
        "data/history.csv.gz)",
    )
    t.add_argument(
        "--out",
        default=_env("TANKWATCH_TRAIN_OUT", DEFAULT_TRAIN_OUT),
        help="artifact directory to write (env TANKWATCH_TRAIN_OUT; default ./%(default)s; "
        "never the shipped model unless named explicitly)",
    )
    t.add_argument(
        "--seed",
        type=int,
        # Checked by the one options table: a bad value is one line, not a traceback
        # in every subcommand (this default is read whenever the parser is built).
        default=option_from_env("seed", 7),
        help="random seed (env TANKWATCH_SEED; default %(default)s)",
    )
    t.add_argument("--units", type=positive_int, default=24, help="LSTM units per layer")
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
        default=option_from_env("tick_interval", None),
        help="tick interval in seconds (env TANKWATCH_TICK_INTERVAL; default: inferred "
        "from the data, the typical spacing of a tank's readings)",
    )
    t.add_argument(
        "--max-gap-ticks",
        type=positive_int,
        default=10,
        help="a longer gap in a tank's readings resets its state (default 10)",
    )
    t.add_argument(
        "--split",
        choices=["time", "per-tank"],
        default=_env("TANKWATCH_SPLIT", "time"),
        help="time: one train|validation|holdout split of the data's ticks for all tanks; "
        "per-tank: the first part of every tank's readings trains, the rest validates and "
        "is held out (archives of many short runs) (env TANKWATCH_SPLIT; default time)",
    )
    t.add_argument(
        "--val-fraction",
        type=_fraction,
        default=0.1,
        help="validation share (of the ticks, or of each tank's readings), before the holdout",
    )
    t.add_argument(
        "--holdout-fraction",
        type=_fraction,
        default=0.2,
        help="holdout share (the end), for evaluation",
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
        "write evaluation.md, evaluation.json, plots and the per-tick table ticks.csv.gz. "
        "On the model's own training data the training holdout is scored, on other data "
        "all of it.",
    )
    e.add_argument(
        "--model",
        default=_env("TANKWATCH_MODEL", str(default_model_dir())),
        help="artifact directory (env TANKWATCH_MODEL; default: the shipped model)",
    )
    e.add_argument(
        "--data",
        nargs="+",
        default=[_env("TANKWATCH_EVAL_DATA", str(default_data()))],
        help="history CSV file(s) (env TANKWATCH_EVAL_DATA; default: the bundled "
        "data/history.csv.gz)",
    )
    e.add_argument(
        "--out",
        default=_env("TANKWATCH_EVAL_OUT", DEFAULT_EVAL_OUT),
        help="report directory (env TANKWATCH_EVAL_OUT; default ./%(default)s); naming the "
        "model's directory also stores the summary in its metadata",
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
        default=None,
        help="score only the last share of the data's ticks (default: the training holdout "
        "on the model's own data, all of other data)",
    )
    e.add_argument(
        "--ticks-format",
        choices=["csv", "parquet", "none"],
        default=_env("TANKWATCH_TICKS_FORMAT", "csv"),
        help="per-tick results: ticks.csv.gz, ticks.parquet (needs pyarrow) or none "
        "(env TANKWATCH_TICKS_FORMAT; default csv)",
    )
    e.add_argument("--plot-tanks", type=positive_int, default=3, help="tanks to plot")
    e.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    add_csv_format_args(e)
    e.set_defaults(func=_evaluate)
