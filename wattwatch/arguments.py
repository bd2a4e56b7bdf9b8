"""argparse value types shared by the subcommands, with messages that say what was expected."""

from __future__ import annotations

import argparse
from datetime import datetime, timezone, tzinfo

# How a time option's help describes its values. No command that takes a time also has
# --timezone, so on the command line a time without an offset is always UTC.
TIME_HELP = "a date or date-time, read as UTC, or ISO 8601 with an offset, e.g. 2007-01-01, " \
    "2007-01-01T10:00, '2007-01-01 10:00:00', 2007-01-01T10:00+02:00 or 2007-01-01T10:00Z"


def _expected(zone: tzinfo) -> str:
    return (f"a date (2007-01-01), a date-time read as {zone} (2007-01-01T10:00 or "
            "'2007-01-01 10:00:00') or ISO 8601 with an offset (2007-01-01T10:00+02:00 or ...Z)")


def parse_time(text: str, zone: tzinfo = timezone.utc) -> datetime:
    """An aware datetime from what people type: a date (midnight), a date-time without an offset
    (read in `zone`), or ISO 8601 with an offset or Z (kept as given).

    In a zone with daylight saving, a local time skipped when the clocks go forward, or met
    twice when they go back, is refused (naming the two offsets of a repeated time), never
    guessed. Raises ValueError with a message naming what was expected and what was got.
    """
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"expected {_expected(zone)}, got {text!r}") from None
    if value.tzinfo is not None:
        return value
    first, second = value.replace(tzinfo=zone, fold=0), value.replace(tzinfo=zone, fold=1)
    if first.utcoffset() != second.utcoffset():  # a local time around a daylight-saving change
        if first.astimezone(timezone.utc).astimezone(zone).replace(tzinfo=None) != value:
            raise ValueError(f"{text!r} does not exist in {zone} (the clocks skip it); give a "
                             "local time that exists or an offset")
        raise ValueError(f"{text!r} occurs twice in {zone} (the clocks go back); give an "
                         f"offset: {first.isoformat()} (first) or {second.isoformat()} (second)")
    return first


def timestamp(text: str) -> datetime:
    """argparse type of every time option: parse_time in UTC, as an argparse error when bad."""
    try:
        return parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
