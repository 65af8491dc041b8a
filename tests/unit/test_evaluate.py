"""Evaluation: streaming semantics, metrics against an independent computation, reports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.artifact import FEATURES, UNITS, load_artifact, save_artifact
from models.dataprep import build_grid, load_readings
from models.engines.base import RowState
from models.evaluate import EvalConfig, evaluate, score_anomalies, stream
from tests.unit.test_train import T0, write_history


class RecordingForecaster:
    """A fake engine for the pure streaming loop: records calls, forecasts persistence."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.steps: list[tuple[np.ndarray, np.ndarray]] = []
        self.resets: list[tuple[int, list[int]]] = []
        self.last = np.full((n, 2), np.nan, np.float32)

    @property
    def n_rows(self) -> int:
        return self.n

    @property
    def n_features(self) -> int:
        return 2

    def step(self, x: np.ndarray, mask: np.ndarray) -> np.ndarray:
        self.steps.append((x.copy(), mask.copy()))
        self.last[mask] = x[mask]
        return self.last.copy()

    def forecast(self, horizon: int, rows: np.ndarray | None = None) -> np.ndarray:
        rows = np.arange(self.n) if rows is None else rows
        return np.repeat(self.last[rows][None], horizon, axis=0)

    def reset_rows(self, rows: np.ndarray) -> None:
        self.resets.append((len(self.steps), [int(r) for r in rows]))
        self.last[rows] = np.nan

    def add_rows(self, n: int) -> int:
        raise NotImplementedError

    def remove_rows(self, rows: np.ndarray) -> None:
        raise NotImplementedError

    def snapshot(self, rows: np.ndarray) -> RowState:
        raise NotImplementedError

    def restore(self, rows: np.ndarray, state: RowState) -> None:
        raise NotImplementedError


def small_grid():
    f = pd.DataFrame(
        [
            (T0.timestamp() + 60 * k, tank, 100.0 + k + 10 * i, 10.0, ev)
            for k in range(12)
            for i, tank in enumerate(["A", "B"])
            if not (tank == "B" and k in (3, 4))
            for ev in [("refill" if (tank == "A" and k == 6) else None)]
        ],
        columns=["ts", "tank_id", "pressure_kpa", "temperature_c", "event"],
    )
    return build_grid(f, 60.0, 5)


def test_stream_masks_missing_rows_and_resets_exactly_at_boundaries() -> None:
    grid = small_grid()
    fake = RecordingForecaster(2)
    result = stream(fake, np.ones(2), grid, holdout_start=6, max_horizon=3)
    # Each tank is fed its own readings in order (models.packing): as many steps as
    # the tank with the most readings has.
    assert len(fake.steps) == int(grid.present.sum(0).max())
    for j in range(2):
        fed = np.array([x[j] for x, mask in fake.steps if mask[j]])
        np.testing.assert_array_equal(fed, grid.values[grid.present[:, j], j])
    # Resets before the step of the boundary tick, only the boundary rows.
    assert fake.resets == [(0, [0, 1]), (6, [0])]
    # Persistence-forecasting fake = the persistence baseline, where both are scored.
    scored = result.count > 0
    np.testing.assert_allclose(result.sq[scored], result.p_sq[scored])
    # A's refill at tick 6 is never a target of a forecast made before it.
    assert result.count[0, 0] == 5  # ticks 6..10 -> 7..11 (h=1)
    assert result.count[1, 0] == 5


class EwmaForecaster(RecordingForecaster):
    """A stateful fake: the forecast depends on the row's whole history."""

    def step(self, x: np.ndarray, mask: np.ndarray) -> np.ndarray:
        self.steps.append((x.copy(), mask.copy()))
        fresh = mask & np.isnan(self.last[:, 0])
        self.last[fresh] = x[fresh]
        upd = mask & ~fresh
        self.last[upd] = 0.7 * self.last[upd] + 0.3 * x[upd]
        return self.last.copy()

    def forecast(self, horizon: int, rows: np.ndarray | None = None) -> np.ndarray:
        rows = np.arange(self.n) if rows is None else rows
        base = self.last[rows]
        return np.stack([base + 0.01 * h for h in range(1, horizon + 1)])


def _frame(rows: list[tuple[float, str, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        [(ts, tank, p, 10.0 + p / 10, None) for ts, tank, p in rows],
        columns=["ts", "tank_id", "pressure_kpa", "temperature_c", "event"],
    )


def test_stream_of_a_fleet_equals_each_tank_streamed_alone() -> None:
    # Two tanks with runs at different times (and a gap inside A's run): the fleet's
    # stream must give each tank exactly what streaming it alone gives.
    t0 = T0.timestamp()
    rng = np.random.default_rng(4)
    a = [(t0 + k, "A", 100 + rng.normal()) for k in range(60) if k not in (20, 21)]
    a += [(t0 + 9 * 86400 + k, "A", 100 + rng.normal()) for k in range(40)]
    b = [(t0 + 3600 + k, "B", 50 + rng.normal() + (30.0 if 50 <= k < 56 else 0)) for k in range(70)]
    fleet = build_grid(_frame(a + b), 1.0, 5)
    r = stream(EwmaForecaster(2), np.ones(2), fleet, holdout_start=0, max_horizon=5)
    for j, rows in enumerate((a, b)):
        alone = build_grid(_frame(rows), 1.0, 5)
        ra = stream(EwmaForecaster(1), np.ones(2), alone, holdout_start=0, max_horizon=5)
        np.testing.assert_allclose(r.sq[j], ra.sq[0])
        np.testing.assert_array_equal(r.count[j], ra.count[0])
        got = r.next_fc[fleet.present[:, j], j]
        want = ra.next_fc[alone.present[:, 0], 0]
        np.testing.assert_array_equal(got, want)
        assert r.horizon_fc is not None and ra.horizon_fc is not None
        np.testing.assert_array_equal(
            r.horizon_fc[fleet.present[:, j], j], ra.horizon_fc[alone.present[:, 0], 0]
        )
    # Replaying the recorded residuals through a default scorer gives the same flags.
    from models.anomaly import AnomalyScorer
    from models.evaluate import replay_scorer

    again = replay_scorer(AnomalyScorer(2, n_features=2), fleet, r.residuals, np.ones(2))
    np.testing.assert_array_equal(again, r.flags)
    assert r.flags[:, 1].any()  # B's step up is flagged
    # A's in-run gap of 2 ticks: the reading after it has no h1 residual, h3 is scored.
    assert r.count[0, 0] == 19 + 37 + 39 and r.count[0, 2] > 0  # pairs (k, k + 1)


def test_score_anomalies_counts_events_episodes_and_ticks() -> None:
    grid = small_grid()
    flags = np.zeros(grid.present.shape, bool)
    flags[2:4, 0] = True  # one episode of A, on the label
    flags[9, 1] = True  # one episode of B, before its label: a false alarm
    times = grid.tick_times()
    iso = [pd.Timestamp(t, unit="s", tz="UTC").isoformat() for t in times]
    labels = pd.DataFrame(
        {"tank_id": ["A", "B"], "start": [iso[2], iso[10]], "end": [iso[3], iso[10]], "kind": "x"}
    )
    epoch = pd.Timestamp(0, tz="UTC")
    for col in ("start", "end"):
        labels[f"{col}_s"] = (pd.to_datetime(labels[col]) - epoch) / pd.Timedelta(seconds=1)
    out = score_anomalies(grid, flags, labels)
    assert out["labels"] == 2 and out["labels_detected"] == 1 and out["event_recall"] == 0.5
    assert out["episodes"] == 2 and out["episodes_on_label"] == 1
    assert out["episode_precision"] == 0.5
    # Windows run to 30 ticks after a label's end: A's covers ticks 2..11 (10
    # readings), B's 10..11 (2 readings).
    assert out["tick_precision"] == pytest.approx(2 / 3)
    assert out["tick_recall"] == pytest.approx(2 / 12)


def random_artifact(out: Path, data: Path) -> Path:
    """An artifact with random weights (evaluation mechanics do not need a good model)."""
    from models.network import arrays_to_weights, build_model, weights_to_arrays
    from models.train import data_fingerprint

    model = build_model(3, None, 2, 4, 1, residual=True, change_input=True)
    rng = np.random.default_rng(1)
    arrays = {
        k: (0.1 * rng.normal(size=v.shape)).astype(np.float32)
        for k, v in weights_to_arrays(model).items()
    }
    arrays_to_weights(model, arrays)
    meta = {
        "model_version": "lstm-4x1-test",
        "features": list(FEATURES),
        "units": UNITS,
        "scaler": {"mean": [101.3, 12.0], "std": [1.0, 3.0]},
        "tick_interval_s": 60.0,
        "max_gap_ticks": 10,
        "units_per_layer": 4,
        "layers": 1,
        "residual": True,
        "change_input": True,
        "training": {"data_fingerprint_sha256": data_fingerprint([data])},
    }
    return save_artifact(out, model, arrays, meta)


def test_evaluate_reports_persistence_exactly_and_stores_summary(tmp_path: Path) -> None:
    data = write_history(tmp_path / "h.csv", ticks=300)
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "tank_id,start,end,kind\nT02,2024-03-01T04:00:00Z,2024-03-01T04:30:00Z,leak\n"
    )
    art = random_artifact(tmp_path / "art", data)
    # No holdout recorded in the metadata: --holdout-fraction picks the scored part.
    summary = evaluate(
        EvalConfig(
            model=art, data=(data,), out=art, progress=False, plot_tanks=2, holdout_fraction=0.2
        )
    )

    # Independent persistence RMSE at h=1 and h=5 on the last 20% of ticks.
    grid = build_grid(load_readings([data]), 60.0, 10)
    start = round(grid.n_ticks * 0.8)
    cb = np.cumsum(grid.boundary, axis=0)
    for h in (1, 5):
        k = np.arange(start, grid.n_ticks - h)
        ok = grid.present[k] & grid.present[k + h] & (cb[k + h] == cb[k])
        err = (grid.values[k + h] - grid.values[k])[ok]
        want = np.sqrt((err.astype(np.float64) ** 2).mean(axis=0))
        for fi, name in enumerate(FEATURES):
            got = summary["fleet"][name][str(h)]["persistence_rmse"]
            assert got == pytest.approx(want[fi], rel=1e-6)
    for name in FEATURES:
        row = summary["fleet"][name]["30"]
        assert row["rmse_ratio"] == pytest.approx(row["rmse"] / row["persistence_rmse"])
    assert summary["anomaly"]["whole_stream"]["labels"] == 1
    assert set(summary["per_tank"]) == {"T01", "T02", "T03"}
    meta = load_artifact(art).metadata
    assert meta["evaluation"]["fleet"] == summary["fleet"]
    assert "per_tank" not in meta["evaluation"]
    report = (art / "evaluation.md").read_text()
    assert "| pressure_kpa (kPa) | 30 |" in report and "Anomaly flags" in report
    for plot in summary["plots"]:
        assert (art / plot).stat().st_size > 1000
    assert json.loads((art / "evaluation.json").read_text())["fleet"] == summary["fleet"]

    # Another output directory leaves the artifact's metadata alone; without a
    # recorded holdout or --holdout-fraction every tick is scored.
    before = (art / "metadata.json").read_text()
    rep = evaluate(EvalConfig(model=art, data=(data,), out=tmp_path / "rep", progress=False))
    assert (art / "metadata.json").read_text() == before
    assert (tmp_path / "rep" / "evaluation.md").is_file()
    assert rep["holdout"]["rule"] == "all of the data"
    assert rep["holdout"]["readings"] == int(grid.present.sum())
    # A share that leaves nothing "for training" is fine: evaluate trains nothing.
    most = evaluate(
        EvalConfig(
            model=art,
            data=(data,),
            out=tmp_path / "rep9",
            progress=False,
            holdout_fraction=0.9,
            ticks_format="none",
        )
    )
    assert most["holdout"]["ticks"] == grid.n_ticks - round(grid.n_ticks * 0.1)
    assert not (tmp_path / "rep9" / "ticks.csv.gz").exists()

    # The per-tick table: one row per reading, forecasts at the reported horizons.
    ticks = pd.read_csv(tmp_path / "rep" / "ticks.csv.gz", keep_default_na=True)
    assert len(ticks) == int(grid.present.sum())
    assert set(ticks["tank_id"]) == {"T01", "T02", "T03"}
    for h in (1, 5, 15, 30):
        assert f"forecast_pressure_kpa_h{h}" in ticks and f"forecast_temperature_c_h{h}" in ticks
    np.testing.assert_allclose(
        ticks["residual_pressure_kpa"],
        ticks["pressure_kpa"] - ticks["forecast_pressure_kpa_h1"],
        atol=1e-4,
    )
    assert ticks["forecast_pressure_kpa_h30"].notna().sum() > 0.5 * len(ticks)
    assert set(ticks["anomaly_flag"]) <= {0, 1} and (ticks["scored"] == 1).all()
    assert set(ticks["label"].dropna()) == {"leak"}
    assert ticks["ts"].iloc[0].endswith("Z")


def test_evaluate_warns_about_cadence_and_range_and_refuses_the_other_reference(
    tmp_path: Path,
) -> None:
    from producers.csv_source import CsvOptions
    from tankwatch.errors import ConfigError

    # 1-second readings far above the range the (60 s) model records.
    rows = [
        f"{pd.Timestamp(T0.timestamp() + k, unit='s', tz='UTC').isoformat()},T0{j},"
        f"{300 + np.sin(k / 9 + j):.3f},20.0,"
        for k in range(120)
        for j in (1, 2, 3)
    ]
    data = tmp_path / "fast.csv"
    data.write_text("ts,tank_id,pressure_kpa,temperature_c,event\n" + "\n".join(rows) + "\n")
    art = random_artifact(tmp_path / "art", tmp_path / "fast.csv")
    meta = json.loads((art / "metadata.json").read_text())
    meta["value_range"] = {"pressure_kpa": [99.0, 104.0], "temperature_c": [0.0, 30.0]}
    meta["training"]["data_fingerprint_sha256"] = "0" * 64
    (art / "metadata.json").write_text(json.dumps(meta))
    # Labels written for ids the data does not have: said, not silently matched to nothing.
    (tmp_path / "labels.csv").write_text(
        "tank_id,start,end,kind\n0,2024-03-01T00:00:10Z,2024-03-01T00:00:20Z,leak\n"
    )
    summary = evaluate(
        EvalConfig(model=art, data=(data,), out=tmp_path / "o", progress=False, plot_tanks=1)
    )
    warnings = summary["input"]["warnings"]
    assert any("1 labelled tank(s) are not in the data (e.g. '0')" in w for w in warnings)
    assert any("about 1 s apart" in w and "60 s" in w for w in warnings)
    assert any("outside the value range" in w for w in warnings)
    assert summary["holdout"]["rule"] == "all of the data"
    report = (tmp_path / "o" / "evaluation.md").read_text()
    # A 60 s model on 1 s data: 2 ticks x 3 tanks used, the rest shared their tick.
    assert "Input: 360 CSV rows read, 6 readings used (3 tanks" in report
    assert "354 readings shared a tick" in report
    assert "**Warning:** the data's readings are about 1 s apart" in report
    import importlib.util

    if importlib.util.find_spec("pyarrow") is None:  # refused before any work
        with pytest.raises(ConfigError, match="needs pyarrow"):
            evaluate(
                EvalConfig(model=art, data=(data,), out=tmp_path / "p", ticks_format="parquet")
            )
        assert not (tmp_path / "p").exists()
    with pytest.raises(ConfigError, match="trained on absolute pressure"):
        evaluate(
            EvalConfig(
                model=art,
                data=(data,),
                out=tmp_path / "o2",
                progress=False,
                csv_options=CsvOptions(pressure_reference="gauge"),
            )
        )
