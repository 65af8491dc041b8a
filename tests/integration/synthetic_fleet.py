"""A fleet of any size behind the real HTTP server and JSON API, without Kafka.

The page tests and ``bench/page.py`` need 5,000 tanks; a replay that large is slow and
says nothing more about the page. So the same objects the service publishes — a
:class:`~pipeline.sinks.view.FleetView` and a :class:`~pipeline.sinks.history.History`
ring buffer — are filled here with plausible readings, and served by the real
:class:`~pipeline.http.HttpServer` through the real :class:`~pipeline.api.Dashboard`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

from pipeline.api import Dashboard, FleetQuery, model_json
from pipeline.assembler import RESET_REASONS
from pipeline.http import HttpServer
from pipeline.sinks.history import FIELDS, History
from pipeline.sinks.view import FleetView

T0 = 1_700_000_000.0
INTERVAL_S = 60.0


def tank_ids(n: int) -> list[str]:
    return [f"T{i:05d}" for i in range(n)]


@dataclass(frozen=True)
class MarkedView(FleetView):
    """A view carrying the optional quality marks other parts of the pipeline add."""

    out_of_range: Any = None
    model_mismatch: Any = None
    source: Any = None


def build_fleet(
    n: int, points: int = 120, history_len: int = 240, seed: int = 0, marks: bool = False
) -> tuple[FleetView, History]:
    """``n`` tanks with ``points`` ticks of history each (float32, like the loop's).

    Every 97th tank is flagged anomalous, every 89th stopped reporting 30 ticks ago
    (stale); with ``marks``, every 50th is out of range and every 70th mismatched.
    """
    rng = np.random.default_rng(seed)
    ids = tank_ids(n)
    level = rng.uniform(90.0, 300.0, n)
    temp = rng.uniform(5.0, 60.0, n)
    hist = History(history_len)
    hist.ensure_capacity(n)
    rows = np.arange(n, dtype=np.intp)
    stale = np.arange(n) % 89 == 5
    flag = np.arange(n) % 97 == 3
    last_ts = np.zeros(n)
    for k in range(points):
        ts = T0 + k * INTERVAL_S
        live = rows if k < points - 30 else rows[~stale]
        p = level[live] + 2.0 * np.sin(k / 9.0 + live) + rng.normal(0, 0.2, live.size)
        t = temp[live] + 0.5 * np.cos(k / 15.0 + live)
        fp = p + rng.normal(0, 0.3, live.size)
        ft = t + rng.normal(0, 0.1, live.size)
        score = np.abs(rng.normal(1.0, 0.5, live.size)) + 6.0 * flag[live] * (k > points - 10)
        values = np.column_stack([p, t, fp, ft, score, (score > 5.0).astype(np.float64)]).astype(
            np.float32
        )
        assert values.shape[1] == len(FIELDS)
        hist.append(live, np.full(live.size, ts), values)
        last_ts[live] = ts
    last = np.stack([hist.tail(rows, 1, c)[:, 0] for c in range(len(FIELDS))], axis=1)
    actual = last[:, :2].astype(np.float32)
    forecast = last[:, 2:4].astype(np.float32)
    residual = (actual - forecast).astype(np.float32)
    score = last[:, 4].astype(np.float64)
    horizons = (actual[:, None, :] + np.linspace(0, 1, 30)[None, :, None]).astype(np.float32)
    resets = np.zeros((n, len(RESET_REASONS)), np.int64)
    resets[:, RESET_REASONS.index("new_tank")] = 1
    view = FleetView(
        ids=list(ids),
        actual=actual,
        forecast=forecast,
        horizons=horizons,
        residual=residual,
        score=score,
        flag=flag,
        last_ts=last_ts,
        resets=resets,
        horizons_reported=(1, 5, 15, 30),
        last_tick_ts=float(last_ts.max()),
        published=time.time(),
    )
    if marks:
        oor = np.zeros((n, 2), bool)
        oor[np.arange(n) % 50 == 7, 0] = True
        view = MarkedView(
            **{f: getattr(view, f) for f in view.__dataclass_fields__},
            out_of_range=oor,
            model_mismatch=np.arange(n) % 70 == 11,
            source=[{"pressure_kpa": "lstm", "temperature_c": "persistence"}] * n,
        )
    return view, hist


class StaticSource:
    """What :class:`~pipeline.http.HttpServer` needs, over a fixed view and history."""

    def __init__(self, view: FleetView, history: History) -> None:
        self.registry = CollectorRegistry()
        self.view = view
        self.dashboard = Dashboard(
            lambda: self.view,
            history,
            threading.Lock(),
            model_json("lstm-synthetic", "numpy", INTERVAL_S, 10, (1, 5, 15, 30), 30),
            INTERVAL_S,
        )

    def health(self) -> tuple[bool, dict[str, Any]]:
        return True, {"status": "ok"}

    def metrics_text(self) -> bytes:
        return b""

    def fleet_json(self, query: FleetQuery | None = None) -> dict[str, Any]:
        return self.dashboard.fleet_json(query)

    def tank_json(self, tank_id: str) -> dict[str, Any] | None:
        return self.dashboard.tank_json(tank_id)


@contextmanager
def serve_fleet(n: int, **kwargs: Any) -> Iterator[tuple[str, StaticSource]]:
    """The real page and API for a synthetic fleet of ``n`` tanks: yields (url, source)."""
    view, history = build_fleet(n, **kwargs)
    source = StaticSource(view, history)
    server = HttpServer(source, "127.0.0.1", 0)
    server.start()
    try:
        yield server.url + "/", source
    finally:
        server.stop()


__all__ = ["StaticSource", "build_fleet", "serve_fleet", "tank_ids"]
