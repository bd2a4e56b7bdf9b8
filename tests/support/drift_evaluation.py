"""How drift quality is measured on real data without labels: held-out days.

Reference and current windows are drawn from the same 35 days of a real meter (the current
days at random, the rest as reference), so "unchanged" holds by construction while the daily
cycle, day-to-day variation and every quirk of the real data stay. Consecutive real weeks also
differ for real reasons (holidays, heating), which is drift, not a false alarm, so they cannot
measure the false-alarm rate. Used by tests/test_drift_quality.py and scripts/bench_drift.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from drift.analysis import FeatureDrift, Sample, compare, seed_for
from drift.baselines import Calendar, local_calendar
from drift.distances import psi
from wattwatch.fields import FIELDS, field_for

PERIOD_DAYS = 35
FEATURES = list(FIELDS)


def load_uci(path: Path) -> tuple[Calendar, np.ndarray]:
    """The UCI household CSV as its calendar and a (minutes, features) array. Its naive local
    times are read as UTC: the household's clock is what the strata follow."""
    frame = pd.read_csv(path)
    frame.columns = ["time"] + [field_for(column) for column in frame.columns[1:]]
    seconds = pd.to_datetime(frame["time"]).to_numpy().astype("datetime64[s]").astype(np.int64)
    return local_calendar(seconds, "UTC"), frame[FEATURES].to_numpy(float)


def held_out_split(calendar: Calendar, rng: np.random.Generator, current_days: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Masks of the reference and current readings: a random period of whole days, of which
    `current_days` at random are the current window."""
    first = rng.integers(calendar.day[0] + 1, calendar.day[-1] - PERIOD_DAYS)
    in_period = (calendar.day >= first) & (calendar.day < first + PERIOD_DAYS)
    chosen = rng.choice(np.arange(first, first + PERIOD_DAYS), current_days, replace=False)
    current = np.isin(calendar.day, chosen)
    return in_period & ~current, current


def consecutive_split(calendar: Calendar, rng: np.random.Generator, reference_days: int = 28,
                      current_days: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Masks of a real time-ordered comparison: `current_days` whole days right after
    `reference_days` days. Real change (holidays, heating) shows up here, as it should."""
    first = rng.integers(calendar.day[0] + 1, calendar.day[-1] - reference_days - current_days)
    boundary = first + reference_days
    return ((calendar.day >= first) & (calendar.day < boundary),
            (calendar.day >= boundary) & (calendar.day < boundary + current_days))


def judge_all(calendar: Calendar, reference_values: np.ndarray, reference: np.ndarray,
              current_values: np.ndarray, current: np.ndarray, mode: str = "light"
              ) -> dict[str, FeatureDrift]:
    """Every feature; values are (readings, features) arrays already masked like the masks."""
    return {feature: compare(feature, Sample(reference_values[:, j], calendar.stratum[reference], calendar.day[reference]),
                             Sample(current_values[:, j], calendar.stratum[current], calendar.day[current]),
                             mode=mode, seed=seed_for(feature))
            for j, feature in enumerate(FEATURES)}


def whole_window_psi(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    """The old system's comparison: deciles of the whole reference window, hours mixed."""
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)))
    return float(psi(np.histogram(reference, edges)[0], np.histogram(current, edges)[0]))


def _shift_voltage(values, hours, reference_values):
    values[:, FEATURES.index("voltage_v")] += np.nanstd(reference_values[:, FEATURES.index("voltage_v")])


def _double_reactive_spread(values, hours, reference_values):
    j = FEATURES.index("reactive_power_kw")
    middle = np.nanmedian(reference_values[:, j])
    values[:, j] = np.maximum(middle + 2.0 * (values[:, j] - middle), 0.0)


def _night_appliance(values, hours, reference_values):
    night = (hours >= 1) & (hours < 5)
    values[night, FEATURES.index("active_power_kw")] += 1.5
    values[night, FEATURES.index("current_a")] += 1500 / 230
    values[night, FEATURES.index("sub_metering_3_wh")] += 1500 / 60


@dataclass(frozen=True)
class Injection:
    """A known change applied to the current window's values; `changes` are the features it
    moves, every other feature must stay stable."""

    name: str
    description: str
    changes: frozenset
    change: Callable

    def apply(self, values: np.ndarray, hours: np.ndarray, reference_values: np.ndarray) -> np.ndarray:
        changed = values.copy()
        self.change(changed, hours, reference_values)
        return changed


INJECTIONS = {injection.name: injection for injection in [
    Injection("voltage_shift", "voltage one reference standard deviation higher (a transformer "
              "tap change)", frozenset({"voltage_v"}), _shift_voltage),
    Injection("reactive_spread", "reactive power twice as spread around its median",
              frozenset({"reactive_power_kw"}), _double_reactive_spread),
    Injection("night_appliance", "a 1.5 kW load on sub-meter 3 from 01:00 to 05:00 (active "
              "power, current and that sub-meter rise together)",
              frozenset({"active_power_kw", "current_a", "sub_metering_3_wh"}), _night_appliance),
]}


@dataclass
class FalseAlarms:
    runs: int
    statuses: list[str]  # every feature of every run
    meters_stable: int  # runs in which all features stayed stable
    whole_window_alarms: int  # features the old whole-window PSI put at >= 0.1

    @property
    def stable_share(self) -> float:
        return self.statuses.count("stable") / len(self.statuses)


def false_alarms(calendar: Calendar, values: np.ndarray, runs: int, rng: np.random.Generator,
                 half_days: bool) -> FalseAlarms:
    """Unchanged held-out windows of 3-7 days; with `half_days` the current window keeps only
    12 consecutive hours of each day (another mix of hours than the reference)."""
    result = FalseAlarms(runs, [], 0, 0)
    for _ in range(runs):
        reference, current = held_out_split(calendar, rng, int(rng.integers(3, 8)))
        if half_days:
            current &= (calendar.stratum % 24 - rng.integers(0, 24)) % 24 < 12
        judged = judge_all(calendar, values[reference], reference, values[current], current)
        result.statuses += [drift.status for drift in judged.values()]
        result.meters_stable += all(drift.status == "stable" for drift in judged.values())
        result.whole_window_alarms += sum(whole_window_psi(values[reference, j], values[current, j]) >= 0.1
                                          for j in range(len(FEATURES)))
    return result
