"""``evaluate``'s per-tick results as a table: one row per reading that was streamed.

Columns (physical units; documented in docs/model.md "Per-tick output"):

``tank_id``, ``ts`` (tick start, RFC 3339 UTC), ``pressure_kpa``, ``temperature_c``
(the reading), ``forecast_<feature>_h<h>`` for each reported horizon h (the forecast
*for this tick* made h ticks earlier in the same segment; empty where none: h > 1 is
only computed on the scored part), ``residual_<feature>`` (reading minus the h1
forecast), ``anomaly_score``, ``anomaly_flag`` (0/1), ``scored`` (1 where the tick
belongs to the scored part: the holdout, or all), and ``label`` (the anomaly kind of a
label window it falls in, with ``--labels``; empty otherwise).

Written as gzip-compressed CSV (``ticks.csv.gz``, for ``pandas.read_csv``) or, with
pyarrow installed, Parquet (``ticks.parquet``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from models.dataprep import TickGrid

__all__ = ["TICK_FORMATS", "check_format", "tick_frame", "write_ticks"]

TICK_FORMATS = ("csv", "parquet", "none")


def _labels_at(
    grid: TickGrid, rows: NDArray[np.int64], cols: NDArray[np.int64], labels: Any
) -> NDArray[np.object_]:
    """Label kind of each (tick row, tank col), '' outside every label window."""
    out = np.full(rows.size, "", dtype=object)
    if labels is None or len(labels) == 0:
        return out
    times = grid.tick_times()[rows]
    index = {t: j for j, t in enumerate(grid.tank_ids)}
    for tank, start, end, kind in zip(
        labels["tank_id"].astype(str),
        labels["start_s"].to_numpy(np.float64),
        labels["end_s"].to_numpy(np.float64),
        labels["kind"].astype(str),
        strict=True,
    ):
        j = index.get(tank)
        if j is None:
            continue
        inside = (cols == j) & (times >= start) & (times <= end)
        out[inside] = kind
    return out


def tick_frame(
    grid: TickGrid,
    features: Sequence[str],
    horizons: Sequence[int],
    next_fc: NDArray[np.floating[Any]],
    horizon_fc: NDArray[np.floating[Any]],
    scores: NDArray[np.floating[Any]],
    flags: NDArray[np.bool_],
    scored: NDArray[np.bool_],
    labels: Any = None,
) -> pd.DataFrame:
    """The per-tick table, rows in (time, tank) order.

    ``next_fc`` (K, N, F) the h1 forecast held for each tick; ``horizon_fc`` (K, N, H, F)
    the forecast for each tick made ``horizons[i]`` ticks before; ``scores``/``flags``
    (K, N); ``scored`` (K, N) bool.
    """
    rows, cols = np.nonzero(grid.present)
    times = grid.tick_times()[rows]
    data: dict[str, Any] = {
        "tank_id": np.asarray(grid.tank_ids, dtype=object)[cols],
        "ts": pd.to_datetime(times, unit="s", utc=True).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    }
    actual = grid.values[rows, cols]
    for fi, name in enumerate(features):
        data[name] = actual[:, fi]
    for hi, h in enumerate(horizons):
        for fi, name in enumerate(features):
            src = next_fc[rows, cols, fi] if h == 1 else horizon_fc[rows, cols, hi, fi]
            data[f"forecast_{name}_h{h}"] = src
    for fi, name in enumerate(features):
        data[f"residual_{name}"] = actual[:, fi] - next_fc[rows, cols, fi]
    data["anomaly_score"] = scores[rows, cols]
    data["anomaly_flag"] = flags[rows, cols].astype(np.int8)
    data["scored"] = scored[rows, cols].astype(np.int8)
    data["label"] = _labels_at(grid, rows, cols, labels)
    frame = pd.DataFrame(data)
    frame["ts"] = frame["ts"].str.replace(".000000Z", "Z", regex=False)
    return frame


def check_format(fmt: str) -> None:
    """ConfigError (one line) for an unknown format or Parquet without pyarrow: checked
    before an evaluation runs, not after."""
    import importlib.util

    from tankwatch.errors import ConfigError

    if fmt not in TICK_FORMATS:
        raise ConfigError(f"unknown per-tick format {fmt!r} (expected csv, parquet or none)")
    if fmt == "parquet" and importlib.util.find_spec("pyarrow") is None:
        raise ConfigError("--ticks-format parquet needs pyarrow (pip install pyarrow), or use csv")


def write_ticks(frame: pd.DataFrame, out: Path, fmt: str = "csv") -> Path | None:
    """Write the table into ``out``; returns the file (None for ``fmt="none"``)."""
    if fmt == "none":
        return None
    out.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        path = out / "ticks.parquet"
        try:
            frame.to_parquet(path, index=False)
        except ImportError as exc:  # pyarrow is optional
            from tankwatch.errors import ConfigError

            raise ConfigError(f"--ticks-format parquet needs pyarrow ({exc})") from None
        return path
    path = out / "ticks.csv.gz"
    # mtime 0: the same evaluation gives the same bytes.
    frame.to_csv(
        path,
        index=False,
        float_format="%.8g",
        compression={"method": "gzip", "mtime": 0, "compresslevel": 1},
    )
    return path
