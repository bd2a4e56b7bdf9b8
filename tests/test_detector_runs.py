"""Incident runs from arrays alone (no database): splitting, peaks, kinds, energy, severity."""

from __future__ import annotations

import numpy as np

from detector.incident_runs import INCIDENT_GAP, find_runs

MINUTE = 60_000_000  # microseconds


def runs_of(at, minutes, scores, kinds, excess_kw, steps=(MINUTE,)):
    n = len(at)
    scores = np.array(scores, dtype=float)
    return find_runs(np.array(at), np.array(minutes) * MINUTE, scores, scores / 12.5,
                     np.array(kinds, dtype=object), np.array([f"f{i}" for i in range(n)],
                                                            dtype=object),
                     np.array(excess_kw, dtype=float), np.array(steps))


def test_a_gap_longer_than_the_incident_gap_splits_a_run():
    runs = runs_of([0] * 4, [0, 1, 1 + INCIDENT_GAP, 2 + 2 * INCIDENT_GAP],
                   [70, 95, 85, 66], ["spike"] * 4, [1.0] * 4)
    assert runs.sizes.tolist() == [3, 1]
    assert runs.first.tolist() == [0, (2 + 2 * INCIDENT_GAP) * MINUTE]
    assert runs.last.tolist() == [(1 + INCIDENT_GAP) * MINUTE, (2 + 2 * INCIDENT_GAP) * MINUTE]
    assert runs.peak.tolist() == [95.0, 66.0]
    assert runs.peak_evidence.tolist() == [95.0 / 12.5, 66.0 / 12.5]  # the peak's own
    assert runs.severity.tolist() == ["critical", "medium"]
    assert runs.top.tolist() == ["f1", "f3"]  # the peak's explanation


def test_owners_get_runs_of_their_own_in_order_whatever_the_input_order():
    runs = runs_of([1, 0, 1, 0], [5, 3, 4, 2], [80, 70, 90, 75], ["drop"] * 4, [0.0] * 4,
                   steps=(MINUTE, MINUTE))
    assert runs.who.tolist() == [0, 1]
    assert runs.first.tolist() == [2 * MINUTE, 4 * MINUTE]
    assert runs.peak.tolist() == [75.0, 90.0]


def test_energy_is_the_excess_power_over_each_reading_step_and_missing_counts_as_none():
    runs = runs_of([0, 0, 0, 1], [0, 15, 30, 0], [70] * 4, ["spike"] * 4, [2.0, np.nan, -1.0, 3.0],
                   steps=(15 * MINUTE, MINUTE))
    np.testing.assert_allclose(runs.excess, [(2.0 - 1.0) * 0.25, 3.0 / 60])


def test_the_kind_is_the_most_frequent_and_ties_go_to_the_first_name():
    runs = runs_of([0] * 5 + [1] * 2, [0, 1, 2, 3, 4, 0, 1], [70] * 7,
                   ["spike", "drop", "drop", "spike", "drop", "spike", "drop"], [0.0] * 7,
                   steps=(MINUTE, MINUTE))
    assert runs.kind.tolist() == ["drop", "drop"]
