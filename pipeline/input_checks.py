"""Does the stream fit the model? Per-tank readings outside the trained range, and cadence.

Pure and cheap on the hot path: the range test is one vectorized comparison per
batch (Python work only for the few readings outside it); the cadence is judged once,
from the first :data:`CADENCE_SAMPLE` spacings between consecutive readings of a tank,
then never again. The service exports the counts as
``tank_out_of_range_readings_total{tank_id}`` and in ``/api/fleet``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from models.data_checks import cadence_warning, outside_range

__all__ = ["CADENCE_SAMPLE", "InputChecks"]

log = logging.getLogger(__name__)

#: Spacings collected before the stream's cadence is compared with the model's.
CADENCE_SAMPLE = 500


class InputChecks:
    """``bounds``: (low (F,), high (F,)) of the artifact's trained value range, or None."""

    def __init__(
        self,
        model_interval_s: float,
        bounds: tuple[NDArray[np.float64], NDArray[np.float64]] | None,
    ) -> None:
        self.model_interval_s = model_interval_s
        self.bounds = bounds
        #: tank id -> readings outside the trained range so far.
        self.out_of_range: dict[str, int] = {}
        #: The cadence warning, once judged (None: fine, or not judged yet).
        self.cadence_message: str | None = None
        self._judged = False
        self._last_ts: dict[str, float] = {}
        self._spacings: list[float] = []

    def observe(
        self, tank_ids: Sequence[str], ts: NDArray[np.float64], values: NDArray[np.floating[Any]]
    ) -> dict[str, int]:
        """Absorb decoded readings (``values`` (M, F)); returns this batch's new
        out-of-range counts per tank."""
        new: dict[str, int] = {}
        for i in np.flatnonzero(outside_range(values, self.bounds)).tolist():
            tank = tank_ids[i]
            new[tank] = new.get(tank, 0) + 1
            self.out_of_range[tank] = self.out_of_range.get(tank, 0) + 1
        if not self._judged:
            self._sample(tank_ids, ts)
        return new

    def _sample(self, tank_ids: Sequence[str], ts: NDArray[np.float64]) -> None:
        last = self._last_ts
        for tank, t in zip(tank_ids, ts.tolist(), strict=True):
            prev = last.get(tank)
            if prev is not None and t > prev:
                self._spacings.append(t - prev)
            last[tank] = t
        if len(self._spacings) >= CADENCE_SAMPLE:
            self._judged = True
            typical = float(np.median(self._spacings))
            self.cadence_message = cadence_warning(typical, self.model_interval_s)
            if self.cadence_message:
                log.warning(self.cadence_message, extra={"data_interval_s": typical})
            self._last_ts.clear()
            self._spacings.clear()
