"""SIGKILL ``tankwatch run`` again and again while a history is replayed: the forecasts
of every (tank, tick) and the final per-tank state equal an uninterrupted run.

No tick is lost (every (tank, tick) of the reference is in ``tank.forecasts``) and none
is applied twice (the final h/c equal the reference to REFERENCE_TOL; a reading applied twice
would move the state). Forecasts repeated after a crash must carry identical values
(``read_forecasts`` asserts that while deduplicating by (tank_id, tick)).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tankwatch.topics import Topics
from tests.integration.helpers import (
    produce_readings,
    wait_until,
)
from tests.reliability.support import (
    PipelineProcess,
    Stopwatch,
    assert_matches_reference,
    instance_env,
    wait_all_applied,
)

pytestmark = [pytest.mark.reliability, pytest.mark.integration]

KILLS = 5
SEED = 20261123
#: Wall seconds per tick of event time: 300 ticks take ~50 s. A restart after SIGKILL
#: takes ~5-9 s on Tansu (process start, dead member evicted, group rejoin), so the
#: kills land while readings are still arriving and a backlog builds up each time.
PER_TICK_S = 0.17


#: The default (exactly-once where the broker has transactions: one transaction per
#: checkpoint) and at-least-once outputs, whose checkpoints write the local journal
#: first (on Apache Kafka the default never does).
MODES = {"default": {}, "at-least-once": {"TANKWATCH_EXACTLY_ONCE": "off"}}


@pytest.mark.parametrize("mode", list(MODES))
def test_sigkill_loop_matches_an_uninterrupted_run(
    mode: str,
    reliability_reference: dict[str, Any],
    model_copy: Path,
    kafka_bootstrap: str,
    make_topics: Callable[..., Topics],
    tmp_path: Path,
) -> None:
    history = reliability_reference["history"]
    topics = make_topics()
    env = instance_env(
        kafka_bootstrap,
        topics,
        tmp_path / "state",
        f"g-{topics.readings}",
        TANKWATCH_MODEL=str(model_copy),
        **MODES[mode],
    )
    proc = PipelineProcess(env, tmp_path / "pipeline.log")
    rng = random.Random(SEED)
    replay_done = threading.Event()

    def replay() -> None:
        try:
            produce_readings(kafka_bootstrap, topics.readings, history, per_tick_sleep_s=PER_TICK_S)
        finally:
            replay_done.set()

    producer = threading.Thread(target=replay, name="replay", daemon=True)
    clock = Stopwatch()
    kills: list[tuple[float, float, float, bool]] = []
    try:
        proc.start().wait_healthy()
        producer.start()
        for _ in range(KILLS):
            # A kill point: once this incarnation has consumed something (or there is
            # nothing left to consume), plus a seeded random moment -- mid-tick,
            # mid-checkpoint, mid-rebalance, wherever it falls.
            wait_until(
                lambda: (
                    proc.metric("tankwatch_readings_consumed_total") >= 1 or replay_done.is_set()
                ),
                40,
                "the restarted pipeline consuming again",
            )
            time.sleep(rng.uniform(0.1, 1.5))
            consumed = proc.metric("tankwatch_readings_consumed_total")
            last_tick_ts = proc.metric("tankwatch_last_tick_timestamp_seconds")
            assert proc.kill() == -9
            kills.append((clock(), consumed, last_tick_ts, not replay_done.is_set()))
            proc.start().wait_healthy()
        producer.join(120)
        assert not producer.is_alive(), "replay did not finish"
        wait_all_applied([proc], history, 60)
        assert proc.stop() == 0, proc.log_tail()
    finally:
        proc.ensure_dead()
    t0 = history[0].ts
    interval = history[12].ts - history[0].ts
    for at, consumed, tick_ts, replaying in kills:
        tick = f"{(tick_ts - t0) / interval:.0f}" if tick_ts else "-"
        print(
            f"SIGKILL at {at:5.1f} s: this incarnation had consumed {consumed:.0f} readings, "
            f"last closed tick {tick}, replay {'running' if replaying else 'finished'}"
        )
    print(f"replay finished, {len(kills)} kills, total {clock():.1f} s")
    assert len(kills) == KILLS
    if mode == "at-least-once":  # its checkpoints went through the local journal
        assert list((tmp_path / "state").glob("*.jsonl"))
    # Forecasts (repeats must be identical) and final states equal the reference.
    assert_matches_reference(reliability_reference, kafka_bootstrap, topics)
