"""Distances between a baseline sample and a current sample of one feature.

All three work on bin counts: PSI on the baseline's quantile bins, KS on finer ones and
Wasserstein on bins between the baseline's residual quantiles (drift/summaries.py). All three
are effect sizes: they do not grow with the sample size the way a p-value shrinks, so
thresholds on them mean the same thing at any n.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

# Added to every bin count before taking proportions (Jeffreys' prior): an empty bin then has a
# small positive share, so PSI never takes log(0) or divides by zero.
PSI_SMOOTHING = 0.5


def psi(reference_counts: np.ndarray, current_counts: np.ndarray) -> np.ndarray:
    """Population stability index between bin counts, smoothed so that empty bins are finite.

    Counts are (..., bins) arrays; leading axes are kept, so a (B, bins) batch of resampled
    counts gives B values at once.
    """
    reference = np.asarray(reference_counts, dtype=float) + PSI_SMOOTHING
    current = np.asarray(current_counts, dtype=float) + PSI_SMOOTHING
    reference /= reference.sum(axis=-1, keepdims=True)
    current /= current.sum(axis=-1, keepdims=True)
    return np.sum((current - reference) * np.log(current / reference), axis=-1)


def seasonal_psi(reference_counts: np.ndarray, current_counts: np.ndarray) -> np.ndarray:
    """PSI of the current window against the baseline, part of the day by part of the day.

    Counts are (..., parts, bins): each part of the day has its own baseline quantile bins.
    The result is the mean of the parts' PSIs weighted by the current window's share of each
    part, which is the PSI of the joint (part, bin) distribution when the baseline is given
    the current window's mix of parts: a window that simply holds more evenings is not drift,
    while a change confined to a few hours (an appliance running at night) is not diluted by
    the unchanged rest of the day.
    """
    current_counts = np.asarray(current_counts, dtype=float)
    per_part = current_counts.sum(axis=-1)
    weights = per_part / per_part.sum(axis=-1, keepdims=True)
    return np.sum(weights * psi(reference_counts, current_counts), axis=-1)


@dataclass(frozen=True)
class Estimate:
    """A distance taken on binned samples: the value reported, and the interval in which the
    value on the samples themselves is known to lie."""

    value: float
    low: float
    high: float


def ks_binned(reference_counts: np.ndarray, current_counts: np.ndarray) -> tuple[Estimate, float]:
    """Two-sample Kolmogorov-Smirnov statistic of two samples given as counts in the same
    ordered bins, and its p-value as scipy's ks_2samp(method='asymp') gives it (reported, never
    a decision: at thousands of values every small difference is 'significant').

    The statistic is the largest CDF gap at the bin edges, a lower bound of the exact one;
    inside a bin neither CDF leaves its range, so the exact statistic is at most the largest
    gap between one CDF at a bin's end and the other at its start (at most the gap at the
    edges plus the heaviest bin's share).
    """
    reference_cdf, current_cdf = _edge_cdfs(reference_counts), _edge_cdfs(current_counts)
    statistic = float(np.max(np.abs(reference_cdf - current_cdf)))
    high = float(max(np.max(reference_cdf[1:] - current_cdf[:-1]), np.max(current_cdf[1:] - reference_cdf[:-1])))
    larger, smaller = sorted([float(np.sum(reference_counts)), float(np.sum(current_counts))], reverse=True)
    pvalue = float(np.clip(stats.kstwo.sf(statistic, np.round(larger * smaller / (larger + smaller))), 0, 1))
    return Estimate(statistic, statistic, max(high, statistic)), pvalue


def wasserstein_binned(reference_counts: np.ndarray, reference_sums: np.ndarray,
                       current_counts: np.ndarray, current_sums: np.ndarray, widths: np.ndarray,
                       scale: float) -> Estimate | None:
    """Wasserstein-1 distance (the area between the two CDFs) of two samples given as counts
    and sums of values in the same bins, divided by `scale` (the baseline's standard
    deviation), so that 0.5 reads 'the distribution moved by half a baseline standard
    deviation'. None when the baseline is constant (scale 0) and the current sample is not: no
    finite ratio exists.

    Each bin's values are taken at their mean: exact for a bin holding one distinct value (as
    quantised readings often do), and a bin of width w moves its share p by at most p w / 2 on
    average, which bounds the error. `widths` are the bins' widths; a bin of infinite width
    (beyond the reference's range) holds no reference values, and moving the current values
    within it changes nothing, because the reference's CDF is flat there.
    """
    reference_counts, current_counts = (np.asarray(c, dtype=float) for c in (reference_counts, current_counts))
    used_reference, used_current = reference_counts > 0, current_counts > 0
    if not used_current.any():
        return None
    value = float(stats.wasserstein_distance(
        reference_sums[used_reference] / reference_counts[used_reference],
        current_sums[used_current] / current_counts[used_current],
        reference_counts[used_reference], current_counts[used_current]))
    finite = np.isfinite(widths)
    shares = reference_counts / reference_counts.sum() + current_counts / current_counts.sum()
    bound = float(np.sum(shares[finite] * widths[finite]) / 2)
    if scale > 0:
        return Estimate(value / scale, max(value - bound, 0.0) / scale, (value + bound) / scale)
    return Estimate(0.0, 0.0, bound) if value == 0 else None


def _edge_cdfs(counts: np.ndarray) -> np.ndarray:
    """Share of a sample below each bin edge, from 0 to 1 (one more entry than bins)."""
    counts = np.asarray(counts, dtype=float)
    return np.concatenate([[0.0], np.cumsum(counts)]) / max(counts.sum(), 1.0)
