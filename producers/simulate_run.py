"""Run ``tankwatch simulate``: build the config, then write files or stream live."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from producers.sim_config import SimConfig, load_sim_config
from producers.sim_output import write_history, write_labels
from producers.simulator import simulate
from tankwatch.errors import ConfigError

log = logging.getLogger(__name__)


def config_from_args(args: argparse.Namespace) -> SimConfig:
    """Defaults < environment < ``--config`` file < flags."""
    base = load_sim_config(args.config) if args.config else SimConfig()
    env: dict[str, object] = {}
    if not args.config:
        for name, key, kind in (
            ("TANKWATCH_SIM_TANKS", "tanks", int),
            ("TANKWATCH_SIM_INTERVAL", "interval_s", float),
        ):
            text = os.environ.get(name)
            if text:
                try:
                    env[key] = kind(text)
                except ValueError:
                    raise ConfigError(f"{name}={text!r} is not a number") from None
    return base.with_overrides(**env).with_overrides(
        tanks=args.tanks,
        days=args.days,
        interval_s=args.interval,
        seed=args.seed,
        start=args.start,
    )


def run_simulate(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    if args.live:
        from producers.live import run_live
        from tankwatch.kafka_security import security_from_args

        return run_live(
            config,
            args.bootstrap,
            args.topic,
            speed=args.speed or 1.0,
            labels_path=args.labels,
            security=security_from_args(args),
        )
    if not args.out:
        raise ConfigError("simulate needs --out FILE.csv[.gz] (or --live)")
    chunk = simulate(config)
    rows = write_history(chunk, config.tank_ids, args.out)
    msg = f"wrote {rows} readings of {config.tanks} tanks to {args.out}"
    if args.labels:
        n = write_labels(chunk.labels, args.labels)
        msg += f"; {n} anomaly labels to {args.labels}"
    print(msg, file=sys.stderr)
    return 0
