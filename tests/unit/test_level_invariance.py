"""One fleet model at any operating level: the committed artifact (trained on the
bundled history's levels, ~100 kPa and ~10 °C) streamed over the same tanks shifted
far outside them (+60 °C, +400 kPa, i.e. another pressure range) keeps its skill."""

from __future__ import annotations

import numpy as np

from models.artifact import load_artifact, load_forecaster
from models.dataprep import TickGrid, build_grid, load_readings
from models.evaluate import stream
from tests.conftest import REPO

MODEL = REPO / "models" / "artifacts" / "default"
SHIFT = np.array([400.0, 60.0], np.float32)


def _ratios(grid: TickGrid) -> np.ndarray:
    art = load_artifact(MODEL)
    fc = load_forecaster(MODEL, "numpy", len(grid.tank_ids))
    res = stream(fc, art.scaler.std, grid, 400, 30, bounds=art.bounds)
    err = res.sq.sum(0)[[0, 29]]  # (2 horizons, F)
    pers = res.p_sq.sum(0)[[0, 29]]
    return np.sqrt(err / pers)


def test_skill_ratios_hold_on_a_fleet_shifted_far_outside_the_training_levels() -> None:
    frame = load_readings([REPO / "data" / "history.csv.gz"])
    art = load_artifact(MODEL)
    grid = build_grid(frame, art.tick_interval_s, art.max_gap_ticks, art.features)
    # Training covered the first 70 % of the history; take ~1,000 ticks of its holdout.
    k0 = int(grid.n_ticks * 0.85)
    part = grid.slice(k0, k0 + 1000)
    shifted = TickGrid(
        part.tank_ids,
        part.k0,
        part.interval_s,
        part.max_gap_ticks,
        (part.values + SHIFT).astype(np.float32),
        part.present,
        part.boundary,
    )
    base = _ratios(part)
    moved = _ratios(shifted)
    assert np.isfinite(base).all() and (base < 1.0).all()  # the model has skill here
    np.testing.assert_allclose(moved, base, rtol=0.10)
