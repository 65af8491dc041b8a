"""Noticing a consumer that has stopped taking part in its group.

Seen twice with kafka-python 3.0.12 on Apache Kafka, in about one run in ten of the
frozen-instance test: right after start-up the client rebalances a second time (it
joined before it had metadata for the topic), disables its heartbeat for the join --
and then never finishes the join. The broker drops the member when its session
expires, the other instance takes every partition, and this one serves nothing, says
nothing and stays "healthy" for good. Not reproduced in 60 start-ups outside the tests;
seen again in CI (an in-process instance alone in its group, 120 s without a partition).
The second rebalance itself is now avoided (``ReadingsConsumer`` fetches metadata after
subscribing), which removes the path every observed hang took; this watch stays as the
safety net for whatever else can leave a member outside its group.

:class:`JoinWatch` turns that into a clear state: a member out of a stable group for
longer than any legitimate rebalance can take (the rebalance timeout, which is
``max_poll_interval_ms``, plus the session timeout and a margin) -- not counting time
spent in this service's own rebalance callbacks, which may wait on the broker -- is
stuck. The service then logs it, counts it and replaces the consumer; the new one joins
afresh and its assignment restores from the last checkpoint as after any rebalance.
"""

from __future__ import annotations

__all__ = ["JoinWatch", "join_limit_s"]


def join_limit_s(session_timeout_ms: int, max_poll_interval_ms: int) -> float:
    """How long a member may legitimately be out of a stable group."""
    return (max_poll_interval_ms + session_timeout_ms) / 1000.0 + 5.0


class JoinWatch:
    """Times how long a member has been out of a stable group (pure: the caller passes
    the clock and what it sees)."""

    def __init__(self, limit_s: float) -> None:
        self.limit_s = limit_s
        self._since: float | None = None

    def out_of_group_s(self, now: float) -> float:
        """Seconds out of a stable group so far (0.0 while in one)."""
        return 0.0 if self._since is None else now - self._since

    def stuck(self, stable: bool, busy: bool, now: float) -> bool:
        """Observe the member at ``now``; True once it has been out of a stable group
        for ``limit_s`` (then the clock starts again). ``busy``: a rebalance callback
        of ours is running or just ran -- the rebalance is making progress."""
        if stable or busy:
            self._since = None
            return False
        if self._since is None:
            self._since = now
            return False
        if now - self._since >= self.limit_s:
            self._since = None
            return True
        return False
