"""Horizon stride: each tank's horizon computed every k ticks, records carry its age.

The reference for every check is the stride-1 step with a ``horizon + k - 1`` tick
horizon run beside it on the same readings: a strided row of age a must show, for
every lead h >= 2, exactly what the reference computed a ticks earlier for the same
target tick (lead a + h), and everything else (next step, state, residuals, scores)
must be the stride-1 values bit for bit.
"""

from __future__ import annotations

import json
import zlib

import jsonschema
import numpy as np
import pytest

from models.anomaly import AnomalyScorer
from models.artifact import load_artifact, load_forecaster
from models.serving import ServingPlan
from pipeline.config import ConfigError, Settings, default_model_dir
from pipeline.forecast_step import ForecastStep, StepOutput
from pipeline.sinks.forecasts import encode_records, schema
from tests.unit.test_checkpoint import tick

H = 30
REPORTED = (1, 5, 15, 30)


def _step(horizon: int, stride: int) -> ForecastStep:
    art = load_artifact(default_model_dir())
    step = ForecastStep(
        load_forecaster(default_model_dir(), "numpy", 0),
        AnomalyScorer(0, warmup=2),
        horizon,
        REPORTED,
        art.scaler.std,
        ServingPlan.from_artifact(art),  # skill gate and bounds: served as in the pipeline
        horizon_stride=stride,
    )
    return step


def _run(k: int, n: int = 40, ticks: int = 14) -> None:
    ids = [f"T{i:03d}" for i in range(n)]
    strided, ref = _step(H, k), _step(H + k - 1, 1)
    for s in (strided, ref):
        s.ensure_capacity(n)
    rng = np.random.default_rng(k)
    x = np.column_stack([240 + rng.normal(0, 2, n), 18 + rng.normal(0, 0.5, n)])
    last = np.full(n, -(10**6), np.int64)  # far back: every row starts as a new tank
    history: list[np.ndarray] = []  # the reference's (n, H + k - 1, F) horizon per tick
    computed = []
    applied: dict[int, set[int]] = {}
    for t in range(ticks):
        x = x + rng.normal(0, [0.5, 0.05], (n, 2))
        # Holes: row 3 misses ticks 4 and 5 (its horizon grows old), row 5 resets at 7.
        present = np.array([not (r == 3 and t in (4, 5)) for r in range(n)])
        rows = np.flatnonzero(present)
        reason = [1 if t == 0 or (r == 5 and t == 7) else 0 for r in rows]
        ct = tick(t, rows.tolist(), x[rows], last[rows].tolist(), reason)
        strided.assign_phases(ct.rows, ids)
        a: StepOutput = strided.apply(ct)
        b: StepOutput = ref.apply(ct)
        last[rows] = t
        for r in rows.tolist():
            applied.setdefault(r, set()).add(t)
        full = np.full((n, H + k - 1, 2), np.nan, np.float32)
        full[rows] = ref.fleet.horizons[rows]
        history.append(full)
        # The state does not depend on the stride: same next step, residual, score.
        for name in ("forecast", "expected", "residual", "score", "flag"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
        assert (a.horizon_age is None) == (k == 1)  # stride 1: every horizon is fresh
        age = a.horizon_age if a.horizon_age is not None else np.zeros(rows.size, np.int64)
        computed.append(int((age == 0).sum()))  # computed at this tick
        assert ((age >= 0) & (age < k)).all()
        # A reset, a new tank and an old horizon are always computed afresh.
        assert (age[np.asarray(reason) > 0] == 0).all()
        if t == 6 and 1 < k <= 3:
            # Back after missing ticks 4 and 5: its horizon (from tick 3 or before) is
            # k or more ticks old, so it is computed afresh.
            assert age[rows.tolist().index(3)] == 0
        for i, r in enumerate(rows.tolist()):
            assert t - int(age[i]) in applied[r]  # computed at a tick the row was applied
            origin = history[t - int(age[i])][r]
            want = origin[int(age[i]) + np.arange(H)]
            want[0] = a.forecast[i]  # the next step is always this tick's
            np.testing.assert_array_equal(strided.fleet.horizons[r], want)
            np.testing.assert_array_equal(a.horizons[i], want[np.asarray(REPORTED) - 1])
    if k > 1:
        # Spread out: after the first tick (every tank new) each tick computes about
        # 1/k of the fleet, never all of it.
        steady = np.asarray(computed[1:])
        assert steady.max() < n and abs(steady.mean() - n / k) < 0.25 * n / k + 2
        # The phase is the tank's, whatever its row.
        assert strided.phase[:n].tolist() == [zlib.crc32(i.encode()) % k for i in ids]


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_a_strided_horizon_is_the_fresh_one_of_its_origin_tick_read_at_its_age(k: int) -> None:
    _run(k)


def test_records_carry_the_age_of_their_horizon_and_follow_the_schema() -> None:
    step = _step(H, 3)
    step.ensure_capacity(6)
    ids = [f"T{i}" for i in range(6)]
    validator = jsonschema.Draft202012Validator(schema())
    x = np.column_stack([np.linspace(200, 250, 6), np.full(6, 20.0)])
    ages = []
    for t in range(4):
        ct = tick(t, list(range(6)), x + t, [t - 1] * 6, [1] * 6 if t == 0 else None)
        step.assign_phases(ct.rows, ids)
        out = step.apply(ct)
        for i, (_, value) in enumerate(encode_records(out, ids, 1.0, REPORTED, "v", "t")):
            rec = json.loads(value)
            validator.validate(rec)
            assert out.horizon_age is not None
            assert rec["horizon_age_ticks"] == int(out.horizon_age[i])
            assert rec["horizon"]["pressure_kpa"] == [float(v) for v in out.horizons[i, :, 0]]
            ages.append(rec["horizon_age_ticks"])
    assert set(ages) == {0, 1, 2}
    # Without a stride the records are unchanged: no age field.
    plain = _step(H, 1)
    plain.ensure_capacity(1)
    out = plain.apply(tick(0, [0], x[:1], [-9], [1]))
    assert "horizon_age_ticks" not in json.loads(
        encode_records(out, ["A"], 1.0, REPORTED, "v", "t")[0][1]
    )


def test_a_restored_or_freed_row_gets_a_fresh_horizon_at_its_next_tick() -> None:
    step = _step(H, 4)
    step.ensure_capacity(2)
    ids = ["A", "B"]
    x = np.array([[240.0, 18.0], [230.0, 19.0]])
    for t in range(3):
        step.assign_phases(np.arange(2), ids)
        step.apply(tick(t, [0, 1], x, [t - 1] * 2, [1, 1] if t == 0 else None))
    states = step.snapshot([("A", 0), ("B", 1)], np.array([2, 2]), np.array([0, 0], np.int32))
    other = _step(H, 4)
    other.ensure_capacity(2)
    for row, s in enumerate(states):
        other.restore(row, s)
    other.assign_phases(np.arange(2), ids)
    out = other.apply(tick(3, [0, 1], x, [2, 2]))
    assert out.horizon_age is not None and out.horizon_age.tolist() == [0, 0]
    step.free(np.array([1]))
    assert step.phase[1] == -1


def test_the_stride_is_a_checked_setting() -> None:
    with pytest.raises(ValueError):
        _step(H, 0)
    assert Settings(horizon_stride=3).horizon_stride == 3
    with pytest.raises(ConfigError, match=r"TANKWATCH_HORIZON_STRIDE.*horizon_stride"):
        Settings(horizon_stride=0)
