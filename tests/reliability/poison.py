"""Malformed ``tank.readings`` messages of every rejection kind, from Hypothesis.

One strategy per reason of :data:`tankwatch.codec.REJECT_REASONS`; each draws a
(key, value) pair built to be rejected for *that* reason. :func:`poison_batch` draws a
deterministic batch (``derandomize=True``, no example database) and checks every item
against :func:`tankwatch.codec.decode_reading`: an item the codec rejects for another
reason, or accepts, is a bug in the generator and fails loudly instead of silently
testing something else.

Good readings use tank ids ``T...``; poison uses ``P...`` ids (when it has a valid id
at all), so a poison message can never be mistaken for a good tank's reading.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tankwatch.codec import EVENTS, MAX_MESSAGE_BYTES, REJECT_REASONS, decode_reading
from tankwatch.errors import DecodeError

Message = tuple[bytes | None, bytes | None]

_tank_ids = st.integers(0, 999).map(lambda i: f"P{i:03d}")
_ts = st.floats(1_600_000_000, 1_800_000_000, allow_nan=False).map(lambda x: round(x, 3))
_pressure = st.floats(1.0, 4000.0, allow_nan=False).map(lambda x: round(x, 3))
_temperature = st.floats(-50.0, 150.0, allow_nan=False).map(lambda x: round(x, 3))


@st.composite
def _reading(draw: st.DrawFn) -> dict[str, Any]:
    """A valid reading object (poison is built by breaking one thing in it)."""
    obj: dict[str, Any] = {
        "tank_id": draw(_tank_ids),
        "ts": draw(_ts),
        "pressure_kpa": draw(_pressure),
        "temperature_c": draw(_temperature),
    }
    if draw(st.booleans()):
        obj["event"] = draw(st.sampled_from(sorted(EVENTS)))
    return obj


def _dump(obj: Any) -> bytes:
    # allow_nan: the JSON that Python (and many producers) write for NaN/Infinity.
    return json.dumps(obj, allow_nan=True).encode()


def _keyed(obj: dict[str, Any], value: bytes) -> Message:
    tank = obj.get("tank_id")
    return (tank.encode() if isinstance(tank, str) else None), value


@st.composite
def oversized(draw: st.DrawFn) -> Message:
    obj = draw(_reading())
    obj["note"] = "x" * draw(st.integers(MAX_MESSAGE_BYTES, MAX_MESSAGE_BYTES * 3))
    return _keyed(obj, _dump(obj))


@st.composite
def bad_encoding(draw: st.DrawFn) -> Message:
    text = _dump(draw(_reading()))
    cut = draw(st.integers(0, len(text)))
    # A lone continuation byte / invalid lead byte is never valid UTF-8.
    junk = draw(st.sampled_from([b"\xff", b"\xfe", b"\x80", b"\xc3\x28", b"\xed\xa0\x80"]))
    return draw(st.none() | st.just(b"P001")), text[:cut] + junk + text[cut:]


@st.composite
def bad_json(draw: st.DrawFn) -> Message:
    text = _dump(draw(_reading())).decode()
    kind = draw(st.sampled_from(["truncated", "garbage", "tombstone", "empty", "trailing"]))
    if kind == "tombstone":
        return b"P001", None
    if kind == "empty":
        return None, b""
    if kind == "truncated":
        value = text[: draw(st.integers(1, len(text) - 1))]
    elif kind == "trailing":
        value = text + draw(st.sampled_from([",", "}", " x", "{}"]))
    else:
        value = draw(st.text(st.characters(codec="utf-8"), min_size=1, max_size=60))
        value = "{" + value if not value.startswith("{") else value + "'"
    return None, value.encode()


@st.composite
def not_object(draw: st.DrawFn) -> Message:
    scalar = st.none() | st.booleans() | st.integers() | st.text(max_size=20)
    value = draw(scalar | st.lists(scalar, max_size=5) | _reading().map(lambda o: [o]))
    return None, _dump(value)


@st.composite
def missing_field(draw: st.DrawFn) -> Message:
    obj = draw(_reading())
    field = draw(st.sampled_from(["tank_id", "ts", "pressure_kpa", "temperature_c"]))
    if draw(st.booleans()):
        del obj[field]
    else:
        obj[field] = None
    return None, _dump(obj)


@st.composite
def wrong_type(draw: st.DrawFn) -> Message:
    obj = draw(_reading())
    field = draw(st.sampled_from(["tank_id", "ts", "pressure_kpa", "temperature_c", "event"]))
    bad: st.SearchStrategy[Any] = (
        st.booleans() | st.lists(st.integers(), max_size=3) | st.just({"v": 1})
    )
    if field in ("pressure_kpa", "temperature_c"):
        bad = bad | st.just("101.3")
    if field in ("tank_id", "event"):
        bad = bad | st.integers()
    obj[field] = draw(bad)
    return _keyed(obj, _dump(obj))


@st.composite
def invalid_tank_id(draw: st.DrawFn) -> Message:
    obj = draw(_reading())
    obj["tank_id"] = draw(
        st.sampled_from(["", "-P1", " P1", "P 1", "P1/2", "tank#1", "Ä1", "P1\n"])
        | st.text(min_size=129, max_size=200, alphabet="abc")
    )
    return _keyed(obj, _dump(obj))


@st.composite
def bad_timestamp(draw: st.DrawFn) -> Message:
    obj = draw(_reading())
    obj["ts"] = draw(
        st.sampled_from(
            [
                "yesterday",
                "2024-13-01T00:00:00Z",
                "2024-01-32T00:00:00Z",
                "01/02/2024 10:00",
                "2024-01-01T25:61:00Z",
                "",
                "2024",
                "x" * 50,
            ]
        )
    )
    return _keyed(obj, _dump(obj))


@st.composite
def not_finite(draw: st.DrawFn) -> Message:
    obj = draw(_reading())
    field = draw(st.sampled_from(["ts", "pressure_kpa", "temperature_c"]))
    obj[field] = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
    return _keyed(obj, _dump(obj))


@st.composite
def out_of_range(draw: st.DrawFn) -> Message:
    obj = draw(_reading())
    field, bad = draw(
        st.sampled_from(
            [
                ("pressure_kpa", st.floats(-1e9, -0.001)),
                ("pressure_kpa", st.floats(5000.001, 1e12)),
                ("temperature_c", st.floats(-1e6, -80.001)),
                ("temperature_c", st.floats(200.001, 1e6)),
                ("ts", st.floats(-1e9, -1.0)),
                ("ts", st.floats(32503680001.0, 1e15)),
            ]
        )
    )
    obj[field] = draw(bad)
    return _keyed(obj, _dump(obj))


@st.composite
def unknown_event(draw: st.DrawFn) -> Message:
    obj = draw(_reading())
    obj["event"] = draw(
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=0, max_size=20).filter(
            lambda e: e not in EVENTS
        )
    )
    return _keyed(obj, _dump(obj))


@st.composite
def key_mismatch(draw: st.DrawFn) -> Message:
    obj = draw(_reading())
    key = draw(st.sampled_from([b"", b"other", b"P-1"]) | _tank_ids.map(str.encode))
    if key == obj["tank_id"].encode():
        key += b"x"
    return key, _dump(obj)


@st.composite
def duplicate_key(draw: st.DrawFn) -> Message:
    """A valid reading whose text names one field twice (json.loads keeps the last)."""
    obj = draw(_reading())
    field = draw(st.sampled_from(sorted(obj)))
    text = _dump(obj).decode()
    again = json.dumps({field: obj[field]})[1:-1]  # the same pair, as it is written
    value = "{" + again + ", " + text[1:]
    return _keyed(obj, value.encode())


#: reason -> strategy of (key, value); covers every reason of the codec.
STRATEGIES: dict[str, Callable[[], st.SearchStrategy[Message]]] = {
    "oversized": oversized,
    "bad_encoding": bad_encoding,
    "bad_json": bad_json,
    "not_object": not_object,
    "missing_field": missing_field,
    "wrong_type": wrong_type,
    "invalid_tank_id": invalid_tank_id,
    "bad_timestamp": bad_timestamp,
    "not_finite": not_finite,
    "out_of_range": out_of_range,
    "unknown_event": unknown_event,
    "key_mismatch": key_mismatch,
    "duplicate_key": duplicate_key,
}
assert set(STRATEGIES) == set(REJECT_REASONS), "a rejection reason has no poison strategy"


def rejection_reason(key: bytes | None, value: bytes | None) -> str | None:
    """The codec's reason for rejecting (key, value), or None if it accepts it."""
    try:
        decode_reading(value, key)
    except DecodeError as exc:
        return exc.reason
    return None


def poison_batch(per_reason: int) -> list[tuple[str, bytes | None, bytes | None]]:
    """``per_reason`` (reason, key, value) items per rejection reason, deterministic.

    Hypothesis runs a generate-only "test" with a fixed derandomized seed; each example
    draws one item of every reason. Every item is checked against the codec.
    """
    out: list[tuple[str, bytes | None, bytes | None]] = []
    combined = st.tuples(*(STRATEGIES[r]() for r in REJECT_REASONS))

    @settings(
        max_examples=per_reason,
        derandomize=True,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        deadline=None,
    )
    @given(combined)
    def collect(items: tuple[Message, ...]) -> None:
        for reason, (key, value) in zip(REJECT_REASONS, items, strict=True):
            got = rejection_reason(key, value)
            assert got == reason, f"generator for {reason} made a {got} message: {value!r:.80}"
            out.append((reason, key, value))

    collect()
    return out
