"""Smoke test of the embedded Tansu broker, the zero-dependency default of ``make demo``.

The integration and reliability suites run on Apache Kafka; this keeps the embedded
broker honest: the same short history through the pipeline on Tansu gives the same
forecasts and states as on the session broker.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tankwatch.broker import EmbeddedBroker
from tests.integration.helpers import (
    EMBEDDED_BOOTSTRAPS,
    assert_forecasts_equal,
    assert_states_equal,
    run_reference,
    synthetic_history,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def tansu(
    broker_kind: str, kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    if broker_kind == "embedded":  # the session broker already is one
        yield kafka_bootstrap
        return
    with EmbeddedBroker(log_path=tmp_path_factory.mktemp("tansu") / "tansu.log") as broker:
        EMBEDDED_BOOTSTRAPS.add(broker.bootstrap)
        try:
            yield broker.bootstrap
        finally:
            EMBEDDED_BOOTSTRAPS.discard(broker.bootstrap)


def test_embedded_broker_gives_the_same_results_as_the_session_broker(
    tansu: str, kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    history = synthetic_history(n_tanks=6, n_ticks=80, seed=5, events=[(1, 30)], gaps=[(2, 40, 50)])
    on_tansu = run_reference(tansu, history, tmp_path_factory.mktemp("tansu-run"))
    on_session = run_reference(kafka_bootstrap, history, tmp_path_factory.mktemp("session-run"))
    assert len(on_tansu["forecasts"]) > 6 * 70
    assert on_tansu["stats"]["consumed"] == len(history)
    assert_forecasts_equal(on_session["forecasts"], on_tansu["forecasts"], 1e-6)
    assert_states_equal(on_session["state"], on_tansu["state"], 1e-6)
