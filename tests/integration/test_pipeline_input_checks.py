"""``run`` on data the model was not trained for (issue 15): readings outside the
trained value range counted per tank (metric + ``/api/fleet``), a gauge fleet with
negative readings served by a gauge model, and a cadence warning."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from models.artifact import default_model_dir
from tankwatch.codec import Reading
from tankwatch.topics import Topics
from tests.integration.helpers import (
    ServiceThread,
    http_get,
    pipeline_settings,
    produce_readings,
    synthetic_history,
    wait_consumed,
)

pytestmark = pytest.mark.integration


def _gauge_model(out: Path) -> Path:
    """The shipped weights declared as a gauge model trained on -5..5 kPa, 10..30 degC."""
    shutil.copytree(default_model_dir(), out)
    meta = json.loads((out / "metadata.json").read_text())
    meta["pressure_reference"] = "gauge"
    meta["value_range"] = {"pressure_kpa": [-5.0, 5.0], "temperature_c": [10.0, 30.0]}
    (out / "metadata.json").write_text(json.dumps(meta))
    return out


def test_out_of_range_readings_are_counted_per_tank_and_shown_in_the_api(
    kafka_bootstrap: str, make_topics: Callable[..., Topics], tmp_path: Path
) -> None:
    model = _gauge_model(tmp_path / "model")
    base = synthetic_history(n_tanks=3, n_ticks=40)
    # Gauge readings around 0 kPa; T001 drifts above the trained range for 7 readings,
    # T002 dips to -20 kPa (vacuum, valid gauge, but outside the range) once.
    history = []
    for r in base:
        tick = round((r.ts - base[0].ts) / 60)
        p = (r.pressure_kpa - 220) / 10
        if r.tank_id == "T001" and 30 <= tick < 37:
            p = 9.0
        if r.tank_id == "T002" and tick == 12:
            p = -20.0
        history.append(Reading(r.tank_id, r.ts, p, 20.0, r.event))
    topics = make_topics()
    settings = pipeline_settings(kafka_bootstrap, topics, tmp_path / "state", model_dir=model)
    with ServiceThread(settings) as run:
        produce_readings(kafka_bootstrap, topics.readings, history)
        wait_consumed(run.service, len(history), 60)
        metrics = http_get(run.service.http_url + "/metrics")[1].decode()
        fleet = json.loads(http_get(run.service.http_url + "/api/fleet")[1])
        stats = run.service.stats
    assert stats["rejected"].get("out_of_range", 0) == 0  # -20 kPa is a valid gauge reading
    assert 'tank_out_of_range_readings_total{tank_id="T001"} 7.0' in metrics
    assert 'tank_out_of_range_readings_total{tank_id="T002"} 1.0' in metrics
    assert 'tank_out_of_range_readings_total{tank_id="T000"}' not in metrics
    promtool = shutil.which("promtool")
    if promtool is not None:  # the new series keep /metrics clean
        import subprocess

        check = subprocess.run([promtool, "check", "metrics"], input=metrics.encode())
        assert check.returncode == 0
    # The page's quality mark (counts are in the metric).
    by_id = {t["tank_id"]: t["out_of_range"] for t in fleet["tanks"]}
    assert by_id == {"T000": False, "T001": True, "T002": True}
    assert fleet["summary"]["out_of_range"] == 2
    assert fleet["model"]["pressure_reference"] == "gauge"
    assert fleet["model"]["pressure_limits_kpa"] == [-105.0, 5000.0]
    assert fleet["model"]["value_range"] == {"low": [-5.0, 10.0], "high": [5.0, 30.0]}
