"""Thresholds calibrated on the baseline itself: how large PSI gets when nothing changed.

PSI between a baseline and a finite sample of the same behaviour is not zero: it shrinks with
the sample size and grows with how much whole days differ from each other (a cold day, a day
away) and with how well the baseline knows each hour. The null distribution is estimated by
resampling whole reference days (a block bootstrap: minutes of one day are not independent,
days nearly are), each binned against the baseline without that day (as a new day would be):
a pseudo-current window of as many days as the current window holds is drawn with
replacement, and its PSI against the baseline's bins taken. The threshold is the
(1 - false alarm rate) quantile of that distribution.
"""

from __future__ import annotations

import numpy as np

from drift.distances import seasonal_psi


def psi_threshold(reference_counts: np.ndarray, held_out_day_counts: np.ndarray,
                  current_days: float, *, resamples: int, false_alarm_rate: float,
                  rng: np.random.Generator) -> float:
    """The seasonal PSI that undrifted data exceeds with probability `false_alarm_rate`, for a
    current window worth `current_days` reference days. Counts are (parts, bins) for the
    reference and (days, parts, bins) for the held-out reference days."""
    n_days = len(held_out_day_counts)
    draws = max(1, round(current_days))
    weights = rng.multinomial(draws, np.full(n_days, 1.0 / n_days), size=resamples)
    pseudo_current = np.tensordot(weights, held_out_day_counts, axes=1)
    null = seasonal_psi(reference_counts, pseudo_current)
    return float(np.quantile(null, 1.0 - false_alarm_rate))
