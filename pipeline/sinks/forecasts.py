"""The ``tank.forecasts`` sink: one JSON record per applied (tank, tick), keyed by tank_id.

The value follows ``tankwatch/schemas/forecast.schema.json``. Records are at-least-once
(after a crash the ticks since the last checkpoint are produced again with identical
values), so readers key them by ``(tank_id, tick)``. Sends are asynchronous; the
service flushes the producer before every checkpoint.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from importlib import resources
from typing import Any

import numpy as np
from numpy.typing import NDArray

from pipeline.assembler import RESET_REASONS
from pipeline.forecast_step import StepOutput
from tankwatch.codec import format_ts

__all__ = ["ForecastSink", "encode_records", "schema"]

log = logging.getLogger(__name__)


def schema() -> dict[str, Any]:
    """The JSON schema of a ``tank.forecasts`` value."""
    text = resources.files("tankwatch").joinpath("schemas/forecast.schema.json").read_text()
    result: dict[str, Any] = json.loads(text)
    return result


def _nums(a: NDArray[np.floating]) -> list[str]:
    """Every element of ``a`` (flattened, C order) as JSON (``repr``, which is what
    ``json.dumps`` writes; NaN/inf -> null): one ``tolist`` and one comprehension per
    column instead of a function call per value."""
    flat = np.asarray(a, np.float64).reshape(-1)
    out = [repr(v) for v in flat.tolist()]
    bad = ~np.isfinite(flat)
    if bad.any():
        for i in np.flatnonzero(bad).tolist():
            out[i] = "null"
    return out


def _rows(cells: list[str], width: int) -> list[str]:
    """Comma-joined groups of ``width`` consecutive cells (one JSON array body per row)."""
    return [",".join(cells[i : i + width]) for i in range(0, len(cells), width)]


# One record, formatted directly: json.dumps of nested dicts was ~40 us a record, a
# noticeable share of the per-reading budget. Tank ids match ``[A-Za-z0-9._:-]``
# (validated by the codec), so they need no escaping; the other strings are escaped
# once per tick with json.dumps. Numbers are turned into text a column at a time.
_RECORD = (
    '{"tank_id":"%s","tick":%d,"tick_ts":"%s","reading_ts":%s,'
    '"actual":{"pressure_kpa":%s,"temperature_c":%s},'
    '"forecast":{"pressure_kpa":%s,"temperature_c":%s},'
    '"horizon_ticks":%s,"horizon":{"pressure_kpa":[%s],"temperature_c":[%s]},'
    '"residual":%s,"anomaly_score":%s,"anomaly_flag":%s,"anomaly_calibrated":%s,"reset":%s,'
    '"model_version":%s,"served_from":%s,"source":{"topic":%s,"partition":%d,"offset":%d}}'
)


def encode_records(
    out: StepOutput,
    tank_ids: Sequence[str | None],
    interval_s: float,
    horizons: Sequence[int],
    model_version: str,
    source_topic: str,
    served_from: dict[str, list[str]] | None = None,
) -> list[tuple[bytes, bytes]]:
    """(key, value) per row of one applied tick, values as compact JSON following
    ``tankwatch/schemas/forecast.schema.json``."""
    ct = out.tick
    n = int(ct.rows.shape[0])
    if n == 0:
        return []
    tick_ts = format_ts(ct.tick * interval_s)
    hticks = json.dumps(list(horizons), separators=(",", ":"))
    version = json.dumps(model_version)
    # Which forecaster each feature's next step and horizons come from (skill gate);
    # constant per model: {"forecast": {feature: src}, "horizon": {feature: [src...]}}.
    served = json.dumps(
        {
            "forecast": {f: v[0] for f, v in (served_from or {}).items()},
            "horizon": {f: v[1:] for f, v in (served_from or {}).items()},
        }
        if served_from
        else None,
        separators=(",", ":"),
    )
    calibrated = (
        ["true"] * n
        if out.calibrated is None
        else ["true" if v else "false" for v in out.calibrated.tolist()]
    )
    topic = json.dumps(source_topic)
    resets = [json.dumps(r or None) for r in RESET_REASONS]
    r_count = int(out.horizons.shape[1])
    x = _nums(ct.x[:, :2])
    f = _nums(out.forecast[:, :2])
    ts = _nums(ct.ts)
    hz_p = _rows(_nums(out.horizons[:, :, 0]), r_count) if r_count else [""] * n
    hz_t = _rows(_nums(out.horizons[:, :, 1]), r_count) if r_count else [""] * n
    res = _nums(out.residual[:, :2])
    res_none = np.isnan(out.residual[:, 0]).tolist()
    score = _nums(out.score)
    flag = ["true" if v else "false" for v in out.flag.tolist()]
    reason = [resets[k] for k in ct.reset_reason.tolist()]
    parts = ct.partitions.tolist()
    offsets = ct.offsets.tolist()
    tick = ct.tick
    records = []
    for i, row in enumerate(ct.rows.tolist()):
        tank_id = tank_ids[row]
        if tank_id is None:
            continue
        j = 2 * i
        residual = (
            "null" if res_none[i] else f'{{"pressure_kpa":{res[j]},"temperature_c":{res[j + 1]}}}'
        )
        value = _RECORD % (
            tank_id,
            tick,
            tick_ts,
            ts[i],
            x[j],
            x[j + 1],
            f[j],
            f[j + 1],
            hticks,
            hz_p[i],
            hz_t[i],
            residual,
            score[i],
            flag[i],
            calibrated[i],
            reason[i],
            version,
            served,
            topic,
            parts[i],
            offsets[i],
        )
        records.append((tank_id.encode(), value.encode()))
    return records


class ForecastSink:
    """Produces forecast records (asynchronously) to the forecasts topic."""

    def __init__(
        self,
        producer: Any,
        topic: str,
        interval_s: float,
        horizons: Sequence[int],
        model_version: str,
        source_topic: str,
        served_from: dict[str, list[str]] | None = None,
    ) -> None:
        self.producer = producer
        #: {feature: [source of the next step, then of each of ``horizons``]}.
        self.served_from = served_from
        self.topic = topic
        self.interval_s = interval_s
        self.horizons = tuple(horizons)
        self.model_version = model_version
        self.source_topic = source_topic
        self.sent = 0
        self.send_errors = 0

    def publish(self, out: StepOutput, tank_ids: Sequence[str | None]) -> None:
        for key, value in encode_records(
            out,
            tank_ids,
            self.interval_s,
            self.horizons,
            self.model_version,
            self.source_topic,
            self.served_from,
        ):
            try:
                self.producer.send(self.topic, key=key, value=value)
                self.sent += 1
            except Exception as exc:  # buffer full / broker gone: never stall the stream
                self.send_errors += 1
                log.warning("forecast not sent", extra={"error": str(exc)})
