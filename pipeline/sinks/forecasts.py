"""The ``tank.forecasts`` sink: one JSON record per applied (tank, tick), keyed by tank_id.

The value follows ``tankwatch/schemas/forecast.schema.json``. Records are at-least-once
(after a crash the ticks since the last checkpoint are produced again with identical
values), so readers key them by ``(tank_id, tick)``. Sends are asynchronous; the
service flushes the producer before every checkpoint.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from importlib import resources
from typing import Any

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


def _num(v: float) -> str:
    """A float as JSON (``repr`` is what ``json.dumps`` writes); NaN/inf -> null."""
    return repr(v) if math.isfinite(v) else "null"


# One record, formatted directly: json.dumps of nested dicts was ~40 us a record, a
# noticeable share of the per-reading budget. Tank ids match ``[A-Za-z0-9._:-]``
# (validated by the codec), so they need no escaping; the other strings are escaped
# once per tick with json.dumps.
_RECORD = (
    '{"tank_id":"%s","tick":%d,"tick_ts":"%s","reading_ts":%s,'
    '"actual":{"pressure_kpa":%s,"temperature_c":%s},'
    '"forecast":{"pressure_kpa":%s,"temperature_c":%s},'
    '"horizon_ticks":%s,"horizon":{"pressure_kpa":[%s],"temperature_c":[%s]},'
    '"residual":%s,"anomaly_score":%s,"anomaly_flag":%s,"reset":%s,'
    '"model_version":%s,"source":{"topic":%s,"partition":%d,"offset":%d}}'
)


def encode_records(
    out: StepOutput,
    tank_ids: Sequence[str | None],
    interval_s: float,
    horizons: Sequence[int],
    model_version: str,
    source_topic: str,
) -> list[tuple[bytes, bytes]]:
    """(key, value) per row of one applied tick, values as compact JSON following
    ``tankwatch/schemas/forecast.schema.json``."""
    ct = out.tick
    tick_ts = format_ts(ct.tick * interval_s)
    hticks = json.dumps(list(horizons), separators=(",", ":"))
    version = json.dumps(model_version)
    topic = json.dumps(source_topic)
    resets = [json.dumps(r or None) for r in RESET_REASONS]
    x = ct.x.tolist()
    ts = ct.ts.tolist()
    f = out.forecast.tolist()
    hz = out.horizons.tolist()  # (n, R, F)
    res = out.residual.tolist()
    score = out.score.tolist()
    flag = out.flag.tolist()
    reason = ct.reset_reason.tolist()
    parts = ct.partitions.tolist()
    offsets = ct.offsets.tolist()
    records = []
    for i, row in enumerate(ct.rows.tolist()):
        tank_id = tank_ids[row]
        if tank_id is None:
            continue
        r = res[i]
        residual = (
            "null"
            if math.isnan(r[0])
            else f'{{"pressure_kpa":{_num(r[0])},"temperature_c":{_num(r[1])}}}'
        )
        value = _RECORD % (
            tank_id,
            ct.tick,
            tick_ts,
            _num(ts[i]),
            _num(x[i][0]),
            _num(x[i][1]),
            _num(f[i][0]),
            _num(f[i][1]),
            hticks,
            ",".join([_num(h[0]) for h in hz[i]]),
            ",".join([_num(h[1]) for h in hz[i]]),
            residual,
            _num(score[i]),
            "true" if flag[i] else "false",
            resets[reason[i]],
            version,
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
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.interval_s = interval_s
        self.horizons = tuple(horizons)
        self.model_version = model_version
        self.source_topic = source_topic
        self.sent = 0
        self.send_errors = 0

    def publish(self, out: StepOutput, tank_ids: Sequence[str | None]) -> None:
        for key, value in encode_records(
            out, tank_ids, self.interval_s, self.horizons, self.model_version, self.source_topic
        ):
            try:
                self.producer.send(self.topic, key=key, value=value)
                self.sent += 1
            except Exception as exc:  # buffer full / broker gone: never stall the stream
                self.send_errors += 1
                log.warning("forecast not sent", extra={"error": str(exc)})
