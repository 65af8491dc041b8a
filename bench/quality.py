"""Forecast and anomaly quality on real data (3W oil wells) and on the simulator.

    python bench/quality.py --3w ../shared/data/3w            # 3W only
    python bench/quality.py --3w ../shared/data/3w --sim       # + the bundled history

**3W** (Petrobras; read from the given folder, never copied): P-TPT (Pa -> kPa) as
pressure, T-TPT as temperature, 1 s ticks, each run (file) one tank. A small model is
trained by ``models.train`` on the *normal* periods (class 0) of the runs of
``--train-wells``; its skill gate is set on the time holdout of that training data.
Everything reported is measured on the class-2 and class-6 runs (labelled normal ->
transient -> fault) of the *other* wells:

* forecast table: RMSE / persistence of the LSTM, the damped-trend Holt baseline and
  the served mix, next step and 30 ticks, over whole runs;
* anomaly table: our detector (``AnomalyScorer`` with the departure detector on,
  residuals of the served forecast) and an isolation forest on 60 s windows
  (:mod:`models.detection_baseline`), both calibrated per run on the first half of its
  normal period at the same false-alarm budget (quantile ``--quantile`` of the
  calibration scores) and both flagging after 3 consecutive exceedances; scored
  (:mod:`models.detection_metrics`) on the rest, abnormal = transient or fault.

**Simulator** (``--sim``): the committed default artifact (or ``--sim-model DIR``) on
the bundled history (forecast table on its holdout), and the same two detectors scored against
``data/labels.csv`` on the holdout, calibrated on the tuning part outside labels.

Runs in a few minutes on 2 cores (few epochs, small LSTM).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import table  # noqa: E402
from models.anomaly import AnomalyScorer  # noqa: E402
from models.artifact import load_artifact, load_forecaster, update_metadata  # noqa: E402
from models.dataprep import TickGrid, build_grid  # noqa: E402
from models.detection_baseline import calibrated_flags as _calibrated_flags  # noqa: E402
from models.detection_baseline import isolation_forest_scores  # noqa: E402
from models.detection_metrics import point_event_scores  # noqa: E402
from models.evaluate import skill_summary, stream  # noqa: E402
from models.serving import codes_of  # noqa: E402

T0 = 946_684_800.0  # 2000-01-01: runs are laid on a common clock from here
CONSECUTIVE = 3
#: Rows of the calibration sweep table (filled by run_3w).
SWEEP: list[list[Any]] = []


def load_run(path: Path) -> pd.DataFrame:
    """One 3W file: seconds since its start, pressure (kPa), temperature, class."""
    raw = pd.read_csv(path, usecols=["timestamp", "P-TPT", "T-TPT", "class"])
    ts = pd.to_datetime(raw["timestamp"])
    return pd.DataFrame(
        {
            "t": (ts - ts.iloc[0]).dt.total_seconds().to_numpy(),
            "pressure_kpa": raw["P-TPT"].to_numpy(np.float64) / 1000.0,
            "temperature_c": raw["T-TPT"].to_numpy(np.float64),
            "cls": raw["class"].to_numpy(np.float64),
        }
    )


def frame_of(runs: dict[str, pd.DataFrame], align_end: bool = False) -> pd.DataFrame:
    """Runs as readings (ts, tank_id, pressure_kpa, temperature_c, event) on one clock."""
    longest = max(float(r["t"].max()) for r in runs.values())
    parts = []
    for name, r in runs.items():
        r = r.dropna(subset=["pressure_kpa", "temperature_c"])
        shift = longest - float(r["t"].max()) if align_end else 0.0
        parts.append(
            pd.DataFrame(
                {
                    "ts": T0 + r["t"].to_numpy() + shift,
                    "tank_id": name,
                    "pressure_kpa": r["pressure_kpa"].to_numpy(),
                    "temperature_c": r["temperature_c"].to_numpy(),
                    "event": None,
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def train_3w(runs: dict[str, pd.DataFrame], work: Path, args: argparse.Namespace) -> Path:
    """Train on the normal periods of ``runs``; returns the artifact directory."""
    from models.train import TrainConfig, train

    normal = {k: r[r["cls"] == 0] for k, r in runs.items()}
    frame = frame_of(normal, align_end=True)  # every run reaches the time holdout
    # The readings are handed over as a frame: 3W pressures (up to 25 MPa) are outside
    # the CSV reader's and the message schema's 0..5000 kPa. The file only names them
    # (training fingerprints it).
    csv = work / "3w_normal.csv"
    frame.to_csv(csv, index=False)
    config = TrainConfig(
        data=(csv,),
        out=work / "model_3w",
        seed=7,
        units=args.units,
        epochs=args.epochs,
        patience=3,
        interval_s=1.0,
        level_alpha=args.level_alpha,
        scale_alpha=args.scale_alpha,
        evaluate=False,
        progress=False,
    )
    result = train(config, frame)
    # The skill gate on the training data's own time holdout, as `train` would set it.
    art = load_artifact(result.out)
    grid = build_grid(frame, 1.0, art.max_gap_ticks, art.features)
    split = art.metadata["training"]["split_ticks"]
    holdout = int(split["holdout_start"]) - grid.k0
    _, skill = score_grid(result.out, grid, holdout, AnomalyScorer(len(grid.tank_ids)))
    update_metadata(result.out, serving=skill["serving"], evaluation={"skill": skill["skill"]})
    return result.out


def score_grid(
    artifact_dir: Path, grid: TickGrid, holdout_start: int, scorer: AnomalyScorer
) -> tuple[Any, dict[str, Any]]:
    art = load_artifact(artifact_dir)
    fc = load_forecaster(artifact_dir, "numpy", len(grid.tank_ids))
    codes = codes_of(art.serving) if art.serving is not None else None
    res = stream(
        fc, art.scaler.std, grid, holdout_start, 30, bounds=art.bounds, codes=codes, scorer=scorer
    )
    return res, skill_summary(res, art.features, codes)


def calibrated_flags(
    scores: np.ndarray,
    present: np.ndarray,
    calibration: np.ndarray,
    quantile: float,
    margin: float = 1.0,
) -> np.ndarray:
    return _calibrated_flags(scores, present, calibration, quantile, CONSECUTIVE, margin)


def iforest_scores(grid: TickGrid, calibration: np.ndarray, window: int) -> np.ndarray:
    scores = np.full(grid.present.shape, np.nan)
    for j in range(grid.present.shape[1]):
        vals = np.where(grid.present[:, j, None], grid.values[:, j], np.nan)
        scores[:, j] = isolation_forest_scores(vals, calibration[:, j], window)
    return scores


def sweep_rows(
    name: str,
    scores: dict[str, np.ndarray],
    grid: TickGrid,
    calibration: np.ndarray,
    truth: np.ndarray,
    valid: np.ndarray,
) -> list[list[Any]]:
    """F1 / false-alarm rate of each detector over a few calibration settings (the
    same false-alarm budget for both at each setting)."""
    rows = []
    for q in (0.99, 0.995, 0.999, 0.9999):
        for margin in (1.0,):
            cells: list[Any] = [name, f"{q:g}", f"{margin:g}"]
            for sc in scores.values():
                m = point_event_scores(
                    calibrated_flags(sc, grid.present, calibration, q, margin), truth, valid
                )
                cells += [f"{m['f1']:.3f}", f"{m['false_alarm_rate']:.3f}"]
            rows.append(cells)
    return rows


def forecast_rows(name: str, skill: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for feat, per in skill["skill"].items():
        # Every reported horizon (1, 5, 15, 30): the gate chooses per horizon, and a
        # choice that does not carry over to unseen wells shows in between, not only
        # at the ends (it did: docs/model.md "Real data").
        for h in ("1", "5", "15", "30"):
            r = per[h]
            rows.append(
                [
                    name,
                    feat,
                    h,
                    f"{r['lstm_ratio']:.3f}",
                    "1.000",
                    f"{r['holt_ratio']:.3f}",
                    f"{r['served_ratio']:.3f}",
                    r["source"],
                ]
            )
    return rows


def anomaly_rows(name: str, results: dict[str, dict[str, Any]]) -> list[list[Any]]:
    def f(v: Any) -> str:
        return "—" if v is None else f"{v:.3f}"

    rows = []
    for det, m in results.items():
        delay = m["median_delay_s"]
        rows.append(
            [
                name,
                det,
                f(m["precision"]),
                f(m["recall"]),
                f(m["f1"]),
                f(m["false_alarm_rate"]),
                f(m["missed_alarm_rate"]),
                f"{m['events_hit']}/{m['events']}",
                m["false_episodes"],
                "—" if delay is None else f"{delay:.0f}",
            ]
        )
    return rows


FORECAST_HEAD = ["data", "feature", "h", "LSTM", "persistence", "Holt", "served", "served from"]
ANOMALY_HEAD = [
    "data",
    "detector",
    "precision",
    "recall",
    "F1",
    "false-alarm rate",
    "missed-alarm rate",
    "events hit",
    "false episodes",
    "median delay (s)",
]


def split_and_train(
    root: Path, work: Path, args: argparse.Namespace
) -> tuple[Path, dict[str, pd.DataFrame], dict[str, pd.DataFrame]]:
    """The class-2 and class-6 runs of the 3W folder ``root``, split into the runs of
    ``args.train_wells`` and the others; a model trained on the former (``train_3w``).
    Returns (artifact dir, training runs, test runs)."""
    files = sorted((root / "data" / "2").glob("*.csv")) + sorted(
        (root / "data" / "6").glob("*.csv")
    )
    runs = {p.stem: load_run(p) for p in files}
    train_wells = set(args.train_wells.split(","))
    train_runs = {k: r for k, r in runs.items() if k.split("_")[0] in train_wells}
    test_runs = {k: r for k, r in runs.items() if k.split("_")[0] not in train_wells}
    t0 = time.monotonic()
    art_dir = train_3w(train_runs, work, args)
    print(
        f"3W: trained on {len(train_runs)} runs in {time.monotonic() - t0:.0f} s", file=sys.stderr
    )
    return art_dir, train_runs, test_runs


def run_3w(root: Path, work: Path, args: argparse.Namespace) -> tuple[list[Any], list[Any]]:
    art_dir, _, test_runs = split_and_train(root, work, args)
    art = load_artifact(art_dir)
    train_skill = {"skill": art.metadata["evaluation"]["skill"]}
    grid = build_grid(frame_of(test_runs), 1.0, art.max_gap_ticks, art.features)
    k_n = grid.present.shape
    cls = np.full(k_n, np.nan)
    for j, tank in enumerate(grid.tank_ids):
        r = test_runs[tank].dropna(subset=["pressure_kpa", "temperature_c"])
        cls[r["t"].to_numpy(np.int64), j] = r["cls"].to_numpy()
    labelled = grid.present & np.isfinite(cls)
    truth = labelled & (cls != 0)
    normal = labelled & (cls == 0)
    # Calibration: the first half of each run's normal period (before the onset).
    calibration = np.zeros(k_n, bool)
    for j in range(k_n[1]):
        idx = np.flatnonzero(normal[:, j])
        calibration[idx[: idx.size // 2], j] = True
    scorer = AnomalyScorer(k_n[1], departure_alpha=args.departure_alpha, stuck_warmup=300)
    res, skill = score_grid(art_dir, grid, 0, scorer)
    our_scores = res.scores.astype(np.float64)
    iso_scores = iforest_scores(grid, calibration, args.window)
    ours = calibrated_flags(our_scores, grid.present, calibration, args.quantile, args.margin)
    iso = calibrated_flags(iso_scores, grid.present, calibration, args.quantile, args.margin)
    valid = labelled & ~calibration
    SWEEP.extend(
        sweep_rows(
            "3W unseen wells",
            {"ours": our_scores, "iforest": iso_scores},
            grid,
            calibration,
            truth,
            valid,
        )
    )
    results = {
        "ours (LSTM residual + stuck + drift + departure)": point_event_scores(ours, truth, valid),
        f"isolation forest ({args.window} s windows)": point_event_scores(iso, truth, valid),
    }
    n_test = len(test_runs)
    wells = sorted({k.split("_")[0] for k in test_runs})
    print(
        f"3W test: {n_test} runs of {', '.join(wells)}; clipped forecasts {int(res.clips.sum())}",
        file=sys.stderr,
    )
    fc_rows = forecast_rows("3W training-wells holdout", train_skill)
    fc_rows += forecast_rows("3W unseen wells", skill)
    return fc_rows, anomaly_rows("3W unseen wells", results)


def run_sim(args: argparse.Namespace) -> tuple[list[Any], list[Any]]:
    from models.evaluate import EvalConfig, _scored, read_labels

    art_dir = args.sim_model or REPO / "models" / "artifacts" / "default"
    art = load_artifact(art_dir)
    data = REPO / "data" / "history.csv.gz"
    from models.dataprep import load_readings

    grid = build_grid(load_readings([data]), art.tick_interval_s, art.max_gap_ticks, art.features)
    scored, _ = _scored(art, grid, EvalConfig(model=art_dir, data=(data,), out=art_dir))
    holdout = int(np.argmax(scored.any(axis=1))) if scored.any() else grid.n_ticks
    n = grid.present.shape[1]
    res, skill = score_grid(art_dir, grid, holdout, AnomalyScorer(n))
    labels = read_labels(REPO / "data" / "labels.csv")
    times = grid.tick_times()
    truth = np.zeros(grid.present.shape, bool)
    rows = {t: i for i, t in enumerate(grid.tank_ids)}
    for tank, a, b in zip(labels["tank_id"], labels["start_s"], labels["end_s"], strict=True):
        truth[(times >= a) & (times <= b), rows[tank]] = True
    valid = grid.present.copy()
    valid[:holdout] = False
    calibration = grid.present & ~truth
    calibration[holdout:] = False
    iso_scores = iforest_scores(grid, calibration, args.window)
    iso = calibrated_flags(iso_scores, grid.present, calibration, args.quantile, args.margin)
    results = {
        "ours (default scorer, fleet threshold)": point_event_scores(
            res.flags, truth, valid, grid.interval_s
        ),
        f"isolation forest ({args.window}-tick windows)": point_event_scores(
            iso, truth, valid, grid.interval_s
        ),
    }
    return forecast_rows("simulator holdout", skill), anomaly_rows("simulator holdout", results)


def parser() -> argparse.ArgumentParser:
    """The options (and their defaults, which bench/horizon_stride.py trains with too)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--3w", dest="w3", type=Path, help="the 3W folder (../shared/data/3w)")
    ap.add_argument("--sim", action="store_true", help="also the bundled simulator history")
    ap.add_argument(
        "--sim-model", type=Path, default=None, help="artifact for --sim (default: committed)"
    )
    ap.add_argument("--train-wells", default="WELL-00011,WELL-00012")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--units", type=int, default=24)
    ap.add_argument("--quantile", type=float, default=0.999)
    ap.add_argument("--margin", type=float, default=1.0)
    # Per-tick EWMA weights of the row frame: 3W ticks are 1 s and its normal runs
    # ~10 min to 2 h, so the default 1-minute-tick memory (~33 h) would never move.
    ap.add_argument("--level-alpha", type=float, default=0.005)
    ap.add_argument("--scale-alpha", type=float, default=0.005)
    ap.add_argument("--window", type=int, default=60)
    ap.add_argument("--departure-alpha", type=float, default=0.002)
    return ap


def main() -> int:
    args = parser().parse_args()
    fc_rows: list[Any] = []
    an_rows: list[Any] = []
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tankwatch-quality-") as tmp:
        if args.w3:
            a, b = run_3w(args.w3, Path(tmp), args)
            fc_rows += a
            an_rows += b
        if args.sim:
            a, b = run_sim(args)
            fc_rows += a
            an_rows += b
    print("RMSE / persistence RMSE")
    print(table(FORECAST_HEAD, fc_rows))
    print()
    print("Anomaly detection, point level (abnormal = transient or fault)")
    print(table(ANOMALY_HEAD, an_rows))
    if SWEEP:
        print()
        print("Calibration sweep (per-run threshold = margin x quantile of calibration scores)")
        head = ["data", "quantile", "margin", "ours F1", "ours FAR", "iforest F1", "iforest FAR"]
        print(table(head, SWEEP))
    print(f"\n({time.monotonic() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
