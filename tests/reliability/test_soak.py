"""Soak: 10,000 tanks through Kafka into one ``tankwatch run`` process; its memory
stays bounded once warm, and nothing queues up without bound.

RSS (``VmRSS`` of ``/proc/PID/status``) is sampled while it runs; the growth between
the middle and the end of the run must be small (< 25%), since per-tank state is
allocated when a tank first appears and the per-tank history is a fixed ring buffer.
The figures are printed (``-s``) and quoted in docs/reliability.md.

Size: 10,000 tanks x 120 ticks = 1,200,000 readings, produced while the pipeline
consumes them, at most ``LEAD_TICKS`` ticks ahead of the ticks it has closed, so the
run measures the pipeline, not a backlog. The load is produced a tick at a time with the
pipeline's ``BatchProducer``: with kafka-python's ``send`` per record (~10k readings/s
on these 2 cores beside the pipeline) the test's own producer was the bottleneck, and
the test took 127-159 s. Besides RSS, the readings held in open ticks are sampled: if
ticks stopped closing, that buffer would grow with the stream (and the paced load would
stop); it must stay within a few ticks' worth once the start-up backlog is gone, and
never more than one round of fetches (kafka-python drains one partition's fetched records before
the next partition's, so early ticks wait for the slowest partition). The forecasts
topic is off here: it is exercised by every other test, and at 1,200,000 records it
would dominate the runtime (see docs/performance.md).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tests.integration.helpers import model_interval_s, unique_topics, wait_until
from tests.reliability.conftest import FreezableBroker
from tests.reliability.support import (
    PipelineProcess,
    Stopwatch,
    fleet_ticks,
    instance_env,
    produce_ticks,
)

pytestmark = [pytest.mark.reliability, pytest.mark.integration, pytest.mark.slow]

N_TANKS = 10_000
N_TICKS = 120
PARTITIONS = 4  # unique_topics' default
FETCH_BYTES_PER_PARTITION = 4 * 1024 * 1024  # pipeline.consumer: max_partition_fetch_bytes
#: The producer stays at most this many ticks ahead of the ticks closed. So ticks that
#: stopped closing would stop the load, and the wait for every reading would fail; and
#: (LEAD_TICKS + 1) ticks' worth stays within the second-half bound on held readings.
LEAD_TICKS = 2


def test_memory_stays_bounded_over_a_10k_tank_run(
    model_copy: Path, own_broker: FreezableBroker, tmp_path: Path
) -> None:
    bootstrap = own_broker.bootstrap
    topics = unique_topics(bootstrap, "soak", PARTITIONS)
    env = instance_env(
        bootstrap,
        topics,
        tmp_path / "state",
        "g-soak",
        TANKWATCH_MODEL=str(model_copy),
        TANKWATCH_FORECASTS_TOPIC="false",
        TANKWATCH_CHECKPOINT_INTERVAL_S="5",
        # A 10,000-tank checkpoint and a large poll take a while on 2 busy cores.
        TANKWATCH_MAX_POLL_INTERVAL_MS="60000",
        TANKWATCH_SESSION_TIMEOUT_MS="10000",
        TANKWATCH_HEARTBEAT_MS="1000",
    )
    proc = PipelineProcess(env, tmp_path / "pipeline.log")
    total = N_TANKS * N_TICKS
    closed_now = [0.0]  # the last sample's ticks closed, for the producer's pace
    stop = threading.Event()

    def pace(t: int) -> None:
        deadline = time.monotonic() + 60
        while closed_now[0] < t - LEAD_TICKS and not stop.is_set():
            if time.monotonic() > deadline:
                return  # produce anyway: the test's own wait then reports what is stuck
            time.sleep(0.02)

    produced: list[BaseException | None] = []

    def produce() -> None:
        try:
            ticks = fleet_ticks(N_TANKS, N_TICKS, model_interval_s())
            produce_ticks(bootstrap, topics.readings, ticks, pace)
            produced.append(None)
        except BaseException as exc:
            produced.append(exc)

    producer = threading.Thread(target=produce, daemon=True)
    # t, consumed, ticks, rss, lag, held
    samples: list[tuple[float, float, float, int, float, float]] = []
    clock = Stopwatch()
    try:
        proc.start().wait_healthy()
        start_rss = proc.rss_kib()
        producer.start()

        def sample_until_done() -> bool:
            m = proc.metrics(prefix="tankwatch_")
            if not m:  # a scrape that timed out while the loop held the GIL: skip it
                return False
            consumed = sum(m.get("tankwatch_readings_consumed_total", {}).values())
            ticks = sum(m.get("tankwatch_ticks_closed_total", {}).values())
            lag = sum(m.get("tankwatch_consumer_lag_messages", {}).values())
            held = sum(m.get("tankwatch_held_readings", {}).values())
            samples.append((clock(), consumed, ticks, proc.rss_kib(), lag, held))
            closed_now[0] = ticks
            if produced and produced[0] is not None:
                raise produced[0]
            time.sleep(0.25)
            return consumed >= total and ticks >= N_TICKS

        wait_until(sample_until_done, 240, f"{total:,} readings consumed, {N_TICKS} ticks")
        producer.join(60)
        assert produced == [None], produced
        # The lag gauge is refreshed by a periodic probe (every ~2 s): wait for it.
        wait_until(
            lambda: proc.metric("tankwatch_consumer_lag_messages") == 0, 15, "consumer lag 0"
        )
        tanks = proc.metric("tankwatch_tanks")
        end_rss = proc.rss_kib()
        assert proc.stop() == 0, proc.log_tail()
    finally:
        stop.set()
        proc.ensure_dead()
    # By readings consumed, not ticks closed: ticks close in bursts once the
    # watermark moves, readings arrive steadily.
    warm = next(s for s in samples if s[1] >= total // 4)
    middle = next(s for s in samples if s[1] >= total // 2)
    peak = max(s[3] for s in samples)
    max_held = max(s[5] for s in samples)
    late_held = max(s[5] for s in samples if s[1] >= total // 2)
    print(
        f"soak: {N_TANKS:,} tanks x {N_TICKS} ticks = {total:,} readings in {clock():.0f} s; "
        f"RSS start {start_rss / 1024:.0f} MiB, a quarter in {warm[3] / 1024:.0f} MiB, "
        f"half-way {middle[3] / 1024:.0f} MiB, end {end_rss / 1024:.0f} "
        f"MiB, peak {peak / 1024:.0f} MiB; max lag seen {max(s[4] for s in samples):,.0f}; "
        f"max held in open ticks {max_held:,.0f}, in the second half {late_held:,.0f}"
    )
    for t, consumed, ticks, rss, lag, held in samples[:: max(1, len(samples) // 12)]:
        print(
            f"  t={t:5.1f} s consumed {consumed:9,.0f} ticks {ticks:3.0f} "
            f"rss {rss / 1024:6.0f} MiB lag {lag:9,.0f} held {held:7,.0f}"
        )
    assert tanks == N_TANKS  # the registry holds the fleet, nothing more
    # Ticks kept closing. Held readings are bounded by what one round of fetches can
    # bring (per partition, max_partition_fetch_bytes of readings at least this size)...
    smallest = min(len(v) for _, v in next(fleet_ticks(N_TANKS, 1, model_interval_s())))
    fetch_round = PARTITIONS * FETCH_BYTES_PER_PARTITION // smallest
    assert max_held <= fetch_round, f"{max_held:,.0f} held > {fetch_round:,} (one fetch round)"
    # ...and once the start-up backlog is worked off, by a few ticks' worth.
    assert late_held <= 5 * N_TANKS, f"{late_held:,.0f} readings held in the second half"
    assert end_rss <= 1.25 * middle[3], (
        f"RSS grew {end_rss / middle[3] - 1:.0%} between the middle and the end"
    )
