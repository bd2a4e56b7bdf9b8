"""Rolling and robust statistics of series held as numpy rows (one row per series, oldest
value first), NaN counting as absent: the building blocks of the detector's features."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

MAD_TO_SIGMA = 1.4826


def robust_scale(values: np.ndarray) -> float:
    """A robust spread, never zero: MAD-based sigma, floored by a tenth of the std."""
    values = values[np.isfinite(values)]
    if not len(values):
        return 1.0
    center = np.median(values)
    mad = MAD_TO_SIGMA * np.median(np.abs(values - center))
    return float(max(mad, 0.1 * np.std(values), 1e-9 * (abs(center) + 1.0)))


def run_lengths(values: np.ndarray) -> np.ndarray:
    """For each position, how many readings in a row (ending here) have had this exact value,
    along the last axis (each row of a 2-d array is a series)."""
    n = values.shape[-1]
    if not n:
        return np.zeros(values.shape)
    moved = np.ones(values.shape, dtype=bool)
    moved[..., 1:] = ~(values[..., 1:] == values[..., :-1])  # NaN never equals: a gap restarts
    index = np.arange(n)
    start = np.maximum.accumulate(np.where(moved, index, 0), axis=-1)
    return (index - start + 1).astype(float)


def rolling(values: np.ndarray, window: int, how: str, k: int, *, min_periods: int = 1,
            shift: int = 0) -> np.ndarray:
    """`how` ("mean", "std", "min" or "median") of the `window` values ending `shift` readings
    before each of the last k positions of each row (rows x k), NaN counting as absent and too
    few values giving NaN, as in pandas. A whole series (k = its length) goes through pandas in
    one pass; the last few readings of many meters (live scoring) through sliding windows."""
    m, n = values.shape
    if k == n:
        return np.vstack([getattr(pd.Series(row).shift(shift).rolling(
            window, min_periods=min_periods), how)().to_numpy() for row in values])
    need = k + window - 1 + shift
    if n < need:  # a short history: the missing start counts as absent
        values = np.concatenate([np.full((m, need - n), np.nan), values], axis=1)
        n = need
    windows = sliding_window_view(values[:, n - need:n - shift], window, axis=1)
    present = ~np.isnan(windows)
    count = present.sum(axis=-1)
    if how == "min":
        out = np.fmin.reduce(windows, axis=-1)
    elif how == "median":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN windows: NaN, as wanted
            out = np.nanmedian(windows, axis=-1)
    else:
        mean = np.where(present, windows, 0.0).sum(axis=-1) / np.maximum(count, 1)
        out = mean
        if how == "std":  # sample deviation (ddof 1), as pandas
            squares = np.where(present, windows - mean[..., None], 0.0) ** 2
            out = np.sqrt(squares.sum(axis=-1) / np.maximum(count - 1, 1))
            out[count < 2] = np.nan
    return np.where(count >= min_periods, out, np.nan)


class Prefixes:
    """Rolling statistics of whole series, kept by what they are, for features computed again
    over the same readings or their first part: pandas rolls a series from its first value
    on, so the statistics of its first m readings are those of the whole series cut at m,
    bit for bit (a model's fit and its scoring of its training window, and the validation
    model fitted on the window's first part, roll the same windows once). Only for series
    that begin alike: the caller's to ensure."""

    def __init__(self):
        self.whole: dict[tuple, np.ndarray] = {}

    def rolling(self, key: tuple, values: np.ndarray, window: int, how: str,
                **options) -> np.ndarray:
        """`rolling(values, window, how, k=len(values), **options)` of one series (1 x n)
        that begins as the one kept under key, when that one is at least as long."""
        n = values.shape[1]
        key = (key, window, how, *sorted(options.items()))
        whole = self.whole.get(key)
        if whole is None or whole.shape[1] < n:
            whole = self.whole[key] = rolling(values, window, how, n, **options)
        return whole[:, :n]


class SlotGroups:
    """Readings grouped by their slot of the cycle, once for the many series of one window:
    each series is laid out as a table of a row per slot (its readings there, NaN-padded) and
    sorted along the rows, so that a slot's median is read at the middle of its row (what a
    group-by would sort and select again for every series)."""

    def __init__(self, slots: np.ndarray, n_slots: int):
        self.order = np.argsort(slots, kind="stable")
        counts = np.bincount(slots, minlength=n_slots)
        grouped = slots[self.order]
        self.cells = (grouped, np.arange(len(slots)) - (np.cumsum(counts) - counts)[grouped])
        self.shape = (n_slots, max(int(counts.max(initial=0)), 1))

    def profile(self, values: np.ndarray, floor: float) -> tuple[np.ndarray, np.ndarray]:
        """Median and MAD-scale of values in each slot; slots never seen get the global ones.
        For the hour of the week the scales are the 24 hours' (slot % 24), pooled over the
        days."""
        table = np.full(self.shape, np.nan)
        table[self.cells] = values[self.order]
        table.sort(axis=1)  # NaN last
        counts = np.count_nonzero(~np.isnan(table), axis=1)
        seen = counts > 0
        median = _middle(table, counts)
        deviations = np.abs(table - median[:, None])
        deviations.sort(axis=1)
        mad = _middle(deviations, counts) * MAD_TO_SIGMA
        n_slots = self.shape[0]
        medians = np.full(n_slots, np.nanmedian(values) if seen.any() else 0.0)
        scales = np.full(n_slots, floor)
        medians[seen] = median[seen]
        scales[seen] = np.maximum(mad[seen], floor)
        if n_slots == 168:  # hour of week: a few weeks give few samples per slot, so the
            # spread is pooled over the seven days for each hour (the median stays per weekday)
            scales = scales.reshape(7, 24).mean(axis=0)
        return medians, scales


def _middle(table: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The median of each sorted row's first `counts` values, as pandas' group-by median takes
    it (the mean of the two middle ones for an even count)."""
    rows = np.arange(len(table))
    low = table[rows, np.maximum(counts - 1, 0) // 2]
    high = table[rows, counts // 2]
    return np.where(counts % 2 == 1, high, (low + high) / 2)


def sum_present(columns: list[np.ndarray]) -> np.ndarray:
    """Element-wise sum of the columns, NaN only where all are missing."""
    stacked = np.stack(columns)
    return np.where(np.isnan(stacked).all(axis=0), np.nan, np.nansum(stacked, axis=0))
