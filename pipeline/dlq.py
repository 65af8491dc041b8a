"""Dead letters: rejected ``tank.readings`` messages go to ``tank.readings.dlq``.

The original key and bytes are kept; headers carry ``reason`` (one of
:data:`tankwatch.codec.REJECT_REASONS`) and the source topic, partition and offset, so
a DLQ entry is idempotent by its source coordinates (after a crash it may repeat).
Nothing here can stop the stream: a failed send is counted and logged, never raised.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

__all__ = ["DeadLetters"]

log = logging.getLogger(__name__)


class DeadLetters:
    """Sends rejected messages to the DLQ topic and counts them by reason."""

    def __init__(self, producer: Any, topic: str) -> None:
        self.producer = producer
        self.topic = topic
        self.by_reason: Counter[str] = Counter()
        self.send_errors = 0

    def send(
        self,
        key: bytes | None,
        value: bytes | None,
        reason: str,
        source_topic: str,
        partition: int,
        offset: int,
    ) -> None:
        """Queue one dead letter (asynchronous; flushed with the next checkpoint)."""
        self.by_reason[reason] += 1
        headers = [
            ("reason", reason.encode()),
            ("source_topic", source_topic.encode()),
            ("source_partition", str(partition).encode()),
            ("source_offset", str(offset).encode()),
        ]
        try:
            self.producer.send(self.topic, key=key, value=value, headers=headers)
        except Exception as exc:  # buffer full / broker gone: count, never stall
            self.send_errors += 1
            log.warning(
                "dead letter not sent",
                extra={
                    "reason": reason,
                    "partition": partition,
                    "offset": offset,
                    "error": str(exc),
                },
            )
