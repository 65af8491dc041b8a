"""Tank -> row: the fixed order of every batch.

Invariant: while a tank is assigned to this instance its row never changes. A new tank
takes the lowest free row (left by a revoked tank) or a new row at the end; callers
grow their per-row arrays when :attr:`TankRegistry.capacity` grows.

>>> reg = TankRegistry()
>>> reg.add("A"), reg.add("B"), reg.add("C")
(0, 1, 2)
>>> reg.release(["B"])
[1]
>>> reg.add("D"), reg.row("C")
(1, 2)
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

__all__ = ["TankRegistry"]


class TankRegistry:
    """Maps tank ids to row indices (0..capacity-1); rows of released tanks are reused."""

    def __init__(self) -> None:
        self._rows: dict[str, int] = {}
        self._ids: list[str | None] = []
        self._free: list[int] = []  # min-heap: reuse the lowest free row first

    def __len__(self) -> int:
        """Number of tanks currently holding a row."""
        return len(self._rows)

    def __contains__(self, tank_id: object) -> bool:
        return tank_id in self._rows

    @property
    def capacity(self) -> int:
        """Rows in use or free (the size per-row arrays must have)."""
        return len(self._ids)

    def get(self, tank_id: str) -> int | None:
        """The tank's row, or None."""
        return self._rows.get(tank_id)

    def row(self, tank_id: str) -> int:
        """The tank's row (KeyError if it has none)."""
        return self._rows[tank_id]

    def add(self, tank_id: str) -> int:
        """The tank's row, assigning one (lowest free, else a new last row) if needed."""
        row = self._rows.get(tank_id)
        if row is not None:
            return row
        if self._free:
            row = heapq.heappop(self._free)
            self._ids[row] = tank_id
        else:
            row = len(self._ids)
            self._ids.append(tank_id)
        self._rows[tank_id] = row
        return row

    def release(self, tank_ids: Iterable[str]) -> list[int]:
        """Free the rows of these tanks (unknown ids are ignored); returns the rows."""
        freed = []
        for tank_id in tank_ids:
            row = self._rows.pop(tank_id, None)
            if row is not None:
                self._ids[row] = None
                heapq.heappush(self._free, row)
                freed.append(row)
        return freed

    def tank_at(self, row: int) -> str | None:
        """The tank in this row, or None for a free row."""
        return self._ids[row]

    def ids(self) -> list[str | None]:
        """Tank id per row (None = free), a copy in row order."""
        return list(self._ids)

    def items(self) -> list[tuple[str, int]]:
        """(tank_id, row) of every assigned tank, in row order."""
        return sorted(self._rows.items(), key=lambda kv: kv[1])
