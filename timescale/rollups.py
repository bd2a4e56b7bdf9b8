"""Bring the hourly and daily rollups up to date for a time window, in either license mode.

apache: the rollups are tables that `refresh_readings_rollups()` rewrites for any window.
timescale: they are continuous aggregates with real-time aggregation and refresh policies.
`refresh_continuous_aggregate` refreshes only the buckets wholly inside its window, refuses a
window smaller than one bucket ("refresh window too small") and may be called only by the
view's owner (TimescaleDB 2.19, tsl/src/continuous_aggs/refresh.c). So a window is widened to
whole buckets here, never reaches into the bucket still filling (real-time aggregation shows
it, and materialising it half-full would hide its later readings until the policy ran), and a
role that does not own the views leaves the refresh to the policies.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import psycopg

from timescale.migrate import schema_mode
from timescale.ownership import owns_all

ROLLUPS = {"readings_hourly": timedelta(hours=1), "readings_daily": timedelta(days=1)}
# time_bucket's default origin for timestamptz buckets narrower than a month (a Monday, UTC).
ORIGIN = datetime(2000, 1, 3, tzinfo=timezone.utc)


def bucket_start(moment: datetime, width: timedelta) -> datetime:
    """The start of the bucket of `width` that holds `moment`, as time_bucket() computes it."""
    return ORIGIN + ((moment - ORIGIN) // width) * width


def refresh_window(start: datetime, end: datetime, width: timedelta,
                   now: datetime) -> tuple[datetime, datetime] | None:
    """The whole buckets covering [start, end], stopping before the bucket that holds `now`;
    None when that leaves nothing to refresh. Never narrower than one bucket."""
    first = bucket_start(min(start, end), width)
    last = min(bucket_start(max(start, end), width) + width, bucket_start(now, width))
    return (first, last) if first < last else None


def may_refresh_continuous_aggregates(conn: psycopg.Connection) -> bool:
    """Whether the connected role has its owner's rights on every rollup view."""
    return owns_all(conn, ROLLUPS)


def refresh_rollups(conn: psycopg.Connection, start: datetime, end: datetime, *,
                    live: bool = False) -> str:
    """Recompute rollup buckets overlapping [start, end]; returns what was done, for the log.

    `live`: the rows were just written by a live feed; continuous aggregates then need no
    refresh, real-time aggregation shows the newest buckets and the policies materialise them.
    """
    with conn.transaction():  # committed here, unless the caller holds a transaction open
        if schema_mode(conn) != "timescale":
            rows = conn.execute(
                "SELECT refresh_readings_rollups(%s, %s)", (start, end)
            ).fetchone()[0]
            return f"{rows} rollup rows rewritten"
        if live:
            return "continuous aggregates: real-time aggregation shows live rows"
        if not may_refresh_continuous_aggregates(conn):
            return ("continuous aggregates: left to their refresh policies "
                    "(only the views' owner may refresh them)")
        now = conn.execute("SELECT now()").fetchone()[0]
    windows = {view: refresh_window(start, end, width, now) for view, width in ROLLUPS.items()}
    previous = conn.autocommit
    conn.autocommit = True  # CALL refresh_continuous_aggregate cannot run in a transaction
    try:
        for view, window in windows.items():
            if window is not None:
                conn.execute("CALL refresh_continuous_aggregate(%s, %s, %s)", (view, *window))
    finally:
        conn.autocommit = previous
    done = [f"{view} {w[0].isoformat()} .. {w[1].isoformat()}" for view, w in windows.items() if w]
    return "continuous aggregates refreshed: " + ("; ".join(done) or "nothing before the current bucket")
