"""``docker compose up`` as closely as a machine without a container engine allows.

The test reads ``docker-compose.yml`` and runs its services natively, in dependency
order, with the commands and environment the file gives them (``${VAR:-default}``
interpolated as Compose does):

* ``kafka`` -- Apache Kafka of the compose image's version (:mod:`tankwatch.apache_kafka`),
  configured from the service's ``KAFKA_*`` environment the way the ``apache/kafka``
  image does (``KAFKA_FOO_BAR`` -> ``foo.bar``); only addresses (listeners, quorum,
  log dir) are the launcher's loopback ones;
* ``topic-init`` (must exit 0), ``replay`` and ``pipeline`` -- the ``tankwatch`` entry
  point with the service's ``command`` and ``environment``;
* ``prometheus`` -- the ``prometheus`` binary with the service's ``command``, the
  compose ``prometheus.yml`` and ``alerts.yml``.

Service host names and ports are mapped to loopback addresses (``kafka:19092`` ->
the broker, ``pipeline:8000`` -> a free port), container paths to what the service's
volumes mount there (``./data`` for ``/app/data``, a temporary directory for a named
volume). Then every Grafana panel query must return data for every tank, and every
alert rule must evaluate cleanly. What cannot run this way is listed in
docs/operations.md ("Compose wiring checked without Docker").
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tankwatch.broker import free_port
from tests.conftest import REPO
from tests.integration.helpers import wait_until
from tests.integration.test_prometheus_grafana import (
    EXPECTED_DASHBOARDS,
    Prometheus,
    _bundled_tanks,
    _dashboards,
    _inject_bad_and_duplicate,
    _queries,
)
from tests.reliability.support import tankwatch_command

pytestmark = [pytest.mark.integration, pytest.mark.prometheus, pytest.mark.slow]

#: Overrides a user may put in .env: replay fast enough that rates move between scrapes.
DOTENV = {"REPLAY_SPEED": "1200", "TANKWATCH_LOG_LEVEL": "info"}
#: Grafana's built-in variables for the compose scrape interval (5 s): Grafana sets
#: $__rate_interval to max(4 x scrape interval, $__interval + scrape interval).
GRAFANA_VARS = {"$__rate_interval": "20s", "$__interval": "5s", "$__range": "5m"}
#: Broker settings that are addresses or identity: the launcher's loopback ones win.
ADDRESS_KEYS = {
    "node.id", "process.roles", "listeners", "advertised.listeners",
    "listener.security.protocol.map", "inter.broker.listener.name",
    "controller.listener.names", "controller.quorum.voters", "log.dirs",
}  # fmt: skip

_VAR = re.compile(r"\$\{(\w+)(?::([-?])([^}]*))?\}")


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}``, ``${VAR:?error}``."""

    def one(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        if env.get(name):
            return env[name]
        if op == "-":
            return arg
        if op == "?":
            raise AssertionError(f"compose requires {name}: {arg}")
        return ""

    return _VAR.sub(one, value)


def load_compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return doc


def broker_props(kafka_env: dict[str, Any]) -> dict[str, str]:
    """The apache/kafka image's rule: ``KAFKA_FOO_BAR=v`` -> ``foo.bar=v``; without
    the address keys, which the launcher sets for loopback."""
    props = {}
    for key, value in kafka_env.items():
        if key.startswith("KAFKA_"):
            prop = key[len("KAFKA_") :].lower().replace("_", ".")
            if prop not in ADDRESS_KEYS:
                props[prop] = str(value)
    return props


class Stack:
    """Maps one compose service onto this machine: environment, paths, addresses."""

    def __init__(self, compose: dict[str, Any], workdir: Path, hosts: dict[str, str]) -> None:
        self.compose = compose
        self.workdir = workdir
        self.hosts = hosts
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def mounts(self, service: dict[str, Any]) -> dict[str, Path]:
        """Container path -> host path for the service's volumes."""
        out = {}
        for vol in service.get("volumes", []):
            src, dst = vol.split(":")[:2]
            if src.startswith("./"):
                out[dst] = REPO / src[2:]
            else:  # a named volume: a fresh directory
                out[dst] = self.workdir / "volumes" / src
                out[dst].mkdir(parents=True, exist_ok=True)
        return out

    def rewrite(self, value: str, service: dict[str, Any]) -> str:
        value = interpolate(str(value), DOTENV)
        for name, addr in self.hosts.items():
            value = value.replace(name, addr)
        for dst, src in sorted(self.mounts(service).items(), key=lambda kv: -len(kv[0])):
            if value == dst or value.startswith(dst + "/"):
                value = str(src) + value[len(dst) :]
        if value.startswith("/app/"):  # the image's WORKDIR holds the repository
            value = str(REPO / value[len("/app/") :])
        return value

    def environment(self, name: str) -> dict[str, str]:
        service = self.compose["services"][name]
        env = {k: self.rewrite(v, service) for k, v in (service.get("environment") or {}).items()}
        for mapping in service.get("ports", []):  # container port -> the mapped free port
            container = mapping.split(":")[-1]
            for k, v in env.items():
                if v == container:
                    env[k] = self.hosts[f"{name}:{container}"].rsplit(":", 1)[1]
        return env

    def command(self, name: str) -> list[str]:
        service = self.compose["services"][name]
        return [self.rewrite(arg, service) for arg in service.get("command", [])]

    def start_app(self, name: str) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - closed below
        try:
            proc = subprocess.Popen(
                [*tankwatch_command(), *self.command(name)],
                env={**os.environ, **self.environment(name)},
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        finally:
            log.close()
        self.procs.append((name, proc))
        return proc

    def log(self, name: str) -> str:
        try:
            return (self.workdir / f"{name}.log").read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def stop_all(self) -> None:
        for _name, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)


class ComposePrometheus(Prometheus):
    """The ``prometheus`` service's command line, run natively. Its mounts are copied
    (``prometheus.yml`` with the service host names mapped) so the repository's files
    stay untouched; the only added flag is a loopback listen address."""

    def __init__(self, stack: Stack) -> None:
        service = stack.compose["services"]["prometheus"]
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        etc = stack.workdir / "etc-prometheus"
        etc.mkdir()
        for vol in service["volumes"]:
            src, dst = vol.split(":")[:2]
            if src.startswith("./"):
                text = (REPO / src[2:]).read_text()
                for name, addr in stack.hosts.items():
                    text = text.replace(name, addr)
                (etc / Path(dst).name).write_text(text)
        args = []
        for arg in service["command"]:
            arg = arg.replace("/etc/prometheus/", f"{etc}/")
            arg = arg.replace("=/prometheus", f"={stack.workdir / 'volumes' / 'prometheus-data'}")
            args.append(arg)
        self.log = stack.workdir / "prometheus.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                ["prometheus", *args, f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )


def substitute(expr: str, tank: str | None) -> str:
    for var, value in GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    if tank is not None:
        expr = expr.replace("$tank_id", tank).replace("${tank_id}", tank)
    assert "$" not in expr.replace("$labels", ""), f"unsubstituted variable in {expr}"
    return expr


@pytest.fixture(scope="module")
def compose_stack(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[tuple[Stack, ComposePrometheus]]:
    if shutil.which("prometheus") is None:
        if os.environ.get("CI"):
            pytest.fail("prometheus missing under CI (run make sysdeps)")
        pytest.skip("prometheus not installed (make sysdeps)")
    from tankwatch.apache_kafka import ApacheKafka
    from tests.conftest import require_apache_kafka

    require_apache_kafka()
    compose = load_compose()
    workdir = tmp_path_factory.mktemp("compose")
    kafka_service = compose["services"]["kafka"]
    # Its own broker (the compose topic names are the defaults: tank.readings, ...),
    # configured by the compose file alone -- none of the test suite's broker settings.
    kafka = ApacheKafka(workdir / "kafka", extra_props=broker_props(kafka_service["environment"]))
    kafka.cluster_id = str(kafka_service["environment"]["CLUSTER_ID"])
    kafka.start()
    pipeline_port = free_port()
    hosts = {"kafka:19092": kafka.bootstrap, "pipeline:8000": f"127.0.0.1:{pipeline_port}"}
    stack = Stack(compose, workdir, hosts)
    prom: ComposePrometheus | None = None
    try:
        init = stack.start_app("topic-init")
        assert init.wait(60) == 0, stack.log("topic-init")
        stack.start_app("replay")
        pipeline = stack.start_app("pipeline")
        health = compose["services"]["pipeline"]["healthcheck"]["test"]
        assert health[:2] == ["CMD", "python"]
        check = [sys.executable, *(stack.rewrite(a, {}) for a in health[2:])]
        check = [a.replace("127.0.0.1:8000", hosts["pipeline:8000"]) for a in check]

        def healthy() -> bool:
            assert pipeline.poll() is None, stack.log("pipeline")
            return subprocess.run(check, capture_output=True, timeout=10).returncode == 0

        wait_until(healthy, 90, "the compose healthcheck of the pipeline")
        prom = ComposePrometheus(stack)
        prom.wait_ready()
        tanks = _bundled_tanks()
        prom.wait_for(
            "count(tank_pressure_pascals)",
            lambda r: bool(r) and int(float(r[0]["value"][1])) == len(tanks),
            timeout_s=90,
        )
        first = prom.query("min(tank_last_reading_timestamp_seconds)")
        _inject_bad_and_duplicate(
            kafka.bootstrap, "tank.readings", tanks[0], float(first[0]["value"][1]) - 600
        )
        prom.wait_for("sum(tankwatch_readings_rejected_total)", bool, timeout_s=60)
        prom.wait_for("sum(tankwatch_checkpoints_total)", bool, timeout_s=60)
        # Rates over 20 s windows need several 5 s scrapes after every counter moved;
        # alert rules are evaluated every 15 s.
        time.sleep(25)
        yield stack, prom
    finally:
        if prom is not None:
            prom.stop()
        stack.stop_all()
        kafka.stop()


def test_compose_services_run_and_topics_exist(
    compose_stack: tuple[Stack, ComposePrometheus],
) -> None:
    stack, _ = compose_stack
    running = {name for name, proc in stack.procs if proc.poll() is None}
    assert running == {"replay", "pipeline"}, {n: p.returncode for n, p in stack.procs}
    assert stack.procs[0][0] == "topic-init" and stack.procs[0][1].returncode == 0
    created = stack.log("topic-init")
    for topic in ("tank.readings", "tank.readings.dlq", "tank.forecasts", "tank.state"):
        assert topic in created, created


@pytest.mark.parametrize("uid", sorted(EXPECTED_DASHBOARDS))
def test_every_panel_returns_data_for_every_tank(
    compose_stack: tuple[Stack, ComposePrometheus], uid: str
) -> None:
    _, prom = compose_stack
    queries = _queries(_dashboards()[uid])
    uses_tank = any("$tank_id" in expr for _, expr in queries)
    tanks = _bundled_tanks()
    empty = []
    for tank in tanks if uses_tank else [None]:
        for title, expr in queries:
            # Over the last 30 s (six scrapes), as a panel shows a time range: a tank's
            # residual is rightly absent for the ticks right after a reset (a refill
            # of the bundled history), and an instant query can land just there.
            if not prom.query(f"last_over_time(({substitute(expr, tank)})[30s:5s])"):
                empty.append((tank, title, expr))
    assert empty == [], f"panels with no data: {empty[:10]}"


def test_compose_alert_rules_evaluate_cleanly(
    compose_stack: tuple[Stack, ComposePrometheus],
) -> None:
    _, prom = compose_stack
    groups = prom.get("/api/v1/rules")["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert rules, "the compose prometheus.yml loaded no alert rules"
    for rule in rules:
        assert rule["health"] == "ok", rule
        assert rule["lastEvaluation"] and not rule["lastEvaluation"].startswith("0001"), rule
