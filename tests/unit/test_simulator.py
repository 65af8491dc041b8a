"""The simulator: deterministic by seed, physically sensible, with the promised
boundaries, anomalies, noise and gaps; the bundled history regenerates byte-for-byte."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from producers.sim_config import SimConfig, load_sim_config
from producers.sim_output import HISTORY_HEADER, write_history, write_labels
from producers.simulator import (
    EVENT_MAINTENANCE,
    EVENT_NONE,
    EVENT_REFILL,
    SimChunk,
    TankFarm,
    breather_valve,
    gas_amount,
    ideal_gas_pressure,
    simulate,
)
from tankwatch.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
#: Three days of 8 tanks with plenty of everything: fast (<1 s) and every feature shows up.
SMALL = SimConfig(
    tanks=8,
    days=3,
    seed=11,
    maintenance_rate_per_week=2.0,
    anomaly_rate_per_week=1.0,
    outage_rate_per_day=1.0,
    long_gap_rate_per_week=2.0,
    draws_per_day=1.5,
)


@pytest.fixture(scope="module")
def small() -> SimChunk:
    return simulate(SMALL)


def _digest(chunk: SimChunk) -> str:
    h = hashlib.sha256()
    for arr in (chunk.pressure_kpa, chunk.temperature_c, chunk.present, chunk.event):
        h.update(np.ascontiguousarray(arr).tobytes())
    h.update(repr(chunk.labels).encode())
    return h.hexdigest()


def test_same_seed_same_output_other_seed_differs(small: SimChunk) -> None:
    again = simulate(SMALL)
    other = simulate(SimConfig(**{**SMALL.to_dict(), "seed": 12}))
    assert _digest(again) == _digest(small)
    assert _digest(other) != _digest(small)


# --- physics (the model functions directly) ---------------------------------------------


def test_pressure_rises_with_temperature_at_fixed_level() -> None:
    level = np.full(5, 0.5)
    q = gas_amount(np.full(5, 101.325), np.full(5, 15.0), level)
    temps = np.array([0.0, 10.0, 15.0, 25.0, 40.0])
    p = ideal_gas_pressure(q, temps, level)
    assert np.all(np.diff(p) > 0)
    assert p[2] == pytest.approx(101.325)
    # Ideal gas: P/T constant at fixed gas and volume.
    assert np.allclose(p / (temps + 273.15), p[2] / 288.15)


def test_pressure_rises_when_the_level_rises_at_fixed_gas() -> None:
    q = gas_amount(np.array([101.325]), np.array([15.0]), np.array([0.3]))
    low, high = (ideal_gas_pressure(q, np.array([15.0]), np.array([lv]))[0] for lv in (0.3, 0.6))
    assert high > low


def test_breather_valve_caps_the_band() -> None:
    lo, hi = np.full(4, 100.0), np.full(4, 104.0)
    out = breather_valve(np.array([99.0, 100.5, 103.9, 150.0]), lo, hi)
    assert out[1] == 100.5 and out[2] == 103.9  # inside: untouched
    assert lo[0] - 0.5 < out[0] < lo[0]  # vacuum side: pulled back towards the set point
    assert hi[3] < out[3] <= hi[3] + 0.5  # a huge overshoot is vented within one tick


def test_simulated_pressure_stays_in_a_fixed_roof_band(small: SimChunk) -> None:
    p = small.pressure_kpa[small.present]
    # Atmospheric ~101.3 kPa +- weather, valves at about -1.5 / +3.5 kPa, leaks drift lower.
    assert p.min() > 93.0 and p.max() < 108.0
    assert abs(np.median(p) - 101.8) < 2.0


def test_temperature_follows_a_diurnal_cycle(small: SimChunk) -> None:
    hours = (small.ts % 86400) // 3600
    temp = small.temperature_c.mean(axis=1)
    afternoon = temp[(hours >= 13) & (hours <= 17)].mean()
    night = temp[(hours >= 2) & (hours <= 6)].mean()
    assert afternoon - night > 3.0


def test_signal_is_smooth_relative_to_its_range(small: SimChunk) -> None:
    """Learnable: tick-to-tick changes are small against the day's swing (not noise-led)."""
    for arr in (small.temperature_c, small.pressure_kpa):
        step = np.median(np.abs(np.diff(arr, axis=0)))
        assert step < 0.05 * arr.std()


# --- boundaries, anomalies, noise, gaps ---------------------------------------------------


def test_refill_raises_level_and_carries_an_event() -> None:
    cfg = SimConfig(tanks=4, days=4, seed=3, draws_per_day=6.0, refill_threshold=0.6)
    farm = TankFarm(cfg)
    levels: list[np.ndarray] = []
    chunks = []
    for _ in range(4 * 24):  # one hour at a time, recording the level after each hour
        chunks.append(farm.run(60))
        levels.append(farm.level.copy())
    events = np.vstack([c.event for c in chunks])
    assert (events == EVENT_REFILL).any()
    hour, tank = np.argwhere(events == EVENT_REFILL)[0] // [60, 1]
    before = levels[hour - 1][tank] if hour else None
    assert levels[hour][tank] >= 0.8  # filled up to 85..95 %, minus at most an hour of draw
    if before is not None:
        assert levels[hour][tank] > before
    present = np.vstack([c.present for c in chunks])
    assert present[events != EVENT_NONE].all()  # a boundary event is never dropped


def test_maintenance_has_a_gap_before_its_event(small: SimChunk) -> None:
    ks, tanks = np.nonzero(small.event == EVENT_MAINTENANCE)
    assert len(ks) > 0
    for k, i in zip(ks, tanks, strict=True):
        assert not small.present[k - 30 : k, i].any()  # at least 30 min without readings


def test_labels_match_visible_anomalies(small: SimChunk) -> None:
    kinds = {kind for _, _, _, kind in small.labels}
    assert kinds == {"leak", "stuck_sensor", "heater_fault"}
    ids = SMALL.tank_ids
    for tank, start, end, kind in small.labels:
        i = ids.index(tank)
        win = (small.ts >= start) & (small.ts <= end)
        p, t = small.pressure_kpa[win, i], small.temperature_c[win, i]
        hours = (small.ts[win] - start) / 3600.0
        others = [j for j in range(SMALL.tanks) if j != i]
        if kind == "leak":
            slope = np.polyfit(hours, p, 1)[0]
            normal = [np.polyfit(hours, small.pressure_kpa[win, j], 1)[0] for j in others]
            assert slope < min(normal) and slope < -0.05  # kPa/h, drifting down
        elif kind == "heater_fault":
            rise = t[-1] - t[0]
            normal = [
                small.temperature_c[win, j][-1] - small.temperature_c[win, j][0] for j in others
            ]
            assert rise > max(normal) and rise > 3.0
        else:
            assert np.ptp(p) == 0.0 or np.ptp(t) == 0.0  # one channel frozen


def test_noise_and_dropouts_are_present(small: SimChunk) -> None:
    # White noise: the second difference is far from zero even on quiet ticks.
    d2 = np.diff(small.temperature_c, n=2, axis=0)
    assert np.median(np.abs(d2)) > 0.001
    missing = ~small.present
    assert 0.001 < missing.mean() < 0.2
    # Some gap is longer than any sensible max_gap (60 ticks).
    longest = 0
    for i in range(SMALL.tanks):
        run = 0
        for m in missing[:, i]:
            run = run + 1 if m else 0
            longest = max(longest, run)
    assert longest > 60


# --- config and files ---------------------------------------------------------------------


def test_config_file_rejects_unknown_keys(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"tanks": 3, "tankz": 4}))
    with pytest.raises(ConfigError, match="tankz"):
        load_sim_config(path)
    path.write_text(json.dumps({"tanks": "three"}))
    with pytest.raises(ConfigError, match="tanks"):
        load_sim_config(path)


def test_small_config_written_twice_is_byte_identical(tmp_path: Path) -> None:
    cfg = SimConfig(tanks=3, days=0.5, seed=5)
    paths = []
    for n in range(2):
        out = tmp_path / f"h{n}.csv.gz"
        write_history(simulate(cfg), cfg.tank_ids, out)
        paths.append(out)
    assert paths[0].read_bytes() == paths[1].read_bytes()
    lines = gzip.decompress(paths[0].read_bytes()).decode().splitlines()
    assert lines[0] == HISTORY_HEADER
    rows = [ln.split(",") for ln in lines[1:]]
    assert [(r[0], r[1]) for r in rows] == sorted((r[0], r[1]) for r in rows)
    assert all(r[0].endswith("Z") and len(r) == 5 for r in rows)


def test_committed_history_regenerates_byte_for_byte(tmp_path: Path) -> None:
    """`make data` reproducibility: ~3 s to regenerate the two-week, 24-tank history."""
    cfg = load_sim_config(REPO / "data" / "sim_config.json")
    chunk = simulate(cfg)
    out = tmp_path / "history.csv.gz"
    rows = write_history(chunk, cfg.tank_ids, out)
    labels = tmp_path / "labels.csv"
    write_labels(chunk.labels, labels)
    assert out.read_bytes() == (REPO / "data" / "history.csv.gz").read_bytes()
    assert labels.read_bytes() == (REPO / "data" / "labels.csv").read_bytes()
    assert cfg.tanks == 24 and cfg.interval_s == 60 and cfg.days == 14
    assert 0.9 * 24 * 14 * 1440 < rows <= 24 * 14 * 1440
