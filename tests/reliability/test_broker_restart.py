"""Apache Kafka itself SIGKILLed mid-replay and restarted on the same log directory:
the pipeline (one ``tankwatch run`` process, never restarted) notices the outage,
recovers by itself once the broker is back, and ends with the forecasts and states of
the uninterrupted reference -- nothing lost, nothing applied twice.

The broker is a private one (``apache_kafka_factory``): killing the session broker
would fail every other test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import (
    unique_topics,
    wait_until,
)
from tests.reliability.support import (
    PipelineProcess,
    Stopwatch,
    assert_matches_reference,
    instance_env,
    replay_thread,
    wait_all_applied,
)

pytestmark = [pytest.mark.reliability, pytest.mark.integration, pytest.mark.slow]

#: Wall seconds per tick of event time: 300 ticks take ~30 s of replay, so the broker
#: dies with readings still arriving.
PER_TICK_S = 0.1


def test_broker_sigkill_and_restart_on_same_log_dir(
    reliability_reference: dict[str, Any],
    model_copy: Path,
    apache_kafka_factory: Any,
    tmp_path: Path,
) -> None:
    history = reliability_reference["history"]
    kafka = apache_kafka_factory(name="restart", compaction=False)
    bootstrap = kafka.bootstrap
    topics = unique_topics(bootstrap, "bkill")
    env = instance_env(
        bootstrap,
        topics,
        tmp_path / "state",
        f"g-{topics.readings}",
        TANKWATCH_MODEL=str(model_copy),
    )
    proc = PipelineProcess(env, tmp_path / "pipeline.log")
    producer = replay_thread(bootstrap, topics.readings, history, PER_TICK_S)
    clock = Stopwatch()
    try:
        proc.start().wait_healthy()
        pid = proc.pid
        producer.start()
        wait_until(lambda: proc.metric("tankwatch_ticks_closed_total") >= 60, 60, "60 ticks")
        ticks_at_kill = proc.metric("tankwatch_ticks_closed_total")
        kafka.kill(0)
        killed = clock()
        # The broker stays dead until the pipeline has seen the outage.
        wait_until(lambda: proc.metric("tankwatch_broker_up") == 0, 60, "broker_up 0")
        assert proc.health() != 200, "healthz still 200 with the broker dead"
        kafka.restart(0)
        restarted = clock()
        wait_until(lambda: proc.metric("tankwatch_broker_up") == 1, 90, "broker_up 1 again")
        producer.join(180)
        assert not producer.is_alive(), "replay did not finish"
        wait_all_applied([proc], history, 90)
        assert proc.pid == pid and proc.alive(), "the pipeline process was replaced or died"
        assert proc.stop() == 0, proc.log_tail()
    finally:
        proc.ensure_dead()
    print(
        f"broker SIGKILLed at {killed:.1f} s after {ticks_at_kill:.0f} ticks, back at "
        f"{restarted:.1f} s; run finished at {clock():.1f} s"
    )
    # Forecasts (repeats must be identical) and final states equal the reference.
    assert_matches_reference(reliability_reference, bootstrap, topics)
