"""Tick grid, boundaries, split and stateful batch layout (pure NumPy/pandas)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.dataprep import build_grid, load_readings, make_batches, split_ticks
from models.scaler import Scaler
from tankwatch.errors import CsvError

T0 = 1_709_251_200.0  # 2024-03-01T00:00:00Z, a multiple of 60


def frame(rows: list[tuple[float, str, float, float, str | None]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["ts", "tank_id", "pressure_kpa", "temperature_c", "event"])


def test_grid_buckets_by_floor_first_reading_wins_and_marks_boundaries() -> None:
    f = frame(
        [
            (T0 + 5, "B", 1.0, 10.0, None),
            (T0 + 10, "A", 2.0, 20.0, None),
            (T0 + 50, "A", 99.0, 99.0, None),  # same tick as the previous: dropped
            (T0 + 60, "A", 3.0, 30.0, None),
            (T0 + 120, "A", 4.0, 40.0, "refill"),  # event -> boundary
            (T0 + 60 * 5, "A", 5.0, 50.0, None),  # gap 3 ticks <= max_gap 3: no boundary
            (T0 + 60 * 9, "A", 6.0, 60.0, None),  # gap 4 > 3: boundary
        ]
    )
    g = build_grid(f, 60.0, 3)
    assert g.tank_ids == ("A", "B")
    # Sparse: ticks 6..8 (a fleet-wide gap longer than max_gap) are not rows; the
    # short gap 3..4 inside A's segment is kept as masked steps.
    assert g.k0 == int(T0 // 60) and g.n_ticks == 7
    assert (g.ticks() - g.k0).tolist() == [0, 1, 2, 3, 4, 5, 9]
    assert g.tick_times()[-1] == T0 + 60 * 9
    assert g.merged == 1
    np.testing.assert_array_equal(g.values[0, 0], [2.0, 20.0])
    np.testing.assert_array_equal(g.values[0, 1], [1.0, 10.0])
    assert g.present[:, 0].tolist() == [1, 1, 1, 0, 0, 1, 1]
    assert np.flatnonzero(g.boundary[:, 0]).tolist() == [0, 2, 6]
    assert np.flatnonzero(g.boundary[:, 1]).tolist() == [0]
    assert np.isnan(g.values[3, 0]).all()
    # A slice starts every tank afresh and keeps the tick numbers.
    s = g.slice(4, 7)
    assert np.flatnonzero(s.boundary[:, 0]).tolist() == [1, 2]
    assert (s.ticks() - g.k0).tolist() == [4, 5, 9]
    assert not s.boundary[:, 1].any()  # B has no reading in the slice
    # Restricting to a part: the first reading inside it is a boundary.
    part = np.zeros_like(g.present)
    part[1:, 0] = True
    r = g.restrict(part)
    assert np.flatnonzero(r.present[:, 0]).tolist() == [1, 2, 5, 6]
    assert np.flatnonzero(r.boundary[:, 0]).tolist() == [1, 2, 6]
    assert not r.present[:, 1].any() and np.isnan(r.values[0, 0]).all()


def test_sparse_grid_follows_the_readings_not_the_calendar() -> None:
    # Two 1-second runs of 100 readings a month apart: 200 rows, not 2.6 million.
    rows = [(T0 + k, "A", 100.0, 10.0, None) for k in range(100)]
    rows += [(T0 + 30 * 86400 + k, "A", 101.0, 11.0, None) for k in range(100)]
    g = build_grid(frame(rows), 1.0, 10)
    assert g.n_ticks == 200
    assert np.flatnonzero(g.boundary[:, 0]).tolist() == [0, 100]


def test_interval_is_inferred_per_tank_and_snapped() -> None:
    from models.dataprep import infer_interval

    rows = [(T0 + k * 1.02, "A", 1.0, 1.0, None) for k in range(50)]
    rows += [(T0 + 9 * 86400 + k * 0.98, "B", 1.0, 1.0, None) for k in range(50)]
    assert infer_interval(frame(rows)) == 1.0
    rows = [(T0 + k * 7.3, "A", 1.0, 1.0, None) for k in range(5)]
    assert infer_interval(frame(rows)) == 7.3


def test_split_is_by_time_and_validated() -> None:
    assert split_ticks(1000, 0.1, 0.2) == (700, 800)
    with pytest.raises(ValueError):
        split_ticks(1000, 0.5, 0.45)


def test_batches_row_j_is_tank_j_with_resets_masks_and_changes() -> None:
    # Tank A: ticks 0..9 with tick 4 missing and an event at tick 6; tank B: ticks 0..3.
    rows = []
    for k in range(10):
        if k != 4:
            rows.append((T0 + 60 * k, "A", 100.0 + k, 10.0, "refill" if k == 6 else None))
    for k in range(4):
        rows.append((T0 + 60 * k, "B", 200.0 + k, 20.0, None))
    g = build_grid(frame(rows), 60.0, 5)
    scaler = Scaler(np.array([0.0, 0.0], np.float32), np.array([1.0, 1.0], np.float32))
    delta = np.array([2.0, 1.0], np.float32)
    b = make_batches(g, scaler, window=4, delta_scale=delta)
    assert b.lanes == 2 and b.x.shape[0] % b.lanes == 0
    assert b.x.shape == (b.windows * 2, 4, 2)
    lane_a = b.x[0::2].reshape(-1, 2)
    lane_b = b.x[1::2].reshape(-1, 2)
    # Row j is always tank j: A's pressures are 100.., B's 200.. (0 = masked padding).
    assert set(np.unique(lane_a[:, 0])) <= {0.0} | {100.0 + k for k in range(10)}
    assert set(np.unique(lane_b[:, 0])) <= {0.0} | {200.0 + k for k in range(4)}
    # A: segment 1 = ticks 0..5 (inputs 0..4, tick 4 masked) in window 0-1; the event
    # segment 6..9 starts window 2 with a reset of row 0 only.
    m_a = b.mask[0::2].reshape(-1)
    assert m_a[:8].tolist() == [True, True, True, True, False, False, False, False]
    assert b.resets[:, 0].tolist()[:3] == [True, False, True]
    assert b.resets[:, 1].tolist()[:2] == [True, False]
    assert lane_a[8, 0] == 106.0
    # Targets: next minus current over delta; none where the next tick is missing.
    w_a = b.weight[0::2].reshape(-1)
    y_a = b.y[0::2].reshape(-1, 2)
    assert w_a[:5].tolist() == [1, 1, 1, 0, 0]  # 3->4 has no target (4 missing)
    np.testing.assert_allclose(y_a[0], [0.5, 0.0])
    # dx: change since the previous reading of the segment (tick 5 follows tick 3).
    d_a = b.dx[0::2].reshape(-1, 2)
    assert d_a[0, 0] == 0.0 and d_a[1, 0] == 0.5  # first of segment: 0
    assert d_a[8, 0] == 0.0  # first of the event segment
    b_dx = b.dx[1::2].reshape(-1, 2)
    assert b_dx[2, 0] == 0.5


@settings(max_examples=25, deadline=None)
@given(
    n_tanks=st.integers(1, 4),
    n_ticks=st.integers(2, 40),
    window=st.integers(2, 8),
    drop=st.floats(0.0, 0.5),
    seed=st.integers(0, 10_000),
)
def test_batch_invariants(n_tanks: int, n_ticks: int, window: int, drop: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(n_ticks):
        for j in range(n_tanks):
            if rng.random() >= drop or k == 0:
                event = "maintenance" if rng.random() < 0.05 else None
                rows.append((T0 + 60 * k, f"T{j}", 100.0 * (j + 1) + k, 1.0, event))
    g = build_grid(frame(rows), 60.0, 3)
    scaler = Scaler(np.zeros(2, np.float32), np.ones(2, np.float32))
    b = make_batches(g, scaler, window, np.ones(2, np.float32))
    s = b.x.shape[0]
    assert s == b.windows * n_tanks  # a multiple of the batch size
    # Weighted targets only where input and next step are real readings.
    assert not (b.weight.astype(bool) & ~b.mask).any()
    assert np.isfinite(b.x).all() and np.isfinite(b.y).all() and np.isfinite(b.dx).all()
    # Every masked step carries zeros; every lane's real inputs are its own tank's.
    assert not b.x[~b.mask].any()
    for j in range(n_tanks):
        vals = b.x[j::n_tanks][..., 0][b.mask[j::n_tanks]]
        assert ((vals >= 100.0 * (j + 1)) & (vals < 100.0 * (j + 1) + n_ticks)).all()
    # A lane with anything to learn starts with a reset; a window that starts with
    # a masked step and no reset can only be padding or a continuing segment.
    assert b.resets.shape == (b.windows, n_tanks)
    for j in range(n_tanks):
        if b.weight[j::n_tanks].any():
            assert b.resets[0, j]


def test_load_readings_uses_csv_source_and_rejects_empty(tmp_path: Path) -> None:
    good = tmp_path / "h.csv"
    good.write_text(
        "ts,tank_id,pressure_kpa,temperature_c,event\n"
        "2024-03-01T00:00:00Z,T01,101.3,14.5,\n"
        "2024-03-01T00:01:00Z,T01,101.4,14.6,refill\n"
        "2024-03-01T00:01:00Z,T02,oops,14.6,\n"
    )
    f = load_readings([good])
    assert len(f) == 2 and f["ts"].iloc[0] == T0 and f["event"].iloc[1] == "refill"
    empty = tmp_path / "e.csv"
    empty.write_text("ts,tank_id,pressure_kpa,temperature_c,event\n")
    with pytest.raises(CsvError, match="no valid readings"):
        load_readings([empty])
