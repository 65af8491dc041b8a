"""Stopping ``tankwatch run`` mid-replay (SIGTERM, SIGKILL) and starting it again gives
the forecasts and final per-tank state of an uninterrupted run: no tick missing, none
applied twice (exactly-once state; forecasts at-least-once with identical repeats)."""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tankwatch.broker import free_port
from tankwatch.topics import Topics
from tests.integration.helpers import (
    assert_forecasts_equal,
    assert_states_equal,
    fleet_done,
    http_get,
    metric_sum,
    pipeline_env,
    produce_readings,
    read_forecasts,
    read_state,
    standard_reference,
    start_pipeline_process,
    wait_healthz,
    wait_until,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def reference(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One uninterrupted, as-fast-as-possible run of the standard history."""
    return standard_reference(kafka_bootstrap, tmp_path_factory)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_stop_and_restart_matches_an_uninterrupted_run(
    sig: signal.Signals,
    reference: dict[str, Any],
    kafka_bootstrap: str,
    make_topics: Callable[..., Topics],
    tmp_path: Path,
) -> None:
    history = reference["history"]
    topics = make_topics()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = pipeline_env(kafka_bootstrap, topics, tmp_path / "state", port, f"g-{topics.readings}")
    log = tmp_path / "pipeline.log"
    producer = threading.Thread(
        target=produce_readings,
        args=(kafka_bootstrap, topics.readings, history),
        kwargs={"per_tick_sleep_s": 0.03},
    )
    first = start_pipeline_process(env, log_path=log)
    try:
        wait_healthz(url, 30, first)

        def assigned() -> int:
            return len(json.loads(http_get(url + "/healthz")[1])["assigned_partitions"])

        # Produce only once the group has formed, so the stop lands mid-replay.
        wait_until(lambda: assigned() == 4, 30, "partitions assigned")
        producer.start()

        def ticks_closed() -> float:
            return metric_sum(
                http_get(url + "/metrics")[1].decode(), "tankwatch_ticks_closed_total"
            )

        def checkpoints() -> float:
            return metric_sum(http_get(url + "/metrics")[1].decode(), "tankwatch_checkpoints_total")

        # Mid-replay: some ticks done, and a periodic checkpoint taken after them.
        wait_until(lambda: ticks_closed() >= 60, 30, "60 ticks closed")
        before = checkpoints()
        wait_until(lambda: checkpoints() > before, 30, "a checkpoint after 60 ticks")
        first.send_signal(sig)
        code = first.wait(30)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert code == (0 if sig == signal.SIGTERM else -signal.SIGKILL), log.read_text()[-2000:]
    second = start_pipeline_process(env, log_path=log)
    try:
        wait_healthz(url, 30, second)
        producer.join(60)
        wait_until(lambda: fleet_done(url, history), 30, "every tank at its last reading")
        after = http_get(url + "/metrics")[1].decode()
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0, log.read_text()[-2000:]
    finally:
        if second.poll() is None:
            second.kill()
            second.wait()
    # The second process continued the tanks from the checkpoint: none started afresh.
    assert metric_sum(after, 'tankwatch_state_resets_total{reason="new_tank"}') == 0
    got = read_forecasts(kafka_bootstrap, topics.forecasts)  # asserts repeats are identical
    assert_forecasts_equal(reference["forecasts"], got, 1e-6)
    assert_states_equal(reference["state"], read_state(kafka_bootstrap, topics.state), 1e-6)
