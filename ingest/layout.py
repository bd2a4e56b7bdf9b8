"""How a delimited file is laid out: separator, header, which column is the time, the meter and
each reading field. Detected from the first lines and overridable from the command line."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable

from ingest.timestamps import PARSERS, detect_parser, strptime_parser
from wattwatch.errors import WattwatchError
from wattwatch.fields import FIELDS, field_for

SEPARATORS = (",", ";", "\t")
TIME_NAMES = ("time", "timestamp", "date_time", "datetime", "ts")
METER_NAMES = ("meter", "meter_id")


@dataclass
class Layout:
    separator: str
    has_header: bool
    n_columns: int
    time_columns: list[int]  # one column, or [date, time] joined with a space
    meter_column: int | None
    fields: dict[int, str]  # column index -> our field
    parse_time: Callable[[str], datetime]
    ignored: list[str] = field(default_factory=list)

    def describe(self) -> str:
        return (f"separator {self.separator!r}, header {'yes' if self.has_header else 'no'}, "
                f"{self.n_columns} columns, fields {sorted(self.fields.values())}")


@dataclass
class LayoutOptions:
    """What the user said about the file; None means detect it."""

    separator: str | None = None
    header: bool | None = None
    time_column: str | None = None  # a name or a 1-based number; "Date+Time" joins two
    meter_column: str | None = None
    mapping: dict[str, str] = field(default_factory=dict)  # column -> field
    time_format: str | None = None  # 'iso', 'dayfirst', 'epoch' or a strptime format


def split_line(line: str, separator: str) -> list[str]:
    """Fields of one line (without its newline); quoted fields are unquoted. Cells keep their
    surrounding spaces: float() ignores them and the parser strips the few text cells."""
    if '"' in line:
        import csv  # rare: only lines with quotes pay for the csv module

        return next(csv.reader([line], delimiter=separator))
    return line.split(separator)


def detect_separator(first_line: str) -> str:
    counts = {sep: first_line.count(sep) for sep in SEPARATORS}
    best = max(counts, key=counts.get)
    if counts[best] == 0:
        raise WattwatchError(f"no separator found in the first line (expected one of , ; tab): {first_line[:80]!r}")
    return best


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _column_index(spec: str, names: list[str] | None, what: str) -> int:
    if spec.isdigit():
        index = int(spec) - 1
        if index < 0:
            raise WattwatchError(f"{what} column numbers start at 1, got {spec}")
        return index
    if names is None:
        raise WattwatchError(f"{what} column {spec!r} given by name but the file has no header; give its number")
    lowered = [n.lower() for n in names]
    if spec.lower() not in lowered:
        raise WattwatchError(f"{what} column {spec!r} is not in the header {names}")
    return lowered.index(spec.lower())


def detect_layout(first_lines: list[str], options: LayoutOptions) -> Layout:
    """The layout of a file from its first lines (header and a data line) and the user's options."""
    if not first_lines:
        raise WattwatchError("the file is empty")
    separator = options.separator or detect_separator(first_lines[0])
    first = [cell.strip() for cell in split_line(first_lines[0], separator)]
    if options.header is None:
        # A header has no numeric cell; a data line has numbers.
        has_header = not any(_is_number(cell) for cell in first)
    else:
        has_header = options.header
    names = first if has_header else None
    n_columns = len(first)

    # Time column(s).
    if options.time_column:
        specs = options.time_column.split("+")
        time_columns = [_column_index(spec, names, "time") for spec in specs]
    elif names:
        lowered = [n.lower() for n in names]
        named = [i for i, n in enumerate(lowered) if n in TIME_NAMES]
        if "date" in lowered and "time" in lowered:  # the UCI layout: Date;Time;...
            time_columns = [lowered.index("date"), lowered.index("time")]
        elif named:
            time_columns = named[:1]
        else:
            raise WattwatchError(f"no time column found in the header {names}; name it with --time-column")
    else:
        time_columns = [0]

    meter_column = None
    if options.meter_column:
        meter_column = _column_index(options.meter_column, names, "meter")
    elif names:
        lowered = [n.lower() for n in names]
        meter_column = next((i for i, n in enumerate(lowered) if n in METER_NAMES), None)

    fields: dict[int, str] = {}
    ignored: list[str] = []
    used = set(time_columns) | ({meter_column} if meter_column is not None else set())
    for column, target in options.mapping.items():
        if target not in FIELDS:
            raise WattwatchError(f"--map {column}={target}: {target!r} is not a field; expected one of {list(FIELDS)}")
        fields[_column_index(column, names, "mapped")] = target
    for index in range(n_columns):
        if index in used or index in fields:
            continue
        name = names[index] if names else None
        target = field_for(name) if name else None
        if target and target not in fields.values():
            fields[index] = target
        else:
            ignored.append(name if name else f"column {index + 1}")
    if not fields:
        raise WattwatchError(
            "no column maps to a reading field: name them like ours or UCI's "
            f"({', '.join(FIELDS)}) or map them with --map COLUMN=FIELD")

    # The time parser, from the first data line.
    data_line = (first_lines[1] if len(first_lines) > 1 else None) if has_header else first_lines[0]
    if options.time_format:
        parse_time = PARSERS.get(options.time_format) or strptime_parser(options.time_format)
    elif data_line is None:
        parse_time = PARSERS["iso"]  # a header and no data: nothing will be parsed
    else:
        cells = [cell.strip() for cell in split_line(data_line, separator)]
        if len(cells) <= max(time_columns):
            raise WattwatchError("no data line to detect the timestamp format from")
        parse_time = detect_parser(" ".join(cells[i] for i in time_columns))
    return Layout(separator, has_header, n_columns, time_columns, meter_column, fields,
                  parse_time, ignored)
