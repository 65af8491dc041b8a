"""Topic names and topic creation (``tankwatch topics create``)."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

from tankwatch.errors import BrokerError
from tankwatch.kafka_security import KafkaSecurity
from tankwatch.logs import quiet_kafka_logs


@dataclass(frozen=True, slots=True)
class Topics:
    """The four topics. Names are configuration (flags / environment)."""

    readings: str = "tank.readings"
    dlq: str = "tank.readings.dlq"
    forecasts: str = "tank.forecasts"
    state: str = "tank.state"

    @classmethod
    def from_env(cls) -> Topics:
        d = cls()  # with slots=True the class attributes are descriptors, not defaults
        return cls(
            readings=os.environ.get("TANKWATCH_TOPIC_READINGS", d.readings),
            dlq=os.environ.get("TANKWATCH_TOPIC_DLQ", d.dlq),
            forecasts=os.environ.get("TANKWATCH_TOPIC_FORECASTS", d.forecasts),
            state=os.environ.get("TANKWATCH_TOPIC_STATE", d.state),
        )


def create_topics(
    bootstrap: str,
    topics: Topics,
    partitions: int = 4,
    replication: int = 1,
    security: KafkaSecurity | None = None,
) -> list[str]:
    """Create the four topics (existing ones are left alone); returns the names created.

    ``tank.state`` uses the same partition count as ``tank.readings`` so a tank's state
    lives in the partition with the same number as its readings (same key, same
    default partitioner): an instance restores exactly the partitions it is assigned.
    """
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    if partitions < 1:
        raise BrokerError(f"partitions must be >= 1, got {partitions}")
    try:
        with quiet_kafka_logs():
            admin = KafkaAdminClient(
                bootstrap_servers=bootstrap,
                request_timeout_ms=10000,
                bootstrap_timeout_ms=10000,
                **(security.client_kwargs() if security else {}),
            )
    except KafkaError as exc:
        hint = security.hint() if security else ""
        raise BrokerError(f"cannot reach Kafka at {bootstrap}: {exc}{hint}") from None
    try:
        existing = set(admin.list_topics())
        wanted = [
            NewTopic(topics.readings, partitions, replication),
            NewTopic(topics.dlq, partitions, replication),
            NewTopic(topics.forecasts, partitions, replication),
            NewTopic(
                topics.state,
                partitions,
                replication,
                topic_configs={"cleanup.policy": "compact"},
            ),
        ]
        todo = [t for t in wanted if t.name not in existing]
        if todo:
            # Another process may create them between list and create: that is fine.
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(todo)
        # Apache Kafka (KRaft) answers CreateTopics before every partition has a leader
        # in its metadata; a consumer joining in that window gets no partitions and is
        # not told when they appear. Return only once all four are usable.
        admin.wait_for_topics([t.name for t in wanted], timeout_ms=30000)
        return [t.name for t in todo]
    except KafkaError as exc:
        raise BrokerError(f"creating topics on {bootstrap} failed: {exc}") from None
    finally:
        admin.close()
