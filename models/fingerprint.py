"""The training data's fingerprint: how ``evaluate`` recognises a model's own data.

Its own module so that :mod:`models.train` and :mod:`models.evaluate` both use it
without importing each other (train runs an evaluation; evaluate must not need train).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

__all__ = ["data_fingerprint"]


def data_fingerprint(paths: Sequence[Path]) -> str:
    """sha256 over the bytes of the data files, in the order given."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()
