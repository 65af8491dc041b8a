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


def _num(v: float) -> float | None:
    return v if math.isfinite(v) else None


def encode_records(
    out: StepOutput,
    tank_ids: Sequence[str | None],
    interval_s: float,
    horizons: Sequence[int],
    model_version: str,
    source_topic: str,
) -> list[tuple[bytes, bytes]]:
    """(key, value) per row of one applied tick, values as compact JSON."""
    ct = out.tick
    tick_ts = format_ts(ct.tick * interval_s)
    x = ct.x.tolist()
    f = out.forecast.tolist()
    hz = out.horizons.tolist()  # (n, R, F)
    res = out.residual.tolist()
    score = out.score.tolist()
    flag = out.flag.tolist()
    reason = ct.reset_reason.tolist()
    hticks = list(horizons)
    records = []
    for i, row in enumerate(ct.rows.tolist()):
        tank_id = tank_ids[row]
        if tank_id is None:
            continue
        r = res[i]
        obj = {
            "tank_id": tank_id,
            "tick": ct.tick,
            "tick_ts": tick_ts,
            "reading_ts": float(ct.ts[i]),
            "actual": {"pressure_kpa": x[i][0], "temperature_c": x[i][1]},
            "forecast": {"pressure_kpa": _num(f[i][0]), "temperature_c": _num(f[i][1])},
            "horizon_ticks": hticks,
            "horizon": {
                "pressure_kpa": [_num(h[0]) for h in hz[i]],
                "temperature_c": [_num(h[1]) for h in hz[i]],
            },
            "residual": None if math.isnan(r[0]) else {"pressure_kpa": r[0], "temperature_c": r[1]},
            "anomaly_score": score[i],
            "anomaly_flag": bool(flag[i]),
            "reset": RESET_REASONS[reason[i]] or None,
            "model_version": model_version,
            "source": {
                "topic": source_topic,
                "partition": int(ct.partitions[i]),
                "offset": int(ct.offsets[i]),
            },
        }
        records.append((tank_id.encode(), json.dumps(obj, separators=(",", ":")).encode()))
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
