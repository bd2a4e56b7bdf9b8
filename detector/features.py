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
- `c:pattern`   (primary column) the mean over the pattern window (an eighth of the cycle's
  day) against the profile of that mean (its spread at least half the column's), lower side:
  a stretch shaped unlike the meter's own history at that phase (a peak that did not come, a
  working day shaped like a holiday);
- `unmetered_kw:excess` the unmetered power's excess above its slot's median, in its robust
  spreads less EXCESS_ALLOWANCE a reading, summed since it last came back to that median, over
  at most EXCESS_LEVELS level windows: a new always-on load adds up hour after hour, while
  the house's own loads come and go;
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
from detector.rolling import Prefixes, SlotGroups, robust_scale, rolling, run_lengths, sum_present
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
CLIP = 1e3  # beyond this statistics grow logarithmically: still ordered, never overflowing float32
FLOOR_FRACTION = 1e-3  # of a positive quantity's low end: below it, distances go on linearly
EN50160_BAND = 0.10
SUB_METERS = ("sub_metering_1_wh", "sub_metering_2_wh", "sub_metering_3_wh")
POWER = "active_power_kw"
# Window of each floor statistic, as a multiple of the level window.
FLOORS = {"floor": 1.0, "short_floor": 0.5, "long_floor": LONG_FLOOR}
# A window minimum this many spreads above its profile means a load has stayed on.
RAISED_FLOOR = 3.0
# The pattern window: this share of the cycle's day (of the detected period without one), at
# most MAX_PATTERN_WINDOW readings (the history a live meter's features keep grows with it).
PATTERN_SHARE = 1 / 8
MAX_PATTERN_WINDOW = 360
# The pattern profile's smallest spread, as a share of the column's robust spread.
PATTERN_FLOOR = 0.5
# The unmetered excess: spreads a reading must exceed its slot's median by to add up, and its
# longest window in level windows (three hours of minute readings: a live meter keeps no
# more readings than its floors need).
EXCESS_ALLOWANCE = 2.0
EXCESS_LEVELS = 3


def unmetered_kw(power_kw, metered_wh, step_minutes: float):
    """Active power less the sub-meters' energy over one step: the rest of the house, as the
    UCI data set defines it."""
    return power_kw - metered_wh * 60.0 / 1000.0 / step_minutes


@dataclass
class Features:
    """The statistics (n x features) plus the signed values kinds and explanations need; one
    row per reading scored (of one meter, or of several meters one after the other)."""

    stats: np.ndarray
    names: list[str]
    seasonal_z: np.ndarray   # signed deviation of the primary column from its profile
    windowed_z: dict[str, np.ndarray]  # signed deviation of each windowed statistic (the
    # unmetered excess: its sum), by name
    floor_z: np.ndarray      # signed deviation of the primary column's window minimum
    long_raised: np.ndarray  # a long window's minimum is raised: the load has stayed on
    quiet: np.ndarray        # the reading's slot is one of the quieter half of the cycle
    primary: np.ndarray      # the primary column's values
    expected: np.ndarray     # the primary column's profile median at each reading
    voltage_delta: np.ndarray | None  # voltage minus its profile median [V]
    primary_q999: np.ndarray  # the primary column's 99.9th percentile in training


def _excess(above: np.ndarray, window: int) -> np.ndarray:
    """For each reading (along the last axis), the sum of `above` less EXCESS_ALLOWANCE over
    the readings since `above` was last at or below zero (or missing), at most `window` of
    them, floored at zero: how much and how long a load has stayed on."""
    n = above.shape[-1]
    on = above > 0.0  # NaN is not: a missing reading ends the run, as the series' start does
    steps = np.arange(n)
    first = np.maximum(np.maximum.accumulate(np.where(on, -1, steps), axis=-1) + 1,
                       steps - window + 1)
    sums = np.zeros(above.shape[:-1] + (n + 1,))
    np.cumsum(np.where(on, above - EXCESS_ALLOWANCE, 0.0), axis=-1, out=sums[..., 1:])
    total = sums[..., 1:] - np.take_along_axis(sums, first, -1)
    return np.where(on, np.maximum(total, 0.0), 0.0)


def _apparent_current(values: dict[str, np.ndarray]) -> np.ndarray:
    p = values[POWER]
    q = values.get("reactive_power_kw", 0.0)
    return 1000.0 * np.sqrt(p ** 2 + q ** 2) / values["voltage_v"]


@dataclass
class Tables:
    """The fitted parameters of one or more meters' models, one row per meter, so that their
    readings are scored in one pass (models of one `ContextFeatures.layout()`). Per-meter
    values are (meters, 1) columns, per-slot ones (meters, slots)."""

    profiles: dict[str, tuple[np.ndarray, np.ndarray]]  # medians and scales by name
    spreads: dict[str, np.ndarray]
    diff_scales: dict[str, np.ndarray]
    flat_caps: dict[str, np.ndarray]
    q001: np.ndarray
    q999: np.ndarray
    quiet_slots: np.ndarray
    current: tuple[np.ndarray, np.ndarray, np.ndarray] | None  # offset, center, scale
    nominal_voltage: np.ndarray

    @classmethod
    def of(cls, models: list["ContextFeatures"]) -> "Tables":
        first = models[0]

        def column(get) -> np.ndarray:
            return np.array([[get(model)] for model in models], dtype=float)

        return cls(
            profiles={name: tuple(np.stack([model.profiles_[name][part] for model in models])
                                  for part in (0, 1)) for name in first.profiles_},
            spreads={c: column(lambda model: model.spreads_[c]) for c in first.spreads_},
            diff_scales={c: column(lambda model: model.diff_scales_[c])
                         for c in first.diff_scales_},
            flat_caps={c: column(lambda model: model.flat_caps_[c]) for c in first.flat_caps_},
            q001=column(lambda model: model.primary_q001_),
            q999=column(lambda model: model.primary_q999_),
            quiet_slots=np.stack([model.quiet_slots_ for model in models]),
            current=tuple(column(lambda model: getattr(model, name)) for name in (
                "current_offset_", "current_center_", "current_scale_"))
            if first.has_current_ else None,
            nominal_voltage=column(lambda model: model.nominal_voltage_v),
        )


    def share(self, models: list["ContextFeatures"]) -> None:
        """Make each model's profiles (its largest part) views of its row of the tables."""
        for n, model in enumerate(models):
            model.profiles_ = {name: (medians[n], scales[n])
                               for name, (medians, scales) in self.profiles.items()}


class ContextFeatures:
    """Learns each column's seasonal profile and typical spreads; computes the statistics."""

    pattern_window_ = 0  # none: a model stored before the pattern statistic scores without it
    excess_window_ = 0  # likewise for the unmetered excess

    def __init__(self, nominal_voltage_v: float = 230.0, rolling_window: int = ROLLING_WINDOW):
        self.nominal_voltage_v = nominal_voltage_v
        self.rolling_window = rolling_window

    def fit(self, frame: pd.DataFrame) -> "ContextFeatures":
        self._fit(frame)
        return self

    def fit_transform(self, frame: pd.DataFrame, prefixes: Prefixes | None = None) -> Features:
        """`fit`, then `transform` of the same readings: their cycle slots and rolling
        statistics are computed once for both. `prefixes`: rolling statistics of readings this
        frame is the first part of (or of this frame, kept for a later fit on its first
        part)."""
        prefixes = Prefixes() if prefixes is None else prefixes
        slots = self._fit(frame, prefixes)
        return self._transform(frame, slots, prefixes)

    def _fit(self, frame: pd.DataFrame, prefixes: Prefixes | None = None) -> np.ndarray:
        """Learn from frame; its readings' slots."""
        if len(frame) < 2 * self.rolling_window:
            raise ValueError(f"training needs at least {2 * self.rolling_window} readings, "
                             f"got {len(frame)}")
        self.columns_ = list(frame.columns)
        self.primary_ = POWER if POWER in frame else self.columns_[0]
        self.sub_meters_ = [c for c in SUB_METERS if c in frame] if POWER in frame else []
        self.season_ = Season.choose(frame.index, frame[self.primary_].to_numpy(float))
        self.step_ns_ = self._step_ns(frame.index)
        self.level_window_ = self._level_window(frame.index)
        self.pattern_window_ = self._pattern_window()
        self.excess_window_ = EXCESS_LEVELS * self.level_window_ if self.sub_meters_ else 0
        slots = self.season_.slot_of(frame.index)
        groups = SlotGroups(slots, self.season_.slots)
        n = len(frame)
        values = self._values(frame)
        self.profiles_, self.diff_scales_, self.flat_caps_, self.spreads_ = {}, {}, {}, {}
        for column, rows in self._series(values).items():
            series = rows[0]
            spread = robust_scale(series)
            floor = 0.1 * spread
            self.spreads_[column] = spread
            self.profiles_[column] = groups.profile(series, floor)
            for name, windowed in self._windowed(column, rows, n, spread, prefixes).items():
                windowed = windowed[0]
                # calm is a log: its spreads are in its own unit, not the column's
                own = 0.1 * robust_scale(windowed) if name.endswith(":calm") else floor
                if name.endswith(":pattern"):
                    # a slot whose few training days agreed (a load every Sunday night) would
                    # otherwise make the first day without it as rare as a missing daily peak
                    own = PATTERN_FLOOR * spread
                self.profiles_[name] = groups.profile(windowed, own)
            # Floors keep columns that rarely move (reactive power at 0.000 for hours) from
            # turning their first small move into an enormous z-score.
            self.diff_scales_[column] = max(robust_scale(np.diff(series)), 0.1 * spread)
            if column == UNMETERED:
                continue
            longest = np.nanmax(run_lengths(series))
            # A column flat for most of its training window is flat by nature: not judged on it.
            if longest < 0.5 * len(series):
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
            self.current_offset_ = 0.1 * float(np.nanmedian(_apparent_current(values)))
            mismatch = self._current_mismatch(values, n, self.current_offset_, prefixes)[0]
            self.current_center_ = float(np.nanmedian(mismatch))
            self.current_scale_ = max(robust_scale(mismatch), 0.01)
        return slots

    def layout(self) -> tuple:
        """What models must share to be scored together: everything but per-meter numbers."""
        return (tuple(self.columns_), self.primary_, tuple(self.sub_meters_), self.season_,
                self.step_ns_, self.level_window_, self.rolling_window,
                tuple(sorted(self.flat_caps_)), self.has_current_, tuple(self.profiles_),
                self.excess_window_)

    def _values(self, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        """The model's columns of a frame, each as one row (1 x readings)."""
        return {column: frame[column].to_numpy(float)[None, :] for column in self.columns_}

    def _series(self, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The columns' values, plus the unmetered power when there are sub-meters."""
        series = dict(values)
        if self.sub_meters_:
            step_minutes = self.step_ns_ / 60e9 if self.step_ns_ else 1.0
            metered = sum_present([values[c] for c in self.sub_meters_])
            series[UNMETERED] = unmetered_kw(values[POWER], metered, step_minutes)
        return series

    def _current_mismatch(self, values: dict[str, np.ndarray], k: int, offset,
                          prefixes: Prefixes | None = None) -> np.ndarray:
        """log of measured over computed current, its median over the last few readings: the
        relative error weighs small and large loads alike (a meter's resolution is a larger
        share of a small current), and the median ignores a single reading taken while the
        load changed."""
        ratio = np.log((values["current_a"] + offset) / (_apparent_current(values) + offset))
        # kept by its offset: the same series only for the same model
        name = ("current_a:mismatch", np.asarray(offset).item() if prefixes else None)
        return self._rolling(prefixes, name, ratio, PHYSICS_WINDOW, "median", k)

    def _floor_columns(self) -> list[str]:
        return [self.primary_, UNMETERED] if self.sub_meters_ else [self.primary_]

    def _window(self, floor: str) -> int:
        return max(2, round(FLOORS[floor] * self.level_window_))

    def _windowed(self, column: str, values: np.ndarray, k: int, spread,
                  prefixes: Prefixes | None = None) -> dict[str, np.ndarray]:
        """Rolling statistics of a column over the level window (and multiples) at the last k
        readings, by name."""
        windowed = {}
        if column != UNMETERED:
            windowed[f"{column}:level"] = self._rolling(prefixes, column, values,
                                                        self.level_window_, "mean", k)
        if column == self.primary_:
            # log, so that "ten times calmer" counts as much at a quiet hour as at a busy one
            moves = np.abs(np.diff(values, axis=1, prepend=np.nan))
            mean_move = self._rolling(prefixes, f"{column}:moves", moves,
                                      self._window("long_floor"), "mean", k)
            windowed[f"{column}:calm"] = np.log(mean_move + 0.01 * spread)
            if self.pattern_window_:
                windowed[f"{column}:pattern"] = self._rolling(prefixes, column, values,
                                                              self.pattern_window_, "mean", k)
        if column in self._floor_columns():
            for name in FLOORS:
                windowed[f"{column}:{name}"] = self._rolling(prefixes, column, values,
                                                             self._window(name), "min", k)
        return windowed

    def _rolling(self, prefixes: Prefixes | None, series: str | tuple, values: np.ndarray,
                 window: int, how: str, k: int, **options) -> np.ndarray:
        """`rolling` of the named series, from `prefixes` when given (training: k is the
        whole series), whose series are told apart by name and step (the unmetered power is
        computed with the step)."""
        if prefixes is None:
            return rolling(values, window, how, k, **options)
        return prefixes.rolling((series, self.step_ns_), values, window, how, **options)

    @property
    def excess_lookback(self) -> int:
        """Readings before the first one scored whose slots the unmetered excess reads."""
        return max(self.excess_window_ - 1, 0)

    @staticmethod
    def _outside_range(values: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
        """How far values lie outside [low, high]: for a positive quantity (low > 0) how many
        times below or above as a log ratio, else in multiples of the range. Below a
        thousandth of low (zero, negative) the log goes on as its tangent: a value further
        down never ties with one less far."""
        zero = np.zeros_like(values)
        with np.errstate(divide="ignore", invalid="ignore"):  # the branch not taken
            fraction = values / low
            below = np.where(fraction > FLOOR_FRACTION, -np.log(fraction),
                             -np.log(FLOOR_FRACTION) + (FLOOR_FRACTION - fraction) / FLOOR_FRACTION)
            ratio = np.maximum.reduce([below, np.log(np.maximum(values, 1e-300) / high), zero])
            spread = np.maximum(high - low, 1e-9)
            linear = np.maximum.reduce([(low - values) / spread, (values - high) / spread, zero])
        return np.where(low > 0, ratio, linear)

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

    def _pattern_window(self) -> int:
        """A share of the cycle's day (of the detected period for step-indexed data), at least
        twice the level window."""
        if self.step_ns_ and self.season_.kind in ("day", "week"):
            cycle = pd.Timedelta(days=1).value / self.step_ns_
        elif self.season_.kind == "steps":
            cycle = self.season_.period
        else:
            cycle = 0
        return int(np.clip(round(PATTERN_SHARE * cycle), 2 * self.level_window_,
                           max(MAX_PATTERN_WINDOW, 2 * self.level_window_)))

    @property
    def context_rows(self) -> int:
        """Readings before the first one to score that the features need to be exact."""
        longest_flat = max((self.flat_caps_[c] for c in self.columns_
                            if "flat" in self._statistics(c)), default=0.0)
        longest_window = max(self.pattern_window_, self.excess_window_,
                             *(self._window(name) for name in FLOORS))
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
                if self.pattern_window_:
                    names.append(f"{column}:pattern")
        names += [f"{column}:{name}" for column in self._floor_columns() for name in FLOORS]
        if self.excess_window_:
            names.append(f"{UNMETERED}:excess")
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
        return self._transform(frame, self.season_.slot_of(frame.index))

    def _transform(self, frame: pd.DataFrame, slots: np.ndarray,
                   prefixes: Prefixes | None = None) -> Features:
        missing = [c for c in self.columns_ if c not in frame]
        if missing:
            raise ValueError(f"the model was trained with column(s) {', '.join(missing)} "
                             f"that these readings lack")
        times = epoch_ns(frame.index)[None, :] if self.step_ns_ else None
        return self.compute(Tables.of([self]), np.zeros(1, dtype=np.intp), self._values(frame),
                            times, slots[None, :], prefixes)

    def compute(self, tables: Tables, meters: np.ndarray, values: dict[str, np.ndarray],
                times: np.ndarray | None, slots: np.ndarray,
                prefixes: Prefixes | None = None, k: int | None = None) -> Features:
        """The statistics of the last k readings of each row (k: the width of `slots` unless
        given). `slots` are the cycle slots of the last readings, at least those k: the
        unmetered excess reads those of up to `excess_lookback` readings before them.
        `values` are this layout's columns (a row per meter, older readings first: the context
        the windows need, NaN where a meter has fewer), `times` their epoch nanoseconds,
        `meters` each row's place in `tables`, the parameters of the models; `prefixes`, the
        rolling statistics of these readings kept by `fit_transform` (k is then the whole
        series). Rows of the result: each meter's k readings in turn."""
        history_slots = slots
        k = slots.shape[1] if k is None else k
        slots = slots[:, -k:]

        def at(table: np.ndarray, which: np.ndarray = slots) -> np.ndarray:
            """A per-slot table at each reading's slot (`which`: the slots of other readings)."""
            # a table narrower than the cycle repeats (the hour of the week's scales: 24 hours)
            where = which if table.shape[-1] == self.season_.slots else which % table.shape[-1]
            if len(meters) == 1:  # one meter's series (a backfill): a plain lookup
                return table[meters[0]][where]
            return table[meters[:, None], where]

        def of(column: np.ndarray) -> np.ndarray:  # a per-meter number, as a column
            return column[meters]

        stats, seasonal = [], {}
        window = self.rolling_window
        series = self._series(values)
        for column, rows in series.items():
            now = rows[:, -k:]
            medians, scales = tables.profiles[column]
            z = (now - at(medians)) / at(scales)
            seasonal[column] = z
            for name, rolled in self._windowed(column, rows, k, of(tables.spreads[column]),
                                               prefixes).items():
                medians, scales = tables.profiles[name]
                seasonal[name] = (rolled - at(medians)) / at(scales)
            if column == UNMETERED:
                continue
            spread = np.maximum(self._rolling(prefixes, column, rows, window, "std", k,
                                              min_periods=5, shift=1),
                                0.5 * of(tables.spreads[column]))
            previous = self._rolling(prefixes, column, rows, window, "mean", k, min_periods=5,
                                     shift=1)
            change = np.diff(rows, axis=1, prepend=np.nan)[:, -k:] / of(tables.diff_scales[column])
            computed = {"seasonal": z, "level": seasonal[f"{column}:level"],
                        "rolling": (now - previous) / spread, "change": change}
            for stat in self._statistics(column):
                if stat == "flat":
                    cap = of(tables.flat_caps[column])
                    stats.append(np.minimum(run_lengths(rows)[:, -k:], cap))
                else:
                    stats.append(np.abs(computed[stat]))
            if column == self.primary_:
                # only calmer than usual counts: busier shows in the other statistics
                stats += [self._outside_range(now, of(tables.q001), of(tables.q999)),
                          np.maximum(-seasonal[f"{column}:calm"], 0.0)]
                if self.pattern_window_:
                    # only lower than usual counts: a stretch above it is a load, which the
                    # floors see
                    stats.append(np.maximum(-seasonal[f"{column}:pattern"], 0.0))
        for column in self._floor_columns():
            for name in FLOORS:
                z = seasonal[f"{column}:{name}"]
                # The unmetered power is there to see added loads; a fall in it is the
                # sub-meters' (their own physics check) or the whole meter's (its floor).
                stats.append(np.maximum(z, 0.0) if column == UNMETERED else np.abs(z))
        if self.excess_window_:
            medians = at(tables.profiles[UNMETERED][0], history_slots)
            above = (series[UNMETERED][:, -medians.shape[1]:] - medians) \
                / of(tables.spreads[UNMETERED])
            excess = _excess(above, self.excess_window_)[:, -k:]
            seasonal[f"{UNMETERED}:excess"] = excess
            stats.append(excess)
        if self.has_current_:
            offset, center, scale = map(of, tables.current)
            mismatch = self._current_mismatch(values, k, offset, prefixes)
            stats.append(np.abs((mismatch - center) / scale))
        if self.sub_meters_:
            step_minutes = self.step_ns_ / 60e9 if self.step_ns_ else 1.0
            energy = values[POWER] * 1000.0 / 60.0 * step_minutes
            excess = sum_present([values[c] for c in self.sub_meters_]) - energy
            # as for the current: the median of a few readings, so one glitch is not a fault
            stats.append(np.maximum(self._rolling(prefixes, "sub_metering:excess", excess,
                                                  PHYSICS_WINDOW, "median", k), 0.0))
        voltage_delta = None
        if "voltage_v" in self.columns_:
            voltage = values["voltage_v"][:, -k:]
            outside = np.abs(voltage / of(tables.nominal_voltage) - 1.0) - EN50160_BAND
            stats.append(100.0 * np.maximum(outside, 0.0))
            voltage_delta = (voltage - at(tables.profiles["voltage_v"][0])).reshape(-1)
        stats.append(np.mean([np.isnan(values[c][:, -k:]) for c in self.columns_], axis=0))
        if self.step_ns_:
            steps = np.diff(times, axis=1, prepend=times[:, :1])[:, -k:] / self.step_ns_
            stats.append(np.maximum(np.round(steps) - 1.0, 0.0))
        matrix = np.nan_to_num(np.column_stack([s.reshape(-1) for s in stats]), nan=0.0,
                               posinf=np.finfo(float).max)
        np.maximum(matrix, 0.0, out=matrix)
        beyond = matrix > CLIP
        matrix[beyond] = CLIP * (1.0 + np.log(matrix[beyond] / CLIP))
        # NaN where a window held no value: every comparison with it is false, as with 0
        windowed = {name: z.reshape(-1) for name, z in seasonal.items() if ":" in name}
        long_floors = [windowed[f"{column}:long_floor"] for column in self._floor_columns()]
        return Features(
            stats=matrix.astype(np.float32), names=self.names(),
            seasonal_z=np.nan_to_num(seasonal[self.primary_]).reshape(-1), windowed_z=windowed,
            floor_z=windowed[f"{self.primary_}:floor"],
            long_raised=np.fmax.reduce(long_floors) > RAISED_FLOOR,
            quiet=at(tables.quiet_slots).reshape(-1),
            primary=series[self.primary_][:, -k:].reshape(-1),
            expected=at(tables.profiles[self.primary_][0]).reshape(-1),
            voltage_delta=voltage_delta,
            primary_q999=np.repeat(of(tables.q999)[:, 0], k),
        )
