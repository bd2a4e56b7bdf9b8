"""`wattwatch drift run` end to end: real UCI readings in the real TimescaleDB, the CLI as the
jobs role, drift_reports and retrain requests, and the service scraped by the real Prometheus."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
import urllib.request
from datetime import datetime, timedelta, timezone

import pandas as pd
import psycopg
import pytest

from tests.conftest import prometheus_query
from tests.test_cli import WATTWATCH, one_line_error, run_cli
from wattwatch.fields import FIELDS, field_for

START = datetime(2007, 1, 1, tzinfo=timezone.utc)
CURRENT_FROM = START + timedelta(days=28)
CURRENT_TO = START + timedelta(days=35)
WINDOW_ARGS = ["--current-to", CURRENT_TO.isoformat(), "--current-days", "7", "--reference-days", "28"]
VOLTAGE_STEP_V = 10.0  # about three standard deviations of this household's voltage


@pytest.fixture(scope="module")
def loaded(db_url, uci_csv):
    """Five weeks of the UCI household as meter 'house'; the same with the voltage raised by
    10 V in the last week as 'house-volt'; two days of it as 'sparse'."""
    frame = pd.read_csv(uci_csv, nrows=60 * 24 * 90)
    frame.columns = ["time"] + [field_for(column) for column in frame.columns[1:]]
    frame["time"] = pd.to_datetime(frame["time"]).dt.tz_localize("UTC")
    frame = frame[(frame["time"] >= START) & (frame["time"] < CURRENT_TO)]
    with psycopg.connect(db_url, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO meters (meter_id, timezone) VALUES ('house', 'UTC'), "
                    "('house-volt', 'UTC'), ('sparse', 'UTC')")
        with cur.copy(f"COPY readings (meter_id, time, {', '.join(FIELDS)}) FROM STDIN") as copy:
            for row in frame.itertuples(index=False):
                values = [getattr(row, field) for field in FIELDS]
                copy.write_row(["house", row.time, *values])
                stepped = list(values)
                if row.time >= CURRENT_FROM:
                    stepped[list(FIELDS).index("voltage_v")] += VOLTAGE_STEP_V
                copy.write_row(["house-volt", row.time, *stepped])
                if row.time >= CURRENT_TO - timedelta(days=2):
                    copy.write_row(["sparse", row.time, *values])
    return db_url


@pytest.fixture(scope="module")
def jobs_env(loaded, role_url):
    # One judging process keeps each CLI run quick; the first full run uses two (the pool).
    return {"WATTWATCH_DATABASE_URL": role_url("wattwatch_jobs"), "WATTWATCH_DRIFT_WORKERS": "1"}


def drift_once(env, *args, workers: int = 1) -> dict:
    result = run_cli(["drift", "run", "--once", "--json", *WINDOW_ARGS, *args],
                     {**env, "WATTWATCH_DRIFT_WORKERS": str(workers)}, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def by_meter(report: dict) -> dict:
    return {meter["meter_id"]: meter for meter in report["meters"]}


def test_full_run_reports_stores_and_requests_retraining_once(jobs_env, conn):
    report = drift_once(jobs_env, "--mode", "full", workers=2)
    assert report["mode"] == "full" and report["overall_status"] == "critical"
    meters = by_meter(report)
    assert set(meters) == {"house", "house-volt", "sparse"}

    volt = meters["house-volt"]
    assert volt["analysis_period"]["current"] == f"{CURRENT_FROM.isoformat()} to {CURRENT_TO.isoformat()}"
    assert volt["analysis_period"]["baseline"] == f"{START.isoformat()} to {CURRENT_FROM.isoformat()}"
    assert set(volt["metrics"]) == set(FIELDS)
    voltage = volt["metrics"]["voltage_v"]
    assert voltage["status"] == "critical" and voltage["psi"] >= 0.5
    assert voltage["ks_statistic"] > 0.5 and voltage["wasserstein_norm"] > 2
    assert voltage["recommendation"].startswith("retrain requested")
    assert volt["overall_status"] == "critical"
    assert volt["recommended_actions"][0] == "retrain the anomaly model of meter house-volt (request written)"
    # The same data without the step: voltage judged on its own, identical elsewhere.
    house = meters["house"]
    assert house["metrics"]["voltage_v"]["psi"] < voltage["psi"] / 5
    for feature in set(FIELDS) - {"voltage_v"}:
        assert house["metrics"][feature] == volt["metrics"][feature]

    sparse = meters["sparse"]
    assert sparse["overall_status"] == "insufficient_data"
    assert all(m["status"] == "insufficient_data" and m["psi"] is None for m in sparse["metrics"].values())
    assert all(m["reference_n"] == 0 for m in sparse["metrics"].values())

    rows = conn.execute("SELECT meter_id, feature, status, psi, ks_statistic, reference_n, current_n, "
                        "mode FROM drift_reports WHERE run_id = %s", [report["run_id"]]).fetchall()
    assert len(rows) == 3 * len(FIELDS)
    stored = {(meter, feature): (status, psi, ks) for meter, feature, status, psi, ks, *_ in rows}
    assert stored["house-volt", "voltage_v"] == ("critical", voltage["psi"], voltage["ks_statistic"])
    assert {row[7] for row in rows} == {"full"}

    pending = "SELECT meter_id, requested_by, reason FROM retrain_requests WHERE handled_at IS NULL"
    requests = conn.execute(pending).fetchall()
    assert [(m, by) for m, by, _ in requests] == [("house-volt", "drift")]
    assert "critical drift on voltage_v" in requests[0][2] and report["run_id"] in requests[0][2]

    # A second run while the request is pending writes its reports but no second request.
    again = drift_once(jobs_env, "--mode", "light")
    assert by_meter(again)["house-volt"]["recommended_actions"][0].endswith("(a request was already pending)")
    assert by_meter(again)["house-volt"]["metrics"]["voltage_v"]["ks_statistic"] is None  # light: PSI only
    assert conn.execute("SELECT count(*) FROM drift_reports").fetchone()[0] == 6 * len(FIELDS)
    assert len(conn.execute(pending).fetchall()) == 1
    # Once the detector has handled it, the next critical run asks again.
    conn.execute("UPDATE retrain_requests SET handled_at = now()")
    drift_once(jobs_env, "--mode", "light", "--meter", "house-volt")
    assert [m for m, _, _ in conn.execute(pending).fetchall()] == ["house-volt"]


def test_reference_window_defaults_to_the_active_model(jobs_env, conn):
    train_from, train_to = START + timedelta(days=7), START + timedelta(days=21)
    version = conn.execute(
        "INSERT INTO models (meter_id, algorithm, train_from, train_to, reason) "
        "VALUES ('house', 'test', %s, %s, 'test') RETURNING version", [train_from, train_to]).fetchone()[0]
    try:
        period = by_meter(drift_once(jobs_env, "--meter", "house"))["house"]["analysis_period"]
        assert period["baseline"] == f"{train_from.isoformat()} to {train_to.isoformat()}"
        assert period["baseline_source"] == f"model {version}"
        # A model trained into the current window: only what it has not seen is judged.
        conn.execute("UPDATE models SET train_to = %s WHERE version = %s",
                     [CURRENT_FROM + timedelta(days=3), version])
        period = by_meter(drift_once(jobs_env, "--meter", "house"))["house"]["analysis_period"]
        assert period["current"] == f"{(CURRENT_FROM + timedelta(days=3)).isoformat()} to {CURRENT_TO.isoformat()}"
        # Trained up to the end: nothing new to judge yet.
        conn.execute("UPDATE models SET train_to = %s WHERE version = %s", [CURRENT_TO, version])
        fresh = by_meter(drift_once(jobs_env, "--meter", "house"))["house"]
        assert fresh["overall_status"] == "insufficient_data"
        assert {m["current_n"] for m in fresh["metrics"].values()} == {0}
        given = drift_once(jobs_env, "--meter", "house", "--reference-from", START.isoformat(),
                           "--reference-to", (START + timedelta(days=14)).isoformat())
        assert by_meter(given)["house"]["analysis_period"]["baseline_source"] == "given"
    finally:
        conn.execute("UPDATE models SET status = 'retired' WHERE version = %s", [version])


def test_summaries_are_reused_and_late_readings_rebuild_them(jobs_env, conn):
    """Against a model's training window a run stores the baseline and each complete current
    day's summary; the next run reads them instead of the readings and reports the same; a
    reading arriving late into a summarised day, or into the reference window, rebuilds what
    it touches; deleting every summary (as if a run had stopped before storing) changes nothing."""
    env = {**jobs_env, "WATTWATCH_DRIFT_INGEST_MARGIN_MINUTES": "0"}  # the module's loads are done
    train_to = START + timedelta(days=21)
    version = conn.execute(
        "INSERT INTO models (meter_id, algorithm, train_from, train_to, reason) "
        "VALUES ('house-volt', 'test', %s, %s, 'test') RETURNING version", [START, train_to]).fetchone()[0]
    days = "SELECT s.day, s.computed_at FROM drift_day_summaries s JOIN drift_baselines b USING (baseline_id) " \
           "WHERE b.meter_id = 'house-volt' ORDER BY s.day"
    try:
        first = by_meter(drift_once(env, "--meter", "house-volt", "--mode", "full"))["house-volt"]
        stored = conn.execute(days).fetchall()
        assert [day for day, _ in stored] == [(CURRENT_FROM + timedelta(days=i)).date() for i in range(7)]
        baseline = conn.execute("SELECT baseline_id, reference_from, reference_to FROM drift_baselines "
                                "WHERE meter_id = 'house-volt'").fetchall()
        assert [(start, end) for _, start, end in baseline] == [(START, train_to)]
        again = by_meter(drift_once(env, "--meter", "house-volt", "--mode", "full"))["house-volt"]
        assert again["metrics"] == first["metrics"] and again["metrics"]["voltage_v"]["status"] == "critical"
        assert conn.execute(days).fetchall() == stored  # reused, not rebuilt
        # Late readings, between the minutes: one in the current window, one in the reference.
        late_day = CURRENT_FROM + timedelta(days=2)
        conn.execute("INSERT INTO readings (meter_id, time, voltage_v) VALUES ('house-volt', %s, 250), "
                     "('house-volt', %s, 240)", [late_day + timedelta(seconds=30), START + timedelta(seconds=30)])
        late = by_meter(drift_once(env, "--meter", "house-volt", "--mode", "full"))["house-volt"]
        voltage = late["metrics"]["voltage_v"]
        assert (voltage["current_n"], voltage["reference_n"]) == (
            first["metrics"]["voltage_v"]["current_n"] + 1, first["metrics"]["voltage_v"]["reference_n"] + 1)
        assert conn.execute("SELECT baseline_id FROM drift_baselines WHERE meter_id = 'house-volt'"
                            ).fetchone()[0] != baseline[0][0]
        # Nothing cached: the same report as from the summaries.
        conn.execute("DELETE FROM drift_baselines")
        cold = by_meter(drift_once(env, "--meter", "house-volt", "--mode", "full"))["house-volt"]
        assert cold["metrics"] == late["metrics"]
        warm = by_meter(drift_once(env, "--meter", "house-volt", "--mode", "full"))["house-volt"]
        assert warm["metrics"] == cold["metrics"]
    finally:
        conn.execute("DELETE FROM readings WHERE meter_id = 'house-volt' AND extract(second FROM time) = 30")
        conn.execute("UPDATE models SET status = 'retired' WHERE version = %s", [version])


def test_user_errors_are_one_line(jobs_env):
    line = one_line_error(run_cli(["drift", "run", "--once", "--meter", "nope", *WINDOW_ARGS], jobs_env))
    assert line == "wattwatch drift: unknown meter(s): nope (not in the meters table)"
    line = one_line_error(run_cli(["drift", "run", "--once", "--reference-from", START.isoformat()], jobs_env))
    assert line == "wattwatch drift: --reference-from and --reference-to go together"
    usage = run_cli(["drift", "run", "--current-days", "-3"], jobs_env)
    assert usage.returncode == 2 and "expected a positive number of days, got '-3'" in usage.stderr


def start_service(env: dict, *args: str, cwd=None) -> tuple[subprocess.Popen, int]:
    """`wattwatch drift run` as a service on a free port, with only the given WATTWATCH_*
    variables; returns the process and the port it announced."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WATTWATCH_")}
    service = subprocess.Popen([WATTWATCH, "drift", "run", "--metrics-port", "0", *args], env={**clean, **env},
                               cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = service.stderr.readline()
    assert re.match(r"\S+ INFO drift: drift service: metrics on http://127\.0\.0\.1:\d+/metrics", first), first
    return service, int(re.search(r":(\d+)/metrics", first)[1])


def log_line(service: subprocess.Popen, needle: str) -> str:
    """The first line the service logs (stderr) that holds `needle`."""
    for line in service.stderr:
        if needle in line:
            return line
    raise AssertionError(f"the service ended without logging {needle!r}")


def test_service_publishes_results_that_prometheus_scrapes(jobs_env, stack, scrape_target):
    service, port = start_service(jobs_env, "--mode", "light", *WINDOW_ARGS)
    try:
        summary = log_line(service, " run ")  # the start-up pass is done once this is logged
        assert "INFO drift: light run " in summary and "1 critical" in summary, summary
        target = scrape_target("drift", port)
        base = stack["prometheus_url"]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status = prometheus_query(
                base, f'wattwatch_drift_status{{{target},meter_id="house-volt",feature="voltage_v"}}')
            if status:
                break
            time.sleep(1)
        assert [float(s["value"][1]) for s in status] == [3.0]
        meter_status = prometheus_query(base, f'wattwatch_drift_meter_status{{{target},meter_id="sparse"}}')
        assert meter_status[0]["value"][1] == "-1"
        assert prometheus_query(base, f'wattwatch_drift_psi{{{target},meter_id="sparse"}}') == []
        psi = prometheus_query(
            base, f'wattwatch_drift_psi{{{target},meter_id="house-volt",feature="voltage_v"}}')
        assert float(psi[0]["value"][1]) >= 0.5
        last = prometheus_query(base, f'wattwatch_drift_last_run_timestamp_seconds{{{target},mode="light"}}')
        assert abs(float(last[0]["value"][1]) - time.time()) < 300
        runs = prometheus_query(base, f'wattwatch_drift_runs_total{{{target},mode="light"}}')
        assert runs[0]["value"][1] == "1"
    finally:
        service.terminate()
        service.wait(timeout=10)


def test_service_survives_a_failed_pass_and_counts_it(tmp_path):
    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]
    service, port = start_service({"WATTWATCH_DATABASE_URL": f"postgresql://u:p@127.0.0.1:{dead}/x",
                                   "WATTWATCH_CONNECT_ATTEMPTS": "1",
                                   "WATTWATCH_CONNECT_TIMEOUT_SECONDS": "1"}, cwd=tmp_path)
    try:
        error = log_line(service, "pass failed")
        assert f"ERROR drift: light pass failed: cannot connect to the database at u@127.0.0.1:{dead}/x" in error
        assert error.rstrip().endswith("retrying in 30 s"), error
        assert service.poll() is None  # still serving
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            exposition = response.read().decode()
        assert 'wattwatch_drift_run_errors_total{mode="light"} 1.0' in exposition
        assert 'wattwatch_drift_runs_total{mode="light"} 0.0' in exposition
    finally:
        service.terminate()
        service.wait(timeout=10)


def test_a_meter_with_a_new_model_is_judged_at_the_next_catch_up(loaded, conn):
    """A new model is a new reference: the service judges its meter within a minute, in full
    when no full pass ran in the last week, then leaves it to the schedule. A failed pass is
    retried with backoff instead of waiting for the next day."""
    from detector.readings import meters
    from detector.registry import train
    from drift import catch_up
    from drift.metrics import DriftMetrics
    from drift.runner import run_pass
    from drift.service import RETRY_SECONDS, DriftService
    from prometheus_client import CollectorRegistry

    from tests.conftest import settings_for

    settings = settings_for(loaded, drift_workers=1)
    house = next(meter for meter in meters(conn) if meter.meter_id == "house")
    with conn.transaction():
        train(conn, house, settings, start=START, end=CURRENT_FROM, reason="test")
    assert catch_up.meters_with_new_models(conn) == ["house"]
    expected_mode = "full" if catch_up.full_pass_due(conn) else "light"
    runs = []

    def run(mode, chosen):
        runs.append((mode, chosen))
        return run_pass(conn, settings, mode=mode, meters=chosen, current_to=CURRENT_TO, current_days=7)

    service = DriftService(settings, run, lambda query: query(conn), DriftMetrics(CollectorRegistry()), False)
    service.catch_up()
    assert runs == [(expected_mode, ["house"])]
    assert catch_up.meters_with_new_models(conn) == []
    assert not catch_up.full_pass_due(conn)
    service.catch_up()
    assert len(runs) == 1  # judged once

    def broken(mode, chosen):
        raise psycopg.OperationalError("server closed the connection unexpectedly")

    service.run = broken
    assert service.job("light") is False
    when, wait, mode = service.retry
    assert (wait, mode) == (RETRY_SECONDS[0], "light") and when > time.monotonic()
    service.retry = (time.monotonic(), wait, mode)  # its time has come
    service.run = run
    service.catch_up()
    assert runs[-1] == ("light", None) and service.retry is None


def test_once_goes_on_past_a_meter_that_cannot_be_judged_and_exits_1(jobs_env, conn):
    """A meter whose time zone does not exist fails alone: the others are judged and stored,
    and the run says which meter failed and why, with exit status 1."""
    conn.execute("INSERT INTO meters (meter_id, timezone) VALUES ('lost', 'Mars/Olympus')")
    conn.execute("INSERT INTO readings (meter_id, time, active_power_kw) SELECT 'lost', t, 1.0"
                 " FROM generate_series(%s::timestamptz, %s, interval '1 hour') AS t", (START, CURRENT_TO))
    try:
        before = conn.execute("SELECT count(DISTINCT run_id) FROM drift_reports").fetchone()[0]
        result = run_cli(["drift", "run", "--once", "--mode", "light", *WINDOW_ARGS], jobs_env, timeout=120)
        assert result.returncode == 1
        assert "4 meter(s)" not in result.stdout and "3 meter(s)" in result.stdout
        assert one_line_error(result).startswith(
            "wattwatch drift: 1 meter(s) could not be judged: lost (ZoneInfoNotFoundError")
        judged = conn.execute("SELECT DISTINCT meter_id FROM drift_reports WHERE run_id = (SELECT run_id"
                              " FROM drift_reports ORDER BY run_at DESC LIMIT 1) ORDER BY 1").fetchall()
        assert judged == [("house",), ("house-volt",), ("sparse",)]
        assert conn.execute("SELECT count(DISTINCT run_id) FROM drift_reports").fetchone()[0] == before + 1
    finally:
        conn.execute("DELETE FROM readings WHERE meter_id = 'lost'")
        conn.execute("DELETE FROM meters WHERE meter_id = 'lost'")
