"""Forecast records: valid against the schema, values exact, nulls where undefined."""

from __future__ import annotations

import json

import jsonschema
import numpy as np
import pytest

from pipeline.sinks.forecasts import encode_records, schema
from tests.unit.test_checkpoint import make_step, series, tick


def test_records_follow_the_schema_and_carry_exact_values() -> None:
    step = make_step()
    first = step.apply(tick(0, [0, 1], np.asarray([series(0, 0), series(1, 0)]), [-9, -9], [1, 1]))
    second = step.apply(tick(1, [0, 1], np.asarray([series(0, 1), series(1, 1)]), [0, 0]))
    ids = ["A", "B", None, None]
    validator = jsonschema.Draft202012Validator(schema())
    for out in (first, second):
        recs = encode_records(out, ids, 60.0, (1, 5, 15, 30), "lstm-x", "tank.readings")
        assert [k for k, _ in recs] == [b"A", b"B"]
        for i, (_, value) in enumerate(recs):
            rec = json.loads(value)
            validator.validate(rec)
            assert rec["tick"] == out.tick.tick and rec["tick_ts"].endswith("Z")
            assert rec["actual"]["pressure_kpa"] == float(out.tick.x[i, 0])
            assert rec["forecast"]["temperature_c"] == float(out.forecast[i, 1])
            assert rec["horizon"]["pressure_kpa"] == [float(v) for v in out.horizons[i, :, 0]]
            assert rec["source"] == {"topic": "tank.readings", "partition": 0, "offset": i}
    first_rec = json.loads(encode_records(first, ids, 60.0, (1, 5, 15, 30), "v", "t")[0][1])
    assert first_rec["residual"] is None and first_rec["reset"] == "new_tank"
    second_rec = json.loads(encode_records(second, ids, 60.0, (1, 5, 15, 30), "v", "t")[1][1])
    assert second_rec["residual"]["pressure_kpa"] == float(second.residual[1, 0])
    assert second_rec["reset"] is None and second_rec["anomaly_flag"] is False


def test_records_say_which_forecaster_is_served_and_whether_the_score_is_calibrated() -> None:
    from models.artifact import load_artifact
    from models.serving import ServingPlan
    from pipeline.config import default_model_dir

    plan = ServingPlan.from_artifact(load_artifact(default_model_dir()))
    served = plan.sources(("pressure_kpa", "temperature_c"), (1, 5, 15, 30))
    step = make_step()
    out = step.apply(tick(0, [0], np.asarray([series(0, 0)]), [-9], [1]))
    (_, value), *_ = encode_records(out, ["A"], 60.0, (5, 15, 30), "v", "t", served)
    rec = json.loads(value)
    jsonschema.Draft202012Validator(schema()).validate(rec)
    assert rec["served_from"]["forecast"] == {"pressure_kpa": "lstm", "temperature_c": "lstm"}
    assert rec["served_from"]["horizon"]["temperature_c"] == served["temperature_c"][1:]
    assert rec["anomaly_calibrated"] is True


def _edge_values(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """float32 values widened to float64 (as the records carry them), with the
    magnitudes where repr switches to exponent form, zeros, NaN and inf mixed in."""
    v = (rng.normal(0, 1, shape) * 10.0 ** rng.integers(-9, 20, shape)).astype(np.float32)
    flat = v.reshape(-1)
    picks = rng.integers(0, flat.size, 12)
    flat[picks] = [0.0, -0.0, np.nan, np.inf, -np.inf, 1e-4, 9.9e-5, 1e16, 1e-5, -1e17, 5.0, 1.0]
    return v


def test_numbers_are_written_exactly_as_repr_writes_them() -> None:
    from pipeline.sinks import forecasts

    rng = np.random.default_rng(11)
    for _ in range(20):
        a = _edge_values(rng, (500, 4))
        flat = np.asarray(a, np.float64).reshape(-1)
        assert forecasts._nums(a) == forecasts._nums_repr(flat)
        assert forecasts._num_rows(a) == forecasts._rows(forecasts._nums_repr(flat), 4)
    plain = (200 + 40 * rng.random((300, 4))).astype(np.float32)  # the common case
    flat = np.asarray(plain, np.float64).reshape(-1)
    assert forecasts._num_rows(plain) == forecasts._rows(forecasts._nums_repr(flat), 4)


def test_records_are_byte_identical_to_the_repr_path(monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    from pipeline.sinks import forecasts

    step = make_step()
    step.apply(tick(0, [0, 1], np.asarray([series(0, 0), series(1, 0)]), [-9, -9], [1, 1]))
    out = step.apply(tick(1, [0, 1], np.asarray([series(0, 1), series(1, 1)]), [0, 0]))
    rng = np.random.default_rng(5)
    odd = replace(
        out,
        forecast=_edge_values(rng, out.forecast.shape),
        horizons=_edge_values(rng, out.horizons.shape),
        score=np.asarray([3.2e-07, 1e16]),
    )
    ids = ["A", "B", None, None]
    for o in (out, odd):
        fast = encode_records(o, ids, 60.0, (1, 5, 15, 30), "lstm-x", "tank.readings")
        with monkeypatch.context() as m:
            m.setattr(forecasts, "_orjson", None)  # every number through repr
            slow = encode_records(o, ids, 60.0, (1, 5, 15, 30), "lstm-x", "tank.readings")
        assert fast == slow


def test_per_tick_strings_with_percent_signs_and_quotes_come_out_as_given() -> None:
    """The record is formatted in two stages (the tick's shared fields, then each
    record's own): a ``%`` or a quote in a shared string must come out as it is."""
    from dataclasses import replace

    step = make_step()
    step.apply(tick(0, [0, 1], np.asarray([series(0, 0), series(1, 0)]), [-9, -9], [1, 1]))
    out = step.apply(tick(1, [0, 1], np.asarray([series(0, 1), series(1, 1)]), [0, 0]))
    served = {"pressure_kpa": ["lstm", "holt%s"], "temperature_c": ["persistence", "lstm"]}
    version, topic = 'm%s"\\%d', "t%s%%"
    for o in (out, replace(out, horizon_age=np.array([0, 2]))):
        recs = encode_records(o, ["A", "B", None, None], 60.0, (1, 30), version, topic, served)
        for i, (key, value) in enumerate(recs):
            rec = json.loads(value)
            assert key.decode() == rec["tank_id"] == "AB"[i]
            assert rec["model_version"] == version and rec["source"]["topic"] == topic
            assert rec["served_from"]["horizon"]["pressure_kpa"] == ["holt%s"]
            assert rec["horizon_ticks"] == [1, 30]
            assert rec["source"]["offset"] == int(o.tick.offsets[i])
            if o.horizon_age is not None:
                assert rec["horizon_age_ticks"] == int(o.horizon_age[i])
            else:
                assert "horizon_age_ticks" not in rec
