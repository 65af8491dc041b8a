"""Stream vs model: readings outside the trained range per tank, cadence, reference."""

from __future__ import annotations

import numpy as np
import pytest

from models.data_checks import cadence_warning, check_reference, range_bounds
from pipeline.input_checks import CADENCE_SAMPLE, InputChecks
from tankwatch.codec import decode_batch, decode_reading, pressure_limits
from tankwatch.errors import ConfigError, DecodeError

META = {
    "model_version": "m1",
    "pressure_reference": "gauge",
    "value_range": {"pressure_kpa": [-2.0, 3.0], "temperature_c": [10.0, 30.0]},
}


def test_out_of_range_readings_are_counted_per_tank() -> None:
    checks = InputChecks(60.0, range_bounds(META, ("pressure_kpa", "temperature_c")))
    ids = ["A", "B", "A", "C"]
    values = np.array([[0.0, 20.0], [5.0, 20.0], [-3.0, 35.0], [1.0, 29.0]])
    new = checks.observe(ids, np.array([0.0, 0.0, 60.0, 60.0]), values)
    assert new == {"B": 1, "A": 1}
    checks.observe(["B"], np.array([120.0]), np.array([[4.0, 20.0]]))
    assert checks.out_of_range == {"A": 1, "B": 2}
    # No recorded range (older artifacts): nothing is counted.
    assert InputChecks(60.0, None).observe(["A"], np.zeros(1), np.array([[1e6, 1e6]])) == {}


def test_cadence_is_judged_once_from_the_first_spacings() -> None:
    checks = InputChecks(60.0, None)
    n = CADENCE_SAMPLE + 10
    checks.observe(["A"] * n, np.arange(n, dtype=float), np.zeros((n, 2)))
    assert checks.cadence_message is not None and "about 1 s apart" in checks.cadence_message
    ok = InputChecks(60.0, None)
    ok.observe(["A"] * n, 60.0 * np.arange(n), np.zeros((n, 2)))
    assert ok.cadence_message is None
    assert cadence_warning(1.0, 60.0) and not cadence_warning(70.0, 60.0)


def test_a_model_refuses_the_other_pressure_reference_in_one_line() -> None:
    check_reference(META, "gauge")
    with pytest.raises(ConfigError) as info:
        check_reference(META, "absolute")
    assert "\n" not in str(info.value) and "trained on gauge pressure" in str(info.value)
    check_reference({}, "absolute")  # older artifacts: absolute


def test_codec_limits_follow_the_fleet_reference() -> None:
    value = b'{"tank_id":"T1","ts":1709251200,"pressure_kpa":-12.5,"temperature_c":20.0}'
    with pytest.raises(DecodeError) as info:
        decode_reading(value)
    assert info.value.reason == "out_of_range"
    gauge = pressure_limits("gauge")
    assert decode_reading(value, pressure_range=gauge).pressure_kpa == -12.5
    batch = decode_batch([value, value], [None, b"T1"], gauge)
    assert batch.pressure_kpa == [-12.5, -12.5] and not batch.rejected
    assert pressure_limits("absolute", high=300.0) == (0.0, 300.0)
    with pytest.raises(ValueError):
        pressure_limits("gauge", low=10.0, high=5.0)


def test_schema_documents_the_limits_of_both_references() -> None:
    from tankwatch.codec import PRESSURE_LIMITS_KPA, schema

    limits = schema()["properties"]["pressure_kpa"]["x-pressure-limits-kpa"]
    assert {k: tuple(v) for k, v in limits.items()} == PRESSURE_LIMITS_KPA
