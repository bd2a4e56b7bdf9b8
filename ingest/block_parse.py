"""Many lines of one file to Columns at once, with exactly the rows and rejects that LineParser
gives line by line.

The block is split and converted as whole columns: numbers by numpy (the same conversion as
float()), a cell that is exactly `?` or empty as a gap, timestamps once per distinct text. A
line that anything here cannot vouch for (a quote, a wrong number of fields, any other cell
that is not a number, a value out of range, a time that is empty, unreadable or in the
future, a meter id that is empty or too long) goes through LineParser, which gives its row or
its reject; so does every line when naive times are not UTC, since the daylight-saving rule
depends on the order of the lines.
"""

from __future__ import annotations

from datetime import datetime
from typing import Callable
from itertools import repeat

import numpy as np

from ingest.columns import N_FIELDS, Columns, micros
from ingest.parse import METER_ID_MAX_LENGTH, LineParser, Reject
from ingest.timestamps import parse_dayfirst, parse_iso

SAMPLE = 2048  # cells looked at to tell whether a column repeats its values
CACHE = 100_000  # distinct dates or times of day remembered
INVALID = np.iinfo(np.int64).min  # a time that did not parse
MIDNIGHT = "00:00:00"


class BlockParser:
    def __init__(self, parser: LineParser, naive_is_utc: bool):
        self.parser = parser
        layout = parser.layout
        self.enabled = naive_is_utc
        self.separator = layout.separator
        self.n_columns = layout.n_columns
        # Date and time of day in two columns: a parser that reads the date and the time of day
        # apart gives date + time of day, so each distinct date and time of day is read once.
        self.split_time = (len(layout.time_columns) == 2
                           and layout.parse_time in (parse_dayfirst, parse_iso))
        self._days: dict[str, int] = {}
        self._offsets: dict[str, int] = {}
        self._reference: tuple[str, int] | None = None  # the first valid date and its midnight

    def parse(self, numbers: list[int], texts: list[str], latest: datetime) -> tuple[Columns, list[Reject]]:
        """The rows and rejects of the data lines `texts` (numbered `numbers`)."""
        count = len(texts)
        meters: dict[str, int] = {}
        codes = np.zeros(count, np.int32)
        times = np.zeros(count, np.int64)
        values = np.full((count, N_FIELDS), np.nan)
        vouched = np.zeros(count, bool)
        if self.enabled and count:
            vouched = self._columns(texts, latest, meters, codes, times, values)
        rejects, keep = [], np.ones(count, bool)
        for index in np.flatnonzero(~vouched).tolist():
            parsed = self.parser.parse(numbers[index], texts[index], latest)
            if isinstance(parsed, Reject):
                rejects.append(parsed)
                keep[index] = False
                continue
            meter, moment, *fields = parsed
            codes[index] = meters.setdefault(meter, len(meters))
            times[index] = micros(moment)
            values[index] = [np.nan if value is None else value for value in fields]
        if keep.all():
            return Columns(list(meters), codes, times, values, np.asarray(numbers, np.int64),
                           texts), rejects
        kept = np.flatnonzero(keep)
        return Columns(list(meters), codes[kept], times[kept], values[kept],
                       np.asarray(numbers, np.int64)[kept], [texts[i] for i in kept.tolist()]), rejects

    def _columns(self, texts: list[str], latest: datetime, meters: dict[str, int],
                 codes: np.ndarray, times: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Fill the rows of the lines it can vouch for; returns which those are."""
        separator, width = self.separator, self.n_columns
        blob = separator.join(texts)
        # map() over str's own methods: no Python frame per line
        vouched = np.fromiter(map(str.count, texts, repeat(separator)), np.int64, len(texts)) == width - 1
        if '"' in blob:  # quoted fields: split_line's csv reading decides
            vouched &= ~np.fromiter(map(str.__contains__, texts, repeat('"')), bool, len(texts))
        rows = np.flatnonzero(vouched)
        if len(rows) < len(texts):
            blob = separator.join([texts[i] for i in rows.tolist()])
        cells = blob.split(separator) if len(rows) else []
        ok = np.ones(len(rows), bool)
        for column, position, _name, low, high in self.parser.targets:
            numbers, readable, gaps = _floats(cells[column::width])
            ok &= (readable & (low <= numbers) & (numbers <= high)) | gaps  # NaN is out of range
            values[rows, position - 2] = numbers
        stamps = self._times(cells, width)
        ok &= (stamps != INVALID) & (stamps <= micros(latest))
        times[rows] = stamps
        meter_column = self.parser.layout.meter_column
        if meter_column is None:
            meters[self.parser.meter] = 0
        else:
            found, distinct = _factorize(cells[meter_column::width])
            recode = np.full(len(distinct), -1, np.int32)
            for index, text in enumerate(distinct):
                meter = text.strip()
                if meter and len(meter) <= METER_ID_MAX_LENGTH:
                    recode[index] = meters.setdefault(meter, len(meters))
            mapped = recode[found]
            ok &= mapped >= 0
            codes[rows] = mapped
        vouched[rows] = ok
        return vouched

    def _times(self, cells: list[str], width: int) -> np.ndarray:
        """Microseconds since 1970 UTC of each row's time cells, INVALID where they do not read."""
        columns = self.parser.layout.time_columns
        to_utc = self.parser.to_utc
        meter = self.parser.meter or ""  # the zone is UTC: the meter plays no part

        def read(stamp: str) -> int:
            try:
                return micros(to_utc(stamp, meter)) if stamp else INVALID
            except (ValueError, OverflowError):
                return INVALID

        if len(columns) == 1:
            found, distinct = _factorize(cells[columns[0]::width])
            return np.array([read(text.strip()) for text in distinct], np.int64)[found]
        date_codes, dates = _factorize(cells[columns[0]::width])
        clock_codes, clocks = _factorize(cells[columns[1]::width])
        if not self.split_time:
            pairs, first = np.unique(date_codes.astype(np.int64) * len(clocks) + clock_codes,
                                     return_inverse=True)
            return np.array([read(f"{dates[p // len(clocks)].strip()} {clocks[p % len(clocks)].strip()}".strip())
                             for p in pairs.tolist()], np.int64)[first]
        days = np.array([self._day(text.strip(), read) for text in dates], np.int64)
        offsets = np.array([self._offset(text.strip(), read) for text in clocks], np.int64)
        day, offset = days[date_codes], offsets[clock_codes]
        return np.where((day == INVALID) | (offset == INVALID), INVALID, day + offset)

    # A date or time of day holding a space would be cut elsewhere by the joined text's parse:
    # those rows go line by line. Both are remembered across blocks (a file repeats them).

    def _day(self, date: str, read: Callable[[str], int]) -> int:
        day = self._days.get(date)
        if day is None:
            if len(self._days) > CACHE:
                self._days.clear()
            day = self._days[date] = read(f"{date} {MIDNIGHT}") if _one_word(date) else INVALID
            if self._reference is None and day != INVALID:
                self._reference = (date, day)
        return day

    def _offset(self, clock: str, read: Callable[[str], int]) -> int:
        """Microseconds from midnight, read on the first valid date seen."""
        offset = self._offsets.get(clock)
        if offset is None:
            if self._reference is None or not _one_word(clock):
                return INVALID
            date, midnight = self._reference
            moment = read(f"{date} {clock}")
            offset = self._offsets[clock] = INVALID if moment == INVALID else moment - midnight
        return offset


def _factorize(texts: list[str]) -> tuple[np.ndarray, list[str]]:
    """Each text's place among the distinct texts, and those in order of first appearance."""
    distinct = list(dict.fromkeys(texts))
    place = {text: code for code, text in enumerate(distinct)}
    return np.fromiter(map(place.__getitem__, texts), np.intp, len(texts)), distinct


def _one_word(text: str) -> bool:
    return bool(text) and len(text.split()) == 1


def _floats(texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The numbers float() reads from `texts`, which cells it read, and which are gaps (exactly
    `?` or empty: NaN, stored as NULL); any other cell is NaN and left to the line parser. A
    column that repeats its values (a meter's readings mostly do) is converted once per
    distinct text."""
    if len(set(texts[:SAMPLE])) * 2 < min(len(texts), SAMPLE):
        found, distinct = _factorize(texts)
        return tuple(array[found] for array in _distinct_floats(distinct))
    return _distinct_floats(texts)


def _distinct_floats(texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    try:
        return np.array(texts, np.float64), np.ones(len(texts), bool), np.zeros(len(texts), bool)
    except ValueError:
        pass
    cells = np.array(texts, object)
    gaps = (cells == "?") | (cells == "")
    cells[gaps] = "nan"
    try:
        return cells.astype(np.float64), ~gaps, gaps
    except ValueError:
        pass
    numbers, readable = np.full(len(texts), np.nan), np.zeros(len(texts), bool)
    for index, text in enumerate(texts):
        try:
            numbers[index] = float(text)
            readable[index] = True
        except ValueError:
            pass
    return numbers, readable, gaps
