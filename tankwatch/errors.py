"""One exception tree for the whole project.

Every error a user can cause (bad flag, bad CSV, bad artifact, unreachable broker)
is a :class:`TankwatchError`; the CLI prints its message on one line and exits 2.
Decode errors carry a machine-readable ``reason`` that becomes the DLQ header and
the ``reason`` label of the rejection counter.
"""

from __future__ import annotations


class TankwatchError(Exception):
    """Base of every error tankwatch raises on purpose."""


class ConfigError(TankwatchError):
    """A bad flag, environment variable or configuration value."""


class BrokerError(TankwatchError):
    """Kafka is unreachable, a topic is missing, or the embedded broker failed."""


class CsvError(TankwatchError):
    """A CSV file cannot be read or a row is malformed (with file and line)."""


class ArtifactError(TankwatchError):
    """A model artifact is missing, corrupt, or does not match what the caller needs."""


class DecodeError(TankwatchError):
    """A message on ``tank.readings`` was rejected.

    ``reason`` is one of :data:`tankwatch.codec.REJECT_REASONS`.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class InputError(TankwatchError):
    """Input arrays that must never reach the model state (NaN/inf, wrong shape)."""
