"""pipeline.transactions: the transaction wrapper's bookkeeping (begin on first send,
commit with offsets, abort or replace the producer on failure) and the auto test.

The broker side -- that aborted outputs stay invisible and zombies are fenced -- is
proved against Apache Kafka in tests/reliability/test_exactly_once.py; here a recording
stand-in for kafka-python's producer shows which calls the wrapper makes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from pipeline.transactions import (
    TransactionAborted,
    TransactionalOutputs,
    broker_has_transactions,
    default_transactional_id,
)


class Result:
    """kafka-python's TransactionalRequestResult: ``wait`` is False on a timeout."""

    def __init__(self, done: bool) -> None:
        self.done = done
        self.waited: list[int | None] = []

    def wait(self, timeout_ms: int | None = None) -> bool:
        assert timeout_ms is not None, "a transactional request waited without a bound"
        return self.done


class RecordingProducer:
    def __init__(
        self, fail: dict[str, BaseException] | None = None, hang: tuple[str, ...] = ()
    ) -> None:
        self.calls: list[str] = []
        self.fail = fail or {}
        self.hang = set(hang)  # requests whose result never completes (coordinator gone)
        self.sent: list[tuple[str, bytes | None]] = []

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if name in self.fail:
            raise self.fail.pop(name)

    def init_transactions(self) -> None:
        self._call("init")

    def begin_transaction(self) -> None:
        self._call("begin")

    def send(self, topic: str, value: bytes | None = None, **kw: Any) -> None:
        self._call("send")
        self.sent.append((topic, value))

    # kafka-python's internals the bounded waits use: the transaction manager starts a
    # request and returns a result to wait on; the sender is woken up to send it.
    @property
    def _transaction_manager(self) -> RecordingProducer:
        return self

    @property
    def _sender(self) -> RecordingProducer:
        return self

    def wakeup(self) -> None:
        pass

    def _result(self, name: str) -> Result:
        self._call(name)
        return Result(done=name not in self.hang)

    def send_offsets_to_transaction(self, offsets: dict[Any, Any], group: Any) -> Result:
        self.offsets = {tp.partition: om.offset for tp, om in offsets.items()}
        self.group = group
        return self._result("offsets")

    def begin_commit(self) -> Result:
        return self._result("commit")

    def begin_abort(self) -> Result:
        return self._result("abort")

    def flush(self, timeout: float | None = None) -> None:
        self._call("flush")

    def close(self, timeout: float | None = None) -> None:
        self._call("close")


def outputs(*producers: RecordingProducer) -> TransactionalOutputs:
    queue = list(producers)
    return TransactionalOutputs(lambda: queue.pop(0), "tank.readings")


def test_one_transaction_from_first_send_to_commit_with_offsets() -> None:
    p = RecordingProducer()
    out = outputs(p)
    outcomes: list[str] = []
    out.on_outcome = outcomes.append
    assert p.calls == ["init"] and not out.in_transaction
    out.send("tank.forecasts", b"a")
    out.send("tank.state", b"b", partition=1)
    assert out.in_transaction
    out.commit({0: 10, 1: 7}, "group-metadata")
    assert p.calls == ["init", "begin", "send", "send", "offsets", "commit"]
    assert p.offsets == {0: 10, 1: 7} and p.group == "group-metadata"
    assert not out.in_transaction and outcomes == ["committed"]
    out.commit({}, "g")  # nothing sent, nothing to commit: no empty transaction
    assert p.calls[-1] == "commit" and len(p.calls) == 6


def test_open_seconds_ages_the_open_transaction_only() -> None:
    from kafka.errors import CommitFailedError

    p = RecordingProducer(fail={"offsets": CommitFailedError("stale generation")})
    out = outputs(RecordingProducer())
    assert out.open_seconds() == 0.0
    out.send("tank.forecasts", b"a")
    first = out.open_seconds()
    time.sleep(0.01)
    assert 0 < first < out.open_seconds()
    out.commit({0: 1}, "g")
    assert out.open_seconds() == 0.0  # committed
    out = outputs(p)
    out.send("tank.forecasts", b"a")
    with pytest.raises(TransactionAborted):
        out.commit({0: 1}, "g")
    assert out.open_seconds() == 0.0  # aborted


def test_an_evicted_members_transaction_is_aborted_not_committed() -> None:
    """kafka-python's snapshot after an eviction is (-1, ''), which the broker would
    accept unfenced: the wrapper itself must refuse to commit with it."""
    from kafka.structs import ConsumerGroupMetadata

    p = RecordingProducer()
    out = outputs(p)
    out.send("tank.forecasts", b"stale")
    with pytest.raises(TransactionAborted, match="membership was lost") as info:
        out.commit({0: 5}, ConsumerGroupMetadata(group_id="g"))  # generation -1, member ''
    assert not info.value.broker_fault  # the broker is fine: /healthz must not say otherwise
    assert "offsets" not in p.calls and "commit" not in p.calls and p.calls[-1] == "abort"
    out.send("tank.forecasts", b"fresh")
    out.commit({0: 6}, ConsumerGroupMetadata("g", 7, "member-1"))
    assert p.calls[-2:] == ["offsets", "commit"]


def test_refused_offsets_abort_the_whole_transaction() -> None:
    from kafka.errors import CommitFailedError

    p = RecordingProducer(fail={"offsets": CommitFailedError("stale generation")})
    out = outputs(p)
    out.send("tank.forecasts", b"a")
    with pytest.raises(TransactionAborted, match="stale generation") as info:
        out.commit({0: 5}, "old-generation")
    assert not info.value.broker_fault  # the group moved on: this instance is out of date
    assert p.calls[-2:] == ["offsets", "abort"] and "commit" not in p.calls
    assert out.aborts == 1 and not out.in_transaction
    out.send("tank.forecasts", b"b")  # the same producer starts the next transaction
    assert p.calls[-2:] == ["begin", "send"]


def test_fenced_producer_is_replaced_by_a_new_one() -> None:
    from kafka.errors import ProducerFencedError

    old = RecordingProducer(fail={"commit": ProducerFencedError(), "abort": ProducerFencedError()})
    new = RecordingProducer()
    out = outputs(old, new)
    out.send("tank.forecasts", b"a")
    with pytest.raises(TransactionAborted) as info:
        out.commit({0: 1}, "g")
    assert not info.value.broker_fault
    assert old.calls[-1] == "close"
    out.send("tank.forecasts", b"b")
    assert new.calls == ["init", "begin", "send"]


def test_a_failed_send_is_never_committed_without_its_record() -> None:
    from kafka.errors import KafkaTimeoutError

    p = RecordingProducer(fail={"send": KafkaTimeoutError("buffer full")})
    out = outputs(p)
    with pytest.raises(KafkaTimeoutError):
        out.send("tank.forecasts", b"lost")
    out.send("tank.forecasts", b"kept")
    with pytest.raises(TransactionAborted, match="a send of this transaction failed"):
        out.commit({0: 3}, "g")
    assert "commit" not in p.calls and p.calls[-1] == "abort"


def test_close_aborts_an_open_transaction() -> None:
    p = RecordingProducer()
    out = outputs(p)
    out.send("tank.forecasts", b"a")
    out.close(timeout=1)
    assert p.calls[-2:] == ["abort", "close"]


def test_auto_needs_the_transaction_coordinator_apis() -> None:
    apache = {k: (0, 5) for k in (0, 1, 3, 22, 24, 25, 26, 28, 65, 66)}
    tansu = {k: v for k, v in apache.items() if k not in (65, 66)}
    assert broker_has_transactions(apache)
    assert not broker_has_transactions(tansu)
    assert not broker_has_transactions({})


def test_transactional_id_is_stable_per_state_dir(tmp_path: Path) -> None:
    a = default_transactional_id("g", tmp_path / "a")
    assert a == default_transactional_id("g", tmp_path / "a")
    assert a.startswith("tankwatch-g-")
    assert a != default_transactional_id("g", tmp_path / "b")


def test_a_commit_and_abort_that_never_finish_replace_the_producer() -> None:
    """The broker holding the transaction coordinator dies: kafka-python's commit and
    abort would wait for ever. Both are bounded; the stale producer is closed and the
    next transaction runs on a new one (whose init_transactions finds the new
    coordinator)."""
    stuck = RecordingProducer(hang=("commit", "abort"))
    fresh = RecordingProducer()
    out = outputs(stuck, fresh)
    out.init_timeout_s = 0.01
    out.send("tank.forecasts", b"x")
    with pytest.raises(TransactionAborted) as info:
        out.commit({0: 5}, "gen")
    assert info.value.broker_fault  # a broker that does not answer: /healthz says so
    assert stuck.calls[-3:] == ["commit", "abort", "close"]
    out.send("tank.forecasts", b"y")
    out.commit({0: 6}, "gen")
    assert fresh.calls == ["init", "begin", "send", "offsets", "commit"]
    assert out.aborts == 1 and out.commits == 1
