"""The KPI exporter against the real TimescaleDB (as the read-only role) and the real Prometheus:
every KPI equals what the raw tables say, a broken database is counted, the CLI serves it."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import urllib.request
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from prometheus_client import CollectorRegistry

from exporters.kpi import KpiCollector
from ingest.simulate import simulate_history
from tests.conftest import prometheus_query, prometheus_wait, settings_for
from tests.test_cli import WATTWATCH, one_line_error, run_cli
from timescale.connect import connect_url
from timescale.fleet import Fleet
from timescale.rollups import refresh_rollups
from wattwatch.metrics import serve_metrics

METERS = ["kpi-0000", "kpi-0001", "kpi-0002"]


@pytest.fixture(scope="module")
def kpi_db(db_url):
    """30 hours of three simulated meters up to now, scores, drift reports and a watermark."""
    end = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    with psycopg.connect(db_url, autocommit=True) as conn:
        simulate_history(conn, settings_for(db_url), meters=3, step_seconds=60, seed=7,
                         start=end - timedelta(hours=30), end=end, prefix="kpi", anomaly_rate=0.0)
        version = conn.execute("INSERT INTO models (meter_id, algorithm, reason) VALUES "
                               "('kpi-0000', 'test', 'initial') RETURNING version").fetchone()[0]
        scores = [(1, "critical"), (2, "critical"), (3, "high"), (4 * 24 * 60, "critical")]
        for minutes, severity in scores:  # the last one is 4 days old: outside the 24 hours
            conn.execute("INSERT INTO anomaly_scores (time, meter_id, model_version, score, "
                         "is_anomaly, severity) VALUES (%s, 'kpi-0000', %s, 99, true, %s)",
                         (end - timedelta(minutes=minutes), version, severity))
        conn.execute("INSERT INTO anomaly_scores (time, meter_id, model_version, score, is_anomaly,"
                     " severity) VALUES (%s, 'kpi-0001', %s, 5, false, 'none')", (end, version))
        # kpi-0000: voltage critical in its latest run; kpi-0001: critical once, stable since.
        drift = [("kpi-0000", 2, "critical"), ("kpi-0001", 30, "critical"), ("kpi-0001", 2, "stable")]
        for meter, hours_ago, status in drift:
            run_at = end - timedelta(hours=hours_ago)
            conn.execute(
                "INSERT INTO drift_reports (run_id, run_at, mode, meter_id, feature, reference_from,"
                " reference_to, current_from, current_to, reference_n, current_n, status) VALUES "
                "(gen_random_uuid(), %s, 'light', %s, 'voltage_v', %s, %s, %s, %s, 10, 10, %s)",
                (run_at, meter, run_at - timedelta(days=2), run_at - timedelta(days=1),
                 run_at - timedelta(days=1), run_at, status))
        conn.execute("INSERT INTO detector_watermarks (meter_id, ingested_at, updated_at) "
                     "VALUES ('kpi-0000', now(), now() - interval '10 seconds')")
    return db_url, end


@pytest.fixture(scope="module")
def reader_url(kpi_db, role_url):
    return role_url("wattwatch_reader")


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in registry.collect() for s in family.samples}


def test_every_kpi_matches_the_raw_tables(kpi_db, reader_url, role_url):
    db_url, end = kpi_db
    registry = CollectorRegistry()
    collector = KpiCollector(lambda: connect_url(reader_url), registry)
    worker = Fleet(settings_for(role_url("wattwatch_jobs"), worker_id="host-a-1"), "detector",
                   logging.getLogger("test"), CollectorRegistry())
    try:
        worker.refresh()
        got = samples(registry)
    finally:
        collector.close()
        worker.close()
    with psycopg.connect(db_url) as conn:
        total = conn.execute("SELECT count(*) FROM readings").fetchone()[0]
        per_meter = dict(conn.execute(
            "SELECT meter_id, count(*) FROM readings WHERE time_bucket('1 hour', time) >= "
            "now() - interval '24 hours' GROUP BY meter_id").fetchall())
        power_w, voltage = conn.execute(
            "SELECT avg(active_power_kw) * 1000, avg(voltage_v) FROM readings "
            "WHERE time_bucket('1 hour', time) >= now() - interval '24 hours'").fetchone()
        newest_hour = dict(conn.execute(
            "SELECT DISTINCT ON (meter_id) meter_id, avg(active_power_kw) * 1000 FROM readings "
            "GROUP BY meter_id, time_bucket('1 hour', time) "
            "ORDER BY meter_id, time_bucket('1 hour', time) DESC").fetchall())
    assert total == 3 * 30 * 60
    assert got[("wattwatch_readings_stored", ())] == total
    assert got[("wattwatch_meters", ())] == 3
    for meter in METERS:
        labels = (("meter_id", meter),)
        assert got[("wattwatch_meter_readings_24h", labels)] == per_meter[meter]
        assert got[("wattwatch_meter_active_power_watts", labels)] == pytest.approx(newest_hour[meter])
        # The newest reading is a minute before `end`; the scrape came a little later.
        age = got[("wattwatch_meter_last_reading_age_seconds", labels)]
        assert 60 <= age <= (datetime.now(timezone.utc) - end).total_seconds() + 60
    assert got[("wattwatch_active_power_24h_average_watts", ())] == pytest.approx(power_w)
    assert got[("wattwatch_voltage_24h_average_volts", ())] == pytest.approx(voltage)
    anomalies = {dict(labels)["severity"]: value for (name, labels), value in got.items()
                 if name == "wattwatch_anomalies_24h"}
    assert anomalies == {"low": 0, "medium": 0, "high": 1, "critical": 2}
    assert got[("wattwatch_meters_critical_drift", ())] == 1
    assert 10 <= got[("wattwatch_job_last_activity_age_seconds", (("job", "detector"),))] < 120
    assert 2 * 3600 <= got[("wattwatch_job_last_activity_age_seconds", (("job", "drift"),))] < 3 * 3600
    assert got[("wattwatch_workers", (("service", "detector"),))] == 1
    assert got[("wattwatch_workers", (("service", "drift"),))] == 0
    assert got[("wattwatch_worker_meters", (("service", "detector"), ("worker", "host-a-1")))] == 3
    assert 0 < got[("wattwatch_exporter_scrape_duration_seconds", ())] < 5
    assert got[("wattwatch_exporter_scrape_errors_total", ())] == 0


def test_new_readings_show_on_the_next_scrape(db_url, reader_url):
    registry = CollectorRegistry()
    collector = KpiCollector(lambda: connect_url(reader_url), registry)
    try:
        before = samples(registry)[("wattwatch_readings_stored", ())]
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute("INSERT INTO readings (time, meter_id, active_power_kw) "
                         "VALUES (now() - interval '1 minute', 'kpi-0002', 1.5)")
            now = datetime.now(timezone.utc)
            refresh_rollups(conn, now - timedelta(hours=1), now)
        got = samples(registry)
        assert got[("wattwatch_readings_stored", ())] == before + 1
        assert got[("wattwatch_meter_last_reading_age_seconds", (("meter_id", "kpi-0002"),))] < 120
    finally:
        collector.close()


def test_an_unreachable_database_is_counted_and_the_scrape_still_answers(reader_url):
    dead = reader_url.replace(f":{psycopg.conninfo.conninfo_to_dict(reader_url)['port']}/", ":1/")
    registry = CollectorRegistry()
    KpiCollector(lambda: connect_url(dead, attempts=1, timeout=1), registry)
    samples(registry)
    got = samples(registry)
    assert got[("wattwatch_exporter_scrape_errors_total", ())] == 2
    assert ("wattwatch_readings_stored", ()) not in got


def test_prometheus_scrapes_the_exporter(kpi_db, reader_url, stack, scrape_target):
    registry = CollectorRegistry()
    collector = KpiCollector(lambda: connect_url(reader_url), registry)
    try:
        port = serve_metrics(registry, 0)
        target = scrape_target("exporter", port)
        base = stack["prometheus_url"]
        drift = prometheus_wait(base, f"wattwatch_meters_critical_drift{{{target}}}")
        assert [s["value"][1] for s in drift] == ["1"]
        ages = prometheus_query(base, f"wattwatch_meter_last_reading_age_seconds{{{target}}}")
        assert sorted(s["metric"]["meter_id"] for s in ages) == METERS
        scrape = prometheus_query(base, f"wattwatch_exporter_scrape_duration_seconds{{{target}}}")
        assert 0 < float(scrape[0]["value"][1]) < 5
    finally:
        collector.close()


def test_cli_serves_as_the_reader_and_fails_in_one_line_on_a_bad_password(kpi_db, reader_url):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WATTWATCH_")}
    service = subprocess.Popen([WATTWATCH, "export", "--metrics-port", "0"], text=True,
                               env={**clean, "WATTWATCH_DATABASE_URL": reader_url},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        first = service.stderr.readline()
        started = re.match(r"\S+ INFO export: wattwatch \S+ export starting as database role "
                           r"wattwatch_reader: metrics=(http://127\.0\.0\.1:\d+/metrics)$", first.strip())
        assert started, first
        with urllib.request.urlopen(started[1], timeout=10) as response:
            body = response.read().decode()
        assert 'wattwatch_meter_readings_24h{meter_id="kpi-0001"}' in body
        assert "wattwatch_exporter_scrape_errors_total 0.0" in body
    finally:
        service.terminate()
        service.wait(timeout=10)
    wrong = reader_url.replace("reader-", "wrong-", 1)
    failed = run_cli(["export", "--metrics-port", "0"],
                     {"WATTWATCH_DATABASE_URL": wrong, "WATTWATCH_CONNECT_ATTEMPTS": "1"})
    assert failed.returncode == 1
    assert "cannot connect to the database" in one_line_error(failed)
