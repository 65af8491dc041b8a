"""JSON of the dashboard API (``/api/fleet``, ``/api/tank/<id>``), built from a view.

Shapes are fixed by docs/architecture.md ("HTTP"). Physical units (kPa, degC), rounded
to the sensors' precision (:data:`DECIMALS`) so float32 arithmetic never shows up as
``100.74600219726562``; event times (float64 epoch seconds, as the readings gave them)
are passed through exactly; missing values are ``null``. ``now_ts`` is the pipeline's
event-time clock (the newest applied reading), so staleness means the same in a live
run and a fast replay.

``/api/fleet`` sorts, filters and pages on the server (:class:`FleetQuery`), so a poll
of a 5,000-tank fleet carries one page of rows plus summary counts of the whole fleet:
the payload does not grow with the fleet. Sparklines come from the server's history
(``spark=N``), so a freshly opened page draws them at once.

This module knows nothing of the service: it reads a :class:`FleetView` and a
:class:`~pipeline.sinks.history.History` through :class:`Dashboard`.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from pipeline.assembler import RESET_REASONS
from pipeline.sinks.history import FIELDS, History
from pipeline.sinks.view import FleetView

__all__ = [
    "DECIMALS",
    "MARKS",
    "SORTS",
    "STALE_TICKS",
    "STATUSES",
    "Dashboard",
    "FleetQuery",
    "QueryError",
]

#: Decimals of every physical value and score in the JSON: the sensors report
#: 0.001 kPa / 0.001 degC (data/history.csv.gz), so more digits are float32 noise.
DECIMALS = 3
#: A tank this many tick intervals behind ``now_ts`` is "stale" (the page uses the
#: server's status, so the rule lives here only).
STALE_TICKS = 10
#: ``sort=`` keys of /api/fleet: tank id (ascending), or worst first.
SORTS = ("tank_id", "anomaly", "staleness", "residual")
#: ``status=`` filters of /api/fleet; "marked" = any of :data:`MARKS` set.
STATUSES = ("all", "anomaly", "stale", "ok", "marked")
#: Optional per-row quality marks a view may carry (boolean (n,) or (n, F) arrays of
#: the same name on :class:`FleetView`); absent attributes are simply not reported.
MARKS = ("out_of_range", "model_mismatch", "uncalibrated")
#: Largest page and sparkline the API serves.
MAX_LIMIT = 10_000
MAX_SPARK = 240


class QueryError(ValueError):
    """A bad ``/api/fleet`` query parameter (HTTP 400, the message names it)."""


def _r(x: float) -> float | None:
    return round(x, DECIMALS) if math.isfinite(x) else None


def _list(a: NDArray[Any]) -> list[float | None]:
    vals = np.round(np.asarray(a, np.float64), DECIMALS).tolist()
    return [v if math.isfinite(v) else None for v in vals]


def _f(x: float) -> float | None:
    """Event times: float64 epoch seconds as parsed from the readings, kept exact."""
    return x if math.isfinite(x) else None


def _times(a: NDArray[Any]) -> list[float | None]:
    return [v if math.isfinite(v) else None for v in np.asarray(a, np.float64).tolist()]


@dataclass(frozen=True)
class FleetQuery:
    """What one ``/api/fleet`` request asks for.

    ``sort``: one of :data:`SORTS`; ``desc``: worst first (default for everything but
    ``tank_id``); ``status``: one of :data:`STATUSES`; ``q``: case-insensitive
    substring of the tank id; ``offset``/``limit``: the page (``limit=None`` = all);
    ``spark``: pressure points per row for sparklines (0 = none).
    """

    sort: str = "tank_id"
    desc: bool = False
    status: str = "all"
    q: str = ""
    offset: int = 0
    limit: int | None = None
    spark: int = 0

    @classmethod
    def parse(cls, params: Mapping[str, Sequence[str]]) -> FleetQuery:
        """From ``urllib.parse.parse_qs`` output; raises :class:`QueryError`."""

        def one(name: str, default: str) -> str:
            values = params.get(name)
            return values[-1] if values else default

        def whole(name: str, default: int, lo: int, hi: int) -> int:
            text = one(name, str(default))
            try:
                value = int(text)
            except ValueError:
                raise QueryError(f"{name} must be a whole number, got {text!r}") from None
            if not lo <= value <= hi:
                raise QueryError(f"{name} must be within {lo}..{hi}, got {value}")
            return value

        sort = one("sort", "tank_id")
        if sort not in SORTS:
            raise QueryError(f"sort must be one of {', '.join(SORTS)}; got {sort!r}")
        status = one("status", "all")
        if status not in STATUSES:
            raise QueryError(f"status must be one of {', '.join(STATUSES)}; got {status!r}")
        order = one("order", "asc" if sort == "tank_id" else "desc")
        if order not in ("asc", "desc"):
            raise QueryError(f"order must be asc or desc, got {order!r}")
        limit = whole("limit", -1, -1, MAX_LIMIT) if "limit" in params else None
        return cls(
            sort=sort,
            desc=order == "desc",
            status=status,
            q=one("q", "").strip()[:200],
            offset=whole("offset", 0, 0, 10**9),
            limit=None if limit is None or limit < 0 else limit,
            spark=whole("spark", 0, 0, MAX_SPARK),
        )

    def echo(self) -> dict[str, Any]:
        return {
            "sort": self.sort,
            "order": "desc" if self.desc else "asc",
            "status": self.status,
            "q": self.q,
            "offset": self.offset,
            "limit": self.limit,
        }


def _mark(view: FleetView, name: str, n: int) -> NDArray[np.bool_] | None:
    """Per-row boolean of an optional view attribute, or None.

    Booleans or counters (non-zero = set), per row or per row and feature (any set);
    ``uncalibrated`` may also come as the negation of a ``calibrated`` attribute.
    """
    arr = getattr(view, name, None)
    if arr is None and name == "uncalibrated":
        calibrated = getattr(view, "calibrated", None)
        if calibrated is not None and np.asarray(calibrated).shape[:1] == (n,) and n:
            return np.asarray(~np.asarray(calibrated, bool).reshape(n, -1).all(axis=1), np.bool_)
        return None
    if arr is None:
        return None
    a = np.asarray(arr)
    if a.ndim == 0 or a.shape[0] < n:
        return None
    if n == 0:  # an empty fleet (before the first reading): reshape(0, -1) is undefined
        return np.zeros(0, np.bool_)
    return np.asarray(a[:n].astype(bool).reshape(n, -1).any(axis=1), dtype=np.bool_)


def _source(view: FleetView, row: int) -> Any:
    """The row's forecast ``source`` (which forecaster served it), if the view has one."""
    src = getattr(view, "source", None)
    if src is None or row >= len(src):
        return None
    value = src[row]
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    return None if value is None else str(value)


class Dashboard:
    """The JSON API over the latest view and the history ring buffer.

    ``view`` returns the current (immutable) :class:`FleetView`; ``history`` is read
    under ``lock``, which the forecasting loop holds while it appends. ``model`` is the
    ``"model"`` object of /api/fleet, as built by the service.
    """

    def __init__(
        self,
        view: Callable[[], FleetView],
        history: History,
        lock: threading.Lock,
        model: Mapping[str, Any],
        interval_s: float,
    ) -> None:
        self._view = view
        self._history = history
        self._lock = lock
        self._model = dict(model)
        self._interval = float(interval_s)

    # ------------------------------------------------------------------ fleet
    def fleet_json(self, query: FleetQuery | None = None) -> dict[str, Any]:
        """``{"model", "interval_s", "now_ts", "summary", "query", "tanks": [...]}``.

        ``summary`` counts the whole fleet (``tanks``, ``anomalous``, ``stale``,
        ``ok``, ``marked``, one count per mark present, ``matched`` by the filter,
        ``mean_abs_residual_pressure_kpa``); ``tanks`` is the requested page.
        """
        q = query or FleetQuery()
        view = self._view()
        n = len(view.ids)
        live = np.array([i for i, t in enumerate(view.ids) if t is not None], np.intp)
        ids = np.array([view.ids[i] for i in live], dtype=object)
        last_ts = view.last_ts[live] if n else np.zeros(0)
        finite = np.isfinite(last_ts)
        now = float(last_ts[finite].max()) if finite.any() else None
        stale_s = (now - last_ts) if now is not None else np.full(live.shape, np.nan)
        flag = view.flag[live].astype(bool) if n else np.zeros(0, bool)
        stale = ~flag & np.isfinite(stale_s) & (stale_s > STALE_TICKS * self._interval)
        marks = {m: a[live] for m in MARKS if (a := _mark(view, m, n)) is not None}
        marked = np.zeros(live.shape, bool)
        for arr in marks.values():
            marked |= arr
        resid = np.abs(view.residual[live, 0].astype(np.float64)) if n else np.zeros(0)
        finite_resid = np.isfinite(resid)

        keep = np.ones(live.shape, bool)
        if q.status == "anomaly":
            keep = flag.copy()
        elif q.status == "stale":
            keep = stale.copy()
        elif q.status == "ok":
            keep = ~flag & ~stale
        elif q.status == "marked":
            keep = marked.copy()
        if q.q:
            needle = q.q.lower()
            keep &= np.fromiter((needle in str(t).lower() for t in ids), bool, len(ids))
        sel = np.flatnonzero(keep)

        if q.sort == "tank_id":
            order = sorted(sel.tolist(), key=lambda k: str(ids[k]), reverse=q.desc)
        else:
            if q.sort == "anomaly":
                key = view.score[live].astype(np.float64)
            elif q.sort == "staleness":
                key = stale_s.astype(np.float64)
            else:
                key = resid
            key = key[sel]
            # Missing values sort last either way; ties by tank id.
            primary = np.where(np.isfinite(key), -key if q.desc else key, np.inf)
            names = [str(ids[i]) for i in sel]
            rank = np.argsort(np.array(names, dtype=object), kind="stable")
            pos = np.empty_like(rank)
            pos[rank] = np.arange(rank.size)
            order = sel[np.lexsort((pos, primary))].tolist()
        page = order[q.offset :] if q.limit is None else order[q.offset : q.offset + q.limit]

        spark = None
        if q.spark and page:
            with self._lock:
                cap = self._history.capacity
                rows = live[np.array(page, np.intp)]
                inside = rows < cap
                spark = np.full((len(page), min(q.spark, self._history.length)), np.nan)
                if inside.any():
                    spark[inside] = self._history.tail(
                        rows[inside], q.spark, FIELDS.index("pressure_kpa")
                    )

        tanks = []
        for j, k in enumerate(page):
            i_row = int(live[k])
            ts = float(view.last_ts[i_row])
            status = "anomaly" if flag[k] else "stale" if stale[k] else "ok"
            tank: dict[str, Any] = {
                "tank_id": view.ids[i_row],
                "ts": _f(ts),
                "pressure_kpa": _r(float(view.actual[i_row, 0])),
                "temperature_c": _r(float(view.actual[i_row, 1])),
                "forecast_pressure_kpa": _r(float(view.forecast[i_row, 0])),
                "forecast_temperature_c": _r(float(view.forecast[i_row, 1])),
                "residual_pressure_kpa": _r(float(view.residual[i_row, 0])),
                "residual_temperature_c": _r(float(view.residual[i_row, 1])),
                "anomaly_score": _r(float(view.score[i_row])),
                "anomaly_flag": bool(flag[k]),
                "staleness_s": _r(float(stale_s[k])),
                "status": status,
                # The model's own quality marks (issue 11): flags withheld while the
                # tank's readings are outside the trained range, horizon clips.
                "anomaly_calibrated": bool(view.calibrated[i_row])
                if i_row < view.calibrated.shape[0]
                else True,
                "forecast_clips": int(view.clips[i_row]) if i_row < view.clips.shape[0] else 0,
                "readings_outside_trained_range": int(np.asarray(view.out_of_range[i_row]).sum())
                if i_row < view.out_of_range.shape[0]
                else 0,
                "resets": {
                    RESET_REASONS[r]: int(view.resets[i_row, r])
                    for r in range(1, len(RESET_REASONS))
                },
            }
            for m, a in marks.items():
                tank[m] = bool(a[k])
            source = _source(view, i_row)
            if source is not None:
                tank["source"] = source
            if spark is not None:
                tank["spark"] = _list(spark[j])
            tanks.append(tank)

        summary: dict[str, Any] = {
            "tanks": int(live.size),
            "anomalous": int(flag.sum()),
            "stale": int(stale.sum()),
            "ok": int((~flag & ~stale).sum()),
            "marked": int(marked.sum()),
            "matched": len(order),
            "mean_abs_residual_pressure_kpa": (
                _r(float(resid[finite_resid].mean())) if finite_resid.any() else None
            ),
        }
        for m, a in marks.items():
            summary[m] = int(a.sum())
        return {
            "model": self._model,
            "interval_s": self._interval,
            "now_ts": now,
            "stale_after_s": STALE_TICKS * self._interval,
            "summary": summary,
            "query": q.echo(),
            "tanks": tanks,
        }

    # ------------------------------------------------------------------- tank
    def tank_json(self, tank_id: str) -> dict[str, Any] | None:
        """One tank: its history (oldest first) and current horizon; None if unknown.

        History columns follow :data:`pipeline.sinks.history.FIELDS`.
        """
        view = self._view()
        row = view.row_of(tank_id)
        if row is None:
            return None
        with self._lock:
            if row >= self._history.capacity:
                ts, values = np.zeros(0), np.zeros((0, len(FIELDS)), np.float32)
            else:
                ts, values = self._history.series(row)
        last = float(view.last_ts[row])
        h = view.horizons[row] if row < view.horizons.shape[0] else np.zeros((0, 2))
        steps = np.arange(1, h.shape[0] + 1, dtype=np.float64)
        col = {name: values[:, k] for k, name in enumerate(FIELDS)}
        out: dict[str, Any] = {
            "tank_id": view.ids[row],
            "anomaly_flag": bool(view.flag[row]) if row < view.flag.shape[0] else False,
            "history": {
                "ts": _times(ts),
                "pressure_kpa": _list(col["pressure_kpa"]),
                "temperature_c": _list(col["temperature_c"]),
                "forecast_pressure_kpa": _list(col["forecast_pressure_kpa"]),
                "forecast_temperature_c": _list(col["forecast_temperature_c"]),
                "anomaly_score": _list(col["anomaly_score"]),
                "anomaly_flag": [bool(v == 1.0) for v in col["anomaly_flag"].tolist()],
            },
            "horizon": {
                "ts": _times(last + steps * self._interval) if math.isfinite(last) else [],
                "pressure_kpa": _list(h[:, 0]) if math.isfinite(last) else [],
                "temperature_c": _list(h[:, 1]) if math.isfinite(last) else [],
            },
        }
        for m in MARKS:
            a = _mark(view, m, len(view.ids))
            if a is not None:
                out[m] = bool(a[row])
        source = _source(view, row)
        if source is not None:
            out["source"] = source
        return out


def model_json(
    model_version: str,
    engine: str,
    tick_interval_s: float,
    max_gap_ticks: int,
    horizons_reported: Sequence[int],
    horizon: int,
    sources: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """The ``"model"`` object of /api/fleet; ``sources``: the served forecaster per
    feature and reported horizon (the skill gate)."""
    return {
        "model_version": model_version,
        "engine": engine,
        "tick_interval_s": tick_interval_s,
        "max_gap_ticks": max_gap_ticks,
        "horizons_reported": list(horizons_reported),
        "horizon": horizon,
        "sources": None if sources is None else {k: list(v) for k, v in sources.items()},
    }
