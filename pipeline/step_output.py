"""What applying one closed tick gives for its rows (:class:`StepOutput`).

Its own module so that the forecast sink (and the horizon worker that formats records
with it) can name it without importing :mod:`pipeline.forecast_step`, which starts
the worker: no import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from pipeline.assembler import ClosedTick

__all__ = ["StepOutput"]

F32 = NDArray[np.float32]
F64 = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class StepOutput:
    """Results of one applied tick for its rows (all arrays over the tick's n rows).

    ``forecast`` (n, F) next-step; ``horizons`` (n, R, F) at ``horizons_reported``;
    ``expected`` (n, F) the forecast held for this tick before the step (NaN if none);
    ``residual`` (n, F) actual - expected, only when made at the previous tick (else NaN);
    ``score`` (n,), ``flag`` (n,) bool; ``calibrated`` (n,) False where the reading is
    outside the model's trained range (the flag is then withheld). Physical units.
    Forecasts are the *served* ones (skill gate, bounds: :mod:`models.serving`).
    ``horizon_age`` (n,) int64, with a horizon stride > 1: how many ticks ago each
    row's horizon (beyond the next step) was computed (None: all fresh).
    ``encoded``: the tick's forecast records when the horizon worker formatted them
    (else empty: the sink formats them).
    """

    tick: ClosedTick
    forecast: F32
    horizons: F32
    expected: F32
    residual: F32
    score: F64
    flag: NDArray[np.bool_]
    calibrated: NDArray[np.bool_] | None = None
    horizon_age: NDArray[np.int64] | None = None
    encoded: list[tuple[bytes, bytes]] = field(default_factory=list)
