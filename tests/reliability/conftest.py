"""Fixtures of the reliability suite.

* ``model_copy`` -- a private copy of the default artifact, used by the reference and
  by every pipeline process of the suite (a retrain of the committed default while the
  suite runs cannot make two runs disagree);
* ``reliability_reference`` -- one uninterrupted in-process run of the standard
  reliability history (12 tanks x 300 ticks, a refill event, a gap) on the session
  broker, shared by every test that compares against "the run nothing happened to";
* ``own_broker`` -- a private broker of the session's kind (Apache Kafka, or the
  embedded one under ``TANKWATCH_TEST_BROKER=embedded``) for a test that freezes the
  broker or depends on broker-wide state (never the session broker others use).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from pipeline.config import default_model_dir
from tankwatch.broker import EmbeddedBroker
from tests.integration.helpers import (
    EMBEDDED_BOOTSTRAPS,
    ServiceThread,
    pipeline_settings,
    produce_readings,
    read_forecasts,
    read_state,
    synthetic_history,
    unique_topics,
    wait_consumed,
)

#: The reliability history: small enough for a kill loop, long enough for several
#: checkpoints between kills; one refill (tank 4, tick 120) and one gap reset (tank 7).
RELIABILITY_HISTORY: dict[str, Any] = {
    "n_tanks": 12,
    "n_ticks": 300,
    "seed": 11,
    "events": [(4, 120)],
    "gaps": [(7, 150, 170)],
}


@pytest.fixture(scope="session")
def model_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A validated private copy of the default model artifact."""
    from models.artifact import load_artifact

    dst = tmp_path_factory.mktemp("model") / "default"
    shutil.copytree(default_model_dir(), dst)
    load_artifact(dst)  # a half-written copy fails here, not in a confusing comparison
    return dst


def run_reference_with(
    bootstrap: str, history: list[Any], state_dir: Path, model_dir: Path
) -> dict[str, Any]:
    """One uninterrupted, as-fast-as-possible in-process run of ``history`` with the
    artifact ``model_dir``: ``{"history", "topics", "stats", "forecasts", "state"}``."""
    topics = unique_topics(bootstrap, "relref")
    produce_readings(bootstrap, topics.readings, history)
    settings = pipeline_settings(bootstrap, topics, state_dir, model_dir=model_dir)
    with ServiceThread(settings) as run:
        wait_consumed(run.service, len(history), 60)
        stats = run.service.stats
    return {
        "history": list(history),
        "topics": topics,
        "stats": stats,
        "forecasts": read_forecasts(bootstrap, topics.forecasts),
        "state": read_state(bootstrap, topics.state),
    }


@pytest.fixture(scope="session")
def reliability_reference(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory, model_copy: Path
) -> dict[str, Any]:
    """The clean run of :data:`RELIABILITY_HISTORY` with ``model_copy``."""
    history = synthetic_history(**RELIABILITY_HISTORY)
    return run_reference_with(
        kafka_bootstrap, history, tmp_path_factory.mktemp("rel-ref"), model_copy
    )


class FreezableBroker(Protocol):
    """What ``own_broker`` gives: its address and SIGSTOP / SIGCONT of its process."""

    @property
    def bootstrap(self) -> str: ...

    def freeze(self) -> None: ...

    def thaw(self) -> None: ...


@pytest.fixture
def own_broker(
    broker_kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[FreezableBroker]:
    """A private broker for this test only (stopped, even if frozen, at the end):
    embedded Tansu under ``TANKWATCH_TEST_BROKER=embedded``, else Apache Kafka."""
    if broker_kind == "embedded":
        with EmbeddedBroker(log_path=tmp_path / "tansu.log") as broker:
            EMBEDDED_BOOTSTRAPS.add(broker.bootstrap)
            yield broker
        return
    factory: Callable[..., Any] = request.getfixturevalue("apache_kafka_factory")
    yield factory(name="own")
