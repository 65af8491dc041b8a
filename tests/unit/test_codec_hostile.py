"""Issue 10 items 1, 4 and 8: whatever a producer sends, decoding one message raises
nothing but a :class:`DecodeError` with a known reason.

Property tests throw arbitrary bytes and arbitrary JSON (every JSON type in every field,
integers of hundreds of digits, tiny and huge floats, deep nesting, duplicate keys) at
``decode_reading`` and ``decode_batch``: 4 x 2,500 examples = 10,000 cases per run.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tankwatch.codec import NO_KEY, REJECT_REASONS, decode_batch, decode_reading
from tankwatch.errors import DecodeError

KNOWN = set(REJECT_REASONS) | {NO_KEY}
GOOD = {"tank_id": "T01", "ts": 1_700_000_000.5, "pressure_kpa": 101.3, "temperature_c": 15.0}
FIELDS = ["tank_id", "ts", "pressure_kpa", "temperature_c", "event"]
CASES = settings(max_examples=2500, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_huge_ints = st.integers(min_value=1, max_value=600).map(lambda n: int("9" * n)) | st.integers()
_numbers = (
    _huge_ints
    | _huge_ints.map(lambda i: -i)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([5e-324, -5e-324, 1e308, -1e308, 0.0, -0.0])
)
_scalars = st.none() | st.booleans() | _numbers | st.text(max_size=30)
json_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _dump(obj: Any) -> bytes:
    # Python's json writes NaN/Infinity and big ints as many producers do; past
    # sys.get_int_max_str_digits it refuses, so write such ints digit by digit.
    try:
        return json.dumps(obj, allow_nan=True).encode()
    except ValueError:
        return b'{"tank_id": "T01", "ts": 1' + b"0" * 5000 + b"}"


@st.composite
def hostile_objects(draw: st.DrawFn) -> bytes:
    """A reading with any JSON value in any field (some fields dropped, some extra)."""
    obj: dict[str, Any] = dict(GOOD)
    for f in draw(st.lists(st.sampled_from(FIELDS), max_size=5)):
        obj[f] = draw(json_values)
    for f in draw(st.lists(st.sampled_from(FIELDS), max_size=2)):
        obj.pop(f, None)
    text = _dump(obj)
    if draw(st.booleans()) and len(obj) > 0:  # write one field a second time
        f = draw(st.sampled_from(sorted(obj)))
        pair = _dump({f: draw(json_values)})[1:-1]
        text = b"{" + pair + b", " + text[1:] if text.startswith(b"{") and pair else text
    depth = draw(st.integers(0, 3)) * 400
    if depth:
        text = b"[" * depth + text + b"]" * depth
    return text


def _check(value: bytes | None, key: bytes | None) -> None:
    """Only known rejects, and decode_batch (its orjson fast path included) decides
    exactly as decode_reading (json), message for message."""
    want: tuple[Any, ...]
    try:
        r = decode_reading(value, key)
        want = (r.tank_id, r.ts, r.pressure_kpa, r.temperature_c, r.event is not None)
        if key is None:
            want = (NO_KEY,)  # the pipeline's rule (require_key)
    except DecodeError as exc:
        assert exc.reason in KNOWN, exc
        want = (exc.reason,)
    got = decode_batch([value, value], [key, key], require_key=True)
    assert len(got.index) + len(got.rejected) == 2
    assert all(exc.reason in KNOWN for _, exc in got.rejected)
    decided = [(exc.reason,) for _, exc in got.rejected] + [
        (got.tank_ids[j], got.ts[j], got.pressure_kpa[j], got.temperature_c[j], got.event[j])
        for j in range(len(got.index))
    ]
    assert decided == [want, want], (value, key)


@pytest.mark.parametrize(
    "value",
    [
        # Where orjson and json part ways: NaN and 1e400 (json parses, orjson refuses),
        # a lone surrogate (same), integers beyond 64 bits (orjson: a float).
        b'{"tank_id":"T01","ts":1700000000.5,"pressure_kpa":NaN,"temperature_c":15.0}',
        b'{"tank_id":"T01","ts":1700000000.5,"pressure_kpa":1e400,"temperature_c":15.0}',
        b'{"tank_id":"T01\\ud800","ts":1700000000.5,"pressure_kpa":101.3,"temperature_c":15.0}',
        b'{"tank_id":"T01","ts":1700000000.5,"pressure_kpa":123456789012345678901,'
        b'"temperature_c":15.0}',
        b'{"tank_id":"T01","ts":17000000000000000000000,"pressure_kpa":101.3,"temperature_c":1.0}',
        b'{"tank_id":"T01","ts":1700000000.5,"pressure_kpa":101.3,"temperature_c":15.0}',
        b' {"tank_id":"T01","ts":"2023-11-14T22:13:20Z","pressure_kpa":101.3,"temperature_c":1.5} ',
    ],
)
def test_the_batch_decoder_decides_as_decode_reading_where_parsers_differ(value: bytes) -> None:
    _check(value, b"T01")


@CASES
@given(st.binary(max_size=300), st.none() | st.binary(max_size=12))
def test_arbitrary_bytes_only_ever_reject(value: bytes, key: bytes | None) -> None:
    _check(value, key)


@CASES
@given(hostile_objects(), st.sampled_from([None, b"T01", b"x"]))
def test_arbitrary_json_in_every_field_only_ever_rejects(value: bytes, key: bytes | None) -> None:
    _check(value, key)


@CASES
@given(json_values)
def test_arbitrary_json_documents_only_ever_reject(obj: Any) -> None:
    _check(_dump(obj), None)


@CASES
@given(st.sampled_from(["ts", "pressure_kpa", "temperature_c"]), st.integers(309, 4000))
def test_integers_beyond_float_range_are_out_of_range(field: str, digits: int) -> None:
    text = json.dumps(GOOD).replace(json.dumps(GOOD[field]), "7" * digits, 1).encode()
    for sign in (b"", b"-"):
        value = text.replace(b"7" * digits, sign + b"7" * digits)
        with pytest.raises(DecodeError) as info:
            decode_reading(value, b"T01")
        assert info.value.reason == "out_of_range"
        got = decode_batch([value], [b"T01"])
        assert [e.reason for _, e in got.rejected] == ["out_of_range"]


def test_400_digit_integer_is_a_reject_not_overflow_error() -> None:
    # The case exactly: before the fix float() raised OverflowError here.
    value = (
        b'{"tank_id":"T01","ts":1700000000,"pressure_kpa":' + b"1" * 400 + b',"temperature_c":1}'
    )
    with pytest.raises(DecodeError) as info:
        decode_reading(value, b"T01")
    assert info.value.reason == "out_of_range"
    value = b'{"tank_id":"T01","ts":' + b"2" * 400 + b',"pressure_kpa":1.5,"temperature_c":1}'
    assert [e.reason for _, e in decode_batch([value], [b"T01"]).rejected] == ["out_of_range"]


@pytest.mark.parametrize(
    "text",
    [
        '{"tank_id":"A","tank_id":"B","ts":1700000000.0,"pressure_kpa":1.5,"temperature_c":1.5}',
        '{"tank_id":"A","ts":1700000000.0,"pressure_kpa":1.5,"pressure_kpa":9.5,"temperature_c":1.5}',
        '{"tank_id":"A","ts":1700000000.0,"ts":1700000000.0,"pressure_kpa":1.5,"temperature_c":1.5}',
        # an escaped colon cannot hide the second pair from the fast check
        '{"x":1,"x":"\\u003a","tank_id":"A","ts":1700000000.0,"pressure_kpa":1.5,"temperature_c":1.5}',
        '{"tank_id":"A","ts":1700000000.0,"pressure_kpa":1.5,"temperature_c":1.5,"n":{"a":1,"a":2}}',
        # the same for an id with a colon, escaped twice: the colon count alone would match
        '{"tank_id":"T\\u003a1","tank_id":"T\\u003a1","ts":1700000000.0,"pressure_kpa":1.5,'
        '"temperature_c":1.5}',
        '{"tank_id":"T:1","tank_id":"T:1","ts":"2024-01-01T00:00:00Z","pressure_kpa":1.5,'
        '"temperature_c":1.5}',
    ],
)
def test_duplicate_keys_are_rejected_as_ambiguous(text: str) -> None:
    value = text.encode()
    key = json.loads(text)["tank_id"].encode()
    with pytest.raises(DecodeError) as info:
        decode_reading(value, key)
    assert info.value.reason == "duplicate_key"
    # The same reading without the duplicate is valid: decoding it caches the tank id
    # and ts, so the batch's shortcut (the colon count) is what must catch the duplicate.
    decode_reading(json.dumps(json.loads(text)).encode(), key)
    got = decode_batch([value, value], [key, key])
    assert [e.reason for _, e in got.rejected] == ["duplicate_key", "duplicate_key"]


def test_a_valid_reading_without_a_key_is_rejected_as_no_key_by_the_pipeline_rule() -> None:
    value = json.dumps(GOOD).encode()
    decode_reading(value, None)  # the codec alone does not require a key
    got = decode_batch([value, value], [None, b"T01"], require_key=True)
    assert [(i, e.reason) for i, e in got.rejected] == [(0, NO_KEY)]
    assert got.index == [1]
    # a keyless message with another defect keeps that reason
    bad = json.dumps({**GOOD, "pressure_kpa": "x"}).encode()
    assert [e.reason for _, e in decode_batch([bad], [None], require_key=True).rejected] == [
        "wrong_type"
    ]
