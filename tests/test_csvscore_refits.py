"""score-csv refits a model past its age, as `detect run` retrains: a level that settles at a
new normal stops being flagged, and no score depends on the rows after it."""

from __future__ import annotations

import numpy as np
import pandas as pd

from detector.csvscore import score_csv
from tests.test_cli import run_cli

DAY = 96  # quarter-hour readings
AGE_DAYS, TRAIN_DAYS, SHIFT_DAY = 10, 28, 35


def _load(days: int, seed: int, start: str = "2026-01-01") -> pd.DataFrame:
    """Quarter-hour readings of a daily cycle with noise."""
    rng = np.random.default_rng(seed)
    index = pd.date_range(start, periods=days * DAY, freq="15min")
    hour = index.hour + index.minute / 60
    value = 1.0 + 0.8 * np.exp(-((hour - 19) / 2.0) ** 2) + rng.normal(0, 0.05, len(index))
    return pd.DataFrame({"time": index.strftime("%Y-%m-%d %H:%M:%S"), "load": value})


def _settled(tmp_path, max_age_days: str) -> pd.DataFrame:
    """100 days whose level rises by 1.5 at day 35 and stays there, fitted on the first 28."""
    frame = _load(100, seed=1)
    frame.loc[SHIFT_DAY * DAY:, "load"] += 1.5
    frame.to_csv(tmp_path / "in.csv", index=False)
    result = run_cli(["detect", "score-csv", str(tmp_path / "in.csv"), "--time-column", "time",
                      "--columns", "load", "--train-fraction", str(TRAIN_DAYS / 100),
                      "--max-age-days", max_age_days, "-o", str(tmp_path / "out.csv")])
    assert result.returncode == 0, result.stderr
    return pd.read_csv(tmp_path / "out.csv")


def test_a_new_normal_is_learned_within_the_age_and_the_training_span(tmp_path):
    """With refits every 10 days on the 28 days before, the raised level is no anomaly once a
    window holds only it (at most age + span after it settled); with one model it stays one."""
    learned = SHIFT_DAY + AGE_DAYS + TRAIN_DAYS
    refitted = _settled(tmp_path, str(AGE_DAYS))
    assert refitted["is_anomaly"].iloc[SHIFT_DAY * DAY:SHIFT_DAY * DAY + 4].any()  # the onset
    assert refitted["is_anomaly"].iloc[learned * DAY:].mean() < 0.01  # a stray alarm at most
    one_model = _settled(tmp_path, "0")
    assert one_model["is_anomaly"].iloc[:SHIFT_DAY * DAY].equals(
        refitted["is_anomaly"].iloc[:SHIFT_DAY * DAY])  # same first model before its age
    assert one_model["is_anomaly"].iloc[learned * DAY:].mean() > 0.9


def test_refits_are_causal(tmp_path):
    """Rows appended to a file change no score of the rows before them, across refits."""
    _load(TRAIN_DAYS, seed=2).to_csv(tmp_path / "ref.csv", index=False)
    readings = _load(60, seed=3, start=f"2026-01-{TRAIN_DAYS + 1}")
    readings.loc[20 * DAY:, "load"] += 0.5  # a change for the refits to learn
    scored = {}
    for days in (40, 60):
        readings.iloc[:days * DAY].to_csv(tmp_path / "in.csv", index=False)
        scored[days] = score_csv(tmp_path / "in.csv", tmp_path / "out.csv", "time", ["load"],
                                 train_file=tmp_path / "ref.csv", max_age_days=AGE_DAYS)
    # refits at days 10, 20 and 30 of the file; fitted on the prefix alone, the scores are one
    assert scored[40].equals(scored[60].iloc[:40 * DAY])
    one_model = score_csv(tmp_path / "in.csv", tmp_path / "out.csv", "time", ["load"],
                          train_file=tmp_path / "ref.csv", max_age_days=0)
    assert not one_model["score"].equals(scored[60]["score"])  # the refits did happen


def test_a_step_indexed_file_keeps_one_model(tmp_path):
    """Steps carry no days: the age rule does not apply."""
    frame = _load(60, seed=4)
    frame["time"] = np.arange(len(frame))
    frame.to_csv(tmp_path / "in.csv", index=False)
    scored = [score_csv(tmp_path / "in.csv", tmp_path / "out.csv", "time", ["load"],
                        max_age_days=age)["score"] for age in (0, 1)]
    assert scored[0].equals(scored[1])
