"""``tankwatch simulate --live``: the simulated farm, produced to Kafka in real time.

The farm is advanced a day (or, for huge farms, an hour) of ticks at a time
(:meth:`TankFarm.run` keeps the physical state between calls); each tick is sent when
the wall clock reaches its event time (scaled by ``speed``). Event times start at
"now", aligned to the interval. Anomaly labels are appended to ``labels_path`` when
their day is simulated, i.e. before the readings that show them are sent.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from producers.replay import MAX_SLEEP_S, _check_topic, make_producer
from producers.sim_config import SimConfig
from producers.sim_output import LABELS_HEADER
from producers.simulator import EVENT_NAMES, TankFarm
from tankwatch.codec import Reading, encode_reading, format_ts
from tankwatch.kafka_security import KafkaSecurity

log = logging.getLogger(__name__)


def run_live(
    config: SimConfig,
    bootstrap: str,
    topic: str,
    speed: float = 1.0,
    labels_path: str | None = None,
    stop_event: threading.Event | None = None,
    max_ticks: int | None = None,
    security: KafkaSecurity | None = None,
) -> int:
    """Produce simulated readings until Ctrl-C, ``stop_event`` or ``max_ticks``; returns 0.
    ``security``: TLS/SASL of the connection."""
    now = time.time()
    start = float(np.floor(now / config.interval_s) * config.interval_s)
    farm = TankFarm(replace(config, start=format_ts(start)))
    producer = make_producer(bootstrap, **(security.client_kwargs() if security else {}))
    stopped = stop_event.is_set if stop_event is not None else (lambda: False)
    # Simulate a day ahead when that is cheap (anomalies need chunks longer than 8 h);
    # for very large farms or short intervals an hour at a time keeps memory bounded.
    day_ticks = max(1, round(86400.0 / config.interval_s))
    hour_ticks = max(1, round(3600.0 / config.interval_s))
    chunk_ticks = day_ticks if day_ticks * config.tanks <= 5_000_000 else hour_ticks
    wall0 = time.monotonic()
    sent = 0
    ticks = 0
    if labels_path:
        Path(labels_path).write_text(LABELS_HEADER + "\n", encoding="utf-8")
    try:
        _check_topic(producer, bootstrap, topic, security)
        while not stopped() and (max_ticks is None or ticks < max_ticks):
            chunk = farm.run(chunk_ticks)
            if labels_path and chunk.labels:
                with open(labels_path, "a", encoding="utf-8") as fh:
                    for tank, s, e, kind in chunk.labels:
                        fh.write(f"{tank},{format_ts(s)},{format_ts(e)},{kind}\n")
            for k in range(len(chunk.ts)):
                if stopped() or (max_ticks is not None and ticks >= max_ticks):
                    break
                due = wall0 + (float(chunk.ts[k]) - start) / speed
                while (wait := due - time.monotonic()) > 0 and not stopped():
                    time.sleep(min(wait, MAX_SLEEP_S))
                for i in np.flatnonzero(chunk.present[k]).tolist():
                    code = int(chunk.event[k, i])
                    reading = Reading(
                        farm.ids[i],
                        float(chunk.ts[k]),
                        float(chunk.pressure_kpa[k, i]),
                        float(chunk.temperature_c[k, i]),
                        EVENT_NAMES.get(code),
                    )
                    key, value = encode_reading(reading)
                    producer.send(topic, key=key, value=value)
                    sent += 1
                producer.flush(timeout=10)
                ticks += 1
    except KeyboardInterrupt:
        pass
    finally:
        producer.flush(timeout=10)
        producer.close(timeout=10)
        print(
            f"tankwatch: live simulation sent {sent} readings of {config.tanks} tanks "
            f"over {ticks} ticks",
            file=sys.stderr,
        )
    return 0
