"""Which cycle a series follows: the hour of the week or day when it has timestamps and enough
history, else a period detected from the data by autocorrelation (step-indexed files, or
cycles that are not daily)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

MIN_CYCLES = 2  # a profile needs at least this many repetitions of its cycle to be learned
MIN_AUTOCORRELATION = 0.3  # weaker than this, the series is treated as having no cycle


def epoch_ns(index: pd.DatetimeIndex) -> np.ndarray:
    """Nanoseconds since the epoch, whatever resolution the index was parsed with."""
    return index.as_unit("ns").asi8


def detect_period(values: np.ndarray, max_lag: int | None = None) -> int:
    """The lag (in steps) of the strongest autocorrelation peak, preferring a 7x longer one
    (a week of days) when it is stronger; 1 when there is no clear cycle."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    n = len(x)
    max_lag = min(max_lag or n // MIN_CYCLES, n // MIN_CYCLES)
    if max_lag < 4 or np.std(x) == 0:
        return 1
    x = x - x.mean()
    spectrum = np.fft.rfft(x, 2 * n)
    acf = np.fft.irfft(spectrum * np.conj(spectrum))[:max_lag + 1]
    acf /= acf[0]
    # Local maxima after the first zero crossing, so the short-lag decay is not taken for a cycle.
    below = np.flatnonzero(acf < 0)
    first = int(below[0]) if len(below) else max_lag
    peaks = [lag for lag in range(max(first, 2), max_lag)
             if acf[lag] >= acf[lag - 1] and acf[lag] >= acf[lag + 1]]
    if not peaks:
        return 1
    best = max(peaks, key=lambda lag: acf[lag])
    if acf[best] < MIN_AUTOCORRELATION:
        return 1
    # The first peak nearly as strong as the best is the fundamental (not one of its multiples).
    period = next(lag for lag in peaks if acf[lag] >= 0.9 * acf[best])
    weekly = 7 * period
    if weekly <= max_lag and acf[weekly - 2:weekly + 3].max() > acf[period] + 0.05:
        return weekly
    return period


@dataclass(frozen=True)
class Season:
    """How readings map to slots of a cycle: 'week' (hour of week), 'day' (hour of day),
    'steps' (position modulo `period` steps) or 'none' (one slot)."""

    kind: str
    period: int = 1
    step_ns: int = 1  # for timestamps counted in steps: the length of one step

    @classmethod
    def choose(cls, index: pd.Index, values: np.ndarray) -> "Season":
        if isinstance(index, pd.DatetimeIndex) and len(index) > 1:
            span = index[-1] - index[0]
            if span >= pd.Timedelta(days=7 * MIN_CYCLES):
                return cls("week", 168)
            if span >= pd.Timedelta(days=MIN_CYCLES):
                return cls("day", 24)
        period = detect_period(values)
        if period == 1:
            return cls("none", 1)
        step = 1
        if isinstance(index, pd.DatetimeIndex) and len(index) > 1:
            step = int(np.median(np.diff(epoch_ns(index))))
        return cls("steps", period, step)

    @property
    def slots(self) -> int:
        return self.period

    def slot_of(self, index: pd.Index) -> np.ndarray:
        if self.kind == "week":
            return np.asarray(index.day_of_week * 24 + index.hour, dtype=np.int64)
        if self.kind == "day":
            return np.asarray(index.hour, dtype=np.int64)
        if self.kind == "steps":
            steps = epoch_ns(index) // self.step_ns if isinstance(index, pd.DatetimeIndex) else index
            return np.asarray(steps, dtype=np.int64) % self.period
        return np.zeros(len(index), dtype=np.int64)
