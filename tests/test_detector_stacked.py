"""Many meters' models stacked into one pass (the live path) give each model's own scores,
kinds and explanations, exactly."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import IsolationForest

from detector import stacked
from detector.calibration import StackedCalibration, TailCalibration
from detector.forests import FlatForest, ForestStack
from detector.models import RawIForest, SeasonalDetector
from detector.seasonality import Season, epoch_ns, utc_index
from detector.stacked import Stack, align, layout
from ingest.anomalies import inject_many
from tests.test_detector_model import night_load, without_evening_peak
from tests.test_detector_synthetic import household

TRAIN_DAYS = 7
RESULT = ["score", "is_anomaly", "severity", "kind", "top_feature", "expected"]


@pytest.fixture(scope="module")
def meters():
    """Three houses with anomalies of every kind after a week of training, their models and
    each model's own scores of the whole series."""
    houses = {}
    for n, seed in enumerate((41, 42, 43)):
        frame = household(days=TRAIN_DAYS + 5, seed=seed)
        inject_many(frame, np.random.default_rng(seed), per_kind=1, min_gap=120,
                    skip=TRAIN_DAYS * 1440 + 60)
        model = SeasonalDetector(random_state=n).fit(frame.iloc[:TRAIN_DAYS * 1440])
        houses[f"m{n}"] = frame, model, model.score(frame)
    return houses


def _stacked(houses, wanted: list[tuple[str, int]], k: int) -> pd.DataFrame:
    """Stack scores of the k readings ending at each (meter, end position), from as much
    history as each needs (less where the series starts later)."""
    stack = Stack({meter_id: model for meter_id, (_, model, _) in houses.items()})
    width = max(model.context_rows for _, model, _ in houses.values()) + k
    columns = stack.features.columns_
    histories = [houses[meter_id][0].iloc[max(0, end - width):end] for meter_id, end in wanted]
    return stack.score([meter_id for meter_id, _ in wanted],
                       [(epoch_ns(frame.index), frame[columns].to_numpy(float))
                        for frame in histories],
                       [str(frame.index.tz) for frame in histories], k)


def test_align_pads_short_histories_before_their_first_reading():
    values, times = align([(np.array([10, 20, 30]), np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])),
                           (np.array([40]), np.array([[7.0, 8.0]]))])
    np.testing.assert_array_equal(times, [[10, 20, 30], [40, 40, 40]])
    np.testing.assert_array_equal(values[0], [[1.0, 3.0, 5.0], [np.nan, np.nan, 7.0]])
    np.testing.assert_array_equal(values[1], [[2.0, 4.0, 6.0], [np.nan, np.nan, 8.0]])


@pytest.mark.parametrize("season", [Season("week", 168), Season("day", 24),
                                    Season("steps", 97, 60_000_000_000)])
@pytest.mark.parametrize("zone", ["Europe/Paris", "UTC", "Asia/Kathmandu", "America/St_Johns",
                                  "Australia/Lord_Howe", "Africa/Casablanca", "America/Recife"])
def test_live_slots_by_arithmetic_equal_the_local_clocks_across_changes_of_offset(season, zone):
    rng = np.random.default_rng(7)
    starts = [pd.Timestamp(day, tz="UTC").value for day in
              ("2026-03-28 20:00", "2026-10-24 22:10", "2026-02-10", "2000-10-07 20:00")]
    # rows of irregular steps, some a few hours long, some spanning weeks and changes of offset
    steps = rng.integers(1, 600, size=(40, 300)) * np.where(np.arange(40) % 2, 1, 60)[:, None]
    times = (np.repeat(starts, 10)[:, None] + rng.integers(0, 40 * 3600, size=(40, 1)) * 10**9
             + np.cumsum(steps, axis=1) * 10**9)
    # and one on the same offset at both ends of 6 days 23.5 hours, Recife's week of summer
    # time in October 2000 inside it
    around = np.linspace(pd.Timestamp("2000-10-08 02:45", tz="UTC").value,
                         pd.Timestamp("2000-10-15 02:15", tz="UTC").value, 300).astype(np.int64)
    times = np.vstack([times, around])
    local = utc_index(times.reshape(-1)).tz_convert(zone)
    np.testing.assert_array_equal(season.slots_at(times, zone),
                                  season.slot_of(local).reshape(times.shape))


def _same(stacked: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert len(stacked) == len(expected)
    for column in RESULT:
        left, right = stacked[column].to_numpy(), expected[column].to_numpy()
        if left.dtype == object:
            assert [v if isinstance(v, str) else None for v in left] == \
                [v if isinstance(v, str) else None for v in right], column
        else:
            np.testing.assert_array_equal(left, right, err_msg=column)


def test_one_layout_for_models_of_alike_meters_and_none_for_the_baseline(meters):
    assert len({layout(model) for _, model, _ in meters.values()}) == 1
    frame = meters["m0"][0]
    assert layout(RawIForest().fit(frame.iloc[:1440])) is None


def test_stack_scores_every_anomaly_as_its_own_model(meters):
    wanted = [(meter_id, end + 1) for meter_id, (_, _, scores) in meters.items()
              for end in np.flatnonzero(scores["is_anomaly"].to_numpy())]
    assert len(wanted) > 20 and len({meter_id for meter_id, _ in wanted}) == 3
    expected = pd.concat([meters[meter_id][2].iloc[[end - 1]] for meter_id, end in wanted])
    stacked = _stacked(meters, wanted, 1)
    assert stacked["is_anomaly"].all()
    assert set(stacked["kind"]) >= {"spike", "drop", "flatline", "voltage_sag"}
    _same(stacked, expected)


def test_stack_scores_a_missing_peak_as_its_own_model():
    """A Thursday evening whose peak does not come (night-time readings instead): the stack
    names it a pattern, with the model's own scores."""
    frame = household(days=35, seed=4)[["active_power_kw"]]
    model = SeasonalDetector().fit(frame.iloc[:28 * 1440])
    without_evening_peak(frame, frame.index.normalize() == pd.Timestamp("2026-02-05", tz="UTC"))
    own = model.score(frame)
    ends = np.flatnonzero(own["kind"].to_numpy() == "pattern") + 1
    assert len(ends) >= 60
    _same(_stacked({"m": (frame, model, own)}, [("m", int(end)) for end in ends], 1),
          pd.concat([own.iloc[[end - 1]] for end in ends]))


def test_stack_scores_several_readings_and_short_histories_as_their_own_models(meters):
    rng = np.random.default_rng(0)
    ends = rng.integers(TRAIN_DAYS * 1440, (TRAIN_DAYS + 5) * 1440, size=30)
    wanted = [(f"m{n % 3}", int(end)) for n, end in enumerate(ends)]
    expected = pd.concat([meters[meter_id][2].iloc[end - 3:end] for meter_id, end in wanted])
    _same(_stacked(meters, wanted, 3), expected)
    # A meter whose history is shorter than the context: its own model sees only that history.
    frame, model, _ = meters["m1"]
    _same(_stacked(meters, [("m1", 40)], 3), model.score(frame.iloc[:40]).iloc[-3:])


def test_forest_and_calibration_stacks_equal_their_single_model_versions(meters):
    models = [model for _, model, _ in meters.values()]
    frame = meters["m2"][0].iloc[-2000:]
    features = models[2].features_.transform(frame)
    inputs = np.log1p(features.stats)
    which = np.full(len(inputs), 2)
    isolation = ForestStack([model.forest_ for model in models]).isolation(inputs, which)
    np.testing.assert_array_equal(isolation, models[2].forest_.isolation(inputs))
    # a flat forest, alone or stacked, scores as scikit-learn's, also between its thresholds
    noisy = inputs + np.random.default_rng(5).normal(0, 0.3, inputs.shape)
    forest = IsolationForest(n_estimators=50, max_samples=256, random_state=0).fit(inputs)
    expected = -forest.score_samples(noisy)
    flat = pickle.loads(pickle.dumps(FlatForest.of(forest)))  # the flat arrays alone
    np.testing.assert_array_equal(flat.isolation(noisy), expected)
    stacked_forests = ForestStack([models[0].forest_, flat])
    np.testing.assert_array_equal(stacked_forests.isolation(noisy, np.ones(len(noisy), int)),
                                  expected)
    stats = np.column_stack([features.stats, isolation])
    calibrations: list[TailCalibration] = [model.calibration_ for model in models]
    np.testing.assert_array_equal(StackedCalibration(calibrations).evidence(stats, which),
                                  calibrations[2].evidence(stats))


def test_a_block_of_new_models_of_many_layouts_is_stacked_as_it_loads(meters, monkeypatch):
    # As the model cache loads a cold start's models: whatever their layouts, once a block's
    # worth is waiting they are stacked, and their arrays become views of the stacks.
    monkeypatch.setattr(stacked, "BLOCK_METERS", 4)
    frame, model, _ = meters["m0"]
    other = SeasonalDetector(random_state=0).fit(frame[["active_power_kw"]].iloc[:TRAIN_DAYS * 1440])
    assert layout(other) != layout(model)
    stacks = stacked.Stacks()
    loaded = [pickle.loads(pickle.dumps(each)) for each in (model, model, other)]
    for n, each in enumerate(loaded):
        stacks.put(f"m{n}", each)
    assert not stacks.stacks  # fewer than a block's worth: waiting for a rebuild
    loaded.append(pickle.loads(pickle.dumps(other)))
    stacks.put("m3", loaded[-1])
    assert len(stacks.stacks) == 2 and not stacks.changed
    for n, each in enumerate(loaded):
        stack = stacks.stacks[stacks.keys[f"m{n}"]]
        assert np.shares_memory(each.forest_.split, stack.forests.split)


def test_stack_scores_a_long_load_at_night_as_its_own_model():
    """An unmetered 1.5 kW load from 1 to 6 am: the stack gives the model's own scores at
    every reading of it, those the summed excess explains too, one and several at a time."""
    frame = household(days=35, seed=4)
    model = SeasonalDetector().fit(frame.iloc[:28 * 1440])
    night = night_load(frame, 1.5)
    own = model.score(frame)
    assert (own.loc[night, "top_feature"] == "unmetered_kw:excess").sum() >= 20
    ends = np.flatnonzero(night) + 1
    houses = {"m": (frame, model, own)}
    _same(_stacked(houses, [("m", int(end)) for end in ends], 1),
          pd.concat([own.iloc[[end - 1]] for end in ends]))
    _same(_stacked(houses, [("m", int(ends[-1]))], 60), own.iloc[ends[-1] - 60:ends[-1]])
