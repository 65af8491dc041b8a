"""The dashboard JSON API (pipeline/api.py): paging, sorting, filters, rounding, marks."""

from __future__ import annotations

import dataclasses
import json
import re
import threading
import urllib.error
import urllib.request
from urllib.parse import parse_qs

import numpy as np
import pytest

from pipeline.api import Dashboard, FleetQuery, QueryError, model_json
from pipeline.sinks.history import History
from pipeline.sinks.view import FleetView
from tests.integration.synthetic_fleet import StaticSource, build_fleet, serve_fleet


def _dash(n: int = 300, marks: bool = False) -> Dashboard:
    view, hist = build_fleet(n, points=40, marks=marks)
    return StaticSource(view, hist).dashboard


def _q(text: str) -> FleetQuery:
    return FleetQuery.parse(parse_qs(text))


def test_default_is_the_whole_fleet_in_id_order() -> None:
    data = _dash(120).fleet_json()
    ids = [t["tank_id"] for t in data["tanks"]]
    assert len(ids) == 120 and ids == sorted(ids)
    assert data["summary"]["tanks"] == data["summary"]["matched"] == 120


def test_page_size_bounds_the_payload_whatever_the_fleet() -> None:
    small = json.dumps(_dash(200).fleet_json(_q("limit=50&spark=60")))
    large = json.dumps(_dash(5000).fleet_json(_q("limit=50&spark=60")))
    assert len(json.loads(large)["tanks"]) == 50
    # Same rows and sparkline lengths: only the digits of the counts differ.
    assert abs(len(large) - len(small)) < 0.02 * len(small)


def test_paging_walks_the_sorted_fleet_without_gaps_or_repeats() -> None:
    dash = _dash(230)
    seen: list[str] = []
    for offset in range(0, 230, 50):
        page = dash.fleet_json(_q(f"sort=anomaly&limit=50&offset={offset}"))["tanks"]
        seen += [t["tank_id"] for t in page]
    assert len(seen) == len(set(seen)) == 230
    full = [t["tank_id"] for t in dash.fleet_json(_q("sort=anomaly"))["tanks"]]
    assert seen == full


@pytest.mark.parametrize(
    ("sort", "key"),
    [
        ("anomaly", lambda t: t["anomaly_score"]),
        ("staleness", lambda t: t["staleness_s"]),
        ("residual", lambda t: abs(t["residual_pressure_kpa"])),
    ],
)
def test_sorts_are_worst_first_and_reversible(sort: str, key: object) -> None:
    dash = _dash(400)
    desc = [key(t) for t in dash.fleet_json(_q(f"sort={sort}"))["tanks"]]  # type: ignore[operator]
    asc = [key(t) for t in dash.fleet_json(_q(f"sort={sort}&order=asc"))["tanks"]]  # type: ignore[operator]
    assert desc == sorted(desc, reverse=True)
    assert asc == sorted(asc)


def test_status_filter_and_id_search_match_the_summary() -> None:
    dash = _dash(500)
    full = dash.fleet_json()
    summary = full["summary"]
    assert summary["anomalous"] + summary["stale"] + summary["ok"] == 500
    for status, count in (("anomaly", "anomalous"), ("stale", "stale"), ("ok", "ok")):
        data = dash.fleet_json(_q(f"status={status}"))
        assert data["summary"]["matched"] == summary[count] == len(data["tanks"])
        assert {t["status"] for t in data["tanks"]} == {status}
    stale = dash.fleet_json(_q("status=stale"))["tanks"]
    assert all(t["staleness_s"] > full["stale_after_s"] for t in stale)
    found = dash.fleet_json(_q("q=t0012"))["tanks"]  # case-insensitive substring
    assert [t["tank_id"] for t in found] == [f"T0012{d}" for d in range(10)]


def test_values_are_rounded_to_sensor_precision() -> None:
    data = _dash(50).fleet_json(_q("limit=50&spark=20"))
    raw = json.dumps(data)
    numbers = [float(x) for x in re.findall(r"-?\d+\.\d+", raw)]
    assert numbers and all(round(x, 3) == x for x in numbers)
    assert all(len(x.split(".")[1]) <= 3 for x in re.findall(r"\d+\.\d+", raw))


def test_float32_noise_is_gone() -> None:
    hist = History(4)
    hist.ensure_capacity(1)
    dash = Dashboard(
        lambda: FleetView(
            ids=["A"],
            actual=np.array([[100.746, 20.5]], np.float32),
            forecast=np.array([[100.7, 20.4]], np.float32),
            horizons=np.zeros((1, 2, 2), np.float32),
            residual=np.array([[0.046, 0.1]], np.float32),
            score=np.array([1.0]),
            flag=np.array([False]),
            last_ts=np.array([1.0]),
            resets=np.zeros((1, 4), np.int64),
        ),
        hist,
        threading.Lock(),
        model_json("m", "numpy", 60.0, 10, (1,), 2),
        60.0,
    )
    tank = dash.fleet_json()["tanks"][0]
    assert float(np.float32(100.746)) != 100.746  # the noise this test is about
    assert tank["pressure_kpa"] == 100.746 and tank["residual_pressure_kpa"] == 0.046


def test_sparklines_come_from_history_oldest_first() -> None:
    dash = _dash(10)
    tank = dash.fleet_json(_q("limit=1&spark=5"))["tanks"][0]
    history = dash.tank_json(tank["tank_id"])
    assert history is not None
    assert tank["spark"] == history["history"]["pressure_kpa"][-5:]
    assert tank["spark"][-1] == tank["pressure_kpa"]


def test_history_tail_pads_short_rows_and_wraps_the_ring() -> None:
    hist = History(4)
    hist.ensure_capacity(2)
    for k in range(6):  # row 0: 6 points (wrapped), row 1: only the last 2
        rows = np.array([0, 1] if k >= 4 else [0], np.intp)
        vals = np.full((rows.size, 6), float(k), np.float32)
        hist.append(rows, np.full(rows.size, float(k)), vals)
    tail = hist.tail(np.array([0, 1], np.intp), 3, 0)
    assert tail[0].tolist() == [3.0, 4.0, 5.0]
    assert np.isnan(tail[1, 0]) and tail[1, 1:].tolist() == [4.0, 5.0]


def test_marks_are_reported_when_the_view_has_them_and_absent_otherwise() -> None:
    plain = _dash(100).fleet_json()
    assert not any("out_of_range" in t or "source" in t for t in plain["tanks"])
    assert "out_of_range" not in plain["summary"] and plain["summary"]["marked"] == 0
    marked = _dash(100, marks=True)
    data = marked.fleet_json(_q("status=marked"))
    ids = {t["tank_id"] for t in data["tanks"]}
    assert ids == {f"T{i:05d}" for i in range(100) if i % 50 == 7 or i % 70 == 11}
    assert data["summary"]["out_of_range"] == 2 and data["summary"]["model_mismatch"] == 2
    tank = marked.tank_json("T00007")
    assert tank is not None and tank["out_of_range"] is True and tank["model_mismatch"] is False
    assert tank["source"] == {"pressure_kpa": "lstm", "temperature_c": "persistence"}


@pytest.mark.parametrize(
    "bad", ["sort=nope", "status=weird", "order=up", "limit=x", "offset=-1", "spark=999"]
)
def test_bad_query_is_a_400_naming_the_parameter(bad: str) -> None:
    with pytest.raises(QueryError, match=bad.split("=")[0]):
        _q(bad)
    with serve_fleet(5) as (url, _):
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(url + "api/fleet?" + bad, timeout=10)
        assert err.value.code == 400
        assert bad.split("=")[0] in json.loads(err.value.read())["error"]


def test_server_serves_page_and_api() -> None:
    with serve_fleet(60) as (url, _):
        with urllib.request.urlopen(url + "api/fleet?limit=7&sort=residual", timeout=10) as r:
            data = json.loads(r.read())
        assert len(data["tanks"]) == 7 and data["query"]["sort"] == "residual"
        with urllib.request.urlopen(url + "api/tank/T00003", timeout=10) as r:
            assert json.loads(r.read())["tank_id"] == "T00003"


def test_counters_and_calibrated_flags_become_marks() -> None:
    view, hist = build_fleet(20, points=5)
    counts = np.zeros(20, np.int64)
    counts[4] = 3  # readings outside the trained range, as a counter
    calibrated = np.ones(20, bool)
    calibrated[9] = False

    # FleetView carries both itself (the model's per-tank counters and calibration).
    dash = StaticSource(
        dataclasses.replace(view, out_of_range=counts, calibrated=calibrated), hist
    ).dashboard
    data = dash.fleet_json(_q("status=marked"))
    assert [t["tank_id"] for t in data["tanks"]] == ["T00004", "T00009"]
    assert data["tanks"][0]["out_of_range"] is True and data["tanks"][1]["uncalibrated"] is True
    assert data["summary"]["out_of_range"] == 1 and data["summary"]["uncalibrated"] == 1


def test_an_empty_fleet_with_per_row_counters_answers() -> None:
    """Before the first reading the view's per-row arrays are empty: /api/fleet still
    answers (the demo's first polls hit this)."""
    view = FleetView()
    dash = StaticSource(view, History(10)).dashboard
    data = dash.fleet_json(_q("status=marked"))
    assert data["tanks"] == [] and data["summary"]["tanks"] == 0
