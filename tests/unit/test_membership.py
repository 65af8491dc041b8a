"""pipeline.membership: when a consumer counts as stuck outside its group."""

from __future__ import annotations

from pipeline.membership import JoinWatch, join_limit_s


def test_limit_covers_the_longest_legitimate_rebalance() -> None:
    assert join_limit_s(3000, 15000) == 23.0
    assert join_limit_s(10000, 60000) == 75.0


def test_stuck_only_after_the_limit_out_of_a_stable_group() -> None:
    w = JoinWatch(20.0)
    assert not w.stuck(stable=False, busy=False, now=100.0)  # starts the clock
    assert not w.stuck(stable=False, busy=False, now=119.0)
    assert w.out_of_group_s(119.0) == 19.0
    assert w.stuck(stable=False, busy=False, now=120.0)
    # The clock starts again after a report (the caller replaced the consumer).
    assert not w.stuck(stable=False, busy=False, now=121.0)
    assert not w.stuck(stable=False, busy=False, now=140.0)
    assert w.stuck(stable=False, busy=False, now=141.0)


def test_a_stable_moment_or_our_own_callback_resets_the_clock() -> None:
    w = JoinWatch(20.0)
    w.stuck(stable=False, busy=False, now=0.0)
    assert not w.stuck(stable=True, busy=False, now=15.0)
    assert not w.stuck(stable=False, busy=False, now=16.0)
    assert not w.stuck(stable=False, busy=False, now=35.0)  # 19 s since the reset
    assert not w.stuck(stable=False, busy=True, now=36.0)  # a slow restore: progress
    assert w.out_of_group_s(36.0) == 0.0
    assert not w.stuck(stable=False, busy=False, now=50.0)
    assert w.stuck(stable=False, busy=False, now=70.0)
