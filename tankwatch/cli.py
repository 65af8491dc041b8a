"""The ``tankwatch`` command. Thin: parse arguments, hand over to the stage's module.

Each stage registers its own subcommands (``producers.cli``, ``models.cli``,
``pipeline.cli``); this file only collects them and turns every
:class:`~tankwatch.errors.TankwatchError` into a one-line message and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence

from tankwatch import __version__
from tankwatch.errors import TankwatchError
from tankwatch.kafka_security import add_security_args, security_from_args
from tankwatch.logs import setup_logging
from tankwatch.topics import Topics, create_topics

#: Modules that contribute subcommands through ``register(subparsers)``.
SUBCOMMAND_MODULES = ("producers.cli", "models.cli", "pipeline.cli", "pipeline.demo")


def env_default(name: str, default: str) -> str:
    return os.environ.get(name, default)


def add_bootstrap_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bootstrap",
        default=os.environ.get("KAFKA_BOOTSTRAP", "localhost:9092"),
        help="Kafka bootstrap servers (env KAFKA_BOOTSTRAP; default %(default)s)",
    )


def add_topic_args(parser: argparse.ArgumentParser) -> None:
    t = Topics.from_env()
    for name, what in (
        ("readings", "readings topic"),
        ("dlq", "dead-letter topic"),
        ("forecasts", "forecasts topic"),
        ("state", "state changelog topic"),
    ):
        parser.add_argument(
            f"--topic-{name}",
            default=getattr(t, name),
            help=f"{what} (env TANKWATCH_TOPIC_{name.upper()}; default %(default)s)",
        )


def topics_from_args(args: argparse.Namespace) -> Topics:
    return Topics(args.topic_readings, args.topic_dlq, args.topic_forecasts, args.topic_state)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return value


def _topics_create(args: argparse.Namespace) -> int:
    created = create_topics(
        args.bootstrap,
        topics_from_args(args),
        args.partitions,
        security=security_from_args(args),
    )
    print(f"created: {', '.join(created) if created else '(all topics already existed)'}")
    return 0


def _register_topics(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("topics", help="manage the Kafka topics")
    tsub = p.add_subparsers(dest="topics_cmd", required=True, metavar="{create}")
    c = tsub.add_parser("create", help="create the four topics (tank.state compacted)")
    add_bootstrap_arg(c)
    add_security_args(c)
    add_topic_args(c)
    from pipeline.config import CLI_FIELDS, option_from_env, option_value

    spec = CLI_FIELDS["partitions"]
    c.add_argument(
        "--partitions",
        type=lambda text: option_value(spec, text),
        default=option_from_env("partitions", 4),
        help="partitions per topic (env TANKWATCH_PARTITIONS; default %(default)s)",
    )
    c.set_defaults(func=_topics_create)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tankwatch",
        description="Streaming stateful-LSTM forecaster for tank-farm sensors.",
    )
    parser.add_argument("--version", action="version", version=f"tankwatch {__version__}")
    from pipeline.config import CLI_FIELDS, LOG_LEVELS, option_from_env, option_value

    log_spec = CLI_FIELDS["log_level"]
    parser.add_argument(
        "--log-level",
        # Checked here, for every subcommand: a bad TANKWATCH_LOG_LEVEL is one line.
        default=option_from_env("log_level", "warning"),
        type=lambda text: option_value(log_spec, text),
        metavar="{" + ",".join(LOG_LEVELS) + "}",
        help="log level (env TANKWATCH_LOG_LEVEL; default %(default)s)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _register_topics(sub)
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        register: Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None] = (
            module.register
        )
        register(sub)
    show_defaults(parser)
    return parser


def _default_repr(value: object) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def show_defaults(parser: argparse.ArgumentParser) -> None:
    """Append ``(default X)`` to every option's help that does not state its default,
    in this parser and all its subcommands, so every ``--help`` tells the defaults.

    Flags (store_true) and options without a default are left alone; a help text that
    already says "default" (or uses ``%(default)s``) is the author's wording and kept.
    """
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                show_defaults(child)
            continue
        text = action.help
        if not action.option_strings or text is None or text == argparse.SUPPRESS:
            continue
        if "default" in text.lower() or action.nargs == 0:
            continue
        if action.default is None or action.default is argparse.SUPPRESS:
            continue
        value = _default_repr(action.default).replace("%", "%%")
        action.help = f"{text} (default {value})"


def main(argv: Sequence[str] | None = None) -> int:
    try:
        # Options are parsed (and environment defaults checked) while the parser is
        # built and run: a ConfigError there is one line and exit 2, like any other.
        parser = build_parser()
        args = parser.parse_args(argv)
        setup_logging(args.log_level)
        code: int = args.func(args)
    except TankwatchError as exc:
        print(f"tankwatch: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tankwatch: interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
