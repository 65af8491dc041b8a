"""Dead letters: rejected ``tank.readings`` messages go to ``tank.readings.dlq``.

The original key and bytes are kept; headers carry ``reason`` (one of
:data:`tankwatch.codec.REJECT_REASONS`, ``no_key`` or an intake reason of the
assembler) and the source topic, partition and offset, so a DLQ entry is idempotent by
its source coordinates (after a crash it may repeat). Nothing here can stop the stream,
and no dead letter is lost:

* a value larger than ``max_bytes`` keeps its first ``max_bytes`` bytes, with headers
  ``truncated`` = ``true`` and ``original_size`` (bytes), and is counted -- a value near
  the broker's 1 MiB limit would otherwise be refused and the letter lost;
* a send that fails (at once, or later in the producer) is kept and sent again by
  :meth:`DeadLetters.resend_failed` before the checkpoint that would commit past it,
  as a header-only letter (value cut to nothing) if need be; if that fails too, the
  checkpoint fails and the offsets are not committed.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from typing import Any

from tankwatch.errors import BrokerError

__all__ = ["DeadLetters"]

log = logging.getLogger(__name__)

#: Default cut-off: half the producer's default ``max_request_size`` (1 MiB), leaving
#: room for key, headers and batch overhead under any broker's default limit.
DEFAULT_MAX_BYTES = 512 * 1024

_Letter = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]


class DeadLetters:
    """Sends rejected messages to the DLQ topic and counts them by reason."""

    def __init__(
        self,
        producer: Any,
        topic: str,
        max_bytes: int = DEFAULT_MAX_BYTES,
        truncated_counter: Any = None,
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.max_bytes = max_bytes
        self.by_reason: Counter[str] = Counter()
        self.send_errors = 0
        self.truncated = 0
        self._truncated_counter = truncated_counter
        # Letters whose send failed; appended from the producer's IO thread.
        self._failed: list[_Letter] = []
        self._failed_lock = threading.Lock()

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
        if value is not None and len(value) > self.max_bytes:
            headers += [("truncated", b"true"), ("original_size", str(len(value)).encode())]
            value = value[: self.max_bytes]
            self._count_truncated()
        self._send((key, value, headers))

    def _count_truncated(self) -> None:
        self.truncated += 1
        if self._truncated_counter is not None:
            self._truncated_counter.inc()

    def _send(self, letter: _Letter) -> None:
        key, value, headers = letter
        try:
            future = self.producer.send(self.topic, key=key, value=value, headers=headers)
        except Exception as exc:  # too large / buffer full / broker gone: keep, never stall
            self._failed_send(letter, exc)
            return
        add_errback = getattr(future, "add_errback", None)
        if add_errback is not None:
            add_errback(lambda exc: self._failed_send(letter, exc))

    def _failed_send(self, letter: _Letter, exc: BaseException) -> None:
        self.send_errors += 1
        with self._failed_lock:
            self._failed.append(letter)
        headers = dict(letter[2])
        log.warning(
            "dead letter not sent; kept for the next checkpoint",
            extra={
                "reason": headers.get("reason", b"").decode(),
                "partition": headers.get("source_partition", b"").decode(),
                "offset": headers.get("source_offset", b"").decode(),
                "error": str(exc),
            },
        )

    @property
    def pending(self) -> int:
        """Letters whose send failed and that were not sent again yet."""
        with self._failed_lock:
            return len(self._failed)

    def resend_failed(self, timeout_s: float) -> None:
        """Send the failed letters again, header-only (value cut to b"" and marked
        truncated, as the value may be what the broker refused), and wait for them.
        Raises BrokerError if any still fails: the caller must not commit offsets."""
        with self._failed_lock:
            letters, self._failed = self._failed, []
        if not letters:
            return
        futures = []
        for key, value, headers in letters:
            if value:
                have = {k for k, _ in headers}
                if "original_size" not in have:
                    headers = [*headers, ("original_size", str(len(value)).encode())]
                if "truncated" not in have:
                    headers = [*headers, ("truncated", b"true")]
                    self._count_truncated()
                value = b""
            letter: _Letter = (key, value, headers)
            try:
                futures.append(
                    (letter, self.producer.send(self.topic, key=key, value=value, headers=headers))
                )
            except Exception as exc:
                with self._failed_lock:
                    self._failed.append(letter)
                raise BrokerError(f"dead letter could not be sent: {exc}") from None
        self.producer.flush(timeout=timeout_s)
        lost = []
        for letter, fut in futures:
            try:
                fut.get(timeout=0)
            except Exception as exc:
                lost.append((letter, exc))
        if lost:
            with self._failed_lock:
                self._failed.extend(letter for letter, _ in lost)
            raise BrokerError(f"{len(lost)} dead letter(s) could not be sent: {lost[0][1]}")
