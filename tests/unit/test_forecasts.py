"""Forecast records: valid against the schema, values exact, nulls where undefined."""

from __future__ import annotations

import json

import jsonschema
import numpy as np

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
