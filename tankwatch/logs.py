"""Structured, quiet-by-default logging: one JSON object per line on stderr.

Libraries stay silent unless asked for: at the default level (``warning``) and at
``error`` the loggers of kafka-python, TensorFlow and friends are raised to CRITICAL —
a refused connection is reported once, by our own one-line error, not by 21 retries —
at ``info`` their warnings show and at ``debug`` everything does — except kafka-python,
which stays at WARNING or above because its DEBUG output prints its configuration,
SASL password included. TensorFlow's native
start-up chatter (oneDNN notice, CUDA probing on a CPU-only machine) is written by C++
straight to file descriptor 2 before its log level is read, so :func:`quiet_native_stderr`
closes that descriptor around the import (see ``models.network.import_keras``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterator

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


#: Third-party loggers that are noise unless asked for (see the module docstring).
LIBRARY_LOGGERS = ("kafka", "tensorflow", "absl", "keras", "h5py", "matplotlib", "PIL", "urllib3")


def library_level(level: int) -> int:
    """The level of :data:`LIBRARY_LOGGERS` for a root ``level``.

    >>> [logging.getLevelName(library_level(x)) for x in (10, 20, 30, 40)]
    ['DEBUG', 'WARNING', 'CRITICAL', 'CRITICAL']
    """
    if level <= logging.DEBUG:
        return logging.DEBUG
    return logging.WARNING if level <= logging.INFO else logging.CRITICAL


def setup_logging(level: str = "warning") -> None:
    """Configure the root logger once. Level names: debug, info, warning, error."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(library_level(root.level))
    # kafka-python logs its configuration -- SASL password included -- and the SASL
    # exchange at DEBUG: the ``kafka`` logger never goes below WARNING.
    logging.getLogger("kafka").setLevel(max(logging.WARNING, library_level(root.level)))
    # TensorFlow reads this when it loads (3 = errors too: "failed call to cuInit" on a
    # CPU-only machine is an error line); an explicit setting by the user wins.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if root.level <= logging.DEBUG else "3")


def native_debug() -> bool:
    """True when the user asked for debug logs (then native chatter is kept)."""
    return logging.getLogger().getEffectiveLevel() <= logging.DEBUG


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null for the block (unless debug logging).

    For imports whose C++ code prints before any log level applies. Python-level errors
    raised inside the block still propagate and are printed after it.
    """
    if native_debug():
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 2)
        finally:
            os.close(devnull)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@contextlib.contextmanager
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
