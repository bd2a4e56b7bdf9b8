"""Judging one meter from arrays alone (no database): the verdicts, and the summaries it hands
back to be stored giving the same verdicts when read back."""

from __future__ import annotations

import numpy as np
import pytest

from drift.analysis import DriftConfig
from drift.judgement import MeterWork, judge_meter, utc_date
from wattwatch.fields import FIELDS

START = 1_704_067_200  # 2024-01-01 00:00 UTC
STEP = 600
PER_DAY = 86_400 // STEP
CONFIG = DriftConfig(resamples=50)
NAMES = list(FIELDS)
POWER = NAMES.index("active_power_kw")


def readings(first_day: int, days: int, seed: int, power_shift: float = 0.0):
    """Ten-minute readings of every field with a daily cycle (unix seconds, values)."""
    rng = np.random.default_rng(seed)
    seconds = START + first_day * 86_400 + np.arange(days * PER_DAY) * STEP
    hour = (seconds % 86_400) / 3600
    values = 1.0 + 0.5 * np.sin(hour / 24 * 2 * np.pi)[:, None] \
        + rng.normal(0, 0.2, (len(seconds), len(FIELDS)))
    values[:, POWER] += power_shift
    return seconds.astype(np.int64), values


def statuses(result) -> dict[str, str]:
    return {feature.feature: feature.status for feature in result.features}


def test_same_behaviour_is_stable_and_a_shift_is_not():
    reference = readings(0, 14, seed=1)
    same = judge_meter("UTC", MeterWork(reference, {}, readings(14, 7, seed=2), set()),
                       mode="light", config=CONFIG)
    assert set(statuses(same).values()) == {"stable"}
    assert same.baseline is None and same.days == {}  # nothing to store without settings
    shifted = judge_meter("UTC", MeterWork(reference, {}, readings(14, 7, seed=2, power_shift=1.0), set()),
                          mode="light", config=CONFIG)
    assert statuses(shifted)[NAMES[POWER]] == "critical"
    assert {status for feature, status in statuses(shifted).items()
            if feature != NAMES[POWER]} == {"stable"}


def test_too_few_current_readings_are_insufficient():
    result = judge_meter("UTC", MeterWork(readings(0, 14, seed=1), {}, readings(14, 1, seed=2),
                                          set()), mode="full", config=CONFIG)
    assert set(statuses(result).values()) == {"insufficient_data"}


def test_stored_summaries_give_the_same_verdict_as_the_readings():
    reference, current = readings(0, 14, seed=1), readings(14, 7, seed=3, power_shift=0.3)
    days = set(range(START // 86_400 + 14, START // 86_400 + 21))  # UTC day numbers
    first = judge_meter("UTC", MeterWork(reference, {}, current, days, settings="key"),
                        mode="full", config=CONFIG)
    assert first.baseline is not None and sorted(first.days) == [utc_date(d) for d in sorted(days)]
    empty = (np.empty(0, np.int64), np.empty((0, len(FIELDS))))
    again = judge_meter("UTC", MeterWork(first.baseline, first.days, empty, set(), settings="key"),
                        mode="full", config=CONFIG)
    assert again.baseline is None and again.days == {}
    for one, other in zip(first.features, again.features):
        assert one.status == other.status and one.current_n == other.current_n
        assert one.psi == pytest.approx(other.psi)
        assert one.ks_statistic == pytest.approx(other.ks_statistic)
