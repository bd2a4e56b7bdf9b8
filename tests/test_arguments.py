"""Times as people type them on the command line (wattwatch.arguments)."""

from __future__ import annotations

import argparse
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from wattwatch.arguments import parse_time, timestamp

UTC = timezone.utc
PARIS = ZoneInfo("Europe/Paris")


@pytest.mark.parametrize("text, expected", [
    ("2007-01-01", datetime(2007, 1, 1, tzinfo=UTC)),
    ("2007-01-01T10:00", datetime(2007, 1, 1, 10, tzinfo=UTC)),
    ("2007-01-01 10:00:00", datetime(2007, 1, 1, 10, tzinfo=UTC)),
    ("2007-01-01T10:00:30.250", datetime(2007, 1, 1, 10, 0, 30, 250_000, tzinfo=UTC)),
    (" 2007-01-01T10:00 ", datetime(2007, 1, 1, 10, tzinfo=UTC)),
    ("2007-01-01T10:00Z", datetime(2007, 1, 1, 10, tzinfo=UTC)),
    ("2007-01-01T10:00:00+00:00", datetime(2007, 1, 1, 10, tzinfo=UTC)),
    ("2007-01-01T10:00+02:00", datetime(2007, 1, 1, 8, tzinfo=UTC)),
    ("2007-01-01T10:00-05:30", datetime(2007, 1, 1, 15, 30, tzinfo=UTC)),
])
def test_accepted_forms_are_the_expected_instant(text, expected):
    value = parse_time(text)
    assert value.tzinfo is not None
    assert value == expected


def test_an_offset_is_kept_as_given():
    assert parse_time("2007-01-01T10:00+02:00").utcoffset() == timedelta(hours=2)


def test_a_date_is_midnight():
    value = parse_time("2006-12-16")
    assert (value.hour, value.minute, value.second, value.microsecond) == (0, 0, 0, 0)
    assert value.utcoffset() == timedelta(0)


def test_naive_times_follow_a_zone_with_daylight_saving():
    assert parse_time("2007-01-15 12:00", PARIS) == datetime(2007, 1, 15, 11, tzinfo=UTC)
    assert parse_time("2007-07-15 12:00", PARIS) == datetime(2007, 7, 15, 10, tzinfo=UTC)
    assert parse_time("2007-07-15", PARIS) == datetime(2007, 7, 14, 22, tzinfo=UTC)
    # an explicit offset wins over the zone
    assert parse_time("2007-07-15T12:00Z", PARIS) == datetime(2007, 7, 15, 12, tzinfo=UTC)


def test_a_skipped_local_time_is_refused():
    with pytest.raises(ValueError, match=r"'2007-03-25 02:30' does not exist in Europe/Paris"):
        parse_time("2007-03-25 02:30", PARIS)
    # the minutes either side of the gap are fine
    assert parse_time("2007-03-25 01:59", PARIS) == datetime(2007, 3, 25, 0, 59, tzinfo=UTC)
    assert parse_time("2007-03-25 03:00", PARIS) == datetime(2007, 3, 25, 1, tzinfo=UTC)


def test_a_repeated_local_time_is_refused_with_both_offsets():
    with pytest.raises(ValueError) as error:
        parse_time("2007-10-28 02:30", PARIS)
    message = str(error.value)
    assert "occurs twice in Europe/Paris" in message
    assert "2007-10-28T02:30:00+02:00 (first)" in message
    assert "2007-10-28T02:30:00+01:00 (second)" in message


@pytest.mark.parametrize("text", ["yesterday", "", "2007-13-01", "2007-02-30", "01/02/2007",
                                  "2007-01-01T25:00", "1167609600"])
def test_bad_input_says_what_was_expected_and_what_was_got(text):
    with pytest.raises(argparse.ArgumentTypeError) as error:
        timestamp(text)
    message = str(error.value)
    assert message.startswith("expected a date (2007-01-01), a date-time read as UTC")
    assert "ISO 8601 with an offset" in message
    assert message.endswith(f"got {text!r}")


def test_the_argparse_type_reads_naive_times_as_utc():
    assert timestamp("2007-01-01T10:00") == datetime(2007, 1, 1, 10, tzinfo=UTC)
    assert timestamp("2007-01-01T10:00").utcoffset() == timedelta(0)
