"""The tank.readings contract: hand-typed readings decode, every reject reason fires,
encode/decode round-trips, and the hand-written validation agrees with the JSON schema."""

from __future__ import annotations

import json
import math

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tankwatch.codec import (
    EVENTS,
    MAX_MESSAGE_BYTES,
    PRESSURE_RANGE_KPA,
    REJECT_REASONS,
    TEMPERATURE_RANGE_C,
    Reading,
    decode_batch,
    decode_reading,
    encode_reading,
    schema,
    validate,
)
from tankwatch.errors import DecodeError


def _validator() -> jsonschema.protocols.Validator:
    cls = jsonschema.validators.validator_for(schema())
    return cls(schema())


# --- what a person types into kcat / a shell -------------------------------------------


def test_hand_typed_rfc3339_reading_decodes() -> None:
    raw = b'{"tank_id":"T01","ts":"2024-03-01T00:00:00Z","pressure_kpa":101.2,"temperature_c":14.5}'
    r = decode_reading(raw, key=b"T01")
    assert r == Reading("T01", 1709251200.0, 101.2, 14.5, None)


def test_hand_typed_epoch_seconds_and_integers_decode() -> None:
    raw = b'{"tank_id": "T01", "ts": 1709251200, "pressure_kpa": 101, "temperature_c": 14}'
    r = decode_reading(raw)
    assert (r.ts, r.pressure_kpa, r.temperature_c) == (1709251200.0, 101.0, 14.0)


def test_hand_typed_reading_with_event_and_offset_decodes() -> None:
    raw = (
        b'{"tank_id":"T07","ts":"2024-03-01T01:00:00+01:00","pressure_kpa":102.5,'
        b'"temperature_c":-3.25,"event":"refill"}'
    )
    r = decode_reading(raw, key=b"T07")
    assert (r.ts, r.event) == (1709251200.0, "refill")


def test_null_event_is_no_event() -> None:
    raw = b'{"tank_id":"T01","ts":0,"pressure_kpa":1,"temperature_c":1,"event":null}'
    assert decode_reading(raw).event is None


# --- every reject reason ----------------------------------------------------------------

_GOOD = {
    "tank_id": "T01",
    "ts": "2024-03-01T00:00:00Z",
    "pressure_kpa": 101.2,
    "temperature_c": 14.5,
}


def _with(**changes: object) -> bytes:
    obj = dict(_GOOD)
    for k, v in changes.items():
        if v is _DROP:
            obj.pop(k)
        else:
            obj[k] = v
    return json.dumps(obj).encode()


_DROP = object()

#: reason -> (value bytes, key). Each case triggers exactly that reason.
REASON_CASES: dict[str, list[tuple[bytes, bytes | None]]] = {
    "oversized": [(b'{"x": "' + b"a" * (MAX_MESSAGE_BYTES + 10) + b'"}', None)],
    "bad_encoding": [(b'{"tank_id": "\xff\xfe"}', None)],
    "bad_json": [(b"{not json", None), (b"", None), (b'{"tank_id": "T1",', None)],
    "not_object": [(b"[1, 2, 3]", None), (b'"T01"', None), (b"42", None)],
    "missing_field": [
        (_with(ts=_DROP), None),
        (_with(pressure_kpa=None), None),
        (_with(tank_id=_DROP), None),
        (_with(temperature_c=_DROP), None),
    ],
    "wrong_type": [
        (_with(pressure_kpa="101.2"), None),
        (_with(temperature_c=True), None),
        (_with(tank_id=7), None),
        (_with(ts=[2024]), None),
        (_with(event=3), None),
    ],
    "invalid_tank_id": [(_with(tank_id=""), None), (_with(tank_id="T 01"), None)],
    "bad_timestamp": [(_with(ts="yesterday noon"), None), (_with(ts="2024-13-45T00:00:00Z"), None)],
    "not_finite": [
        (b'{"tank_id":"T01","ts":0,"pressure_kpa":NaN,"temperature_c":1}', None),
        (b'{"tank_id":"T01","ts":0,"pressure_kpa":1,"temperature_c":Infinity}', None),
    ],
    "out_of_range": [
        (_with(pressure_kpa=PRESSURE_RANGE_KPA[1] + 1), None),
        (_with(temperature_c=TEMPERATURE_RANGE_C[0] - 1), None),
        (_with(ts=-5), None),
    ],
    "unknown_event": [(_with(event="exploded"), None)],
    "key_mismatch": [(_with(), b"T02")],
    "duplicate_key": [(b'{"tank_id":"T01",' + _with()[1:], b"T01")],
}


def test_every_reject_reason_has_a_case() -> None:
    assert set(REASON_CASES) == set(REJECT_REASONS)


@pytest.mark.parametrize(
    ("reason", "value", "key"),
    [(reason, v, k) for reason, cases in REASON_CASES.items() for v, k in cases],
)
def test_reject_reason(reason: str, value: bytes, key: bytes | None) -> None:
    with pytest.raises(DecodeError) as info:
        decode_reading(value, key=key)
    assert info.value.reason == reason


def test_tombstone_is_rejected() -> None:
    with pytest.raises(DecodeError) as info:
        decode_reading(None)
    assert info.value.reason in REJECT_REASONS


# --- round trip -------------------------------------------------------------------------

tank_ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,20}", fullmatch=True)
readings = st.builds(
    Reading,
    tank_id=tank_ids,
    # Whole milliseconds: the wire format carries millisecond precision.
    ts=st.integers(0, 32503680000 * 1000 - 1).map(lambda ms: ms / 1000.0),
    pressure_kpa=st.floats(*PRESSURE_RANGE_KPA, allow_nan=False),
    temperature_c=st.floats(*TEMPERATURE_RANGE_C, allow_nan=False),
    event=st.none() | st.sampled_from(sorted(EVENTS)),
)


@settings(max_examples=300, deadline=None)
@given(readings)
def test_encode_decode_round_trip(reading: Reading) -> None:
    key, value = encode_reading(reading)
    back = decode_reading(value, key=key)
    assert key == reading.tank_id.encode()
    assert back.tank_id == reading.tank_id
    assert back.event == reading.event
    assert back.ts == pytest.approx(reading.ts, abs=1e-3)
    # Values are rounded to 4 decimals on the wire.
    assert back.pressure_kpa == pytest.approx(reading.pressure_kpa, abs=1e-4)
    assert back.temperature_c == pytest.approx(reading.temperature_c, abs=1e-4)
    _validator().validate(json.loads(value))


# --- hand-written validation == JSON schema --------------------------------------------

VALID_SAMPLES: list[object] = [
    dict(_GOOD),
    {**_GOOD, "event": "maintenance"},
    {**_GOOD, "event": None},
    {**_GOOD, "ts": 0},
    {**_GOOD, "ts": 1709251200.5},
    {**_GOOD, "ts": "2024-03-01T00:00:00"},
    {**_GOOD, "pressure_kpa": 0, "temperature_c": -80},
    {**_GOOD, "pressure_kpa": 5000, "temperature_c": 200},
    {**_GOOD, "tank_id": "site-1:tank_07.a"},
    {**_GOOD, "extra": "ignored"},
]
INVALID_SAMPLES: list[object] = [
    [],
    "T01",
    {k: v for k, v in _GOOD.items() if k != "ts"},
    {k: v for k, v in _GOOD.items() if k != "tank_id"},
    {**_GOOD, "pressure_kpa": "101"},
    {**_GOOD, "pressure_kpa": -0.1},
    {**_GOOD, "pressure_kpa": 5000.1},
    {**_GOOD, "temperature_c": 200.5},
    {**_GOOD, "temperature_c": None},
    {**_GOOD, "tank_id": ""},
    {**_GOOD, "tank_id": "-T01"},
    {**_GOOD, "tank_id": 12},
    {**_GOOD, "ts": -1},
    {**_GOOD, "ts": 32503680001},
    {**_GOOD, "ts": "short"},
    {**_GOOD, "ts": True},
    {**_GOOD, "event": "party"},
    {**_GOOD, "event": 1},
]


def _hand_accepts(obj: object) -> bool:
    try:
        validate(obj)
    except DecodeError:
        return False
    return True


@pytest.mark.parametrize("obj", VALID_SAMPLES)
def test_schema_and_code_accept(obj: object) -> None:
    assert _validator().is_valid(obj)
    assert _hand_accepts(obj)


@pytest.mark.parametrize("obj", INVALID_SAMPLES)
def test_schema_and_code_reject(obj: object) -> None:
    assert not _validator().is_valid(obj)
    assert not _hand_accepts(obj)


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(10**12), 10**12)
    | st.floats(-1e6, 1e6, allow_nan=False)
    | st.text(max_size=12)
    | st.sampled_from(["2024-03-01T00:00:00Z", "T01", "refill", "maintenance"])
)


@settings(max_examples=300, deadline=None)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "tank_id": json_scalars | tank_ids,
            "ts": json_scalars,
            "pressure_kpa": json_scalars,
            "temperature_c": json_scalars,
            "event": json_scalars,
        },
    )
)
def test_schema_and_code_agree_on_random_objects(obj: dict[str, object]) -> None:
    # Known, documented difference: the schema bounds string timestamps by length only,
    # the code parses them; so only compare where ts is not an arbitrary string.
    ts = obj.get("ts")
    if isinstance(ts, str) and ts != "2024-03-01T00:00:00Z":
        return
    assert _validator().is_valid(obj) == _hand_accepts(obj), obj


def test_nan_is_not_finite_even_though_json_allows_it() -> None:
    obj = {**_GOOD, "pressure_kpa": math.nan}
    with pytest.raises(DecodeError) as info:
        validate(obj)
    assert info.value.reason == "not_finite"


# --- batch decode -------------------------------------------------------------------------

_BAD = [(v, k) for cases in REASON_CASES.values() for v, k in cases]


def _good(reading: Reading, keyed: bool) -> tuple[bytes, bytes | None]:
    key, value = encode_reading(reading)
    return value, key if keyed else None


def _epoch(reading: Reading, as_int: bool) -> tuple[bytes, bytes | None]:
    """The reading with ``ts`` as JSON epoch seconds (float or integer)."""
    obj = json.loads(encode_reading(reading)[1])
    obj["ts"] = int(reading.ts) if as_int else reading.ts
    return json.dumps(obj).encode(), None


def _mutated(pair: tuple[bytes, bytes | None], cut: int, junk: bytes) -> tuple[bytes, bytes | None]:
    """A good message with some bytes replaced: valid, or bad for any reason."""
    value, key = pair
    return value[:cut] + junk + value[cut + len(junk) :], key


messages = st.one_of(
    st.builds(_good, readings, st.booleans()),
    st.builds(_epoch, readings, st.booleans()),
    st.sampled_from(_BAD),
    st.builds(
        _mutated,
        st.builds(_good, readings, st.booleans()),
        st.integers(0, 80),
        st.binary(min_size=1, max_size=3),
    ),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(messages, max_size=20), st.integers(1, 3))
def test_decode_batch_decides_every_message_as_decode_reading_does(
    msgs: list[tuple[bytes, bytes | None]], repeat: int
) -> None:
    # Repeats: the second time round the tank ids and timestamps are cached, which is
    # when the batch's shortcut applies.
    msgs = msgs * repeat
    got = decode_batch([v for v, _ in msgs], [k for _, k in msgs])
    columns = zip(got.tank_ids, got.ts, got.pressure_kpa, got.temperature_c, got.event, strict=True)
    accepted = dict(zip(got.index, columns, strict=True))
    rejected = {i: exc.reason for i, exc in got.rejected}
    assert len(accepted) + len(rejected) == len(msgs) and got.index == sorted(got.index)
    for i, (value, key) in enumerate(msgs):
        try:
            r = decode_reading(value, key)
        except DecodeError as exc:
            assert rejected.get(i) == exc.reason, (value, key)
            continue
        assert accepted[i] == (
            r.tank_id, r.ts, r.pressure_kpa, r.temperature_c, r.event is not None
        )  # fmt: skip


def test_deeply_nested_json_is_bad_json_not_a_crash() -> None:
    value = b"[" * 2000 + b"]" * 2000  # within the size limit, past the parser's depth
    assert len(value) <= MAX_MESSAGE_BYTES
    with pytest.raises(DecodeError) as info:
        decode_reading(value)
    assert info.value.reason == "bad_json"
    assert [exc.reason for _, exc in decode_batch([value], [None]).rejected] == ["bad_json"]
