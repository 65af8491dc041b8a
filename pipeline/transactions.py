"""Exactly-once outputs: one Kafka transaction per checkpoint.

:class:`TransactionalOutputs` is the producer the sinks (forecasts, dead letters) and
the checkpointer (``tank.state``) write through when ``exactly_once`` is on. It looks
like a ``KafkaProducer`` to them (``send``/``flush``/``close``); a transaction begins
with the first send after a checkpoint, and :meth:`TransactionalOutputs.commit` ends it
at the next checkpoint together with the consumed offsets
(``send_offsets_to_transaction`` with the consumer's group metadata, so the broker
refuses the offsets -- and the whole transaction is aborted -- when this instance's
group generation is stale: a frozen-then-resumed "zombie" never makes its late
outputs visible, KIP-447). Readers that use ``isolation_level='read_committed'`` see a
checkpoint's forecasts, dead letters, state records and commit points all together or
not at all.

Any failure to commit aborts (or, after a fatal error such as being fenced, replaces
the producer: a new ``init_transactions`` with the same transactional id aborts what
the old one left open). :class:`TransactionAborted` then tells the service to rewind
its partitions to the last committed checkpoint. A flush that only timed out does not
abort: the transaction stays open and the next checkpoint retries it (the broker aborts
it by itself after ``transaction_timeout_ms``, which surfaces as a fatal error then).

:func:`broker_has_transactions` is the ``auto`` mode's test.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tankwatch.errors import BrokerError

__all__ = [
    "TRANSACTION_APIS",
    "TransactionAborted",
    "TransactionalOutputs",
    "broker_has_transactions",
    "default_transactional_id",
    "membership_lost",
]

log = logging.getLogger(__name__)

#: API keys a broker must advertise for ``exactly_once=auto`` to use transactions:
#: InitProducerId (22), AddOffsetsToTxn (25), EndTxn (26), TxnOffsetCommit (28) and
#: the transaction coordinator's DescribeTransactions (65) / ListTransactions (66),
#: which Apache Kafka has since 3.0. The embedded Tansu broker (0.6) advertises the
#: produce-side keys but has no coordinator that keeps aborted records from
#: read_committed readers, and no 65/66: it runs non-transactional.
TRANSACTION_APIS = (22, 25, 26, 28, 65, 66)


def membership_lost(group_metadata: Any) -> bool:
    """Whether a consumer's group snapshot is kafka-python's no-generation one (-1, '').

    The broker fences a stale member's transactional offsets by generation (KIP-447) --
    but takes offsets with generation -1 and no member id *without any check* (the form
    older clients send). kafka-python resets the generation the moment a heartbeat
    learns the member was evicted, before the rebalance listener runs, so a woken
    zombie's checkpoint could snapshot that form and commit its stale outputs. Seen in
    the frozen-instance test: the zombie's transaction committed, 10 s after its
    partitions had moved."""
    generation = getattr(group_metadata, "generation_id", 0)
    member = getattr(group_metadata, "member_id", None)
    return (isinstance(generation, int) and generation < 0) or member == ""


def broker_has_transactions(api_versions: Mapping[int, Any] | None) -> bool:
    """Whether ApiVersions (key -> (min, max)) show a full transaction coordinator."""
    return bool(api_versions) and all(k in api_versions for k in TRANSACTION_APIS)  # type: ignore[operator]


def default_transactional_id(group: str, state_dir: Path) -> str:
    """``tankwatch-<group>-<instance>``; the instance id is kept in ``state_dir`` so a
    restarted instance reuses it and fences (aborts) what its predecessor left open,
    while instances with their own state directories never fence each other."""
    path = state_dir / "instance-id"
    try:
        instance = path.read_text().strip()
    except OSError:
        instance = ""
    if not instance:
        instance = uuid.uuid4().hex[:12]
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(instance + "\n")
        except OSError as exc:
            raise BrokerError(f"cannot keep the instance id in {path}: {exc}") from None
    return f"tankwatch-{group}-{instance}"


class TransactionAborted(BrokerError):
    """The checkpoint's transaction did not commit; its outputs were discarded.

    ``broker_fault``: False when the broker is fine and this instance is the one out
    of date (its membership was lost, or another instance fenced it): /healthz then
    must not report the broker unreachable."""

    def __init__(self, message: str, broker_fault: bool = True) -> None:
        super().__init__(message)
        self.broker_fault = broker_fault


class _MembershipLost(BrokerError):
    pass


def _is_fenced(exc: BaseException) -> bool:
    """A newer producer with this transactional id, or a newer group generation, won."""
    from kafka import errors

    fenced = (
        errors.CommitFailedError,  # offsets of a generation the group has left behind
        errors.ProducerFencedError,
        errors.InvalidProducerEpochError,
        errors.FencedInstanceIdError,
        errors.IllegalGenerationError,
        errors.UnknownMemberIdError,
    )
    return isinstance(exc, (_MembershipLost, *fenced))


class TransactionalOutputs:
    """A transactional producer behind the ``send``/``flush``/``close`` of a plain one.

    ``make_producer()`` builds a ``KafkaProducer`` with this instance's
    ``transactional_id``; ``readings_topic`` is the topic whose offsets are committed.
    Not thread-safe: the service calls it under its work lock only.
    """

    exactly_once = True

    def __init__(
        self, make_producer: Callable[[], Any], readings_topic: str, init_timeout_s: float = 30.0
    ) -> None:
        self._make = make_producer
        self.readings_topic = readings_topic
        self.init_timeout_s = init_timeout_s
        self._producer: Any = None
        self._opened_at: float | None = None  # time.monotonic() of begin_transaction
        self._send_error: BaseException | None = None
        self.commits = 0
        self.aborts = 0
        #: Called with "committed" or "aborted" after each transaction (metrics).
        self.on_outcome: Callable[[str], None] = lambda outcome: None
        self._ensure()  # fail at start-up, not at the first send

    def _ensure(self) -> Any:
        if self._producer is None:
            from kafka.errors import KafkaTimeoutError

            producer = self._make()
            # The first InitProducerId on a fresh cluster waits for the transaction state
            # topic to be created; a retry after a timeout keeps waiting for the same one.
            deadline = time.monotonic() + self.init_timeout_s
            try:
                while True:
                    try:
                        producer.init_transactions()
                        break
                    except KafkaTimeoutError:
                        if time.monotonic() > deadline:
                            raise
            except Exception as exc:
                with contextlib.suppress(Exception):
                    producer.close(timeout=1)
                raise BrokerError(f"initialising transactions failed: {exc}") from None
            self._producer = producer
        return self._producer

    @property
    def in_transaction(self) -> bool:
        """True between the first send after a checkpoint and the checkpoint."""
        return self._opened_at is not None

    def open_seconds(self) -> float:
        """Age of the open transaction (0.0 when none). Every read_committed reader of
        the outputs waits behind it, so one that outlives a few checkpoint intervals is
        worth an alert (``tankwatch_transaction_open_seconds``)."""
        opened = self._opened_at
        return 0.0 if opened is None else time.monotonic() - opened

    def _begin(self, producer: Any) -> None:
        producer.begin_transaction()
        self._opened_at = time.monotonic()

    def _ended(self) -> None:
        self._opened_at = None

    # ------------------------------------------------------ producer-like
    def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        partition: int | None = None,
    ) -> Any:
        producer = self.producer_for_batch()
        try:
            return producer.send(topic, value=value, key=key, headers=headers, partition=partition)
        except Exception as exc:
            # A record missing from the transaction must not be committed without it.
            self._send_error = exc
            raise

    def producer_for_batch(self) -> Any:
        """The KafkaProducer itself, in this checkpoint's transaction (begun if need
        be), for :class:`~pipeline.sinks.batch_produce.BatchProducer`'s batch path."""
        try:
            producer = self._ensure()
            if not self.in_transaction:
                self._begin(producer)
            return producer
        except Exception as exc:
            self._send_error = exc
            raise

    def note_send_error(self, exc: BaseException) -> None:
        """A record of this transaction was refused: its commit must abort."""
        self._send_error = exc

    def flush(self, timeout: float | None = None) -> None:
        if self._producer is not None:
            self._producer.flush(timeout=timeout)

    def close(self, timeout: float | None = None) -> None:
        """Abort an open transaction (its checkpoint never came) and close."""
        if self._producer is None:
            return
        if self.in_transaction:
            with contextlib.suppress(Exception):
                self._bounded(self._producer, lambda tm: tm.begin_abort(), "aborting")
            self._ended()
        self._producer.close(timeout=timeout)
        self._producer = None

    # ------------------------------------------------------- transactions
    def commit(self, offsets: Mapping[int, int], group_metadata: Any) -> None:
        """Commit the open transaction with these readings offsets (partition ->
        next offset to read); raises :class:`TransactionAborted` if it was aborted."""
        from kafka import TopicPartition
        from kafka.structs import OffsetAndMetadata

        if not self.in_transaction and not offsets:
            return
        try:
            if self._send_error is not None:
                raise BrokerError(f"a send of this transaction failed: {self._send_error}")
            if membership_lost(group_metadata):
                raise _MembershipLost("the consumer's group membership was lost (evicted)")
            producer = self._ensure()
            if not self.in_transaction:
                self._begin(producer)
            if offsets:
                tps = {
                    TopicPartition(self.readings_topic, p): OffsetAndMetadata(o, "", -1)
                    for p, o in offsets.items()
                }
                self._bounded(
                    producer,
                    lambda tm: tm.send_offsets_to_transaction(tps, group_metadata),
                    "sending the offsets to the transaction",
                )
            self._bounded(producer, lambda tm: tm.begin_commit(), "committing")
        except Exception as exc:
            self._discard()
            raise TransactionAborted(
                f"transaction aborted: {exc}", broker_fault=not _is_fenced(exc)
            ) from None
        self._ended()
        self.commits += 1
        self.on_outcome("committed")

    def abort(self) -> None:
        """Discard the open transaction (e.g. partitions lost before a checkpoint)."""
        if self.in_transaction or self._send_error is not None:
            self._discard()

    def _bounded(self, producer: Any, start: Callable[[Any], Any], what: str) -> None:
        """A transactional request that is waited for at most ``init_timeout_s``.

        kafka-python's ``commit_transaction``/``abort_transaction``/
        ``send_offsets_to_transaction`` wait without a bound; when the broker holding
        this transactional id's coordinator dies, its client can keep asking the dead
        one, and the pipeline hung for good (seen in the three-broker test). On a
        timeout the caller discards the producer; a new one's ``init_transactions``
        finds the new coordinator, which completes or aborts the open transaction, and
        the rewind restores from what a read_committed reader sees -- the right point
        whether or not the timed-out commit went through."""
        from kafka.errors import KafkaTimeoutError

        result = start(producer._transaction_manager)
        producer._sender.wakeup()
        if not result.wait(timeout_ms=int(self.init_timeout_s * 1000)):
            raise KafkaTimeoutError(f"{what} did not finish within {self.init_timeout_s:.0f} s")

    def _discard(self) -> None:
        self._ended()
        self._send_error = None
        self.aborts += 1
        self.on_outcome("aborted")
        producer = self._producer
        if producer is None:
            return
        try:
            self._bounded(producer, lambda tm: tm.begin_abort(), "aborting")
            return
        except Exception as exc:  # fatal (fenced, timed out, coordinator gone): start afresh
            log.warning(
                "abort failed; replacing the transactional producer", extra={"error": str(exc)}
            )
        self._producer = None
        with contextlib.suppress(Exception):
            producer.close(timeout=1)
