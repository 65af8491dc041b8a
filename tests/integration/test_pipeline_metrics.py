"""``/metrics`` scraped over HTTP during a replay: every tank's series, clean for
``promtool check metrics``; the JSON API and health endpoint agree with it."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from tankwatch.topics import Topics
from tests.integration.helpers import (
    ServiceThread,
    http_get,
    pipeline_settings,
    produce_readings,
    synthetic_history,
    wait_until,
)

pytestmark = pytest.mark.integration

PER_TANK = (
    "tank_pressure_pascals",
    "tank_temperature_celsius",
    "tank_forecast_pressure_pascals",
    "tank_forecast_temperature_celsius",
    "tank_residual_pressure_pascals",
    "tank_residual_temperature_celsius",
    "tank_anomaly_score",
    "tank_anomaly_flag",
    "tank_last_reading_timestamp_seconds",
    "tank_state_resets_total",
)


def _tanks_with(text: str, name: str) -> set[str]:
    out = set()
    for line in text.splitlines():
        if line.startswith(name + "{"):
            out.add(line.split('tank_id="', 1)[1].split('"', 1)[0])
    return out


@pytest.mark.prometheus
def test_metrics_during_replay_cover_every_tank_and_pass_promtool(
    kafka_bootstrap: str, make_topics: Callable[..., Topics], tmp_path: Path
) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (make sysdeps)")
    history = synthetic_history(n_tanks=12, n_ticks=120)
    tanks = {r.tank_id for r in history}
    topics = make_topics()
    settings = pipeline_settings(kafka_bootstrap, topics, tmp_path)
    with ServiceThread(settings) as run:
        url = run.service.http_url
        producer = threading.Thread(
            target=produce_readings,
            args=(kafka_bootstrap, topics.readings, history),
            kwargs={"per_tick_sleep_s": 0.03},
        )
        wait_until(lambda: len(run.service.stats["assigned"]) == 4, 30, "partitions assigned")
        producer.start()
        # Scrape while the replay is running (not after it).
        wait_until(lambda: run.service.stats["steps"] >= 20, 30, "20 ticks applied")
        assert producer.is_alive()
        status, body = http_get(url + "/metrics")
        text = body.decode()
        fleet = json.loads(http_get(url + "/api/fleet")[1])
        tank = json.loads(http_get(url + "/api/tank/T003")[1])
        health_status, health = http_get(url + "/healthz")
        missing_status = http_get(url + "/api/tank/NOPE")[0]
        page_status = http_get(url + "/")[0]
        producer.join(60)
    assert status == 200
    for name in PER_TANK:
        assert _tanks_with(text, name) == tanks, name
    for line in (
        "tankwatch_readings_consumed_total",
        "tankwatch_broker_up 1.0",
        "tankwatch_model_info{",
        "tankwatch_ticks_closed_total{trigger=",
        "tankwatch_end_to_end_latency_seconds_bucket",
        "tankwatch_tanks 12.0",
    ):
        assert line in text, line
    check = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True)
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()
    # Pressure is exported in pascals; the JSON API speaks kPa.
    by_id = {t["tank_id"]: t for t in fleet["tanks"]}
    assert set(by_id) == tanks
    assert fleet["interval_s"] > 0 and fleet["now_ts"] >= max(t["ts"] for t in fleet["tanks"])
    assert all(t["resets"]["new_tank"] == 1 for t in fleet["tanks"])
    assert tank["tank_id"] == "T003" and len(tank["history"]["ts"]) >= 20
    assert len(tank["horizon"]["pressure_kpa"]) == settings.horizon
    assert {len(v) for v in tank["history"].values()} == {len(tank["history"]["ts"])}
    assert (health_status, json.loads(health)["status"]) == (200, "ok")
    assert missing_status == 404 and page_status == 200
