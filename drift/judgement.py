"""Judging one meter, with no database: its baselines built from its reference readings (or
loaded from their stored summary), its day summaries and the summaries of its raw current
readings added up, each feature judged (`drift.analysis.judge`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np

from drift.analysis import DriftConfig, FeatureDrift, judge, seed_for
from drift.baselines import SECONDS_PER_DAY, local_calendar
from drift.summaries import FINE_PER_BIN, BaselineSummary, WindowSummary, pack, unpack
from wattwatch.fields import FIELDS

EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


@dataclass
class MeterWork:
    """What judging one meter needs: its stored baseline (bytes) or its raw reference
    readings, the stored summaries of current days, and the raw current readings no summary
    covers (unix seconds, values (n, features))."""

    reference: bytes | tuple[np.ndarray, np.ndarray]
    days: dict[date, bytes]
    current: tuple[np.ndarray, np.ndarray]
    store_days: set[int]  # UTC day numbers (days since 1970-01-01) whose summaries are to be stored
    baseline_id: int | None = None
    settings: str | None = None  # None: nothing is stored for this meter


@dataclass
class MeterResult:
    features: list[FeatureDrift]
    baseline: bytes | None  # a new baseline summary, to store
    days: dict[date, bytes]  # new day summaries, to store


def judge_meter(tz: str, work: MeterWork, *, mode: str, config: DriftConfig) -> MeterResult:
    """Every feature of one meter: build or load its baselines, add up its day summaries and
    the summaries of its raw current readings (per UTC day), judge."""
    new_baseline = None
    if isinstance(work.reference, bytes):
        arrays = unpack(work.reference)
        baselines = {feature: BaselineSummary.from_arrays(arrays, feature) for feature in FIELDS}
    else:
        seconds, values = work.reference
        calendar = local_calendar(seconds, tz)
        baselines = {feature: BaselineSummary.build(values[:, index], calendar.stratum, calendar.day,
                                                    bins=config.bins, seed=seed_for(feature))
                     for index, feature in enumerate(FIELDS)}
        if work.settings is not None:
            new_baseline = pack({name: array for feature, baseline in baselines.items()
                                 for name, array in baseline.to_arrays(feature).items()})
    fine = config.bins * FINE_PER_BIN
    totals = {feature: WindowSummary.empty(fine) for feature in FIELDS}
    for data in work.days.values():
        arrays = unpack(data)
        for feature in FIELDS:
            totals[feature] += WindowSummary.from_vectors(arrays[f"{feature}.counts"],
                                                          arrays[f"{feature}.sums"], fine)
    seconds, values = work.current
    order = np.argsort(seconds, kind="stable")  # time order: each day's jitter stream is fixed
    seconds, values = seconds[order], values[order]
    calendar = local_calendar(seconds, tz)
    utc_day = seconds // SECONDS_PER_DAY
    by_day = {feature: baselines[feature].summarise(values[:, index], calendar.stratum, utc_day,
                                                    seed=seed_for(feature), min_per_stratum=config.min_per_stratum)
              for index, feature in enumerate(FIELDS)}
    new_days = {}
    for day in np.unique(utc_day).tolist():
        for feature in FIELDS:
            totals[feature] += by_day[feature][day]
        if day in work.store_days:
            new_days[utc_date(day)] = pack({f"{feature}.{part}": vector for feature in FIELDS for part, vector
                                         in zip(("counts", "sums"), by_day[feature][day].to_vectors())})
    features = [judge(feature, baselines[feature], totals[feature], mode=mode, config=config,
                      seed=seed_for(feature)) for feature in FIELDS]
    return MeterResult(features, new_baseline, new_days)


def utc_date(day: int) -> date:
    """The date of a UTC day number (days since 1970-01-01)."""
    return date.fromordinal(EPOCH_ORDINAL + day)
