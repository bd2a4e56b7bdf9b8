"""The block parser gives exactly the line parser's rows and rejects, line for line, and the
text source splits lines as universal newlines do; no database needed."""

from __future__ import annotations

import io
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from ingest.block_parse import BlockParser
from ingest.columns import Columns
from ingest.layout import LayoutOptions, detect_layout
from ingest.parse import LineParser, Reject
from ingest.ranges import DEFAULT_RANGES
from ingest.source import TextSource
from ingest.timestamps import LocalTimeResolver

UCI = """Date;Time;Global_active_power;Global_reactive_power;Voltage;Global_intensity;Sub_metering_1;Sub_metering_2;Sub_metering_3
16/12/2006;17:24:00;4.216;0.418;234.840;18.400;0.000;1.000;17.000
1/1/2007;00:00:00;2.580;0.136;241.970;10.600;0.000;0.000;0.000
28/4/2007;00:21:00;?;?;?;?;?;?;
28/4/2007;00:22:00;;0.1;240;1;0;0;0
28/4/2007;00:23:00;nan;0.1;240;1;0;0;0
28/4/2007;00:24:00;inf;0.1;240;1;0;0;0
28/4/2007;00:25:00;1_000;0.1;240;1;0;0;0
28/4/2007;00:26:00; 2.5 ;0.1;240;1;0;0;0
28/4/2007;00:27:00;lots;0.1;240;1;0;0;0
28/4/2007;00:28:00;-2;0.1;240;1;0;0;0
28/4/2007;00:29:00;1;0.1;612;1;0;0;0
28/4/2007;00:30:00;1;0.1;240;1;0;0
28/4/2007;00:31:00;1;0.1;240;1;0;0;0;9
31/2/2007;00:32:00;1;0.1;240;1;0;0;0
28/4/2007;24:00:00;1;0.1;240;1;0;0;0
28/4/2007;00:34;1;0.1;240;1;0;0;0
28/4/2007 ;00:35:00;1;0.1;240;1;0;0;0
28/4 /2007;00:36:00;1;0.1;240;1;0;0;0
28/4/2007;00 :37:00;1;0.1;240;1;0;0;0
;00:38:00;1;0.1;240;1;0;0;0
28/4/2007;;1;0.1;240;1;0;0;0
1/1/2099;00:00:00;1;0.1;240;1;0;0;0
28/4/2007;00:41:00;"1";0.1;240;1;0;0;0
28/4/2007;00:42:00;١٢;0.1;240;1;0;0;0
28/4/2007;00:43:00;1e-3;0.1;240;1;0;0;0
28/4/2007;00:44:00;0.30000000000000004;0.1;240;1;0;0;0
28/4/2007;00:45:00;1;0.1;240;1;0;0;0
28/4/2007;00:46:00;1e400;0.1;240;1;0;0;0
"""
# Every number reads as a float in C, though some are out of range or not numbers at all.
READABLE = """time;active_power_kw;voltage_v
2026-01-05T00:00:00Z;+1.5;230
2026-01-05T00:01:00Z;.5;1E+2
2026-01-05T00:02:00Z;5.;-0
2026-01-05T00:03:00Z;nan;230
2026-01-05T00:04:00Z;-NaN;230
2026-01-05T00:05:00Z;Infinity;230
2026-01-05T00:06:00Z;1e400;230
2026-01-05T00:07:00Z;1\t;\t230
2026-01-05T00:08:00Z;1;-230
2026-01-05T00:09:00Z;?;
"""
FLEET = """time,meter_id,active_power_kw,voltage_v
2026-01-05T00:00:00Z,m1,1.5,230.1
2026-01-05T00:00:00Z, m2 ,1.5,230.1
2026-01-05T00:01:00Z,,1.5,230.1
2026-01-05T00:01:00Z,m1,?,
2026-01-05T00:02:00,m1,1.5,230.1
2026-01-05 00:03:00+01:00,m1,1.5,230.1
 2026-01-05T00:04:00Z ,m1,1.5,230.1
yesterday,m1,1.5,230.1
,m1,1.5,230.1
2099-01-01T00:00:00Z,m1,1.5,230.1
2026-01-05T00:05:00Z,""" + "x" * 129 + """,1.5,230.1
2026-01-05T00:06:00Z,m1,1.5,230.1
2026-01-05T00:06:00Z,m1,9.9,230.1
"""
ISO_SPLIT = """date;time;active_power_kw
2026-01-05;00:00:00;1
2026-01-05;00:01:00+02:00;1
2026-01-05;T00:02;1
2026-13-05;00:03:00;1
2026-01-05;00:04:00.5;1
2026-01-05;00:05:00;1
"""
DOTTED = """date;time;active_power_kw
05.01.2026;00:00;1
05.01.2026;00:01;1
05.01.2026; 00:02 ;1
05.01.2026;00:60;1
31.02.2026;00:04;1
05.01.2026;00:05:00;1
05.01.2026;00:06;1
"""
NOW = datetime(2026, 12, 4, tzinfo=timezone.utc)


def by_line(text: str, meter: str | None, options: LayoutOptions | None = None):
    """The line parser's answer for each data line, and the block parser's."""
    lines = text.splitlines()
    layout = detect_layout(lines[:2], options or LayoutOptions())
    parser = LineParser(layout, meter, LocalTimeResolver("UTC"), DEFAULT_RANGES, timedelta(seconds=300))
    numbers = list(range(2, len(lines) + 1))
    expected = [parser.parse(n, line, NOW) for n, line in zip(numbers, lines[1:])]
    asked, parse = [], parser.parse
    parser.parse = lambda number, *args: asked.append(number) or parse(number, *args)
    block_parser = BlockParser(parser, naive_is_utc=True)
    columns, rejects = block_parser.parse(numbers, lines[1:], NOW)
    # the plain lines were read as columns: only the others went line by line
    assert 0 < len(asked) < len(numbers) - 1
    again, rejects_again = block_parser.parse(numbers, lines[1:], NOW)  # from what it remembers
    assert (again.rows(), rejects_again) == (columns.rows(), rejects)
    return expected, columns, rejects


@pytest.mark.parametrize("text, meter, options", [
    (UCI, "uci", None), (FLEET, None, None), (ISO_SPLIT, "m", None),
    (DOTTED, "m", LayoutOptions(time_format="%d.%m.%Y %H:%M")), (READABLE, "m", None),
], ids=["uci-published", "meter-column", "iso-date-and-time", "a-format-of-its-own", "numbers-read-in-c"])
def test_the_block_parser_gives_the_line_parsers_rows_and_rejects(text, meter, options):
    expected, columns, rejects = by_line(text, meter, options)
    rows, lines, _ = columns.rows()
    assert rows == [row for row in expected if not isinstance(row, Reject)]
    assert rejects == [row for row in expected if isinstance(row, Reject)]
    assert sorted(lines + [r.line for r in rejects]) == list(range(2, len(text.splitlines()) + 1))
    assert rows and rejects  # both kinds are exercised


def test_columns_keep_nulls_and_find_duplicate_keys():
    expected, columns, _ = by_line(FLEET, None)
    assert not columns.keys_unique()  # the last two lines share meter and time
    gap = next(row for row in expected if not isinstance(row, Reject) and row[2] is None)
    assert gap[1:] == (datetime(2026, 1, 5, 0, 1, tzinfo=timezone.utc), *[None] * 7)
    part = columns.part(0, 2)
    assert part.keys_unique()
    assert part.spans() == {"m1": (datetime(2026, 1, 5, tzinfo=timezone.utc),) * 2,
                            "m2": (datetime(2026, 1, 5, tzinfo=timezone.utc),) * 2}
    joined = Columns.join([columns.part(0, 2), columns.part(2, len(columns))])
    assert joined.rows() == columns.rows()
    assert joined.copy_payload() == columns.copy_payload()


def test_the_copy_payload_holds_each_row_once_with_nulls_as_minus_one():
    _, columns, _ = by_line(FLEET, None)
    payload = columns.copy_payload()
    assert payload.startswith(b"PGCOPY\n\xff\r\n\x00") and payload.endswith(b"\xff\xff")
    assert payload.count(b"\x00\x09\x00\x00\x00\x02m1") == sum(1 for m in columns.codes.tolist()
                                                                if columns.meters[m] == "m1")
    nulls = int(np.isnan(columns.values).sum())
    assert payload.count(b"\xff\xff\xff\xff") >= nulls > 0


@pytest.mark.parametrize("data", [b"a\nb\r\nc\rd\n\ne", b"a\r\n" * 5 + b"b\r", b"\xef\xbb\xbfx\n\xc3\xa9y\n\xe2\x82\xac"])
@pytest.mark.parametrize("size", [1, 2, 3, 64])
def test_blocks_split_lines_as_universal_newlines_do(tmp_path, data, size):
    path = tmp_path / "lines.txt"
    path.write_bytes(data)
    expected = [line.rstrip("\r\n") for line in io.TextIOWrapper(
        io.BytesIO(data.removeprefix(b"\xef\xbb\xbf")), encoding="utf-8", errors="replace", newline="")]
    with TextSource(path) as source:
        blocks = list(source.blocks(size))
    assert [line for _, lines in blocks for line in lines] == expected
    assert [start for start, _ in blocks] == list(np.cumsum([1] + [len(b) for _, b in blocks[:-1]]))
