"""`wattwatch db backup` and `db restore` against the real TimescaleDB: a database with readings,
scores, incidents and drift reports comes back identical in a new database, still with working
hypertables; a restore refuses a database that is not empty; a failed dump leaves no file."""

from __future__ import annotations

import stat
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from ingest.simulate import simulate_history
from tests.conftest import settings_for
from tests.test_cli import one_line_error, run_cli
from timescale.connect import connect_url
from timescale.migrate import migrate
from wattwatch import stack as native_stack

TABLES = ["meters", "readings", "injected_anomalies", "models", "anomaly_scores", "anomaly_incidents",
          "drift_reports", "readings_hourly", "readings_daily", "wattwatch_migrations"]
SCORES = ("SELECT count(*), md5(string_agg(concat_ws('|', meter_id, time, model_version, score, severity), ',' "
          "ORDER BY meter_id, time)) FROM anomaly_scores")


@pytest.fixture(scope="module")
def pg_bin_dir(tmp_path_factory, stack) -> str:
    """pg_dump and pg_restore of the test server's version: the Debian 13 ones, run through the
    trixie root where the server runs there (the host's are older than the server)."""
    if native_stack.native():
        return native_stack.PG_BIN
    directory = tmp_path_factory.mktemp("pg-bin")
    for program in ("pg_dump", "pg_restore"):
        wrapper = directory / program
        wrapper.write_text(f'#!/bin/sh\nexec chroot --userspec=postgres:postgres {native_stack.TRIXIE_ROOT} '
                           f'{native_stack.PG_BIN}/{program} "$@"\n')
        wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    return str(directory)


@pytest.fixture(scope="module")
def source(db_url):
    """Two days of two simulated meters, scored by SQL, with an incident and a drift report."""
    end = datetime(2025, 3, 3, tzinfo=timezone.utc)
    with psycopg.connect(db_url, autocommit=True) as conn:
        simulate_history(conn, settings_for(db_url), meters=2, step_seconds=60, seed=3,
                         start=end - timedelta(days=2), end=end, prefix="bk", anomaly_rate=1.0)
        version = conn.execute("INSERT INTO models (algorithm, reason) VALUES ('test', 'initial') "
                               "RETURNING version").fetchone()[0]
        conn.execute("INSERT INTO anomaly_scores (time, meter_id, model_version, score, is_anomaly, severity) "
                     "SELECT time, meter_id, %s, (extract(epoch FROM time)::bigint %% 1000) / 10.0, false, "
                     "'none' FROM readings", (version,))
        conn.execute("INSERT INTO anomaly_incidents (meter_id, model_version, start_time, end_time, n_readings,"
                     " peak_score, severity, kind) VALUES ('bk-0000', %s, %s, %s, 5, 97, 'critical', 'spike')",
                     (version, end - timedelta(hours=3), end - timedelta(hours=3) + timedelta(minutes=4)))
        conn.execute("INSERT INTO drift_reports (run_id, run_at, mode, meter_id, feature, reference_from, "
                     "reference_to, current_from, current_to, reference_n, current_n, psi, status) VALUES "
                     "(gen_random_uuid(), %s, 'light', 'bk-0001', 'voltage_v', %s, %s, %s, %s, 1440, 1440, 0.7, "
                     "'critical')", (end, end - timedelta(days=2), end - timedelta(days=1),
                                     end - timedelta(days=1), end))
    return db_url


def facts(url: str) -> dict:
    with psycopg.connect(url) as conn:
        found = {table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in TABLES}
        found["scores"] = conn.execute(SCORES).fetchone()
        found["hypertables"] = conn.execute(
            "SELECT hypertable_name, num_chunks FROM timescaledb_information.hypertables ORDER BY 1").fetchall()
    return found


def test_backup_then_restore_into_a_new_database_gives_the_same_data(source, make_database, pg_bin_dir, tmp_path):
    before = facts(source)
    assert before["readings"] == 2 * 2 * 1440 and before["anomaly_scores"] == before["readings"]
    dump = tmp_path / "wattwatch.dump"
    done = run_cli(["db", "backup", str(dump)],
                   {"WATTWATCH_DATABASE_URL": source, "WATTWATCH_PG_BIN_DIR": pg_bin_dir})
    assert done.returncode == 0, done.stderr
    assert dump.stat().st_size > 10_000 and not (tmp_path / "wattwatch.dump.partial").exists()

    target = make_database("restored")
    done = run_cli(["db", "restore", str(dump)],
                   {"WATTWATCH_DATABASE_URL": target, "WATTWATCH_PG_BIN_DIR": pg_bin_dir})
    assert done.returncode == 0, done.stderr
    after = facts(target)
    assert after == before
    with psycopg.connect(target, autocommit=True) as conn:
        # Out of restoring mode, the hypertables take new chunks and the migrations see no work.
        assert conn.execute("SHOW timescaledb.restoring").fetchone()[0] == "off"
        conn.execute("INSERT INTO readings (time, meter_id, active_power_kw) VALUES ('2030-01-01', 'bk-0000', 1)")
    with connect_url(target) as conn:
        assert migrate(conn, settings_for(target)).applied == []
    assert facts(target)["hypertables"] == [("anomaly_scores", before["hypertables"][0][1]),
                                            ("readings", before["hypertables"][1][1] + 1)]


def test_restore_refuses_a_database_that_is_not_empty(source, pg_bin_dir, tmp_path):
    dump = tmp_path / "any.dump"
    dump.write_bytes(b"not used")
    refused = run_cli(["db", "restore", str(dump)],
                      {"WATTWATCH_DATABASE_URL": source, "WATTWATCH_PG_BIN_DIR": pg_bin_dir})
    assert refused.returncode == 1
    assert "is not empty" in one_line_error(refused)


def test_a_failed_backup_leaves_no_file_and_says_why(admin_url, pg_bin_dir, tmp_path):
    missing = admin_url.rsplit("/", 1)[0] + "/no_such_database"
    dump = tmp_path / "never.dump"
    failed = run_cli(["db", "backup", str(dump)],
                     {"WATTWATCH_DATABASE_URL": missing, "WATTWATCH_PG_BIN_DIR": pg_bin_dir})
    assert failed.returncode == 1
    assert "pg_dump failed" in one_line_error(failed) and "no_such_database" in one_line_error(failed)
    assert list(tmp_path.iterdir()) == []


def test_missing_pg_dump_is_one_clear_line(source, tmp_path):
    failed = run_cli(["db", "backup", str(tmp_path / "x.dump")],
                     {"WATTWATCH_DATABASE_URL": source, "WATTWATCH_PG_BIN_DIR": str(tmp_path)})
    assert failed.returncode == 1
    assert "pg_dump not found in" in one_line_error(failed)
