"""Per-tank ring buffers of the last ``history_len`` points, for the dashboard API.

All tanks share (rows, L) NumPy arrays; one tick writes its rows with fancy indexing
(no per-tank Python work). Row k is tank k of the registry, like everywhere else.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["FIELDS", "History"]

#: Series kept per tank, in column order of the value buffer.
FIELDS = (
    "pressure_kpa",
    "temperature_c",
    "forecast_pressure_kpa",
    "forecast_temperature_c",
    "anomaly_score",
    "anomaly_flag",
)


class History:
    """Ring buffer: ``ts`` (rows, L) epoch seconds and ``values`` (rows, L, len(FIELDS))."""

    def __init__(self, length: int) -> None:
        self.length = int(length)
        self.ts: NDArray[np.float64] = np.full((0, self.length), np.nan)
        self.values: NDArray[np.float32] = np.full(
            (0, self.length, len(FIELDS)), np.nan, np.float32
        )
        self.count: NDArray[np.int64] = np.zeros(0, np.int64)

    @property
    def capacity(self) -> int:
        return int(self.count.shape[0])

    def ensure_capacity(self, n: int) -> None:
        extra = n - self.capacity
        if extra > 0:
            self.ts = np.concatenate([self.ts, np.full((extra, self.length), np.nan)])
            self.values = np.concatenate(
                [self.values, np.full((extra, self.length, len(FIELDS)), np.nan, np.float32)]
            )
            self.count = np.concatenate([self.count, np.zeros(extra, np.int64)])

    def clear(self, rows: NDArray[np.intp]) -> None:
        self.ts[rows] = np.nan
        self.values[rows] = np.nan
        self.count[rows] = 0

    def append(
        self, rows: NDArray[np.intp], ts: NDArray[np.float64], values: NDArray[np.float32]
    ) -> None:
        """One point per row: ts (n,), values (n, len(FIELDS)); rows are distinct."""
        pos = self.count[rows] % self.length
        self.ts[rows, pos] = ts
        self.values[rows, pos] = values
        self.count[rows] += 1

    def series(self, row: int) -> tuple[NDArray[np.float64], NDArray[np.float32]]:
        """Oldest-first (ts (m,), values (m, len(FIELDS))) of one row."""
        n = int(self.count[row])
        m = min(n, self.length)
        order = (np.arange(n - m, n)) % self.length
        return self.ts[row, order].copy(), self.values[row, order].copy()

    def tail(self, rows: NDArray[np.intp], n: int, column: int) -> NDArray[np.float32]:
        """The last ``n`` points of one column for many rows: (len(rows), n), oldest
        first, NaN-padded on the left where a row has fewer points (one gather, no
        per-row Python work: the fleet page asks this for a whole page of rows)."""
        rows = np.asarray(rows, np.intp)
        n = max(0, min(int(n), self.length))
        count = self.count[rows][:, None]
        idx = count - n + np.arange(n)[None, :]  # absolute point numbers
        valid = idx >= 0
        out = self.values[rows[:, None], idx % self.length, column]
        return np.where(valid, out, np.float32(np.nan)).astype(np.float32, copy=False)
