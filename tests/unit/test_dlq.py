"""Issue 10 item 7: no dead letter is lost -- oversized values are cut with headers
saying so, and a letter the broker refuses is sent again (header-only) before the
checkpoint commits past it (a fake producer stands in for Kafka here; the reliability
suite does it against a real broker)."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.dlq import DeadLetters
from tankwatch.errors import BrokerError


class Future:
    def __init__(self, error: Exception | None) -> None:
        self.error = error
        self.errbacks: list[Any] = []

    def add_errback(self, fn: Any) -> None:
        self.errbacks.append(fn)

    def fail_now(self) -> None:
        if self.error is not None:
            for fn in self.errbacks:
                fn(self.error)

    def get(self, timeout: float | None = None) -> None:
        if self.error is not None:
            raise self.error


class Producer:
    """Refuses (asynchronously, like a broker) values longer than ``limit`` bytes."""

    def __init__(self, limit: int, refuse_all: bool = False) -> None:
        self.limit, self.refuse_all = limit, refuse_all
        self.sent: list[tuple[bytes | None, bytes | None, dict[str, bytes]]] = []
        self.pending: list[Future] = []

    def send(self, topic: str, key: Any, value: Any, headers: Any) -> Future:
        too_big = value is not None and len(value) > self.limit
        fut = Future(RuntimeError("MessageSizeTooLarge") if too_big or self.refuse_all else None)
        if fut.error is None:
            self.sent.append((key, value, dict(headers)))
        self.pending.append(fut)
        return fut

    def flush(self, timeout: float | None = None) -> None:
        pending, self.pending = self.pending, []
        for fut in pending:
            fut.fail_now()


def test_a_value_over_the_limit_is_cut_with_headers_and_counted() -> None:
    p = Producer(limit=10**9)
    dlq = DeadLetters(p, "dlq", max_bytes=1024)
    value = b"x" * 1_000_000  # near the broker's 1 MiB default
    dlq.send(b"T1", value, "oversized", "tank.readings", 3, 42)
    p.flush()
    [(key, sent, headers)] = p.sent
    assert key == b"T1" and sent == value[:1024]
    assert headers["truncated"] == b"true" and headers["original_size"] == b"1000000"
    assert headers["source_topic"] == b"tank.readings"
    assert (headers["source_partition"], headers["source_offset"]) == (b"3", b"42")
    assert dlq.truncated == 1 and dlq.pending == 0


def test_a_letter_the_broker_refuses_is_sent_again_header_only() -> None:
    p = Producer(limit=100)  # the broker's limit is below ours
    dlq = DeadLetters(p, "dlq", max_bytes=1024)
    dlq.send(b"T1", b"y" * 500, "oversized", "tank.readings", 0, 7)
    p.flush()
    assert p.sent == [] and dlq.pending == 1  # before the fix: logged and lost
    dlq.resend_failed(1.0)
    [(key, value, headers)] = p.sent
    assert key == b"T1" and value == b""
    assert headers["original_size"] == b"500" and headers["truncated"] == b"true"
    assert headers["source_offset"] == b"7" and headers["reason"] == b"oversized"
    assert dlq.pending == 0 and dlq.truncated == 1


def test_a_letter_that_cannot_be_sent_at_all_fails_the_checkpoint() -> None:
    p = Producer(limit=100, refuse_all=True)
    dlq = DeadLetters(p, "dlq")
    dlq.send(None, b"{}", "no_key", "tank.readings", 0, 1)
    p.flush()
    with pytest.raises(BrokerError):
        dlq.resend_failed(1.0)
    assert dlq.pending == 1  # still kept for the next attempt
