"""Detection quality against labels: event-level precision/recall/F1 and recall per kind, and
the NAB benchmark's scoring (standard profile)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detector.incident_runs import INCIDENT_GAP


def runs(flags: np.ndarray, max_gap: int = 0) -> list[tuple[int, int]]:
    """(first, last) positions of runs of True, merging runs separated by <= max_gap Falses."""
    positions = np.flatnonzero(flags)
    if not len(positions):
        return []
    breaks = np.flatnonzero(np.diff(positions) > max_gap + 1)
    starts = np.r_[positions[0], positions[breaks + 1]]
    ends = np.r_[positions[breaks], positions[-1]]
    return list(zip(starts.tolist(), ends.tolist()))


@dataclass
class EventScores:
    precision: float
    recall: float
    f1: float
    recall_by_kind: dict[str, float]
    detected_events: int
    false_events: int


def event_scores(flags: np.ndarray, truth: list[tuple[int, int, str]], *,
                 max_gap: int = INCIDENT_GAP, tolerance: int = 15) -> EventScores:
    """Events are runs of flagged readings (gaps up to max_gap merged, as `detect run` merges
    anomalous readings into incidents). A labelled anomaly
    (first, last, kind) is found when an event overlaps [first, last + tolerance]; an event
    overlapping no labelled anomaly is a false one."""
    events = runs(flags, max_gap)
    starts = np.array([e[0] for e in events])
    ends = np.array([e[1] for e in events])
    found, matched = [], np.zeros(len(events), dtype=bool)
    for first, last, _kind in truth:
        hit = (starts <= last + tolerance) & (ends >= first) if len(events) else np.zeros(0, bool)
        found.append(bool(hit.any()))
        matched |= hit
    true_events = int(matched.sum())
    precision = true_events / len(events) if events else 0.0
    recall = float(np.mean(found)) if truth else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    kinds = sorted({kind for *_, kind in truth})
    by_kind = {kind: float(np.mean([hit for hit, (*_, k) in zip(found, truth) if k == kind]))
               for kind in kinds}
    return EventScores(precision, recall, f1, by_kind, true_events, len(events) - true_events)


# NAB's standard application profile: weights of a true positive, a false positive, a miss.
NAB_TP, NAB_FP, NAB_FN = 1.0, 0.11, 1.0


def _scaled_sigmoid(relative_position):
    """NAB's weight of a detection at a position relative to a window's end (-1..0 inside the
    window: close to 1 early, 0 at the end; > 0 after it, falling to -1); element-wise."""
    relative_position = np.asarray(relative_position, dtype=float)
    return np.where(relative_position > 3.0, -1.0,
                    2.0 / (1.0 + np.exp(5.0 * np.minimum(relative_position, 3.0))) - 1.0)


def nab_raw_score(flags: np.ndarray, windows: list[tuple[int, int]], probation: int) -> float:
    """NAB's raw score of one file, standard profile: the earliest detection in each window
    counts (more when earlier), a detection outside windows costs NAB_FP (less shortly after a
    window), a window without detection costs NAB_FN; the probation period is not scored."""
    score = 0.0
    detections = np.flatnonzero(flags)
    detections = detections[detections >= probation]
    inside = np.zeros(len(detections), dtype=bool)
    for first, last in windows:
        hits = (detections >= first) & (detections <= last)
        inside |= hits
        if hits.any():
            position = -(last - detections[hits][0] + 1) / (last - first + 1)
            score += NAB_TP * float(_scaled_sigmoid(position))
        else:
            score -= NAB_FN
    outside = detections[~inside]
    bounds = np.array(windows, dtype=float).reshape(-1, 2)
    # the window each false detection follows, if any (windows are in time order)
    before = np.searchsorted(bounds[:, 1], outside, side="left") - 1
    after = before >= 0
    first, last = bounds[before[after], 0], bounds[before[after], 1]
    weights = _scaled_sigmoid((outside[after] - last) / (last - first + 1))
    return float(score + NAB_FP * (weights.sum() - (~after).sum()))


def nab_normalised(raw: float, windows: int) -> float:
    """NAB's 0-100 score of a corpus: 100 perfect, 0 the null detector that never fires."""
    perfect, null = NAB_TP * windows, -NAB_FN * windows
    return 100.0 * (raw - null) / (perfect - null) if windows else float("nan")
