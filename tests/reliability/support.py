"""Harness for the reliability suite: ``tankwatch run`` as a real child process.

:class:`PipelineProcess` starts the console script with a test environment, waits for
``/healthz``, scrapes ``/metrics`` into plain numbers, samples its RSS from
``/proc/PID/status`` and kills it with any signal. Everything waits with a deadline;
nothing here asserts a duration (speed belongs in ``bench/``).

The input/output helpers of the integration layer (``tests/integration/helpers.py``)
are reused as they are; this module only adds what killing and freezing need.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tankwatch.broker import free_port
from tankwatch.topics import Topics
from tests.integration.helpers import (
    REPO,
    assert_forecasts_equal,
    assert_states_equal,
    http_get,
    pipeline_env,
    produce_readings,
    wait_until,
)

#: Settings every reliability instance uses on top of ``pipeline_env``: a short session
#: so a SIGKILLed member is evicted within seconds (measured on Tansu: a restart after
#: SIGKILL consumed again after ~2 s with a 3 s session, ~11 s with 6 s), a bounded
#: rebalance and frequent checkpoints. (An external Apache Kafka rejects sessions below
#: its ``group.min.session.timeout.ms``, 6 s by default.)
FAST_GROUP_ENV: dict[str, str] = {
    "TANKWATCH_SESSION_TIMEOUT_MS": "3000",
    "TANKWATCH_HEARTBEAT_MS": "300",
    "TANKWATCH_MAX_POLL_INTERVAL_MS": "15000",
    "TANKWATCH_CHECKPOINT_INTERVAL_S": "0.5",
    "TANKWATCH_POLL_TIMEOUT_MS": "100",
    "TANKWATCH_CONNECT_TIMEOUT_S": "10",
}


def tankwatch_command() -> list[str]:
    """The installed ``tankwatch`` console script of this interpreter's environment."""
    script = Path(sys.executable).parent / "tankwatch"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "tankwatch.cli"]


def run_cli(
    args: Sequence[str], env: Mapping[str, str] | None = None, timeout_s: float = 40.0
) -> subprocess.CompletedProcess[str]:
    """Run ``tankwatch ARGS`` to completion (``env`` on top of ours); raises
    ``subprocess.TimeoutExpired`` after ``timeout_s`` (a hang is a failure)."""
    full = {**os.environ, **(env or {})}
    return subprocess.run(
        [*tankwatch_command(), *args],
        env=full,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        stdin=subprocess.DEVNULL,
    )


def parse_metrics(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Prometheus text -> ``{sample name: {sorted label pairs: value}}``."""
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (``VmRSS`` of ``/proc/PID/status``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


@dataclass
class PipelineProcess:
    """``tankwatch run`` as a child process with its own HTTP port and log file.

    ``env`` comes from :func:`instance_env`; ``log_path`` collects stdout+stderr of
    every incarnation (appended), so a failure message can quote its tail.
    """

    env: dict[str, str]
    log_path: Path
    args: Sequence[str] = ()
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.env['TANKWATCH_HTTP_PORT']}"

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def start(self) -> PipelineProcess:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [*tankwatch_command(), "--log-level", "info", "run", *self.args],
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=REPO,
            )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def health(self) -> int | None:
        """HTTP status of ``/healthz``, or None when nothing answers."""
        try:
            return http_get(self.url + "/healthz", 2.0)[0]
        except OSError:
            return None

    def wait_healthy(self, timeout_s: float = 40.0) -> None:
        """Until ``/healthz`` is 200; fails at once (with the log) if the process exits."""

        def ok() -> bool:
            if not self.alive():
                raise AssertionError(
                    f"pipeline exited with {self.proc and self.proc.returncode}:\n"
                    + self.log_tail()
                )
            return self.health() == 200

        wait_until(ok, timeout_s, f"{self.url}/healthz")

    def metrics(self, prefix: str = "") -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
        """Parsed ``/metrics``, only the families whose names start with ``prefix``
        (empty dict when the process does not answer). At 10,000 tanks the page is
        16 MB of per-tank series, and parsing all of it took the test seconds."""
        try:
            status, body = http_get(self.url + "/metrics", 3.0)
        except OSError:
            return {}
        if status != 200:
            return {}
        text = body.decode()
        if prefix:
            keep = (prefix, f"# HELP {prefix}", f"# TYPE {prefix}")
            text = "\n".join(line for line in text.splitlines() if line.startswith(keep))
        return parse_metrics(text)

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels`` (0 if none)."""
        want = set(labels.items())
        family = self.metrics(prefix=name.split("_", 1)[0] + "_").get(name, {})
        return sum(v for k, v in family.items() if want <= set(k))

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> int:
        """SIGKILL and reap; returns the exit code (-9)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        return self.proc.wait(10)

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM (graceful: finish the tick, checkpoint, commit) and reap."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError("pipeline did not stop on SIGTERM:\n" + self.log_tail()) from None

    def ensure_dead(self) -> None:
        """Cleanup for ``finally`` blocks: kill if still running (never raises)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)

    def rss_kib(self) -> int:
        return rss_kib(self.pid)


def instance_env(
    bootstrap: str, topics: Topics, state_dir: Path, group: str, **extra: str
) -> dict[str, str]:
    """Environment of one instance: ``pipeline_env`` + :data:`FAST_GROUP_ENV` + extra,
    on a fresh HTTP port."""
    env = pipeline_env(bootstrap, topics, state_dir, free_port(), group)
    env.update(FAST_GROUP_ENV)
    env.update(extra)
    return env


def last_ticks(history: Sequence[Any]) -> dict[str, float]:
    """Per tank id: the event time of its last reading in ``history``."""
    out: dict[str, float] = {}
    for r in history:
        out[r.tank_id] = max(out.get(r.tank_id, float("-inf")), r.ts)
    return out


def wait_all_applied(
    procs: Sequence[PipelineProcess], history: Sequence[Any], timeout_s: float
) -> None:
    """Until the union of the instances' ``/api/fleet`` shows every tank of
    ``history`` at its last reading (fails early if an instance died)."""
    import json

    want = last_ticks(history)
    seen: dict[str, float] = {}

    def done() -> bool:
        seen.clear()
        for p in procs:
            if not p.alive():
                raise AssertionError("pipeline died:\n" + p.log_tail())
            try:
                status, body = http_get(p.url + "/api/fleet", 3.0)
            except OSError:
                continue
            if status == 200:
                for t in json.loads(body)["tanks"]:
                    if t["ts"] is not None:
                        seen[t["tank_id"]] = max(seen.get(t["tank_id"], float("-inf")), t["ts"])
        return all(seen.get(k) == ts for k, ts in want.items())

    try:
        wait_until(done, timeout_s, "every tank at its last reading")
    except AssertionError as exc:
        behind = {k: (seen.get(k), ts) for k, ts in want.items() if seen.get(k) != ts}
        tails = "\n".join(p.log_tail() for p in procs)
        raise AssertionError(
            f"{exc}; (seen, wanted) ts of tanks behind: {behind}\n{tails}"
        ) from None


class Stopwatch:
    """Monotonic seconds since creation (for printed figures, never asserted)."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def __call__(self) -> float:
        return time.monotonic() - self.t0


def fleet_ticks(
    n_tanks: int, n_ticks: int, interval_s: float, t0: float = 1_700_000_000.0, seed: int = 3
) -> Iterator[list[tuple[bytes, bytes]]]:
    """A large fleet's (key, value) readings, one list per tick, built with NumPy (fast
    enough for 10^5-10^6 readings); epoch-seconds ``ts`` in the middle of each tick."""
    import math

    import numpy as np

    rng = np.random.default_rng(seed)
    base_p = 200 + 40 * rng.random(n_tanks)
    base_t = 15 + 10 * rng.random(n_tanks)
    ids = [f"S{k:05d}" for k in range(n_tanks)]
    keys = [i.encode() for i in ids]
    for t in range(n_ticks):
        phase = 2 * math.pi * t / 96.0 + np.arange(n_tanks)
        p = (base_p + 8 * np.sin(phase) + rng.normal(0, 0.5, n_tanks)).tolist()
        temp = (base_t + 3 * np.cos(phase) + rng.normal(0, 0.1, n_tanks)).tolist()
        ts = t0 + t * interval_s + interval_s / 2
        yield [
            (
                keys[k],
                (
                    f'{{"tank_id":"{ids[k]}","ts":{ts},'
                    f'"pressure_kpa":{p[k]:.3f},"temperature_c":{temp[k]:.3f}}}'
                ).encode(),
            )
            for k in range(n_tanks)
        ]


def produce_ticks(
    bootstrap: str,
    topic: str,
    ticks: Iterable[list[tuple[bytes, bytes]]],
    before_tick: Callable[[int], None] = lambda t: None,
) -> None:
    """Produce a large fleet tick by tick with the pipeline's :class:`BatchProducer`
    (a batch per partition, not a ``send`` per record: ~10x less CPU than kafka-python's
    ``send``, so a 10,000-tank test measures the pipeline, not its own load), calling
    ``before_tick(t)`` first (to pace it). Raises if any record failed."""
    from kafka import KafkaProducer

    from pipeline.sinks.batch_produce import BatchProducer

    failed: list[BaseException] = []
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=20, batch_size=512 * 1024
    )
    try:
        producer.partitions_for(topic)  # metadata first: without it, send() per record
        batches = BatchProducer(producer, topic, lambda n, exc: failed.append(exc))
        for t, records in enumerate(ticks):
            before_tick(t)
            batches.send(records)
        producer.flush()
    finally:
        producer.close()
    if failed:
        raise AssertionError(f"{len(failed)} batches failed, first: {failed[0]!r}")


#: Tolerance (relative, and absolute for states) of forecast and state comparisons
#: against an uninterrupted reference run. A lost or doubly applied reading moves values
#: by orders of magnitude more. (It was 1e-5 for a while with the per-row-normalised
#: model of issue 11: after restarts, forecasts of T004 were up to 1.1e-6 away. The
#: cause was the NumPy engine's step, whose matrix products ran on exactly the rows
#: stepped: OpenBLAS sums the last ``n % 4`` rows of the head's product, and a 1-row
#: product, another way, so a tank's step depended on how many rows reported with it
#: and at which row a restart had put it (T004's first difference: tick 162, in T007's
#: gap, where ticks step 11 rows). The step now pads its products like the horizon
#: (``numpy_engine.PAD_ROWS``; ``test_row_normalised_step_is_bit_identical_whatever_
#: rows_it_runs_with``); crash loop, rebalance, poison and broker restart then matched
#: the reference bit for bit.)
REFERENCE_TOL = 1e-6


def replay_thread(
    bootstrap: str, topic: str, history: Sequence[Any], per_tick_s: float
) -> threading.Thread:
    """A daemon thread (not started) producing ``history`` paced at ``per_tick_s`` wall
    seconds per tick: the replay the reliability tests break things during."""
    return threading.Thread(
        target=produce_readings,
        args=(bootstrap, topic, history),
        kwargs={"per_tick_sleep_s": per_tick_s},
        daemon=True,
    )


def assert_matches_reference(
    reference: Mapping[str, Any], bootstrap: str, topics: Topics, tol: float = REFERENCE_TOL
) -> None:
    """Every forecast (repeats must be identical) and every tank's final state on the
    topics equal the uninterrupted reference run's."""
    from tests.integration.helpers import read_forecasts, read_state

    got = read_forecasts(bootstrap, topics.forecasts)
    assert_forecasts_equal(reference["forecasts"], got, tol)
    assert_states_equal(reference["state"], read_state(bootstrap, topics.state), tol)
