"""``tankwatch simulate`` and ``tankwatch replay``: argument parsing only.

The work is done in :mod:`producers.simulate_run` and :mod:`producers.replay`;
every option has an environment variable where that makes sense.
"""

from __future__ import annotations

import argparse
import os

from producers.sim_config import SimConfig
from tankwatch.cli import add_bootstrap_arg, positive_float, positive_int
from tankwatch.kafka_security import add_security_args

#: Defaults shown in ``simulate --help`` (a --config file or the flags override them).
_SIM = SimConfig()


def _simulate(args: argparse.Namespace) -> int:
    from producers.simulate_run import run_simulate

    return run_simulate(args)


def _replay(args: argparse.Namespace) -> int:
    from producers.replay_cli import run_replay

    return run_replay(args)


def _register_simulate(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "simulate",
        help="simulate a tank farm: write a history CSV, or stream live to Kafka",
        description="Simulate tank headspace pressure and temperature. Without --live, "
        "write the bundled history format (CSV, gzip if .gz) and the anomaly labels; "
        "with --live, produce readings to Kafka in real time until Ctrl-C.",
    )
    p.add_argument("--config", help="JSON file with SimConfig fields (flags override it)")
    p.add_argument("--out", help="history CSV to write (.csv or .csv.gz)")
    p.add_argument("--labels", help="anomaly labels CSV to write (tank_id,start,end,kind)")
    p.add_argument(
        "--tanks",
        type=positive_int,
        default=None,
        help=f"number of tanks (env TANKWATCH_SIM_TANKS; default {_SIM.tanks})",
    )
    p.add_argument(
        "--days",
        type=positive_float,
        default=None,
        help=f"simulated days (history; default {_SIM.days:g})",
    )
    p.add_argument(
        "--interval",
        type=positive_float,
        default=None,
        help=f"tick interval in seconds (env TANKWATCH_SIM_INTERVAL; default {_SIM.interval_s:g})",
    )
    p.add_argument("--seed", type=int, default=None, help=f"random seed (default {_SIM.seed})")
    p.add_argument(
        "--start", default=None, help=f"start time, RFC 3339 (history; default {_SIM.start})"
    )
    p.add_argument(
        "--live", action="store_true", help="stream to Kafka in real time instead of writing a file"
    )
    add_bootstrap_arg(p)
    add_security_args(p)
    p.add_argument(
        "--topic",
        default=os.environ.get("TANKWATCH_TOPIC_READINGS", "tank.readings"),
        help="readings topic (env TANKWATCH_TOPIC_READINGS; default %(default)s)",
    )
    p.add_argument(
        "--speed",
        type=positive_float,
        default=os.environ.get("TANKWATCH_SIM_SPEED") or None,
        help="--live: simulated seconds per wall-clock second (default 1)",
    )
    p.set_defaults(func=_simulate)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``simulate`` and ``replay`` to the ``tankwatch`` command."""
    _register_simulate(sub)
    try:
        from producers.replay_cli import register_replay
    except ModuleNotFoundError as exc:
        if exc.name != "producers.replay_cli":
            raise
        return
    register_replay(sub)
