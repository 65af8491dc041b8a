"""Replay readings (CSV files or a loaded frame) into Kafka, paced by event time.

Pacing: the row with event time ``ts`` is sent at ``wall_start + (ts - ts_first) /
speed`` (``speed`` None = as fast as possible). With ``loop`` the data is replayed
again and again, every pass shifted by the span of the data plus one interval, so
event time keeps increasing (a consumer never sees time go backwards).

Messages are keyed by tank_id (:func:`tankwatch.codec.encode_reading`), so one tank's
readings land in one partition in order. The producer is kafka-python's default
idempotent one (``acks='all'``) with batching tuned for throughput. On the end of the
data, Ctrl-C or ``stop_event`` it flushes what was sent and returns a summary.

The pipeline demo runs :func:`replay` in a thread with ``progress=False`` and a
``stop_event``; the CLI runs it in the main thread with a progress line on stderr.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pandas as pd

from producers.csv_source import CsvOptions, LoadResult, load_frame
from tankwatch.codec import Reading, encode_reading, format_ts
from tankwatch.errors import BrokerError, ConfigError, CsvError
from tankwatch.kafka_security import KafkaSecurity
from tankwatch.logs import quiet_kafka_logs

log = logging.getLogger(__name__)

#: Bound on every wait for the broker (metadata, a full send buffer, the final flush), s.
BROKER_WAIT_S = 10.0
#: Longest single sleep while pacing, so a stop request is noticed quickly, s.
MAX_SLEEP_S = 0.2

Source = str | Path | Sequence[str | Path] | pd.DataFrame | LoadResult


@dataclass(frozen=True)
class ReplayOptions:
    """How to replay. ``speed``: event seconds per wall second (None = no pacing).

    ``start``/``end``: keep rows with ``start <= ts < end`` (epoch s, before looping).
    ``max_loops``: with ``loop``, stop after this many passes (None = until stopped).
    ``progress``: show a progress line when stderr is a terminal; ``force_progress``
    shows it anyway (tests, logs).
    """

    speed: float | None = None
    loop: bool = False
    start: float | None = None
    end: float | None = None
    max_loops: int | None = None
    progress: bool = True
    force_progress: bool = False

    def __post_init__(self) -> None:
        if self.speed is not None and not (self.speed > 0 and math.isfinite(self.speed)):
            raise ConfigError(f"replay speed must be a number > 0, got {self.speed}")
        if self.max_loops is not None and self.max_loops < 1:
            raise ConfigError(f"max_loops must be >= 1, got {self.max_loops}")
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ConfigError("replay --end must be after --start")


@dataclass
class ReplaySummary:
    """What a replay did. ``seconds`` is wall time; ``loops`` completed or started passes."""

    rows_sent: int = 0
    bad_rows: int = 0
    seconds: float = 0.0
    rows_per_s: float = 0.0
    loops: int = 0
    interrupted: bool = False
    first_ts: float | None = None
    last_ts: float | None = None
    errors: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """One human line, e.g. for the CLI's final message."""
        span = ""
        if self.first_ts is not None and self.last_ts is not None:
            span = f", event time {format_ts(self.first_ts)} .. {format_ts(self.last_ts)}"
        stop = " (interrupted)" if self.interrupted else ""
        return (
            f"sent {self.rows_sent} readings in {self.seconds:.1f} s "
            f"({self.rows_per_s:,.0f} rows/s), {self.loops} pass(es), "
            f"{self.bad_rows} bad rows skipped{span}{stop}"
        )


def _load(source: Source, csv_options: CsvOptions | None) -> LoadResult:
    if isinstance(source, LoadResult):
        return source
    if isinstance(source, pd.DataFrame):
        missing = [
            c for c in ("ts", "tank_id", "pressure_kpa", "temperature_c") if c not in source.columns
        ]
        if missing:
            raise CsvError(f"frame to replay lacks column(s): {', '.join(missing)}")
        return LoadResult(source)
    return load_frame(source, csv_options or CsvOptions())


def _interval(ts: np.ndarray) -> float:
    """Typical spacing of distinct event times (the loop shift adds one of these)."""
    distinct = np.unique(ts)
    if len(distinct) < 2:
        return 1.0
    return float(np.median(np.diff(distinct)))


class _Progress:
    """A hand-written one-line progress display on stderr (rows/s, event time)."""

    def __init__(self, stream: TextIO, total: int | None) -> None:
        self.stream = stream
        self.total = total
        self.last = 0.0

    def update(self, sent: int, elapsed: float, ts: float, loop: int, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < 0.25:
            return
        self.last = now
        rate = sent / elapsed if elapsed > 0 else 0.0
        total = f"/{self.total:,}" if self.total is not None else ""
        self.stream.write(
            f"\r\x1b[Kreplay: {sent:,}{total} rows  {rate:,.0f} rows/s  "
            f"event time {format_ts(ts)}  pass {loop}"
        )
        self.stream.flush()

    def close(self) -> None:
        self.stream.write("\n")
        self.stream.flush()


def make_producer(bootstrap: str, **overrides: Any) -> Any:
    """A throughput-tuned idempotent KafkaProducer, or BrokerError if Kafka is unreachable.

    Every broker wait is bounded by :data:`BROKER_WAIT_S` so a wrong address fails fast.
    """
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    config: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "linger_ms": 20,
        "batch_size": 256 * 1024,
        "max_block_ms": int(BROKER_WAIT_S * 1000),
        "request_timeout_ms": int(BROKER_WAIT_S * 1000),
        "bootstrap_timeout_ms": int(BROKER_WAIT_S * 1000),
        # A typo in --topic must not silently create a new topic.
        "allow_auto_create_topics": False,
        "client_id": "tankwatch-replay",
    }
    config.update(overrides)
    try:
        with quiet_kafka_logs():
            return KafkaProducer(**config)
    except KafkaError as exc:
        hint = (
            ""
            if "sasl_mechanism" not in config and "ssl_cafile" not in config
            else (" (check the credentials and certificates)")
        )
        raise BrokerError(f"cannot reach Kafka at {bootstrap}: {exc}{hint}") from None
    except ValueError as exc:  # e.g. a malformed bootstrap address
        raise BrokerError(f"bad Kafka bootstrap {bootstrap!r}: {exc}") from None


def _check_topic(
    producer: Any, bootstrap: str, topic: str, security: KafkaSecurity | None = None
) -> None:
    """BrokerError unless ``topic`` exists. Asked via the admin API first, because some
    brokers (Tansu) create any topic a producer asks metadata for, and a typo in
    ``--topic`` must not silently start a new topic."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    wait_ms = int(BROKER_WAIT_S * 1000)
    try:
        with quiet_kafka_logs():
            admin = KafkaAdminClient(
                bootstrap_servers=bootstrap,
                request_timeout_ms=wait_ms,
                bootstrap_timeout_ms=wait_ms,
                client_id="tankwatch-replay-admin",
                **(security.client_kwargs() if security else {}),
            )
            try:
                existing = set(admin.list_topics())
            finally:
                admin.close()
    except KafkaError as exc:
        raise BrokerError(f"cannot list topics on {bootstrap}: {exc}") from None
    if topic not in existing:
        raise BrokerError(
            f"topic {topic!r} does not exist on {bootstrap} (run 'tankwatch topics create')"
        )
    try:
        with quiet_kafka_logs():
            partitions = producer.partitions_for(topic)
    except KafkaError as exc:
        raise BrokerError(
            f"no metadata for topic {topic!r} from {bootstrap} within {BROKER_WAIT_S:.0f} s: {exc}"
        ) from None
    if not partitions:
        raise BrokerError(f"topic {topic!r} on {bootstrap} has no partitions")


def replay(
    source: Source,
    bootstrap: str,
    topic: str,
    csv_options: CsvOptions | None = None,
    replay_options: ReplayOptions | None = None,
    stop_event: threading.Event | None = None,
    progress_stream: TextIO | None = None,
    security: KafkaSecurity | None = None,
) -> ReplaySummary:
    """Send every valid reading of ``source`` to ``topic``; returns a summary.

    ``source``: CSV path(s) (read with ``csv_options``), a frame with the
    :func:`~producers.csv_source.load_frame` columns, or a LoadResult. Raises CsvError
    for unreadable input, BrokerError if Kafka is unreachable (within ~10 s).
    Ctrl-C (KeyboardInterrupt in this thread) or ``stop_event`` end it early,
    flushed, with ``interrupted=True``. ``security``: TLS/SASL of the connection.
    """
    opts = replay_options or ReplayOptions()
    loaded = _load(source, csv_options)
    frame = loaded.frame
    if opts.start is not None:
        frame = frame[frame["ts"] >= opts.start]
    if opts.end is not None:
        frame = frame[frame["ts"] < opts.end]
    if frame.empty:
        where = " between --start and --end" if opts.start or opts.end else ""
        raise CsvError(f"no valid readings to replay{where} ({loaded.bad_rows} bad rows)")
    ts = frame["ts"].to_numpy(dtype=np.float64)
    tanks = frame["tank_id"].astype(str).tolist()
    pressure = frame["pressure_kpa"].to_numpy(dtype=np.float64).tolist()
    temperature = frame["temperature_c"].to_numpy(dtype=np.float64).tolist()
    events = frame["event"].tolist() if "event" in frame.columns else [None] * len(frame)
    events = [e if isinstance(e, str) and e else None for e in events]
    ts_list = ts.tolist()
    shift = float(ts.max() - ts.min()) + _interval(ts)

    stream = progress_stream or sys.stderr
    show = opts.force_progress or (opts.progress and stream.isatty())
    bar = _Progress(stream, None if opts.loop else len(ts_list)) if show else None

    from kafka.errors import KafkaError

    producer = make_producer(bootstrap, **(security.client_kwargs() if security else {}))
    summary = ReplaySummary(bad_rows=loaded.bad_rows, errors=list(loaded.errors))
    failures: list[BaseException] = []

    def on_error(exc: BaseException) -> None:
        if not failures:
            log.warning("send failed", extra={"topic": topic, "error": str(exc)})
        failures.append(exc)

    wall0 = time.monotonic()
    ts0 = ts_list[0]
    speed = opts.speed
    stopped = stop_event.is_set if stop_event is not None else (lambda: False)
    try:
        _check_topic(producer, bootstrap, topic, security)
        passes = 0
        while not stopped():
            if passes and (not opts.loop or (opts.max_loops and passes >= opts.max_loops)):
                break
            offset = passes * shift
            passes += 1
            summary.loops = passes
            last_paced = -math.inf
            for i, t in enumerate(ts_list):
                event_t = t + offset
                if speed is not None and event_t != last_paced:
                    last_paced = event_t
                    due = wall0 + (event_t - ts0) / speed
                    while True:
                        wait = due - time.monotonic()
                        if wait <= 0 or stopped():
                            break
                        if stop_event is not None:
                            stop_event.wait(min(wait, MAX_SLEEP_S))
                        else:
                            time.sleep(min(wait, MAX_SLEEP_S))
                    if stopped():
                        break
                elif (i & 1023) == 0 and stopped():
                    break
                key, value = encode_reading(
                    Reading(tanks[i], event_t, pressure[i], temperature[i], events[i])
                )
                producer.send(topic, key=key, value=value).add_errback(on_error)
                summary.rows_sent += 1
                if summary.first_ts is None:
                    summary.first_ts = event_t
                summary.last_ts = event_t
                if bar is not None and (i & 255) == 0:
                    bar.update(summary.rows_sent, time.monotonic() - wall0, event_t, passes)
            if failures:
                break
        summary.interrupted = stopped()
    except KeyboardInterrupt:
        summary.interrupted = True
    except KafkaError as exc:
        producer.close(timeout=1)
        raise BrokerError(f"sending to {topic!r} on {bootstrap} failed: {exc}") from None
    finally:
        if bar is not None and summary.last_ts is not None:
            bar.update(
                summary.rows_sent,
                time.monotonic() - wall0,
                summary.last_ts,
                summary.loops,
                force=True,
            )
            bar.close()
    try:
        producer.flush(timeout=BROKER_WAIT_S * 3)
    except KafkaError as exc:
        raise BrokerError(f"flushing to {topic!r} on {bootstrap} failed: {exc}") from None
    finally:
        producer.close(timeout=BROKER_WAIT_S)
    if failures:
        raise BrokerError(
            f"{len(failures)} readings could not be delivered to {topic!r} on {bootstrap}: "
            f"{failures[0]}"
        )
    summary.seconds = time.monotonic() - wall0
    summary.rows_per_s = summary.rows_sent / summary.seconds if summary.seconds > 0 else 0.0
    log.info("replay done", extra={"rows": summary.rows_sent, "seconds": summary.seconds})
    return summary
