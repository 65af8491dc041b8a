"""The horizon worker (a real child process): the same bits as the in-loop horizon,
and a worker that dies or never starts costs speed, not data."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from models.artifact import load_forecaster
from pipeline.config import default_model_dir
from pipeline.forecast_step import ForecastStep, StepOutput
from pipeline.horizon_worker import HorizonWorker, WorkerGone
from pipeline.sinks.forecasts import encode_records
from tests.unit.test_checkpoint import series, tick


@pytest.fixture(scope="module")
def worker() -> HorizonWorker:
    w = HorizonWorker(default_model_dir())
    assert w.ready(60), "the worker did not start"
    yield w
    w.close()


def _stepped_engine(n: int):  # type: ignore[no-untyped-def]
    engine = load_forecaster(default_model_dir(), "numpy", n)
    rng = np.random.default_rng(3)
    for t in range(6):
        x = (np.array([250.0, 20.0]) + rng.normal(0, 4, (n, 2))).astype(np.float32)
        mask = np.ones(n, bool)
        mask[n - 3 :] = False  # three rows never stepped: NaN horizons
        if t == 4:
            mask[:10] = False  # some rows skip a tick
        engine.step(x, mask)
    return engine


def test_the_worker_gives_the_same_bits_as_the_engine(worker: HorizonWorker) -> None:
    n = 1_203  # > one row chunk of 1,024; odd, so padding matters
    engine = _stepped_engine(n)
    for rows in (np.arange(n), np.arange(n)[::-3], np.asarray([n - 1, 5, 700])):
        worker.submit(30, engine.snapshot(rows))
        got = worker.result().horizon
        np.testing.assert_array_equal(got, engine.forecast(30, rows))
    assert np.isnan(got[:, 0]).all() and np.isfinite(got[:, 1:]).all()


ROWS_BY_TICK = [[0, 1, 2, 3], [0, 1, 2, 3], [1, 3], [0, 1, 2, 3], [2], [0, 1, 2, 3]]


IDS = ["A", "B", None, "D"]  # row 2 has no tank id: no record for it


def _apply(step: ForecastStep, t: int) -> StepOutput:
    """Tick t of a fixed schedule: partial ticks, a hole for some rows, an event reset."""
    rows = ROWS_BY_TICK[t % len(ROWS_BY_TICK)]
    prev = [max(u for u in range(t) if r in ROWS_BY_TICK[u % len(ROWS_BY_TICK)]) if t else -9
            for r in rows]  # fmt: skip
    reason = [1 if t == 0 else 2 if (t == 7 and r == 1) else 0 for r in rows]
    x = np.asarray([series(r, t) for r in rows])
    if t == 9:
        x[0, 0] = 9_000.0  # far outside: the horizon is clipped to the bounds
    return step.apply(tick(t, rows, x, prev, reason), tank_ids=IDS)


def _run(step: ForecastStep, ticks: range) -> list[StepOutput]:
    outs = [_apply(step, t) for t in ticks]
    step.collect()
    return outs


def _served_step() -> ForecastStep:
    """A step with the artifact's serving plan (its forecast bounds), as the service
    builds it."""
    from models.anomaly import AnomalyScorer
    from models.artifact import load_artifact
    from models.serving import ServingPlan

    art = load_artifact(default_model_dir())
    engine = load_forecaster(default_model_dir(), "numpy", 0)
    plan = ServingPlan.from_artifact(art)
    assert plan.bounds is not None
    step = ForecastStep(
        engine, AnomalyScorer(0, warmup=2), 30, (1, 5, 15, 30), art.scaler.std, plan
    )
    step.ensure_capacity(4)
    return step


ENCODE_ARGS = (60.0, (1, 5, 15, 30), "lstm-x", "tank.readings", {"pressure_kpa": ["lstm"] * 5})


@pytest.mark.parametrize("when_idle", [True, False])
def test_ticks_applied_with_the_worker_equal_those_without(
    worker: HorizonWorker, when_idle: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Horizons, clip counts and the records' bytes, over partial ticks, a hole, an
    event reset, a clipped horizon and a row without a tank id; the records formatted
    by the worker always (``ENCODE_WHEN_IDLE`` off) or when it was idle."""
    import pipeline.forecast_step as fs

    monkeypatch.setattr(fs, "ENCODE_WHEN_IDLE", when_idle)
    plain, offloaded = _served_step(), _served_step()
    offloaded.worker = worker
    worker.configure(ENCODE_ARGS)
    jobs = worker.jobs
    a, b = _run(plain, range(12)), _run(offloaded, range(12))
    assert worker.jobs - jobs == 12  # every tick's horizon ran in the worker
    assert offloaded.horizons_by_where == {"worker": 12, "loop": 0}
    assert plain.horizons_by_where == {"worker": 0, "loop": 12}
    by_worker = 0
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.horizons, y.horizons)
        np.testing.assert_array_equal(x.forecast, y.forecast)
        assert not x.encoded  # formatted by the sink
        expected = encode_records(x, IDS, *ENCODE_ARGS)
        if y.encoded or not when_idle:
            assert y.encoded == expected  # by the worker
            by_worker += 1
        else:  # the worker was busy: the sink formats them, from y
            assert encode_records(y, IDS, *ENCODE_ARGS) == expected
    # Tick 0 is always queued to an idle worker; later ones depend on timing.
    assert by_worker == 12 if not when_idle else by_worker >= 1
    np.testing.assert_array_equal(plain.fleet.horizons, offloaded.fleet.horizons)
    np.testing.assert_array_equal(plain.fleet.clips, offloaded.fleet.clips)
    assert plain.fleet.clips[0] > 0  # the bounds did clip
    assert np.isfinite(b[-1].horizons).all()


def test_apply_returns_before_the_horizon_and_collect_fills_it_in(worker: HorizonWorker) -> None:
    step = _served_step()
    step.worker = worker
    out = step.apply(tick(0, [0, 1], np.asarray([series(0, 0), series(1, 0)]), [-9, -9], [1, 1]))
    assert step.pending and np.isnan(out.horizons).all()
    step.collect()
    assert not step.pending and np.isfinite(out.horizons).all()
    np.testing.assert_array_equal(step.fleet.horizons[[0, 1]][:, step.reported], out.horizons)


def test_a_killed_worker_falls_back_to_the_same_horizons_in_the_loop() -> None:
    """Killed with two ticks queued: both are computed in the loop from the state
    they were started from (the rows' live state has moved on for the first)."""
    plain, offloaded = _served_step(), _served_step()
    w = HorizonWorker(default_model_dir())
    assert w.ready(60)
    offloaded.worker = w
    ref = _run(plain, range(5))
    os.kill(w._proc.pid, signal.SIGSTOP)  # no answer can come before the kill
    queued = [_apply(offloaded, 0), _apply(offloaded, 1)]
    assert w.in_flight == 2 and offloaded.pending
    w._proc.kill()
    w._proc.wait(10)
    rest = _run(offloaded, range(2, 5))  # collects ticks 0 and 1 first, then in the loop
    assert not w.alive and not offloaded.pending
    for x_out, y_out in zip(ref, [*queued, *rest], strict=True):
        np.testing.assert_array_equal(x_out.horizons, y_out.horizons)
    np.testing.assert_array_equal(plain.fleet.horizons, offloaded.fleet.horizons)
    np.testing.assert_array_equal(plain.engine.snapshot(np.arange(4)).h,
                                  offloaded.engine.snapshot(np.arange(4)).h)  # fmt: skip
    # Counted where an operator sees it: the ticks since the kill went to the loop.
    from prometheus_client import CollectorRegistry

    from pipeline.sinks.metrics import PipelineMetrics

    registry = CollectorRegistry()
    metrics = PipelineMetrics(registry, "v", "numpy", 60.0)
    assert registry.get_sample_value("tankwatch_horizon_worker_stopped") == 0
    metrics.set_horizon_worker(offloaded.horizons_by_where, stopped=not w.alive)
    metrics.set_horizon_worker(offloaded.horizons_by_where, stopped=not w.alive)  # no double
    assert registry.get_sample_value("tankwatch_horizon_worker_stopped") == 1
    computed = "tankwatch_horizons_computed_total"
    assert registry.get_sample_value(computed, {"where": "loop"}) == 5
    assert registry.get_sample_value(computed, {"where": "worker"}) == 0


def test_a_worker_that_cannot_start_is_not_used(tmp_path: Path) -> None:
    w = HorizonWorker(tmp_path / "no-such-model")
    deadline = time.monotonic() + 60
    while w.alive and not w.ready(0.5) and time.monotonic() < deadline:
        pass
    assert not w.alive and not w.ready()
    with pytest.raises(WorkerGone):
        w.submit(30, load_forecaster(default_model_dir(), "numpy", 1).snapshot(np.arange(1)))
    step = _served_step()
    step.worker = w
    out = step.apply(tick(0, [0], np.asarray([series(0, 0)]), [-9], [1]))
    assert not step.pending and np.isfinite(out.horizons).all()


def test_the_child_exits_when_its_parent_lets_go() -> None:
    w = HorizonWorker(default_model_dir())
    assert w.ready(60)
    proc = w._proc
    w.close()
    assert proc.poll() is not None and not w.alive


def test_the_worker_is_a_checked_setting_chosen_by_the_machine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pipeline import bootstrap
    from pipeline.config import Settings
    from tankwatch.errors import ConfigError

    with pytest.raises(ConfigError, match=r"TANKWATCH_HORIZON_WORKER.*auto, on or off"):
        Settings(horizon_worker="sometimes")
    monkeypatch.setenv("TANKWATCH_HORIZON_WORKER", "false")
    assert Settings.from_env().horizon_worker == "off"
    monkeypatch.delenv("TANKWATCH_HORIZON_WORKER")
    for cpus, kw, expected in [
        (2, {}, 1),
        (1, {}, 0),  # no second core: the worker would only take turns with the loop
        (1, {"horizon_worker": "on"}, 1),
        (8, {"horizon_worker": "off"}, 0),
        (8, {"horizon_stride": 2}, 0),  # strided horizons are computed in the loop
        (8, {"forecasts_topic_enabled": False}, 0),  # no per-tick horizons
        (8, {"engine": "keras"}, 0),
        (8, {"horizon": 1, "horizons_reported": (1,)}, 0),
    ]:
        monkeypatch.setattr(bootstrap, "usable_cpus", lambda n=cpus: n)
        wanted = bootstrap.horizon_worker_wanted(Settings(**kw))  # type: ignore[arg-type]
        assert wanted == bool(expected), (cpus, kw)


def test_usable_cpus_follow_a_cgroup_quota(tmp_path: Path) -> None:
    from pipeline.horizon_worker import usable_cpus

    mask = len(os.sched_getaffinity(0))
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("max 100000\n")
    assert usable_cpus(cpu_max) == mask
    cpu_max.write_text("100000 100000\n")  # cpus: 1
    assert usable_cpus(cpu_max) == 1
    cpu_max.write_text("150000 100000\n")  # cpus: 1.5 -> a second core, part-time
    assert usable_cpus(cpu_max) == min(mask, 2)
    assert usable_cpus(tmp_path / "absent") == mask


def test_a_stopped_worker_is_replaced_after_a_minute_and_between_ticks() -> None:
    """Service._restart_worker's schedule, on a stand-in service (the end-to-end run is
    test_pipeline_replay's killed-worker test)."""
    import threading
    from types import SimpleNamespace

    from pipeline.service import WORKER_RESTART_S, Service

    dead = SimpleNamespace(alive=False)
    new = SimpleNamespace(alive=True)
    attempts: list[float] = []

    def start() -> object:
        attempts.append(0)
        if len(attempts) == 1:
            raise OSError("Resource temporarily unavailable")  # fork refused: later
        return new

    from prometheus_client import CollectorRegistry

    from pipeline.sinks.metrics import PipelineMetrics

    registry = CollectorRegistry()
    step = SimpleNamespace(worker=dead, pending=False)
    svc = SimpleNamespace(step=step, start_worker=start, _worker_gone_at=None,
                          worker_restarts=0, _work=threading.RLock(),
                          metrics=PipelineMetrics(registry, "v", "numpy", 60.0))  # fmt: skip
    svc._start_worker = lambda now: Service._start_worker(svc, now)  # type: ignore[arg-type]

    def restart(now: float) -> None:
        Service._restart_worker(svc, now)  # type: ignore[arg-type]

    restart(0.0)  # first seen gone
    restart(WORKER_RESTART_S - 1)
    assert step.worker is dead and not attempts
    step.pending = True  # a tick still waits for the old one: not now
    restart(WORKER_RESTART_S + 1)
    assert step.worker is dead and not attempts
    step.pending = False
    restart(WORKER_RESTART_S + 2)  # the start fails: tried again a minute later
    assert step.worker is dead and len(attempts) == 1 and svc.worker_restarts == 0
    restart(2 * WORKER_RESTART_S)
    assert step.worker is dead and len(attempts) == 1
    restart(2 * WORKER_RESTART_S + 3)
    assert step.worker is new and svc.worker_restarts == 1 and svc._worker_gone_at is None
    assert registry.get_sample_value("tankwatch_horizon_worker_restarts_total") == 1
    restart(3 * WORKER_RESTART_S + 10)  # alive: nothing to do
    assert len(attempts) == 2 and svc.worker_restarts == 1
