"""Chunk intervals of `readings` and `anomaly_scores`, sized to the rows a chunk should hold.

Every chunk is a table: a query, TRUNCATE or drop_chunks over N chunks locks N tables and their
indexes, and the planner weighs each one. A fixed one-day chunk suits a thousand one-minute
meters (1.44 M rows a day) but gives one meter 1,440 rows per chunk, 1,442 chunks for the UCI
household's four years. So the interval is the time in which the fleet writes
WATTWATCH_CHUNK_TARGET_ROWS rows: meters (the registered ones, or WATTWATCH_EXPECTED_METERS when
more are coming) times 86,400 / WATTWATCH_READING_INTERVAL_SECONDS rows a day, or the rate of
the newest ended chunk when the data shows more (meters that read faster than declared).
TimescaleDB's guidance is that the indexes of the chunks being written fit in about a quarter of
the server's memory.

set_chunk_time_interval (Apache-licensed code, the same under both licenses) only shapes chunks
created afterwards: the chunks already stored keep their range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import timedelta

import psycopg

from timescale.ownership import owns_all
from wattwatch.settings import Settings

# One score per reading: both tables grow at the same rate, so they share the interval.
SIZED = ("readings", "anomaly_scores")
# Below a day, steps that divide a day, so that chunk boundaries fall on whole hours and days.
STEPS = [timedelta(hours=h) for h in (12, 8, 6, 4, 3, 2, 1)] + [timedelta(minutes=m) for m in (30, 15)]
SHORTEST = STEPS[-1]
# Retention and compression act on whole chunks, so data outlives the configured ages by up to
# one interval; the cap bounds that for small fleets, whose chunks stay small anyway.
LONGEST = timedelta(days=30)
DAY_SECONDS = 86_400
OBSERVED_MARGIN = 1.25
UNITS = (("day", DAY_SECONDS), ("hour", 3_600), ("minute", 60), ("second", 1))


@dataclass(frozen=True)
class ChunkPlan:
    meters: int
    reading_seconds: float
    observed_rows_per_day: float | None  # in the newest ended chunk, once it has been analysed
    interval: timedelta

    @property
    def expected_rows_per_day(self) -> float:
        return self.meters * DAY_SECONDS / self.reading_seconds

    @property
    def rows_per_day(self) -> float:
        """The fleet's rate, or the rate the data shows when that is clearly higher (faster
        meters); ANALYZE's row count is an estimate, so a rate near the declared one is not news."""
        expected, observed = self.expected_rows_per_day, self.observed_rows_per_day or 0
        return observed if observed > OBSERVED_MARGIN * expected else expected

    @property
    def rows_per_chunk(self) -> int:
        return round(self.rows_per_day * self.interval.total_seconds() / DAY_SECONDS)

    def describe(self) -> str:
        if self.rows_per_day > self.expected_rows_per_day:
            basis = f"{self.rows_per_day:,.0f} rows a day in the newest ended chunk"
        else:
            basis = f"{self.meters:,} meter(s), a reading every {self.reading_seconds:g} s"
        return f"{basis}: about {self.rows_per_chunk:,} rows per chunk"


def interval_text(interval: timedelta) -> str:
    """'30 days', '8 hours', '15 minutes': the interval in its largest whole unit."""
    seconds = round(interval.total_seconds())
    unit, size = next((unit, size) for unit, size in UNITS if seconds % size == 0)
    return f"{seconds // size} {unit}{'' if seconds == size else 's'}"


def chunk_interval(rows_per_day: float, target_rows: int) -> timedelta:
    """The longest tidy interval (whole days, or a step that divides a day) whose chunks hold at
    most `target_rows` at this rate, between 15 minutes and 30 days."""
    ideal = timedelta(days=target_rows / rows_per_day)
    if ideal >= LONGEST:
        return LONGEST
    if ideal >= timedelta(days=1):
        return timedelta(days=math.floor(ideal / timedelta(days=1)))
    return next((step for step in STEPS if step <= ideal), SHORTEST)


def registered_meters(conn: psycopg.Connection) -> int:
    """Meters in `meters`; 0 before the migration that creates the table."""
    if conn.execute("SELECT to_regclass('public.meters')").fetchone()[0] is None:
        return 0
    return conn.execute("SELECT count(*) FROM meters").fetchone()[0]


def observed_rows_per_day(conn: psycopg.Connection) -> float | None:
    """Rows a day in the newest chunk of readings whose range has ended, from the row count that
    ANALYZE (or autovacuum) keeps in pg_class; None before there is such a count."""
    if conn.execute("SELECT to_regclass('public.readings')").fetchone()[0] is None:
        return None
    row = conn.execute(
        """SELECT c.reltuples, extract(epoch FROM ch.range_end - ch.range_start)
           FROM timescaledb_information.chunks ch
           JOIN pg_class c ON c.oid = format('%I.%I', ch.chunk_schema, ch.chunk_name)::regclass
           WHERE ch.hypertable_schema = 'public' AND ch.hypertable_name = 'readings'
             AND ch.range_end <= now()
           ORDER BY ch.range_end DESC LIMIT 1""").fetchone()
    if row is None or row[0] <= 0:  # -1: never analysed; 0: empty, or compressed
        return None
    rows, seconds = row
    return rows * DAY_SECONDS / float(seconds)


def plan_chunks(conn: psycopg.Connection, settings: Settings) -> ChunkPlan:
    """The interval for the fleet (the registered meters or the expected ones, whichever are
    more), or for the data's own rate when that is higher."""
    plan = ChunkPlan(meters=max(registered_meters(conn), settings.expected_meters, 1),
                     reading_seconds=settings.reading_interval_seconds,
                     observed_rows_per_day=observed_rows_per_day(conn), interval=LONGEST)
    return replace(plan, interval=chunk_interval(plan.rows_per_day, settings.chunk_target_rows))


def current_intervals(conn: psycopg.Connection) -> dict[str, timedelta]:
    rows = conn.execute(
        "SELECT hypertable_name, time_interval FROM timescaledb_information.dimensions"
        " WHERE hypertable_schema = 'public' AND hypertable_name = ANY(%s) AND dimension_number = 1",
        (list(SIZED),))
    return dict(rows.fetchall())


def size_chunks(conn: psycopg.Connection, settings: Settings) -> list[str]:
    """Set the interval of new chunks from the current plan; one line per table for the log."""
    with conn.transaction():
        plan = plan_chunks(conn, settings)
        may_alter = owns_all(conn, SIZED)
        done = []
        for table, interval in current_intervals(conn).items():
            current, planned = interval_text(interval), interval_text(plan.interval)
            if interval == plan.interval:
                done.append(f"{table}: chunk interval {current} ({plan.describe()})")
            elif may_alter:
                conn.execute("SELECT set_chunk_time_interval(%s, %s::interval)", (table, plan.interval))
                done.append(f"{table}: chunk interval {current} -> {planned} for new chunks; stored "
                            f"chunks keep theirs ({plan.describe()})")
            else:
                done.append(f"{table}: chunk interval {current} left as is, {planned} planned "
                            "(only the table's owner may change it)")
    return done
