"""Does this data fit this model? Pressure reference, cadence and trained value range.

Shared by ``evaluate`` (on a CSV) and ``run`` (on the stream), so both say the same:

* **pressure reference**: a model trained on absolute pressure refuses data declared
  gauge, and the other way round (one line, exit 2). Artifacts from before the
  reference was recorded are absolute (the bundled data is absolute).
* **cadence**: data whose typical spacing is not within a factor
  :data:`CADENCE_TOLERANCE` of the model's tick interval gets a warning (a 60 s model
  on 1 s data forecasts "the last value" and nothing says so otherwise).
* **value range**: the artifact records ``value_range`` (min/max per feature of the
  training readings); readings outside it are counted (``run``:
  ``tank_out_of_range_readings_total``).

>>> cadence_warning(1.0, 60.0) is not None
True
>>> cadence_warning(55.0, 60.0) is None
True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tankwatch.errors import ConfigError

__all__ = [
    "CADENCE_TOLERANCE",
    "artifact_reference",
    "cadence_warning",
    "check_reference",
    "outside_range",
    "range_bounds",
]

#: Data cadence and model interval may differ by this factor before a warning.
CADENCE_TOLERANCE = 1.5


def artifact_reference(metadata: Mapping[str, Any]) -> str:
    """The artifact's pressure reference (``absolute`` when not recorded)."""
    ref = metadata.get("pressure_reference", "absolute")
    return ref if isinstance(ref, str) else "absolute"


def check_reference(metadata: Mapping[str, Any], declared: str, where: str = "the data") -> None:
    """ConfigError (one line) when ``declared`` differs from the artifact's reference."""
    trained = artifact_reference(metadata)
    if declared != trained:
        version = metadata.get("model_version", "?")
        raise ConfigError(
            f"model {version} was trained on {trained} pressure but {where} is declared "
            f"{declared}: use a model trained on {declared} pressure (or declare "
            f"--pressure-reference {trained} if that is what the data is)"
        )


def cadence_warning(data_interval_s: float, model_interval_s: float) -> str | None:
    """A one-line warning when the data's spacing is far from the model's interval."""
    if data_interval_s <= 0 or model_interval_s <= 0:
        return None
    ratio = data_interval_s / model_interval_s
    if 1 / CADENCE_TOLERANCE <= ratio <= CADENCE_TOLERANCE:
        return None
    return (
        f"the data's readings are about {data_interval_s:g} s apart but the model's tick "
        f"interval is {model_interval_s:g} s: its forecasts are not meant for this cadence "
        "(train a model on this data: tankwatch train)"
    )


def range_bounds(
    metadata: Mapping[str, Any], features: Sequence[str]
) -> tuple[NDArray[np.float64], NDArray[np.float64]] | None:
    """(low (F,), high (F,)) of the artifact's ``value_range``, or None if absent."""
    vr = metadata.get("value_range")
    if not isinstance(vr, dict):
        return None
    try:
        lo = np.array([float(vr[f][0]) for f in features])
        hi = np.array([float(vr[f][1]) for f in features])
    except (KeyError, TypeError, ValueError, IndexError):
        return None
    return lo, hi


def outside_range(
    values: NDArray[np.floating[Any]],
    bounds: tuple[NDArray[np.float64], NDArray[np.float64]] | None,
) -> NDArray[np.bool_]:
    """(M,) True where a reading (M, F) has any feature outside the bounds."""
    vals = np.asarray(values, np.float64)
    if bounds is None or vals.size == 0:
        return np.zeros(vals.shape[0], bool)
    lo, hi = bounds
    out = np.asarray(((vals < lo) | (vals > hi)).any(axis=1), dtype=bool)
    return out
