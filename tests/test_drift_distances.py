"""The pure parts of drift: distances, baselines, calibration, status bands (no database)."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pytest
from scipy import stats

from drift.analysis import DriftConfig, Sample, compare
from drift.baselines import SeasonalBaseline, local_calendar
from drift.calibration import psi_threshold
from drift.distances import ks_binned, psi, seasonal_psi, wasserstein_binned
from drift.status import INSUFFICIENT, Bands, overall
from drift.summaries import BaselineSummary


def test_psi_is_zero_for_equal_shares_and_finite_with_empty_bins():
    assert psi([10, 20, 30], [20, 40, 60]) == pytest.approx(0, abs=1e-3)  # smoothing only
    value = psi([100, 0, 0], [0, 0, 100])  # the old system's log(0) / division by zero
    assert np.isfinite(value) and value > 5
    batch = psi([5, 5], [[5, 5], [10, 0], [0, 10]])
    assert batch.shape == (3,) and batch[0] == pytest.approx(0) and batch[1] == pytest.approx(batch[2])


def test_seasonal_psi_ignores_the_mix_of_parts_but_not_a_change_within_one():
    reference = np.array([[10, 10, 80], [80, 10, 10]])  # night mostly high bin, day mostly low
    only_nights = np.array([[100, 100, 800], [0, 0, 0]])
    assert seasonal_psi(reference, only_nights) == pytest.approx(0, abs=1e-3)
    pooled = psi(reference.sum(axis=0), only_nights.sum(axis=0))
    assert pooled > 0.5  # whole-window PSI reads the mix of hours as drift
    changed_nights = np.array([[800, 100, 100], [100, 100, 800]])
    assert seasonal_psi(reference, changed_nights) > 1


def binned(a, b, edges):
    """Counts and sums of two samples in the bins of `edges` (below, inside, above)."""
    def slots(x):
        inside = np.clip(np.searchsorted(edges, x, "right") - 1, 0, len(edges) - 2) + 1
        slot = np.where(x < edges[0], 0, np.where(x > edges[-1], len(edges), inside))
        return np.bincount(slot, minlength=len(edges) + 1), np.bincount(slot, x, minlength=len(edges) + 1)
    widths = np.concatenate([[np.inf], np.diff(edges), [np.inf]])
    return (*slots(a), *slots(b), widths)


@pytest.mark.parametrize("integers", [False, True], ids=["continuous", "ties"])
def test_binned_ks_and_wasserstein_bound_the_exact_values(integers):
    rng = np.random.default_rng(5)
    a, b = rng.normal(0, 1, 4000), rng.normal(0.2, 1.3, 2500)
    if integers:
        a, b = np.round(a * 2), np.round(b * 2)
    exact = stats.ks_2samp(a, b, method="asymp")
    edges = np.quantile(a, np.linspace(0, 1, 101))
    counts = [np.bincount(np.clip(np.searchsorted(edges, x, "right") - 1, 0, 99), minlength=100) for x in (a, b)]
    statistic, pvalue = ks_binned(*counts)
    assert statistic.low <= exact.statistic <= statistic.high + 1e-12
    assert statistic.value <= exact.statistic
    # The interval is as wide as the heaviest bin's share: narrow without atoms (drift takes KS
    # on jittered PIT values, which have none); with atoms the edges still find the exact value.
    heaviest = max(np.max(c) / np.sum(c) for c in counts)
    assert statistic.high - statistic.low <= heaviest + 1e-12
    if not integers:
        assert statistic.high - statistic.low < 0.05
    assert pvalue == pytest.approx(stats.kstwo.sf(statistic.value, round(4000 * 2500 / 6500)))
    distance = wasserstein_binned(*binned(a, b, edges), 2.0)
    expected = stats.wasserstein_distance(a, b) / 2.0
    assert distance.low <= expected <= distance.high
    assert distance.value == pytest.approx(expected, abs=0.01)
    if integers:  # each bin holds one distinct value: taking values at their bin's mean is exact
        assert distance.value == pytest.approx(expected)


def test_wasserstein_of_a_constant_baseline():
    edges = np.ones(3)
    assert wasserstein_binned(*binned(np.ones(10), np.ones(5), edges), 0.0).value == 0.0
    assert wasserstein_binned(*binned(np.ones(10), np.full(5, 2.0), edges), 0.0) is None


def test_bands_and_overall_status():
    bands = Bands()
    assert [bands.band(v) for v in (0.0, 0.0999, 0.1, 0.2499, 0.25, 0.4999, 0.5, 9)] == [
        "stable", "stable", "warning", "warning", "alert", "alert", "critical", "critical"]
    with pytest.raises(ValueError, match="PSI bands must increase"):
        Bands(0.3, 0.25, 0.5)
    assert overall(["stable", "alert", INSUFFICIENT, "warning"]) == "alert"
    assert overall([INSUFFICIENT, INSUFFICIENT]) == INSUFFICIENT
    assert overall([INSUFFICIENT, "stable"]) == "stable"


def test_local_calendar_follows_the_meters_clock_across_dst():
    # 2026-03-29 is a Sunday; Paris moves from +01:00 to +02:00 at 01:00 UTC.
    moments = [datetime(2026, 3, 29, 0, 30, tzinfo=timezone.utc), datetime(2026, 3, 29, 1, 30, tzinfo=timezone.utc),
               datetime(2026, 3, 30, 7, 0, tzinfo=timezone.utc)]
    seconds = np.array([int(m.timestamp()) for m in moments])
    paris = local_calendar(seconds, "Europe/Paris")
    assert paris.stratum.tolist() == [24 + 1, 24 + 3, 9]  # Sunday 01:30, Sunday 03:30, Monday 09:00
    assert local_calendar(seconds, "UTC").stratum.tolist() == [24 + 0, 24 + 1, 7]
    assert paris.day[2] - paris.day[0] == 1


def brute_pit(reference, reference_stratum, value, stratum, jitter):
    same = reference[reference_stratum == stratum]
    below, ties = np.sum(same < value), np.sum(same == value)
    return (below + jitter * ties) / len(same)


@pytest.mark.parametrize("integers", [False, True], ids=["continuous", "ties"])
def test_pit_ranks_within_the_values_own_stratum(integers):
    rng = np.random.default_rng(1)
    values = rng.gamma(1.0, 2.0, 3000)
    if integers:  # many ties
        values = np.floor(values)
    stratum = rng.integers(0, 3, 3000).astype(np.int16)
    day = rng.integers(0, 5, 3000)
    baseline = SeasonalBaseline(values, stratum)
    jitter = rng.random(3000)
    assert baseline.reference_pit(jitter) == pytest.approx(
        [brute_pit(values, stratum, v, s, j) for v, s, j in zip(values, stratum, jitter)])
    held_out = baseline.held_out_pit(day, jitter)
    for i in range(0, 3000, 37):
        others = day != day[i]
        assert held_out[i] == pytest.approx(brute_pit(values[others], stratum[others], values[i], stratum[i], jitter[i]))
    # The summary's grid gives each new value the fine bin its PIT among all reference values gives.
    summary = BaselineSummary.build(values, stratum, day, bins=10, jitter=jitter)
    new_values = np.concatenate([rng.gamma(1.0, 2.5, 2000), [-1.0, 99.0], values[:500]])
    if integers:
        new_values = np.floor(new_values)
    new_stratum = rng.integers(0, 3, len(new_values)).astype(np.int16)
    new_jitter = rng.random(len(new_values))
    pit = np.array([brute_pit(values, stratum, v, s, j) for v, s, j in zip(new_values, new_stratum, new_jitter)])
    expected = np.minimum((pit * summary.fine).astype(int), summary.fine - 1)
    assert np.array_equal(summary.fine_bins(new_values, new_stratum, new_jitter), expected)
    assert len(summary.grid_keys) < len(values) / 2  # a summary, not a copy


def test_threshold_shrinks_as_the_current_window_grows():
    rng = np.random.default_rng(2)
    day_counts = rng.poisson(50, size=(28, 4, 10))
    reference = day_counts.sum(axis=0)
    short, long = (psi_threshold(reference, day_counts, days, resamples=400, false_alarm_rate=0.01,
                                 rng=np.random.default_rng(0)) for days in (1, 14))
    assert long < short


def sample(rng, days: int, start_day: int = 0, shift: float = 0.0) -> Sample:
    minutes = np.arange(days * 1440)
    hour = (minutes // 60) % 24
    values = 1 + np.sin(hour / 24 * 2 * np.pi) + rng.normal(0, 0.3, minutes.size) + shift
    day = start_day + minutes // 1440
    return Sample(values, (((day + 3) % 7 >= 5) * 24 + hour).astype(np.int16), day)


def test_compare_statuses_and_insufficient_data():
    rng = np.random.default_rng(3)
    reference = sample(rng, 21)
    same = compare("x", reference, sample(rng, 7, 21), mode="full")
    assert same.status == "stable" and same.ks_statistic < 0.05 and same.recommendation == "no action needed"
    shifted = sample(rng, 7, 21, shift=0.6)
    moved = compare("x", reference, shifted, mode="full")
    assert moved.status == "critical" and moved.wasserstein_norm == pytest.approx(0.6 / 0.3, rel=0.1)
    light = compare("x", reference, shifted, mode="light")
    assert light.psi == pytest.approx(moved.psi) and light.ks_statistic is None
    few = compare("x", reference, sample(rng, 7, 21).where(np.arange(7 * 1440) < 100))
    assert few.status == INSUFFICIENT and few.psi is None and few.current_n == 100
    short_reference = compare("x", sample(rng, 3), sample(rng, 7, 3), config=DriftConfig(min_reference_days=7))
    assert short_reference.status == INSUFFICIENT
    missing = Sample(np.full(7 * 1440, np.nan), reference.stratum[:7 * 1440], reference.day[:7 * 1440])
    assert compare("x", reference, missing).current_n == 0
