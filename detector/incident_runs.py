"""Anomalous readings merged into runs, the rows of incidents, from arrays alone: a run is one
owner's anomalous readings without a gap of more than INCIDENT_GAP reading steps; it has a
span, a peak (its severity and explanation with it), its most frequent kind and the energy
used above (or below) the expected profile."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from detector.calibration import severities

# Anomalous readings at most this many reading steps apart belong to the same incident.
INCIDENT_GAP = 60
MICROS_PER_HOUR = 3.6e9


def step_micros(detector) -> int:
    """A model's reading step in microseconds (a minute when it has none)."""
    step_ns = getattr(getattr(detector, "features_", None), "step_ns_", None)
    return round(step_ns / 1000) if step_ns else 60_000_000


@dataclass(frozen=True)
class Runs:
    """One entry per run, ordered by owner then time."""

    who: np.ndarray       # the owner's position
    first: np.ndarray     # time of its first and last reading, epoch microseconds
    last: np.ndarray
    sizes: np.ndarray     # readings in it
    peak: np.ndarray      # its highest score (the first if tied)
    peak_evidence: np.ndarray  # the evidence of that score
    severity: np.ndarray  # of the peak
    top: np.ndarray       # the peak's top feature
    kind: np.ndarray      # the most frequent kind (ties: the first by name)
    excess: np.ndarray    # energy above the expected profile, kWh

    def __len__(self) -> int:
        return len(self.who)


def find_runs(at: np.ndarray, times: np.ndarray, scores: np.ndarray, evidence: np.ndarray,
              kinds: np.ndarray, tops: np.ndarray, excess_kw: np.ndarray,
              steps: np.ndarray) -> Runs:
    """The runs of anomalous readings, given per reading its owner's position (`at`), time
    (epoch microseconds), score and evidence (the model's, before habituation), kind, top
    feature and power above the expected profile (kW, NaN counting as none), and per owner its
    reading step (microseconds), which sets both the gap that ends a run and each reading's
    share of energy."""
    order = np.lexsort((times, at))
    at, times, scores = at[order], times[order], scores[order]
    breaks = np.r_[True, (at[1:] != at[:-1]) | (np.diff(times) > INCIDENT_GAP * steps[at[1:]])]
    starts = np.flatnonzero(breaks)
    group = np.cumsum(breaks) - 1
    ends = np.r_[starts[1:], len(at)]
    who = at[starts]
    peak = np.lexsort((-scores, group))[starts]
    excess = np.add.reduceat(np.nan_to_num(excess_kw[order]), starts) * (steps[who] / MICROS_PER_HOUR)
    return Runs(who, times[starts], times[ends - 1], ends - starts, scores[peak],
                evidence[order][peak], severities(scores[peak], np.ones(len(starts), dtype=bool)),
                tops[order][peak], _most_frequent(kinds[order], group, len(starts)), excess)


def _most_frequent(kinds: np.ndarray, group: np.ndarray, groups: int) -> np.ndarray:
    """The most frequent kind of each run (ties: the first by name, as incidents extended in
    SQL count them)."""
    codes, names = pd.factorize(kinds, sort=True)
    counts = np.zeros((groups, len(names)), dtype=int)
    np.add.at(counts, (group, codes), 1)
    return np.asarray(names, dtype=object)[counts.argmax(axis=1)]
