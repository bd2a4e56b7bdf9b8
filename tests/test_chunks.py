"""Chunks sized to the data: the interval chosen from the fleet, set by migration 0041 and kept
by `db maintain`; TRUNCATE and `db maintain` on a four-year one-minute history, and on a
database that still has the one-day chunks of before."""

from __future__ import annotations

import re
import shutil
from datetime import timedelta

import psycopg
import pytest

from tests.conftest import settings_for
from tests.test_cli import run_cli
from timescale.chunks import (LONGEST, SHORTEST, ChunkPlan, chunk_interval, interval_text,
                              size_chunks)
from timescale.connect import connect_url
from timescale.maintenance import CHUNKS_PER_STEP
from timescale.migrate import MIGRATIONS_DIR, migrate

# The UCI household's span: 2,075,259 one-minute readings over 1,442 days.
UCI_FIRST, UCI_LAST = "2006-12-16 17:24+00", "2010-11-26 21:02+00"
UCI_ROWS = 2_075_259
ONE_MINUTE_METERS_PER_DAY = 1_440


def intervals(conn) -> dict[str, timedelta]:
    return dict(conn.execute(
        "SELECT hypertable_name, time_interval FROM timescaledb_information.dimensions"
        " WHERE hypertable_schema = 'public'").fetchall())


def chunk_count(conn, table: str = "readings") -> int:
    return conn.execute("SELECT count(*) FROM timescaledb_information.chunks"
                        " WHERE hypertable_name = %s", (table,)).fetchone()[0]


def locked_relations(conn) -> int:
    return conn.execute("SELECT count(DISTINCT relation) FROM pg_locks"
                        " WHERE pid = pg_backend_pid() AND relation IS NOT NULL").fetchone()[0]


@pytest.mark.parametrize(("meters", "expected"), [
    (1, LONGEST),                      # 1,440 rows a day: capped at 30 days
    (100, LONGEST),                    # 144,000 a day: 34.7 days, capped
    (1_000, timedelta(days=3)),        # 1.44 M a day: 3.47 days, down to whole days
    (3_472, timedelta(days=1)),        # 5.0 M a day: exactly one day
    (10_000, timedelta(hours=8)),      # 14.4 M a day: 8.3 hours, down to a step dividing a day
    (100_000, timedelta(minutes=30)),  # 144 M a day: 50 minutes
    (1_000_000, SHORTEST),             # 1.44 G a day: 5 minutes, raised to the shortest step
])
def test_interval_holds_at_most_the_target_rows_on_a_tidy_step(meters, expected):
    rows_per_day = meters * ONE_MINUTE_METERS_PER_DAY
    interval = chunk_interval(rows_per_day, 5_000_000)
    assert interval == expected
    if SHORTEST < interval < LONGEST:
        assert rows_per_day * (interval / timedelta(days=1)) <= 5_000_000
    assert timedelta(days=1) % interval == timedelta(0) or interval % timedelta(days=1) == timedelta(0)


def test_the_data_overrules_the_declared_rate_only_when_clearly_above_it():
    declared = dict(meters=10, reading_seconds=60, interval=LONGEST)  # 14,400 rows a day
    assert ChunkPlan(observed_rows_per_day=None, **declared).rows_per_day == 14_400
    assert ChunkPlan(observed_rows_per_day=9_000, **declared).rows_per_day == 14_400
    assert ChunkPlan(observed_rows_per_day=17_000, **declared).rows_per_day == 14_400  # estimate noise
    assert ChunkPlan(observed_rows_per_day=57_600, **declared).rows_per_day == 57_600  # 15-s meters


def test_interval_text_names_the_largest_whole_unit():
    assert [interval_text(t) for t in (LONGEST, timedelta(days=1), timedelta(hours=8), SHORTEST,
                                       timedelta(seconds=90))] == \
        ["30 days", "1 day", "8 hours", "15 minutes", "90 seconds"]


@pytest.fixture(scope="module")
def uci_like(db_url):
    """The module's database (default settings: one meter, a reading a minute) holding one
    meter's one-minute readings over the UCI household's four years."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO meters (meter_id) VALUES ('uci')")
        conn.execute("INSERT INTO readings (meter_id, time, active_power_kw)"
                     " SELECT 'uci', t, 1 + sin(extract(epoch FROM t) / 3600)"
                     " FROM generate_series(%s::timestamptz, %s, '1 minute') AS t",
                     (UCI_FIRST, UCI_LAST))
    return db_url


def test_a_four_year_one_minute_history_fills_monthly_chunks(uci_like):
    with psycopg.connect(uci_like) as conn:
        assert intervals(conn) == {"readings": LONGEST, "anomaly_scores": LONGEST}
        assert conn.execute("SELECT count(*) FROM readings").fetchone()[0] == UCI_ROWS
        # 1,442 days in 30-day chunks aligned on the epoch: 49 or 50 of them, not 1,442.
        assert 49 <= chunk_count(conn) <= 50


def test_truncate_of_the_history_locks_a_few_hundred_relations(uci_like):
    with psycopg.connect(uci_like) as conn:
        conn.execute("TRUNCATE readings")
        assert conn.execute("SELECT count(*) FROM readings").fetchone()[0] == 0
        # Each chunk locks its table, TOAST table and indexes: about six relations per chunk.
        assert locked_relations(conn) < 7 * 50 + 20
        conn.rollback()  # the other tests keep the history


def test_maintain_rolls_up_the_whole_history_and_keeps_the_interval(uci_like):
    env = {"WATTWATCH_DATABASE_URL": uci_like}
    result = run_cli(["db", "maintain", "--all"], env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "readings: chunk interval 30 days (1 meter(s), a reading every 60 s: about 43,200 rows " \
           "per chunk)" in result.stdout
    with psycopg.connect(uci_like) as conn:
        assert conn.execute("SELECT count(*), sum(n_readings) FROM readings_daily").fetchone() \
            == (1_442, UCI_ROWS)
        assert conn.execute("SELECT sum(n_readings) FROM readings_hourly").fetchone()[0] == UCI_ROWS


def test_maintain_sizes_new_chunks_as_the_fleet_grows(uci_like, role_url):
    env = {"WATTWATCH_DATABASE_URL": uci_like, "WATTWATCH_READINGS_RETENTION_DAYS": "0"}
    with psycopg.connect(uci_like, autocommit=True) as conn:
        conn.execute("INSERT INTO meters (meter_id) SELECT 'fleet-' || i FROM generate_series(1, 999) i")
        before = chunk_count(conn)
    try:
        # The jobs role may not alter the tables: it says so and leaves the interval alone.
        with psycopg.connect(role_url("wattwatch_jobs"), autocommit=True) as jobs:
            lines = size_chunks(jobs, settings_for(uci_like))
        assert "readings: chunk interval 30 days left as is, 3 days planned (only the table's " \
               "owner may change it)" in lines
        result = run_cli(["db", "maintain"], env)
        assert result.returncode == 0, result.stderr
        assert "readings: chunk interval 30 days -> 3 days for new chunks; stored chunks keep " \
               "theirs (1,000 meter(s), a reading every 60 s: about 4,320,000 rows per chunk)" \
               in result.stdout
        with psycopg.connect(uci_like) as conn:
            assert intervals(conn) == {"readings": timedelta(days=3), "anomaly_scores": timedelta(days=3)}
            assert chunk_count(conn) == before  # stored chunks are left as they are
        # Meters expected ahead of their first reading count too; a second run changes nothing.
        planned = run_cli(["db", "maintain"], {**env, "WATTWATCH_EXPECTED_METERS": "10000"})
        assert "readings: chunk interval 3 days -> 8 hours for new chunks" in planned.stdout
        again = run_cli(["db", "maintain"], {**env, "WATTWATCH_EXPECTED_METERS": "10000"})
        assert "readings: chunk interval 8 hours (10,000 meter(s)" in again.stdout
    finally:
        with psycopg.connect(uci_like, autocommit=True) as conn:
            conn.execute("DELETE FROM meters WHERE meter_id LIKE 'fleet-%'")
            for table in ("readings", "anomaly_scores"):
                conn.execute("SELECT set_chunk_time_interval(%s, %s)", (table, LONGEST))


def test_maintain_trusts_the_data_when_it_shows_more_rows_than_declared(uci_like):
    """Meters declared to read every 10 minutes that read every minute: once the newest ended
    chunk is analysed, its row count sizes the chunks."""
    env = {"WATTWATCH_DATABASE_URL": uci_like, "WATTWATCH_READING_INTERVAL_SECONDS": "600",
           "WATTWATCH_CHUNK_TARGET_ROWS": "20000"}
    try:
        declared = run_cli(["db", "maintain"], env)
        assert "readings: chunk interval 30 days (1 meter(s), a reading every 600 s: about 4,320 " \
               "rows per chunk)" in declared.stdout  # 144 rows a day declared: the cap
        with psycopg.connect(uci_like, autocommit=True) as conn:
            conn.execute("ANALYZE readings")
        observed = run_cli(["db", "maintain"], env)
        # The newest ended chunk holds 29.9 days of one-minute rows: about 1,435 a day, so
        # 20,000 rows take 13.9 days, 13 whole ones.
        assert re.search(r"readings: chunk interval 30 days -> 13 days for new chunks; stored chunks "
                         r"keep theirs \(1,4\d\d rows a day in the newest ended chunk: about 18,\d{3} "
                         r"rows per chunk\)", observed.stdout), observed.stdout
    finally:
        with psycopg.connect(uci_like, autocommit=True) as conn:
            for table in ("readings", "anomaly_scores"):
                conn.execute("SELECT set_chunk_time_interval(%s, %s)", (table, LONGEST))


def test_migration_0041_resizes_a_day_chunked_database_and_maintain_copes_with_its_chunks(
        make_database, tmp_path, server_license):
    """A database migrated before 0041 has one-day chunks: 1,442 for the UCI span. The migration
    sizes new chunks; db maintain drops and rolls up the old ones a bounded number at a time."""
    url = make_database("daychunks")
    before_0041 = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, before_0041)
    (before_0041 / "0041_chunks_sized_to_data.sql").unlink()
    with connect_url(url) as conn:
        migrate(conn, settings_for(url), before_0041)
    with psycopg.connect(url, autocommit=True) as conn:
        assert intervals(conn) == {"readings": timedelta(days=1), "anomaly_scores": timedelta(days=7)}
        conn.execute("INSERT INTO meters (meter_id) VALUES ('uci')")
        # One reading an hour is enough to create every day's chunk.
        conn.execute("INSERT INTO readings (meter_id, time, active_power_kw)"
                     " SELECT 'uci', t, 1 FROM generate_series(%s::timestamptz, %s, '1 hour') AS t",
                     (UCI_FIRST, UCI_LAST))
        assert chunk_count(conn) == 1_442

    with connect_url(url) as conn:
        result = migrate(conn, settings_for(url, expected_meters=10_000))
    assert [m.label for m in result.applied] == ["0041_chunks_sized_to_data"]
    with psycopg.connect(url, autocommit=True) as conn:
        assert intervals(conn) == {"readings": timedelta(hours=8), "anomaly_scores": timedelta(hours=8)}
        assert chunk_count(conn) == 1_442
        conn.execute("INSERT INTO readings (meter_id, time) VALUES ('uci', '2011-01-01 00:00+00')")
        assert conn.execute(
            "SELECT range_end - range_start FROM timescaledb_information.chunks"
            " WHERE hypertable_name = 'readings' ORDER BY range_start DESC LIMIT 1").fetchone()[0] \
            == timedelta(hours=8)
        keep_days = int(conn.execute(
            "SELECT extract(day FROM now() - '2010-01-01+00'::timestamptz)").fetchone()[0])
        before = chunk_count(conn)

    env = {"WATTWATCH_DATABASE_URL": url, "WATTWATCH_READINGS_RETENTION_DAYS": str(keep_days),
           "WATTWATCH_EXPECTED_METERS": "10000"}
    maintained = run_cli(["db", "maintain", "--all"], env, timeout=300)
    assert maintained.returncode == 0, maintained.stderr
    assert " steps of up to 64 chunks" in maintained.stdout
    with psycopg.connect(url) as conn:
        if server_license == "apache":  # the timescale license leaves retention to its policy
            dropped = before - chunk_count(conn)
            assert dropped > 2 * CHUNKS_PER_STEP  # three years of day chunks, in several steps
            assert f"readings: dropped {dropped} chunk(s) older than {keep_days} days" \
                in maintained.stdout
            first = conn.execute("SELECT min(time) FROM readings").fetchone()[0]
            assert (first.year, first.month) == (2010, 1) and first.day <= 2
        # The rollups cover the readings, every hour once, across the steps.
        raw = conn.execute("SELECT count(*) FROM readings").fetchone()[0]
        assert conn.execute("SELECT sum(n_readings) FROM readings_hourly").fetchone()[0] == raw
        assert conn.execute("SELECT sum(n_readings) FROM readings_daily").fetchone()[0] == raw
