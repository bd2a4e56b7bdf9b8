"""Hourly and daily rollups equal the raw aggregates; maintenance applies retention per mode."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from tests.test_cli import run_cli
from timescale.rollups import ROLLUPS, bucket_start, refresh_rollups

COLUMNS = """count(*), avg(active_power_kw), min(active_power_kw), max(active_power_kw),
    avg(reactive_power_kw), avg(voltage_v), min(voltage_v), max(voltage_v), avg(current_a),
    max(current_a), sum(sub_metering_1_wh), sum(sub_metering_2_wh), sum(sub_metering_3_wh)"""
ROLLUP_COLUMNS = """n_readings, active_power_kw_avg, active_power_kw_min, active_power_kw_max,
    reactive_power_kw_avg, voltage_v_avg, voltage_v_min, voltage_v_max, current_a_avg,
    current_a_max, sub_metering_1_wh_sum, sub_metering_2_wh_sum, sub_metering_3_wh_sum"""
START = datetime(2026, 4, 1, tzinfo=timezone.utc)


def load_minutes(conn, meter: str, start: datetime, minutes: int) -> None:
    conn.execute("INSERT INTO meters (meter_id) VALUES (%s) ON CONFLICT DO NOTHING", (meter,))
    conn.execute(
        """INSERT INTO readings (meter_id, time, active_power_kw, reactive_power_kw, voltage_v,
               current_a, sub_metering_1_wh, sub_metering_2_wh, sub_metering_3_wh)
           SELECT %(m)s, %(s)s + make_interval(mins => i), 1 + sin(i / 60.0), 0.1 * (i %% 7),
               230 + 5 * cos(i / 90.0), 4 + (i %% 5), i %% 3,
               CASE WHEN i %% 11 = 0 THEN NULL ELSE 1 END, 17
           FROM generate_series(0, %(n)s - 1) AS i""",
        {"m": meter, "s": start, "n": minutes},
    )


def rounded(rows):
    return [tuple(round(v, 9) if isinstance(v, float) else v for v in row) for row in rows]


def assert_rollups_match(conn, width: str, table: str) -> int:
    raw = conn.execute(
        f"SELECT time_bucket(INTERVAL '{width}', time) AS b, meter_id, {COLUMNS} FROM readings "
        "GROUP BY 1, 2 ORDER BY 1, 2").fetchall()
    rolled = conn.execute(f"SELECT bucket, meter_id, {ROLLUP_COLUMNS} FROM {table} ORDER BY 1, 2").fetchall()
    assert rounded(rolled) == rounded(raw)
    return len(raw)


def test_rollups_equal_raw_aggregates_after_refresh(conn):
    load_minutes(conn, "r1", START, 3 * 1440)
    load_minutes(conn, "r2", START + timedelta(hours=5), 1440)
    refresh_rollups(conn, START, START + timedelta(days=3))
    assert assert_rollups_match(conn, "1 hour", "readings_hourly") == 72 + 24
    assert assert_rollups_match(conn, "1 day", "readings_daily") == 3 + 2

    # A late reading in an already rolled-up hour is picked up by the next refresh, once.
    late = START + timedelta(hours=1, seconds=30)
    conn.execute("INSERT INTO readings (meter_id, time, active_power_kw) VALUES ('r1', %s, 50)", (late,))
    refresh_rollups(conn, late, late)
    refresh_rollups(conn, late, late)
    assert assert_rollups_match(conn, "1 hour", "readings_hourly") == 96
    assert assert_rollups_match(conn, "1 day", "readings_daily") == 5
    assert conn.execute("SELECT active_power_kw_max, n_readings FROM readings_hourly WHERE meter_id = 'r1' "
                        "AND bucket = %s", (START + timedelta(hours=1),)).fetchone() == (50.0, 61)


def test_rollups_are_readable_by_the_reader_and_refreshable_by_writers(conn, role_url, server_license):
    with psycopg.connect(role_url("wattwatch_reader")) as reader:
        reader.execute("SELECT * FROM readings_hourly, readings_daily LIMIT 1")
    # Writers call refresh_rollups after every load, in either mode, and it must never fail:
    # apache rewrites the tables; timescale leaves a non-owner's refresh to the policies.
    for role in ("wattwatch_ingest", "wattwatch_jobs"):
        with psycopg.connect(role_url(role)) as writer:
            done = refresh_rollups(writer, START, START + timedelta(minutes=5))
            if server_license == "apache":
                assert done.endswith("rollup rows rewritten")
            else:
                assert "left to their refresh policies" in done
            assert refresh_rollups(writer, START, START, live=True)
    if server_license == "apache":
        with psycopg.connect(role_url("wattwatch_reader")) as reader, pytest.raises(
                psycopg.errors.InsufficientPrivilege):
            reader.execute("SELECT refresh_readings_rollups(now(), now())")


def test_a_window_shorter_than_a_bucket_refreshes_its_whole_bucket(conn):
    # The window that made refresh_continuous_aggregate fail with "refresh window too small".
    load_minutes(conn, "short", START + timedelta(days=5, minutes=7), 50)
    refresh_rollups(conn, START + timedelta(days=5, minutes=10), START + timedelta(days=5, minutes=40))
    hourly = conn.execute("SELECT bucket, n_readings FROM readings_hourly WHERE meter_id = 'short'").fetchall()
    assert hourly == [(START + timedelta(days=5), 50)]
    daily = conn.execute("SELECT n_readings FROM readings_daily WHERE meter_id = 'short'").fetchall()
    assert daily == [(50,)]


def test_bucket_start_is_time_bucket(conn):
    moments = [START, START + timedelta(minutes=59, seconds=59), datetime(1999, 12, 31, 23, 30, tzinfo=timezone.utc),
               datetime(2006, 12, 16, 17, 24, tzinfo=timezone.utc), datetime(2026, 12, 3, 0, 0, 1, tzinfo=timezone.utc)]
    for width in (*ROLLUPS.values(), timedelta(minutes=15), timedelta(days=7)):
        for moment in moments:
            expected = conn.execute("SELECT time_bucket(%s, %s::timestamptz)", (width, moment)).fetchone()[0]
            assert bucket_start(moment, width) == expected, (width, moment)


def test_maintain_applies_retention_for_the_mode(make_database, server_license):
    url = make_database("maintain")
    env = {"WATTWATCH_DATABASE_URL": url, "WATTWATCH_READINGS_RETENTION_DAYS": "30"}
    assert run_cli(["db", "migrate"], env).returncode == 0
    now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    with psycopg.connect(url, autocommit=True) as conn:
        # two hours inside one day (one chunk), whatever the time of day the test runs
        load_minutes(conn, "old", (now - timedelta(days=60)).replace(hour=0, minute=0), 120)
        load_minutes(conn, "new", now - timedelta(hours=3), 120)

    result = run_cli(["db", "maintain", "--all"], env)
    assert result.returncode == 0, result.stderr
    with psycopg.connect(url) as conn:
        meters_left = {m for (m,) in conn.execute("SELECT DISTINCT meter_id FROM readings")}
        hourly = {m for (m,) in conn.execute("SELECT DISTINCT meter_id FROM readings_hourly")}
        if server_license == "apache":
            assert "readings: dropped 1 chunk(s) older than 30 days" in result.stdout
            assert meters_left == {"new"}
            assert hourly == {"new"}  # --all spans the readings that are left
        else:
            policies = conn.execute(
                "SELECT hypertable_name, config->>'drop_after' FROM timescaledb_information.jobs "
                "WHERE proc_name = 'policy_retention'").fetchall()
            assert policies == [("readings", "30 days")]
            assert "readings: retention 30 days" in result.stdout
            assert hourly >= {"new"}


def test_maintain_before_migrate_is_a_clear_error(make_database):
    url = make_database("unmigrated")
    result = run_cli(["db", "maintain"], {"WATTWATCH_DATABASE_URL": url})
    assert result.returncode == 1
    assert result.stderr.strip() == ("wattwatch db: the database is not migrated yet: "
                                     "run 'wattwatch db migrate' first")
