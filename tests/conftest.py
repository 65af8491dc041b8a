"""Shared fixtures: one real Kafka-protocol broker per session, fresh topics per test.

Set ``KAFKA_BOOTSTRAP`` to run the same tests against an external Kafka (e.g. the
docker-compose stack); otherwise the embedded Tansu broker is started and always stopped.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tankwatch.topics import Topics, create_topics

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("KAFKA_BOOTSTRAP")
    if external:
        yield external
        return
    from tankwatch.broker import EmbeddedBroker

    log_path = tmp_path_factory.mktemp("broker") / "tansu.log"
    with EmbeddedBroker(log_path=log_path) as broker:
        yield broker.bootstrap


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


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """List the screenshots the browser tests kept, so a human can look at them."""
    from tests.integration.browser import WRITTEN

    if WRITTEN:
        terminalreporter.section("test artifacts")
        for path in WRITTEN:
            terminalreporter.write_line(str(path))
