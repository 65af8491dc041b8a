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

try:
    import orjson as _orjson
except ImportError:  # a declared dependency; without it only speed suffers
    _orjson = None  # type: ignore[assignment]

from pipeline.assembler import RESET_REASONS
from pipeline.sinks.batch_produce import BatchProducer
from pipeline.step_output import StepOutput
from tankwatch.codec import format_ts

__all__ = ["ForecastSink", "encode_records", "schema"]

log = logging.getLogger(__name__)


def schema() -> dict[str, Any]:
    """The JSON schema of a ``tank.forecasts`` value."""
    text = resources.files("tankwatch").joinpath("schemas/forecast.schema.json").read_text()
    result: dict[str, Any] = json.loads(text)
    return result


def _nums_repr(flat: NDArray[np.float64]) -> list[str]:
    """The reference: ``repr`` of every element (what ``json.dumps`` writes; NaN/inf ->
    null)."""
    out = [repr(v) for v in flat.tolist()]
    bad = ~np.isfinite(flat)
    if bad.any():
        for i in np.flatnonzero(bad).tolist():
            out[i] = "null"
    return out


def _exponent_form(flat: NDArray[np.float64]) -> NDArray[np.bool_]:
    """Where ``repr`` writes an exponent (0 < |v| < 1e-4 or |v| >= 1e16), which orjson
    writes differently (``1e-05`` vs ``1e-5``, ``1e+16`` vs ``1e16``)."""
    with np.errstate(invalid="ignore"):
        mag = np.abs(flat)
        return np.isfinite(flat) & (mag != 0.0) & ((mag < 1e-4) | (mag >= 1e16))


def _nums(a: NDArray[np.floating]) -> list[str]:
    """Every element of ``a`` (flattened, C order) as JSON, exactly as ``repr`` writes
    it (which is what ``json.dumps`` writes; NaN/inf -> null).

    One orjson call for the whole column: it writes the same shortest round-trip
    digits as ``repr`` (~20 ns a number instead of ~400 ns for a float32 widened to
    float64); the few numbers ``repr`` writes with an exponent are taken from ``repr``.
    """
    flat = np.ascontiguousarray(a, np.float64).reshape(-1)
    if _orjson is None or flat.size == 0:
        return _nums_repr(flat)
    out = _orjson.dumps(flat, option=_orjson.OPT_SERIALIZE_NUMPY).decode()[1:-1].split(",")
    odd = _exponent_form(flat)
    if odd.any():
        for i in np.flatnonzero(odd).tolist():
            out[i] = repr(float(flat[i]))
    return out


def _rows(cells: list[str], width: int) -> list[str]:
    """Comma-joined groups of ``width`` consecutive cells (one JSON array body per row)."""
    return [",".join(cells[i : i + width]) for i in range(0, len(cells), width)]


def _num_rows(a: NDArray[np.floating]) -> list[str]:
    """Per row of a 2-d ``a`` (n, w), w >= 1: its numbers comma-joined as JSON (the body
    of one array), as ``_rows(_nums(a), w)`` writes them."""
    m = np.ascontiguousarray(a, np.float64)
    if _orjson is None or m.size == 0 or _exponent_form(m).any():
        return _rows(_nums(m), int(m.shape[1]))
    return _orjson.dumps(m, option=_orjson.OPT_SERIALIZE_NUMPY).decode()[2:-2].split("],[")


# One record, formatted directly: json.dumps of nested dicts was ~40 us a record, a
# noticeable share of the per-reading budget. Tank ids match ``[A-Za-z0-9._:-]``
# (validated by the codec), so they need no escaping; the other strings are escaped
# once per tick with json.dumps. Numbers are turned into text a column at a time.
# Two stages: the fields that are the same for every record of a tick (``%d``/``%s``)
# are put in once per tick, which leaves a record's own fields (``%%s``/``%%d``) for a
# 15-field format per record instead of 21 (the per-record format was ~6 % of a tick
# at 1,000 tanks, py-spy).
_TICK_RECORD = (
    '{"tank_id":"%%s","tick":%d,"tick_ts":"%s","reading_ts":%%s,'
    '"actual":{"pressure_kpa":%%s,"temperature_c":%%s},'
    '"forecast":{"pressure_kpa":%%s,"temperature_c":%%s},'
    '"horizon_ticks":%s,"horizon":{"pressure_kpa":[%%s],"temperature_c":[%%s]},'
    '"residual":%%s,"anomaly_score":%%s,"anomaly_flag":%%s,"anomaly_calibrated":%%s,'
    '"reset":%%s,"model_version":%s,"served_from":%s,'
    '"source":{"topic":%s,"partition":%%d,"offset":%%d}}'
)


def _literal(text: str) -> str:
    """``text`` put into the first stage of :data:`_TICK_RECORD` so that the second
    stage writes it as it is (its ``%`` doubled)."""
    return text.replace("%", "%%")


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
    hz_p = _num_rows(out.horizons[:, :, 0]) if r_count else [""] * n
    hz_t = _num_rows(out.horizons[:, :, 1]) if r_count else [""] * n
    res = _nums(out.residual[:, :2])
    res_none = np.isnan(out.residual[:, 0]).tolist()
    score = _nums(out.score)
    flag = ["true" if v else "false" for v in out.flag.tolist()]
    reason = [resets[k] for k in ct.reset_reason.tolist()]
    parts = ct.partitions.tolist()
    offsets = ct.offsets.tolist()
    # With a horizon stride the records say how old their horizon is (a per-record
    # field); without one they stay byte for byte what they were.
    aged = (
        [f'{hticks},"horizon_age_ticks":{a}' for a in out.horizon_age.tolist()]
        if out.horizon_age is not None
        else None
    )
    template = _TICK_RECORD % (
        ct.tick,
        _literal(tick_ts),
        "%s" if aged is not None else _literal(hticks),
        _literal(version),
        _literal(served),
        _literal(topic),
    )
    records = []
    for i, row in enumerate(ct.rows.tolist()):
        tank_id = tank_ids[row]
        if tank_id is None:
            continue
        j = 2 * i
        residual = (
            "null" if res_none[i] else f'{{"pressure_kpa":{res[j]},"temperature_c":{res[j + 1]}}}'
        )
        if aged is None:
            value = template % (
                tank_id, ts[i], x[j], x[j + 1], f[j], f[j + 1], hz_p[i], hz_t[i], residual,
                score[i], flag[i], calibrated[i], reason[i], parts[i], offsets[i],
            )  # fmt: skip
        else:
            value = template % (
                tank_id, ts[i], x[j], x[j + 1], f[j], f[j + 1], aged[i], hz_p[i], hz_t[i],
                residual, score[i], flag[i], calibrated[i], reason[i], parts[i], offsets[i],
            )  # fmt: skip
        records.append((tank_id.encode(), value.encode()))
    return records


class ForecastSink:
    """Produces forecast records (asynchronously) to the forecasts topic: a tick's
    records at once (:class:`~pipeline.sinks.batch_produce.BatchProducer`), one record
    per tank, keyed by tank id, on the partition the default partitioner picks."""

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
        self._batch = BatchProducer(producer, topic, self._failed)

    def _failed(self, n: int, exc: BaseException) -> None:
        # Refused by send() (buffer full, broker gone) or failed for good after retries
        # (the latter on the producer's IO thread): counted, never stalls the stream.
        self.send_errors += n
        log.warning("forecasts not sent", extra={"records": n, "error": str(exc)})

    def encode_args(self) -> tuple[Any, ...]:
        """What ``encode_records`` takes after the output and tank ids (for the horizon
        worker, which formats records with them: pipeline.horizon_worker)."""
        return (
            self.interval_s,
            self.horizons,
            self.model_version,
            self.source_topic,
            self.served_from,
        )

    def publish(self, out: StepOutput, tank_ids: Sequence[str | None]) -> None:
        # Formatted by the horizon worker already (the same function and arguments),
        # or here.
        records = out.encoded or encode_records(out, tank_ids, *self.encode_args())
        self.sent += self._batch.send(records)
