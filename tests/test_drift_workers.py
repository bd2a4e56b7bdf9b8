"""Two `drift run` workers share the meters: each judges its half, and when one dies before
judging its half the other takes the meters over within 30 s and judges them, once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import psycopg

from tests.conftest import PROJECT
from tests.support.readings import copy_frame
from tests.test_detector_synthetic import household
from tests.test_detector_workers import wait_for
from tests.test_services_restart import metrics_url, scrape
from timescale.rendezvous import owner

HAND_OVER = 30


def test_two_drift_workers_share_the_meters_and_the_survivor_judges_the_dead_ones(
        db_url, role_url, tmp_path):
    meters = [f"d{n}" for n in range(6)]
    theirs = sorted(m for m in meters if owner(m, ["a", "b"]) == "b")
    assert 0 < len(theirs) < len(meters)  # both have a share
    start = (datetime.now(timezone.utc) - timedelta(days=4)).strftime("%Y-%m-%d")
    with psycopg.connect(db_url) as conn:
        for n, meter_id in enumerate(meters):
            conn.execute("INSERT INTO meters (meter_id) VALUES (%s)", (meter_id,))
            copy_frame(conn, meter_id, household(days=4, seed=60 + n, start=start))
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WATTWATCH_")}
    processes, logs = {}, {}

    def start_worker(worker: str) -> None:
        logs[worker] = tmp_path / f"{worker}.log"
        env = {**clean, "WATTWATCH_DATABASE_URL": role_url("wattwatch_jobs"),
               "WATTWATCH_WORKER_ID": worker, "PYTHONPATH": str(PROJECT),
               "WATTWATCH_DRIFT_WORKERS": "1", "WATTWATCH_DRIFT_MIN_VALUES": "100",
               "WATTWATCH_DRIFT_MIN_REFERENCE_DAYS": "2", "WATTWATCH_DRIFT_CURRENT_DAYS": "1"}
        with open(logs[worker], "w") as log_file:
            processes[worker] = subprocess.Popen(
                [sys.executable, "-m", "wattwatch.cli", "drift", "run", "--mode", "light",
                 "--metrics-port", "0"], env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                stderr=log_file)

    def seated(conn) -> list[tuple[str, int]]:
        return conn.execute("SELECT worker_id, meters FROM live_workers WHERE service = 'drift'"
                            " ORDER BY 1").fetchall()

    def judged(conn) -> dict[str, list]:
        """Each meter's runs: (run_id, number of features) in run order."""
        rows = conn.execute("SELECT meter_id, run_id, count(*) FROM drift_reports"
                            " GROUP BY 1, 2 ORDER BY 1, min(run_at)").fetchall()
        found = {}
        for meter_id, run_id, features in rows:
            found.setdefault(meter_id, []).append((run_id, features))
        return found

    try:
        with psycopg.connect(db_url, autocommit=True) as conn:
            # b takes its seat, then stops before its first pass (it will die without judging)
            start_worker("b")
            wait_for("b seated", lambda: seated(conn), 60, logs)
            processes["b"].send_signal(signal.SIGSTOP)
            start_worker("a")
            mine = sorted(set(meters) - set(theirs))
            wait_for("a's pass", lambda: sorted(judged(conn)) == mine, 120, logs)
            # b's last look, before it stopped, found it alone: the others' verdicts are kept
            # apart meter by meter by advisory locks while two workers disagree
            assert seated(conn) == [("a", len(mine)), ("b", 6)]
            exposition = scrape(metrics_url(logs["a"]))
            assert f'wattwatch_drift_worker_meters{{worker="a"}} {len(mine)}.0' in exposition
            assert "wattwatch_drift_workers 2.0" in exposition

            processes["b"].send_signal(signal.SIGKILL)
            killed = time.monotonic()
            wait_for("b's meters taken", lambda: seated(conn) == [("a", 6)], HAND_OVER, logs)
            assert time.monotonic() - killed < HAND_OVER
            runs = wait_for("b's meters judged", lambda: len(judged(conn)) == 6 and judged(conn),
                            60, logs)
            time.sleep(6)  # one more look at the workers: nothing is judged twice
            assert judged(conn) == runs
            assert all(len(run) == 1 for run in runs.values()), runs  # one run each
            assert len({run[0][0] for run in runs.values()}) == 2  # a's pass, then b's meters
            exposition = scrape(metrics_url(logs["a"]))
            assert 'wattwatch_drift_worker_meters{worker="a"} 6.0' in exposition
            assert "wattwatch_drift_workers 1.0" in exposition
            assert processes["a"].poll() is None, logs["a"].read_text()
        text = logs["a"].read_text()
        assert "Traceback" not in text, text
        assert (f"judging {len(theirs)} meter(s) taken over that missed the light pass: "
                + ", ".join(theirs)) in text
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
        for process in processes.values():
            process.wait(timeout=30)
