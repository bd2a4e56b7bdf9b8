"""`wattwatch detect score-csv`: the detector on a CSV file, without a database.

The time column holds timestamps or plain integers (a step index). UCI names and our field
names are recognised (so the physical checks work on a UCI export); any other column is a
plain series. The model fits on the first `train_fraction` of the rows, or on a separate
reference file (`train_file`: same columns, anomaly-free data of the same source), then every
row is scored causally; in a file of timestamps the model is refitted past its age, as `detect
run` retrains (`detector.refits`). An input column named like an output column keeps its values as
`<name>_original`.

Real files are not always in time order (a clock put back, an hour repeated at a clock change,
the same time twice): rows are then scored in time order, rows with the same time in file
order, and written back in the file's order, with one warning that counts them.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from detector.habituation import score_series
from detector.models import DEFAULT_MODEL, make_model
from detector.refits import AgeRule, score_refitting
from wattwatch import logs
from wattwatch.errors import WattwatchError
from wattwatch.fields import field_for
from wattwatch.settings import MODEL_MAX_AGE_DAYS

log = logs.get("detect")

OUTPUT_COLUMNS = ("anomaly_score", "anomaly_evidence", "is_anomaly", "severity", "kind")


def _line(position: int) -> int:
    return position + 2  # 1-based, after the header


# A timestamp's trailing UTC offset ('Z', '+02:00', '-0500', ' UTC'), after a time of day.
UTC_OFFSET = re.compile(r"^(.*\d:\d\d(?::\d\d(?:\.\d+)?)?)\s*(?:Z|UTC|[+-]\d\d(?::?\d\d)?)$")


def _time_index(values: pd.Series, path: Path, column: str) -> pd.Index:
    """A step index when the column is all integers, else timestamps read as the wall-clock
    times they write (a UTC offset is dropped); one clear error if not."""
    numbers = pd.to_numeric(values, errors="coerce")
    if numbers.notna().all() and (numbers == np.floor(numbers)).all():
        index = pd.Index(numbers.astype(np.int64), name=column)
    else:
        times = _clock_times(values)
        bad = np.flatnonzero(times.isna().to_numpy())
        if len(bad):
            raise WattwatchError(
                f"{path}:{_line(bad[0])}: column {column!r} has {values.iloc[bad[0]]!r}; "
                f"expected a timestamp (e.g. 2026-01-31 00:00:00) or an integer step")
        index = pd.DatetimeIndex(times, name=column)
    return index


def _clock_times(values: pd.Series) -> pd.Series:
    """The timestamps as the clock wrote them (NaT where one does not read). The cycles are the
    clock's: across a change of offset (daylight saving) the hours keep their slots, and an
    hour written twice is a time that goes back (time_order)."""
    try:
        times = pd.to_datetime(values, errors="coerce", format="mixed")
        if times.dt.tz is None:
            return times  # no offsets: nothing to strip (the strip costs more than the parse)
    except ValueError:  # offsets that differ within the file
        pass
    local = values.str.strip().str.replace(UTC_OFFSET, r"\1", regex=True)
    return pd.to_datetime(local, errors="coerce", format="mixed")


def time_order(index: pd.Index, path: Path, column: str) -> np.ndarray:
    """Positions of the rows in time order (stable), warning once when that is not file order."""
    steps = np.diff(index.to_numpy())
    zero = np.zeros((), dtype=steps.dtype)
    backwards, repeated = np.flatnonzero(steps < zero), np.flatnonzero(steps == zero)
    if len(backwards) or len(repeated):
        found = [f"{len(rows)} row(s) {what} (first at line {_line(rows[0] + 1)})"
                 for rows, what in ((backwards, "whose time goes backwards"),
                                    (repeated, "with the time of the row before"))
                 if len(rows)]
        log.warning(f"{path}: column {column!r} has {' and '.join(found)}: scored in time order, "
                    f"rows with the same time in file order; the output keeps the file's order")
    return np.argsort(index.to_numpy(), kind="stable")


def read_series(path: Path, time_column: str, columns: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the file as read, the numeric frame to score indexed by time with our field names)."""
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise WattwatchError(f"{path}: no such file") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise WattwatchError(f"{path}: not a readable CSV file: {str(exc).splitlines()[0]}") from None
    wanted = [time_column, *columns]
    absent = [c for c in wanted if c not in table.columns]
    if absent:
        raise WattwatchError(f"{path}: no column {', '.join(map(repr, absent))}; the header has "
                             f"{', '.join(table.columns)}")
    if len(table) == 0:
        raise WattwatchError(f"{path}: no data rows")
    frame = pd.DataFrame(index=_time_index(table[time_column], path, time_column))
    for column in columns:
        text = table[column].str.strip()
        values = pd.to_numeric(text.replace({"": None, "?": None, "nan": None, "NaN": None}),
                               errors="coerce")
        bad = np.flatnonzero(values.isna().to_numpy() & text.ne("").to_numpy()
                             & ~text.isin(["?", "nan", "NaN"]).to_numpy())
        if len(bad):
            raise WattwatchError(f"{path}:{_line(bad[0])}: column {column!r} has "
                                 f"{table[column].iloc[bad[0]]!r}; expected a number "
                                 f"(empty or '?' for a missing value)")
        frame[field_for(column) or column] = values.to_numpy(float)
    return table, frame


def score_csv(source: Path, target: Path, time_column: str, columns: list[str],
              train_fraction: float = 0.15, model: str = DEFAULT_MODEL,
              nominal_voltage_v: float = 230.0, train_file: Path | None = None,
              max_age_days: float = MODEL_MAX_AGE_DAYS) -> pd.DataFrame:
    """Fit on the first train_fraction of `source` (or on all of `train_file`), score every row
    of `source`, write `target`; returns the detector's result frame. In a timestamped file
    the model is refitted once older than `max_age_days` (0: never; `detector.refits`)."""
    if train_file is None and not 0 < train_fraction < 1:
        raise WattwatchError(f"--train-fraction must be between 0 and 1, got {train_fraction!r}")
    if not max_age_days >= 0:
        raise WattwatchError(f"--max-age-days must be 0 or more, got {max_age_days!r}")
    table, frame = read_series(source, time_column, columns)
    order = time_order(frame.index, source, time_column)
    frame = frame.iloc[order]
    if train_file is None:
        training, origin = frame.iloc[:int(len(frame) * train_fraction)], source
        what = f"the first {len(training)} rows"
    else:
        training = read_series(train_file, time_column, columns)[1]
        training = training.iloc[time_order(training.index, train_file, time_column)]
        origin, what = train_file, f"its {len(training)} rows"
    params = {"nominal_voltage_v": nominal_voltage_v} if model == DEFAULT_MODEL else {}

    def fit(readings: pd.DataFrame):
        return make_model(model, **params).fit(readings)

    try:
        detector = fit(training)
    except ValueError as exc:
        raise WattwatchError(f"{origin}: cannot train on {what}: {exc}") from None
    stamped = all(isinstance(f.index, pd.DatetimeIndex) for f in (frame, training))
    if stamped and max_age_days > 0:
        # the refits train on as long a span as the first model did
        rule = AgeRule(pd.Timedelta(days=max_age_days), training.index[-1] - training.index[0])
        result = score_refitting(detector, frame, training.index[-1], rule, fit)
    else:
        result = score_series(detector, frame)
    result = result.iloc[np.argsort(order)]  # back to the file's order
    # An input column with one of our output names (a label column, say) is kept, renamed.
    table = table.rename(columns={c: f"{c}_original" for c in OUTPUT_COLUMNS if c in table})
    # Four decimals: above 90 the score bends towards 100, and two would tie strong evidence.
    table["anomaly_score"] = result["score"].astype(float).round(4).to_numpy()
    table["anomaly_evidence"] = result["evidence"].astype(float).round(3).to_numpy()
    table["is_anomaly"] = result["is_anomaly"].to_numpy()
    table["severity"] = result["severity"].to_numpy()
    table["kind"] = result["kind"].fillna("").to_numpy()
    table.to_csv(target, index=False)
    return result
