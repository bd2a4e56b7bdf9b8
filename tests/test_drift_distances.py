"""The pure parts of drift: distances, baselines, calibration, status bands (no database)."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pytest
from scipy import stats

from drift.analysis import DriftConfig, Sample, compare
from drift.baselines import STRATA, SeasonalBaseline, local_calendar
from drift.calibration import psi_threshold
from drift.distances import ks, psi, seasonal_psi, wasserstein_norm
from drift.status import INSUFFICIENT, Bands, overall


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


@pytest.mark.parametrize("integers", [False, True], ids=["continuous", "ties"])
def test_ks_and_wasserstein_agree_with_scipy(integers):
    rng = np.random.default_rng(5)
    a, b = rng.normal(0, 1, 4000), rng.normal(0.2, 1.3, 2500)
    if integers:
        a, b = np.round(a * 2), np.round(b * 2)
    expected = stats.ks_2samp(a, b, method="asymp")
    assert ks(a, b) == pytest.approx((expected.statistic, expected.pvalue))
    assert wasserstein_norm(a, b, 2.0) == pytest.approx(stats.wasserstein_distance(a, b) / 2.0)


def test_wasserstein_norm_of_a_constant_baseline():
    assert wasserstein_norm(np.ones(10), np.ones(5), 0.0) == 0.0
    assert wasserstein_norm(np.ones(10), np.full(5, 2.0), 0.0) is None


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


def test_pit_ranks_within_the_values_own_stratum():
    rng = np.random.default_rng(1)
    values = rng.integers(0, 6, 600).astype(float)  # many ties
    stratum = rng.integers(0, 3, 600).astype(np.int16)
    day = rng.integers(0, 5, 600)
    baseline = SeasonalBaseline(values, stratum)
    jitter = rng.random(600)
    new_values, new_stratum = np.array([-1.0, 2.0, 2.5, 9.0]), np.array([0, 1, 2, 2], dtype=np.int16)
    expected = [brute_pit(values, stratum, v, s, j) for v, s, j in zip(new_values, new_stratum, jitter)]
    assert baseline.pit(new_values, new_stratum, jitter[:4]) == pytest.approx(expected)
    assert baseline.reference_pit(jitter) == pytest.approx(baseline.pit(values, stratum, jitter))
    held_out = baseline.held_out_pit(day, jitter)
    for i in range(0, 600, 37):
        others = day != day[i]
        assert held_out[i] == pytest.approx(brute_pit(values[others], stratum[others], values[i], stratum[i], jitter[i]))
    assert np.isnan(baseline.pit(np.array([1.0]), np.array([STRATA - 1], dtype=np.int16), np.zeros(1))[0])


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
