"""Point-level scoring and the isolation-forest reference detector."""

from __future__ import annotations

import numpy as np

from models.anomaly import AnomalyScorer
from models.detection_baseline import calibrated_flags, isolation_forest_scores
from models.detection_metrics import point_event_scores


def test_point_and_event_scores_count_what_the_benchmarks_count() -> None:
    truth = np.zeros((20, 2), bool)
    truth[10:15, 0] = True  # one event on tank 0
    flags = np.zeros((20, 2), bool)
    flags[12:16, 0] = True  # hit 2 ticks after onset, one tick after it ends
    flags[3:5, 1] = True  # a false episode on tank 1
    valid = np.ones((20, 2), bool)
    valid[0, :] = False  # unlabelled readings are ignored
    m = point_event_scores(flags, truth, valid, interval_s=60.0)
    # The run 12..15 touches the event, so only tank 1's run is a false episode.
    assert (m["events"], m["events_hit"], m["false_episodes"]) == (1, 1, 1)
    assert m["detection_delay_s"] == [120.0]
    assert m["precision"] == 3 / 6 and m["recall"] == 3 / 5
    assert m["false_alarm_rate"] == 3 / (38 - 5)
    assert m["missed_alarm_rate"] == 2 / 5


def test_isolation_forest_and_per_tank_thresholds_flag_a_level_shift() -> None:
    rng = np.random.default_rng(0)
    k = 1500
    vals = np.column_stack([rng.normal(100, 0.1, k), rng.normal(50, 0.05, k)])
    vals[1000:, 0] -= 5.0  # the fault: a level shift of 50 sigma
    calibration = np.zeros(k, bool)
    calibration[:600] = True
    scores = isolation_forest_scores(vals, calibration, window=30)
    flags = calibrated_flags(scores[:, None], np.ones((k, 1), bool), calibration[:, None], 0.999)
    truth = np.zeros((k, 1), bool)
    truth[1000:] = True
    m = point_event_scores(flags, truth, ~calibration[:, None])
    assert m["events_hit"] == 1 and m["false_alarm_rate"] < 0.05


def test_departure_detector_holds_a_flag_while_the_level_stays_away() -> None:
    scorer = AnomalyScorer(1, warmup=20, departure_alpha=0.01)
    rng = np.random.default_rng(1)
    flags = []
    for t in range(600):
        x = 100.0 + rng.normal(0, 0.1) - (5.0 if t >= 300 else 0.0)
        y = 50.0 + rng.normal(0, 0.1)  # a live second channel (a constant one is stuck)
        _, f = scorer.update(np.zeros((1, 2)), np.ones(1, bool), actual=np.array([[x, y]]))
        flags.append(bool(f[0]))
    assert not any(flags[:300])
    assert all(flags[310:])  # not absorbed as the new normal


def test_a_coarsely_quantised_channel_is_not_stuck_but_a_frozen_one_is() -> None:
    rng = np.random.default_rng(3)
    n = 4000
    # Pressure on a coarse sensor: a slow wander read in steps of 1 unit, so the
    # reading repeats for tens of ticks (like 3W's P-TPT: a few hundred values per run).
    coarse = np.round(np.cumsum(rng.normal(0, 0.05, n)))
    live = 50.0 + rng.normal(0, 0.1, n)
    frozen = live.copy()
    frozen[3000:] = frozen[3000]
    flags = {}
    for name, second in (("coarse", live), ("frozen", frozen)):
        scorer = AnomalyScorer(1, stuck_warmup=300)
        out = []
        for t in range(n):
            _, f = scorer.update(
                np.zeros((1, 2)), np.ones(1, bool), actual=np.array([[coarse[t], second[t]]])
            )
            out.append(bool(f[0]))
        flags[name] = np.asarray(out)
    longest = max(
        len(r)
        for r in "".join("x" if c == coarse[i - 1] else " " for i, c in enumerate(coarse)).split()
    )
    assert longest > 30  # the coarse channel does sit still for long stretches
    assert not flags["coarse"].any()
    assert flags["frozen"][3100:].all()
