"""From readings to training arrays: tick grid, segments, time split, stateful batches.

The rules mirror the streaming pipeline so the model is trained on what it will see:

* **Tick** ``k = floor(ts / interval_s)``; a tank's first reading in a tick wins.
* **Missing tick inside a segment** = a *masked* step: the LSTM state is unchanged
  (Keras mask), and no loss is taken on it or on the step that should predict it.
  This is exactly the pipeline's "missing reading = masked row".
* **Boundary** (state reset before the reading is applied): the tank's first reading,
  a reading with an ``event``, or a gap ``> max_gap_ticks`` since its previous reading.
* **Sparse in time**: the grid holds only ticks with a reading, plus the empty ticks
  inside fleet gaps of at most ``max_gap_ticks`` (masked steps inside a segment). A
  longer gap with no reading at all resets every tank anyway, so dropping its ticks
  changes nothing but the cost: memory and time follow the readings, not the calendar
  (a month of 1-second ticks with a few runs is a few thousand rows, not 2.6 million).
  ``tick_index`` maps rows to tick numbers (``k0 + tick_index[i]``).
* **Split** (:mod:`models.splits`): by time (train | validation | holdout ranges of
  the grid) or per tank; the scaler is fit on train. The first reading of a tank
  inside a part is a boundary (state starts from zero).

Stateful batches (:func:`make_batches`): row j of every batch is tank j (one *lane*
per tank). Each segment is padded with masked steps to a multiple of the window
length T, so every segment starts at a window start, where that row alone is reset
(``resets[w, j]``); all lanes are padded to the same number of windows. Sample ``w*B +
j`` is window w of lane j, so with ``batch_size = B`` and ``shuffle=False`` batch w is
window w of every tank, and the sample count is a multiple of B (keras issue 21183).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from models.artifact import FEATURES
from models.scaler import Scaler
from tankwatch.errors import CsvError

__all__ = [
    "Batches",
    "TickGrid",
    "build_grid",
    "infer_interval",
    "load_csv",
    "load_readings",
    "make_batches",
    "split_ticks",
]


@dataclass(frozen=True)
class TickGrid:
    """Readings on an event-time grid. K ticks x N tanks x F features.

    ``values`` (K, N, F) float32 physical units, NaN where no reading;
    ``present`` (K, N) bool; ``boundary`` (K, N) bool, True where the state is reset
    before applying that reading; ``k0`` the tick number of row 0; ``tick_index`` (K,)
    int64 tick number of each row minus ``k0`` (increasing; None = ``arange(K)``, a
    dense grid), so row i starts at ``(k0 + tick_index[i]) * interval_s``;
    ``tank_ids`` in row order (sorted); ``merged``: readings dropped because their
    tank already had one in the same tick (the first wins).
    """

    tank_ids: tuple[str, ...]
    k0: int
    interval_s: float
    max_gap_ticks: int
    values: NDArray[np.float32]
    present: NDArray[np.bool_]
    boundary: NDArray[np.bool_]
    tick_index: NDArray[np.int64] | None = None
    merged: int = 0

    @property
    def n_ticks(self) -> int:
        return int(self.values.shape[0])

    def ticks(self) -> NDArray[np.int64]:
        """(K,) tick number of each row (``floor(ts / interval_s)``)."""
        idx = np.arange(self.n_ticks) if self.tick_index is None else self.tick_index
        return (self.k0 + idx).astype(np.int64)

    def tick_times(self) -> NDArray[np.float64]:
        """(K,) start time of each tick, epoch seconds."""
        times: NDArray[np.float64] = self.ticks().astype(np.float64) * self.interval_s
        return times

    def row_of_tick(self, tick: int) -> int:
        """First row whose tick number is >= ``tick`` (K if none)."""
        return int(np.searchsorted(self.ticks(), tick, side="left"))

    def slice(self, start: int, stop: int) -> TickGrid:
        """Rows [start, stop); each tank's first reading in the slice becomes a boundary."""
        present = self.present[start:stop]
        boundary = self.boundary[start:stop].copy()
        seen = np.cumsum(present, axis=0)
        boundary |= present & (seen == 1)
        idx = self.ticks()[start:stop]
        k0 = int(idx[0]) if idx.size else self.k0 + start
        return TickGrid(
            self.tank_ids,
            k0,
            self.interval_s,
            self.max_gap_ticks,
            self.values[start:stop],
            present,
            boundary,
            idx - k0,
        )

    def restrict(self, part: NDArray[np.bool_]) -> TickGrid:
        """The same rows with only the readings inside ``part`` (K, N) bool.

        A reading whose tank's previous reading lies outside ``part`` becomes a boundary
        (state starts from zero, as at the start of a slice); values outside are NaN.
        """
        present = self.present & part
        n_ticks, n = present.shape
        idx = np.where(self.present, np.arange(n_ticks)[:, None], -1)
        last = np.maximum.accumulate(idx, axis=0)
        prev = np.vstack([np.full((1, n), -1), last[:-1]])  # previous reading's row
        prev_in = np.zeros_like(present)
        has_prev = prev >= 0
        cols = np.broadcast_to(np.arange(n), prev.shape)
        prev_in[has_prev] = part[prev[has_prev], cols[has_prev]]
        boundary = present & (self.boundary | ~prev_in)
        values = np.where(present[..., None], self.values, np.nan).astype(np.float32)
        return TickGrid(
            self.tank_ids,
            self.k0,
            self.interval_s,
            self.max_gap_ticks,
            values,
            present,
            boundary,
            self.tick_index,
        )


def load_readings(paths: Sequence[str | Path], options: object | None = None) -> pd.DataFrame:
    """Readings from CSV files (bundled history format unless ``options`` say otherwise).

    ``options``: a :class:`producers.csv_source.CsvOptions`. Returns a frame with
    ts (epoch s), tank_id, pressure_kpa, temperature_c, event (str or None).
    Bad rows are skipped and counted (:func:`load_csv`); no rows at all is an error.
    """
    frame: pd.DataFrame = load_csv(paths, options).frame
    return frame


def load_csv(
    paths: Sequence[str | Path],
    options: object | None = None,
    drop_limit: float | None = None,
) -> Any:
    """Like :func:`load_readings`, returning the whole
    :class:`producers.csv_source.LoadResult` (counts for the closing summary).

    More than ``drop_limit`` of the rows dropped (None = no limit) is a CsvError.
    """
    from producers.csv_report import check_drops
    from producers.csv_source import CsvOptions, load_frame

    if options is not None and not isinstance(options, CsvOptions):
        raise TypeError("options must be a producers.csv_source.CsvOptions")
    result = load_frame([Path(p) for p in paths], options, strict=False)
    if result.frame.empty:
        detail = (
            f" ({result.bad_rows} bad rows; first: {result.errors[0]})" if result.errors else ""
        )
        raise CsvError(f"no valid readings in {', '.join(str(p) for p in paths)}{detail}")
    if drop_limit is not None:
        check_drops(result, drop_limit)
    return result


#: Tick intervals :func:`infer_interval` snaps to when the data is within 5 % of one.
NICE_INTERVALS_S = (
    0.1, 0.2, 0.25, 0.5, 1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600, 900, 1800, 3600,
)  # fmt: skip


def infer_interval(frame: pd.DataFrame) -> float:
    """The typical spacing of a tank's readings, seconds: the median over all tanks of
    the time between consecutive readings of one tank (gaps between runs are few, so
    they do not move the median), snapped to a round value within 5 %.

    >>> f = pd.DataFrame({"ts": [0.0, 1.0, 2.1, 3.0, 5000.0, 5001.0],
    ...                   "tank_id": ["a", "a", "a", "a", "a", "a"]})
    >>> infer_interval(f)
    1.0
    """
    if frame.empty:
        raise CsvError("no readings to infer a tick interval from")
    order = frame.sort_values(["tank_id", "ts"], kind="stable")
    ts = order["ts"].to_numpy(np.float64)
    tank = order["tank_id"].astype(str).to_numpy()
    d = np.diff(ts)
    same = tank[1:] == tank[:-1]
    d = d[same & (d > 0)]
    if d.size == 0:
        raise CsvError("cannot infer a tick interval: no tank has two readings at different times")
    typical = float(np.median(d))
    for nice in NICE_INTERVALS_S:
        if abs(typical - nice) <= 0.05 * nice:
            return float(nice)
    return float(f"{typical:.3g}")


def _kept_ticks(ticks: NDArray[np.int64], max_gap_ticks: int) -> NDArray[np.int64]:
    """Sorted tick numbers of the sparse grid: every tick with a reading, plus the empty
    ticks of fleet gaps of at most ``max_gap_ticks`` (see the module docstring)."""
    have = np.unique(ticks)
    d = np.diff(have)
    fill = np.flatnonzero((d > 1) & (d <= max_gap_ticks))
    if fill.size == 0:
        return have
    counts = d[fill] - 1
    starts = np.repeat(have[fill] + 1, counts)
    offsets = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    return np.sort(np.concatenate([have, starts + offsets]))


def build_grid(
    frame: pd.DataFrame,
    interval_s: float,
    max_gap_ticks: int,
    features: Sequence[str] = FEATURES,
) -> TickGrid:
    """Bucket readings (ts epoch s, tank_id, features..., event) into a sparse tick
    grid (module docstring: ticks with readings and short fleet gaps only)."""
    if frame.empty:
        raise CsvError("no readings to build a tick grid from")
    abs_ticks = np.floor(frame["ts"].to_numpy(np.float64) / interval_s).astype(np.int64)
    kept = _kept_ticks(abs_ticks, max_gap_ticks)
    ticks = np.searchsorted(kept, abs_ticks).astype(np.int64)  # row of each reading
    tank_ids = tuple(sorted(frame["tank_id"].astype(str).unique()))
    rows = pd.Index(tank_ids).get_indexer(frame["tank_id"].astype(str))
    k0 = 0
    n_ticks = int(kept.size)
    vals = frame[list(features)].to_numpy(np.float32)
    if "event" in frame:
        ev = frame["event"]
        has_event = (ev.notna() & (ev.astype(str).str.strip() != "")).to_numpy(bool)
    else:
        has_event = np.zeros(len(frame), bool)
    # First reading of a tank in a tick wins: keep the first occurrence of (tick, row)
    # in file/time order.
    flat = (ticks - k0) * len(tank_ids) + rows
    _, first = np.unique(flat, return_index=True)
    values = np.full((n_ticks, len(tank_ids), len(features)), np.nan, np.float32)
    present = np.zeros((n_ticks, len(tank_ids)), bool)
    event = np.zeros((n_ticks, len(tank_ids)), bool)
    k_idx, r_idx = ticks[first], rows[first]
    values[k_idx, r_idx] = vals[first]
    present[k_idx, r_idx] = True
    event[k_idx, r_idx] = has_event[first]
    tick_index = kept - kept[0]
    boundary = _boundaries(present, event, max_gap_ticks, tick_index)
    return TickGrid(
        tank_ids,
        int(kept[0]),
        float(interval_s),
        int(max_gap_ticks),
        values,
        present,
        boundary,
        tick_index,
        merged=int(len(frame) - first.size),
    )


def _boundaries(
    present: NDArray[np.bool_],
    event: NDArray[np.bool_],
    max_gap_ticks: int,
    tick_index: NDArray[np.int64] | None = None,
) -> NDArray[np.bool_]:
    """(K, N): first reading of a tank, an event, or a gap > max_gap ticks before it.

    ``tick_index`` (K,): tick number of each row (gaps are measured in ticks, not rows).
    """
    n_ticks, n = present.shape
    number = np.arange(n_ticks) if tick_index is None else np.asarray(tick_index, np.int64)
    idx = np.where(present, np.arange(n_ticks)[:, None], -1)
    last = np.maximum.accumulate(idx, axis=0)  # last present row at or before k
    prev = np.vstack([np.full((1, n), -1), last[:-1]])  # last present row before k
    first = prev < 0
    gap = number[:, None] - number[np.where(first, 0, prev)]
    return present & (first | event | (gap > max_gap_ticks))


def split_ticks(n_ticks: int, val_fraction: float, holdout_fraction: float) -> tuple[int, int]:
    """(val_start, test_start) tick indices of a time-based three-way split."""
    if not (0 < val_fraction < 1 and 0 < holdout_fraction < 1):
        raise ValueError("fractions must be in (0, 1)")
    if val_fraction + holdout_fraction >= 0.9:
        raise ValueError("validation + holdout must leave at least 10% for training")
    test_start = round(n_ticks * (1 - holdout_fraction))
    val_start = round(n_ticks * (1 - holdout_fraction - val_fraction))
    return val_start, test_start


@dataclass(frozen=True)
class Batches:
    """Stateful training arrays; S = windows x B lanes samples, T steps, F features.

    ``x`` (S, T, F) scaled inputs (0 where masked); ``dx`` (S, T, F) each input minus
    the previous reading of its segment, divided by ``delta_scale`` (0 for a segment's
    first reading and where masked); ``mask`` (S, T) bool input mask;
    ``y`` (S, T, F) target = next step's scaled value minus this step's, divided by
    ``delta_scale`` (0 where unused); ``weight`` (S, T) 1 where both this and the next
    step are real readings of the same segment; ``resets`` (windows, B) bool.
    """

    x: NDArray[np.float32]
    dx: NDArray[np.float32]
    mask: NDArray[np.bool_]
    y: NDArray[np.float32]
    weight: NDArray[np.float32]
    resets: NDArray[np.bool_]
    lanes: int
    window: int

    @property
    def windows(self) -> int:
        return int(self.resets.shape[0])


def _segments(present: NDArray[np.bool_], boundary: NDArray[np.bool_]) -> list[tuple[int, int]]:
    """[start, stop) tick ranges of one tank: each starts at a boundary, stops before
    the next one (or after the last reading)."""
    starts = np.flatnonzero(boundary)
    if starts.size == 0:
        return []
    real = np.flatnonzero(present)
    out: list[tuple[int, int]] = []
    for i, s in enumerate(starts):
        nxt = starts[i + 1] if i + 1 < starts.size else present.shape[0]
        inside = real[(real >= s) & (real < nxt)]
        out.append((int(s), int(inside[-1]) + 1))
    return out


def segment_deltas(grid: TickGrid, scaler: Scaler) -> NDArray[np.float32]:
    """(F,) RMS of one-tick changes in scaled units over consecutive in-segment readings.

    Used to normalise the training target, so the loss is ~1.0 for persistence.
    """
    z = scaler.transform(grid.values)
    ok = grid.present[:-1] & grid.present[1:] & ~grid.boundary[1:]
    d = (z[1:] - z[:-1])[ok]
    if d.size == 0:
        return np.ones(z.shape[-1], np.float32)
    rms = np.sqrt(np.mean(d.astype(np.float64) ** 2, axis=0))
    return np.where(rms > 1e-6, rms, 1.0).astype(np.float32)


def make_batches(
    grid: TickGrid,
    scaler: Scaler,
    window: int,
    delta_scale: NDArray[np.float32],
    frame: tuple[NDArray[np.float32], NDArray[np.float32]] | None = None,
) -> Batches:
    """Arrange a grid slice into stateful batches (layout in the module docstring).

    ``frame``: per-row (level, scale) (K, N, F) after each tick
    (:func:`models.engines.rownorm.series`); inputs are then ``(x - level) / scale``
    and changes are divided by the scale at the step that sees them. None: the global
    scaler (level = mean, scale = std everywhere).
    """
    _, lanes, nf = grid.values.shape
    if frame is None:
        z = scaler.transform(grid.values)
        unit = np.broadcast_to(scaler.std, grid.values.shape)
    else:
        z = ((grid.values - frame[0]) / frame[1]).astype(np.float32)
        unit = frame[1]
    lane_x: list[NDArray[np.float32]] = []
    lane_d: list[NDArray[np.float32]] = []
    lane_m: list[NDArray[np.bool_]] = []
    lane_y: list[NDArray[np.float32]] = []
    lane_w: list[NDArray[np.float32]] = []
    lane_r: list[NDArray[np.bool_]] = []
    for j in range(lanes):
        xs, ds, ms, ys, ws, rs = [], [], [], [], [], []
        for start, stop in _segments(grid.present[:, j], grid.boundary[:, j]):
            if stop - start < 2:
                continue  # a lone reading has no next step to learn
            seg = z[start:stop, j]
            raw = grid.values[start:stop, j]
            sc = unit[start:stop, j]
            pres = grid.present[start:stop, j]
            # Many-to-many next step: inputs seg[:-1], targets seg[1:].
            length = stop - start - 1
            padded = -(-length // window) * window
            x = np.zeros((padded, nf), np.float32)
            m = np.zeros(padded, bool)
            y = np.zeros((padded, nf), np.float32)
            w = np.zeros(padded, np.float32)
            m[:length] = pres[:-1]
            x[:length] = np.where(m[:length, None], seg[:-1], 0.0)
            # Change since the previous reading of this segment (0 for its first).
            dx = np.zeros((padded, nf), np.float32)
            real = np.flatnonzero(m[:length])
            dx[real[1:]] = (raw[real[1:]] - raw[real[:-1]]) / sc[real[1:]] / delta_scale
            ok = pres[:-1] & pres[1:]
            w[:length] = ok
            change = (raw[1:] - raw[:-1]) / sc[:-1] / delta_scale
            y[:length] = np.where(ok[:, None], change, 0.0)
            r = np.zeros(padded // window, bool)
            r[0] = True
            xs.append(x)
            ds.append(dx)
            ms.append(m)
            ys.append(y)
            ws.append(w)
            rs.append(r)
        if xs:
            lane_x.append(np.concatenate(xs))
            lane_d.append(np.concatenate(ds))
            lane_m.append(np.concatenate(ms))
            lane_y.append(np.concatenate(ys))
            lane_w.append(np.concatenate(ws))
            lane_r.append(np.concatenate(rs))
        else:
            lane_x.append(np.zeros((0, nf), np.float32))
            lane_d.append(np.zeros((0, nf), np.float32))
            lane_m.append(np.zeros(0, bool))
            lane_y.append(np.zeros((0, nf), np.float32))
            lane_w.append(np.zeros(0, np.float32))
            lane_r.append(np.zeros(0, bool))
    windows = max(1, max(len(r) for r in lane_r))
    total = windows * window
    x_all = np.zeros((windows, lanes, window, nf), np.float32)
    d_all = np.zeros((windows, lanes, window, nf), np.float32)
    m_all = np.zeros((windows, lanes, window), bool)
    y_all = np.zeros((windows, lanes, window, nf), np.float32)
    w_all = np.zeros((windows, lanes, window), np.float32)
    r_all = np.zeros((windows, lanes), bool)
    for j in range(lanes):
        n = lane_x[j].shape[0]

        def fit(a: NDArray[np.generic], n: int = n) -> NDArray[np.generic]:
            out = np.zeros((total, *a.shape[1:]), a.dtype)
            out[:n] = a
            return out.reshape(windows, window, *a.shape[1:])

        x_all[:, j] = fit(lane_x[j])
        d_all[:, j] = fit(lane_d[j])
        m_all[:, j] = fit(lane_m[j])
        y_all[:, j] = fit(lane_y[j])
        w_all[:, j] = fit(lane_w[j])
        r_all[: len(lane_r[j]), j] = lane_r[j]
    s = windows * lanes
    return Batches(
        x=x_all.reshape(s, window, nf),
        dx=d_all.reshape(s, window, nf),
        mask=m_all.reshape(s, window),
        y=y_all.reshape(s, window, nf),
        weight=w_all.reshape(s, window),
        resets=r_all,
        lanes=lanes,
        window=window,
    )
