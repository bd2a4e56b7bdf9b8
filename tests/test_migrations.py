"""The migration runner against the real TimescaleDB: apply, no-op, lock, checksums, modes."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from tests.conftest import settings_for
from tests.test_cli import run_cli
from timescale.connect import connect_url
from timescale.migrate import MIGRATIONS_DIR, discover, migrate, plan
from timescale.status import status
from wattwatch.errors import WattwatchError

FOUNDATION = ["0001_meters_readings_ingest", "0002_models_scores_incidents_drift", "0003_roles",
              "0004_rollups_and_policies", "0005_rollup_column_comments"]
EXPECTED = [m.label for m in plan("apache")]
COUNT = len(EXPECTED)


def fingerprint(url: str) -> list[tuple]:
    """Every column of every relation in public, plus the bookkeeping rows: what a migration changes."""
    with psycopg.connect(url) as conn:
        columns = conn.execute(
            """
            SELECT c.relname, c.relkind, a.attname, format_type(a.atttypid, a.atttypmod)
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
            WHERE n.nspname = 'public' ORDER BY 1, 3
            """
        ).fetchall()
        rows = conn.execute(
            "SELECT version, name, mode, checksum, applied_at FROM wattwatch_migrations ORDER BY 1"
        ).fetchall()
    return columns + rows


def test_migrate_twice_second_run_changes_nothing(make_database, server_license):
    url = make_database("twice")
    first = run_cli(["db", "migrate"], {"WATTWATCH_DATABASE_URL": url})
    assert first.returncode == 0, first.stderr
    assert [line.split()[1] for line in first.stdout.splitlines()[:COUNT]] == [
        m.path.name for m in plan(server_license)]
    assert f"{COUNT} migration(s) applied in {server_license} mode" in first.stdout
    before = fingerprint(url)

    second = run_cli(["db", "migrate"], {"WATTWATCH_DATABASE_URL": url})
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == f"nothing to do: all {COUNT} migrations already applied ({server_license} mode)"
    assert fingerprint(url) == before


def test_status_reports_license_mode_and_hypertables(make_database, server_license):
    url = make_database("status")
    before = run_cli(["db", "status"], {"WATTWATCH_DATABASE_URL": url})
    assert before.returncode == 0, before.stderr
    assert "schema mode: not migrated yet" in before.stdout
    assert f"pending: {COUNT}" in before.stdout

    assert run_cli(["db", "migrate"], {"WATTWATCH_DATABASE_URL": url}).returncode == 0
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO meters (meter_id) VALUES ('m1')")
        conn.execute(
            "INSERT INTO readings (meter_id, time, active_power_kw) "
            "SELECT 'm1', t, 1.0 FROM generate_series("
            "'2026-01-01 00:00+00'::timestamptz, '2026-01-03 23:00+00', '1 hour') AS t"
        )
    result = run_cli(["db", "status"], {"WATTWATCH_DATABASE_URL": url})
    assert result.returncode == 0, result.stderr
    assert f"license {server_license}" in result.stdout
    assert f"schema mode: {server_license}" in result.stdout
    assert "readings: 1 chunks, chunk interval 30 days" in result.stdout
    assert "anomaly_scores: 0 chunks, chunk interval 30 days" in result.stdout
    with connect_url(url) as conn:
        report = status(conn)
    assert report["license"] == report["schema_mode"] == server_license
    assert report["applied"] == [f"{label} ({server_license})" for label in EXPECTED]
    assert report["pending"] == []


def test_concurrent_migrators_apply_each_migration_once(make_database, server_license):
    url = make_database("race")
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda _: run_cli(["db", "migrate"], {"WATTWATCH_DATABASE_URL": url}),
                                range(3)))
    assert [r.returncode for r in results] == [0, 0, 0], [r.stderr for r in results]
    applied_counts = sorted(r.stdout.count("applied 0") for r in results)
    assert applied_counts == [0, 0, COUNT]
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM wattwatch_migrations").fetchone()[0] == COUNT


def test_plans_name_the_same_versions_in_both_modes():
    apache, timescale = plan("apache"), plan("timescale")
    assert [m.label for m in apache] == [m.label for m in timescale]
    assert [m.label for m in apache][:5] == FOUNDATION
    assert {m.mode for m in apache} == {None, "apache"}
    assert {m.mode for m in timescale} == {None, "timescale"}


def test_each_license_mode_produces_its_own_sql():
    timescale = plan("timescale")[3].sql
    apache = plan("apache")[3].sql
    for needle in ("timescaledb.continuous", "timescaledb.materialized_only = false",
                   "add_continuous_aggregate_policy", "timescaledb.compress_segmentby = 'meter_id'",
                   "add_compression_policy", "add_retention_policy"):
        assert needle in timescale
        assert needle not in apache
    assert "CREATE TABLE readings_hourly" in apache
    assert "CREATE FUNCTION refresh_readings_rollups" in apache


def test_the_other_modes_sql_is_refused_or_accepted_by_this_server(conn, server_license):
    """The timescale path is real SQL: this server's license decides whether it can run."""
    with conn.transaction():
        conn.execute("SELECT set_config('wattwatch.' || s, '30', true) FROM unnest("
                     "ARRAY['readings_retention_days','scores_retention_days','compress_after_days']) s")
        conn.execute("DROP TABLE readings_hourly, readings_daily CASCADE" if server_license == "apache"
                     else "DROP MATERIALIZED VIEW readings_hourly, readings_daily CASCADE")
        if server_license == "apache":
            with pytest.raises(psycopg.errors.FeatureNotSupported, match='"apache" license'):
                conn.execute(plan("timescale")[3].sql)
        else:
            for table in ("readings", "anomaly_scores"):  # the migration added them already
                conn.execute("SELECT remove_compression_policy(%s, if_exists => true),"
                             " remove_retention_policy(%s, if_exists => true)", (table, table))
            conn.execute(plan("timescale")[3].sql)
            jobs = conn.execute("SELECT count(*) FROM timescaledb_information.jobs "
                                "WHERE proc_name LIKE 'policy_%'").fetchone()[0]
            assert jobs >= 6  # two refresh, two compression, two retention policies
        raise psycopg.Rollback()


@pytest.fixture
def migrations_copy(tmp_path):
    """A copy of the project's migrations that a test may extend or edit."""
    directory = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, directory)
    return directory


def test_edited_migration_is_refused(make_database, migrations_copy):
    url = make_database("edited")
    with connect_url(url) as conn:
        migrate(conn, settings_for(url), migrations_copy)
    edited = migrations_copy / "0003_roles.sql"
    edited.write_text(edited.read_text() + "\n-- an afterthought\n")
    with connect_url(url) as conn, pytest.raises(WattwatchError, match="0003_roles.sql was edited"):
        migrate(conn, settings_for(url), migrations_copy)


def test_failing_migration_rolls_back_and_names_its_file(make_database, migrations_copy):
    url = make_database("broken")
    (migrations_copy / "0099_broken.sql").write_text(
        "CREATE TABLE half_done (x int);\nSELECT 1 / 0;\n")
    with connect_url(url) as conn, pytest.raises(
            WattwatchError, match=r"migration 0099_broken.sql failed and was rolled back: division by zero"):
        migrate(conn, settings_for(url), migrations_copy)
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT to_regclass('half_done')").fetchone()[0] is None
        assert conn.execute("SELECT max(version) FROM wattwatch_migrations").fetchone()[0] == int(EXPECTED[-1][:4])
    # Fixed, it applies on the next run and the earlier ones are not re-applied.
    (migrations_copy / "0099_broken.sql").write_text("CREATE TABLE half_done (x int);\n")
    with connect_url(url) as conn:
        result = migrate(conn, settings_for(url), migrations_copy)
    assert [m.label for m in result.applied] == ["0099_broken"]
    assert result.up_to_date == COUNT


def test_policy_ages_reach_the_migration_sql(make_database, migrations_copy):
    url = make_database("ages")
    (migrations_copy / "0097_ages.sql").write_text(
        "CREATE TABLE seen AS SELECT current_setting('wattwatch.readings_retention_days') AS r,"
        " current_setting('wattwatch.scores_retention_days') AS s,"
        " current_setting('wattwatch.compress_after_days') AS c;\n")
    settings = settings_for(url, readings_retention_days=400, scores_retention_days=90,
                            compress_after_days=3)
    with connect_url(url) as conn:
        migrate(conn, settings, migrations_copy)
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT r, s, c FROM seen").fetchone() == ("400", "90", "3")


def test_file_names_off_pattern_are_errors(migrations_copy):
    (migrations_copy / "5_whatever.sql").write_text("SELECT 1;")
    with pytest.raises(WattwatchError, match="5_whatever.sql"):
        discover(migrations_copy)


def test_a_mode_without_its_file_is_an_error(migrations_copy):
    (migrations_copy / "0098_only_apache.apache.sql").write_text("SELECT 1;")
    with pytest.raises(WattwatchError, match="migration 0098 has no file for mode 'timescale'"):
        plan("timescale", migrations_copy)


def test_schema_built_for_timescale_is_refused_on_an_apache_server(make_database, server_license):
    url = make_database("mismatch")
    with connect_url(url) as conn:
        migrate(conn, settings_for(url))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE wattwatch_migrations SET mode = 'timescale'")
    result = run_cli(["db", "migrate"], {"WATTWATCH_DATABASE_URL": url})
    if server_license == "apache":
        assert result.returncode == 1
        assert "built in 'timescale' mode but this server runs the apache license" in result.stderr
    else:
        assert result.returncode == 0, result.stderr



def test_one_active_model_migration_retires_all_but_the_newest(make_database, migrations_copy):
    """Migration 0038 on a registry where two detectors each trained a meter at once: the
    newest version of each meter stays active, the others are retired, then the index holds."""
    url = make_database("active")
    for path in migrations_copy.glob("0038_*.sql"):
        path.unlink()
    with connect_url(url) as conn:
        migrate(conn, settings_for(url), migrations_copy)
    insert = "INSERT INTO models (meter_id, algorithm, reason) VALUES (%s, 't', 'initial') RETURNING version"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO meters (meter_id) VALUES ('a'), ('b')")
        a1, a2, b1, a3 = (conn.execute(insert, (meter,)).fetchone()[0] for meter in "aaba")
        conn.execute("UPDATE models SET status = 'retired' WHERE version = %s", (a1,))
        shared = [conn.execute(insert, (None,)).fetchone()[0] for _ in range(2)]
    with connect_url(url) as conn:
        result = migrate(conn, settings_for(url))
    assert [m.label for m in result.applied] == ["0038_one_active_model"]
    with psycopg.connect(url) as conn:
        statuses = dict(conn.execute("SELECT version, status FROM models").fetchall())
    assert statuses == {a1: "retired", a2: "retired", a3: "active", b1: "active",
                        shared[0]: "active", shared[1]: "active"}
