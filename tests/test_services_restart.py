"""The live simulator, the drift service and the KPI exporter outlive restarts of the PostgreSQL
server (fast, then immediate: a crash): each reconnects, logs the outage once when it starts and
once when it ends, and goes on: one reading per meter per second with nothing lost or stored
twice, a new model judged for drift after the restarts, scrapes that read the database again.

A restart cuts every connection to the session's cluster: this module holds none open across
one (see the `durable` fixture)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request

import psycopg

from detector.readings import meters
from detector.registry import train
from tests.conftest import PROJECT, restart_database, settings_for

SERVICES = {
    "ingest": ("wattwatch_ingest", ["ingest", "simulate", "--meters", "3", "--interval", "1",
                                    "--history-days", "3", "--prefix", "live"]),
    "drift": ("wattwatch_jobs", ["drift", "run", "--mode", "light"]),
    "export": ("wattwatch_reader", ["export"]),
}


def metrics_url(log_path) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = re.search(r"(http://127\.0\.0\.1:\d+/metrics)", log_path.read_text())
        if found:
            return found[1]
        time.sleep(0.2)
    raise AssertionError(f"no metrics address in {log_path.read_text()}")


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def test_ingest_drift_and_export_outlive_server_restarts(stack, durable, role_url, tmp_path):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WATTWATCH_")}
    processes, logs = {}, {}
    try:
        for name, (role, args) in SERVICES.items():
            logs[name] = tmp_path / f"{name}.log"
            env = {**clean, "WATTWATCH_DATABASE_URL": role_url(role), "PYTHONPATH": str(PROJECT),
                   "WATTWATCH_CONNECT_TIMEOUT_SECONDS": "2", "WATTWATCH_DRIFT_WORKERS": "1",
                   "WATTWATCH_DRIFT_MIN_VALUES": "100", "WATTWATCH_DRIFT_MIN_REFERENCE_DAYS": "2",
                   "WATTWATCH_DRIFT_CURRENT_DAYS": "1"}
            with open(logs[name], "w") as log_file:
                processes[name] = subprocess.Popen(
                    [sys.executable, "-m", "wattwatch.cli", *args, "--metrics-port", "0"],
                    env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=log_file)
        urls = {name: metrics_url(logs[name]) for name in ("drift", "export")}
        deadline = time.monotonic() + 300  # the history is in, and live readings are arriving
        while "readings stored" not in logs["ingest"].read_text() or "run " not in logs["drift"].read_text():
            assert time.monotonic() < deadline, {n: p.read_text() for n, p in logs.items()}
            time.sleep(1)
        restart_database(stack, "fast")
        time.sleep(4)
        restart_database(stack, "immediate")
        time.sleep(6)
        settings = settings_for(durable)
        with psycopg.connect(durable) as conn:  # a new model, which the drift service must judge
            meter = next(m for m in meters(conn) if m.meter_id == "live-0000")
            with conn.transaction():
                train(conn, meter, settings, holdout_days=1, reason="test")
        deadline = time.monotonic() + 100
        while True:
            with psycopg.connect(durable) as conn:
                judged = conn.execute("SELECT count(*) FROM drift_reports r JOIN models m USING (meter_id)"
                                      " WHERE m.status = 'active' AND m.reason = 'test'"
                                      " AND r.run_at >= m.trained_at").fetchone()[0]
            if judged or time.monotonic() > deadline:
                break
            time.sleep(2)
        assert judged, logs["drift"].read_text()
        exposition = scrape(urls["export"])
        assert re.search(r"^wattwatch_readings_stored \d", exposition, re.M), exposition
        for name, process in processes.items():
            assert process.poll() is None, f"{name} stopped: {logs[name].read_text()}"
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            process.wait(timeout=30)
    with psycopg.connect(durable) as conn:
        per_meter = conn.execute(
            "SELECT meter_id, count(*), count(DISTINCT time), min(time), max(time) FROM readings"
            " WHERE meter_id LIKE 'live-%' GROUP BY 1 ORDER BY 1").fetchall()
    assert len(per_meter) == 3
    for meter_id, count, distinct, low, high in per_meter:
        # One reading a second from the history's first to the last live one: none lost, none twice.
        assert count == distinct == int((high - low).total_seconds()) + 1, (meter_id, count, low, high)
    for name, path in logs.items():
        text = path.read_text()
        assert "Traceback" not in text, text
        assert role_url(SERVICES[name][0]).split(":")[2].split("@")[0] not in text  # no password
    ingest, export = logs["ingest"].read_text(), logs["export"].read_text()
    assert len(re.findall(r"WARNING ingest: database connection lost", ingest)) >= 2, ingest
    assert len(re.findall(r"INFO ingest: database back after \d+\.\d s; simulate --seed 42 goes on", ingest)) >= 2
    assert re.search(r"WARNING export: database connection lost", export) or \
        "scrape" not in export, export  # a scrape may not have fallen inside an outage
