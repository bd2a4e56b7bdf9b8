"""Labelled anomalies injected into readings: the ground truth for detection quality.

`inject` changes a frame of readings in place and returns what it did; `inject_many` spreads
several of every kind over a frame without overlap. Magnitudes are drawn relative to the
meter's own level and spread (quantiles of the frame), so they are neither trivial nor
invisible whatever the meter's size, and physics stays consistent where the kind is not about
inconsistency: current follows power and voltage (I = 1000*sqrt(P²+Q²)/V), sub-meters never
exceed the active energy.

The frame has a regular UTC DatetimeIndex and our field names as columns (wattwatch/fields.py);
missing fields are left alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from wattwatch.vocabulary import KINDS

SUB_METERS = ("sub_metering_1_wh", "sub_metering_2_wh", "sub_metering_3_wh")
POWER = "active_power_kw"

# Length in readings (min, max) of each kind: spikes are brief, level shifts last hours.
LENGTHS = {
    "spike": (1, 3), "drop": (15, 60), "outage": (10, 120), "flatline": (30, 180),
    "voltage_sag": (1, 10), "voltage_swell": (1, 10), "inconsistency": (10, 60),
    "level_shift": (180, 480), "unusual_time": (30, 90),
}


@dataclass(frozen=True)
class Injection:
    """One injected anomaly: readings start..end (inclusive) of `field` were changed."""

    kind: str
    start: pd.Timestamp
    end: pd.Timestamp
    magnitude: float | None
    field: str


def _level(frame: pd.DataFrame, column: str, q: float) -> float:
    return float(frame[column].quantile(q))


def _step_minutes(frame: pd.DataFrame) -> float:
    if len(frame.index) < 2:
        return 1.0
    return float(pd.Series(frame.index).diff().median() / pd.Timedelta(minutes=1))


def _follow_power(frame: pd.DataFrame, rows: slice, old_apparent: np.ndarray) -> None:
    """Move current with apparent power (keeping the meter's own residual): physics stays true."""
    if "current_a" not in frame or "voltage_v" not in frame:
        return
    voltage = frame["voltage_v"].to_numpy()[rows]
    delta = 1000.0 * (_apparent(frame, rows) - old_apparent) / voltage
    column = frame.columns.get_loc("current_a")
    frame.iloc[rows, column] = np.maximum(frame.iloc[rows, column].to_numpy() + delta, 0.0)


def _apparent(frame: pd.DataFrame, rows: slice) -> np.ndarray:
    p = frame[POWER].to_numpy()[rows]
    q = frame["reactive_power_kw"].to_numpy()[rows] if "reactive_power_kw" in frame else 0.0
    return np.sqrt(p ** 2 + q ** 2)


def _add_power(frame: pd.DataFrame, rows: slice, added_kw: np.ndarray | float) -> None:
    """An unmetered load: active power (and current) rise, sub-meters unchanged."""
    before = _apparent(frame, rows)
    column = frame.columns.get_loc(POWER)
    frame.iloc[rows, column] = frame.iloc[rows, column].to_numpy() + added_kw
    _follow_power(frame, rows, before)


def _require(frame: pd.DataFrame, kind: str, *columns: str) -> None:
    missing = [c for c in columns if c not in frame]
    if missing:
        raise ValueError(f"inject {kind!r} needs column(s) {', '.join(missing)}; "
                         f"got {', '.join(map(str, frame.columns))}")


def inject(frame: pd.DataFrame, kind: str, start: int, length: int, rng: np.random.Generator,
           *, nominal_voltage_v: float = 230.0) -> Injection:
    """Inject one anomaly of `kind` into rows start..start+length-1 of `frame`, in place."""
    if kind not in KINDS:
        raise ValueError(f"unknown anomaly kind {kind!r}; expected one of {', '.join(KINDS)}")
    if length < 1 or start < 0 or start + length > len(frame):
        raise ValueError(f"rows {start}..{start + length - 1} are outside the frame of "
                         f"{len(frame)} rows")
    rows = slice(start, start + length)
    noise = rng.normal(0.0, 1.0, length)
    magnitude: float | None
    field = POWER

    if kind in ("spike", "level_shift", "unusual_time"):
        _require(frame, kind, POWER)
        median = _level(frame, POWER, 0.5)
        high = _level(frame, POWER, 0.99) - median
        if kind == "spike":  # a surge 20-60% beyond the meter's busiest minutes, briefly
            target = _level(frame, POWER, 0.999) * rng.uniform(1.2, 1.6)
            magnitude = float(max(target - frame[POWER].iloc[rows].mean(), median))
        elif kind == "level_shift":  # a new always-on load (heater, stuck pump)
            magnitude = float(rng.uniform(2.0, 3.5) * median)
        else:  # a day-time load at an hour the meter is usually quiet
            magnitude = float(rng.uniform(0.3, 0.6) * high)
        _add_power(frame, rows, magnitude * (1.0 + 0.03 * noise))
    elif kind == "drop":  # a tripped breaker: every load, even the always-on ones, falls to
        # a fraction of the meter's usual floor; reactive power and sub-meters fall with it
        _require(frame, kind, POWER)
        target = _level(frame, POWER, 0.01) * rng.uniform(0.1, 0.5) * (1.0 + 0.05 * noise)
        before = _apparent(frame, rows)
        factor = target / np.maximum(frame[POWER].to_numpy()[rows], 1e-9)
        magnitude = float(np.mean(target - frame[POWER].to_numpy()[rows]))
        for column in (POWER, "reactive_power_kw", *SUB_METERS):
            if column in frame:
                values = frame[column].to_numpy()[rows] * factor
                frame.iloc[rows, frame.columns.get_loc(column)] = (
                    np.floor(values) if column in SUB_METERS else values)
        _follow_power(frame, rows, before)
    elif kind == "outage":  # the meter is dead: every value missing
        magnitude = None
        field = "all"
        frame.iloc[rows, :] = np.nan
    elif kind == "flatline":  # a frozen meter repeats its last reading
        magnitude = None
        field = "all"
        frame.iloc[rows, :] = frame.iloc[[start - 1 if start else start]].to_numpy()
    elif kind in ("voltage_sag", "voltage_swell"):
        _require(frame, kind, "voltage_v")
        field = "voltage_v"
        ratio = rng.uniform(0.78, 0.87) if kind == "voltage_sag" else rng.uniform(1.12, 1.18)
        target = nominal_voltage_v * ratio * (1.0 + 0.003 * noise)
        magnitude = float(target.mean() - frame["voltage_v"].iloc[rows].mean())
        old_voltage = frame["voltage_v"].to_numpy()[rows].copy()
        frame.iloc[rows, frame.columns.get_loc("voltage_v")] = target
        if "current_a" in frame:  # the same power at another voltage draws another current
            frame.iloc[rows, frame.columns.get_loc("current_a")] *= old_voltage / target
    else:  # inconsistency: a faulty current transformer, or sub-meters above the total
        subs = [c for c in SUB_METERS if c in frame]
        if "current_a" in frame and (not subs or rng.random() < 0.5):
            field = "current_a"
            factor = rng.uniform(1.6, 2.5) if rng.random() < 0.5 else rng.uniform(0.3, 0.6)
            magnitude = float(frame["current_a"].iloc[rows].mean() * (factor - 1.0))
            frame.iloc[rows, frame.columns.get_loc("current_a")] *= factor
        elif subs:
            _require(frame, kind, POWER)
            field = subs[int(rng.integers(len(subs)))]
            energy = frame[POWER].to_numpy()[rows] * 1000.0 / 60.0 * _step_minutes(frame)
            metered = frame[subs].to_numpy()[rows].sum(axis=1)
            # the sub-meters' total ends 10-50% (and a few Wh) above the whole meter's energy
            added = np.maximum(energy - metered, 0.0) + energy * rng.uniform(0.1, 0.5) + 3.0
            magnitude = float(added.mean())
            column = frame.columns.get_loc(field)
            frame.iloc[rows, column] = frame.iloc[rows, column].to_numpy() + np.round(added)
        else:
            raise ValueError("inject 'inconsistency' needs current_a or a sub_metering column")
    index = frame.index
    return Injection(kind, index[start], index[start + length - 1], magnitude, field)


def quiet_hours(frame: pd.DataFrame) -> pd.Index:
    """Hours of the day when the meter is usually at its quietest quarter."""
    by_hour = frame[POWER].groupby(frame.index.hour).median()
    return by_hour[by_hour <= by_hour.quantile(0.25)].index


def _quiet_starts(frame: pd.DataFrame) -> np.ndarray:
    """Rows at hours of the day when the meter is usually at its quietest quarter."""
    return np.flatnonzero(np.isin(frame.index.hour, quiet_hours(frame)))


def _busy_starts(frame: pd.DataFrame, length: int) -> np.ndarray:
    """Rows where the next `length` readings use clearly more than usual (a drop shows there)."""
    ahead = frame[POWER].rolling(length).mean().shift(-(length - 1))
    return np.flatnonzero((ahead > frame[POWER].quantile(0.7)).to_numpy())


def inject_many(frame: pd.DataFrame, rng: np.random.Generator, per_kind: int,
                kinds: tuple[str, ...] = KINDS, min_gap: int = 720,
                *, nominal_voltage_v: float = 230.0, skip: int = 0) -> list[Injection]:
    """Inject `per_kind` anomalies of every kind, non-overlapping and at least `min_gap` rows
    apart, after the first `skip` rows; returns them in time order."""
    taken = np.zeros(len(frame), dtype=bool)
    taken[:skip] = True
    injected = []
    for kind in kinds:
        for _ in range(per_kind):
            low, high = LENGTHS[kind]
            length = int(rng.integers(low, high + 1))
            if kind == "unusual_time" and POWER in frame:
                candidates = _quiet_starts(frame)
            elif kind == "drop" and POWER in frame:
                candidates = _busy_starts(frame, length)
            else:
                candidates = np.arange(len(frame))
            candidates = candidates[(candidates >= 1) & (candidates + length + min_gap < len(frame))]
            tried = rng.permutation(candidates)[:2000]  # a sample is enough to find room
            free = tried[[not taken[max(0, c - min_gap):c + length + min_gap].any()
                          for c in tried]]
            if not len(free):
                raise ValueError(f"no room left for a {kind!r} anomaly of {length} rows with "
                                 f"min_gap {min_gap} in {len(frame)} rows")
            start = int(free[0])
            taken[start:start + length] = True
            injected.append(inject(frame, kind, start, length, rng,
                                   nominal_voltage_v=nominal_voltage_v))
    return sorted(injected, key=lambda injection: injection.start)
