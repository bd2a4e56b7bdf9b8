"""Contextual features of readings, computed causally: a reading's features use only that
reading, earlier readings and what `fit` learned from the training window.

Every feature is a non-negative statistic where larger means stranger; `detector.calibration`
turns each into a tail probability. Per series column c:

- `c:seasonal`  |x - median| / MAD-scale of c at the same slot of the cycle (hour of week, hour
  of day, or a detected period);
- `c:level`     the mean of the last hour-ish window against the profile of that mean;
- `c:range`     (primary column only) how far the value lies outside the training window's
  0.1-99.9% range, as a log ratio for a positive quantity such as power;
- `c:floor`, `c:short_floor`, `c:long_floor` (primary column and `unmetered_kw`) the minimum
  over the last hour-ish window, half of it and three times it, against the profile of that
  minimum: a load that stays on lifts it (an hour's use at an unusual time lifts the short
  one, a new always-on load all three), a tripped breaker sinks it (drop);
- `c:calm`      (primary column only) the log of the mean step-to-step move over the long
  floor's window against its profile, counted only when calmer than usual: readings that stopped
  swinging as they do at that time (estimated or smoothed readings, a stalled process)
  without repeating one value exactly;
- `c:rolling`   z-score against the previous ROLLING_WINDOW readings;
- `c:change`    the step-to-step change against the training window's typical change;
- `c:flat`      how many readings in a row the value has not moved (stuck meters); off for a
  column that was flat for most of its training window.

Known secondary fields get the statistics that mean something for them (FIELD_STATISTICS):
current and sub-meters are judged through physics, reactive power and voltage on fewer
statistics; fewer statistics also cost less in the Bonferroni correction of the score.

`unmetered_kw`, when the primary column is active power and sub-meters exist, is the active
power no sub-meter accounts for (P minus the sub-meters' energy of the interval as a mean kW):
a load added outside the metered circuits stands out in it better than in the total, whose
metered appliances (a water heater on night tariff, say) come and go on their own schedule. It
only gets the floors, raised side only.

Physics, when the fields exist: `current_a:physics` (log of I over 1000*sqrt(P²+Q²)/V: relative,
so that a meter's resolution, a larger share of a small current, does not hide a faulty current
transformer at night), `sub_metering:physics` (sub-meters' Wh above the active energy of the
interval), both as the median of the last PHYSICS_WINDOW readings (one reading taken while the
load changed is no fault); `voltage_v:band` (% outside the EN 50160 band, nominal ±10%). Voltage
inside the band follows the grid, not the meter, so it is only judged on the band and on flat
runs. And `missing` (share of the row's values that are missing) and `gap` (readings missing
before this one).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from detector.seasonality import Season, epoch_ns

ROLLING_WINDOW = 30
LONG_FLOOR = 3.0
PHYSICS_WINDOW = 5
MAX_FLAT_RUN = 240
ALL_STATISTICS = ("seasonal", "level", "rolling", "change", "flat")
UNMETERED = "unmetered_kw"
FIELD_STATISTICS = {
    "reactive_power_kw": ("seasonal", "flat"),
    "voltage_v": ("flat",),
    "current_a": (),
    "sub_metering_1_wh": (), "sub_metering_2_wh": (), "sub_metering_3_wh": (),
    UNMETERED: (),  # only its floors
}
CLIP = 1e3  # statistics beyond this carry no more information and would overflow float32
MAD_TO_SIGMA = 1.4826
EN50160_BAND = 0.10
SUB_METERS = ("sub_metering_1_wh", "sub_metering_2_wh", "sub_metering_3_wh")
POWER = "active_power_kw"
# Window of each floor statistic, as a multiple of the level window.
FLOORS = {"floor": 1.0, "short_floor": 0.5, "long_floor": LONG_FLOOR}
# A window minimum this many spreads above its profile means a load has stayed on.
RAISED_FLOOR = 3.0


@dataclass
class Features:
    """The statistics (n x features) plus the signed values kinds and explanations need."""

    stats: np.ndarray
    names: list[str]
    seasonal_z: np.ndarray   # signed deviation of the primary column from its profile
    windowed_z: dict[str, np.ndarray]  # signed deviation of each windowed statistic, by name
    floor_z: np.ndarray      # signed deviation of the primary column's window minimum
    long_raised: np.ndarray  # a long window's minimum is raised: the load has stayed on
    quiet: np.ndarray        # the reading's slot is one of the quieter half of the cycle
    primary: np.ndarray      # the primary column's values
    expected: np.ndarray     # the primary column's profile median at each reading
    voltage_delta: np.ndarray | None  # voltage minus its profile median [V]
    primary_q999: float      # the primary column's 99.9th percentile in training


def _scale(values: np.ndarray) -> float:
    """A robust spread, never zero: MAD-based sigma, floored by a tenth of the std."""
    values = values[np.isfinite(values)]
    if not len(values):
        return 1.0
    mad = MAD_TO_SIGMA * np.median(np.abs(values - np.median(values)))
    return float(max(mad, 0.1 * np.std(values), 1e-9 * (abs(np.median(values)) + 1.0)))


def run_lengths(values: np.ndarray) -> np.ndarray:
    """For each position, how many readings in a row (ending here) have had this exact value."""
    n = len(values)
    if not n:
        return np.zeros(0)
    moved = np.ones(n, dtype=bool)
    moved[1:] = ~(values[1:] == values[:-1])  # NaN never equals: a gap restarts the run
    index = np.arange(n)
    start = np.maximum.accumulate(np.where(moved, index, 0))
    return (index - start + 1).astype(float)


def _per_slot(values: np.ndarray, slots: np.ndarray, n_slots: int, floor: float):
    """Median and MAD-scale of values in each slot; slots never seen get the global ones."""
    frame = pd.DataFrame({"v": values, "s": slots}).dropna()
    median = frame.groupby("s")["v"].median()
    frame["dev"] = (frame["v"] - frame["s"].map(median)).abs()
    mad = frame.groupby("s")["dev"].median() * MAD_TO_SIGMA
    medians = np.full(n_slots, np.nanmedian(values) if frame.size else 0.0)
    scales = np.full(n_slots, floor)
    medians[median.index.to_numpy()] = median.to_numpy()
    scales[mad.index.to_numpy()] = np.maximum(mad.to_numpy(), floor)
    if n_slots == 168:  # hour of week: a few weeks give few samples per slot, so the spread
        # is pooled over the seven days for each hour (the median stays per weekday)
        scales = np.tile(scales.reshape(7, 24).mean(axis=0), 7)
    return medians, scales


def _recent_median(values: np.ndarray) -> np.ndarray:
    """The median of the last PHYSICS_WINDOW values (fewer at the start)."""
    return pd.Series(values).rolling(PHYSICS_WINDOW, min_periods=1).median().to_numpy()


def _apparent_current(frame: pd.DataFrame) -> np.ndarray:
    p = frame[POWER].to_numpy(float)
    q = frame["reactive_power_kw"].to_numpy(float) if "reactive_power_kw" in frame else 0.0
    return 1000.0 * np.sqrt(p ** 2 + q ** 2) / frame["voltage_v"].to_numpy(float)


class ContextFeatures:
    """Learns each column's seasonal profile and typical spreads; computes the statistics."""

    def __init__(self, nominal_voltage_v: float = 230.0, rolling_window: int = ROLLING_WINDOW):
        self.nominal_voltage_v = nominal_voltage_v
        self.rolling_window = rolling_window

    def fit(self, frame: pd.DataFrame) -> "ContextFeatures":
        if len(frame) < 2 * self.rolling_window:
            raise ValueError(f"training needs at least {2 * self.rolling_window} readings, "
                             f"got {len(frame)}")
        self.columns_ = list(frame.columns)
        self.primary_ = POWER if POWER in frame else self.columns_[0]
        self.sub_meters_ = [c for c in SUB_METERS if c in frame] if POWER in frame else []
        self.season_ = Season.choose(frame.index, frame[self.primary_].to_numpy(float))
        self.step_ns_ = self._step_ns(frame.index)
        self.level_window_ = self._level_window(frame.index)
        slots = self.season_.slot_of(frame.index)
        self.profiles_, self.diff_scales_, self.flat_caps_, self.spreads_ = {}, {}, {}, {}
        for column, values in self._series(frame).items():
            spread = _scale(values)
            floor = 0.1 * spread
            self.spreads_[column] = spread
            self.profiles_[column] = _per_slot(values, slots, self.season_.slots, floor)
            for name, windowed in self._windowed(column, values).items():
                # calm is a log: its spreads are in its own unit, not the column's
                own = 0.1 * _scale(windowed) if name.endswith(":calm") else floor
                self.profiles_[name] = _per_slot(windowed, slots, self.season_.slots, own)
            # Floors keep columns that rarely move (reactive power at 0.000 for hours) from
            # turning their first small move into an enormous z-score.
            self.diff_scales_[column] = max(_scale(np.diff(values)), 0.1 * spread)
            if column == UNMETERED:
                continue
            longest = np.nanmax(run_lengths(values))
            # A column flat for most of its training window is flat by nature: not judged on it.
            if longest < 0.5 * len(values):
                # Runs are counted up to 4x the longest seen, at most MAX_FLAT_RUN readings:
                # longer is stuck anyway, and the cap bounds the history a score needs.
                self.flat_caps_[column] = min(4.0 * longest, MAX_FLAT_RUN)
        primary = frame[self.primary_].to_numpy(float)
        self.primary_q001_, self.primary_q999_ = (float(q) for q in
                                                  np.nanquantile(primary, [0.001, 0.999]))
        medians = self.profiles_[self.primary_][0]
        self.quiet_slots_ = medians < np.median(medians)  # none when there is one slot
        self.has_current_ = {POWER, "voltage_v", "current_a"} <= set(frame.columns)
        if self.has_current_:
            self.current_offset_ = 0.1 * float(np.nanmedian(_apparent_current(frame)))
            mismatch = self._current_mismatch(frame)
            self.current_center_ = float(np.nanmedian(mismatch))
            self.current_scale_ = max(_scale(mismatch), 0.01)
        return self

    def _series(self, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        """The columns' values, plus the unmetered power when there are sub-meters."""
        series = {column: frame[column].to_numpy(float) for column in self.columns_}
        if self.sub_meters_:
            step_minutes = self.step_ns_ / 60e9 if self.step_ns_ else 1.0
            metered = frame[self.sub_meters_].sum(axis=1, min_count=1).to_numpy(float)
            series[UNMETERED] = series[POWER] - metered * 60.0 / 1000.0 / step_minutes
        return series

    def _current_mismatch(self, frame: pd.DataFrame) -> np.ndarray:
        """log of measured over computed current, its median over the last few readings: the
        relative error weighs small and large loads alike (a meter's resolution is a larger
        share of a small current), and the median ignores a single reading taken while the
        load changed."""
        c = self.current_offset_
        ratio = np.log((frame["current_a"].to_numpy(float) + c) / (_apparent_current(frame) + c))
        return _recent_median(ratio)

    def _floor_columns(self) -> list[str]:
        return [self.primary_, UNMETERED] if self.sub_meters_ else [self.primary_]

    def _window(self, floor: str) -> int:
        return max(2, round(FLOORS[floor] * self.level_window_))

    def _windowed(self, column: str, values: np.ndarray) -> dict[str, np.ndarray]:
        """Rolling statistics of a column over the level window (and multiples), by name."""
        series = pd.Series(values)
        windowed = {}
        if column != UNMETERED:
            windowed[f"{column}:level"] = series.rolling(self.level_window_,
                                                         min_periods=1).mean().to_numpy()
        if column == self.primary_:
            # log, so that "ten times calmer" counts as much at a quiet hour as at a busy one
            moves = pd.Series(np.abs(np.diff(values, prepend=np.nan)))
            mean_move = moves.rolling(self._window("long_floor"), min_periods=1).mean().to_numpy()
            windowed[f"{column}:calm"] = np.log(mean_move + 0.01 * self.spreads_[column])
        if column in self._floor_columns():
            for name in FLOORS:
                windowed[f"{column}:{name}"] = series.rolling(self._window(name),
                                                              min_periods=1).min().to_numpy()
        return windowed

    def _outside_range(self, values: np.ndarray) -> np.ndarray:
        low, high = self.primary_q001_, self.primary_q999_
        if low > 0:  # a positive quantity: how many times below or above its usual range
            ratio = values / low
            below = -np.log(np.maximum(ratio, 1e-3))
            return np.maximum.reduce([below, np.log(np.maximum(values, 1e-300) / high),
                                      np.zeros_like(values)])
        spread = max(high - low, 1e-9)
        return np.maximum.reduce([(low - values) / spread, (values - high) / spread,
                                  np.zeros_like(values)])

    @staticmethod
    def _step_ns(index: pd.Index) -> int | None:
        if isinstance(index, pd.DatetimeIndex) and len(index) > 1:
            return int(np.median(np.diff(epoch_ns(index))))
        return None

    def _level_window(self, index: pd.Index) -> int:
        """About an hour of readings (a twenty-fourth of the cycle for step-indexed data)."""
        if self.step_ns_:
            per_hour = pd.Timedelta(hours=1).value / self.step_ns_
        else:
            per_hour = self.season_.period / 24
        return int(np.clip(round(per_hour), 6, 120))

    @property
    def context_rows(self) -> int:
        """Readings before the first one to score that the features need to be exact."""
        longest_flat = max((self.flat_caps_[c] for c in self.columns_
                            if "flat" in self._statistics(c)), default=0.0)
        longest_window = max(self._window(name) for name in FLOORS)
        return int(max(self.rolling_window, longest_window + 1, longest_flat)) + 1

    def _statistics(self, column: str) -> list[str]:
        chosen = ALL_STATISTICS if column == self.primary_ else \
            FIELD_STATISTICS.get(column, ALL_STATISTICS)
        return [stat for stat in chosen if stat != "flat" or column in self.flat_caps_]

    def names(self) -> list[str]:
        names = []
        for column in self.columns_:
            names += [f"{column}:{stat}" for stat in self._statistics(column)]
            if column == self.primary_:
                names += [f"{column}:range", f"{column}:calm"]
        names += [f"{column}:{name}" for column in self._floor_columns() for name in FLOORS]
        if self.has_current_:
            names.append("current_a:physics")
        if self.sub_meters_:
            names.append("sub_metering:physics")
        if "voltage_v" in self.columns_:
            names.append("voltage_v:band")
        names.append("missing")
        if self.step_ns_:
            names.append("gap")
        return names

    def transform(self, frame: pd.DataFrame) -> Features:
        missing = [c for c in self.columns_ if c not in frame]
        if missing:
            raise ValueError(f"the model was trained with column(s) {', '.join(missing)} "
                             f"that these readings lack")
        slots = self.season_.slot_of(frame.index)
        stats, seasonal = [], {}
        window = self.rolling_window
        for column, values in self._series(frame).items():
            medians, scales = self.profiles_[column]
            z = (values - medians[slots]) / scales[slots]
            seasonal[column] = z
            for name, rolled in self._windowed(column, values).items():
                medians, scales = self.profiles_[name]
                seasonal[name] = (rolled - medians[slots]) / scales[slots]
            if column == UNMETERED:
                continue
            previous = pd.Series(values).shift(1).rolling(window, min_periods=5)
            spread = np.maximum(previous.std().to_numpy(), 0.5 * self.spreads_[column])
            rolling = (values - previous.mean().to_numpy()) / spread
            change = np.diff(values, prepend=np.nan) / self.diff_scales_[column]
            computed = {"seasonal": z, "level": seasonal[f"{column}:level"],
                        "rolling": rolling, "change": change}
            for stat in self._statistics(column):
                if stat == "flat":
                    stats.append(np.minimum(run_lengths(values), self.flat_caps_[column]))
                else:
                    stats.append(np.abs(computed[stat]))
            if column == self.primary_:
                # only calmer than usual counts: busier shows in the other statistics
                stats += [self._outside_range(values),
                          np.maximum(-seasonal[f"{column}:calm"], 0.0)]
        for column in self._floor_columns():
            for name in FLOORS:
                z = seasonal[f"{column}:{name}"]
                # The unmetered power is there to see added loads; a fall in it is the
                # sub-meters' (their own physics check) or the whole meter's (its floor).
                stats.append(np.maximum(z, 0.0) if column == UNMETERED else np.abs(z))
        if self.has_current_:
            mismatch = (self._current_mismatch(frame) - self.current_center_) / self.current_scale_
            stats.append(np.abs(mismatch))
        if self.sub_meters_:
            step_minutes = self.step_ns_ / 60e9 if self.step_ns_ else 1.0
            energy = frame[POWER].to_numpy(float) * 1000.0 / 60.0 * step_minutes
            excess = frame[self.sub_meters_].sum(axis=1, min_count=1).to_numpy(float) - energy
            # as for the current: the median of a few readings, so one glitch is not a fault
            stats.append(np.maximum(_recent_median(excess), 0.0))
        voltage_delta = None
        if "voltage_v" in self.columns_:
            voltage = frame["voltage_v"].to_numpy(float)
            outside = np.abs(voltage / self.nominal_voltage_v - 1.0) - EN50160_BAND
            stats.append(100.0 * np.maximum(outside, 0.0))
            voltage_delta = voltage - self.profiles_["voltage_v"][0][slots]
        stats.append(frame[self.columns_].isna().mean(axis=1).to_numpy(float))
        if self.step_ns_:
            times = epoch_ns(frame.index)
            steps = np.diff(times, prepend=times[:1]) / self.step_ns_
            stats.append(np.maximum(np.round(steps) - 1.0, 0.0))
        matrix = np.nan_to_num(np.column_stack(stats), nan=0.0, posinf=CLIP)
        np.clip(matrix, 0.0, CLIP, out=matrix)
        primary = frame[self.primary_].to_numpy(float)
        windowed = {name: np.nan_to_num(z) for name, z in seasonal.items() if ":" in name}
        long_floors = [windowed[f"{column}:long_floor"] for column in self._floor_columns()]
        return Features(
            stats=matrix.astype(np.float32), names=self.names(),
            seasonal_z=np.nan_to_num(seasonal[self.primary_]), windowed_z=windowed,
            floor_z=windowed[f"{self.primary_}:floor"],
            long_raised=np.maximum.reduce(long_floors) > RAISED_FLOOR,
            quiet=self.quiet_slots_[slots], primary=primary,
            expected=self.profiles_[self.primary_][0][slots], voltage_delta=voltage_delta,
            primary_q999=self.primary_q999_,
        )
