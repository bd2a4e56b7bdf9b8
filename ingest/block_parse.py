"""Many lines of one file to Columns at once, with exactly the rows and rejects that LineParser
gives line by line.

The lines a block read can vouch for the shape of (the right number of fields, no quote) are
read by pyarrow's CSV reader, in C: numbers as float64 (correctly rounded, as float() reads
them), a cell that is exactly `?` or empty as a gap, the time and meter columns as distinct
texts with codes, so that each distinct time is parsed once. A block where some number does not
read is read again with the numbers as text, and only its plain decimals are converted. A line
that anything here cannot vouch for (a quote, a wrong number of fields, any other cell that is
not a number, a value out of range, a time that is empty, unreadable or in the future, a meter
id that is empty or too long) goes through LineParser, which gives its row or its reject; so
does every line when naive times are not UTC, since the daylight-saving rule depends on the
order of the lines.
"""

from __future__ import annotations

import io
from datetime import datetime
from itertools import repeat
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from ingest.columns import N_FIELDS, Columns, micros
from ingest.parse import METER_ID_MAX_LENGTH, LineParser, Reject
from ingest.timestamps import parse_dayfirst, parse_iso

CACHE = 100_000  # distinct dates or times of day remembered
INVALID = np.iinfo(np.int64).min  # a time that did not parse
MIDNIGHT = "00:00:00"
TEXT = pa.dictionary(pa.int32(), pa.string())
GAPS = ["?", ""]
# Cells float() and pyarrow read alike; any other is left to the line parser.
DECIMAL = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"


class BlockParser:
    def __init__(self, parser: LineParser, naive_is_utc: bool):
        self.parser = parser
        layout = parser.layout
        self.enabled = naive_is_utc
        self.separator = layout.separator
        self.names = [str(column) for column in range(layout.n_columns)]
        texts = [*layout.time_columns, *([] if layout.meter_column is None else [layout.meter_column])]
        self.text_columns = [self.names[column] for column in texts]
        self.number_columns = [self.names[column] for column, *_ in parser.targets]
        self.parse_options = pcsv.ParseOptions(delimiter=self.separator, quote_char=False,
                                               double_quote=False, ignore_empty_lines=False)
        # Date and time of day in two columns: a parser that reads the date and the time of day
        # apart gives date + time of day, so each distinct date and time of day is read once.
        self.split_time = (len(layout.time_columns) == 2
                           and layout.parse_time in (parse_dayfirst, parse_iso))
        # One time column: each stamp read as the date and time of day it splits into (at the
        # first space, or T for ISO), since a file's stamps are mostly distinct and those parts
        # are not; a parser that reads them apart reads the two joined by a space alike.
        self.stamp_separator = {parse_iso: "[ T]", parse_dayfirst: " "}.get(layout.parse_time)
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
        separator = self.separator
        # map() over str's own methods: no Python frame per line
        vouched = np.fromiter(map(str.count, texts, repeat(separator)), np.int64,
                              len(texts)) == len(self.names) - 1
        # quoted fields: split_line's csv reading decides
        vouched &= ~np.fromiter(map(str.__contains__, texts, repeat('"')), bool, len(texts))
        rows = np.flatnonzero(vouched)
        if not len(rows):
            return vouched
        blob = "\n".join(texts if len(rows) == len(texts)
                         else [texts[i] for i in rows.tolist()]).encode()
        table = self._read(blob, pa.float64())
        if table is None:  # some number did not read: again, with the numbers as text
            table = self._read(blob, pa.string())
        ok = np.ones(len(rows), bool)
        for column, position, _name, low, high in self.parser.targets:
            numbers, readable, gaps = _floats(table.column(self.names[column]).combine_chunks())
            ok &= (readable & (low <= numbers) & (numbers <= high)) | gaps  # NaN is out of range
            values[rows, position - 2] = numbers
        stamps = self._times(table)
        ok &= (stamps != INVALID) & (stamps <= micros(latest))
        times[rows] = stamps
        meter_column = self.parser.layout.meter_column
        if meter_column is None:
            meters[self.parser.meter] = 0
        else:
            found, distinct = self._distinct(table, meter_column)
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

    def _read(self, blob: bytes, numbers: pa.DataType) -> pa.Table | None:
        """The vouched lines' used columns, or None where a number cell does not read as
        `numbers`. One block of pyarrow's, so that each text column has one dictionary."""
        types = {name: TEXT for name in self.text_columns} | {name: numbers for name in self.number_columns}
        try:
            return pcsv.read_csv(
                io.BytesIO(blob),
                read_options=pcsv.ReadOptions(column_names=self.names, block_size=len(blob) + 1),
                parse_options=self.parse_options,
                convert_options=pcsv.ConvertOptions(column_types=types, include_columns=list(types),
                                                    null_values=GAPS, strings_can_be_null=False))
        except pa.ArrowInvalid:
            if numbers == pa.string():
                raise
            return None

    def _distinct(self, table: pa.Table, column: int) -> tuple[np.ndarray, list[str]]:
        """Each row's code in a text column, and the distinct texts the codes stand for."""
        return _codes(table.column(self.names[column]).combine_chunks())

    def _times(self, table: pa.Table) -> np.ndarray:
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
            cells = table.column(self.names[columns[0]]).combine_chunks()
            if self.stamp_separator is None:
                found, distinct = _codes(cells)
                return np.array([read(text.strip()) for text in distinct], np.int64)[found]
            return self._split_stamps(cells.dictionary, read)[cells.indices.to_numpy()]
        date_codes, dates = self._distinct(table, columns[0])
        clock_codes, clocks = self._distinct(table, columns[1])
        if not self.split_time:
            pairs, first = np.unique(date_codes.astype(np.int64) * len(clocks) + clock_codes,
                                     return_inverse=True)
            return np.array([read(f"{dates[p // len(clocks)].strip()} {clocks[p % len(clocks)].strip()}".strip())
                             for p in pairs.tolist()], np.int64)[first]
        return self._dated(date_codes, dates, clock_codes, clocks, read)

    def _dated(self, date_codes: np.ndarray, dates: list[str], clock_codes: np.ndarray,
               clocks: list[str], read: Callable[[str], int]) -> np.ndarray:
        """Each row's date plus time of day (given as codes of distinct texts), INVALID where
        either does not read."""
        days = np.array([self._day(text.strip(), read) for text in dates], np.int64)
        offsets = np.array([self._offset(text.strip(), read) for text in clocks], np.int64)
        day, offset = days[date_codes], offsets[clock_codes]
        return np.where((day == INVALID) | (offset == INVALID), INVALID, day + offset)

    def _split_stamps(self, stamps: pa.Array, read: Callable[[str], int]) -> np.ndarray:
        """The times of distinct stamps, each as date plus time of day where it splits in two
        and both read, else read whole."""
        parts = pc.split_pattern_regex(stamps, self.stamp_separator, max_splits=1)
        two = pc.equal(pc.list_value_length(parts), 2).to_numpy(zero_copy_only=False)
        times = np.full(len(stamps), INVALID, np.int64)
        if two.any():
            split = parts.filter(pa.array(two))
            times[two] = self._dated(*_codes(pc.dictionary_encode(pc.list_element(split, 0))),
                                     *_codes(pc.dictionary_encode(pc.list_element(split, 1))), read)
        for index in np.flatnonzero(times == INVALID).tolist():
            times[index] = read(stamps[index].as_py().strip())
        return times

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


def _codes(cells: pa.DictionaryArray) -> tuple[np.ndarray, list[str]]:
    """Each cell's code among the distinct texts, and those."""
    return cells.indices.to_numpy(), cells.dictionary.to_pylist()


def _one_word(text: str) -> bool:
    return bool(text) and len(text.split()) == 1


def _floats(cells: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The numbers float() reads from a column read as float64 or as text, which cells it read,
    and which are gaps (NaN, stored as NULL); any other cell is NaN and left to the line parser."""
    if cells.type == pa.float64():
        gaps = cells.is_null().to_numpy(zero_copy_only=False)
        return cells.fill_null(np.nan).to_numpy(), ~gaps, gaps
    gaps = pc.or_(pc.equal(cells, GAPS[0]), pc.equal(cells, GAPS[1])).to_numpy(zero_copy_only=False)
    plain = pc.match_substring_regex(cells, DECIMAL)
    numbers = pc.cast(pc.if_else(plain, cells, "nan"), pa.float64()).to_numpy()
    return numbers, plain.to_numpy(zero_copy_only=False), gaps
