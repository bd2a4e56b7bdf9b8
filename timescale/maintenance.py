"""`wattwatch db maintain`: retention, compression policies and rollup refresh for either license.

apache: no policies can exist, so this command is the retention job (drop_chunks older than the
configured ages) and refreshes the rollup tables. timescale: background policies do the work;
this command aligns the policies with the configured ages and refreshes the rollups on demand.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import psycopg

from timescale.migrate import schema_mode
from timescale.rollups import refresh_rollups
from wattwatch.errors import WattwatchError, first_line
from wattwatch.settings import Settings

RETENTION = {"readings": "readings_retention_days", "anomaly_scores": "scores_retention_days"}


def _drop_old_chunks(conn: psycopg.Connection, settings: Settings) -> list[str]:
    done = []
    for table, setting in RETENTION.items():
        days = getattr(settings, setting)
        if days <= 0:
            continue
        with conn.transaction():
            dropped = conn.execute(
                "SELECT drop_chunks(%s, older_than => make_interval(days => %s))", (table, days)
            ).fetchall()
        done.append(f"{table}: dropped {len(dropped)} chunk(s) older than {days} days")
    return done


def _align_policies(conn: psycopg.Connection, settings: Settings) -> list[str]:
    done = []
    with conn.transaction():
        for table, setting in RETENTION.items():
            days = getattr(settings, setting)
            conn.execute("SELECT remove_retention_policy(%s, if_exists => true)", (table,))
            if days > 0:
                conn.execute(
                    "SELECT add_retention_policy(%s, make_interval(days => %s))", (table, days)
                )
            done.append(f"{table}: retention {f'{days} days' if days else 'off'}")
            conn.execute("SELECT remove_compression_policy(%s, if_exists => true)", (table,))
            if settings.compress_after_days > 0:
                conn.execute(
                    "SELECT add_compression_policy(%s, make_interval(days => %s))",
                    (table, settings.compress_after_days),
                )
            done.append(
                f"{table}: compression after "
                f"{f'{settings.compress_after_days} days' if settings.compress_after_days else 'never'}"
            )
    return done


def readings_span(conn: psycopg.Connection) -> tuple[datetime, datetime] | None:
    """First and last reading time, None when there are no readings."""
    first, last = conn.execute("SELECT min(time), max(time) FROM readings").fetchone()
    return (first, last) if first is not None else None


def maintain(
    conn: psycopg.Connection,
    settings: Settings,
    *,
    refresh_from: datetime | None = None,
    refresh_to: datetime | None = None,
    refresh_all: bool = False,
) -> list[str]:
    """Run the maintenance for the schema's mode; returns one line per action taken."""
    conn.autocommit = True  # each step commits on its own; CALL refresh needs no transaction
    mode = schema_mode(conn)
    if mode is None:
        raise WattwatchError("the database is not migrated yet: run 'wattwatch db migrate' first")
    try:
        done = _drop_old_chunks(conn, settings) if mode == "apache" else _align_policies(conn, settings)
        if refresh_all:
            span = readings_span(conn)
            if span is None:
                return done + ["rollups: no readings to roll up"]
            refresh_from, refresh_to = span
        now = datetime.now(timezone.utc)
        start = refresh_from or now - timedelta(days=2)
        end = refresh_to or now
        done.append(f"rollups {start.isoformat()} .. {end.isoformat()}: {refresh_rollups(conn, start, end)}")
        return done
    except psycopg.Error as exc:
        raise WattwatchError(f"maintenance failed: {first_line(exc)}") from exc
