"""The Kafka adapter: a group consumer with manual commits and a rebalance listener.

kafka-python 3 runs rebalance callbacks on its own IO thread (possibly while the
service thread is between polls, so the service serialises them with a lock): on
revoke the service checkpoints those partitions' tanks and the offsets are committed
(while it still owns them), on assign it restores their state and seeks to the
checkpoint's offset, on loss (membership expired) it just forgets them.
Auto-commit is off: offsets are committed only after the checkpoint that covers them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener
from kafka.errors import CorruptRecordError, UnsupportedCodecError
from kafka.structs import OffsetAndMetadata

from pipeline import record_batches

__all__ = ["ReadingsConsumer"]

log = logging.getLogger(__name__)


class _Listener(AsyncConsumerRebalanceListener):
    """Async listener: kafka-python 3 runs it on the client's IO thread, where blocking
    consumer calls (``commit``) are forbidden; the commit on revoke is awaited on the
    loop instead, so heartbeats keep flowing while it is in flight."""

    def __init__(
        self,
        owner: ReadingsConsumer,
        on_revoked: Callable[[list[int]], dict[int, int]],
        on_assigned: Callable[[list[int]], None],
        on_lost: Callable[[list[int]], None],
    ) -> None:
        self._owner = owner
        self._revoked, self._assigned, self._lost = on_revoked, on_assigned, on_lost

    async def on_partitions_revoked(self, revoked: Any) -> None:
        for tp in revoked:
            self._owner.blocked.pop(tp.partition, None)
        offsets = self._revoked(sorted(tp.partition for tp in revoked))
        if offsets:
            await self._owner._commit_async(offsets)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self._assigned(sorted(tp.partition for tp in assigned))

    async def on_partitions_lost(self, lost: Any) -> None:
        for tp in lost:
            self._owner.blocked.pop(tp.partition, None)
        self._lost(sorted(tp.partition for tp in lost))


class ReadingsConsumer:
    """Consumes one readings topic in a consumer group; partitions are plain ints here."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        group: str,
        on_revoked: Callable[[list[int]], dict[int, int]],
        on_assigned: Callable[[list[int]], None],
        on_lost: Callable[[list[int]], None],
        max_poll_records: int = 5000,
        session_timeout_ms: int = 10000,
        heartbeat_interval_ms: int = 1000,
        max_poll_interval_ms: int = 60000,
        client_config: dict[str, Any] | None = None,
    ) -> None:
        """``client_config``: more KafkaConsumer arguments -- connection security
        (:meth:`tankwatch.kafka_security.KafkaSecurity.client_kwargs`) and, with
        exactly-once outputs, ``isolation_level='read_committed'``."""
        self.topic = topic
        #: Partitions paused because a fetched batch cannot be decoded (codec library
        #: missing, corrupt batch): partition -> the error. Cleared when it is revoked.
        self.blocked: dict[int, str] = {}
        self._consumer = KafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=max_poll_records,
            session_timeout_ms=session_timeout_ms,
            heartbeat_interval_ms=heartbeat_interval_ms,
            max_poll_interval_ms=max_poll_interval_ms,
            # Large fetches: a poll should carry many ticks' worth of small readings.
            fetch_max_bytes=32 * 1024 * 1024,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            # A fetch that finds no new data is parked by the broker for at most this
            # long (default 500 ms); the next tick's first readings wait for its end.
            fetch_max_wait_ms=50,
            request_timeout_ms=max(session_timeout_ms + 5000, 30000),
            client_id=f"tankwatch-{group}",
            **(client_config or {}),
        )
        # kafka-python's per-record unpacking was half the loop with forecasts off: read
        # each fetched batch's records in one loop (self-checked; stock reader if not).
        #: Whether the fast record reader is in use (False: kafka-python's own, logged).
        self.fast_records = record_batches.install(self._consumer)
        self.commit_timeout_ms = max(session_timeout_ms, 5000)
        # Know the topic's partitions before joining: on Apache Kafka with no initial
        # rebalance delay the join can complete before the client's first metadata
        # for the topic, and the leader then assigns nothing and was seen not to
        # rejoin for minutes (kafka-python 3.0.12). Tansu's slow first join hid it.
        self._consumer.partitions_for_topic(topic)
        self._consumer.subscribe(
            [topic], listener=_Listener(self, on_revoked, on_assigned, on_lost)
        )
        # One metadata round trip *after* subscribing: the coordinator records the
        # subscribed topics' partitions only when a metadata update arrives, and a
        # leader that joined before that assigned against an empty snapshot, saw the
        # partitions a moment later and rebalanced again, at every start (kafka-python
        # 3.0.12, debug log "assignment_snapshot != metadata_snapshot"). Each such
        # rebalance restored the partitions twice, and twice the second join never
        # completed (pipeline/membership.py).
        self._consumer.topics()

    def tp(self, partition: int) -> TopicPartition:
        return TopicPartition(self.topic, partition)

    def poll(self, timeout_ms: int) -> dict[int, list[Any]]:
        """Records by partition (ConsumerRecord lists, in offset order).

        A batch the client cannot decode (kafka-python raises UnsupportedCodecError
        once, then spins inside ``poll`` on the same broken batch -- 100% CPU, and the
        loop never returns to see SIGTERM) pauses its partition instead: the partition
        is listed in :attr:`blocked`, nothing past the batch is committed, and the other
        partitions go on. Revoking the partition (or a restart with the codec
        installed) retries it.
        """
        try:
            batch = self._consumer.poll(timeout_ms=timeout_ms)
        except (UnsupportedCodecError, CorruptRecordError) as exc:
            self._block(exc)
            return {}
        return {tp.partition: msgs for tp, msgs in batch.items() if msgs}

    def _block(self, exc: Exception) -> None:
        fetcher = self._consumer._fetcher  # the library bug lives there; so does the tp
        parts = getattr(fetcher, "_next_partition_records", None)
        meta = getattr(fetcher, "_next_in_line_exception_metadata", None)
        tp = getattr(parts, "topic_partition", None) or getattr(meta, "partition", None)
        tps = [tp] if tp is not None else list(self._consumer.assignment())
        for t in tps:
            self.blocked[t.partition] = f"{type(exc).__name__}: {exc}"
        self._consumer.pause(*tps)
        if parts is not None and getattr(parts, "topic_partition", None) in tps:
            fetcher._next_partition_records = None  # drop the batch it spins on
        log.error(
            "undecodable record batch: partition paused",
            extra={"partitions": [t.partition for t in tps], "error": str(exc)},
        )

    def assigned(self) -> list[int]:
        return sorted(tp.partition for tp in self._consumer.assignment())

    def seek(self, partition: int, offset: int) -> None:
        self._consumer.seek(self.tp(partition), offset)

    def lag(self) -> dict[int, int | None]:
        """Per assigned partition: high water - position (None while unknown)."""
        out: dict[int, int | None] = {}
        for tp in self._consumer.assignment():
            try:
                hw = self._consumer.highwater(tp)
                pos = self._consumer._subscription.assignment[tp].position  # no remote call
            except Exception:  # partition revoked between calls
                continue
            out[tp.partition] = None if hw is None or pos is None else max(0, hw - pos.offset)
        return out

    def lagging(self) -> set[int]:
        """Partitions that may still have unread data (unknown counts as lagging).
        A blocked partition is not: it must not hold back the others' ticks."""
        return {
            p for p, lag in self.lag().items() if (lag is None or lag > 0) and p not in self.blocked
        }

    def probe(self, timeout_ms: int = 2000) -> bool:
        """A cheap round trip to the broker (end offsets of the assignment)."""
        tps = list(self._consumer.assignment())
        try:
            if tps:
                self._consumer.end_offsets(tps, timeout_ms=timeout_ms)
            else:
                self._consumer.topics()
            return True
        except Exception:
            return False

    def commit(self, offsets: dict[int, int]) -> None:
        """Commit these offsets synchronously (raises on failure)."""
        if offsets:
            self._consumer.commit(
                {self.tp(p): OffsetAndMetadata(o, "", -1) for p, o in offsets.items()}
            )

    def group_metadata(self) -> Any:
        """This member's generation, for ``send_offsets_to_transaction`` (KIP-447)."""
        return self._consumer.group_metadata()

    async def _commit_async(self, offsets: dict[int, int]) -> None:
        """Commit from the IO thread (inside a rebalance listener). Failures are logged:
        the restore seeks to the checkpoint's own offset, so a lost commit only means
        re-reading readings the state already covers (dropped as duplicates)."""
        coordinator = self._consumer._coordinator  # no public awaitable commit in 3.0
        try:
            await coordinator._commit_offsets_sync_async(
                {self.tp(p): OffsetAndMetadata(o, "", -1) for p, o in offsets.items()},
                self.commit_timeout_ms,
            )
        except Exception as exc:
            log.warning("commit on revoke failed", extra={"error": str(exc)})

    def in_stable_group(self) -> bool:
        """Joined, assigned and heartbeating (kafka-python's MemberState.STABLE)."""
        from kafka.structs import MemberState

        return bool(self._consumer.group_metadata().state == MemberState.STABLE)

    def close(self) -> None:
        try:
            self._consumer.close(autocommit=False)
        except Exception as exc:
            log.warning("consumer close failed", extra={"error": str(exc)})
