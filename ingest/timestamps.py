"""Timestamps as files write them, to aware UTC datetimes.

Naive local times take a zone (default UTC). Daylight-saving changes make some local times
ambiguous (they happen twice when clocks go back) or nonexistent (skipped when clocks go
forward). The rule, documented in README: an ambiguous local time is read as its first (summer
time) instant the first time a meter shows it and as its second (winter time) instant when the
same meter shows it again, which is how a logger that follows local time writes the repeated
hour; a nonexistent local time is rejected (`nonexistent_local_time`), never shifted. Both are
counted in the load summary.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Callable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from wattwatch.errors import WattwatchError

UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class NonexistentLocalTime(ValueError):
    """A naive local time that a daylight-saving change skipped."""


def parse_iso(text: str) -> datetime:
    """ISO 8601, with 'T' or a space, optional fraction and offset (2006-12-16 17:24:00)."""
    return datetime.fromisoformat(text)


def parse_dayfirst(text: str) -> datetime:
    """dd/mm/yyyy HH:MM[:SS], the UCI data set's layout (with date and time joined by a space)."""
    date, _, clock = text.partition(" ")
    day, month, year = date.split("/")
    parts = clock.split(":")
    if len(parts) not in (2, 3):
        raise ValueError(f"expected HH:MM[:SS], got {clock!r}")
    return datetime(int(year), int(month), int(day), int(parts[0]), int(parts[1]),
                    int(parts[2]) if len(parts) == 3 else 0)


def parse_epoch(text: str) -> datetime:
    """Seconds since 1970-01-01 UTC, integer or decimal."""
    return EPOCH + timedelta(seconds=float(text))


def strptime_parser(fmt: str) -> Callable[[str], datetime]:
    return lambda text: datetime.strptime(text, fmt)


_fromisoformat = datetime.fromisoformat
PARSERS: dict[str, Callable[[str], datetime]] = {
    "iso": parse_iso, "dayfirst": parse_dayfirst, "epoch": parse_epoch,
}


def detect_parser(sample: str) -> Callable[[str], datetime]:
    """The first built-in parser that reads a sample timestamp, or an error saying what was seen."""
    for parser in (parse_iso, parse_dayfirst, parse_epoch):
        try:
            parser(sample)
            return parser
        except (ValueError, OverflowError):
            continue
    raise WattwatchError(
        f"timestamp {sample!r} is in no known format (ISO 8601, dd/mm/yyyy HH:MM:SS, epoch "
        "seconds); give one with --time-format, e.g. '%d.%m.%Y %H:%M'"
    )


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise WattwatchError(f"unknown time zone {name!r}; expected an IANA name such as Europe/Paris") from None


class LocalTimeResolver:
    """Turns parsed timestamps into aware UTC datetimes, applying the daylight-saving rule."""

    def __init__(self, zone_name: str = "UTC"):
        self.zone = zone(zone_name)
        self.is_utc = self.zone.key in ("UTC", "Etc/UTC")
        self.ambiguous = 0
        self.nonexistent = 0
        self._offsets: dict[tuple, tuple[timedelta, timedelta]] = {}
        self._seen_ambiguous: set[tuple[str, datetime]] = set()

    def converter(self, parse: Callable[[str], datetime]) -> Callable[[str, str], datetime]:
        """(text, meter) -> aware UTC datetime, for timestamps read by `parse`."""
        if self.is_utc and parse is parse_iso:
            def utc_iso(text: str, meter: str) -> datetime:
                try:  # the common case, in one C call instead of parse + replace(tzinfo=)
                    return _fromisoformat(text + "+00:00")
                except ValueError:  # it carries an offset already, or is not ISO at all
                    return self(parse_iso(text), meter)
            return utc_iso
        return lambda text, meter: self(parse(text), meter)

    def __call__(self, value: datetime, meter: str) -> datetime:
        if value.tzinfo is not None:
            return value.astimezone(UTC)
        if self.is_utc:
            return value.replace(tzinfo=UTC)
        hour = (value.year, value.month, value.day, value.hour)
        offsets = self._offsets.get(hour)
        if offsets is None:
            if len(self._offsets) > 10_000:  # one entry per hour of data: keep it bounded
                self._offsets.clear()
            offsets = self._offsets[hour] = (
                value.replace(tzinfo=self.zone, fold=0).utcoffset(),
                value.replace(tzinfo=self.zone, fold=1).utcoffset(),
            )
        first, second = offsets
        if first == second:
            return (value - first).replace(tzinfo=UTC)
        # Offsets differ inside a transition: a repeated hour if the first offset is larger.
        if first < second:
            self.nonexistent += 1
            raise NonexistentLocalTime(
                f"local time {value:%Y-%m-%d %H:%M:%S} does not exist in {self.zone.key} "
                "(skipped by a daylight-saving change)")
        self.ambiguous += 1
        key = (meter, value)
        if key in self._seen_ambiguous:
            return (value - second).replace(tzinfo=UTC)
        self._seen_ambiguous.add(key)
        return (value - first).replace(tzinfo=UTC)
