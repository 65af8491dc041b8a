"""What :func:`models.evaluate.stream` produced (:class:`StreamResult`).

Its own module so that the report writer (:mod:`models.evaluate_report`) can name it
without importing :mod:`models.evaluate`, which imports the report writer: no import
cycle.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = ["StreamResult"]


@dataclass
class StreamResult:
    """What streaming produced; arrays over (ticks K, tanks N, features F, horizons H).

    ``sq``/``ab``/``p_sq``/``p_ab``: (N, H, F) sums of squared/absolute errors of the
    model and of persistence over scored holdout targets; ``count`` (N, H) how many.
    ``next_fc`` (K, N, F) next-step forecast held for each tick (NaN if none);
    ``far_fc`` (K, N, F) the forecast for tick k made at k - H (NaN if none);
    ``flags``/``scores`` (K, N) anomaly output at ticks with a reading;
    ``residuals`` (K, N, F) the scaled next-step residuals the scorer got (NaN where
    none), so other scorer settings can be replayed (:func:`replay_scorer`);
    ``horizon_fc`` (K, N, len(report_horizons), F) the forecast for tick k made
    ``report_horizons[i]`` ticks earlier (NaN if none; scored ticks only).
    """

    sq: NDArray[np.float64]
    ab: NDArray[np.float64]
    p_sq: NDArray[np.float64]
    p_ab: NDArray[np.float64]
    count: NDArray[np.float64]
    next_fc: NDArray[np.float32]
    far_fc: NDArray[np.float32]
    flags: NDArray[np.bool_]
    scores: NDArray[np.float32]
    residuals: NDArray[np.float32]
    seconds: float
    #: (N, H, F) squared errors of the Holt baseline; (N,) forecasts clipped per tank.
    b_sq: NDArray[np.float64] | None = None
    clips: NDArray[np.int64] | None = None
    horizon_fc: NDArray[np.float32] | None = None
    #: (N, H, F) squared errors of the forecasts *as the pipeline serves them* (the
    #: gate's ``codes``, the per-tank Holt check, then the bounds); None without codes.
    s_sq: NDArray[np.float64] | None = None
