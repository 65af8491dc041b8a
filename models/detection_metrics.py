"""Anomaly-detection scores as the benchmarks count them (3W, NAB-style episodes).

Inputs are per-reading arrays over (K ticks, N tanks): ``flags`` (the detector's
output), ``truth`` (labelled abnormal), ``valid`` (a reading that is labelled and
present; everything else is ignored). All scores are computed on ``valid`` readings.

* **Point level**: precision, recall, F1; false-alarm rate = flagged normal readings /
  normal readings; missed-alarm rate = unflagged abnormal readings / abnormal readings
  (= 1 - recall).
* **Event level**: an *event* is a run of consecutive abnormal readings of one tank;
  it is *hit* when a flag falls inside it; a *false episode* is a run of consecutive
  flags that touches no abnormal reading.
* **Detection delay**: per hit event, ticks from its first reading to the first flag
  inside it (``interval_s`` converts to seconds).

>>> import numpy as np
>>> f = np.array([[0], [1], [1], [0], [1]], bool); t = np.array([[0], [0], [1], [1], [0]], bool)
>>> m = point_event_scores(f, t, np.ones_like(f))
>>> (m["precision"], m["recall"], m["events"], m["events_hit"], m["false_episodes"])
(0.3333333333333333, 0.5, 1, 1, 1)
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["point_event_scores", "runs"]


def runs(mask: NDArray[np.bool_]) -> list[tuple[int, int]]:
    """[start, stop) index ranges of the True runs of a 1-D mask."""
    m = np.concatenate([[False], np.asarray(mask, bool), [False]])
    d = np.diff(m.astype(np.int8))
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist(), strict=True))


def point_event_scores(
    flags: NDArray[np.bool_],
    truth: NDArray[np.bool_],
    valid: NDArray[np.bool_],
    interval_s: float = 1.0,
) -> dict[str, Any]:
    """Point- and event-level scores of ``flags`` against ``truth`` (both (K, N))."""
    f = flags & valid
    t = truth & valid
    tp = int((f & t).sum())
    fp = int((f & ~t).sum())
    fn = int((~f & t).sum())
    normal = int((valid & ~truth).sum())
    abnormal = int(t.sum())
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / abnormal if abnormal else None
    f1 = (
        2 * precision * recall / (precision + recall)
        if precision is not None and recall is not None and precision + recall > 0
        else 0.0
    )
    events = hits = false_eps = 0
    delays: list[float] = []
    for j in range(flags.shape[1]):
        # Compress to this tank's valid readings so gaps do not split runs.
        idx = np.flatnonzero(valid[:, j])
        fj, tj = f[idx, j], t[idx, j]
        for a, b in runs(tj):
            events += 1
            inside = np.flatnonzero(fj[a:b])
            if inside.size:
                hits += 1
                delays.append(float(idx[a + inside[0]] - idx[a]) * interval_s)
        for a, b in runs(fj):
            if not tj[a:b].any():
                false_eps += 1
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "false_alarm_rate": fp / normal if normal else None,
        "missed_alarm_rate": fn / abnormal if abnormal else None,
        "events": events,
        "events_hit": hits,
        "false_episodes": false_eps,
        "detection_delay_s": delays,
        "median_delay_s": float(np.median(delays)) if delays else None,
        "normal_readings": normal,
        "abnormal_readings": abnormal,
    }
