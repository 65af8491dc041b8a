"""Per-feature standard scaling, fit on training data only.

The model works in scaled units ``(x - mean) / std``; every engine takes and returns
physical units and applies the scaler itself. Stored in ``metadata.json`` as
``{"mean": [...], "std": [...]}`` in feature order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

#: A feature whose training std is below this is treated as constant (std := 1) so
#: scaling never divides by ~0.
MIN_STD = 1e-6


@dataclass(frozen=True, slots=True)
class Scaler:
    """``mean`` and ``std``: (F,) float32, physical units of each feature."""

    mean: NDArray[np.float32]
    std: NDArray[np.float32]

    @classmethod
    def fit(cls, values: NDArray[np.floating[Any]]) -> Scaler:
        """Fit on (..., F) values; NaN entries (missing readings) are ignored."""
        flat = np.asarray(values, dtype=np.float64).reshape(-1, values.shape[-1])
        mean = np.nanmean(flat, axis=0)
        std = np.nanstd(flat, axis=0)
        std = np.where(std < MIN_STD, 1.0, std)
        return cls(mean.astype(np.float32), std.astype(np.float32))

    def transform(self, x: NDArray[np.floating[Any]]) -> NDArray[np.float32]:
        """Physical -> scaled, (..., F) float32."""
        return ((np.asarray(x, dtype=np.float32) - self.mean) / self.std).astype(np.float32)

    def inverse(self, z: NDArray[np.floating[Any]]) -> NDArray[np.float32]:
        """Scaled -> physical, (..., F) float32."""
        return (np.asarray(z, dtype=np.float32) * self.std + self.mean).astype(np.float32)

    def to_json(self) -> dict[str, list[float]]:
        return {"mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std]}

    @classmethod
    def from_json(cls, obj: Any, n_features: int) -> Scaler:
        """Parse ``{"mean": [...], "std": [...]}``; raises ValueError naming what is wrong."""
        if not isinstance(obj, dict):
            raise ValueError("scaler must be an object with 'mean' and 'std'")
        arrays = []
        for key in ("mean", "std"):
            values = obj.get(key)
            if not isinstance(values, list) or len(values) != n_features:
                raise ValueError(f"scaler.{key} must be a list of {n_features} numbers")
            try:
                arr = np.asarray(values, dtype=np.float32)
            except (TypeError, ValueError):
                raise ValueError(f"scaler.{key} must be a list of {n_features} numbers") from None
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"scaler.{key} contains NaN or inf")
            arrays.append(arr)
        if np.any(arrays[1] <= 0):
            raise ValueError("scaler.std must be > 0")
        return cls(arrays[0], arrays[1])
