"""`detect run` survives a restart of the PostgreSQL server (fast, then immediate: a crash)
while readings arrive and a new meter's history is being trained and backfilled: it
reconnects with backoff, logs each outage once when it starts and once when it ends, and
every reading ends up with exactly one score.

A restart cuts every connection to the session's cluster, so this module holds none open
across one: its fixtures and checks open a connection for each use. Other modules run before
or after it, never during.
"""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import sys
import threading
import time

import psycopg

from tests.conftest import PROJECT, restart_database
from tests.support.readings import copy_frame
from tests.test_detector_synthetic import household

HISTORY = 3 * 1440
METERS = ("r1", "r2")  # live meters
LATE_DAYS = 7  # history of a meter that arrives just before the first restart
UNSCORED = ("SELECT count(*) FROM readings r WHERE NOT EXISTS (SELECT FROM anomaly_scores s"
            " WHERE s.meter_id = r.meter_id AND s.time = r.time)")


def _query(url: str, sql: str, params=()) -> list[tuple]:
    """One query on a connection of its own (a restart may have cut any earlier one)."""
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


def _wait_until_scored(url: str, timeout: float) -> int:
    """Unscored readings left when every reading has a score or the time is up."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            left = _query(url, UNSCORED)[0][0]
        except psycopg.OperationalError:
            left = -1  # the server is restarting
        if left == 0 or time.monotonic() > deadline:
            return left
        time.sleep(0.3)


class Feeder(threading.Thread):
    """Stores the next reading of every meter every 0.1 s, in one transaction, as ingest
    would; across a restart it reconnects and stores again what it cannot know was committed
    (ON CONFLICT DO NOTHING)."""

    def __init__(self, url: str, frames: dict):
        super().__init__(name="feeder", daemon=True)
        self.url, self.frames = url, frames
        self.stop = threading.Event()
        self.fed = 0  # live readings of each meter committed
        self.interruptions = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        conn = None
        try:
            while not self.stop.is_set():
                try:
                    conn = conn or psycopg.connect(self.url)
                    with conn.transaction():
                        for meter_id, frame in self.frames.items():
                            row = frame.iloc[HISTORY + self.fed]
                            values = [None if math.isnan(v) else float(v) for v in row]
                            conn.execute(
                                "INSERT INTO readings (time, meter_id, " + ", ".join(frame.columns)
                                + ") VALUES (%s, %s" + ", %s" * len(values) + ")"
                                " ON CONFLICT DO NOTHING", [row.name, meter_id, *values])
                    self.fed += 1
                except psycopg.OperationalError:
                    self.interruptions += 1
                    if conn is not None:
                        conn.close()
                    conn = None
                    time.sleep(0.2)
                    continue
                time.sleep(0.1)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc
        finally:
            if conn is not None:
                conn.close()


def test_detect_run_survives_server_restarts_and_scores_every_reading_once(
        stack, durable, role_url, tmp_path):
    url = durable
    frames = {meter_id: household(days=4, seed=90 + n) for n, meter_id in enumerate(METERS)}
    with psycopg.connect(url) as conn:
        for meter_id, frame in frames.items():
            conn.execute("INSERT INTO meters (meter_id, timezone) VALUES (%s, 'Europe/Paris')",
                         (meter_id,))
            copy_frame(conn, meter_id, frame.iloc[:HISTORY])
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WATTWATCH_")}
    env = {**clean, "WATTWATCH_DATABASE_URL": role_url("wattwatch_jobs"),
           "WATTWATCH_DETECTOR_INTERVAL_SECONDS": "0.2", "WATTWATCH_CONNECT_TIMEOUT_SECONDS": "2",
           "WATTWATCH_DETECTOR_BATCH_ROWS": "1000", "PYTHONPATH": str(PROJECT)}
    log_path = tmp_path / "detector.log"
    with open(log_path, "w") as log_file:
        detector = subprocess.Popen(
            [sys.executable, "-m", "wattwatch.cli", "detect", "run", "--metrics-port", "0"],
            env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=log_file)
    feeder = Feeder(url, frames)
    try:
        assert _wait_until_scored(url, 240) == 0, log_path.read_text()
        feeder.start()
        time.sleep(2)
        with psycopg.connect(url) as conn:  # trained, then scored in batches, across the restart
            conn.execute("INSERT INTO meters (meter_id, timezone) VALUES ('r3', 'Europe/Paris')")
            copy_frame(conn, "r3", household(days=LATE_DAYS, seed=99))
        time.sleep(1)
        restart_database(stack, "fast")
        time.sleep(4)
        restart_database(stack, "immediate")
        time.sleep(4)
        feeder.stop.set()
        feeder.join(timeout=30)
        assert feeder.error is None, feeder.error
        assert feeder.interruptions >= 2  # the feeder saw both restarts too
        assert _wait_until_scored(url, 120) == 0, log_path.read_text()
        assert detector.poll() is None, log_path.read_text()
        counts = _query(url, "SELECT r.meter_id, count(*), count(s.time), count(DISTINCT s.time)"
                        " FROM readings r LEFT JOIN anomaly_scores s USING (meter_id, time)"
                        " GROUP BY r.meter_id ORDER BY 1")
        total, late = HISTORY + feeder.fed, LATE_DAYS * 1440
        assert counts == [(meter_id, total, total, total) for meter_id in METERS] + [
            ("r3", late, late, late)], counts
        scores = _query(url, "SELECT count(*), count(DISTINCT (meter_id, time)) FROM anomaly_scores")
        assert scores == [(2 * total + late, 2 * total + late)]
        models = _query(url, "SELECT meter_id, count(*) FILTER (WHERE status = 'active')"
                        " FROM models GROUP BY 1 ORDER BY 1")
        assert models == [("r1", 1), ("r2", 1), ("r3", 1)]
        incidents = _query(url, "SELECT meter_id, start_time, count(*) FROM anomaly_incidents"
                           " GROUP BY 1, 2 HAVING count(*) > 1")
        assert incidents == []
    finally:
        feeder.stop.set()
        detector.send_signal(signal.SIGINT)
        try:
            detector.wait(timeout=30)
        except subprocess.TimeoutExpired:
            detector.kill()
            detector.wait()
    log = log_path.read_text()
    assert "Traceback" not in log, log
    lost = re.findall(r"WARNING detector: database connection lost \((\w+): ", log)
    back = re.findall(r"INFO detector: database back after (\d+\.\d) s; scoring goes on from "
                      r"the watermarks\n", log)
    # Two restarts are one outage or two, as the timing falls; each outage is two lines.
    assert 1 <= len(lost) == len(back) <= 2, log
    assert re.search(r"INFO detector: wattwatch \S+ detect run starting as database role "
                     r"wattwatch_jobs: interval_s=0\.2, train_days=28\.0, alarm_rate=0\.0001, "
                     r"batch_rows=1000, worker=\S+, metrics=http://127\.0\.0\.1:\d+/metrics\n", log), log
    assert "password" not in log.lower() and role_url("wattwatch_jobs").split(":")[2].split("@")[0] not in log


def test_backoff_doubles_up_to_its_cap_and_an_outage_is_two_lines(caplog):
    from itertools import islice

    from timescale.reconnect import Outage, backoff, reconnect
    from wattwatch import logs

    assert list(islice(backoff(), 8)) == [0.5, 1, 2, 4, 8, 16, 30, 30]
    clock = [100.0]
    outage = Outage(logs.get("test"), "the test goes on", clock=lambda: clock[0])
    attempts, slept = [], []

    def refused():
        attempts.append(1)
        if len(attempts) < 4:
            raise psycopg.OperationalError("connection refused")
        return "connection"

    with caplog.at_level("INFO", logger="wattwatch.test"):
        outage.lost(psycopg.errors.AdminShutdown("terminating connection"))
        assert reconnect(refused, outage, sleep=slept.append) == "connection"
        clock[0] += 7.5
        outage.over()
        outage.over()
    assert slept == [0.5, 1, 2, 4]
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "database connection lost (AdminShutdown: terminating connection);"
                    " reconnecting with backoff up to 30 s"),
        ("INFO", "database back after 7.5 s; the test goes on")]
