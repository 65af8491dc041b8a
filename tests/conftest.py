"""Shared fixtures: one real Kafka broker per session, fresh topics per test.

Which broker (``broker_kind``):

* ``apache`` (default): Apache Kafka from its Maven Central jars
  (:mod:`tankwatch.apache_kafka`), one KRaft node with its log directory on disk and the
  test settings of :func:`tankwatch.apache_kafka.test_props` (aggressive compaction,
  short group sessions allowed);
* ``embedded`` (``TANKWATCH_TEST_BROKER=embedded``): the in-memory Tansu broker of
  ``make demo`` (no Java);
* ``external``: ``KAFKA_BOOTSTRAP`` set -- the same tests against any Kafka (e.g. the
  docker-compose stack).

The broker started here is always stopped. Tests that kill, restart or freeze a broker
take a private one from ``apache_kafka_factory``, never the session broker.
"""

from __future__ import annotations

import importlib.util
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tankwatch.topics import Topics, create_topics

REPO = Path(__file__).resolve().parent.parent

#: Values of ``TANKWATCH_TEST_BROKER``.
BROKER_KINDS = ("apache", "embedded")


def session_broker_kind() -> str:
    """``external`` when ``KAFKA_BOOTSTRAP`` is set, else ``TANKWATCH_TEST_BROKER``
    (``apache`` by default, or ``embedded``)."""
    if os.environ.get("KAFKA_BOOTSTRAP"):
        return "external"
    kind = os.environ.get("TANKWATCH_TEST_BROKER", "apache")
    if kind not in BROKER_KINDS:
        raise pytest.UsageError(f"TANKWATCH_TEST_BROKER={kind!r}: one of {BROKER_KINDS}")
    return kind


@pytest.fixture(scope="session")
def broker_kind() -> str:
    return session_broker_kind()


def require_apache_kafka() -> None:
    """Skip (outside CI) when Apache Kafka cannot be run here: no Java, or no cached
    jars and no Maven to resolve them. Under CI it is required: the test fails."""
    import shutil

    from tankwatch.apache_kafka import jars_resolved

    missing = None
    if shutil.which("java") is None:
        missing = "java"
    elif not jars_resolved() and shutil.which("mvn") is None:
        missing = "mvn (to resolve the Kafka jars)"
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"Apache Kafka is required under CI: no {missing}")
        pytest.skip(f"Apache Kafka not runnable here: no {missing}")


@pytest.fixture(scope="session")
def kafka_bootstrap(broker_kind: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if broker_kind == "external":
        yield os.environ["KAFKA_BOOTSTRAP"]
        return
    if broker_kind == "embedded":
        from tankwatch.broker import EmbeddedBroker
        from tests.integration.helpers import EMBEDDED_BOOTSTRAPS

        log_path = tmp_path_factory.mktemp("broker") / "tansu.log"
        with EmbeddedBroker(log_path=log_path) as broker:
            EMBEDDED_BOOTSTRAPS.add(broker.bootstrap)
            yield broker.bootstrap
        return
    require_apache_kafka()
    from tankwatch.apache_kafka import ApacheKafka, test_props

    # No aggressive compaction on the shared broker: a segment a second for every topic
    # of a 20-minute suite would pile up files; the compaction test has its own broker.
    props = test_props(compaction=False)
    with ApacheKafka(tmp_path_factory.mktemp("kafka"), extra_props=props) as kafka:
        yield kafka.bootstrap


@pytest.fixture
def apache_kafka_factory(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Factory: a private, started Apache Kafka for this test (``brokers``, extra
    properties on top of the test settings); every one is stopped at the end."""
    from tankwatch.apache_kafka import ApacheKafka, test_props

    require_apache_kafka()
    started: list[ApacheKafka] = []

    def factory(
        brokers: int = 1,
        name: str = "kafka",
        compaction: bool = True,
        props: dict[str, str] | None = None,
    ) -> ApacheKafka:
        kafka = ApacheKafka(
            tmp_path / f"{name}-{len(started)}",
            brokers=brokers,
            extra_props={**test_props(compaction), **(props or {})},
        )
        started.append(kafka)
        return kafka.start()

    try:
        yield factory
    finally:
        for kafka in started:
            kafka.stop()


@pytest.fixture
def make_topics(kafka_bootstrap: str) -> Callable[..., Topics]:
    """Factory: a fresh set of the four topics with unique names (no cross-test bleed)."""

    def factory(partitions: int = 4) -> Topics:
        suffix = uuid.uuid4().hex[:8]
        topics = Topics(
            readings=f"tank.readings.{suffix}",
            dlq=f"tank.readings.dlq.{suffix}",
            forecasts=f"tank.forecasts.{suffix}",
            state=f"tank.state.{suffix}",
        )
        create_topics(kafka_bootstrap, topics, partitions)
        return topics

    return factory


@pytest.fixture
def topics(make_topics: Callable[..., Topics]) -> Topics:
    return make_topics()


_SESSION_START = time.time()


#: Test modules that start brokers of their own (a private Apache Kafka, a three-node
#: cluster, the compose stack's). Under ``make test`` each is a unit of work that the
#: second worker takes, beside the session broker's tests, so the suite's wall time is
#: not the sum of every broker test (it was 1,190 s of the 1,200 s budget on 2026-11-29).
#: Those that compare with ``reliability_reference`` start a session broker of their own
#: on that worker (~10 s) for it. The 10,000-tank soak is one of them: the CPU it takes
#: slows the tests beside it, which are written for a loaded machine.
OWN_BROKER_MODULES = frozenset(
    {
        "tests/integration/test_compose_stack.py",
        "tests/reliability/test_broker_outage.py",
        "tests/reliability/test_broker_restart.py",
        "tests/reliability/test_cluster.py",
        "tests/reliability/test_compaction.py",
        "tests/reliability/test_soak.py",
    }
)


def work_unit(nodeid: str) -> str:
    """The xdist work unit of a test: each unit test alone; a module of
    :data:`OWN_BROKER_MODULES` as a whole (its module-scoped fixtures are shared); every
    other test in one unit, ``broker``, in collection order on one worker with the
    session broker, as in a serial run."""
    if nodeid.startswith("tests/unit/"):
        return nodeid
    module = nodeid.split("::", 1)[0]
    return module if module in OWN_BROKER_MODULES else "broker"


if importlib.util.find_spec("xdist") is not None:

    def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
        """Under ``pytest -n 2`` (``make test``) the ``broker`` unit of
        :func:`work_unit` -- the largest, so xdist hands it out first -- runs on one
        worker, while the other takes the modules with their own brokers and the unit
        tests. (xdist's own ``--dist loadgroup`` did not group with pytest 9 here: its
        node-id suffix never took effect.)"""
        from xdist.scheduler import LoadScopeScheduling

        class BrokerTestsOnOneWorker(LoadScopeScheduling):  # type: ignore[misc]
            def _split_scope(self, nodeid: str) -> str:
                return work_unit(nodeid)

        return BrokerTestsOnOneWorker(config, log)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """List the screenshots the browser tests kept, so a human can look at them (from
    the folder: under xdist they were written by a worker process)."""
    from tests.integration.browser import ARTIFACTS

    kept = (
        sorted(p for p in ARTIFACTS.glob("*.png") if p.stat().st_mtime >= _SESSION_START - 1)
        if ARTIFACTS.is_dir()
        else []
    )
    if kept:
        terminalreporter.section("test artifacts")
        for path in kept:
            terminalreporter.write_line(str(path))
