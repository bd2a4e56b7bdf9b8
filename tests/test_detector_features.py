"""The detector's array functions with small arrays in and values out (no database): rolling
statistics, flat runs, calibrated probabilities and severities."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import optimize
from scipy.stats import genpareto

from detector import neldermead
from detector.calibration import (StackedCalibration, TailCalibration, _fit_pareto,
                                  score_from_evidence, score_from_p, severities)
from detector.features import ContextFeatures
from detector.rolling import SlotGroups, robust_scale, rolling, run_lengths, sum_present
from wattwatch.vocabulary import SEVERITIES


def test_run_lengths_count_repeats_and_a_gap_restarts_them():
    values = np.array([[1.0, 1.0, 2.0, 2.0, 2.0, np.nan, 2.0],
                       [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0]])
    np.testing.assert_array_equal(run_lengths(values), [[1, 2, 1, 2, 3, 1, 1],
                                                        [1, 2, 3, 4, 1, 2, 1]])


def test_robust_spreads_profiles_and_sums_of_small_arrays():
    assert robust_scale(np.array([1.0, 1.0, 1.0, np.nan])) > 0  # never zero
    assert robust_scale(np.array([0.0, 1.0, 2.0, 3.0, 4.0])) == pytest.approx(1.4826)
    medians, scales = SlotGroups(np.array([0, 0, 1, 1, 2]), 3).profile(
        np.array([1.0, 3.0, 10.0, 14.0, np.nan]), floor=0.5)
    np.testing.assert_allclose(medians, [2.0, 12.0, 6.5])  # an unseen slot: the overall median
    np.testing.assert_allclose(scales, [1.4826, 2 * 1.4826, 0.5])
    np.testing.assert_array_equal(sum_present([np.array([1.0, np.nan, np.nan]),
                                               np.array([2.0, 3.0, np.nan])]), [3.0, 3.0, np.nan])


@pytest.mark.parametrize("n_slots", [1, 24, 168, 500])
def test_slot_profiles_are_pandas_group_by_medians_bit_for_bit(n_slots):
    rng = np.random.default_rng(n_slots)
    slots = rng.integers(0, n_slots, 5000)
    slots[slots == n_slots // 2] = 0  # a slot never seen
    values = np.round(rng.gamma(2.0, 1.0, 5000), 2)  # ties, as meters' resolution gives
    values[rng.random(5000) < 0.05] = np.nan
    frame = pd.DataFrame({"v": values, "s": slots}).dropna()
    median = frame.groupby("s")["v"].median()
    deviation = (frame["v"] - frame["s"].map(median)).abs()
    mad = deviation.groupby(frame["s"]).median() * 1.4826
    medians, scales = SlotGroups(slots, n_slots).profile(values, floor=0.05)
    expected = np.full(n_slots, np.nanmedian(values))
    expected[median.index] = median
    assert np.array_equal(medians, expected)
    expected = np.full(n_slots, 0.05)
    expected[mad.index] = np.maximum(mad, 0.05)
    if n_slots == 168:  # the hour of the week's spreads: pooled over the days
        expected = expected.reshape(7, 24).mean(axis=0)
    assert np.array_equal(scales, expected)


@pytest.mark.parametrize("how", ["mean", "std", "min", "median"])
@pytest.mark.parametrize("shift", [0, 1])
def test_the_last_readings_of_many_series_roll_as_pandas_rolls_a_whole_one(how, shift):
    rng = np.random.default_rng(0)
    values = rng.normal(size=(3, 40))
    values[0, 30:33] = np.nan
    values[2, :5] = np.nan
    whole = rolling(values, 6, how, k=40, min_periods=3, shift=shift)
    assert np.array_equal(whole[1], getattr(pd.Series(values[1]).shift(shift).rolling(
        6, min_periods=3), how)().to_numpy(), equal_nan=True)
    np.testing.assert_allclose(rolling(values, 6, how, k=4, min_periods=3, shift=shift),
                               whole[:, -4:], rtol=1e-12)
    # a history shorter than the window: what is missing counts as absent
    np.testing.assert_allclose(rolling(values[:, -5:], 6, how, k=2, min_periods=3, shift=shift),
                               rolling(values[:, -5:], 6, how, k=5, min_periods=3,
                                       shift=shift)[:, -2:], rtol=1e-12)


def test_scores_map_rarity_and_severities_follow_the_bands():
    np.testing.assert_allclose(score_from_p(np.array([1.0, 1e-4, 1e-8, 1e-20])),
                               [0.0, 50.0, 100 - 10 / (1 + np.log(2)), 100 - 10 / (1 + np.log(17))])
    scores = np.array([50.0, 64.9, 65.0, 80.0, 90.0, 99.0])
    assert severities(scores, np.array([True] * 5 + [False])).tolist() == [
        "low", "low", "medium", "high", "critical", "none"]
    assert set(SEVERITIES) == {"none", "low", "medium", "high", "critical"}


def test_calibrated_evidence_grows_with_strangeness_and_stacks_exactly():
    rng = np.random.default_rng(1)
    calibrations = [TailCalibration([0.1, 0.1]).fit(rng.exponential(scale, size=(2000, 2)))
                    for scale in (1.0, 3.0)]
    stats = np.array([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0], [50.0, 50.0]])
    evidence = calibrations[0].evidence(stats)
    assert (np.diff(evidence, axis=0) > 0).all() and evidence[0].tolist() == [0.0, 0.0]
    assert (calibrations[1].evidence(stats)[2:] < evidence[2:]).all()  # a wider spread: less rare
    meters = np.array([0, 1, 0, 1])
    expected = np.array([calibrations[m].evidence(stats[[n]])[0] for n, m in enumerate(meters)])
    np.testing.assert_allclose(StackedCalibration(calibrations).evidence(stats, meters), expected,
                               rtol=1e-12)


def test_pareto_tails_are_scipys_fit_bit_for_bit():
    rng = np.random.default_rng(7)
    samples = [rng.pareto(2.0, 300), rng.uniform(0.0, 3.0, 200),  # heavy, bounded (shape < 0)
               np.round(rng.exponential(1.0, 400), 1) + 0.05,     # ties, as meters' resolution
               rng.beta(0.5, 2.0, 100) * 5, rng.exponential(2.0, 20)]
    for excess in samples:
        shape, _, scale = genpareto.fit(excess, floc=0.0)
        assert _fit_pareto(excess) == (shape, scale)


@pytest.mark.parametrize("func, x0", [
    (lambda x: (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2, [-1.2, 1.0]),  # Rosenbrock
    (lambda x: float(np.floor(abs(x[0] - 3)) + np.floor(abs(x[1]))), [0.0, 5.0]),  # plateaus
    (lambda x: -abs(x[0]) - abs(x[1]), [1.0, 1.0]),  # unbounded: stops at 400 calls
    (lambda x: sum((v - k) ** 2 for k, v in enumerate(x)), [0.0, 0.0, 0.0]),
])
def test_nelder_mead_steps_as_scipy_does(func, x0):
    assert neldermead.fmin(func, x0) == tuple(optimize.fmin(func, x0, disp=0))


def test_scores_keep_their_meaning_below_90_and_rank_above_it_without_reaching_100():
    evidence = np.array([0.0, 4.0, 7.2, 8.0, 16.0, 100.0, 1000.0, 1e6])
    scores = score_from_evidence(evidence)
    np.testing.assert_allclose(scores[:3], [0.0, 50.0, 90.0])
    assert scores[3] == pytest.approx(100 - 10 / (1 + np.log(2)))
    assert scores[4] == pytest.approx(100 - 10 / (1 + np.log(12)))
    assert (np.diff(scores) > 0).all() and scores[-1] < 100.0
    assert (np.diff(scores.astype(np.float32)) > 0).all()  # still ordered as stored (real)


def test_distance_outside_the_range_keeps_growing_below_zero():
    """A positive quantity's distance below its range is a log ratio down to a thousandth of the
    low end, then goes on linearly: zero and negative values keep their order, no plateau."""
    values = np.array([[2.0, 1.0, 0.5, 1e-3, 0.0, -0.5, -1.0, 4.0, 8.0]])
    low, high = np.array([[1.0]]), np.array([[4.0]])
    distance = ContextFeatures._outside_range(values, low, high)[0]
    np.testing.assert_allclose(distance[[0, 1, 7]], 0.0)
    np.testing.assert_allclose(distance[[2, 3, 8]], [np.log(2.0), np.log(1e3), np.log(2.0)])
    below = distance[1:7]
    assert (np.diff(below) > 0).all(), below
    # continuous at the joint: just above and below a thousandth of low agree
    near = ContextFeatures._outside_range(np.array([[1.0001e-3, 0.9999e-3]]), low, high)[0]
    assert abs(near[0] - near[1]) < 1e-3
