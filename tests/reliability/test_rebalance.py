"""Two instances in one consumer group; SIGKILL one mid-replay. The survivor takes
over the dead one's partitions, restores their tanks from ``tank.state`` and carries
on; the combined output equals a single-instance run."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tankwatch.topics import Topics
from tests.integration.helpers import (
    http_get,
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

pytestmark = [pytest.mark.reliability, pytest.mark.integration]

PARTITIONS = 4


def assigned(proc: PipelineProcess) -> list[int]:
    """Partitions the instance reports on /healthz ([] when it does not answer)."""
    try:
        _status, body = http_get(proc.url + "/healthz", 2.0)
    except OSError:
        return []
    return list(json.loads(body).get("assigned_partitions", [])) if body else []


def restored_tanks(log: str) -> list[int]:
    """``restored_tanks`` of every "partitions assigned" record in a JSON log."""
    out = []
    for line in log.splitlines():
        if line.startswith("{") and '"partitions assigned"' in line:
            out.append(int(json.loads(line).get("restored_tanks", 0)))
    return out


def test_survivor_takes_over_and_output_matches_single_instance(
    reliability_reference: dict[str, Any],
    model_copy: Path,
    kafka_bootstrap: str,
    make_topics: Callable[..., Topics],
    tmp_path: Path,
) -> None:
    history = reliability_reference["history"]
    topics = make_topics(PARTITIONS)
    group = f"g-{topics.readings}"
    a, b = (
        PipelineProcess(
            instance_env(
                kafka_bootstrap, topics, tmp_path / f"state-{n}", group,
                TANKWATCH_MODEL=str(model_copy),
            ),
            tmp_path / f"{n}.log",
        )
        for n in ("a", "b")
    )  # fmt: skip
    producer = replay_thread(kafka_bootstrap, topics.readings, history, 0.06)
    try:
        a.start().wait_healthy()
        b.start().wait_healthy()
        wait_until(
            lambda: bool(assigned(a)) and bool(assigned(b))
            and sorted(assigned(a) + assigned(b)) == list(range(PARTITIONS)),
            40,
            "the group split between the two instances",
        )  # fmt: skip
        producer.start()
        wait_until(lambda: b.metric("tankwatch_ticks_closed_total") >= 80, 40, "b at tick 80")
        b_partitions, b_tanks = assigned(b), b.metric("tankwatch_tanks")
        a_log_before = len(a.log_tail(10**9))
        clock = Stopwatch()
        b.signal(signal.SIGKILL)
        b.proc.wait(10)  # type: ignore[union-attr]
        wait_until(
            lambda: sorted(assigned(a)) == list(range(PARTITIONS)),
            40,
            "the survivor owning every partition",
        )
        took_over_s = clock()
        wait_until(
            lambda: a.metric("tankwatch_tanks") == len({r.tank_id for r in history}),
            40,
            "the survivor holding every tank",
        )
        with_tanks_s = clock()
        producer.join(90)
        assert not producer.is_alive(), "replay did not finish"
        wait_all_applied([a], history, 60)
        assert a.stop() == 0, a.log_tail()
    finally:
        a.ensure_dead()
        b.ensure_dead()
    restored = restored_tanks(a.log_tail(10**9)[a_log_before:])
    print(
        f"killed instance b owning partitions {b_partitions} ({b_tanks:.0f} tanks); the "
        f"survivor owned every partition after {took_over_s:.1f} s and every tank after "
        f"{with_tanks_s:.1f} s; tanks restored from tank.state per assignment: {restored}"
    )
    assert sum(restored) >= b_tanks > 0, "the survivor did not restore b's tanks from tank.state"
    # Forecasts (repeats must be identical) and final states equal the reference.
    assert_matches_reference(reliability_reference, kafka_bootstrap, topics)
