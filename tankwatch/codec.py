"""Encode, decode and validate ``tank.readings`` messages.

The contract is ``tankwatch/schemas/reading.schema.json``; this module implements the
same rules by hand because it runs once per message on the hot path (tests check that
the two agree). Every rejection raises :class:`~tankwatch.errors.DecodeError` with a
reason from :data:`REJECT_REASONS`.

>>> r = decode_reading(b'{"tank_id": "T1", "ts": "2024-01-01T00:00:00Z", '
...                    b'"pressure_kpa": 101.3, "temperature_c": 15}', key=b"T1")
>>> (r.tank_id, r.ts, r.pressure_kpa, r.temperature_c, r.event)
('T1', 1704067200.0, 101.3, 15.0, None)
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from tankwatch.errors import DecodeError

try:
    import orjson as _orjson
except ImportError:  # a declared dependency; without it the fast path uses json
    _orjson = None  # type: ignore[assignment]

#: Largest accepted message value, bytes. A reading is ~100 bytes; anything far larger
#: is garbage or abuse and must not be parsed.
MAX_MESSAGE_BYTES = 4096

#: Plausibility limits of ``pressure_kpa`` per pressure reference (kPa). Absolute
#: pressure cannot be negative; gauge pressure is negative under vacuum, down to minus
#: the local atmospheric pressure (about -101 kPa at sea level; -105 leaves room for
#: weather and sensor offsets). The fleet declares its reference (docs/data.md);
#: deployments may narrow or widen the limits (``pressure_limits`` overrides).
PRESSURE_REFERENCES = ("absolute", "gauge")
PRESSURE_LIMITS_KPA: dict[str, tuple[float, float]] = {
    "absolute": (0.0, 5000.0),
    "gauge": (-105.0, 5000.0),
}
#: The default (absolute) limits; what the JSON schema states.
PRESSURE_RANGE_KPA = PRESSURE_LIMITS_KPA["absolute"]
TEMPERATURE_RANGE_C = (-80.0, 200.0)
TS_RANGE_S = (0.0, 32503680000.0)  # 1970 .. 3000

#: Events that mark a sequence boundary (the tank's state is reset before the reading).
EVENTS = frozenset(
    {"refill", "maintenance", "sensor_replaced", "drain", "cleaning", "recalibration"}
)

#: Every reason a reading can be rejected for; DLQ header ``reason`` and metric label.
REJECT_REASONS = (
    "oversized",
    "bad_encoding",
    "bad_json",
    "not_object",
    "missing_field",
    "wrong_type",
    "invalid_tank_id",
    "bad_timestamp",
    "not_finite",
    "out_of_range",
    "unknown_event",
    "key_mismatch",
    "duplicate_key",
)

#: A reading valid in itself but sent without a Kafka key (``kcat -P`` without ``-K``).
#: Raised by :func:`decode_batch` with ``require_key`` (the pipeline): such a reading
#: lands on an arbitrary partition, where its tank's order cannot be kept. Checked
#: after every content rule, so a message with another defect keeps that reason.
NO_KEY = "no_key"

REQUIRED_FIELDS = ("tank_id", "ts", "pressure_kpa", "temperature_c")
_TANK_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")

# Hot-path caches (decode runs once per message). A tick's readings share one ``ts``
# string and a fleet repeats its tank ids every tick, so parsing each distinct value
# once saves most of the per-message cost. Only successes are cached (a failure is
# re-checked, so its reason and message are always computed the same way); the
# results are pure functions of the strings. Cleared when full to bound memory.
_CACHE_SIZE = 65536
_TS_CACHE: dict[str, float] = {}
_VALID_IDS: dict[str, bytes] = {}  # valid tank id -> its UTF-8 bytes (the expected key)


@dataclass(frozen=True, slots=True)
class Reading:
    """One validated reading. ``ts`` is event time in epoch seconds (UTC)."""

    tank_id: str
    ts: float
    pressure_kpa: float
    temperature_c: float
    event: str | None = None


def pressure_limits(
    reference: str = "absolute", low: float | None = None, high: float | None = None
) -> tuple[float, float]:
    """The ``(low, high)`` kPa limits of a pressure reference, with optional overrides.

    >>> pressure_limits("gauge")
    (-105.0, 5000.0)
    >>> pressure_limits("absolute", high=300.0)
    (0.0, 300.0)
    """
    if reference not in PRESSURE_LIMITS_KPA:
        raise ValueError(f"unknown pressure reference {reference!r} (expected absolute or gauge)")
    lo, hi = PRESSURE_LIMITS_KPA[reference]
    lo = lo if low is None else float(low)
    hi = hi if high is None else float(high)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"pressure limits must be finite with low < high, got {lo}..{hi}")
    return lo, hi


def schema() -> dict[str, Any]:
    """The JSON schema of a ``tank.readings`` value, as shipped in the package."""
    text = resources.files("tankwatch").joinpath("schemas/reading.schema.json").read_text()
    result: dict[str, Any] = json.loads(text)
    return result


def parse_ts(value: object) -> float:
    """Event time to epoch seconds: RFC 3339 string (naive = UTC) or a number.

    >>> parse_ts("2024-01-01T01:00:00+01:00")
    1704067200.0
    >>> parse_ts(1704067200)
    1704067200.0
    """
    if type(value) is str:
        cached = _TS_CACHE.get(value)
        if cached is not None:
            return cached
        ts = _parse_ts(value)
        if len(_TS_CACHE) >= _CACHE_SIZE:
            _TS_CACHE.clear()
        _TS_CACHE[value] = ts
        return ts
    return _parse_ts(value)


def _parse_ts(value: object) -> float:
    if isinstance(value, bool):
        raise DecodeError("wrong_type", "ts must be an RFC 3339 string or epoch seconds")
    if isinstance(value, int | float):
        ts = _to_float(value, "ts")
        if not math.isfinite(ts):
            raise DecodeError("not_finite", "ts is not finite")
    elif isinstance(value, str):
        text = value.strip()
        if len(text) < 10 or len(text) > 40:
            raise DecodeError("bad_timestamp", f"cannot parse ts {value[:40]!r}")
        try:
            dt = datetime.fromisoformat(text.replace("z", "Z"))
        except ValueError:
            raise DecodeError("bad_timestamp", f"cannot parse ts {value[:40]!r}") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        ts = dt.timestamp()
    else:
        raise DecodeError("wrong_type", "ts must be an RFC 3339 string or epoch seconds")
    if not TS_RANGE_S[0] <= ts <= TS_RANGE_S[1]:
        raise DecodeError("out_of_range", f"ts {ts} outside 1970..3000")
    return ts


def _to_float(value: int | float, field: str) -> float:
    """``float(value)``, but an integer beyond float range (JSON allows 400 digits) is a
    reject, not an OverflowError that would stop the stream."""
    try:
        return float(value)
    except OverflowError:
        raise DecodeError(
            "out_of_range", f"{field} is an integer of {_digits(value)} digits"
        ) from None


def _digits(value: int | float) -> int:
    # len(str(huge)) is itself limited (sys.int_info.str_digits_check_threshold).
    return int(abs(value).bit_length() * 0.30103) + 1 if isinstance(value, int) else 0


def _number(obj: dict[str, Any], field: str, lo: float, hi: float) -> float:
    value = obj[field]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DecodeError("wrong_type", f"{field} must be a number, got {type(value).__name__}")
    x = _to_float(value, field)
    if not math.isfinite(x):
        raise DecodeError("not_finite", f"{field} is {value}")
    if not lo <= x <= hi:
        raise DecodeError("out_of_range", f"{field}={x} outside [{lo}, {hi}]")
    return x


def validate(
    obj: object,
    key: bytes | None = None,
    pressure_range: tuple[float, float] = PRESSURE_RANGE_KPA,
) -> Reading:
    """Validate a decoded JSON value (and the message key, if any) into a Reading.

    ``pressure_range``: the fleet's plausibility limits (:func:`pressure_limits`).
    """
    if not isinstance(obj, dict):
        raise DecodeError("not_object", f"value is a JSON {type(obj).__name__}, not an object")
    get = obj.get
    tank_id = get("tank_id")
    ts_value = get("ts")
    pressure = get("pressure_kpa")
    temperature = get("temperature_c")
    if tank_id is None or ts_value is None or pressure is None or temperature is None:
        for field in REQUIRED_FIELDS:  # name the first one missing
            if get(field) is None:
                raise DecodeError("missing_field", field)
    if type(tank_id) is not str or tank_id not in _VALID_IDS:  # unhashable ids: not str
        if not isinstance(tank_id, str):
            raise DecodeError("wrong_type", "tank_id must be a string")
        if not _TANK_ID_RE.fullmatch(tank_id):
            raise DecodeError("invalid_tank_id", f"tank_id {tank_id[:40]!r}")
        if len(_VALID_IDS) >= _CACHE_SIZE:
            _VALID_IDS.clear()
        _VALID_IDS[tank_id] = tank_id.encode()
    ts = _TS_CACHE.get(ts_value) if type(ts_value) is str else None  # parse_ts, inlined
    if ts is None:
        ts = parse_ts(ts_value)
    # Fast path: a float within range (NaN and inf fail the comparison and take the
    # full check, which names the reason).
    lo, hi = pressure_range
    if not (type(pressure) is float and lo <= pressure <= hi):
        pressure = _number(obj, "pressure_kpa", lo, hi)
    lo, hi = TEMPERATURE_RANGE_C
    if not (type(temperature) is float and lo <= temperature <= hi):
        temperature = _number(obj, "temperature_c", lo, hi)
    event = get("event")
    if event is not None:
        if not isinstance(event, str):
            raise DecodeError("wrong_type", "event must be a string")
        if event not in EVENTS:
            raise DecodeError("unknown_event", f"event {event[:40]!r}")
    if key is not None and key != tank_id.encode():
        raise DecodeError("key_mismatch", f"key {key[:40]!r} != tank_id {tank_id!r}")
    return Reading(tank_id, ts, pressure, temperature, event)


def decode_reading(
    value: bytes | None,
    key: bytes | None = None,
    pressure_range: tuple[float, float] = PRESSURE_RANGE_KPA,
) -> Reading:
    """Decode and validate one message value. Raises DecodeError with a reason."""
    if value is None:
        raise DecodeError("bad_json", "empty value (tombstone)")
    if len(value) > MAX_MESSAGE_BYTES:
        raise DecodeError("oversized", f"{len(value)} bytes > {MAX_MESSAGE_BYTES}")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        raise DecodeError("bad_encoding", "value is not UTF-8") from None
    try:
        obj = json.loads(text)
        if type(obj) is dict and not _surely_unique(text, obj):
            json.loads(text, object_pairs_hook=_unique_pairs)  # exact check, slow path
    except _DuplicateKey as exc:
        raise DecodeError("duplicate_key", f"key {str(exc)[:40]!r} appears twice") from None
    except ValueError as exc:
        raise DecodeError("bad_json", str(exc)[:120]) from None
    except RecursionError:  # "[[[[...]]]]" within the size limit
        raise DecodeError("bad_json", "nested too deeply") from None
    return validate(obj, key, pressure_range)


class _DuplicateKey(Exception):
    """A JSON object names one key twice (``json.loads`` would keep the last)."""


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise _DuplicateKey(k)
            seen.add(k)
    return obj


def _surely_unique(text: str | bytes, obj: dict[str, Any]) -> bool:
    """True when ``text`` cannot hold a duplicate key (then the exact, ~3x slower
    parse with a pairs hook is skipped).

    Every key/value pair of every object in the text has one ``:`` outside strings,
    and the strings that survived in ``obj`` add their own colons; so when the colon
    count equals ``len(obj)`` plus the colons of ``obj``'s string keys and values, the
    text has exactly ``len(obj)`` pairs: no duplicate, no nested object. A typical
    reading passes; anything else takes the exact check. Text with a backslash is
    never "sure": an escaped colon (``\\u003a``) is a colon in ``obj`` but not in the text.
    """
    if isinstance(text, str):
        if "\\" in text:
            return False
        colons = text.count(":")
    else:
        if b"\\" in text:
            return False
        colons = text.count(b":")
    expected = len(obj)
    for k, v in obj.items():
        expected += k.count(":")
        if type(v) is str:
            expected += v.count(":")
        elif type(v) is dict or type(v) is list:
            return False
    return colons == expected


@dataclass(slots=True)
class DecodedBatch:
    """Column lists of the readings :func:`decode_batch` accepted (``index`` = their
    positions in the input), and ``(index, error)`` of the ones it rejected."""

    index: list[int]
    tank_ids: list[str]
    ts: list[float]
    pressure_kpa: list[float]
    temperature_c: list[float]
    event: list[bool]
    rejected: list[tuple[int, DecodeError]]


def decode_batch(
    values: Sequence[bytes | None],
    keys: Sequence[bytes | None],
    pressure_range: tuple[float, float] = PRESSURE_RANGE_KPA,
    require_key: bool = False,
) -> DecodedBatch:
    """:func:`decode_reading` over many messages, into columns (no object per reading).

    Same decisions as :func:`decode_reading`, message by message: a value that is
    plainly valid -- a JSON object whose tank id was validated before (the cache), a
    timestamp string validated before or float epoch seconds in range, float readings
    in range, no event, the key matching -- is taken directly; anything else goes
    through :func:`decode_reading`, which accepts it or names the reason.
    ``loads(bytes.decode())``: strict UTF-8 as in :func:`decode_reading` (``json.loads``
    of bytes would also take UTF-16/32). ``require_key``: a reading that is valid but
    has no key is rejected as :data:`NO_KEY` (the pipeline's rule, docs/pipeline.md).
    """
    out = DecodedBatch([], [], [], [], [], [], [])
    index, ids, tss, ps, ts_, evs = (
        out.index, out.tank_ids, out.ts, out.pressure_kpa, out.temperature_c, out.event
    )  # fmt: skip
    # orjson parses ~3x faster than json (strict UTF-8 too). Where the two differ it
    # refuses (NaN, 1e400, lone surrogates) or gives a float for an integer beyond 64
    # bits (far outside every range below), so such a value always ends in
    # decode_reading, which decides with json as before.
    loads: Callable[[bytes], Any] = _orjson.loads if _orjson else lambda v: json.loads(v.decode())
    ids_ok, ts_ok = _VALID_IDS, _TS_CACHE
    plo, phi = pressure_range
    tlo, thi = TEMPERATURE_RANGE_C
    ts_lo, ts_hi = TS_RANGE_S
    for i, value in enumerate(values):
        key = keys[i]
        if value is not None and len(value) <= MAX_MESSAGE_BYTES:
            try:
                obj = loads(value)
            except (ValueError, RecursionError):
                obj = None
            if type(obj) is dict:
                get = obj.get
                tank_id = get("tank_id")
                ts_value = get("ts")
                pressure = get("pressure_kpa")
                temperature = get("temperature_c")
                if (
                    type(tank_id) is str
                    and type(pressure) is float
                    and type(temperature) is float
                    and plo <= pressure <= phi
                    and tlo <= temperature <= thi
                    and get("event") is None
                ):
                    expected = ids_ok.get(tank_id)
                    if type(ts_value) is str:
                        ts = ts_ok.get(ts_value)
                    elif type(ts_value) is float and ts_lo <= ts_value <= ts_hi:
                        ts = ts_value  # epoch seconds (NaN fails the comparison)
                    else:
                        ts = None
                    # Duplicate keys (see _surely_unique), inlined for the usual
                    # four-field reading: one colon per pair plus those in its strings.
                    # An escape can only hide a colon of those strings, so without one
                    # there (plain id, epoch ts) no backslash check is needed.
                    if len(obj) == 4:
                        extra = tank_id.count(":")
                        if type(ts_value) is str:
                            extra += ts_value.count(":")
                        unique = value.count(b":") == 4 + extra and (
                            not extra or b"\\" not in value
                        )
                    else:
                        unique = _surely_unique(value, obj)
                    if expected is not None and ts is not None and key == expected and unique:
                        index.append(i)
                        ids.append(tank_id)
                        tss.append(ts)
                        ps.append(pressure)
                        ts_.append(temperature)
                        evs.append(False)
                        continue
        try:
            r = decode_reading(value, key, pressure_range)
            if key is None and require_key:
                raise DecodeError(NO_KEY, f"reading of {r.tank_id!r} has no key")
        except DecodeError as exc:
            out.rejected.append((i, exc))
            continue
        index.append(i)
        ids.append(r.tank_id)
        tss.append(r.ts)
        ps.append(r.pressure_kpa)
        ts_.append(r.temperature_c)
        evs.append(r.event is not None)
    return out


def format_ts(ts: float) -> str:
    """Epoch seconds to RFC 3339 UTC with a ``Z`` (milliseconds only when needed).

    >>> format_ts(1704067200.0)
    '2024-01-01T00:00:00Z'
    """
    dt = datetime.fromtimestamp(ts, tz=UTC)
    if dt.microsecond:
        return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return dt.isoformat(timespec="seconds").replace("+00:00", "Z")


def encode_reading(reading: Reading) -> tuple[bytes, bytes]:
    """A reading to its Kafka (key, value): key is the tank_id, value compact JSON."""
    obj: dict[str, Any] = {
        "tank_id": reading.tank_id,
        "ts": format_ts(reading.ts),
        "pressure_kpa": round(reading.pressure_kpa, 4),
        "temperature_c": round(reading.temperature_c, 4),
    }
    if reading.event is not None:
        obj["event"] = reading.event
    return reading.tank_id.encode(), json.dumps(obj, separators=(",", ":")).encode()
