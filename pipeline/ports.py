"""Small shared types of the pipeline's parts, kept apart so nothing imports the service.

``service`` wires the parts together; ``ownership`` (partition bookkeeping), ``api``
(the dashboard JSON) and ``bootstrap`` only need these shapes, not the service itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from tankwatch.codec import PRESSURE_RANGE_KPA

__all__ = ["ConsumerFactory", "ConsumerLike", "ModelInfo"]


@dataclass(frozen=True)
class ModelInfo:
    model_version: str
    engine: str
    tick_interval_s: float
    max_gap_ticks: int
    path: str
    #: {feature: [source per reported horizon]} (models.serving; "lstm" everywhere
    #: for an artifact without a skill gate).
    sources: dict[str, list[str]] | None = None
    #: The fleet's pressure reference and the limits readings are validated against.
    pressure_reference: str = "absolute"
    pressure_range: tuple[float, float] = PRESSURE_RANGE_KPA
    #: (low (F,), high (F,)) of the readings the model was trained on, if recorded.
    value_range: tuple[Any, Any] | None = None


class ConsumerLike(Protocol):
    def poll(self, timeout_ms: int) -> dict[int, list[Any]]: ...
    def assigned(self) -> list[int]: ...
    def seek(self, partition: int, offset: int) -> None: ...
    def lag(self) -> dict[int, int | None]: ...
    def lagging(self) -> set[int]: ...
    def probe(self, timeout_ms: int = ...) -> bool: ...
    def commit(self, offsets: dict[int, int]) -> None: ...
    def group_metadata(self) -> Any: ...
    def in_stable_group(self) -> bool: ...
    def close(self) -> None: ...


#: make_consumer(on_revoked, on_assigned, on_lost) -> consumer; on_revoked returns the
#: offsets to commit (the consumer commits them on its IO thread).
ConsumerFactory = Callable[
    [
        Callable[[list[int]], dict[int, int]],
        Callable[[list[int]], None],
        Callable[[list[int]], None],
    ],
    ConsumerLike,
]
