"""Which partitions a periodic checkpoint takes (``PartitionOwnership._checkpoint_share``):
a large fleet is checkpointed a share of its partitions at a time, and every partition
is still checkpointed at least once per ``checkpoint_interval_s``."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry

from pipeline.config import Settings
from pipeline.ownership import PartitionOwnership
from pipeline.sinks.metrics import PipelineMetrics


class Owner(PartitionOwnership):
    """Just the fields ``_checkpoint_share`` reads."""

    def __init__(self, partitions: int, tanks: int, per: int, exactly_once: bool = False):
        self.settings = Settings(checkpoint_interval_s=10.0, checkpoint_spread_tanks=per)
        self._assigned = set(range(partitions))
        self._checkpointed_at = {}
        self.assembler = SimpleNamespace(registry=range(tanks))  # type: ignore[assignment]
        self.producer = SimpleNamespace(exactly_once=exactly_once)
        self.metrics = PipelineMetrics(CollectorRegistry(), "m", "numpy", 60.0, ())


def run_periodic(owner: Owner, seconds: float) -> list[tuple[float, list[int]]]:
    """Periodic checkpoints for ``seconds`` of fake time, each taking its share."""
    now, taken = 0.0, []
    while now < seconds:
        share, wait = owner._checkpoint_share()
        parts = sorted(owner._assigned) if share is None else share
        owner._checkpointed_at.update(dict.fromkeys(parts, now))
        taken.append((now, parts))
        now += wait
    return taken


@pytest.mark.parametrize(
    ("partitions", "tanks", "per", "shares"),
    [(4, 10_000, 2500, 4), (4, 5_000, 2500, 2), (6, 10_000, 2500, 4), (12, 100_000, 2500, 12),
     (3, 9_000, 1000, 3)],
)  # fmt: skip
def test_a_large_fleet_is_checkpointed_in_shares_each_partition_every_interval(
    partitions: int, tanks: int, per: int, shares: int
) -> None:
    owner = Owner(partitions, tanks, per)
    taken = run_periodic(owner, 100.0)
    assert owner.metrics.checkpoint_shares._value.get() == shares
    assert all(len(parts) == math.ceil(partitions / shares) for _, parts in taken)
    assert taken[1][0] == pytest.approx(10.0 / shares)  # shares per interval
    last: dict[int, float] = {}
    for now, parts in taken:
        for p in parts:
            # Never longer than one interval between a partition's checkpoints.
            assert now - last.get(p, 0.0) <= 10.0 + 1e-9, (p, now, last.get(p))
            last[p] = now
    assert set(last) == set(range(partitions))


@pytest.mark.parametrize(
    ("partitions", "tanks", "per", "exactly_once"),
    [(4, 2_500, 2500, False), (4, 10_000, 0, False), (1, 10_000, 2500, False),
     (4, 10_000, 2500, True)],
)  # fmt: skip
def test_all_at_once_when_small_off_one_partition_or_exactly_once(
    partitions: int, tanks: int, per: int, exactly_once: bool
) -> None:
    owner = Owner(partitions, tanks, per, exactly_once)
    assert owner._checkpoint_share() == (None, 10.0)
    assert owner.metrics.checkpoint_shares._value.get() == 1


def test_a_partition_assigned_later_or_never_checkpointed_goes_first() -> None:
    owner = Owner(4, 10_000, 2500)
    owner._checkpointed_at = {0: 5.0, 1: 3.0, 2: 4.0}  # 3: never
    assert owner._checkpoint_share()[0] == [3]
    owner._checkpointed_at[3] = 6.0
    assert owner._checkpoint_share()[0] == [1]
