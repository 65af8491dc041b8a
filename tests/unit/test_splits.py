"""Train / validation / holdout parts: by time and per tank (models/splits.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.dataprep import build_grid
from models.splits import holdout_from_metadata, make_split
from tankwatch.errors import ConfigError

T0 = 1_709_251_200.0


def _grid():
    # A: 100 readings early; B: 50 readings a week later (runs that never overlap).
    rows = [(T0 + k, "A", 1.0, 1.0, None) for k in range(100)]
    rows += [(T0 + 7 * 86400 + k, "B", 2.0, 2.0, None) for k in range(50)]
    f = pd.DataFrame(rows, columns=["ts", "tank_id", "pressure_kpa", "temperature_c", "event"])
    return build_grid(f, 1.0, 10)


def test_per_tank_split_takes_the_first_part_of_every_tank() -> None:
    grid = _grid()
    split = make_split(grid, "per_tank", 0.1, 0.2)
    p = grid.present
    for j, n in enumerate((100, 50)):
        assert (p[:, j] & split.train[:, j]).sum() == n - round(n * 0.1) - round(n * 0.2)
        assert (p[:, j] & split.validation[:, j]).sum() == round(n * 0.1)
        assert (p[:, j] & split.holdout[:, j]).sum() == round(n * 0.2)
        # Parts are in time order within the tank.
        rows = np.flatnonzero(p[:, j])
        labels = (
            split.train[rows, j] * 0 + split.validation[rows, j] * 1 + split.holdout[rows, j] * 2
        )
        assert (np.diff(labels) >= 0).all()
    assert (split.train ^ split.validation ^ split.holdout).all()
    # The time split gives B (which runs last) 5 training readings and A no holdout.
    by_time = make_split(grid, "time", 0.1, 0.2)
    assert (p[:, 1] & by_time.train[:, 1]).sum() == 5
    assert (p[:, 0] & by_time.holdout[:, 0]).sum() == 0
    # The metadata round trip gives the same holdout.
    meta = {"split": split.to_json(grid)}
    np.testing.assert_array_equal(holdout_from_metadata(meta, grid), split.holdout)
    assert meta["split"]["readings"] == {"train": 105, "validation": 15, "holdout": 30}
    # A restricted part starts every tank afresh.
    train = grid.restrict(split.train)
    assert train.boundary[:, 0].sum() == 1 and train.present.sum() == 105


def test_bad_split_options_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown split"):
        make_split(_grid(), "random", 0.1, 0.2)
    with pytest.raises(ConfigError, match="10%"):
        make_split(_grid(), "time", 0.5, 0.45)


def test_time_split_masks_train_on_exactly_what_the_slices_did() -> None:
    # The time split as masks (restrict) gives the batches the old slices gave, so
    # `make model` still reproduces the shipped weights.
    from models.dataprep import make_batches, split_ticks
    from models.scaler import Scaler

    grid = _grid()
    val_start, test_start = split_ticks(grid.n_ticks, 0.1, 0.2)
    split = make_split(grid, "time", 0.1, 0.2)
    pairs = [
        (grid.slice(0, val_start), grid.restrict(split.train)),
        (grid.slice(val_start, test_start), grid.restrict(split.validation)),
    ]
    scaler = Scaler(np.zeros(2, np.float32), np.ones(2, np.float32))
    delta = np.ones(2, np.float32)
    for sliced, masked in pairs:
        a = make_batches(sliced, scaler, 8, delta)
        b = make_batches(masked, scaler, 8, delta)
        for name in ("x", "dx", "mask", "y", "weight", "resets"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
