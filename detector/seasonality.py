"""Which cycle a series follows: the hour of the week or day when it has timestamps and enough
history, unless a period detected from the data by autocorrelation repeats clearly better than
the day; that period for step-indexed files and short histories."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd

MIN_CYCLES = 2  # a profile needs at least this many repetitions of its cycle to be learned
MIN_AUTOCORRELATION = 0.3  # weaker than this, the series is treated as having no cycle
# With timestamps, the data's own period replaces the calendar's when its autocorrelation is
# this much stronger than the day's.
OWN_CYCLE_MARGIN = 0.2


EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
HOUR_NS = 3_600_000_000_000
# Shorter than any time between two changes of one zone's UTC offset since 1970 (the least:
# 6 days 23 hours, Brazil in October 2000)
ONE_OFFSET_NS = 6 * 24 * HOUR_NS
EPOCH_WEEK_HOURS = 3 * 24  # the epoch fell on a Thursday: hours since the week's Monday 00:00


def micros(moment: datetime) -> int:
    """Microseconds since the epoch of an aware datetime (exact, unlike timestamp())."""
    return (moment - EPOCH) // timedelta(microseconds=1)


def moment_of(microseconds: int) -> datetime:
    """The aware UTC datetime of microseconds since the epoch."""
    return EPOCH + timedelta(microseconds=int(microseconds))


def epoch_ns(index: pd.DatetimeIndex) -> np.ndarray:
    """Nanoseconds since the epoch, whatever resolution the index was parsed with."""
    return index.as_unit("ns").asi8


def utc_index(nanoseconds: np.ndarray) -> pd.DatetimeIndex:
    """The UTC timestamps of epoch nanoseconds."""
    return pd.DatetimeIndex(pd.to_datetime(nanoseconds, unit="ns", utc=True))


def autocorrelation(values: np.ndarray, max_lag: int) -> np.ndarray:
    """The autocorrelation of the finite values at lags 0..max_lag (all zeros when constant)."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    x = x - x.mean()
    spectrum = np.fft.rfft(x, 2 * len(x))
    acf = np.fft.irfft(spectrum * np.conj(spectrum))[:max_lag + 1]
    return acf / acf[0] if acf[0] > 0 else np.zeros(max_lag + 1)


def detect_period(values: np.ndarray, max_lag: int | None = None,
                  acf: np.ndarray | None = None) -> int:
    """The lag (in steps) of the strongest autocorrelation peak, preferring a 7x longer one
    (a week of days) when it is stronger; 1 when there is no clear cycle. `acf`: the values'
    `autocorrelation` to at least half their length, when it is known already."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    n = len(x)
    max_lag = min(max_lag or n // MIN_CYCLES, n // MIN_CYCLES)
    if max_lag < 4 or np.std(x) == 0:
        return 1
    acf = autocorrelation(x, max_lag) if acf is None else acf[:max_lag + 1]
    # Local maxima after the first zero crossing, so the short-lag decay is not taken for a cycle.
    below = np.flatnonzero(acf < 0)
    first = int(below[0]) if len(below) else max_lag
    lags = np.arange(max(first, 2), max_lag)
    peaks = lags[(acf[lags] >= acf[lags - 1]) & (acf[lags] >= acf[lags + 1])]
    if not len(peaks):
        return 1
    best = int(peaks[np.argmax(acf[peaks])])  # the first of equally strong ones
    if acf[best] < MIN_AUTOCORRELATION:
        return 1
    # The first peak nearly as strong as the best is the fundamental (not one of its multiples).
    period = int(peaks[np.argmax(acf[peaks] >= 0.9 * acf[best])])
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
        acf = autocorrelation(values, len(values))  # the lags both choices below read
        period = detect_period(values, acf=acf)
        if isinstance(index, pd.DatetimeIndex) and len(index) > 1:
            step = int(np.median(np.diff(epoch_ns(index))))
            span = index[-1] - index[0]
            calendar = None
            if span >= pd.Timedelta(days=7 * MIN_CYCLES):
                calendar = cls("week", 168)
            elif span >= pd.Timedelta(days=MIN_CYCLES):
                calendar = cls("day", 24)
            if calendar is not None and not cls._own_cycle_wins(acf, len(values), period, step):
                return calendar
        else:
            step = 1
        if period == 1:
            return cls("none", 1)
        return cls("steps", period, step)

    @staticmethod
    def _own_cycle_wins(acf: np.ndarray, n: int, period: int, step_ns: int) -> bool:
        """The data's own period repeats clearly better than the day does (a process on a
        500-minute cycle, say): its slots say more than the hour's. `acf`: the autocorrelation
        of the n readings."""
        day = int(round(pd.Timedelta(days=1).value / step_ns))
        if period == 1 or day < 2 or day > n // MIN_CYCLES:
            return False
        return acf[period] >= acf[day] + OWN_CYCLE_MARGIN

    @property
    def slots(self) -> int:
        return self.period

    def slots_at(self, times: np.ndarray, zone: str) -> np.ndarray:
        """`slot_of` epoch nanoseconds (a row per meter) on the clock of `zone`, without a
        timestamp object per reading: a row that starts and ends on one UTC offset within
        ONE_OFFSET_NS keeps it throughout."""
        if self.kind not in ("week", "day"):  # steps from the epoch, as slot_of counts them
            return self.slot_of(pd.Index((times // self.step_ns).reshape(-1))).reshape(times.shape)
        ends = np.concatenate([times[:, 0], times[:, -1]])
        offsets = epoch_ns(utc_index(ends).tz_convert(zone).tz_localize(None)) - ends
        first, last = offsets[:len(times)], offsets[len(times):]
        hours = (times + first[:, None]) // HOUR_NS
        slots = (hours + EPOCH_WEEK_HOURS) % 168 if self.kind == "week" else hours % 24
        mixed = np.flatnonzero((first != last) | (times[:, -1] - times[:, 0] >= ONE_OFFSET_NS))
        if len(mixed):
            local = utc_index(times[mixed].reshape(-1)).tz_convert(zone)
            slots[mixed] = self.slot_of(local).reshape(len(mixed), -1)
        return slots

    def slot_of(self, index: pd.Index) -> np.ndarray:
        if self.kind == "week":
            return np.asarray(index.day_of_week * 24 + index.hour, dtype=np.int64)
        if self.kind == "day":
            return np.asarray(index.hour, dtype=np.int64)
        if self.kind == "steps":
            steps = epoch_ns(index) // self.step_ns if isinstance(index, pd.DatetimeIndex) else index
            return np.asarray(steps, dtype=np.int64) % self.period
        return np.zeros(len(index), dtype=np.int64)
