#!/usr/bin/env python3
"""Live benchmark: `wattwatch detect run` scoring --meters meters that each receive one new
reading every second; prints the 50th/95th percentile time from a reading's insert
(readings.ingested_at) to its score (anomaly_scores.scored_at).

WATTWATCH_DATABASE_URL must be a superuser URL of a TimescaleDB server; the script creates a
scratch database (dropped at the end), gives every meter three days of UCI history and a model,
then feeds readings for --seconds while the detector runs as the wattwatch_jobs role.

    WATTWATCH_DATABASE_URL=postgresql://... .venv/bin/python scripts/bench_detector_live.py --meters 100
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psycopg

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from detector import registry  # noqa: E402
from detector.readings import copy_frame, meters  # noqa: E402
from ingest.datasets import uci_household_csv  # noqa: E402
from ingest.fields import field_for  # noqa: E402
from timescale.connect import connect_url, with_database  # noqa: E402
from timescale.migrate import migrate  # noqa: E402
from timescale.scratch import create_database, drop_database  # noqa: E402
from wattwatch.settings import Settings  # noqa: E402

# The CLI of this checkout, run by the interpreter running this script.
WATTWATCH = [sys.executable, "-m", "wattwatch.cli"]
HISTORY_DAYS = 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=100)
    parser.add_argument("--seconds", type=int, default=30)
    args = parser.parse_args()
    admin = os.environ["WATTWATCH_DATABASE_URL"]
    name = f"ww_bench_live_{secrets.token_hex(4)}"
    url = create_database(admin, name)
    password = secrets.token_hex(8)
    settings = Settings(_env_file=None, database_url=url, jobs_password=password)
    detector = None
    try:
        with connect_url(url) as conn:
            migrate(conn, settings)
        uci = pd.read_csv(uci_household_csv(), parse_dates=["date_time"], index_col="date_time",
                          nrows=HISTORY_DAYS * 1440 + args.seconds + 10)
        uci.columns = [field_for(c) for c in uci.columns]
        start = pd.Timestamp.now(tz="UTC").floor("min") - pd.Timedelta(days=HISTORY_DAYS)
        uci.index = pd.date_range(start, periods=len(uci), freq="min")
        history, live = uci.iloc[:HISTORY_DAYS * 1440], uci.iloc[HISTORY_DAYS * 1440:]
        ids = [f"m{number:04d}" for number in range(args.meters)]
        with psycopg.connect(url) as conn:
            for meter_id in ids:
                conn.execute("INSERT INTO meters (meter_id) VALUES (%s)", (meter_id,))
                copy_frame(conn, meter_id, history)
            conn.commit()
            started = time.monotonic()
            for meter in meters(conn):
                registry.train(conn, meter, settings, reason="benchmark")
            conn.commit()
        print(f"{args.meters} meters with {HISTORY_DAYS} days each, models trained in "
              f"{time.monotonic() - started:.0f} s")
        env = {**os.environ, "PYTHONPATH": str(PROJECT), "WATTWATCH_DATABASE_URL": with_database(admin, name, "wattwatch_jobs",
                                                                     password)}
        detector = subprocess.Popen([*WATTWATCH, "detect", "run", "--metrics-port", "0"],
                                    env=env, stdout=subprocess.DEVNULL)
        time.sleep(5)  # the first cycle scores the history
        with psycopg.connect(url, autocommit=True) as conn:
            for second in range(args.seconds):
                tick = time.monotonic()
                row = live.iloc[[second]]
                with conn.transaction():
                    for meter_id in ids:
                        copy_frame(conn, meter_id, row)
                time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
            time.sleep(5)
            p50, p95, scored, fed = conn.execute(
                "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY lag),"
                " percentile_cont(0.95) WITHIN GROUP (ORDER BY lag), count(lag), count(*) FROM"
                " (SELECT extract(epoch FROM s.scored_at - r.ingested_at) AS lag FROM readings r"
                "  LEFT JOIN anomaly_scores s USING (meter_id, time) WHERE r.time >= %s) AS l",
                (live.index[0],)).fetchone()
        print(f"live: {fed:,} readings fed ({args.meters} meters x 1/s for {args.seconds} s), "
              f"{scored:,} scored; insert-to-score p50 {p50:.2f} s, p95 {p95:.2f} s")
    finally:
        if detector is not None:
            detector.send_signal(signal.SIGINT)
            detector.wait(timeout=30)
        drop_database(admin, url)


if __name__ == "__main__":
    main()
