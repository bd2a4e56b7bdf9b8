"""The detector on real readings (UCI household power): sustained loads injected after the
training window are flagged with the right kind, and explained by the window statistics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from detector.models import SeasonalDetector
from ingest.anomalies import inject
from wattwatch.fields import field_for

DAY = 1440
TRAIN_DAYS = 28
FIRST_ROW = 400_000  # spring 2007: an ordinary stretch, after the first winter holidays


@pytest.fixture(scope="module")
def uci_weeks(uci_csv):
    """Five weeks of real one-minute readings with our field names."""
    frame = pd.read_csv(uci_csv, skiprows=range(1, FIRST_ROW + 1), nrows=(TRAIN_DAYS + 7) * DAY,
                        parse_dates=["date_time"], index_col="date_time")
    frame.columns = [field_for(c) for c in frame.columns]
    return frame


@pytest.fixture(scope="module")
def detector(uci_weeks):
    return SeasonalDetector().fit(uci_weeks.iloc[:TRAIN_DAYS * DAY])


def _first_row_at(frame: pd.DataFrame, after: int, hour: int) -> int:
    hours = frame.index.hour[after:]
    return after + int(np.flatnonzero((hours == hour) & (frame.index.minute[after:] == 0))[0])


def _flagged(detector, frame: pd.DataFrame, first: int, last: int) -> pd.DataFrame:
    result = detector.score(frame).iloc[first:last + 1]
    return result[result["is_anomaly"]]


def test_a_new_always_on_load_is_a_level_shift(uci_weeks, detector):
    frame = uci_weeks.copy()
    start = _first_row_at(frame, TRAIN_DAYS * DAY + 2 * DAY, hour=10)
    inject(frame, "level_shift", start, 360, np.random.default_rng(0))
    clean = _flagged(detector, uci_weeks, start, start + 359)
    flagged = _flagged(detector, frame, start, start + 359)
    assert len(flagged) >= 30 + len(clean), (len(flagged), len(clean))
    assert flagged["kind"].value_counts().index[0] == "level_shift", flagged["kind"].value_counts()
    # a raised minimum at first, then the excess summed over the hours it has stayed on
    assert flagged["top_feature"].str.contains("floor|excess").mean() > 0.9, \
        flagged["top_feature"].value_counts()


def test_a_load_at_a_quiet_hour_is_an_unusual_time_of_use(uci_weeks, detector):
    frame = uci_weeks.copy()
    start = _first_row_at(frame, TRAIN_DAYS * DAY + 4 * DAY, hour=3)
    injection = inject(frame, "unusual_time", start, 60, np.random.default_rng(3))
    assert injection.magnitude > 0
    clean = _flagged(detector, uci_weeks, start, start + 59)
    flagged = _flagged(detector, frame, start, start + 59)
    assert len(flagged) >= 10 + len(clean), (len(flagged), len(clean))
    assert flagged["kind"].value_counts().index[0] == "unusual_time", flagged["kind"].value_counts()
    # added outside the sub-metered circuits, it shows in the unmetered power
    assert flagged["top_feature"].str.startswith("unmetered_kw:").any(), flagged["top_feature"].value_counts()
