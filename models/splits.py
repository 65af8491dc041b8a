"""Train / validation / holdout parts of a tick grid: by time, or per tank.

* ``time`` (the default): the grid's rows (ticks with readings, see
  :mod:`models.dataprep`) in three consecutive ranges, the same for every tank.
* ``per_tank``: the first part of *every tank's* readings for training, the next for
  validation, the rest for the holdout. Archives of many short experiments (a tank per
  file, each a few minutes) get a holdout from every tank instead of only from the
  tanks that happen to run last.

A part is a (K, N) bool mask; :meth:`models.dataprep.TickGrid.restrict` turns it into
a grid whose first reading per tank is a boundary. :meth:`Split.to_json` goes into the
artifact's metadata (``training.split``) so that ``evaluate`` on the same data scores
the same holdout (:func:`holdout_from_metadata`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from models.dataprep import TickGrid, split_ticks
from tankwatch.errors import ConfigError

__all__ = ["SPLIT_MODES", "Split", "holdout_from_metadata", "make_split"]

SPLIT_MODES = ("time", "per_tank")


@dataclass(frozen=True)
class Split:
    """Masks (K, N) bool of the three parts; they are disjoint and cover every row."""

    mode: str
    train: NDArray[np.bool_]
    validation: NDArray[np.bool_]
    holdout: NDArray[np.bool_]
    #: Row where the holdout starts, per tank (K where a tank has none).
    holdout_start_rows: NDArray[np.int64]
    #: Row where the validation part starts, per tank (K where a tank has none).
    validation_start_rows: NDArray[np.int64]

    def readings(self, grid: TickGrid) -> tuple[int, int, int]:
        """Readings in (train, validation, holdout)."""
        p = grid.present
        return (
            int((p & self.train).sum()),
            int((p & self.validation).sum()),
            int((p & self.holdout).sum()),
        )

    def to_json(self, grid: TickGrid) -> dict[str, Any]:
        """Metadata: the mode and, per tank, the tick number where its holdout starts."""
        ticks = grid.ticks()
        starts = {
            tank: int(ticks[r]) if r < grid.n_ticks else None
            for tank, r in zip(grid.tank_ids, self.holdout_start_rows.tolist(), strict=True)
        }
        train, val, hold = self.readings(grid)
        valid = self.validation_start_rows[self.validation_start_rows < grid.n_ticks]
        return {
            "validation_start_tick": int(ticks[valid.min()]) if valid.size else None,
            "mode": self.mode,
            "readings": {"train": train, "validation": val, "holdout": hold},
            "holdout_start_tick_by_tank": starts,
        }


def _from_row_starts(
    grid: TickGrid, val_rows: NDArray[np.int64], hold_rows: NDArray[np.int64], mode: str
) -> Split:
    k = np.arange(grid.n_ticks)[:, None]
    train = k < val_rows[None, :]
    holdout = k >= hold_rows[None, :]
    validation = ~train & ~holdout
    return Split(
        mode, train, validation, holdout, hold_rows.astype(np.int64), val_rows.astype(np.int64)
    )


def make_split(grid: TickGrid, mode: str, val_fraction: float, holdout_fraction: float) -> Split:
    """The split of ``grid`` (fractions of rows for ``time``, of each tank's readings
    for ``per_tank``). Raises ConfigError for a bad mode or fractions."""
    try:
        val_start, test_start = split_ticks(grid.n_ticks, val_fraction, holdout_fraction)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    n = len(grid.tank_ids)
    if mode == "time":
        return _from_row_starts(
            grid, np.full(n, val_start, np.int64), np.full(n, test_start, np.int64), mode
        )
    if mode != "per_tank":
        raise ConfigError(f"unknown split {mode!r} (expected {' or '.join(SPLIT_MODES)})")
    val_rows = np.full(n, grid.n_ticks, np.int64)
    hold_rows = np.full(n, grid.n_ticks, np.int64)
    for j in range(n):
        rows = np.flatnonzero(grid.present[:, j])
        if rows.size < 3:
            continue  # too short to split: all of it trains
        n_hold = max(1, round(rows.size * holdout_fraction))
        n_val = max(1, round(rows.size * val_fraction))
        n_train = rows.size - n_hold - n_val
        if n_train < 1:
            continue
        val_rows[j] = rows[n_train]
        hold_rows[j] = rows[n_train + n_val]
    return _from_row_starts(grid, val_rows, hold_rows, mode)


def holdout_from_metadata(training: dict[str, Any], grid: TickGrid) -> NDArray[np.bool_] | None:
    """The training holdout as a (K, N) mask over ``grid`` (the training data), or None
    when the metadata does not record one. Reads ``training.split`` (this module) and
    the older ``training.split_ticks.holdout_start`` (a global tick number)."""
    ticks = grid.ticks()
    split = training.get("split")
    if isinstance(split, dict) and isinstance(split.get("holdout_start_tick_by_tank"), dict):
        by_tank = split["holdout_start_tick_by_tank"]
        starts = np.full(len(grid.tank_ids), grid.n_ticks, np.int64)
        for j, tank in enumerate(grid.tank_ids):
            tick = by_tank.get(tank)
            if isinstance(tick, int):
                starts[j] = np.searchsorted(ticks, tick, side="left")
        mask: NDArray[np.bool_] = np.arange(grid.n_ticks)[:, None] >= starts[None, :]
        return mask
    old = training.get("split_ticks")
    stored = old.get("holdout_start") if isinstance(old, dict) else None
    if isinstance(stored, int) and ticks[0] <= stored <= ticks[-1]:
        row = int(np.searchsorted(ticks, stored, side="left"))
        mask = np.zeros(grid.present.shape, bool)
        mask[row:] = True
        return mask
    return None
