"""``tankwatch replay FILE...``: flags (each with an environment variable) -> replay()."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from pipeline.config import FieldSpec, option_value
from producers.csv_report import add_drop_args, check_drops, summary_lines
from producers.csv_source import PRESSURE_UNITS, TEMPERATURE_UNITS, CsvOptions
from producers.replay import ReplayOptions, quiet_kafka_logs, replay
from tankwatch.cli import add_bootstrap_arg, positive_float
from tankwatch.codec import PRESSURE_REFERENCES, parse_ts
from tankwatch.errors import ConfigError, DecodeError
from tankwatch.kafka_security import add_security_args, security_from_args


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def _env_flag(name: str) -> bool:
    return (_env(name) or "").lower() in ("1", "true", "yes", "on")


def _time_arg(text: str) -> float:
    """``--start/--end``: RFC 3339 or epoch seconds."""
    try:
        return parse_ts(float(text) if _looks_numeric(text) else text)
    except DecodeError:
        raise argparse.ArgumentTypeError(
            f"expected an RFC 3339 time or epoch seconds, got {text!r}"
        ) from None


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _sep_arg(text: str) -> str:
    """``--sep``: a literal separator; ``\\t``/``tab`` for a tab."""
    if text in ("\\t", "tab", "TAB"):
        return "\t"
    if not text:
        raise argparse.ArgumentTypeError("the separator must not be empty")
    return text


def _env_option(
    group: argparse._ArgumentGroup,
    flag: str,
    env: str,
    help: str,
    default: Any = None,
    type: Callable[[str], Any] | None = None,
    choices: Sequence[str] | None = None,
) -> None:
    """A flag whose default comes from ``env`` (when set), else ``default``. The
    variable is parsed where every option is (``pipeline.config.option_value``): a bad
    value is one line naming the flag and the variable (argparse would name only the
    flag, and only once the subcommand runs)."""

    def parse(text: str) -> Any:
        try:
            value = type(text) if type is not None else text
        except argparse.ArgumentTypeError as exc:
            raise ValueError(str(exc)) from None
        if choices is not None and value not in choices:
            raise ValueError(f"one of {', '.join(choices)}")
        return value

    text = _env(env)
    spec = FieldSpec(flag.lstrip("-").replace("-", "_"), env, parse, help, flag)
    value = default if text is None else option_value(spec, text)
    kwargs: dict[str, Any] = {"default": value, "help": f"{help} (env {env})"}
    if type is not None:
        kwargs["type"] = type
    if choices is not None:
        kwargs["choices"] = list(choices)
    group.add_argument(flag, **kwargs)


#: The CSV format options: flag, environment variable, CsvOptions field for the
#: default (None: no default), parser, choices, help. Read back by csv_options_from_args.
_CSV_OPTIONS: tuple[tuple[str, str, str | None, Any, Sequence[str] | None, str], ...] = (
    ("--sep", "TANKWATCH_CSV_SEP", "sep", _sep_arg, None, "field separator; '\\t' for tab"),
    ("--time-col", "TANKWATCH_CSV_TIME_COL", "time_col", None, None, "time column"),
    ("--tank-col", "TANKWATCH_CSV_TANK_COL", "tank_col", None, None, "tank id column"),
    ("--pressure-col", "TANKWATCH_CSV_PRESSURE_COL", "pressure_col", None, None,
     "pressure column"),
    ("--temperature-col", "TANKWATCH_CSV_TEMPERATURE_COL", "temperature_col", None, None,
     "temperature column"),
    ("--event-col", "TANKWATCH_CSV_EVENT_COL", "event_col", None, None,
     "event column; 'none' for no events"),
    ("--time-format", "TANKWATCH_CSV_TIME_FORMAT", None, None, None,
     "'epoch', 'epoch_ms' or a strftime pattern (default: auto RFC 3339 / epoch)"),
    ("--timezone", "TANKWATCH_CSV_TIMEZONE", "timezone", None, None,
     "zone of naive times, e.g. Europe/Berlin"),
    ("--tank-id-template", "TANKWATCH_CSV_TANK_ID_TEMPLATE", None, None, None,
     "with --tank-from-filename: tank id from {stem}, {parent}, {path}, e.g. "
     "'{parent}-{stem}'"),
    ("--decimal", "TANKWATCH_CSV_DECIMAL", "decimal", None, None,
     "decimal mark of numbers: ',' reads 1,013 (then use --sep ';')"),
    ("--pressure-reference", "TANKWATCH_PRESSURE_REFERENCE", None, None,
     PRESSURE_REFERENCES, "the pressure column is absolute or gauge (negative under "
     "vacuum) pressure (default absolute, evaluate: the model's)"),
    ("--pressure-min-kpa", "TANKWATCH_PRESSURE_MIN_KPA", None, float, None,
     "lowest plausible pressure, kPa (default 0 absolute, -105 gauge)"),
    ("--pressure-max-kpa", "TANKWATCH_PRESSURE_MAX_KPA", None, float, None,
     "highest plausible pressure, kPa (default 5000)"),
    ("--pressure-unit", "TANKWATCH_CSV_PRESSURE_UNIT", "pressure_unit", None,
     tuple(PRESSURE_UNITS), "unit of the pressure column"),
    ("--temperature-unit", "TANKWATCH_CSV_TEMPERATURE_UNIT", "temperature_unit", None,
     tuple(TEMPERATURE_UNITS), "unit of the temperature column"),
)  # fmt: skip


def add_csv_format_args(p: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """The CSV format options (separator, columns, time format, units) shared by
    ``replay``, ``train`` and ``evaluate``; read back with :func:`csv_options_from_args`.
    Their defaults read the bundled history format. Returns the group for more options.
    """
    d = CsvOptions()
    fmt = p.add_argument_group("CSV format (defaults read the bundled history format)")
    for flag, env, field, parse, choices, text in _CSV_OPTIONS:
        default = getattr(d, field) if field else None
        _env_option(fmt, flag, env, text, default, parse, choices)
    fmt.add_argument(
        "--tank-from-filename",
        action="store_true",
        default=_env_flag("TANKWATCH_CSV_TANK_FROM_FILENAME"),
        help="one file per tank: the tank id is the file name (T07.csv -> T07); when names "
        "repeat, the path below the common folder (valve1/0.csv -> valve1-0) "
        "(env TANKWATCH_CSV_TANK_FROM_FILENAME)",
    )
    add_drop_args(fmt)
    return fmt


def register_replay(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "replay",
        help="replay CSV readings into Kafka, paced by event time",
        description="Replay readings from CSV files into the readings topic, keyed by "
        "tank_id, in event-time order. Bad rows are counted, the first few reported "
        "with file and line, and skipped.",
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="CSV files (.csv or .csv.gz)")
    add_bootstrap_arg(p)
    add_security_args(p)
    p.add_argument(
        "--topic",
        default=_env("TANKWATCH_TOPIC_READINGS", "tank.readings"),
        help="readings topic (env TANKWATCH_TOPIC_READINGS; default %(default)s)",
    )
    pace = p.add_mutually_exclusive_group()
    speed_env = _env("TANKWATCH_REPLAY_SPEED")
    pace.add_argument(
        "--speed",
        type=positive_float,
        default=speed_env,  # argparse applies type= to string defaults
        help="event seconds per wall-clock second, e.g. 60 = one minute per "
        "second (env TANKWATCH_REPLAY_SPEED; default: as fast as possible)",
    )
    pace.add_argument(
        "--as-fast-as-possible",
        action="store_true",
        help="no pacing (the default unless --speed is given)",
    )
    p.add_argument(
        "--loop",
        action="store_true",
        default=_env_flag("TANKWATCH_REPLAY_LOOP"),
        help="replay forever, shifting event time by the span each pass "
        "(env TANKWATCH_REPLAY_LOOP)",
    )
    p.add_argument("--max-loops", type=int, default=None, help="with --loop: stop after N passes")
    p.add_argument(
        "--start",
        type=_time_arg,
        default=None,
        help="skip readings before this time (RFC 3339 or epoch s)",
    )
    p.add_argument(
        "--end",
        type=_time_arg,
        default=None,
        help="skip readings at or after this time (RFC 3339 or epoch s)",
    )
    fmt = add_csv_format_args(p)
    fmt.add_argument(
        "--strict",
        action="store_true",
        default=_env_flag("TANKWATCH_CSV_STRICT"),
        help="stop at the first bad row instead of skipping it",
    )
    p.add_argument(
        "--no-progress",
        action="store_true",
        default=_env_flag("TANKWATCH_NO_PROGRESS"),
        help="no progress line on stderr (env TANKWATCH_NO_PROGRESS)",
    )
    p.set_defaults(func=run_replay)


def csv_options_from_args(
    args: argparse.Namespace, pressure_reference: str | None = None
) -> CsvOptions:
    """The CsvOptions of the flags; ``pressure_reference`` is used when the flag (and
    its environment variable) is not given, else absolute."""
    event_col = args.event_col
    if event_col is not None and event_col.lower() in ("", "none"):
        event_col = None
    return CsvOptions(
        sep=args.sep,
        time_col=args.time_col,
        tank_col=args.tank_col,
        pressure_col=args.pressure_col,
        temperature_col=args.temperature_col,
        event_col=event_col,
        time_format=args.time_format,
        timezone=args.timezone,
        tank_from_filename=args.tank_from_filename,
        pressure_unit=args.pressure_unit,
        temperature_unit=args.temperature_unit,
        decimal=args.decimal,
        pressure_reference=args.pressure_reference or pressure_reference or "absolute",
        pressure_min_kpa=args.pressure_min_kpa,
        pressure_max_kpa=args.pressure_max_kpa,
        tank_id_template=args.tank_id_template,
    )


def print_csv_summary(loaded: object, used: int | None = None, extra: str = "") -> None:
    """The command's closing CSV summary on stderr (:mod:`producers.csv_report`)."""
    from producers.csv_source import LoadResult

    if isinstance(loaded, LoadResult):
        for line in summary_lines(loaded, used, extra):
            print(f"tankwatch: {line}", file=sys.stderr)


def run_replay(args: argparse.Namespace) -> int:
    if args.max_loops is not None and args.max_loops < 1:
        raise ConfigError(f"--max-loops must be >= 1, got {args.max_loops}")
    security = security_from_args(args)
    options = ReplayOptions(
        speed=None if args.as_fast_as_possible else args.speed,
        loop=args.loop,
        start=args.start,
        end=args.end,
        max_loops=args.max_loops,
        progress=not args.no_progress,
    )
    from producers.csv_source import load_frame

    loaded = load_frame(args.files, csv_options_from_args(args), strict=args.strict)
    check_drops(loaded, args.drop_limit, args.allow_drops)
    # kafka-python warns about its own event loop when we keep the GIL busy; not news.
    with quiet_kafka_logs(logging.ERROR):
        summary = replay(
            loaded, args.bootstrap, args.topic, replay_options=options, security=security
        )
    print(f"tankwatch: {summary.describe()}", file=sys.stderr)
    # Used = sent (the valid rows inside --start/--end); a loop sends them many times.
    print_csv_summary(loaded, used=None if args.loop else summary.rows_sent)
    return 130 if summary.interrupted else 0
