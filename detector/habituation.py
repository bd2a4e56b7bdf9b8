"""Habituation: an anomalous state that persists is less news with every reading.

Within a run of anomalous readings (an incident: no pause longer than INCIDENT_GAP reading
steps), a reading's evidence up to the highest evidence the run has already shown is
discounted by the run's age, `horizon / (horizon + age)` with the age in reading steps since
the run's first reading; what it adds beyond that peak is news and kept whole. So the onset
keeps its full evidence (its score, kind and alert are those of the model), a stronger turn of
an incident stands out, and a meter stuck for hours, or a load left on, ranks below a new
incident instead of tying with its own onset for as long as it lasts. The model's idea of
normal is not refitted: the state is still anomalous (`is_anomaly` is the model's, and the
incident carries the run's undiscounted peak), only its later readings' score and evidence
fall, never below the model's threshold.

The open run (its first and last reading and its undiscounted peak, as `anomaly_incidents`
stores them) is all the rule needs across batches: score-csv carries it through the file, the
service reads it from the meter's open incident (`incidents.open_runs`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from detector.calibration import evidence_from_score, score_from_evidence, severities
from detector.incident_runs import INCIDENT_GAP, step_micros
from detector.seasonality import epoch_ns


@dataclass(frozen=True)
class OpenRun:
    """A meter's run of anomalous readings, times in the caller's unit (epoch microseconds,
    or the steps of a step-indexed file)."""

    onset: int    # its first anomalous reading
    last: int     # its last anomalous reading so far
    peak: float   # its highest evidence before habituation (a float32, as stored)


def discount(times: np.ndarray, evidence: np.ndarray, anomalous: np.ndarray, step: int,
             horizon: float, run: OpenRun | None) -> tuple[np.ndarray, OpenRun | None]:
    """The evidence of one meter's readings (in time order) after habituation, and the run
    open after the last of them. `run`: the run open before the first; `horizon`: the
    readings after which a state's evidence is halved."""
    out = np.array(evidence, dtype=float)
    rows = np.flatnonzero(anomalous)
    if not len(rows):
        return out, run
    t = np.asarray(times)[rows]
    e = out[rows]
    gap = INCIDENT_GAP * step
    # a pause is counted from the run's newest reading so far: late readings inside a stored
    # incident must not make the new readings after them look like a fresh onset
    newest = np.maximum.accumulate(np.r_[-np.inf if run is None else run.last, t[:-1]])
    fresh = t - newest > gap
    bounds = np.r_[0, np.flatnonzero(fresh[1:]) + 1, len(t)]
    for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        onset, prior, last = (int(t[a]), 0.0, int(t[b - 1])) if fresh[a] else \
            (run.onset, run.peak, max(run.last, int(t[b - 1])))
        # the run's undiscounted peak before each reading
        peak = np.maximum.accumulate(np.r_[prior, e[a:b]])
        before = peak[:-1]
        age = np.maximum(t[a:b] - onset, 0) / step
        kept = horizon / (horizon + age)
        out[rows[a:b]] = np.maximum(e[a:b] - before, 0.0) + np.minimum(e[a:b], before) * kept
        run = OpenRun(onset, last, float(np.float32(peak[-1])))
    return out, run


@dataclass(frozen=True)
class Meter:
    """One meter's part of a result frame: its rows (in time order), the model that scored
    them and its run open before the first of them."""

    rows: slice
    detector: object
    run: OpenRun | None = None


def habituate(result: pd.DataFrame, meters: list[Meter]) -> tuple[pd.DataFrame, list]:
    """A result frame (as the models' score() returns it: raw_score and raw_evidence are the
    model's) with each meter's score, evidence and severity habituated; and each meter's run
    open after its rows."""
    score = result["score"].to_numpy(float).copy()
    evidence = result["evidence"].to_numpy(float).copy()
    severity = result["severity"].to_numpy(object).copy()
    anomalous = result["is_anomaly"].to_numpy(bool)
    raw = result["raw_evidence"].to_numpy(float)
    # times in epoch microseconds, or a step-indexed file's steps
    stamped = isinstance(result.index, pd.DatetimeIndex)
    times = epoch_ns(result.index) // 1000 if stamped else np.asarray(result.index, np.int64)
    runs = []
    for meter in meters:
        flagged = anomalous[meter.rows]
        horizon = meter.detector.horizon
        if horizon is None or not flagged.any():
            runs.append(meter.run)
            continue
        mine = times[meter.rows]
        # a step-indexed file counts in its own steps (1, or the index's usual increment)
        step = step_micros(meter.detector) if stamped else \
            int(max(np.median(np.diff(mine)), 1)) if len(mine) > 1 else 1
        discounted, run = discount(mine, raw[meter.rows], flagged, step, horizon,
                                   meter.run)
        runs.append(run)
        # never below the threshold: the reading is still anomalous
        threshold = meter.detector.threshold_
        rows = np.arange(*meter.rows.indices(len(result)))[flagged]
        evidence[rows] = np.maximum(discounted[flagged], evidence_from_score(threshold))
        score[rows] = np.maximum(score_from_evidence(evidence[rows]), threshold)
        severity[rows] = severities(score[rows], np.ones(len(rows), dtype=bool))
    return result.assign(score=score.astype(np.float32), evidence=evidence.astype(np.float32),
                         severity=severity), runs


def score_series(detector, frame: pd.DataFrame) -> pd.DataFrame:
    """Every reading of one series (in time order) scored and habituated in one pass, from no
    open run: what score-csv writes, and what the service's batches and cycles give."""
    return habituate(detector.score(frame), [Meter(slice(None), detector)])[0]
