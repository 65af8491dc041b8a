"""End to end against the real broker: replay speed must not change any forecast, and
bad input must not change the good tanks' forecasts."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from pipeline.horizon_worker import usable_cpus
from pipeline.record_batches import FastPartitionRecords
from pipeline.sinks.forecasts import schema
from tankwatch.topics import Topics
from tests.integration.helpers import (
    STANDARD_HISTORY,
    ServiceThread,
    assert_forecasts_equal,
    assert_records_close,
    pipeline_settings,
    produce_raw,
    produce_readings,
    read_dlq,
    read_forecasts,
    standard_reference,
    wait_consumed,
    wait_until,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def reference(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One uninterrupted, as-fast-as-possible run of the standard history."""
    return standard_reference(kafka_bootstrap, tmp_path_factory)


N_TANKS = STANDARD_HISTORY["n_tanks"]


def test_reference_run_applies_every_reading_once(reference: dict[str, Any]) -> None:
    history, forecasts, stats = reference["history"], reference["forecasts"], reference["stats"]
    assert len(forecasts) == len(history)  # one record per (tank, tick), none missing
    assert stats["dropped"] == {"late": 0, "duplicate": 0}
    assert stats["rejected"] == {}
    resets = [(k, r["reset"]) for k, r in forecasts.items() if r["reset"]]
    assert sorted(r for _, r in resets) == ["event", "gap"] + ["new_tank"] * N_TANKS
    validator = jsonschema.Draft202012Validator(schema())
    for record in list(forecasts.values())[:50]:
        validator.validate(record)
    final = reference["state"]
    assert set(final) == {f"T{k:03d}" for k in range(N_TANKS)}
    assert all(
        s.last_tick == max(t for (tank, t) in forecasts if tank == s.tank_id)
        for s in final.values()
    )


def test_paced_replay_gives_identical_forecasts(
    reference: dict[str, Any],
    kafka_bootstrap: str,
    make_topics: Callable[..., Topics],
    tmp_path: Path,
) -> None:
    """The same history produced while the pipeline runs, tick by tick (a 60 s tick per
    10 ms: 6000x), gives the same forecasts as the as-fast-as-possible run."""
    history = reference["history"]
    topics = make_topics()
    settings = pipeline_settings(kafka_bootstrap, topics, tmp_path)
    with ServiceThread(settings) as run:
        producer = threading.Thread(
            target=produce_readings,
            args=(kafka_bootstrap, topics.readings, history),
            kwargs={"per_tick_sleep_s": 0.01},
        )
        producer.start()
        producer.join(60)
        wait_consumed(run.service, len(history))
        stats = run.service.stats
    got = read_forecasts(kafka_bootstrap, topics.forecasts)
    assert stats["dropped"] == {"late": 0, "duplicate": 0}
    assert_forecasts_equal(reference["forecasts"], got, 1e-6)


def _bad_messages() -> list[tuple[bytes | None, bytes | None, str]]:
    good = {"tank_id": "T001", "ts": 1_700_000_000, "pressure_kpa": 250.0, "temperature_c": 20.0}

    def js(**kw: Any) -> bytes:
        return json.dumps({**good, **kw}).encode()

    return [
        (b"T001", b"not json at all", "bad_json"),
        (b"T001", b"\xff\xfe\xfd", "bad_encoding"),
        (b"T001", b"[1, 2, 3]", "not_object"),
        (b"T001", json.dumps({"tank_id": "T001", "ts": 1_700_000_000}).encode(), "missing_field"),
        (b"T001", js(pressure_kpa="high"), "wrong_type"),
        (
            b"T001",
            b'{"tank_id":"T001","ts":1700000000,"pressure_kpa":NaN,"temperature_c":1}',
            "not_finite",
        ),
        (b"T001", js(pressure_kpa=1e9), "out_of_range"),
        (b"T001", js(ts="yesterday-ish"), "bad_timestamp"),
        (b"T001", js(event="party"), "unknown_event"),
        (b"T002", js(), "key_mismatch"),
        (b"bad id!", js(tank_id="bad id!"), "invalid_tank_id"),
        (b"T001", b"x" * 5000, "oversized"),
        (b"T001", None, "bad_json"),  # a tombstone
        (None, b"{}", "missing_field"),
    ]


def test_malformed_messages_go_to_the_dlq_and_change_nothing_else(
    reference: dict[str, Any],
    kafka_bootstrap: str,
    make_topics: Callable[..., Topics],
    tmp_path: Path,
) -> None:
    history = reference["history"]
    topics = make_topics()
    bad = _bad_messages()
    # Interleave: the bad messages go in at several points of the history.
    from tankwatch.codec import encode_reading

    items: list[tuple[bytes | None, bytes | None]] = []
    expected: dict[str, int] = {}
    step = len(history) // 4
    for i, reading in enumerate(history):
        items.append(encode_reading(reading))
        if i % step == step // 2:
            for key, value, reason in bad:
                items.append((key, value))
                expected[reason] = expected.get(reason, 0) + 1
    produce_raw(kafka_bootstrap, topics.readings, items)
    settings = pipeline_settings(kafka_bootstrap, topics, tmp_path)
    with ServiceThread(settings) as run:
        wait_consumed(run.service, len(items))
        stats = run.service.stats
        metrics = run.registry
    assert stats["rejected"] == expected
    assert metrics is not None
    for reason, n in expected.items():
        assert (
            metrics.get_sample_value("tankwatch_readings_rejected_total", {"reason": reason}) == n
        )
    dlq = read_dlq(kafka_bootstrap, topics.dlq)
    got: dict[str, int] = {}
    sources = set()
    for _key, _value, headers in dlq:
        got[headers["reason"]] = got.get(headers["reason"], 0) + 1
        assert headers["source_topic"] == topics.readings
        sources.add((headers["source_partition"], headers["source_offset"]))
    assert got == expected
    assert len(sources) == len(dlq)  # each dead letter names its own source message
    originals = {v for _, v, _ in bad if v is not None}
    assert {v for _, v, _ in dlq if v is not None} == originals  # original bytes kept
    assert_forecasts_equal(
        reference["forecasts"], read_forecasts(kafka_bootstrap, topics.forecasts), 1e-6
    )


def test_a_consumer_stuck_outside_its_group_is_replaced_and_nothing_changes(
    reference: dict[str, Any],
    kafka_bootstrap: str,
    make_topics: Callable[..., Topics],
    tmp_path: Path,
) -> None:
    """kafka-python was seen to stop rejoining its group for good (pipeline/membership.py).
    Its consumer reporting "not in a stable group" for longer than any rebalance may
    take gets replaced, and the forecasts are those of an undisturbed run."""
    history = reference["history"]
    half = len(history) // 2
    topics = make_topics()
    # Session 6 s + rebalance timeout 6 s + 5 s: stuck after 17 s out of the group.
    settings = pipeline_settings(
        kafka_bootstrap, topics, tmp_path, session_timeout_ms=6000, max_poll_interval_ms=6000
    )
    with ServiceThread(settings) as run:
        svc = run.service
        produce_readings(kafka_bootstrap, topics.readings, history[:half])
        wait_consumed(svc, half, 60)
        stuck = svc._consumer
        assert stuck is not None
        # On this broker the readings are read by pipeline/record_batches, and the
        # reference run's forecasts above came through it too.
        assert stuck.fast_records
        assert stuck._consumer._fetcher.PartitionRecords is FastPartitionRecords
        # The client as the service saw it when its join hung: never stable again.
        stuck.in_stable_group = lambda: False  # type: ignore[method-assign]
        wait_until(
            lambda: svc._consumer is not stuck and svc.stats["assigned"] == [0, 1, 2, 3],
            90,
            "the stuck consumer replaced and every partition assigned again",
        )
        produce_readings(kafka_bootstrap, topics.readings, history[half:])
        wait_until(
            lambda: len(read_forecasts(kafka_bootstrap, topics.forecasts)) == len(history),
            90,
            "a forecast for every reading after the replacement",
        )
        replaced = run.registry.get_sample_value("tankwatch_consumers_replaced_total")
        assert svc._consumer is not None and svc._consumer.fast_records
    assert replaced == 1
    got = read_forecasts(kafka_bootstrap, topics.forecasts)
    assert_forecasts_equal(reference["forecasts"], got, 1e-6)


def test_a_horizon_stride_changes_only_the_horizons_between_their_ticks(
    reference: dict[str, Any],
    kafka_bootstrap: str,
    make_topics: Callable[..., Topics],
    tmp_path: Path,
) -> None:
    """``--horizon-stride 3`` end to end: one record per reading as before, each saying
    how old its horizon is; next step, residual, score and flag as in the stride-1
    run; and a horizon computed at its own tick (age 0) equal to the stride-1 one."""
    history = reference["history"]
    topics = make_topics()
    settings = pipeline_settings(kafka_bootstrap, topics, tmp_path, horizon_stride=3)
    produce_readings(kafka_bootstrap, topics.readings, history)
    with ServiceThread(settings) as run:
        wait_consumed(run.service, len(history), 90)
    got = read_forecasts(kafka_bootstrap, topics.forecasts)
    ref = reference["forecasts"]
    assert got.keys() == ref.keys()
    validator = jsonschema.Draft202012Validator(schema())
    ages = {0: 0, 1: 0, 2: 0}
    for key, rec in got.items():
        validator.validate(rec)
        age = rec.pop("horizon_age_ticks")
        ages[age] += 1
        if age == 0:
            assert_records_close(ref[key], rec, 1e-6, str(key))
        else:
            lead1 = rec["horizon"]["pressure_kpa"][0]  # lead 1 is this tick's next step
            assert lead1 == rec["forecast"]["pressure_kpa"], key
            assert_records_close(ref[key], {**rec, "horizon": ref[key]["horizon"]}, 1e-6)
    # About a third of the records each (every tank has its own phase).
    assert all(n > len(got) / 5 for n in ages.values()), ages


def test_a_horizon_worker_killed_mid_run_is_replaced_and_no_record_changes(
    reference: dict[str, Any],
    kafka_bootstrap: str,
    make_topics: Callable[..., Topics],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The horizon worker is SIGKILLed before the first reading: the first half of the
    history has its horizons computed in the loop, a new worker is started
    (``WORKER_RESTART_S``, 0 here) and computes the second half's. The records equal
    the module's reference, every field; the reference ran with the default (the
    worker, where two CPUs are usable, uninterrupted), so both paths are compared."""
    import pipeline.service as service_module

    monkeypatch.setattr(service_module, "WORKER_RESTART_S", 0.0)
    history = reference["history"]
    ticks = len({t for _, t in reference["forecasts"]})
    ref_jobs = reference["stats"]["horizon_worker_jobs"]
    assert (ref_jobs > 0.5 * ticks) == (usable_cpus() >= 2), ref_jobs
    topics = make_topics()
    settings = pipeline_settings(kafka_bootstrap, topics, tmp_path, horizon_worker="on")
    half = len(history) // 2
    with ServiceThread(settings) as run:
        service = run.service
        first = service.step.worker
        assert first is not None and first.ready(60)
        first._proc.kill()  # its socket closes: no answer ever comes
        produce_readings(kafka_bootstrap, topics.readings, history[:half])
        wait_consumed(service, half, 90)
        wait_until(lambda: service.stats["horizon_worker_restarts"] >= 1, 30, "a new worker")
        second = service.step.worker
        assert second is not None and second is not first and second.ready(60)
        assert not first.alive and first._proc.poll() is not None
        produce_readings(kafka_bootstrap, topics.readings, history[half:])
        wait_consumed(service, len(history), 90)
        stats = service.stats
        by_where = dict(service.step.horizons_by_where)
    got = read_forecasts(kafka_bootstrap, topics.forecasts)
    assert stats["horizon_worker_restarts"] == 1
    assert by_where["loop"] > 0 and by_where["worker"] > 0, by_where
    # What an operator sees: the fallback counted, the replacement, the worker back.
    registry = run.registry
    assert registry is not None
    computed = "tankwatch_horizons_computed_total"
    assert registry.get_sample_value(computed, {"where": "loop"}) == by_where["loop"]
    assert registry.get_sample_value("tankwatch_horizon_worker_restarts_total") == 1
    assert registry.get_sample_value("tankwatch_horizon_worker_stopped") == 0
    # A copy: the module's reference stays whole for the other tests.
    expected = {k: json.loads(json.dumps(v)) for k, v in reference["forecasts"].items()}
    assert got.keys() == expected.keys()
    # Each run reads its own topic (named in "source"); everything else is equal.
    for recs in (got, expected):
        for rec in recs.values():
            rec["source"].pop("topic")
    assert got == expected
