"""Bring the hourly and daily rollups up to date for a time window, in either license mode."""

from __future__ import annotations

from datetime import datetime

import psycopg

from timescale.migrate import schema_mode


def refresh_rollups(conn: psycopg.Connection, start: datetime, end: datetime) -> str:
    """Recompute rollup buckets overlapping [start, end]; returns what was done, for the log.

    apache: the job-maintained tables are rewritten by refresh_readings_rollups().
    timescale: continuous aggregates are refreshed; this must run outside a transaction.
    """
    with conn.transaction():  # committed here, unless the caller holds a transaction open
        if schema_mode(conn) != "timescale":
            rows = conn.execute(
                "SELECT refresh_readings_rollups(%s, %s)", (start, end)
            ).fetchone()[0]
            return f"{rows} rollup rows rewritten"
    previous = conn.autocommit
    conn.autocommit = True
    try:
        for view in ("readings_hourly", "readings_daily"):
            conn.execute("CALL refresh_continuous_aggregate(%s, %s, %s)", (view, start, end))
    finally:
        conn.autocommit = previous
    return "continuous aggregates refreshed"
