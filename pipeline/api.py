"""JSON of the dashboard API (``/api/fleet``, ``/api/tank/<id>``), built from a view.

Shapes are fixed by docs/architecture.md ("HTTP"). Physical units (kPa, degC);
missing values are ``null``. ``now_ts`` is the pipeline's event-time clock (the newest
applied reading), so staleness means the same in a live run and a fast replay.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from pipeline.assembler import RESET_REASONS
from pipeline.sinks.view import FleetView

if TYPE_CHECKING:
    from pipeline.config import Settings
    from pipeline.service import ModelInfo

__all__ = ["fleet_json", "tank_json"]


def _f(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _list(a: NDArray[Any]) -> list[float | None]:
    return [v if math.isfinite(v) else None for v in np.asarray(a, np.float64).tolist()]


def fleet_json(
    view: FleetView,
    model: ModelInfo,
    settings: Settings,
    out_of_range: dict[str, int] | None = None,
    cadence_warning: str | None = None,
) -> dict[str, Any]:
    """``{"model", "interval_s", "now_ts", "tanks": [...]}``, tanks in row order.

    ``out_of_range``: tank id -> readings outside the model's trained value range
    (each tank's ``out_of_range_readings``, for the page to mark); ``cadence_warning``:
    the stream's cadence does not match the model's interval (``model.warnings``).
    """
    out_of_range = out_of_range or {}
    live = [(i, t) for i, t in enumerate(view.ids) if t is not None]
    ts_all = view.last_ts[[i for i, _ in live]] if live else np.zeros(0)
    now = float(np.nanmax(ts_all)) if ts_all.size and np.isfinite(ts_all).any() else None
    tanks = []
    for i, tank_id in live:
        ts = _f(float(view.last_ts[i]))
        tanks.append(
            {
                "tank_id": tank_id,
                "ts": ts,
                "pressure_kpa": _f(float(view.actual[i, 0])),
                "temperature_c": _f(float(view.actual[i, 1])),
                "forecast_pressure_kpa": _f(float(view.forecast[i, 0])),
                "forecast_temperature_c": _f(float(view.forecast[i, 1])),
                "residual_pressure_kpa": _f(float(view.residual[i, 0])),
                "residual_temperature_c": _f(float(view.residual[i, 1])),
                "anomaly_score": _f(float(view.score[i])),
                "anomaly_flag": bool(view.flag[i]),
                "staleness_s": None if ts is None or now is None else now - ts,
                "resets": {
                    RESET_REASONS[k]: int(view.resets[i, k]) for k in range(1, len(RESET_REASONS))
                },
                "out_of_range_readings": out_of_range.get(tank_id, 0),
            }
        )
    return {
        "model": {
            "model_version": model.model_version,
            "engine": model.engine,
            "tick_interval_s": model.tick_interval_s,
            "max_gap_ticks": model.max_gap_ticks,
            "horizons_reported": list(settings.horizons_reported),
            "horizon": settings.horizon,
            "pressure_reference": model.pressure_reference,
            "pressure_limits_kpa": list(model.pressure_range),
            "value_range": (
                None
                if model.value_range is None
                else {
                    "low": [float(v) for v in model.value_range[0]],
                    "high": [float(v) for v in model.value_range[1]],
                }
            ),
            "warnings": [cadence_warning] if cadence_warning else [],
        },
        "interval_s": model.tick_interval_s,
        "now_ts": now,
        "tanks": tanks,
    }


def tank_json(
    view: FleetView,
    row: int,
    ts: NDArray[np.float64],
    values: NDArray[np.float32],
    interval_s: float,
) -> dict[str, Any]:
    """One tank: its history (oldest first) and its current horizon forecast.

    ``values`` columns follow :data:`pipeline.sinks.history.FIELDS`.
    """
    last = float(view.last_ts[row])
    h = view.horizons[row] if row < view.horizons.shape[0] else np.zeros((0, 2))
    steps = np.arange(1, h.shape[0] + 1, dtype=np.float64)
    return {
        "tank_id": view.ids[row],
        "history": {
            "ts": _list(ts),
            "pressure_kpa": _list(values[:, 0]),
            "temperature_c": _list(values[:, 1]),
            "forecast_pressure_kpa": _list(values[:, 2]),
            "forecast_temperature_c": _list(values[:, 3]),
            "anomaly_score": _list(values[:, 4]),
            "anomaly_flag": [bool(v == 1.0) for v in values[:, 5].tolist()],
        },
        "horizon": {
            "ts": _list(last + steps * interval_s) if math.isfinite(last) else [],
            "pressure_kpa": _list(h[:, 0]) if math.isfinite(last) else [],
            "temperature_c": _list(h[:, 1]) if math.isfinite(last) else [],
        },
    }
