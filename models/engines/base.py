"""The interface the pipeline talks to. Keras and NumPy engines both implement it.

Conventions (every engine keeps them):

* Rows are tanks. Row k is the same tank until the *caller* removes or resets it;
  an engine never reorders rows. ``add_rows`` appends zero-state rows at the end.
* ``x`` and every forecast are in **physical units** in the artifact's feature order
  (``pressure_kpa``, ``temperature_c``); scaling is the engine's business.
* ``mask[k]`` is True when row k has a reading this tick. A masked row's state (h, c)
  is unchanged and its held forecast stays what it was.
* ``forecast`` runs on a copy of the state: the live state is untouched.
* NaN/inf in an unmasked row raises :class:`~tankwatch.errors.InputError` before any
  state changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float32]
BoolArray = NDArray[np.bool_]
IndexArray = NDArray[np.intp]


@dataclass(frozen=True, slots=True)
class RowState:
    """Per-row state as plain arrays, for checkpoints.

    ``h`` and ``c``: (layers, n, units) float32. ``last_forecast``: (n, F) float32 in
    physical units, NaN where the row has never been stepped. ``level`` and ``scale``:
    (n, F) float32, the row's own level and scale (:mod:`models.engines.rownorm`);
    None (a snapshot from before row normalisation) restores them as after a reset.
    """

    h: FloatArray
    c: FloatArray
    last_forecast: FloatArray
    level: FloatArray | None = None
    scale: FloatArray | None = None


@runtime_checkable
class Forecaster(Protocol):
    @property
    def n_rows(self) -> int: ...

    @property
    def n_features(self) -> int: ...

    def step(self, x: FloatArray, mask: BoolArray) -> FloatArray:
        """One stateful step for all rows. x: (N, F), mask: (N,). Returns (N, F):
        the next-step forecast of every row (held value for masked rows)."""
        ...

    def forecast(self, horizon: int, rows: IndexArray | None = None) -> FloatArray:
        """(horizon, n, F) forecasts for ticks t+1..t+horizon of ``rows`` (all if None),
        feeding each prediction back as the next input, on a copy of the state.
        ``[0]`` equals the last ``step`` output of those rows."""
        ...

    def reset_rows(self, rows: IndexArray) -> None:
        """Zero the state of these rows and forget their held forecast."""
        ...

    def add_rows(self, n: int) -> int:
        """Append n zero-state rows; returns the index of the first new row."""
        ...

    def remove_rows(self, rows: IndexArray) -> None:
        """Delete rows; rows after them move up, keeping their relative order."""
        ...

    def snapshot(self, rows: IndexArray) -> RowState:
        """Copy of the state of these rows."""
        ...

    def restore(self, rows: IndexArray, state: RowState) -> None:
        """Overwrite the state of these rows from a snapshot."""
        ...
