"""The refresh windows handed to refresh_continuous_aggregate, worked out without a server.

TimescaleDB refreshes only the buckets wholly inside a window and refuses one that holds none
("refresh window too small", tsl/src/continuous_aggs/refresh.c); these windows must always hold
whole buckets, cover what was written, and leave the bucket still filling to real-time
aggregation.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from timescale.rollups import bucket_start, refresh_window

HOUR, DAY = timedelta(hours=1), timedelta(days=1)
NOW = datetime(2026, 12, 3, 21, 17, 5, tzinfo=timezone.utc)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def test_a_window_inside_one_bucket_becomes_that_bucket():
    assert refresh_window(at("2026-12-01T10:05"), at("2026-12-01T10:40"), HOUR, NOW) == (
        at("2026-12-01T10:00"), at("2026-12-01T11:00"))
    assert refresh_window(at("2026-12-01T10:05"), at("2026-12-01T10:40"), DAY, NOW) == (
        at("2026-12-01T00:00"), at("2026-12-02T00:00"))


def test_a_single_instant_is_its_bucket():
    moment = at("2026-11-30T23:59:59")
    assert refresh_window(moment, moment, HOUR, NOW) == (at("2026-11-30T23:00"), at("2026-12-01T00:00"))


def test_partial_buckets_at_both_edges_are_included():
    # The first, partial hour of a load was missing from the continuous aggregate.
    assert refresh_window(at("2006-12-16T17:24"), at("2006-12-18T19:03"), HOUR, NOW) == (
        at("2006-12-16T17:00"), at("2006-12-18T20:00"))


def test_the_bucket_still_filling_is_left_out():
    assert refresh_window(NOW - timedelta(minutes=10), NOW, HOUR, NOW) is None
    assert refresh_window(NOW - timedelta(hours=3), NOW + timedelta(minutes=5), HOUR, NOW) == (
        at("2026-12-03T18:00"), at("2026-12-03T21:00"))
    assert refresh_window(NOW - timedelta(hours=3), NOW, DAY, NOW) is None
    assert refresh_window(NOW - timedelta(days=2), NOW, DAY, NOW) == (at("2026-12-01"), at("2026-12-03"))


def test_reversed_bounds_are_the_same_window():
    assert refresh_window(at("2026-12-01T12:00"), at("2026-12-01T10:30"), HOUR, NOW) == (
        at("2026-12-01T10:00"), at("2026-12-01T13:00"))


@pytest.mark.parametrize("width", [HOUR, DAY, timedelta(minutes=15)])
def test_every_window_is_whole_buckets_covering_what_was_written(width):
    start = at("2026-10-01T00:00")
    for step in range(0, 60 * 24 * 20, 337):
        low = start + timedelta(minutes=step)
        for span in (timedelta(0), timedelta(seconds=1), timedelta(minutes=59), timedelta(days=3)):
            high = low + span
            window = refresh_window(low, high, width, NOW)
            assert window is not None
            first, last = window
            assert bucket_start(first, width) == first and bucket_start(last, width) == last
            assert last - first >= width
            assert first <= low and high < last
