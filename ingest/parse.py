"""One input line to a reading row, or to a reject saying exactly what was wrong with it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from ingest.layout import Layout, split_line
from ingest.timestamps import LocalTimeResolver, NonexistentLocalTime
from wattwatch.fields import FIELDS

FIELD_NAMES = list(FIELDS)
MISSING = ("", "?")
# Row layout shared with the writer: (meter_id, time, *FIELDS).
COLUMNS = ["meter_id", "time", *FIELD_NAMES]
# The rule of the meters table's CHECK (migration 0001): not empty, at most 128 characters.
METER_ID_MAX_LENGTH = 128


def meter_id_problem(meter: str) -> str | None:
    """Why `meter` cannot be a meter id (the schema's CHECK on meters.meter_id), or None."""
    if not meter:
        return "the meter id is empty"
    if len(meter) > METER_ID_MAX_LENGTH:
        return (f"meter id of {len(meter)} characters, longer than {METER_ID_MAX_LENGTH}: "
                f"{meter[:40]!r}...")
    return None


def value_problem(name: str, value: float, text: str, low: float, high: float) -> tuple[str, str]:
    """(reason, detail) of a value that failed the range check `low <= value <= high`, which
    also fails for NaN and infinities: those are told apart here."""
    if not math.isfinite(value):
        return "non_numeric", f"{name}: expected a finite number, got {text!r}"
    return "out_of_range", f"{name}: {value:g} {FIELDS[name]} is outside [{low:g}, {high:g}]"


def future_detail(moment: datetime, latest: datetime) -> str:
    return f"time {moment.isoformat()} is later than {latest.isoformat(timespec='seconds')}"


@dataclass(frozen=True)
class Reject:
    line: int | None
    raw: str
    reason: str
    detail: str
    meter: str | None = None


class LineParser:
    """Parses lines of one file laid out as `layout`."""

    def __init__(self, layout: Layout, meter: str | None, resolver: LocalTimeResolver,
                 ranges: dict[str, tuple[float, float]], max_future: timedelta):
        if layout.meter_column is None and not meter:
            raise ValueError("a file without a meter column needs a fixed meter id")
        self.layout = layout
        self.meter = meter
        # Rejects of a file with a fixed meter all carry it: it is part of their key.
        self.fixed_meter = meter if layout.meter_column is None else None
        self.to_utc = resolver.converter(layout.parse_time)
        self.max_future = max_future
        # (column, position in the row, field, low, high) for each mapped column.
        self.targets = [(column, 2 + FIELD_NAMES.index(name), name, *ranges[name])
                        for column, name in sorted(layout.fields.items())]

    def latest_allowed(self) -> datetime:
        return datetime.now(timezone.utc) + self.max_future

    def parse(self, number: int, raw: str, latest: datetime) -> tuple | Reject:
        """The row for line `number`, or why it was rejected. `latest`: newest time accepted."""
        layout = self.layout
        cells = split_line(raw, layout.separator)
        if len(cells) != layout.n_columns:
            return Reject(number, raw, "column_count",
                          f"expected {layout.n_columns} fields separated by {layout.separator!r}, got {len(cells)}",
                          self.fixed_meter)
        if layout.meter_column is None:
            meter = self.meter
        else:
            meter = cells[layout.meter_column].strip()
            if not meter:
                return Reject(number, raw, "missing_meter", "the meter column is empty")
            if len(meter) > METER_ID_MAX_LENGTH:
                return Reject(number, raw, "invalid_meter", meter_id_problem(meter))
        stamp = (cells[layout.time_columns[0]] if len(layout.time_columns) == 1 else
                 " ".join(cells[i].strip() for i in layout.time_columns)).strip()
        if not stamp:
            return Reject(number, raw, "missing_time", "the time is empty", meter)
        try:
            moment = self.to_utc(stamp, meter)
        except NonexistentLocalTime as exc:
            return Reject(number, raw, "nonexistent_local_time", str(exc), meter)
        except (ValueError, OverflowError):
            return Reject(number, raw, "unparseable", f"time: cannot read {stamp!r} as a timestamp", meter)
        if moment > latest:
            return Reject(number, raw, "future_timestamp", future_detail(moment, latest), meter)
        row = [meter, moment, None, None, None, None, None, None, None]
        for column, position, name, low, high in self.targets:
            text = cells[column]
            try:
                value = float(text)
            except ValueError:
                if text.strip() in MISSING:
                    continue  # a gap: stored as NULL, never invented
                return Reject(number, raw, "non_numeric", f"{name}: expected a number, got {text!r}", meter)
            if not low <= value <= high:
                return Reject(number, raw, *value_problem(name, value, text, low, high), meter)
            row[position] = value
        return tuple(row)
