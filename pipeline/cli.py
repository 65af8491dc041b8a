"""``tankwatch run``: parse flags -> Settings -> build_service -> run. Nothing else."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pipeline.config import FIELDS, Settings

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
            default=None,
            metavar="VALUE",
            help=f"{spec.help} (env {spec.env})",
        )
    for name in ("readings", "dlq", "forecasts", "state"):
        p.add_argument(
            f"--topic-{name}",
            dest=f"topic_{name}",
            default=None,
            metavar="NAME",
            help=f"{name} topic (env TANKWATCH_TOPIC_{name.upper()})",
        )
    p.set_defaults(func=_run)


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
