"""``tankwatch demo``: the whole system on one machine, no Docker.

Starts the embedded Kafka-protocol broker (or uses ``KAFKA_BOOTSTRAP``), creates the
topics, runs the pipeline with the committed default model, and replays the bundled
history into it, looping, so the dashboard page is visibly alive. Stops cleanly on
Ctrl-C / SIGTERM or after ``--duration`` seconds, in dependency order: replay first
(nothing new arrives), then the pipeline (it checkpoints and commits while the broker
is still up), then the broker.

Pacing: the first ``--warmup-ticks`` ticks are replayed as fast as possible so the
LSTM state and the anomaly scorer's baseline are warm when the page first loads; the
rest at ``--speed`` x event time (default 300x: one 60 s tick every 0.2 s, 5 ticks per
second on the page — fast enough to see motion, slow enough to follow).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TextIO

from tankwatch.cli import positive_float
from tankwatch.errors import ConfigError, TankwatchError
from tankwatch.kafka_security import KafkaSecurity, add_security_args, security_from_args

if TYPE_CHECKING:
    from tankwatch.broker import EmbeddedBroker

log = logging.getLogger(__name__)

DEFAULT_SPEED = 300
DEFAULT_WARMUP_TICKS = 120
#: How long to wait for each background part to finish once asked to stop (seconds).
STOP_TIMEOUT_S = 30.0


def bundled_history() -> Path:
    """``data/history.csv.gz`` of the repository (or of the Docker image's /app)."""
    return Path(__file__).resolve().parent.parent / "data" / "history.csv.gz"


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0..65535, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value}")
    return value


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``tankwatch demo`` to the command line.

    Environment defaults are passed as strings: argparse converts them with ``type`` at
    parse time, so a bad value is a usage error of ``demo``, not a crash of every command.
    """
    env = os.environ
    p = sub.add_parser(
        "demo",
        help="run everything locally (embedded broker, replay, pipeline, live dashboard)",
        description="Run the whole pipeline on this machine without Docker: an embedded "
        "Kafka-protocol broker, the bundled history replayed in a loop, the pipeline with "
        "the default model, /metrics and a live dashboard page. Ctrl-C stops it cleanly.",
    )
    p.add_argument(
        "--duration",
        type=positive_float,
        metavar="S",
        default=env.get("TANKWATCH_DEMO_DURATION") or None,
        help="stop after S seconds (env TANKWATCH_DEMO_DURATION; default: until Ctrl-C)",
    )
    p.add_argument(
        "--speed",
        type=positive_float,
        metavar="X",
        default=env.get("TANKWATCH_DEMO_SPEED") or str(DEFAULT_SPEED),
        help="replay speed-up over event time after the warm-up; 300 = one 60 s tick "
        "every 0.2 s (env TANKWATCH_DEMO_SPEED; default %(default)s)",
    )
    p.add_argument(
        "--warmup-ticks",
        type=_non_negative_int,
        metavar="N",
        default=DEFAULT_WARMUP_TICKS,
        help="ticks replayed as fast as possible first, so the page starts warm "
        "(default %(default)s)",
    )
    p.add_argument(
        "--http-port",
        type=_port,
        metavar="P",
        default=env.get("TANKWATCH_HTTP_PORT") or "8000",
        help="port of the dashboard, /metrics and /healthz "
        "(env TANKWATCH_HTTP_PORT; 0 = any free port; default %(default)s)",
    )
    p.add_argument(
        "--tanks-file",
        type=Path,
        metavar="CSV",
        default=None,
        help="history CSV to replay instead of the bundled data/history.csv.gz; read "
        "with the CSV format options below, like replay (default: the bundled history)",
    )
    p.add_argument(
        "--model",
        type=Path,
        metavar="DIR",
        default=env.get("TANKWATCH_MODEL") or None,
        help="model artifact directory (env TANKWATCH_MODEL; default: the committed model)",
    )
    p.add_argument(
        "--no-browser-hint",
        action="store_true",
        help="don't print the 'open this in your browser' hint (for scripts)",
    )
    from producers.replay_cli import add_csv_format_args

    add_csv_format_args(p)
    add_security_args(p)  # for an external Kafka (KAFKA_BOOTSTRAP); the embedded one is plain
    p.set_defaults(func=run_demo)


@dataclass
class _Worker:
    """A background thread that records the exception that ended it, if any."""

    name: str
    target: Callable[[], object]
    error: BaseException | None = None
    thread: threading.Thread = field(init=False)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._run, name=self.name, daemon=True)

    def _run(self) -> None:
        try:
            self.target()
        except BaseException as exc:  # reported by the main thread, never lost
            self.error = exc
            log.debug("demo worker failed", extra={"worker": self.name}, exc_info=True)

    def start(self) -> None:
        self.thread.start()

    def join(self, timeout: float) -> bool:
        self.thread.join(timeout)
        return not self.thread.is_alive()


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT/SIGTERM set ``stop`` instead of raising, so shutdown runs in order."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals can only be handled on the main thread (e.g. under a test runner)
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            print("tankwatch demo: still stopping…", file=sys.stderr, flush=True)
        stop.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _stop_broker(broker: EmbeddedBroker, grace_s: float = 1.0) -> None:
    """Stop the embedded broker without its graceful-shutdown wait.

    Tansu takes ~5 s to exit on SIGTERM once clients have used it; its storage is in
    memory and discarded, and the pipeline has already committed, so that wait protects
    nothing. SIGTERM, a short grace, then SIGKILL; the process is always reaped.
    """
    proc = broker.proc
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    broker.stop()  # bookkeeping (and a no-op kill of the reaped process)


def _replay_target(
    frame: Any,
    bootstrap: str,
    topic: str,
    speed: float,
    warmup_ticks: int,
    stop: threading.Event,
    security: KafkaSecurity | None = None,
) -> Callable[[], object]:
    """The replay thread: warm-up ticks as fast as possible, then the rest at ``speed``
    x event time, looping (each pass shifted forward, so event time never goes back)."""
    import numpy as np

    from producers.replay import ReplayOptions, replay

    def run() -> object:
        nonlocal frame
        ts = np.unique(frame["ts"].to_numpy(dtype=np.float64))
        interval = float(np.median(np.diff(ts))) if len(ts) > 1 else 60.0
        split = float(ts[0]) + warmup_ticks * interval
        if warmup_ticks and split < ts[-1]:
            replay(
                frame[frame["ts"] < split],
                bootstrap,
                topic,
                replay_options=ReplayOptions(speed=None, progress=False),
                stop_event=stop,
                security=security,
            )
            frame = frame[frame["ts"] >= split]
        if stop.is_set():
            return None
        return replay(
            frame,
            bootstrap,
            topic,
            replay_options=ReplayOptions(speed=speed, loop=True, progress=False),
            stop_event=stop,
            security=security,
        )

    return run


def _print_banner(
    out: TextIO,
    url: str,
    bootstrap: str,
    embedded: bool,
    source: Path,
    speed: float,
    interval_s: float,
    model_version: str,
    duration: float | None,
    hint: bool,
) -> None:
    base = url.rstrip("/")
    with contextlib.suppress(ValueError):  # show data/history.csv.gz, not /long/path/...
        source = source.resolve().relative_to(Path.cwd())
    broker = f"{bootstrap} ({'embedded, in memory' if embedded else 'KAFKA_BOOTSTRAP'})"
    lines = [
        "",
        "tankwatch demo is running",
        f"  dashboard  {base}/",
        f"  metrics    {base}/metrics",
        f"  health     {base}/healthz",
        f"  broker     {broker}",
        f"  model      {model_version} (tick {interval_s:g} s)",
        f"  replaying  {source} at {speed:g}x event time "
        f"(~{speed / interval_s:.3g} ticks/s), looping",
        f"  stops      {'after ' + format(duration, 'g') + ' s or ' if duration else ''}on Ctrl-C",
    ]
    if hint:
        lines.append(f"Open {base}/ in your browser.")
    print("\n".join(lines), file=out, flush=True)


def _load_history(source: Path, args: argparse.Namespace) -> Any:
    """The readings to replay, validated: a one-line ConfigError/CsvError if unusable."""
    from producers.csv_source import load_frame
    from producers.replay_cli import csv_options_from_args

    if not source.is_file():
        raise ConfigError(f"history file not found: {source}")
    loaded = load_frame([source], csv_options_from_args(args))
    if loaded.frame.empty:
        first = f"; first: {loaded.errors[0]}" if loaded.errors else ""
        raise ConfigError(
            f"{source}: no usable readings ({loaded.bad_rows} bad rows{first}); "
            "see the CSV format options of tankwatch demo --help"
        )
    # The drop limit and the CSV summary, as for replay/train/evaluate (the demo runs
    # until stopped, so its summary comes once the file is loaded).
    from producers.csv_report import check_drops, summary_lines

    if hasattr(args, "drop_limit"):
        check_drops(loaded, args.drop_limit, args.allow_drops)
    for line in summary_lines(loaded):
        print(f"tankwatch: {line}", file=sys.stderr, flush=True)
    return loaded.frame


def run_demo(args: argparse.Namespace) -> int:
    """Entry point of ``tankwatch demo``; returns the exit code."""
    from pipeline.bootstrap import build_service
    from pipeline.config import Settings
    from producers.replay import quiet_kafka_logs
    from tankwatch.broker import EmbeddedBroker
    from tankwatch.topics import Topics, create_topics

    source = args.tanks_file or bundled_history()
    frame = _load_history(source, args)  # before anything starts or is announced
    stop = threading.Event()
    replay_stop = threading.Event()
    workers: list[_Worker] = []
    with contextlib.ExitStack() as cleanup, _stop_on_signals(stop):
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP", "")
        embedded = not bootstrap
        security = KafkaSecurity() if embedded else security_from_args(args)
        with quiet_kafka_logs():
            if embedded:
                broker = EmbeddedBroker()
                cleanup.callback(_stop_broker, broker)  # first: stopped even if start fails
                broker.start()
                bootstrap = broker.bootstrap
            topics = Topics.from_env()
            create_topics(bootstrap, topics, security=security)
        # A fresh state directory and group each run: the embedded broker forgets
        # everything when it stops, so an old checkpoint would not match its offsets.
        state_dir = Path(tempfile.mkdtemp(prefix="tankwatch-demo-"))
        cleanup.callback(shutil.rmtree, state_dir, ignore_errors=True)
        overrides: dict[str, Any] = {
            "bootstrap": bootstrap,
            "http_port": args.http_port,
            "state_dir": state_dir,
            "group": f"tankwatch-demo-{uuid.uuid4().hex[:8]}",
            "topics": topics,  # exactly the topics created above
        }
        if args.model is not None:
            overrides["model_dir"] = args.model
        with quiet_kafka_logs():
            settings = dataclasses.replace(Settings.from_env(**overrides), security=security)
            service = build_service(settings)

        svc = _Worker("pipeline", lambda: service.run(stop))
        svc.start()
        workers.append(svc)
        rep = _Worker(
            "replay",
            _replay_target(
                frame,
                bootstrap,
                topics.readings,
                args.speed,
                args.warmup_ticks,
                replay_stop,
                security,
            ),
        )
        rep.start()
        workers.append(rep)
        _print_banner(
            sys.stdout,
            service.http_url,
            bootstrap,
            embedded,
            source,
            args.speed,
            service.model.tick_interval_s,
            service.model.model_version,
            args.duration,
            not args.no_browser_hint,
        )

        deadline = None if args.duration is None else time.monotonic() + args.duration
        while not stop.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                break
            if not svc.thread.is_alive() or rep.error is not None:
                break  # something died: shut the rest down and report it
            stop.wait(0.2)

        print("tankwatch demo: stopping…", file=sys.stderr, flush=True)
        # kafka-python logs in-flight requests it cancels on close as errors (with a
        # traceback); closing is deliberate here, and our own failures still raise.
        with quiet_kafka_logs():
            replay_stop.set()
            rep.join(STOP_TIMEOUT_S)
            stop.set()
            service.request_stop()
            if not svc.join(STOP_TIMEOUT_S):
                log.warning("pipeline did not stop in time", extra={"timeout_s": STOP_TIMEOUT_S})
    # The broker is stopped (ExitStack) only after the pipeline has committed.
    for w in workers:
        if w.error is not None:
            if isinstance(w.error, TankwatchError):
                raise w.error
            raise TankwatchError(f"demo {w.name} failed: {w.error!r}") from w.error
    print("tankwatch demo: stopped", file=sys.stderr, flush=True)
    return 0
