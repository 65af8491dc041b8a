"""Applying closed ticks: rows are independent, residuals need the previous tick,
resets touch one row, horizons run on a state copy (real NumPy engine)."""

from __future__ import annotations

import numpy as np

from tests.unit.test_checkpoint import make_step, run_ticks, series, tick


def test_a_row_stepped_alone_equals_the_same_row_in_a_full_batch() -> None:
    full, alone = make_step(), make_step()
    run_ticks(full, [0, 1, 2, 3], 0, 10)
    for t in range(10):  # row 2 only, every tick: the catch-up path
        alone.apply(tick(t, [2], np.asarray([series(2, t)]), [t - 1]))
    np.testing.assert_allclose(alone.fleet.held[2], full.fleet.held[2], rtol=1e-6)
    np.testing.assert_allclose(alone.fleet.horizons[2], full.fleet.horizons[2], rtol=1e-6)
    assert np.isnan(alone.fleet.held[[0, 1, 3]]).all()  # never stepped rows stay empty


def test_residual_only_against_the_forecast_of_the_previous_tick() -> None:
    step = make_step()
    (first,) = run_ticks(step, [0], 0, 1)
    assert np.isnan(first.residual).all()
    held = step.fleet.held[0].copy()
    out = step.apply(tick(1, [0], np.asarray([series(0, 1)]), [0]))
    np.testing.assert_allclose(
        out.residual[0], np.asarray(series(0, 1), np.float32) - held, rtol=1e-6
    )
    gap = step.apply(tick(5, [0], np.asarray([series(0, 5)]), [1]))  # ticks 2..4 missing
    assert np.isnan(gap.residual).all()


def test_reset_touches_one_row_and_horizon_leaves_state_alone() -> None:
    step = make_step()
    run_ticks(step, [0, 1], 0, 5)
    h_before = step.engine.snapshot(np.asarray([0, 1])).h.copy()
    h_other = h_before[:, 1].copy()
    out = step.apply(tick(5, [0], np.asarray([series(0, 5)]), [4], reason=[2]))  # event
    assert out.tick.reset_rows.tolist() == [0]
    after = step.engine.snapshot(np.asarray([0, 1])).h
    np.testing.assert_array_equal(after[:, 1], h_other)  # row 1 untouched
    assert step.fleet.resets[0, 2] == 1 and step.fleet.resets[1].sum() == 0
    # forecast(H) ran on a copy: stepping again from here is unaffected by it.
    h_now = step.engine.snapshot(np.asarray([0])).h.copy()
    step.engine.forecast(30, np.asarray([0]))
    np.testing.assert_array_equal(step.engine.snapshot(np.asarray([0])).h, h_now)
    assert out.horizons.shape == (1, 4, 2) and np.isfinite(out.horizons).all()
