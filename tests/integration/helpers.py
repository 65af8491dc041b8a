"""Shared helpers for tests that run the pipeline against a real broker.

* :func:`synthetic_history` / :func:`produce_readings` / :func:`produce_raw` -- input;
* :func:`pipeline_settings` + :class:`ServiceThread` -- the service in-process;
* :func:`start_pipeline_process` + :func:`wait_healthz` -- ``tankwatch run`` as a real
  process (for signals and SIGKILL);
* :func:`read_forecasts`, :func:`read_state`, :func:`read_dlq` -- read the outputs to
  their end (latest value per key; compaction is not relied on);
* :func:`wait_until` -- poll a condition with a deadline (never a timed assertion).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from pipeline.checkpoint import PARTITION_KEY, decode_state
from pipeline.config import Settings, default_model_dir
from pipeline.forecast_step import TankState
from tankwatch.codec import Reading, encode_reading
from tankwatch.topics import Topics, create_topics

REPO = Path(__file__).resolve().parents[2]


#: Tick interval of the committed default artifact (seconds).
def model_interval_s() -> float:
    meta = json.loads((default_model_dir() / "metadata.json").read_text())
    return float(meta["tick_interval_s"])


def wait_until(pred: Callable[[], bool], timeout_s: float = 30.0, what: str = "condition") -> None:
    """Poll ``pred`` every 50 ms; AssertionError naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


# ------------------------------------------------------------------- input
def synthetic_history(
    n_tanks: int = 8,
    n_ticks: int = 200,
    interval_s: float | None = None,
    seed: int = 1,
    t0: float = 1_700_000_000.0,
    events: Iterable[tuple[int, int]] = (),
    gaps: Iterable[tuple[int, int, int]] = (),
    prefix: str = "T",
) -> list[Reading]:
    """Readings of ``n_tanks`` tanks x ``n_ticks`` ticks, in tick order (tank order
    within a tick). Smooth daily-ish cycles plus noise; ``events``: (tank, tick) with a
    ``refill`` event; ``gaps``: (tank, first_tick, last_tick) with no readings. The
    last tick always has every tank, so a run ends with every tick closed.
    """
    interval = model_interval_s() if interval_s is None else interval_s
    rng = np.random.default_rng(seed)
    ev = set(events)
    missing = {(k, t) for k, a, b in gaps for t in range(a, b + 1)}
    base_p = 200 + 40 * rng.random(n_tanks)
    base_t = 15 + 10 * rng.random(n_tanks)
    out = []
    for t in range(n_ticks):
        for k in range(n_tanks):
            if (k, t) in missing and t != n_ticks - 1:
                continue
            phase = 2 * math.pi * t / 96.0 + k
            p = base_p[k] + 8 * math.sin(phase) + rng.normal(0, 0.5)
            temp = base_t[k] + 3 * math.cos(phase) + rng.normal(0, 0.1)
            ts = t0 + t * interval + interval * 0.1 + (k % 5) * interval * 0.1
            out.append(
                Reading(
                    f"{prefix}{k:03d}",
                    ts,
                    round(p, 3),
                    round(temp, 3),
                    "refill" if (k, t) in ev else None,
                )
            )
    return out


def _producer(bootstrap: str, **config: Any) -> Any:
    from kafka import KafkaProducer

    return KafkaProducer(
        **{"bootstrap_servers": bootstrap, "acks": "all", "linger_ms": 5, **config}
    )


def produce_readings(
    bootstrap: str,
    topic: str,
    readings: Sequence[Reading],
    per_tick_sleep_s: float = 0.0,
    interval_s: float | None = None,
) -> None:
    """Produce readings keyed by tank_id, in order. ``per_tick_sleep_s`` > 0 paces the
    replay: that much wall time per tick of event time (e.g. 0.01 = 6000x for 60 s)."""
    interval = model_interval_s() if interval_s is None else interval_s
    producer = _producer(bootstrap)
    futures: list[Any] = []
    try:
        last_tick = None
        for r in readings:
            tick = math.floor(r.ts / interval)
            if per_tick_sleep_s and last_tick is not None and tick != last_tick:
                producer.flush()
                time.sleep(per_tick_sleep_s)
            last_tick = tick
            key, value = encode_reading(r)
            futures.append(producer.send(topic, key=key, value=value))
        producer.flush()
    finally:
        producer.close()
    # flush() does not raise for a record that failed for good: a reading the test
    # believes sent must not be silently missing (it would look like a pipeline loss).
    failed = [f.exception for f in futures if f.failed()]
    assert not failed, f"{len(failed)} of {len(futures)} readings not produced: {failed[0]!r}"


def produce_raw(
    bootstrap: str,
    topic: str,
    items: Iterable[tuple[bytes | None, bytes | None]],
    **producer_config: Any,
) -> None:
    """Produce raw (key, value) pairs as given (malformed input, large fleets);
    ``producer_config`` overrides the KafkaProducer settings."""
    producer = _producer(bootstrap, **producer_config)
    try:
        for key, value in items:
            producer.send(topic, key=key, value=value)
        producer.flush()
    finally:
        producer.close()


# ------------------------------------------------------------------ output
#: Addresses of the embedded (Tansu) brokers started by fixtures: only these get its
#: workarounds (the high water of fetch responses instead of ListOffsets).
EMBEDDED_BOOTSTRAPS: set[str] = set()


def topic_partitions(consumer: Any, topic: str, timeout_s: float = 20.0) -> list[int]:
    """The topic's partitions, sorted, once the client has its metadata. A first
    bootstrap connection can fail (ECONNREFUSED, seen in 1 of 5 runs) and kafka-python's
    ``partitions_for_topic`` then answers an empty set, which a reader took for an
    empty topic: it returned no records and failed its test."""
    deadline = time.monotonic() + timeout_s
    while not (parts := consumer.partitions_for_topic(topic)):
        if time.monotonic() > deadline:
            raise AssertionError(f"no metadata for {topic} within {timeout_s} s")
        time.sleep(0.1)
    return sorted(parts)


def _read_all(bootstrap: str, topic: str, timeout_s: float = 20.0) -> list[Any]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    try:
        deadline = time.monotonic() + timeout_s
        tps = [TopicPartition(topic, p) for p in topic_partitions(consumer, topic, timeout_s)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        out: list[Any] = []
        # Apache Kafka: the end offsets now. Tansu 0.6 can answer ListOffsets with the
        # base offset of the last batch, so there the high water of fetch responses.
        ends = None if bootstrap in EMBEDDED_BOOTSTRAPS else consumer.end_offsets(tps)
        while True:
            for msgs in consumer.poll(timeout_ms=200).values():
                out.extend(msgs)
            if ends is not None:
                if all(consumer.position(tp) >= ends[tp] for tp in tps):
                    return out
                if time.monotonic() > deadline:
                    raise AssertionError(f"reading {topic} to its end timed out")
                continue
            hws = [consumer.highwater(tp) for tp in tps]
            if all(
                hw is not None and consumer.position(tp) >= hw
                for tp, hw in zip(tps, hws, strict=True)
            ):
                return out
            if time.monotonic() > deadline:
                raise AssertionError(f"reading {topic} to its end timed out")
    finally:
        consumer.close()


def read_forecasts(bootstrap: str, topic: str) -> dict[tuple[str, int], dict[str, Any]]:
    """Every forecast record keyed by (tank_id, tick); a repeated key must be identical
    (at-least-once with identical values), which this asserts."""
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for m in _read_all(bootstrap, topic):
        rec = json.loads(m.value)
        key = (rec["tank_id"], rec["tick"])
        if key in out:
            assert_records_close(out[key], rec, 1e-6, f"repeated {key}")
        out[key] = rec
    return out


def read_state(bootstrap: str, topic: str) -> dict[str, TankState]:
    """Latest tank state per tank id from the state topic."""
    out: dict[str, TankState] = {}
    for m in _read_all(bootstrap, topic):
        if m.key == PARTITION_KEY or m.value is None:
            continue
        s = decode_state(m.value)
        if s.tank_id not in out or s.last_tick >= out[s.tank_id].last_tick:
            out[s.tank_id] = s
    return out


def read_dlq(bootstrap: str, topic: str) -> list[tuple[bytes | None, bytes | None, dict[str, str]]]:
    """(key, value, headers) of every dead letter."""
    return [
        (m.key, m.value, {k: v.decode() for k, v in (m.headers or [])})
        for m in _read_all(bootstrap, topic)
    ]


def _values(rec: dict[str, Any]) -> list[float]:
    """Physical values of a record: actual, next-step and horizon forecasts (kPa, degC)."""
    vals = [rec["actual"]["pressure_kpa"], rec["actual"]["temperature_c"]]
    vals += [rec["forecast"]["pressure_kpa"], rec["forecast"]["temperature_c"]]
    vals += rec["horizon"]["pressure_kpa"] + rec["horizon"]["temperature_c"]
    return [math.nan if v is None else float(v) for v in vals]


def _residual(rec: dict[str, Any]) -> list[float]:
    res = rec["residual"]
    return [math.nan, math.nan] if res is None else [res["pressure_kpa"], res["temperature_c"]]


def assert_records_close(a: dict[str, Any], b: dict[str, Any], tol: float, what: str = "") -> None:
    """Same tank, tick, reset, flag; physical values equal to ``tol`` relative.

    Why relative: values are float32 (~250 kPa has a resolution of ~1.5e-5 kPa). (The
    NumPy engine gives a row the same bits whatever rows are stepped with it, e.g.
    alone in a catch-up: ``numpy_engine.PAD_ROWS``; the tolerance is the margin a
    comparison allows, not a known difference.) The residual, a small difference of
    two such values, is compared with the same absolute error as its operands; the
    anomaly score (residual / a small sigma) to 1e-3 relative.
    """
    for field in ("tank_id", "tick", "tick_ts", "anomaly_flag", "reset", "model_version"):
        assert a[field] == b[field], f"{what}: {field} {a[field]!r} != {b[field]!r}"
    x, y = np.asarray(_values(a)), np.asarray(_values(b))
    assert np.array_equal(np.isnan(x), np.isnan(y)), f"{what}: NaN pattern differs: {a} != {b}"
    ok = np.isnan(x) | np.isclose(x, y, rtol=tol, atol=tol)
    assert ok.all(), f"{what}: {x[~ok]} != {y[~ok]}"
    ra, rb = np.asarray(_residual(a)), np.asarray(_residual(b))
    assert np.array_equal(np.isnan(ra), np.isnan(rb)), f"{what}: residual presence differs"
    scale = np.abs(x[:2]) * tol + tol
    okr = np.isnan(ra) | (np.abs(ra - rb) <= 2 * scale)
    assert okr.all(), f"{what}: residual {ra} != {rb}"
    assert math.isclose(a["anomaly_score"], b["anomaly_score"], rel_tol=1e-3, abs_tol=1e-3), (
        f"{what}: anomaly score {a['anomaly_score']} != {b['anomaly_score']}"
    )


def assert_forecasts_equal(
    a: dict[tuple[str, int], dict[str, Any]], b: dict[tuple[str, int], dict[str, Any]], tol: float
) -> None:
    assert a.keys() == b.keys(), (
        f"tick sets differ: only in first {sorted(a.keys() - b.keys())[:5]}, "
        f"only in second {sorted(b.keys() - a.keys())[:5]}"
    )
    for key in a:
        assert_records_close(a[key], b[key], tol, str(key))


# ---------------------------------------------------------------- services
def pipeline_settings(
    bootstrap: str, topics: Topics, state_dir: Path, group: str | None = None, **overrides: Any
) -> Settings:
    """Settings for a test instance: NumPy engine, free HTTP port, fast checkpoints.

    The group session is long (30 s): an in-process instance shares one GIL with the
    test's producer and readers, on 2 cores shared with the unit-test worker, and its
    heartbeats can lag; a member dropped from the group costs a rejoin and a restore
    (seen under load: no partition assigned within 30 s). Every in-process instance
    leaves its group when stopped, so no test waits for a session to expire."""
    values: dict[str, Any] = {
        "bootstrap": bootstrap,
        "topics": topics,
        "state_dir": state_dir,
        "group": group or f"g-{topics.readings}",
        "http_port": 0,
        "engine": "numpy",
        "checkpoint_interval_s": 1.0,
        "poll_timeout_ms": 100,
        "session_timeout_ms": 30000,
        "heartbeat_interval_ms": 1000,
        "max_poll_interval_ms": 120000,
    }
    values.update(overrides)
    return Settings.from_env(environ={}, **values)


@dataclass
class ServiceThread:
    """A Service running in a background thread (context manager; stops it on exit)."""

    settings: Settings
    registry: CollectorRegistry | None = None

    def __enter__(self) -> ServiceThread:
        from pipeline.bootstrap import build_service

        self.registry = self.registry or CollectorRegistry()
        self.service = build_service(self.settings, self.registry)
        self.error: BaseException | None = None

        def target() -> None:
            try:
                self.service.run()
            except BaseException as exc:  # surfaced by stop()
                self.error = exc

        self.thread = threading.Thread(target=target, name="pipeline", daemon=True)
        self.thread.start()
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        self.service.request_stop()
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "service did not stop"
        if self.error is not None:
            raise self.error

    def __exit__(self, *exc: object) -> None:
        if self.thread.is_alive():
            self.stop()


def wait_consumed(svc: Any, n: int, timeout_s: float = 30.0) -> None:
    """Until the service consumed ``n`` messages and holds no open tick."""
    wait_until(
        lambda: svc.stats["consumed"] >= n and svc.stats["held"] == 0,
        timeout_s,
        f"{n} messages consumed and every tick closed (stats: {svc.stats})",
    )


def start_pipeline_process(
    env: dict[str, str], args: Sequence[str] = (), log_path: Path | None = None
) -> subprocess.Popen[bytes]:
    """``tankwatch run`` as a child process (environment on top of ours)."""
    full = {**os.environ, **env}
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "tankwatch.cli", "--log-level", "info", "run", *args],
            env=full,
            stdout=out,
            stderr=subprocess.STDOUT if log_path else subprocess.DEVNULL,
            cwd=REPO,
        )
    finally:
        if log_path:
            out.close()  # type: ignore[union-attr]


def pipeline_env(
    bootstrap: str, topics: Topics, state_dir: Path, port: int, group: str
) -> dict[str, str]:
    """Environment for :func:`start_pipeline_process`."""
    return {
        "KAFKA_BOOTSTRAP": bootstrap,
        "TANKWATCH_TOPIC_READINGS": topics.readings,
        "TANKWATCH_TOPIC_DLQ": topics.dlq,
        "TANKWATCH_TOPIC_FORECASTS": topics.forecasts,
        "TANKWATCH_TOPIC_STATE": topics.state,
        "TANKWATCH_STATE_DIR": str(state_dir),
        "TANKWATCH_HTTP_PORT": str(port),
        "TANKWATCH_GROUP": group,
        "TANKWATCH_ENGINE": "numpy",
        "TANKWATCH_CHECKPOINT_INTERVAL_S": "1",
        "TANKWATCH_SESSION_TIMEOUT_MS": "6000",
        "TANKWATCH_HEARTBEAT_MS": "500",
    }


def http_get(url: str, timeout_s: float = 5.0) -> tuple[int, bytes]:
    """(status, body) of a GET; HTTP errors are returned, not raised."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_healthz(
    url: str, timeout_s: float = 30.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Until ``url``/healthz answers 200 (fails early if ``proc`` exits)."""

    def ok() -> bool:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"pipeline exited with {proc.returncode}")
        try:
            return http_get(url + "/healthz", 2.0)[0] == 200
        except OSError:
            return False

    wait_until(ok, timeout_s, f"{url}/healthz")


# --------------------------------------------------------------- reference
def unique_topics(bootstrap: str, prefix: str, partitions: int = 4) -> Topics:
    """Fresh topics outside the function-scoped ``make_topics`` fixture."""
    suffix = f"{prefix}.{uuid.uuid4().hex[:8]}"
    topics = Topics(f"r.{suffix}", f"d.{suffix}", f"f.{suffix}", f"s.{suffix}")
    create_topics(bootstrap, topics, partitions)
    return topics


def run_reference(bootstrap: str, history: Sequence[Reading], state_dir: Path) -> dict[str, Any]:
    """One uninterrupted, as-fast-as-possible in-process run of ``history``:
    ``{"history", "topics", "stats", "forecasts", "state"}``."""
    topics = unique_topics(bootstrap, "ref")
    produce_readings(bootstrap, topics.readings, history)
    settings = pipeline_settings(bootstrap, topics, state_dir)
    with ServiceThread(settings) as run:
        wait_consumed(run.service, len(history), 90)  # a deadline for loaded machines
        stats = run.service.stats
    return {
        "history": list(history),
        "topics": topics,
        "stats": stats,
        "forecasts": read_forecasts(bootstrap, topics.forecasts),
        "state": read_state(bootstrap, topics.state),
    }


#: The standard test history: 8 tanks x 200 ticks, one refill event, one gap reset.
STANDARD_HISTORY: dict[str, Any] = {
    "n_tanks": 8,
    "n_ticks": 200,
    "events": [(2, 50)],
    "gaps": [(3, 80, 95)],
}


def standard_reference(bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """:func:`run_reference` of the standard history (for a module-scoped fixture)."""
    history = synthetic_history(**STANDARD_HISTORY)
    return run_reference(bootstrap, history, tmp_path_factory.mktemp("ref"))


def assert_states_equal(a: dict[str, TankState], b: dict[str, TankState], tol: float) -> None:
    """Same tanks, same last applied tick; h, c and the held forecast equal to ``tol``
    (absolute and relative), the anomaly statistics to 1e-3.

    Why relative as well as absolute: ``c`` is not bounded (values of a few hundred
    occur, where one ulp is ~3e-5), nor is the held forecast (physical units). (Batch
    composition no longer moves the last bits with the NumPy engine:
    ``numpy_engine.PAD_ROWS``.) The anomaly statistics are EWMAs of a residual over a
    small sigma, which amplifies any last-bit difference.
    """
    assert a.keys() == b.keys(), f"tanks differ: {sorted(a.keys() ^ b.keys())[:5]}"
    for tank in a:
        x, y = a[tank], b[tank]
        assert x.last_tick == y.last_tick, f"{tank}: last tick {x.last_tick} != {y.last_tick}"
        np.testing.assert_allclose(x.h, y.h, rtol=tol, atol=tol, err_msg=f"{tank} h")
        np.testing.assert_allclose(x.c, y.c, rtol=tol, atol=tol, err_msg=f"{tank} c")
        np.testing.assert_allclose(x.held, y.held, rtol=tol, atol=tol, err_msg=f"{tank} held")
        for key in x.anomaly:
            np.testing.assert_allclose(
                x.anomaly[key], y.anomaly[key], rtol=1e-3, atol=1e-3, err_msg=f"{tank} {key}"
            )


def metric_sum(text: str, name: str) -> float:
    """Sum of every sample of ``name`` (optionally with its ``{labels}`` written out
    exactly) in a Prometheus text exposition."""
    total, found = 0.0, False
    for line in text.splitlines():
        if line.startswith(name) and line[len(name)] in " {":
            total += float(line.rsplit(" ", 1)[1])
            found = True
    if not found:
        raise KeyError(f"no sample of {name} in the exposition")
    return total


def fleet_done(url: str, history: Sequence[Reading]) -> bool:
    """True when ``/api/fleet`` shows every tank at its last reading of ``history``."""
    last: dict[str, float] = {}
    for r in history:
        last[r.tank_id] = max(last.get(r.tank_id, -math.inf), r.ts)
    try:
        status, body = http_get(url + "/api/fleet", 2.0)
    except OSError:
        return False
    if status != 200:
        return False
    seen = {t["tank_id"]: t["ts"] for t in json.loads(body)["tanks"]}
    return all(seen.get(tank) == ts for tank, ts in last.items())
