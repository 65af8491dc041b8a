"""Three instances in one consumer group, restarted one after another (SIGTERM, start
again, wait until the group has every partition owned again) while a history is
replayed: the combined output equals one uninterrupted instance.

Each restart makes two rebalances (the leaver's partitions move to the others, then
back to the returning instance); tanks move with their partitions and are restored from
``tank.state`` every time.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tankwatch.topics import Topics
from tests.integration.helpers import (
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
from tests.reliability.test_rebalance import assigned

pytestmark = [pytest.mark.reliability, pytest.mark.integration, pytest.mark.slow]

PARTITIONS = 6
INSTANCES = 3


def test_rolling_restarts_of_three_instances_equal_one_instance(
    reliability_reference: dict[str, Any],
    model_copy: Path,
    kafka_bootstrap: str,
    make_topics: Callable[..., Topics],
    tmp_path: Path,
) -> None:
    history = reliability_reference["history"]
    topics = make_topics(PARTITIONS)
    group = f"g-{topics.readings}"
    procs = [
        PipelineProcess(
            instance_env(
                kafka_bootstrap, topics, tmp_path / f"state-{n}", group,
                TANKWATCH_MODEL=str(model_copy),
            ),
            tmp_path / f"{n}.log",
        )
        for n in range(INSTANCES)
    ]  # fmt: skip

    def owned() -> list[int]:
        return sorted(p for proc in procs for p in assigned(proc))

    def all_owned_by_all() -> bool:
        return owned() == list(range(PARTITIONS)) and all(assigned(p) for p in procs)

    producer = replay_thread(kafka_bootstrap, topics.readings, history, 0.12)
    clock = Stopwatch()
    restarts: list[tuple[int, float, float]] = []
    try:
        for proc in procs:
            proc.start().wait_healthy()
        wait_until(all_owned_by_all, 60, "the group split among the three instances")
        producer.start()
        wait_until(lambda: procs[0].metric("tankwatch_ticks_closed_total") >= 30, 60, "tick 30")
        for n, proc in enumerate(procs):
            at = clock()
            assert proc.stop() == 0, proc.log_tail()
            proc.start().wait_healthy()
            wait_until(all_owned_by_all, 60, f"instance {n} back in the group")
            restarts.append((n, at, clock()))
        producer.join(120)
        assert not producer.is_alive(), "replay did not finish"
        wait_all_applied(procs, history, 90)
        for proc in procs:
            assert proc.stop() == 0, proc.log_tail()
    finally:
        for proc in procs:
            proc.ensure_dead()
    for n, at, back in restarts:
        print(f"instance {n} restarted at {at:.1f} s, group complete again at {back:.1f} s")
    assert len(restarts) == INSTANCES
    # Forecasts (repeats must be identical) and final states equal the reference.
    assert_matches_reference(reliability_reference, kafka_bootstrap, topics)
