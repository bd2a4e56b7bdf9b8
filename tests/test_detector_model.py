"""The detector as a library: quality on injected anomalies against the baseline, causality,
calibration, weekly cycles, kinds and explanations, period detection, evaluation helpers."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

from detector.calibration import TailCalibration, score_from_p, severities
from detector.models import RawIForest, SeasonalDetector, make_model
from detector.rolling import Prefixes
from detector.seasonality import Season, detect_period
from ingest.anomalies import inject_many
from tests.support.detector_evaluation import event_scores, nab_normalised, nab_raw_score, runs
from tests.test_detector_synthetic import household
from wattwatch.vocabulary import SEVERITIES

TRAIN_DAYS = 14


@pytest.fixture(scope="module")
def labelled():
    """Four weeks of a synthetic house, two anomalies of every kind in the last two."""
    frame = household(days=TRAIN_DAYS + 14, seed=11)
    injected = inject_many(frame, np.random.default_rng(7), per_kind=2, min_gap=400,
                           skip=TRAIN_DAYS * 1440 + 60)
    truth = [(frame.index.get_loc(i.start), frame.index.get_loc(i.end), i.kind) for i in injected]
    return frame, truth


@pytest.fixture(scope="module")
def scored(labelled):
    frame, _ = labelled
    train = frame.iloc[:TRAIN_DAYS * 1440]
    default = SeasonalDetector().fit(train)
    return default, default.score(frame), RawIForest().fit(train).score(frame)


def _test_part(flags: np.ndarray, truth):
    start = TRAIN_DAYS * 1440
    return flags[start:], [(a - start, b - start, k) for a, b, k in truth]


def test_default_model_finds_injected_anomalies_far_better_than_the_baseline(labelled, scored):
    _, truth = labelled
    _, default, baseline = scored
    ours = event_scores(*_test_part(default["is_anomaly"].to_numpy(), truth))
    theirs = event_scores(*_test_part(baseline["is_anomaly"].to_numpy(), truth))
    assert ours.f1 >= 0.75, ours
    assert ours.f1 >= 2 * theirs.f1, (ours, theirs)
    # The kinds the physics and flat checks see are never missed.
    for kind in ("outage", "flatline", "voltage_sag", "voltage_swell", "inconsistency"):
        assert ours.recall_by_kind[kind] == 1.0, (kind, ours.recall_by_kind)


def test_detected_readings_carry_the_kind_and_an_explaining_feature(labelled, scored):
    _, truth = labelled
    detector, default, _ = scored
    names = set(detector.features_.names())
    expected = {"outage": "outage", "flatline": "flatline", "voltage_sag": "voltage_sag",
                "voltage_swell": "voltage_swell", "inconsistency": "inconsistency"}
    for first, last, kind in truth:
        flagged = default.iloc[first:last + 1]
        flagged = flagged[flagged["is_anomaly"]]
        assert flagged["top_feature"].isin(names).all()
        assert (flagged["severity"] != "none").all()
        if kind in expected and len(flagged):
            assert flagged["kind"].value_counts().index[0] == expected[kind], (kind, flagged["kind"])
    quiet = default[~default["is_anomaly"]]
    assert quiet["kind"].isna().all() and (quiet["severity"] == "none").all()


def test_scores_are_causal(labelled):
    frame, _ = labelled
    detector = SeasonalDetector().fit(frame.iloc[:TRAIN_DAYS * 1440])
    cut = TRAIN_DAYS * 1440 + 3000
    whole = detector.score(frame)
    changed = frame.copy()
    changed.iloc[cut:] = changed.iloc[cut:] * 3.0  # the future changes completely
    again = detector.score(changed)
    pd.testing.assert_series_equal(whole["score"].iloc[:cut], again["score"].iloc[:cut])
    assert not whole["score"].iloc[cut:].equals(again["score"].iloc[cut:])


def test_the_same_score_means_the_same_rarity_on_meters_of_any_size():
    """Two meters 20 times apart in size, each scored on fresh normal data: the share of
    readings at or above each score is about the same."""
    small = household(days=21, seed=1)[["active_power_kw"]]
    large = household(days=21, seed=2)[["active_power_kw"]] * 20
    shares = []
    for frame in (small, large):
        scores = SeasonalDetector().fit(frame.iloc[:14 * 1440]).score(frame)["score"].iloc[14 * 1440:]
        shares.append([float(np.mean(scores >= level)) for level in (10, 20, 30)])
    for a, b in zip(*shares):
        assert abs(a - b) <= 0.5 * max(a, b) + 0.002, shares


def test_weekly_cycle_is_remembered():
    """A weekend-shaped day on a Saturday is normal; the same weekend day moved to a Wednesday
    is unusual for its time."""
    frame = household(days=35, seed=4)[["active_power_kw"]]
    detector = SeasonalDetector().fit(frame.iloc[:28 * 1440])
    week = frame.iloc[28 * 1440:].copy()
    saturday = week[week.index.day_of_week == 5]
    wednesday = week.index.day_of_week == 2
    moved = week.copy()
    moved.loc[wednesday, "active_power_kw"] = saturday["active_power_kw"].to_numpy()
    normal = detector.score(week)
    unusual = detector.score(moved)
    seasonal = ("active_power_kw:seasonal", "active_power_kw:level", "active_power_kw:floor")
    on_saturday = normal.loc[week.index.day_of_week == 5]
    assert not on_saturday.loc[on_saturday["is_anomaly"], "top_feature"].isin(seasonal).any()
    on_wednesday = unusual.loc[wednesday]
    flagged = on_wednesday.loc[on_wednesday["is_anomaly"]]
    assert flagged["top_feature"].isin(seasonal).sum() >= 60  # an hour or more of the day
    assert detector.metrics_["season"] == "week"


def test_iforest_raw_flags_its_five_percent():
    frame = household(days=7, seed=9)
    result = make_model("iforest-raw").fit(frame).score(frame)
    assert 0.04 <= result["is_anomaly"].mean() <= 0.06
    # its kind is the direction of the power against its median: incidents need one
    flagged = result[result["is_anomaly"]]
    median = frame["active_power_kw"].median()
    assert (flagged["kind"] == np.where(frame.loc[flagged.index, "active_power_kw"] >= median,
                                        "spike", "drop")).all()
    assert result.loc[~result["is_anomaly"], "kind"].isna().all()
    with pytest.raises(ValueError, match="unknown model 'magic'"):
        make_model("magic")


def test_tail_calibration_orders_unseen_values_and_scores_map_rarity():
    rng = np.random.default_rng(0)
    stats = np.abs(rng.normal(size=(20_000, 1)))
    calibration = TailCalibration([0.5]).fit(stats)
    evidence = calibration.evidence(np.array([[0.0], [2.0], [5.0], [8.0], [50.0], [5000.0]]))[:, 0]
    p = 10 ** -evidence
    assert p[0] > 0.5 and np.all(np.diff(evidence) > 0) and np.isfinite(evidence[-1])
    assert 0.02 < p[1] < 0.08  # P(|N(0,1)| > 2) = 0.046
    assert evidence[-1] > 300  # far past what a float probability can hold: still ordered
    assert score_from_p(np.array([1e-4]))[0] == pytest.approx(50)
    assert list(severities(np.array([40, 55, 70, 85, 95.0]), np.array([False, True, True, True, True]))) \
        == list(SEVERITIES)


def test_periods_are_detected_from_the_data():
    steps = np.arange(5000)
    rng = np.random.default_rng(1)
    assert detect_period(np.sin(2 * np.pi * steps / 37) + rng.normal(0, 0.2, 5000)) == 37
    daily = np.sin(2 * np.pi * steps / 24) + (steps % 168 >= 120) * 1.5 + rng.normal(0, 0.1, 5000)
    assert detect_period(daily) == 168
    assert detect_period(rng.normal(size=5000)) == 1
    season = Season.choose(pd.RangeIndex(5000), np.sin(2 * np.pi * steps / 37))
    assert (season.kind, season.period) == ("steps", 37)
    assert list(season.slot_of(pd.Index([0, 37, 38]))) == [0, 0, 1]


def test_event_scores_and_nab_scoring_by_hand():
    flags = np.zeros(100, dtype=bool)
    flags[[10, 11, 14, 50, 90]] = True
    assert runs(flags, max_gap=2) == [(10, 14), (50, 50), (90, 90)]
    scores = event_scores(flags, [(12, 20, "spike"), (60, 70, "drop")], max_gap=2, tolerance=0)
    assert (scores.precision, scores.recall) == (pytest.approx(1 / 3), 0.5)
    assert scores.recall_by_kind == {"drop": 0.0, "spike": 1.0}
    # A detection at the very start of the only window scores close to 1; nothing found is -1.
    early = np.zeros(100, dtype=bool)
    early[40] = True
    assert nab_raw_score(early, [(40, 59)], probation=10) == pytest.approx(0.987, abs=1e-3)
    assert nab_raw_score(np.zeros(100, bool), [(40, 59)], probation=10) == -1.0
    assert nab_normalised(-1.0, 1) == 0.0 and nab_normalised(1.0, 1) == 100.0


def test_a_cycle_of_its_own_beats_the_calendar():
    """Timestamped readings on a 100-step cycle (500 minutes, not a day) are profiled by that
    period; a daily series keeps the hour of the week."""
    rng = np.random.default_rng(5)
    index = pd.date_range("2026-01-05", periods=6000, freq="5min", tz="UTC")
    steps = np.arange(6000)
    bursts = np.where(steps % 100 < 5, 20.0, 0.0) + rng.normal(0, 0.5, len(steps))
    season = Season.choose(index, bursts)
    assert (season.kind, season.period) == ("steps", 100)
    daily = 10 + 5 * np.sin(2 * np.pi * steps / 288) + rng.normal(0, 0.5, len(steps))
    assert Season.choose(index, daily).kind == "week"


def test_readings_that_stop_swinging_are_flagged_as_calm():
    """A cycle whose swings vanish for two periods (values still moving a little, never
    repeating exactly): flagged, explained by the calm statistic, kind flatline."""
    rng = np.random.default_rng(6)
    steps = np.arange(8000)
    value = 100 + 40 * np.sin(2 * np.pi * steps / 48) + rng.normal(0, 3, len(steps))
    value[6000:6096] = 100 + rng.normal(0, 0.5, 96)
    frame = pd.DataFrame({"value": value}, index=pd.Index(steps, name="step"))
    result = SeasonalDetector().fit(frame.iloc[:4000]).score(frame)
    flagged = result[result["is_anomaly"]]
    inside = flagged.loc[6000:6120]
    assert len(inside) >= 20 and len(flagged) - len(inside) <= 5, (len(inside), len(flagged))
    assert (inside["top_feature"] == "value:calm").mean() > 0.5, inside["top_feature"].value_counts()
    assert (inside["kind"] == "flatline").mean() > 0.5, inside["kind"].value_counts()


def test_a_fit_on_the_first_readings_reads_the_windows_the_whole_fit_rolled():
    """The validation model (fitted on a window's first part) reads the windows the model of
    the whole window rolled, and is the model a fit of its own gives, bit for bit."""
    frame = household(days=4, seed=5)
    prefixes = Prefixes()
    SeasonalDetector().fit(frame, prefixes)
    kept = dict(prefixes.whole)
    shared = SeasonalDetector().fit(frame.iloc[:4000], prefixes)
    assert kept and all(prefixes.whole[key] is whole for key, whole in kept.items())
    assert pickle.dumps(shared) == pickle.dumps(SeasonalDetector().fit(frame.iloc[:4000]))


@pytest.fixture(scope="module")
def weeks():
    """Five weeks of a house (weekday and weekend profiles): a model of its first four, and a
    copy of its last week for each test to change."""
    frame = household(days=35, seed=4)[["active_power_kw"]]
    detector = SeasonalDetector().fit(frame.iloc[:28 * 1440])
    return lambda: (detector, frame.iloc[28 * 1440:].copy())


def without_evening_peak(frame: pd.DataFrame, day: np.ndarray) -> None:
    """The day's evening hours (17-23) take its night's readings (1-7): every one in range."""
    hour = frame.index.hour
    frame.loc[day & (hour >= 17) & (hour < 23), "active_power_kw"] = \
        frame.loc[day & (hour >= 1) & (hour < 7), "active_power_kw"].to_numpy()


def _pattern_flags(result: pd.DataFrame, where: np.ndarray) -> pd.DataFrame:
    flagged = result.loc[where & result["is_anomaly"].to_numpy()]
    return flagged[flagged["kind"] == "pattern"]


def test_a_day_without_its_evening_peak_is_a_pattern_anomaly(weeks):
    """Thursday evening's peak does not come (the hours hold night-time readings, every one
    in range): flagged as a pattern, explained by the stretch's mean."""
    detector, week = weeks()
    thursday = week.index.day_of_week == 3
    without_evening_peak(week, thursday)
    result = detector.score(week)
    found = _pattern_flags(result, thursday)
    assert len(found) >= 60, result.loc[thursday & result["is_anomaly"], "kind"].value_counts()
    assert (found["top_feature"] == "active_power_kw:pattern").all()
    assert not _pattern_flags(result, ~thursday).any().any()


def test_a_working_day_shaped_like_a_holiday_is_a_pattern_anomaly(weeks):
    """A Wednesday with Saturday's readings: its morning and evening peaks missing are a
    pattern (the midday load of a day at home, a level shift)."""
    detector, week = weeks()
    wednesday = week.index.day_of_week == 2
    saturday = week.index.day_of_week == 5
    week.loc[wednesday, "active_power_kw"] = week.loc[saturday, "active_power_kw"].to_numpy()
    found = _pattern_flags(detector.score(week), wednesday)
    assert len(found) >= 30
    assert (found["top_feature"] == "active_power_kw:pattern").all()


def test_an_hour_of_1_5_kw_at_a_quiet_hour_is_flagged(weeks):
    detector, week = weeks()
    tuesday_3am = (week.index.day_of_week == 1) & (week.index.hour == 3)
    week.loc[tuesday_3am, "active_power_kw"] += 1.5
    result = detector.score(week)
    flagged = result.loc[tuesday_3am & result["is_anomaly"].to_numpy()]
    assert len(flagged) >= 20
    assert flagged["kind"].value_counts().index[0] == "unusual_time", flagged["kind"].value_counts()


@pytest.fixture(scope="module")
def metered_weeks():
    """The same house with its sub-meters, reactive power, voltage and current: a model of its
    first four weeks, and a copy of its last week for each test to change."""
    frame = household(days=35, seed=4)
    detector = SeasonalDetector().fit(frame.iloc[:28 * 1440])
    return lambda: (detector, frame.iloc[28 * 1440:].copy())


def night_load(frame: pd.DataFrame, kw: float) -> np.ndarray:
    """An unmetered load of kw from 1 to 6 am on the Wednesday (current follows it); the rows
    it changed."""
    night = (frame.index.day_of_week == 2) & (frame.index.hour >= 1) & (frame.index.hour < 6)
    p, q, v = (frame.loc[night, c] for c in ("active_power_kw", "reactive_power_kw", "voltage_v"))
    frame.loc[night, "current_a"] += 1000 * (np.hypot(p + kw, q) - np.hypot(p, q)) / v
    frame.loc[night, "active_power_kw"] += kw
    return night


def test_a_long_load_at_night_adds_up_to_a_level_shift_or_an_unusual_time(metered_weeks):
    detector, week = metered_weeks()
    night = night_load(week, 1.5)
    result = detector.score(week)
    flagged = result.loc[night & result["is_anomaly"].to_numpy()]
    assert len(flagged) >= 0.9 * night.sum()
    kinds = flagged["kind"].value_counts()
    assert kinds[["level_shift", "unusual_time"]].sum() >= 0.95 * len(flagged), kinds
    # hours into the load, the sum of its excess is what stands out most at some readings
    assert (flagged["top_feature"] == "unmetered_kw:excess").sum() >= 20


@pytest.mark.parametrize("fixture, window, statistic", [
    ("weeks", "pattern_window_", "active_power_kw:pattern"),
    ("metered_weeks", "excess_window_", "unmetered_kw:excess"),
])
def test_a_model_stored_before_a_statistic_scores_without_it(request, fixture, window, statistic):
    detector, week = request.getfixturevalue(fixture)()
    features = pickle.loads(pickle.dumps(detector.features_))
    delattr(features, window)  # as unpickled from a model that never had one
    names = features.names()
    assert statistic in detector.features_.names()
    assert statistic not in names
    assert features.transform(week.iloc[:500]).stats.shape == (500, len(names))


def test_a_model_without_the_unmetered_excess_is_never_stacked_with_one_that_has_it(metered_weeks):
    detector, _ = metered_weeks()
    features = pickle.loads(pickle.dumps(detector.features_))
    del features.excess_window_  # the profiles it reads are those every model has
    assert features.layout() != detector.features_.layout()
