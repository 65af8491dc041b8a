"""The skill gate: each variable and horizon is served from the forecaster that won
on the holdout — the LSTM, persistence or the damped-trend Holt baseline
(:mod:`models.baselines`) — and every output says which.

``codes`` (H, F) int: 0 = lstm, 1 = persistence, 2 = holt (:data:`SOURCES`), chosen
by :func:`choose` from holdout RMSE and stored in the artifact's metadata
(``serving.sources``). Served forecasts are then never worse than persistence on
that holdout, by construction; on other data it is a measured claim (docs/model.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["SOURCES", "choose", "codes_of", "horizon_codes", "serve"]

SOURCES: tuple[str, ...] = ("lstm", "persistence", "holt")


#: A forecaster replaces persistence only if its holdout RMSE is at least this much
#: smaller. Set after the 3W benchmark: Holt won the training wells' holdout by 6 % at
#: 30 ticks of pressure and lost by 8 % on unseen wells (docs/model.md).
MARGIN = 0.10


def choose(rmse: NDArray[np.floating[Any]], margin: float = MARGIN) -> NDArray[np.intp]:
    """(H, F) codes of the smallest RMSE; ``rmse`` (3, H, F) in :data:`SOURCES` order.

    A candidate must beat persistence by ``margin`` (relative) to be chosen over it;
    otherwise, and for NaN, persistence is served (the cheapest, and the reference
    every report is divided by).
    """
    r = np.where(np.isfinite(rmse), rmse, np.inf)
    best = np.argmin(r, axis=0)
    weak = r[best, *np.indices(best.shape)] > (1.0 - margin) * r[1]
    return np.where(weak, 1, best).astype(np.intp)


def codes_of(sources: Sequence[Sequence[str]]) -> NDArray[np.intp]:
    """(H, F) codes from (H, F) source names (artifact metadata)."""
    return np.asarray([[SOURCES.index(s) for s in row] for row in sources], np.intp)


def horizon_codes(codes: NDArray[np.intp], first_h: int, count: int) -> NDArray[np.intp]:
    """(count, F) codes of horizons ``first_h .. first_h + count - 1``; horizons past
    the coded ones use the last coded horizon's choice."""
    h_idx = np.minimum(np.arange(first_h - 1, first_h - 1 + count), codes.shape[0] - 1)
    return codes[h_idx]


def serve(
    codes: NDArray[np.intp],
    lstm: NDArray[np.floating[Any]],
    persistence: NDArray[np.floating[Any]],
    holt: NDArray[np.floating[Any]],
    first_h: int = 1,
) -> NDArray[np.float32]:
    """(H', n, F) served forecasts for horizons ``first_h..``; inputs (H', n, F).

    Horizons past the coded ones use the last coded horizon's choice.
    """
    hp, n, nf = lstm.shape
    # Flat (H', n F) rows with the (H', F) codes tiled along them: a broadcast over a
    # last axis of F = 2 runs NumPy's inner loop 2 elements at a time (~10x slower).
    c = np.tile(horizon_codes(codes, first_h, hp), (1, n))
    flat = (hp, n * nf)
    pers = np.broadcast_to(np.asarray(persistence, np.float32), lstm.shape).reshape(flat)
    # Each input rounded to float32 first: the same values as selecting in float64
    # and rounding the result, at half the memory traffic.
    out = np.where(c == 1, pers, np.asarray(holt, np.float32).reshape(flat))
    out = np.where(c == 0, np.asarray(lstm, np.float32).reshape(flat), out)
    return np.asarray(out, np.float32).reshape(hp, n, nf)


class ServingPlan:
    """What the pipeline applies to the engine's forecasts, from the artifact: the
    skill gate ``codes`` (H, F) (None: all LSTM), the forecast ``bounds`` and the
    trained input range ``(lo, hi)`` (F,) each (None: no out-of-range marking)."""

    def __init__(
        self,
        codes: NDArray[np.intp] | None = None,
        bounds: Any = None,
        input_range: tuple[NDArray[np.float32], NDArray[np.float32]] | None = None,
    ) -> None:
        self.codes = codes
        self.bounds = bounds
        self.input_range = input_range

    @classmethod
    def from_artifact(cls, artifact: Any) -> ServingPlan:
        codes = codes_of(artifact.serving) if artifact.serving is not None else None
        rng = artifact.metadata.get("input_range")
        input_range = None
        if isinstance(rng, dict) and "min" in rng and "max" in rng:
            lo = np.asarray(rng["min"], np.float32)
            hi = np.asarray(rng["max"], np.float32)
            margin = 0.5 * (hi - lo)  # well outside, not the edge of the training data
            input_range = (lo - margin, hi + margin)
        return cls(codes, artifact.bounds, input_range)

    def sources(self, features: Sequence[str], horizons: Sequence[int]) -> dict[str, list[str]]:
        """{feature: [source of each horizon in ``horizons``]} (for outputs)."""
        out = {}
        for fi, name in enumerate(features):
            if self.codes is None:
                out[name] = ["lstm"] * len(horizons)
            else:
                last = self.codes.shape[0] - 1
                out[name] = [SOURCES[int(self.codes[min(h - 1, last), fi])] for h in horizons]
        return out
