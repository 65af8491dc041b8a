"""``tankwatch run``: parse flags -> Settings -> build_service -> run. Nothing else."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

from pipeline.config import FIELDS, FieldSpec, Settings
from tankwatch.kafka_security import KafkaSecurity
from tankwatch.topics import Topics

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``run`` subcommand (flags from :data:`pipeline.config.FIELDS`)."""
    p = sub.add_parser(
        "run",
        help="run the pipeline: Kafka -> ticks -> stateful LSTM -> metrics/forecasts",
        description="Consume tank.readings, forecast every tank each tick, export "
        "/metrics, /healthz, /api and the dashboard page. Every flag has an "
        "environment variable; flags win.",
    )
    for spec in FIELDS:
        p.add_argument(
            spec.flag,
            dest=spec.name,
            default=None,  # Settings.from_env applies env and defaults
            metavar=_metavar(spec),
            help=f"{spec.help} (env {spec.env}; default {_default_text(spec)})",
        )
    topics = Topics()
    for name in ("readings", "dlq", "forecasts", "state"):
        p.add_argument(
            f"--topic-{name}",
            dest=f"topic_{name}",
            default=None,
            metavar="NAME",
            help=f"{name} topic (env TANKWATCH_TOPIC_{name.upper()}; "
            f"default {getattr(topics, name)})",
        )
    p.set_defaults(func=_run)


#: Choices shown in ``run --help`` (Settings validates them).
_CHOICES = {"engine": ("numpy", "keras")}


def _metavar(spec: FieldSpec) -> str:
    """What a flag's value looks like: its choices, unit or kind."""
    if spec.name in _CHOICES:
        return "{" + ",".join(_CHOICES[spec.name]) + "}"
    value = _default(spec)
    if spec.name == "bootstrap":
        return "HOST:PORT[,...]"
    if isinstance(value, bool):
        return "{true,false}"
    if spec.name.endswith("_ms"):
        return "MS"
    if spec.name.endswith("_s"):
        return "SECONDS"
    if spec.name.endswith("_dir"):
        return "DIR"
    if isinstance(value, tuple):
        return "N[,N...]"
    if isinstance(value, int) or spec.name == "max_gap_ticks":
        return "N"
    if isinstance(value, float):
        return "X"
    return "TEXT"


def _default(spec: FieldSpec) -> Any:
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    if spec.name not in fields:  # a part of ``security``: its KafkaSecurity default
        return getattr(KafkaSecurity(), spec.name)
    f = fields[spec.name]
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _default_text(spec: FieldSpec) -> str:
    """The default as the help shows it (the Settings field default)."""
    if spec.name == "model_dir":
        return "the model committed in the installed package (models/artifacts/default)"
    value = _default(spec)
    if value is None:
        return "from the model artifact" if spec.name == "max_gap_ticks" else "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def _run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from pipeline.bootstrap import build_service

    overrides: dict[str, Any] = {spec.name: getattr(args, spec.name) for spec in FIELDS}
    settings = Settings.from_env(**overrides)
    topic_overrides = {
        name: getattr(args, f"topic_{name}")
        for name in ("readings", "dlq", "forecasts", "state")
        if getattr(args, f"topic_{name}")
    }
    if topic_overrides:
        settings = replace(settings, topics=replace(settings.topics, **topic_overrides))
    service = build_service(settings)
    print(f"tankwatch: serving {service.http_url}/metrics", file=sys.stderr, flush=True)
    service.run()
    return 0
