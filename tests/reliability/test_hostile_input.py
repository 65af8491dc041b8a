"""Issue 10: what a hostile producer sends cannot stop or silence the stream.

One ``tankwatch run`` process gets the reliability history with hostile messages among
it -- integers of 400 digits (item 1), a duplicate key (item 8), a keyless reading
(item 4), one tank's clock a day and 975 years ahead (item 3) -- and is restarted
half-way, with more of the same after the restart. Every hostile message must land in
the DLQ with its reason, the process must never die, and every good tank (the one with
the wrong clock included) must end exactly as in the clean reference run.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tankwatch.codec import encode_reading
from tests.integration.helpers import (
    assert_forecasts_equal,
    assert_states_equal,
    model_interval_s,
    produce_raw,
    read_dlq,
    read_forecasts,
    read_state,
)
from tests.reliability.support import REFERENCE_TOL, PipelineProcess, instance_env, wait_all_applied

pytestmark = [pytest.mark.reliability, pytest.mark.integration]

DAY = 86400.0
YEARS_975 = 975 * 365.25 * DAY


def _partition_of(key: bytes, n: int) -> int:
    from kafka.partitioner.default import murmur2

    return (murmur2(key) & 0x7FFFFFFF) % n


def _skewed(reading: Any, ahead_s: float) -> tuple[bytes, bytes]:
    key, value = encode_reading(reading)
    obj = json.loads(value)
    obj["ts"] = reading.ts + ahead_s  # epoch seconds: the same clock, far ahead
    return key, json.dumps(obj).encode()


def _hostile(tank: str, ts: float) -> list[tuple[str, bytes | None, bytes]]:
    """(expected reason, key, value) of the hostile messages (``P`` tanks, except the
    clock-skew ones which are built separately)."""
    base = {"tank_id": "P001", "ts": ts, "pressure_kpa": 101.3, "temperature_c": 15.0}
    body = json.dumps(base)
    return [
        ("out_of_range", b"P001", body.replace("101.3", "9" * 400).encode()),
        ("out_of_range", b"P001", body.replace(str(ts), "1" + "0" * 399).encode()),
        (
            "duplicate_key",
            b"P002",
            ('{"tank_id":"P002",' + body[1:]).replace("P001", "P002").encode(),
        ),
        ("no_key", None, body.encode()),
    ]


def test_hostile_producer_cannot_stop_or_silence_the_stream(
    reliability_reference: dict[str, Any],
    model_copy: Path,
    kafka_bootstrap: str,
    make_topics: Any,
    tmp_path: Path,
) -> None:
    history = reliability_reference["history"]
    topics = make_topics()
    interval = model_interval_s()
    # The tank with the wrong clock: one that shares its partition with most others
    # (a partition with a single tank cannot tell a wrong clock from a jump).
    tanks = sorted({r.tank_id for r in history})
    by_part = Counter(_partition_of(t.encode(), 4) for t in tanks)
    victim = next(t for t in tanks if _partition_of(t.encode(), 4) == by_part.most_common(1)[0][0])
    assert by_part.most_common(1)[0][1] >= 3
    ticks = sorted({math.floor(r.ts / interval) for r in history})
    half = ticks[len(ticks) // 2]
    first = [r for r in history if math.floor(r.ts / interval) < half]
    second = [r for r in history if math.floor(r.ts / interval) >= half]

    def with_hostile(part: list[Any], skews: list[float]) -> list[tuple[bytes | None, bytes]]:
        out: list[tuple[bytes | None, bytes]] = []
        mid = len(part) // 2
        for i, r in enumerate(part):
            out.append(encode_reading(r))
            if i == mid:
                out += [(k, v) for _, k, v in _hostile(r.tank_id, r.ts)]
                mine = next(x for x in part[i:] if x.tank_id == victim)
                out += [_skewed(mine, s) for s in skews]
        return out

    env = instance_env(
        kafka_bootstrap,
        topics,
        tmp_path / "state",
        f"g-{topics.readings}",
        TANKWATCH_MODEL=str(model_copy),
        TANKWATCH_MAX_CLOCK_SKEW_S="3600",
    )
    proc = PipelineProcess(env, tmp_path / "pipeline.log")
    try:
        proc.start().wait_healthy()
        produce_raw(kafka_bootstrap, topics.readings, with_hostile(first, [DAY, YEARS_975]))
        wait_all_applied([proc], first, 90)
        assert proc.stop() == 0, proc.log_tail()
        proc.start().wait_healthy()  # after a restart: the same clock still rejected
        produce_raw(kafka_bootstrap, topics.readings, with_hostile(second, [YEARS_975, DAY]))
        wait_all_applied([proc], history, 90)
        skew_metric = proc.metric("tankwatch_clock_skew_readings_total", tank_id=victim)
        assert proc.alive()
        assert proc.stop() == 0, proc.log_tail()
    finally:
        proc.ensure_dead()
    dlq = Counter(h["reason"] for _, _, h in read_dlq(kafka_bootstrap, topics.dlq))
    print(f"hostile input: DLQ by reason {dict(dlq)}; victim {victim}")
    assert dlq == {"out_of_range": 4, "duplicate_key": 2, "no_key": 2, "clock_skew": 4}
    assert skew_metric == 2  # the second incarnation's count (counters restart with it)
    # Nothing silenced: every good tank, the wrong clock's own included, as in the
    # clean run -- no reading dropped as late behind a watermark a bad clock raised.
    assert_forecasts_equal(
        reliability_reference["forecasts"],
        read_forecasts(kafka_bootstrap, topics.forecasts),
        REFERENCE_TOL,
    )
    assert_states_equal(
        reliability_reference["state"], read_state(kafka_bootstrap, topics.state), REFERENCE_TOL
    )
