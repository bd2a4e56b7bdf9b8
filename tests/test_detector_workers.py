"""Three `detect run` workers on one database share the meters (`timescale.fleet`): each trains
and scores its third; one killed mid-cycle and one killed mid-backfill lose their meters to the
survivor within 30 s, and in the end every reading has exactly one score."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import psycopg

from detector.locks import SEED
from tests.conftest import PROJECT
from tests.support.readings import copy_frame
from tests.test_detector_synthetic import household
from tests.test_services_restart import metrics_url, scrape
from timescale.rendezvous import owner

WORKERS = ["w1", "w2", "w3"]
HISTORY = 2 * 1440
BACKLOG = 14 * 1440
HAND_OVER = 30  # seconds a dead worker's meters may take to reach the others


def meters_of_each(count: int) -> dict[str, list[str]]:
    """`count` live meters for each worker (ids picked so that the shares are equal), and a
    backfill meter that is w2's whether w3 lives or not."""
    shares = {worker: [] for worker in WORKERS}
    n = 0
    while any(len(share) < count for share in shares.values()):
        meter_id = f"f{n}"
        share = shares[owner(meter_id, WORKERS)]
        if len(share) < count:
            share.append(meter_id)
        n += 1
    shares["backfill"] = [next(f"b{n}" for n in range(100) if owner(f"b{n}", WORKERS) == "w2"
                               and owner(f"b{n}", ["w1", "w2"]) == "w2")]
    return shares


class Feed(threading.Thread):
    """One reading per live meter every half second, the next minute of each meter's frame."""

    def __init__(self, url: str, frames: dict[str, pd.DataFrame]):
        super().__init__(daemon=True)
        self.url, self.frames, self.stop, self.rows = url, frames, threading.Event(), 0

    def run(self) -> None:
        with psycopg.connect(self.url) as conn:
            for step in range(HISTORY, HISTORY + 1440):
                if self.stop.wait(0.5):
                    return
                for meter_id, frame in self.frames.items():
                    self.rows += copy_frame(conn, meter_id, frame.iloc[step:step + 1])
                conn.commit()


def live_workers(conn) -> list[tuple[str, int]]:
    return conn.execute("SELECT worker_id, meters FROM live_workers WHERE service = 'detector'"
                        " ORDER BY 1").fetchall()


def wait_for(what, condition, timeout: float, logs: dict[str, Path]):
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < deadline, (what, {w: p.read_text()[-3000:] for w, p in logs.items()})
        time.sleep(0.05)
    return found


def unscored(conn) -> int:
    return conn.execute("SELECT count(*) FROM readings r WHERE NOT EXISTS (SELECT FROM"
                        " anomaly_scores s WHERE s.meter_id = r.meter_id AND s.time = r.time)"
                        ).fetchone()[0]


def test_three_workers_share_the_meters_and_the_dead_ones_go_to_the_survivor(
        db_url, role_url, tmp_path):
    shares = meters_of_each(2)
    meters = [meter_id for share in shares.values() for meter_id in share]
    survivors = {worker: sum(owner(m, ["w1", "w2"]) == worker for m in meters)
                 for worker in ("w1", "w2")}
    frames = {meter_id: household(days=3, seed=40 + n) for n, meter_id in
              enumerate(m for w in WORKERS for m in shares[w])}
    (backfill,) = shares["backfill"]
    backfill_frame = household(days=16, seed=39)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WATTWATCH_")}
    processes, logs = {}, {}
    feed = Feed(db_url, frames)
    try:
        for worker in WORKERS:
            logs[worker] = tmp_path / f"{worker}.log"
            env = {**clean, "WATTWATCH_DATABASE_URL": role_url("wattwatch_jobs"),
                   "WATTWATCH_WORKER_ID": worker, "WATTWATCH_DETECTOR_BATCH_ROWS": "1000",
                   "WATTWATCH_DETECTOR_INTERVAL_SECONDS": "0.5", "PYTHONPATH": str(PROJECT)}
            with open(logs[worker], "w") as log_file:
                processes[worker] = subprocess.Popen(
                    [sys.executable, "-m", "wattwatch.cli", "detect", "run", "--metrics-port", "0"],
                    env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=log_file)
        with psycopg.connect(db_url, autocommit=True) as conn:
            # the meters arrive once the workers are seated: each trains its own share
            wait_for("three workers", lambda: len(live_workers(conn)) == 3, 60, logs)
            with conn.transaction():
                for meter_id in [*frames, backfill]:
                    conn.execute("INSERT INTO meters (meter_id) VALUES (%s)", (meter_id,))
                for meter_id, frame in [*frames.items(), (backfill, backfill_frame)]:
                    copy_frame(conn, meter_id, frame.iloc[:HISTORY])
            wait_for("every history scored", lambda: conn.execute(
                "SELECT count(*) FROM anomaly_scores").fetchone()[0] == 7 * HISTORY, 240, logs)
            for worker in WORKERS:
                trained = set(re.findall(r"meter (\w+): model version \d+ trained \(initial\)",
                                         logs[worker].read_text()))
                assert trained == set(shares[worker] + (shares["backfill"] if worker == "w2"
                                                        else [])), (worker, trained)
            assert live_workers(conn) == [("w1", 2), ("w2", 3), ("w3", 2)]
            exposition = scrape(metrics_url(logs["w1"]))
            assert 'wattwatch_detector_worker_meters{worker="w1"} 2.0' in exposition
            assert "wattwatch_detector_workers 3.0" in exposition

            feed.start()
            # w3 killed mid-cycle: while it holds the advisory lock of a meter it is scoring
            mine = shares["w3"]
            wait_for("w3 in a cycle", lambda: conn.execute(
                "SELECT count(*) FROM pg_locks l, unnest(%s::text[]) AS m WHERE l.locktype ="
                " 'advisory' AND l.granted AND l.objsubid = 1"
                " AND l.classid = ((hashtextextended(m, %s) >> 32) & 4294967295)::oid"
                " AND l.objid = (hashtextextended(m, %s) & 4294967295)::oid",
                (mine, SEED, SEED)).fetchone()[0], 60, logs)
            processes["w3"].send_signal(signal.SIGKILL)
            killed = time.monotonic()
            wait_for("w3's meters taken", lambda: live_workers(conn) == list(survivors.items()),
                     HAND_OVER, logs)
            assert time.monotonic() - killed < HAND_OVER

            # w2 killed mid-backfill: two weeks of its meter's readings arrive at once
            copy_frame(conn, backfill, backfill_frame.iloc[HISTORY:HISTORY + BACKLOG])
            scores = "SELECT count(*) FROM anomaly_scores WHERE meter_id = %s"
            wait_for("w2 mid-backfill", lambda: HISTORY + 2000 < conn.execute(
                scores, (backfill,)).fetchone()[0], 120, logs)
            processes["w2"].send_signal(signal.SIGKILL)
            killed = time.monotonic()
            assert conn.execute(scores, (backfill,)).fetchone()[0] < HISTORY + BACKLOG
            wait_for("w2's meters taken", lambda: live_workers(conn) == [("w1", 7)],
                     HAND_OVER, logs)
            assert time.monotonic() - killed < HAND_OVER

            feed.stop.set()
            feed.join()
            wait_for("every reading scored", lambda: unscored(conn) == 0, 180, logs)
            rows = conn.execute("SELECT count(*), count(DISTINCT (meter_id, time)) FROM"
                                " anomaly_scores").fetchone()
            assert rows == (7 * HISTORY + BACKLOG + feed.rows,) * 2  # each exactly once
            assert conn.execute("SELECT count(*) FROM readings").fetchone()[0] == rows[0]
            assert conn.execute("SELECT count(*) FROM models").fetchone()[0] == 7
            exposition = scrape(metrics_url(logs["w1"]))
            assert 'wattwatch_detector_worker_meters{worker="w1"} 7.0' in exposition
            assert "wattwatch_detector_workers 1.0" in exposition
            assert processes["w1"].poll() is None, logs["w1"].read_text()
        text = logs["w1"].read_text()
        assert "Traceback" not in text, text
        # w2 took w3's meters at a look of its own (w1, busy in a cycle, may have missed it)
        assert (f"2 live detector worker(s): w1, w2; this one (w2) holds {survivors['w2']} of 7"
                " meters") in logs["w2"].read_text()
        assert "1 live detector worker(s): w1; this one (w1) holds 7 of 7 meters" in text
    finally:
        feed.stop.set()
        for process in processes.values():
            if process.poll() is None:
                process.terminate()
        for process in processes.values():
            process.wait(timeout=30)
    with psycopg.connect(db_url) as conn:  # w1 left its seat when it stopped
        assert live_workers(conn) == []
