"""`wattwatch db maintain`: chunk sizing, retention, compression policies and rollup refresh for
either license.

Both modes: the chunk interval of new chunks follows the fleet (timescale/chunks.py). apache: no
policies can exist, so this command is the retention job (drop_chunks older than the configured
ages) and refreshes the rollup tables. timescale: background policies do the work; this command
aligns the policies with the configured ages and refreshes the rollups on demand.
Dropping and refreshing a long history go a bounded number of chunks per transaction: each chunk
locks its table and indexes, and the server's lock table holds max_locks_per_transaction locks
per connection, shared by all.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import psycopg

from timescale.chunks import size_chunks
from timescale.migrate import schema_mode
from timescale.rollups import bucket_start, refresh_rollups
from wattwatch.errors import WattwatchError, first_line
from wattwatch.settings import Settings

RETENTION = {"readings": "readings_retention_days", "anomaly_scores": "scores_retention_days"}
# At most this many chunks per transaction when dropping or refreshing a long history: with
# their indexes that is a few hundred locks, well inside PostgreSQL's default lock table.
CHUNKS_PER_STEP = 64
DAY = timedelta(days=1)


def _chunk_times(conn: psycopg.Connection, table: str, column: str, after: datetime,
                 until: datetime) -> list[datetime]:
    """range_start or range_end of the table's chunks, in order, within (after, until]."""
    rows = conn.execute(
        f"SELECT {column} FROM timescaledb_information.chunks WHERE hypertable_schema = 'public'"
        f" AND hypertable_name = %s AND {column} > %s AND {column} <= %s ORDER BY 1",
        (table, after, until))
    return [moment for (moment,) in rows]


def _drop_old_chunks(conn: psycopg.Connection, settings: Settings) -> list[str]:
    done = []
    for table, setting in RETENTION.items():
        days = getattr(settings, setting)
        if days <= 0:
            continue
        cutoff = conn.execute("SELECT now() - make_interval(days => %s)", (days,)).fetchone()[0]
        ends = _chunk_times(conn, table, "range_end", datetime.min.replace(tzinfo=timezone.utc), cutoff)
        dropped = 0
        for older_than in ends[CHUNKS_PER_STEP - 1::CHUNKS_PER_STEP] + [cutoff]:
            with conn.transaction():
                dropped += len(conn.execute(
                    "SELECT drop_chunks(%s, older_than => %s)", (table, older_than)).fetchall())
        done.append(f"{table}: dropped {dropped} chunk(s) older than {days} days")
    return done


def refresh_steps(conn: psycopg.Connection, start: datetime,
                  end: datetime) -> list[tuple[datetime, datetime]]:
    """[start, end] cut at UTC midnights (where hourly and daily buckets both begin) after every
    CHUNKS_PER_STEP chunks of readings, or after a whole day when a day holds more chunks than
    that; the pieces are inclusive and disjoint."""
    starts = _chunk_times(conn, "readings", "range_start", start, end)
    cuts = sorted({bucket_start(moment, DAY) for moment in starts[CHUNKS_PER_STEP::CHUNKS_PER_STEP]}
                  - {bucket_start(start, DAY)})
    bounds = [start, *cuts]
    last = timedelta(microseconds=1)  # the newest instant before the next piece
    return [(a, b - last) for a, b in zip(bounds, bounds[1:])] + [(bounds[-1], end)]


def _refresh(conn: psycopg.Connection, start: datetime, end: datetime) -> str:
    steps = refresh_steps(conn, start, end)
    results = [refresh_rollups(conn, a, b) for a, b in steps]
    window = f"rollups {start.isoformat()} .. {end.isoformat()}"
    if len(steps) == 1:
        return f"{window}: {results[0]}"
    return f"{window} in {len(steps)} steps of up to {CHUNKS_PER_STEP} chunks: last step {results[-1]}"


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
    """First and last reading time, None when there are no readings. Asked chunk by chunk from
    each end, since min(time) over the whole table would plan (and lock) every chunk."""
    ranges = conn.execute(
        "SELECT range_start, range_end FROM timescaledb_information.chunks"
        " WHERE hypertable_schema = 'public' AND hypertable_name = 'readings' ORDER BY 1").fetchall()
    first = next(filter(None, (conn.execute(
        "SELECT min(time) FROM readings WHERE time >= %s AND time < %s", r).fetchone()[0]
        for r in ranges)), None)
    last = next(filter(None, (conn.execute(
        "SELECT max(time) FROM readings WHERE time >= %s AND time < %s", r).fetchone()[0]
        for r in reversed(ranges))), None)
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
        done = size_chunks(conn, settings)
        done += _drop_old_chunks(conn, settings) if mode == "apache" else _align_policies(conn, settings)
        if refresh_all:
            span = readings_span(conn)
            if span is None:
                return done + ["rollups: no readings to roll up"]
            refresh_from, refresh_to = span
        now = datetime.now(timezone.utc)
        start = refresh_from or now - timedelta(days=2)
        end = refresh_to or now
        done.append(_refresh(conn, start, end))
        return done
    except psycopg.Error as exc:
        raise WattwatchError(f"maintenance failed: {first_line(exc)}") from exc
