"""Structured, quiet-by-default logging: one JSON object per line on stderr."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup_logging(level: str = "warning") -> None:
    """Configure the root logger once. Level names: debug, info, warning, error."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # kafka-python is chatty at INFO, and at DEBUG it logs its configuration -- SASL
    # password included -- and the SASL exchange: never below WARNING.
    logging.getLogger("kafka").setLevel(max(logging.WARNING, root.level))


@contextmanager
def quiet_kafka_logs(level: int = logging.CRITICAL) -> Iterator[None]:
    """Raise the ``kafka`` logger to ``level`` for a while (unless we debug).

    kafka-python logs every refused connection (and every failed authentication, which
    the broker answers by closing the connection) at ERROR; the user gets our one-line
    BrokerError instead of a screenful of retries.
    """
    logger = logging.getLogger("kafka")
    before = logger.level
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logger.setLevel(max(level, before))
    try:
        yield
    finally:
        logger.setLevel(before)
