"""An immutable snapshot of the fleet, published by the loop after every batch.

The HTTP threads (``/metrics``, ``/api/*``) read the latest view without locks: the
loop builds a new one (array copies, microseconds for 1,000 tanks) and swaps a
reference, so a scrape never sees half a tick.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

__all__ = ["FleetView"]


@dataclass(frozen=True)
class FleetView:
    """Per-row arrays (row k = ``ids[k]``; None = free row). Physical units.

    ``actual``, ``forecast``, ``residual``: (n, F); ``horizons``: (n, H, F), the
    whole horizon (``[:, h - 1]`` is tick + h; ``horizons_reported`` are exported);
    ``score`` (n,), ``flag`` (n,) bool;
    ``last_ts`` (n,) event time of the last applied reading (s); ``resets``
    (n, len(RESET_REASONS)) counts by reason.
    """

    ids: list[str | None] = field(default_factory=list)
    actual: NDArray[np.float32] = field(default_factory=lambda: np.zeros((0, 2), np.float32))
    forecast: NDArray[np.float32] = field(default_factory=lambda: np.zeros((0, 2), np.float32))
    horizons: NDArray[np.float32] = field(default_factory=lambda: np.zeros((0, 0, 2), np.float32))
    residual: NDArray[np.float32] = field(default_factory=lambda: np.zeros((0, 2), np.float32))
    score: NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    flag: NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, bool))
    last_ts: NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    resets: NDArray[np.int64] = field(default_factory=lambda: np.zeros((0, 4), np.int64))
    #: (n,) forecasts clipped to the bounds; readings outside the trained value range
    #: (pipeline.input_checks: the ``out_of_range`` mark of /api/fleet and
    #: ``tank_out_of_range_readings_total``); readings outside the model's wider input
    #: range (forecast_step: ``tank_readings_outside_trained_range_total``), all
    #: counters; and whether the anomaly score is calibrated (last reading in range).
    clips: NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    out_of_range: NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    outside_input_range: NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    calibrated: NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, bool))
    #: (n,) True where the per-tank Holt check serves persistence in Holt's place.
    holt_withheld: NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, bool))
    horizons_reported: tuple[int, ...] = ()
    #: Event time of the last closed tick (s), NaN before the first.
    last_tick_ts: float = float("nan")
    #: Wall-clock time the view was published (s).
    published: float = 0.0

    def row_of(self, tank_id: str) -> int | None:
        try:
            return self.ids.index(tank_id)
        except ValueError:
            return None
