"""``tankwatch evaluate``: stream a history through an engine as the pipeline would.

Every tick of the data is fed in order: rows reset at boundaries (first reading,
``event``, gap > ``max_gap_ticks``), missing readings masked, one ``step`` per tick
(the grid is sparse: ticks of long fleet-wide gaps are skipped, which changes no
state; :mod:`models.dataprep`). On the scored ticks -- the model's training holdout
when the data is its training data, ``holdout_fraction`` when given, else all of
it -- the 30-tick forecast of every reporting tank is scored against the
actual readings at t+h — beside the persistence baseline (the reading at t) — for
h = 1..30 (``h = 1`` is the next-step forecast the pipeline holds). A target that is
missing, or lies after a boundary of its tank, is not scored (neither model nor
baseline could know about a refill).

Anomalies: the next-step residual at t (when the tank's previous reading was at t-1),
in scaled units, and the scaled readings (``actual``) feed
:class:`models.anomaly.AnomalyScorer` exactly as the pipeline does; flags are compared
with the simulator's labels (``tank_id,start,end,kind``) over the whole stream, the
tuning part (before the holdout) and the holdout, and the recorded residuals are
replayed through the :data:`TRADEOFF` settings for the report's trade-off table.

Outputs in ``out``: ``evaluation.md``, ``evaluation.json``, ``plots/*.png`` and the
per-tick table ``ticks.csv.gz`` (:mod:`models.ticks_output`); when ``out`` is the
artifact directory, the summary also goes to metadata.json ``evaluation``.

Before streaming, the data is checked against the model (:mod:`models.data_checks`):
a different pressure reference is refused, a different cadence or readings outside
the trained value range are warned about.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from models.anomaly import AnomalyScorer
from models.artifact import (
    Artifact,
    load_artifact,
    load_forecaster,
    update_metadata,
)
from models.baselines import HoltBaseline
from models.bounds import Bounds
from models.data_checks import (
    artifact_reference,
    cadence_warning,
    check_reference,
    outside_range,
    range_bounds,
)
from models.dataprep import TickGrid, build_grid, infer_interval, load_csv
from models.engines.base import Forecaster
from models.evaluate_report import write_plots, write_report
from models.fingerprint import data_fingerprint
from models.packing import pack_rows
from models.serving import SOURCES, choose, codes_of, serve
from models.splits import holdout_from_metadata
from models.stream_result import StreamResult
from models.ticks_output import check_format, tick_frame, write_ticks
from tankwatch.errors import ConfigError, CsvError

log = logging.getLogger(__name__)

__all__ = ["HORIZONS", "EvalConfig", "evaluate", "score_anomalies", "stream"]

#: Horizons (ticks) in the report tables; errors are kept for 1..max(HORIZONS).
HORIZONS = (1, 5, 15, 30)
#: Ticks after a label's end during which a flag still counts as detecting it.
LABEL_GRACE_TICKS = 30
#: Scorer settings replayed for the report's trade-off table: (name, AnomalyScorer
#: keyword arguments, whether readings are passed as ``actual``). The first is the
#: scorer before the stuck and drift detectors (residuals only, threshold 4).
TRADEOFF: tuple[tuple[str, dict[str, Any], bool], ...] = (
    (
        "residual only, threshold 4 (previous scorer)",
        {"threshold": 4.0, "drift_limit": math.inf},
        False,
    ),
    ("default", {}, True),
    ("default without drift CUSUM", {"drift_limit": math.inf}, True),
    ("threshold 5, 3 consecutive (previous default)", {"threshold": 5.0, "consecutive": 3}, True),
    ("threshold 6, 3 consecutive", {"threshold": 6.0, "consecutive": 3}, True),
    ("threshold 7", {"threshold": 7.0}, True),
    ("plain (non-robust) residual sigma", {"robust": False}, True),
    ("drift limit 145", {"drift_limit": 145.0}, True),
    ("drift limit 97", {"drift_limit": 97.0}, True),
    ("drift k 0.25, limit 126", {"drift_k": 0.25, "drift_limit": 126.0}, True),
)


@dataclass(frozen=True)
class EvalConfig:
    model: Path
    data: tuple[Path, ...]
    out: Path
    labels: Path | None = None
    engine: str = "numpy"
    #: Score only the last fraction of the grid; None = the training holdout on the
    #: model's own data, else all of it.
    holdout_fraction: float | None = None
    plot_tanks: int = 3
    csv_options: Any = None
    progress: bool = True
    #: Share of bad CSV rows that stops the evaluation (None = no limit).
    drop_limit: float | None = 0.03
    #: Per-tick table: ``csv`` (ticks.csv.gz), ``parquet`` or ``none``.
    ticks_format: str = "csv"


def stream(
    forecaster: Forecaster,
    residual_scale: NDArray[np.floating[Any]],
    grid: TickGrid,
    holdout_start: int | NDArray[np.bool_],
    max_horizon: int = 30,
    progress: bool = False,
    bounds: Bounds | None = None,
    codes: NDArray[np.intp] | None = None,
    scorer: AnomalyScorer | None = None,
    report_horizons: Sequence[int] = HORIZONS,
) -> StreamResult:
    """Feed every tick of ``grid`` through ``forecaster`` (fresh, ``grid`` rows) as the
    pipeline would; score forecasts made at rows >= holdout_start (an int), or at the
    (row, tank) pairs where a (K, N) bool mask is True.

    ``residual_scale`` (F,): residuals are divided by it before anomaly scoring (the
    scaler's std, i.e. scaled units). Targets are found by tick number (``grid`` may
    be sparse): tick k + h is the row with that tick number, if the grid has it.
    ``bounds``: LSTM forecasts are clipped as the pipeline clips them
    (:mod:`models.bounds`). ``codes``: the artifact's skill gate; the anomaly residual
    is taken against the *served* next-step forecast, as in the pipeline (None: the
    LSTM's). The Holt baseline runs beside and is scored too.
    """
    n_ticks, n, nf = grid.values.shape
    if forecaster.n_rows != n:
        raise ValueError(f"forecaster has {forecaster.n_rows} rows, grid has {n} tanks")
    if isinstance(holdout_start, np.ndarray):
        scored = holdout_start
    else:
        scored = np.zeros((n_ticks, n), bool)
        scored[holdout_start:] = True
    # Each tank through its own readings (models.packing): the same per-row results
    # in (longest tank's readings) steps instead of (ticks with any reading) steps.
    packed = pack_rows(grid.present, grid.ticks())
    steps = packed.src.shape[0]
    pv = packed.gather(grid.values, np.nan)
    pp = packed.valid
    pb = packed.gather(grid.boundary, False)
    pt = packed.tick
    psc = packed.gather(scored, False)
    cb = np.cumsum(pb, axis=0)  # (P, N) segment number of each reading
    report = np.full(max_horizon + 1, -1, np.int64)
    for i, h in enumerate(report_horizons):
        if h <= max_horizon:
            report[h] = i
    scorer = scorer if scorer is not None else AnomalyScorer(n, n_features=nf)
    holt = HoltBaseline(n, nf)
    b_sq = np.zeros((n, max_horizon, nf))
    clips = np.zeros(n, np.int64)
    std = np.asarray(residual_scale, np.float64)
    shape = (n, max_horizon, nf)
    sq, ab, p_sq, p_ab, s_sq = (np.zeros(shape) for _ in range(5))
    count = np.zeros((n, max_horizon))
    next_fc = np.full((steps, n, nf), np.nan, np.float32)
    far_fc = np.full((steps, n, nf), np.nan, np.float32)
    horizon_fc = np.full((steps, n, len(report_horizons), nf), np.nan, np.float32)
    flags = np.zeros((steps, n), bool)
    scores = np.zeros((steps, n), np.float32)
    residuals = np.full((steps, n, nf), np.nan, np.float32)
    held = np.full((n, nf), np.nan, np.float32)  # forecast for the next tick
    last_tick = np.full(n, -(10**9))
    t0 = time.monotonic()
    for k in range(steps):
        mask = pp[k]
        x = pv[k]
        resets = np.flatnonzero(pb[k])
        if resets.size:
            forecaster.reset_rows(resets)
            scorer.reset_rows(resets)
            holt.reset_rows(resets)
        # Residual of the forecast held for this tick (made at tick - 1, same segment).
        has_res = mask & (last_tick == pt[k] - 1) & ~pb[k] & np.isfinite(held).all(1)
        next_fc[k][has_res] = held[has_res]
        resid = np.where(has_res[:, None], (x - held) / std, 0.0)
        residuals[k][has_res] = resid[has_res]
        actual = np.where(mask[:, None], x / std, np.nan)
        s, f = scorer.update(resid, has_res, actual=actual)
        flags[k] = f & mask
        scores[k] = np.where(mask, s, 0.0)
        if not mask.any():
            continue
        lstm_next = forecaster.step(x, mask)
        holt.update(x, mask)
        last_tick[mask] = pt[k][mask]
        stepped = np.flatnonzero(mask)
        if bounds is not None:
            nxt, clipped = bounds.clip(lstm_next[stepped][None], x[stepped])
            lstm_next = lstm_next.copy()
            lstm_next[stepped] = nxt[0]
            clips[stepped] += clipped
        if codes is not None:
            held = held.copy()
            held[stepped] = serve(
                codes[:1],
                lstm_next[stepped][None],
                x[stepped][None],
                holt.or_persistence(holt.forecast(1, stepped), x[stepped], stepped),
            )[0]
        else:
            held = lstm_next
        rows = np.flatnonzero(mask & psc[k])
        depth = min(max_horizon, steps - 1 - k)
        if rows.size == 0 or depth == 0:
            continue
        fc = forecaster.forecast(max_horizon, rows)  # (H, r, F)
        if bounds is not None:
            fc, _ = bounds.clip(fc, x[rows])
        hfc = holt.forecast(max_horizon, rows)  # (H, r, F)
        sfc = None
        if codes is not None:  # what the pipeline serves (ForecastStep._serve)
            pers = np.broadcast_to(x[rows][None], fc.shape)
            sfc = serve(codes, fc, pers, holt.or_persistence(hfc, x[rows], rows))
            if bounds is not None:
                sfc, _ = bounds.clip(sfc, x[rows])
        # Targets: this tank's next readings whose tick is within the horizon, in the
        # same segment (a reading after a refill is not scored).
        ahead = pt[k + 1 : k + 1 + depth][:, rows] - pt[k, rows]  # (D, r) ticks ahead
        ok = (
            (ahead >= 1)
            & (ahead <= max_horizon)
            & pp[k + 1 : k + 1 + depth][:, rows]
            & (cb[k + 1 : k + 1 + depth][:, rows] == cb[k, rows])
        )
        d_i, r_i = np.nonzero(ok)
        if d_i.size == 0:
            continue
        h = ahead[d_i, r_i]
        rr = rows[r_i]
        tp = k + 1 + d_i
        fh = fc[h - 1, r_i]  # (M, F)
        target = pv[tp, rr].astype(np.float64)
        err = fh - target
        perr = x[rr] - target
        # (row, h) pairs are unique within a step: += on fancy indices is safe.
        b_sq[rr, h - 1] += (hfc[h - 1, r_i] - target) ** 2
        if sfc is not None:
            s_sq[rr, h - 1] += (sfc[h - 1, r_i] - target) ** 2
        sq[rr, h - 1] += err**2
        ab[rr, h - 1] += np.abs(err)
        p_sq[rr, h - 1] += perr**2
        p_ab[rr, h - 1] += np.abs(perr)
        count[rr, h - 1] += 1
        far = h == max_horizon
        far_fc[tp[far], rr[far]] = fh[far]
        slot = report[h]
        sel = slot >= 0
        horizon_fc[tp[sel], rr[sel], slot[sel]] = fh[sel]
        if progress and k % 2000 == 0:
            print(f"evaluate: step {k}/{steps}", file=sys.stderr, flush=True)
    return StreamResult(
        sq,
        ab,
        p_sq,
        p_ab,
        count,
        packed.scatter(next_fc, n_ticks, np.nan),
        packed.scatter(far_fc, n_ticks, np.nan),
        packed.scatter(flags, n_ticks, False),
        packed.scatter(scores, n_ticks, 0.0),
        packed.scatter(residuals, n_ticks, np.nan),
        time.monotonic() - t0,
        b_sq=b_sq,
        clips=clips,
        horizon_fc=packed.scatter(horizon_fc, n_ticks, np.nan),
        s_sq=s_sq if codes is not None else None,
    )


def replay_scorer(
    scorer: AnomalyScorer,
    grid: TickGrid,
    residuals: NDArray[np.floating[Any]],
    residual_scale: NDArray[np.floating[Any]],
    with_actual: bool = True,
) -> NDArray[np.bool_]:
    """Flags (K, N) of a fresh ``scorer`` fed the residuals of a :func:`stream` run.

    The same calls as in :func:`stream` (resets at boundaries, a residual where one
    was recorded, the scaled readings as ``actual``), without the forecaster, so
    other settings cost one scorer pass (~1 s per 20k ticks). ``with_actual=False``
    feeds residuals only (the stuck detector then never runs).
    """
    std = np.asarray(residual_scale, np.float64)
    n_ticks = grid.n_ticks
    # Per tank through its own readings, as in stream() (models.packing).
    packed = pack_rows(grid.present, grid.ticks())
    present = packed.valid
    boundary = packed.gather(grid.boundary, False)
    values = packed.gather(grid.values, np.nan)
    res = packed.gather(np.asarray(residuals), np.nan)
    flags = np.zeros(present.shape, bool)
    for k in range(present.shape[0]):
        resets = np.flatnonzero(boundary[k])
        if resets.size:
            scorer.reset_rows(resets)
        r = res[k]
        has = np.isfinite(r).all(axis=1)
        actual = None
        if with_actual:
            actual = np.where(present[k][:, None], values[k] / std, np.nan)
        _, f = scorer.update(np.where(has[:, None], r, 0.0), has, actual=actual)
        flags[k] = f & present[k]
    return packed.scatter(flags, n_ticks, False)


def _metrics(
    sq: NDArray[np.float64],
    ab: NDArray[np.float64],
    p_sq: NDArray[np.float64],
    p_ab: NDArray[np.float64],
    count: NDArray[np.float64],
) -> dict[str, NDArray[np.float64]]:
    """RMSE/MAE (…, H, F) from sums; count broadcast over features. NaN where no data."""
    c = np.where(count > 0, count, np.nan)[..., None]
    return {
        "rmse": np.sqrt(sq / c),
        "mae": ab / c,
        "persistence_rmse": np.sqrt(p_sq / c),
        "persistence_mae": p_ab / c,
    }


def describe_scorer(scorer: AnomalyScorer) -> str:
    """One line naming the scorer's settings, for the report."""
    return (
        f"AnomalyScorer defaults: residual EWMA alpha {scorer.alpha:g}, warm-up "
        f"{scorer.warmup}; stuck channel after >= {scorer.stuck_min} repeats; drift CUSUM "
        f"k {scorer.drift_k:g}, clip {scorer.drift_clip:g}, limit {scorer.drift_limit:g}; "
        f"flag when the score > {scorer.threshold:g} for {scorer.consecutive} updates"
    )


def read_labels(path: Path) -> pd.DataFrame:
    """Labels CSV (tank_id,start,end,kind; RFC 3339) with start_s/end_s epoch seconds."""
    try:
        labels = pd.read_csv(path, dtype=str)
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise CsvError(f"{path}: cannot read labels ({exc})") from None
    missing = {"tank_id", "start", "end", "kind"} - set(labels.columns)
    if missing:
        raise CsvError(f"{path}: labels lack column(s) {sorted(missing)}")
    epoch = pd.Timestamp(0, tz="UTC")
    for col in ("start", "end"):
        dt = pd.to_datetime(labels[col], format="ISO8601", utc=True, errors="coerce")
        if dt.isna().any():
            raise CsvError(f"{path}: unparseable time in column {col!r}")
        labels[f"{col}_s"] = (dt - epoch) / pd.Timedelta(seconds=1)
    return labels


def score_anomalies(
    grid: TickGrid,
    flags: NDArray[np.bool_],
    labels: pd.DataFrame,
    start: int = 0,
    stop: int | None = None,
) -> dict[str, Any]:
    """Precision/recall of flags (K, N) against labels over ticks [start, stop).

    * ``event_recall``: labels (overlapping the range) with a flag in [start, end + grace];
    * ``episode_precision``: flag episodes (runs of flagged readings of a tank) that
      overlap a label window of that tank, over all episodes;
    * ``tick_precision`` / ``tick_recall``: flagged readings inside label windows over
      flagged readings / over readings inside label windows;
    * ``false_episodes`` (episodes on no label) and ``false_episodes_per_tank_week``:
      over the tank-weeks of readings in the range (readings x interval / 7 days).

    A label counts for the range if its window (with grace) overlaps it; a label cut
    by ``stop`` counts, judged on its part inside the range.
    """
    n_ticks, n = flags.shape
    stop = n_ticks if stop is None else stop
    times = grid.tick_times()
    in_label = np.zeros((n_ticks, n), bool)
    rows = {t: i for i, t in enumerate(grid.tank_ids)}
    events = []
    grace = LABEL_GRACE_TICKS * grid.interval_s
    starts = labels["start_s"].to_numpy(np.float64)
    ends = labels["end_s"].to_numpy(np.float64)
    for tank, t_start, t_end in zip(labels["tank_id"].astype(str), starts, ends, strict=True):
        j = rows.get(tank)
        if j is None:
            continue
        window = (times >= t_start) & (times <= t_end + grace)
        window[:start] = False
        window[stop:] = False
        if not window.any():
            continue
        in_label[window, j] = True
        events.append(bool(flags[window, j].any()))
    f = flags.copy()
    f[:start] = False
    f[stop:] = False
    present = grid.present.copy()
    present[:start] = False
    present[stop:] = False
    episodes = hits = 0
    for j in range(n):
        k_flag = np.flatnonzero(f[:, j])
        if k_flag.size == 0:
            continue
        # A new episode starts where the previous flagged reading was not the previous
        # reading of this tank.
        k_read = np.flatnonzero(present[:, j])
        pos = np.searchsorted(k_read, k_flag)
        new = np.ones(k_flag.size, bool)
        new[1:] = pos[1:] != pos[:-1] + 1
        ep_id = np.cumsum(new) - 1
        episodes += int(new.sum())
        hit_ep = np.unique(ep_id[in_label[k_flag, j]])
        hits += int(hit_ep.size)
    flagged = int(f.sum())
    in_and_flag = int((f & in_label).sum())
    label_readings = int((in_label & present).sum())
    tank_weeks = float(present.sum()) * grid.interval_s / (7 * 86400.0)
    return {
        "labels": len(events),
        "labels_detected": int(sum(events)),
        "event_recall": (sum(events) / len(events)) if events else None,
        "episodes": episodes,
        "episodes_on_label": hits,
        "episode_precision": (hits / episodes) if episodes else None,
        "tick_precision": (in_and_flag / flagged) if flagged else None,
        "tick_recall": (in_and_flag / label_readings) if label_readings else None,
        "false_episodes": episodes - hits,
        "tank_weeks": tank_weeks,
        "false_episodes_per_tank_week": ((episodes - hits) / tank_weeks) if tank_weeks else None,
        "grace_ticks": LABEL_GRACE_TICKS,
    }


#: Isolation-forest window (ticks) and its calibration quantile on normal data.
IFOREST_WINDOW = 60
IFOREST_QUANTILE = 0.999


def label_mask(grid: TickGrid, labels: pd.DataFrame) -> NDArray[np.bool_]:
    """(K, N) True inside a label window [start, end] of that tank."""
    times = grid.tick_times()
    truth = np.zeros(grid.present.shape, bool)
    rows = {t: i for i, t in enumerate(grid.tank_ids)}
    starts = labels["start_s"].to_numpy(np.float64)
    ends = labels["end_s"].to_numpy(np.float64)
    for tank, a, b in zip(labels["tank_id"].astype(str), starts, ends, strict=True):
        if tank in rows:
            truth[(times >= a) & (times <= b), rows[tank]] = True
    return truth


def point_level(
    grid: TickGrid,
    flags: NDArray[np.bool_],
    labels: pd.DataFrame,
    scored: int | NDArray[np.bool_],
) -> dict[str, Any]:
    """Point-level and event scores on the scored part (models.detection_metrics) of
    our flags and of an isolation forest on rolling windows computed here, fit per tank
    on the rest outside labels, threshold at the IFOREST_QUANTILE of its scores there,
    3 consecutive exceedances. ``scored``: the holdout's first row (an int) or a (K, N)
    mask (a per-tank holdout)."""
    from models.detection_baseline import calibrated_flags, isolation_forest_scores
    from models.detection_metrics import point_event_scores

    truth = label_mask(grid, labels)
    if isinstance(scored, np.ndarray):
        part = scored
    else:
        part = np.zeros(grid.present.shape, bool)
        part[scored:] = True
    valid = grid.present & part
    calibration = grid.present & ~truth & ~part
    scores = np.full(grid.present.shape, np.nan)
    for j in range(grid.present.shape[1]):
        vals = np.where(grid.present[:, j, None], grid.values[:, j], np.nan)
        scores[:, j] = isolation_forest_scores(vals, calibration[:, j], IFOREST_WINDOW)
    iso = calibrated_flags(scores, grid.present, calibration, IFOREST_QUANTILE)
    return {
        "range": "holdout",
        "ours": point_event_scores(flags, truth, valid, grid.interval_s),
        "isolation_forest": point_event_scores(iso, truth, valid, grid.interval_s),
        "isolation_forest_setup": (
            f"mean/std/min/max over trailing {IFOREST_WINDOW}-tick windows, 100 trees, fit "
            f"per tank on the tuning part outside labels, threshold = its "
            f"{IFOREST_QUANTILE} quantile there, 3 consecutive"
        ),
    }


def _default_labels(config: EvalConfig) -> Path | None:
    if config.labels is not None:
        if not config.labels.is_file():
            raise ConfigError(f"labels file {config.labels} does not exist")
        return config.labels
    guess = config.data[0].parent / "labels.csv"
    return guess if guess.is_file() else None


def _tradeoff(
    grid: TickGrid,
    result: StreamResult,
    artifact: Artifact,
    labels: pd.DataFrame,
    scored: NDArray[np.bool_],
) -> list[dict[str, Any]]:
    """Recall and false episodes of each :data:`TRADEOFF` setting (one scorer pass each),
    over the whole stream, the part before the scored part and the scored part."""
    rows = []
    for name, kwargs, with_actual in TRADEOFF:
        scorer = AnomalyScorer(grid.present.shape[1], n_features=grid.values.shape[2], **kwargs)
        flags = replay_scorer(scorer, grid, result.residuals, artifact.scaler.std, with_actual)
        row: dict[str, Any] = {"setting": name}
        for key, m in _anomaly_parts(grid, flags, labels, scored).items():
            row[key] = {
                k: m[k]
                for k in (
                    "labels",
                    "labels_detected",
                    "false_episodes",
                    "false_episodes_per_tank_week",
                )
            }
        rows.append(row)
    return rows


def _scored(artifact: Artifact, grid: TickGrid, config: EvalConfig) -> tuple[Any, str]:
    """(K, N) mask of the ticks to score, and the rule that chose it.

    The model's own data (same fingerprint): its training holdout. Otherwise: the last
    ``holdout_fraction`` of the grid when given, else all of it -- nothing of other
    data was used for training, so there is nothing to hold out.
    """
    training = artifact.metadata.get("training", {})
    if (
        config.holdout_fraction is None
        and isinstance(training, dict)
        and training.get("data_fingerprint_sha256") == data_fingerprint(config.data)
    ):
        mask = holdout_from_metadata(training, grid)
        if mask is not None and mask.any():
            return mask, "the training holdout (same data fingerprint)"
    mask = np.zeros(grid.present.shape, bool)
    if config.holdout_fraction is None:
        mask[:] = True
        return mask, "all of the data"
    if not 0 < config.holdout_fraction < 1:
        raise ConfigError("--holdout-fraction must be in (0, 1)")
    start = round(grid.n_ticks * (1 - config.holdout_fraction))
    mask[start:] = True
    return mask, f"the last {config.holdout_fraction:.0%} of the data"


def _anomaly_parts(
    grid: TickGrid, flags: NDArray[np.bool_], labels: pd.DataFrame, scored: NDArray[np.bool_]
) -> dict[str, Any]:
    """Anomaly scores over the whole stream, the part before the scored part and the
    scored part (a per-tank holdout: each part restricted to its readings)."""
    whole = score_anomalies(grid, flags, labels, 0)
    first: NDArray[np.bool_] = np.asarray(scored.any(axis=1), dtype=bool)
    start = int(np.argmax(first)) if first.any() else grid.n_ticks
    if (scored == first[:, None]).all():  # one start for the fleet: a row range
        return {
            "whole_stream": whole,
            "tuning_part": score_anomalies(grid, flags, labels, 0, start),
            "holdout": score_anomalies(grid, flags, labels, start),
        }
    return {
        "whole_stream": whole,
        "tuning_part": score_anomalies(grid.restrict(~scored), flags & ~scored, labels),
        "holdout": score_anomalies(grid.restrict(scored), flags & scored, labels),
    }


def _ratio(a: float, b: float) -> float:
    """a / b, NaN when b is 0 or undefined (a flat series: persistence is exact)."""
    return float(a) / float(b) if np.isfinite(b) and b > 0 else float("nan")


def skill_summary(
    result: StreamResult, features: Sequence[str], codes: NDArray[np.intp] | None
) -> dict[str, Any]:
    """Holdout RMSE per feature and horizon of the LSTM, persistence, Holt and the
    served mix (``codes``: the artifact's gate; None: the gate chosen here), plus the
    gate this holdout would choose (``serving``, what training stores).

    With ``codes`` and a stream run with them, "served" is measured on the forecasts
    the pipeline would serve (gate, per-tank Holt check, bounds: ``s_sq``); otherwise
    it is the chosen source's RMSE."""
    count = np.where(result.count.sum(0) > 0, result.count.sum(0), np.nan)[..., None]
    assert result.b_sq is not None
    rmse = np.stack(
        [np.sqrt(a.sum(0) / count) for a in (result.sq, result.p_sq, result.b_sq)]
    )  # (3, H, F)
    chosen = choose(rmse)
    used = chosen if codes is None else codes[: rmse.shape[1]]
    served = np.take_along_axis(rmse, used[None], axis=0)[0]
    if codes is not None and result.s_sq is not None:
        served = np.sqrt(result.s_sq.sum(0) / count)
    skill: dict[str, Any] = {}
    for fi, name in enumerate(features):
        skill[name] = {}
        for h in range(1, rmse.shape[1] + 1):
            p = rmse[1, h - 1, fi]
            skill[name][str(h)] = {
                "lstm": float(rmse[0, h - 1, fi]),
                "persistence": float(p),
                "holt": float(rmse[2, h - 1, fi]),
                "served": float(served[h - 1, fi]),
                "source": SOURCES[int(used[h - 1, fi])],
                "lstm_ratio": _ratio(rmse[0, h - 1, fi], p),
                "holt_ratio": _ratio(rmse[2, h - 1, fi], p),
                "served_ratio": _ratio(served[h - 1, fi], p),
            }
    return {
        "skill": skill,
        "serving": {
            "sources": {
                name: [SOURCES[int(c)] for c in chosen[:, fi]] for fi, name in enumerate(features)
            },
            "rule": "smallest holdout RMSE per feature and horizon, if at least 10 % below "
            "persistence's; else persistence",
        },
    }


def _table(
    m: dict[str, NDArray[np.float64]], features: Sequence[str], hz: Sequence[int]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for fi, name in enumerate(features):
        out[name] = {}
        for h in hz:
            row = {key: float(val[h - 1, fi]) for key, val in m.items()}
            p = row["persistence_rmse"]
            row["rmse_ratio"] = row["rmse"] / p if p > 0 else float("nan")
            out[name][str(h)] = row
    return out


def _load(config: EvalConfig, artifact: Artifact) -> tuple[Any, list[str]]:
    """The CSV (checked against the model) and the warnings to print."""
    from producers.csv_source import CsvOptions

    options = config.csv_options or CsvOptions(
        pressure_reference=artifact.metadata.get("pressure_reference", "absolute")
    )
    check_reference(artifact.metadata, options.pressure_reference)
    loaded = load_csv(list(config.data), options, config.drop_limit)
    warnings: list[str] = []
    frame = loaded.frame
    try:
        cadence = cadence_warning(infer_interval(frame), artifact.tick_interval_s)
    except CsvError:  # a single reading per tank: no spacing to judge
        cadence = None
    if cadence:
        warnings.append(cadence)
    outside = outside_range(
        frame[list(artifact.features)].to_numpy(),
        range_bounds(artifact.metadata, artifact.features),
    )
    if outside.size and outside.mean() > 0.01:
        warnings.append(
            f"{int(outside.sum()):,} of {outside.size:,} readings ({outside.mean():.1%}) lie "
            "outside the value range the model was trained on"
        )
    return loaded, warnings


def evaluate(config: EvalConfig) -> dict[str, Any]:
    """Run the evaluation; write report, plots, JSON, per-tick table; returns the summary."""
    artifact = load_artifact(config.model)
    for path in config.data:
        if not path.is_file():
            raise ConfigError(f"data file {path} does not exist")
    check_format(config.ticks_format)
    loaded, warnings = _load(config, artifact)
    for line in warnings:
        print(f"tankwatch: warning: {line}", file=sys.stderr, flush=True)
    frame = loaded.frame
    grid = build_grid(frame, artifact.tick_interval_s, artifact.max_gap_ticks, artifact.features)
    scored, holdout_rule = _scored(artifact, grid, config)
    holdout_start = int(np.argmax(scored.any(axis=1))) if scored.any() else grid.n_ticks
    max_h = max(HORIZONS)
    forecaster = load_forecaster(artifact.path, engine=config.engine, n_rows=len(grid.tank_ids))
    codes = codes_of(artifact.serving) if artifact.serving is not None else None
    result = stream(
        forecaster,
        artifact.scaler.std,
        grid,
        scored,
        max_h,
        config.progress,
        bounds=artifact.bounds,
        codes=codes,
    )

    fleet = _metrics(
        result.sq.sum(0),
        result.ab.sum(0),
        result.p_sq.sum(0),
        result.p_ab.sum(0),
        result.count.sum(0),
    )
    per_tank = _metrics(result.sq, result.ab, result.p_sq, result.p_ab, result.count)
    features = artifact.features
    times = grid.tick_times()
    summary: dict[str, Any] = {
        "model_version": artifact.model_version,
        "engine": config.engine,
        "data_files": [p.name for p in config.data],
        "input": {
            "rows_read": loaded.rows_read,
            "rows_used": int(grid.present.sum()),
            "rows_dropped": loaded.bad_rows,
            "dropped_by_reason": dict(loaded.dropped),
            "examples": list(loaded.errors[:3]),
            "merged_into_earlier_reading_of_tick": grid.merged,
            "tanks": list(grid.tank_ids),
            "pressure_reference": artifact_reference(artifact.metadata),
            "warnings": warnings,
        },
        "holdout": {
            "rule": holdout_rule,
            "start": pd.Timestamp(
                times[min(holdout_start, grid.n_ticks - 1)], unit="s", tz="UTC"
            ).isoformat(),
            "end": pd.Timestamp(times[-1] + grid.interval_s, unit="s", tz="UTC").isoformat(),
            "ticks": int(scored.any(axis=1).sum()),
            "readings": int((scored & grid.present).sum()),
            "tanks": len(grid.tank_ids),
        },
        "horizons": list(HORIZONS),
        "fleet": _table(fleet, features, HORIZONS),
        "fleet_rmse_ratio_by_horizon": {
            name: [
                _ratio(fleet["rmse"][h, fi], fleet["persistence_rmse"][h, fi]) for h in range(max_h)
            ]
            for fi, name in enumerate(features)
        },
        "per_tank": {
            tank: {
                name: {
                    str(h): {
                        "rmse": float(per_tank["rmse"][j, h - 1, fi]),
                        "persistence_rmse": float(per_tank["persistence_rmse"][j, h - 1, fi]),
                    }
                    for h in HORIZONS
                }
                for fi, name in enumerate(features)
            }
            for j, tank in enumerate(grid.tank_ids)
        },
    }
    summary.update(skill_summary(result, features, codes))
    summary["forecasts_clipped"] = int(result.clips.sum()) if result.clips is not None else 0
    labels_path = _default_labels(config)
    labels = None
    if labels_path is not None:
        labels = read_labels(labels_path)
        unknown = sorted(set(labels["tank_id"].astype(str)) - set(grid.tank_ids))
        if unknown:
            line = (
                f"{len(unknown)} labelled tank(s) are not in the data (e.g. {unknown[0]!r}); "
                f"tank ids in the data look like {grid.tank_ids[0]!r}"
            )
            warnings.append(line)
            print(f"tankwatch: warning: {line}", file=sys.stderr, flush=True)
        summary["anomaly"] = {
            "labels_file": labels_path.name,
            "scorer": describe_scorer(AnomalyScorer()),
            **_anomaly_parts(grid, result.flags, labels, scored),
            "tradeoff": _tradeoff(grid, result, artifact, labels, scored),
            "point_level": point_level(grid, result.flags, labels, scored),
        }
    out = config.out
    out.mkdir(parents=True, exist_ok=True)
    ticks_path = write_ticks(
        tick_frame(
            grid,
            features,
            HORIZONS,
            result.next_fc,
            result.horizon_fc if result.horizon_fc is not None else result.far_fc[:, :, None],
            result.scores,
            result.flags,
            scored,
            labels,
        ),
        out,
        config.ticks_format,
    )
    summary["ticks_file"] = str(ticks_path.relative_to(out)) if ticks_path else None
    plots = write_plots(out / "plots", grid, result, holdout_start, summary, config.plot_tanks)
    summary["plots"] = [str(p.relative_to(out)) for p in plots]
    (out / "evaluation.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    write_report(out / "evaluation.md", summary)
    if out.resolve() == artifact.path.resolve():
        compact = {k: v for k, v in summary.items() if k != "per_tank"}
        # The skill gate is set on this holdout (the artifact's own), see models.serving.
        update_metadata(artifact.path, evaluation=compact, serving=summary["serving"])
    if config.progress:
        print(
            f"wrote {out / 'evaluation.md'} (streamed {int(grid.present.sum())} readings of "
            f"{len(grid.tank_ids)} tanks in {result.seconds:.1f} s)",
            file=sys.stderr,
        )
    return summary
