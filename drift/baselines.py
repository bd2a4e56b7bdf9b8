"""Season-aware baselines: compare like hours of the week with like.

A meter's consumption follows the clock (night base load, evening peak, weekends), so two
windows holding different mixes of hours differ even when nothing changed. The baseline
therefore keeps, for each hour of the day on working days and on weekends (48 strata,
meter-local time), the reference values of that hour. (Finer strata, one per hour of the week,
would leave each hour with only the four days of a four-week reference: too few to know its
spread.) A current value is read through the reference values of its own hour:

- its probability integral transform (PIT): the share of the same hour's reference values below
  it (ties broken at random). Without drift PIT values are spread evenly whatever the hour mix,
  so the baseline's quantile bins (per hour) and the KS test work on them;
- its residual from the same hour's reference median, in the feature's own unit, for the
  Wasserstein distance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

STRATA = 48  # hours 0-23 of Monday-Friday, then hours 0-23 of Saturday-Sunday
SECONDS_PER_DAY = 86_400
DAY_PARTS = 4  # night 0-6 h, morning 6-12 h, afternoon 12-18 h, evening 18-24 h
# 1970-01-01 was a Thursday; shifting by 3 days makes day 0 of the week a Monday.
EPOCH_WEEKDAY = 3


@dataclass(frozen=True)
class Calendar:
    """Where each reading falls in the meter's local calendar."""

    stratum: np.ndarray  # local hour 0-23 on Monday-Friday, 24 + local hour at weekends
    day: np.ndarray  # local day number (days since 1970-01-01, local time)


def local_calendar(epoch_seconds: np.ndarray, timezone: str) -> Calendar:
    """Season stratum and local day of each timestamp (seconds since the epoch, UTC)."""
    seconds = np.asarray(epoch_seconds, dtype=np.int64)
    if timezone != "UTC" and len(seconds):
        utc = pd.DatetimeIndex(pd.to_datetime(seconds, unit="s", utc=True))
        # Wall-clock seconds: the UTC offset of each instant (DST included) added on.
        seconds = utc.tz_convert(timezone).tz_localize(None).as_unit("s").asi8
    day = seconds // SECONDS_PER_DAY
    hour = (seconds % SECONDS_PER_DAY) // 3600
    weekend = (day + EPOCH_WEEKDAY) % 7 >= 5
    return Calendar(stratum=(weekend * 24 + hour).astype(np.int16), day=day.astype(np.int32))


def day_part(stratum: np.ndarray) -> np.ndarray:
    """Part of the day (0-3, six hours each) of each stratum."""
    return (stratum % 24) // (24 // DAY_PARTS)


class SeasonalBaseline:
    """The reference values of one feature, sorted within each stratum (hour of the day type).

    Values are sorted on a composite key (stratum + the value scaled into [0, 0.5]), so one
    sort gives each reference value's rank among its own stratum's values. New values are
    ranked through the summary drawn from it (drift/summaries.py), not through it.
    """

    def __init__(self, values: np.ndarray, stratum: np.ndarray):
        values = np.asarray(values, dtype=float)
        if len(values) == 0:
            raise ValueError("a baseline needs at least one reference value, got none")
        self.low_ = float(values.min())
        self.span_ = float(values.max()) - self.low_ or 1.0
        self.stratum_ = stratum
        self.keys_ = self.keys(values, stratum)
        order = np.argsort(self.keys_)
        self.sorted_keys_ = self.keys_[order]
        sorted_values = values[order]
        self.counts_ = np.bincount(stratum, minlength=STRATA)
        self.starts_ = np.cumsum(self.counts_) - self.counts_
        # Each reference value's rank range among its stratum's values (ties share a range),
        # in sorted order and in the original order.
        self.sorted_below_, self.sorted_not_above_ = (
            bound - np.repeat(self.starts_, self.counts_) for bound in _tie_bounds(self.sorted_keys_))
        self.below_, self.not_above_ = _unsorted(order, self.sorted_below_, self.sorted_not_above_)
        # Median of each stratum: mean of the two middle values (NaN for a stratum without data).
        lower = self.starts_ + np.maximum(self.counts_ - 1, 0) // 2
        upper = self.starts_ + self.counts_ // 2
        safe = np.minimum([lower, upper], len(values) - 1)
        self.medians_ = np.where(self.counts_ > 0, (sorted_values[safe[0]] + sorted_values[safe[1]]) / 2,
                                 np.nan)

    def keys(self, values: np.ndarray, stratum: np.ndarray) -> np.ndarray:
        """Sort keys: stratum, then value within it."""
        # Values outside the reference range land just before or after their stratum's values
        # (PIT 0 or 1), never in a neighbouring stratum: keys stay within stratum -0.2..+0.7.
        return stratum + 0.5 * np.clip((values - self.low_) / self.span_, -0.4, 1.4)

    def reference_pit(self, jitter: np.ndarray) -> np.ndarray:
        """PIT of the reference values themselves (in-sample), in their original order."""
        return _spread(self.below_, self.not_above_, jitter, self.counts_[self.stratum_])

    def held_out_pit(self, day: np.ndarray, jitter: np.ndarray) -> np.ndarray:
        """PIT of each reference value against the reference without its own day.

        A new day is judged against a baseline that never saw it; in-sample PIT values would be
        spread more evenly than that and make calibration too lenient. Leaving one day out
        reproduces the new-day situation for every reference day with one extra sort: a
        value's rank among the other days is its rank in the stratum minus its rank among its
        own day's values of that stratum. NaN where the stratum holds no other day's values.
        """
        _, day_index = np.unique(day, return_inverse=True)
        group = day_index.astype(np.int64) * STRATA + self.stratum_
        group_keys = group + (self.keys_ - self.stratum_)
        order = np.argsort(group_keys)
        same_day_below, same_day_not_above = _unsorted(order, *_tie_bounds(group_keys[order]))
        group_counts = np.bincount(group, minlength=(day_index.max() + 1) * STRATA)
        group_starts = (np.cumsum(group_counts) - group_counts)[group]
        return _spread(self.below_ - (same_day_below - group_starts),
                       self.not_above_ - (same_day_not_above - group_starts), jitter,
                       self.counts_[self.stratum_] - group_counts[group])

    def residuals(self, values: np.ndarray, stratum: np.ndarray) -> np.ndarray:
        """Values minus their stratum's reference median, in the feature's unit."""
        return values - self.medians_[stratum]

    def covered(self, stratum: np.ndarray, min_count: int) -> np.ndarray:
        """Which readings fall in a stratum the reference holds at least `min_count` values of."""
        return self.counts_[stratum] >= min_count


def _tie_bounds(sorted_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each position of a sorted array: where its run of equal keys starts and ends
    (exclusive), i.e. how many keys are below it and not above it."""
    n = len(sorted_keys)
    positions = np.arange(n)
    new_run = np.empty(n, dtype=bool)
    new_run[0] = True
    np.not_equal(sorted_keys[1:], sorted_keys[:-1], out=new_run[1:])
    starts = np.maximum.accumulate(np.where(new_run, positions, 0))
    run_ends = np.append(positions[new_run][1:], n)  # end of each run, in run order
    return starts, run_ends[np.cumsum(new_run) - 1]


def _unsorted(order: np.ndarray, *sorted_arrays: np.ndarray) -> list[np.ndarray]:
    """Arrays computed in sorted order, put back in the original order."""
    result = []
    for array in sorted_arrays:
        back = np.empty_like(array)
        back[order] = array
        result.append(back)
    return result


def _spread(below: np.ndarray, not_above: np.ndarray, jitter: np.ndarray, count: np.ndarray) -> np.ndarray:
    """PIT from rank ranges: ties spread by the jitter; NaN where the count is 0."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return (below + jitter * (not_above - below)) / count
