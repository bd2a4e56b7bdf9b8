"""Distances between a baseline sample and a current sample of one feature.

PSI works on bin counts (the caller bins both samples on the baseline's quantile bins); KS and
Wasserstein work on the values. All three are effect sizes: they do not grow with the sample
size the way a p-value shrinks, so thresholds on them mean the same thing at any n.
"""

from __future__ import annotations

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


def ks(reference: np.ndarray, current: np.ndarray) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov statistic and p-value, as scipy's ks_2samp(method='asymp')
    (the p-value is reported, never a decision: at thousands of values every small difference
    is 'significant'). The statistic is computed on sorted data, several times faster than
    ks_2samp at tens of thousands of values; the p-value is scipy's kstwo distribution."""
    reference_cdf, current_cdf, _ = _cdfs(reference, current)
    statistic = float(np.max(np.abs(reference_cdf - current_cdf)))
    larger, smaller = sorted([float(len(reference)), float(len(current))], reverse=True)
    pvalue = float(np.clip(stats.kstwo.sf(statistic, np.round(larger * smaller / (larger + smaller))), 0, 1))
    return statistic, pvalue


def wasserstein_norm(reference: np.ndarray, current: np.ndarray, scale: float) -> float | None:
    """Wasserstein-1 distance (the area between the two empirical CDFs) divided by `scale`
    (the baseline's standard deviation), so that 0.5 reads 'the distribution moved by half a
    baseline standard deviation'. None when the baseline is constant (scale 0) and the current
    sample is not: no finite ratio exists."""
    reference_cdf, current_cdf, points = _cdfs(reference, current)
    distance = float(np.sum(np.abs(reference_cdf - current_cdf)[:-1] * np.diff(points)))
    if scale > 0:
        return distance / scale
    return 0.0 if distance == 0 else None


def _cdfs(reference: np.ndarray, current: np.ndarray):
    """Both empirical CDFs at every distinct observed value (sorted), and those values: one
    sort of both samples together, then running counts at the end of each run of equal values."""
    both = np.concatenate([reference, current])
    order = np.argsort(both)
    points = both[order]
    from_reference = order < len(reference)
    run_end = np.append(points[1:] != points[:-1], True)
    reference_cdf = np.cumsum(from_reference)[run_end] / len(reference)
    current_cdf = np.cumsum(~from_reference)[run_end] / len(current)
    return reference_cdf, current_cdf, points[run_end]
