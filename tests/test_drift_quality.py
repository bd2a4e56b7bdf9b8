"""Drift quality on real data (the UCI household, one-minute readings, strong daily cycles).

Known changes are injected into held-out days (tests/support/drift_evaluation.py): the changed features, and
only those, must leave `stable`. Unchanged held-out days, whole or cut to half a day (another
mix of hours), must stay stable in at least 95% of repeated runs, where the old whole-window
PSI fails.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from drift.baselines import SeasonalBaseline
from drift.distances import ks_binned, wasserstein_binned
from drift.status import ORDER
from drift.summaries import BaselineSummary, WindowSummary
from tests.support.drift_evaluation import (INJECTIONS, false_alarms, held_out_split, judge_all,
                                            load_uci)
from wattwatch.fields import FIELDS



@pytest.fixture(scope="module")
def uci(uci_csv):
    return load_uci(uci_csv)


# change, features it changes, the least severe band each must reach
CHANGES = [(INJECTIONS["voltage_shift"], "alert"), (INJECTIONS["reactive_spread"], "alert"),
           (INJECTIONS["night_appliance"], "warning")]


@pytest.mark.parametrize("injection,least", CHANGES, ids=[c[0].name for c in CHANGES])
@pytest.mark.parametrize("period_seed", [11, 12, 13])
def test_injected_change_moves_only_the_changed_features(uci, injection, least, period_seed):
    calendar, values = uci
    reference, current = held_out_split(calendar, np.random.default_rng(period_seed), 7)
    current_values = injection.apply(values[current], calendar.stratum[current] % 24, values[reference])
    results = judge_all(calendar, values[reference], reference, current_values, current, mode="full")
    for feature, result in results.items():
        if feature in injection.changes:
            assert ORDER.index(result.status) >= ORDER.index(least), (feature, result)
            assert result.ks_statistic > 0 and result.wasserstein_norm > 0
        else:
            assert result.status == "stable", (feature, result)


@pytest.mark.parametrize("half_days", [False, True], ids=["whole-days", "half-days"])
def test_unchanged_data_stays_stable_where_whole_window_psi_does_not(uci, half_days):
    """20 runs x 7 features over different periods and windows of 3-7 days."""
    calendar, values = uci
    measured = false_alarms(calendar, values, 20, np.random.default_rng(2026 + half_days), half_days)
    assert measured.stable_share >= 0.95, measured.statuses
    assert measured.meters_stable >= 17  # whole meters (all 7 features stable) in >= 85% of runs
    if half_days:  # the daily cycle alone fools the whole-window comparison
        assert measured.whole_window_alarms / len(measured.statuses) > 0.2


def test_ks_and_wasserstein_from_summaries_bound_scipys_exact_values(uci):
    """KS and Wasserstein are taken on the summaries' bins. On real data, unchanged and with
    each injected change, scipy's exact values on the same PIT values and residuals lie in the
    intervals reported with them, and the reported values are close."""
    calendar, values = uci
    rng = np.random.default_rng(7)
    ks_errors, wasserstein_errors = [], []
    for change in [None, *INJECTIONS.values()]:
        reference, current = held_out_split(calendar, rng, 7)
        current_values = values[current] if change is None else change.apply(
            values[current], calendar.stratum[current] % 24, values[reference])
        for j in range(len(FIELDS)):
            present = ~np.isnan(values[reference, j])
            ref_values, ref_stratum = values[reference, j][present], calendar.stratum[reference][present]
            jitter = rng.random(len(ref_values))
            summary = BaselineSummary.build(ref_values, ref_stratum, calendar.day[reference][present],
                                            bins=10, jitter=jitter)
            exact_baseline = SeasonalBaseline(ref_values, ref_stratum)
            keep = ~np.isnan(current_values[:, j]) & (summary.counts[calendar.stratum[current]] >= 10)
            new_values, new_stratum = current_values[keep, j], calendar.stratum[current][keep]
            new_jitter = rng.random(len(new_values))
            fine = summary.fine_bins(new_values, new_stratum, new_jitter)
            statistic, _ = ks_binned(summary.reference_fine.sum(axis=0), np.bincount(fine, minlength=summary.fine))
            exact = stats.ks_2samp(exact_baseline.reference_pit(jitter),
                                   exact_pit(exact_baseline, new_values, new_stratum, new_jitter)).statistic
            assert statistic.low <= exact <= statistic.high + 1e-12
            ks_errors.append(exact - statistic.value)
            window = summary.summarise(current_values[:, j], calendar.stratum[current], calendar.day[current],
                                       seed=j, min_per_stratum=10)
            window = sum(window.values(), start=WindowSummary.empty(summary.fine))
            distance = wasserstein_binned(summary.residual_counts, summary.residual_sums, window.residual,
                                          window.residual_sums, summary.residual_widths(), summary.residual_std)
            exact = stats.wasserstein_distance(exact_baseline.residuals(ref_values, ref_stratum),
                                               exact_baseline.residuals(new_values, new_stratum)) / summary.residual_std
            assert distance.low - 1e-9 <= exact <= distance.high + 1e-9
            wasserstein_errors.append(abs(exact - distance.value))
    assert max(ks_errors) <= 1 / summary.fine  # at most one fine bin's share
    assert max(wasserstein_errors) < 0.02  # baseline standard deviations


def exact_pit(baseline: SeasonalBaseline, values, stratum, jitter):
    """PIT against every reference value of the same stratum, on the baseline's sort keys
    (values whose keys coincide, within ~1e-15 of the reference's range, are ties)."""
    keys = baseline.keys(values, stratum)
    below = np.searchsorted(baseline.sorted_keys_, keys, "left") - baseline.starts_[stratum]
    not_above = np.searchsorted(baseline.sorted_keys_, keys, "right") - baseline.starts_[stratum]
    return (below + jitter * (not_above - below)) / baseline.counts_[stratum]
