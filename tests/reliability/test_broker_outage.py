"""Freeze the broker (SIGSTOP) for ~20 s mid-replay, then thaw it (SIGCONT): the
pipeline shows the outage on ``/healthz`` / ``tankwatch_broker_up`` while it lasts,
recovers by itself, and ends with the same forecasts and state as a clean run.

The test runs on its own broker (Apache Kafka, or Tansu under
TANKWATCH_TEST_BROKER=embedded): freezing the session broker would stall
every other test.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import (
    unique_topics,
    wait_until,
)
from tests.reliability.conftest import FreezableBroker
from tests.reliability.support import (
    PipelineProcess,
    Stopwatch,
    assert_matches_reference,
    instance_env,
    replay_thread,
    wait_all_applied,
)

pytestmark = [pytest.mark.reliability, pytest.mark.integration]

FREEZE_S = 20.0


def sample(proc: PipelineProcess) -> tuple[int | None, float | None, float, float]:
    """(``/healthz`` status, ``tankwatch_broker_up``, total consumer lag, age of the lag
    figures) right now."""
    m = proc.metrics()
    up = m.get("tankwatch_broker_up", {}).get((), None)
    lag = sum(m.get("tankwatch_consumer_lag_messages", {}).values())
    age = m.get("tankwatch_consumer_lag_age_seconds", {}).get((), math.nan)
    return proc.health(), up, lag, age


def test_broker_freeze_is_visible_and_recovered_from(
    reliability_reference: dict[str, Any],
    model_copy: Path,
    own_broker: FreezableBroker,
    tmp_path: Path,
) -> None:
    history = reliability_reference["history"]
    bootstrap = own_broker.bootstrap
    topics = unique_topics(bootstrap, "outage")
    env = instance_env(
        bootstrap, topics, tmp_path / "state", "g-outage", TANKWATCH_MODEL=str(model_copy)
    )
    proc = PipelineProcess(env, tmp_path / "pipeline.log")
    producer = replay_thread(bootstrap, topics.readings, history, 0.05)
    during: list[tuple[float, int | None, float | None, float, float]] = []
    after: list[tuple[float, int | None, float | None, float, float]] = []
    try:
        proc.start().wait_healthy()
        producer.start()
        wait_until(lambda: proc.metric("tankwatch_ticks_closed_total") >= 60, 40, "60 ticks")
        clock = Stopwatch()
        own_broker.freeze()
        try:
            while clock() < FREEZE_S:
                during.append((clock(), *sample(proc)))
                time.sleep(0.5)
        finally:
            own_broker.thaw()
        thawed = clock()
        wait_until(lambda: sample(proc)[:2] == (200, 1.0), 60, "health back after the thaw")
        recovered = clock()
        # The producer's readings buffered during the freeze arrive now: watch the lag.
        while clock() < recovered + 3.0:
            after.append((clock(), *sample(proc)))
            time.sleep(0.25)
        producer.join(120)
        assert not producer.is_alive(), "replay did not finish after the outage"
        wait_all_applied([proc], history, 60)
        assert proc.alive()
        assert proc.stop() == 0, proc.log_tail()
    finally:
        proc.ensure_dead()
    for t, status, up, lag, age in during[::4] + after[::3]:
        print(f"t={t:5.1f} s  /healthz {status}  broker_up {up}  lag {lag:.0f}  age {age:.1f} s")
    print(
        f"frozen {thawed:.1f} s; healthy again {recovered - thawed:.1f} s after the thaw; "
        f"max lag during the freeze {max(s[3] for s in during):.0f}, in the 3 s after it "
        f"{max(s[3] for s in after):.0f}; lag age max {max(s[4] for s in during):.1f} s "
        f"during, {max(s[4] for s in after):.1f} s after"
    )
    # Forecasts (repeats must be identical) and final states equal the reference.
    assert_matches_reference(reliability_reference, bootstrap, topics)
    assert all(s[1] is not None for s in during), "the HTTP endpoint stopped answering"
    red = [s for s in during if s[1] != 200 or s[2] == 0.0]
    assert red, (
        f"during a {FREEZE_S:.0f} s broker freeze /healthz stayed 200 and "
        f"tankwatch_broker_up stayed 1 in every one of {len(during)} samples"
    )
    # The lag figures cannot be refreshed while the broker is frozen: their age says so,
    # and drops back once probes succeed again.
    assert max(s[4] for s in during) >= FREEZE_S / 2, "lag age did not grow during the freeze"
    assert min(s[4] for s in after) < 3.0, "lag age did not drop after the thaw"
