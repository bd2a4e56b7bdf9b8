#!/usr/bin/env python3
"""Backfill benchmark: `wattwatch detect run --once` over the full UCI history (2,075,259
readings of one meter), end to end (read, features, model, writing scores and incidents), in
its own process so its peak RSS is measured alone.

WATTWATCH_DATABASE_URL must be a superuser URL of a TimescaleDB server (e.g. from
`python3 scripts/stack.py up --state /tmp/bench`); the script creates a scratch database,
migrates it, loads the readings by COPY (not timed), trains the meter's model (timed apart),
runs the backfill as the wattwatch_jobs role, prints the figures and drops the database.

    WATTWATCH_DATABASE_URL=postgresql://... .venv/bin/python scripts/bench_detector.py [--rows N]
"""

from __future__ import annotations

import argparse
import os
import resource
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psycopg

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from ingest.datasets import uci_household_csv  # noqa: E402
from tests.support.readings import copy_frame  # noqa: E402
from tests.support.scratch import create_database, drop_database  # noqa: E402
from timescale.connect import connect_url, with_database  # noqa: E402
from timescale.migrate import migrate  # noqa: E402
from wattwatch.fields import field_for  # noqa: E402
from wattwatch.settings import Settings  # noqa: E402

# The CLI of this checkout, run by the interpreter running this script.
WATTWATCH = [sys.executable, "-m", "wattwatch.cli"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=None, help="only the first N readings")
    parser.add_argument("--profile", metavar="FILE", help="run the backfill under cProfile, "
                        "writing its statistics to FILE (for pstats; the figures then include "
                        "the profiler's overhead)")
    args = parser.parse_args()
    admin = os.environ["WATTWATCH_DATABASE_URL"]
    name = f"ww_bench_detector_{secrets.token_hex(4)}"
    url = create_database(admin, name)
    password = secrets.token_hex(8)
    jobs_url = with_database(admin, name, "wattwatch_jobs", password)
    try:
        with connect_url(url) as conn:
            migrate(conn, Settings(_env_file=None, database_url=url, jobs_password=password))
        frame = pd.read_csv(uci_household_csv(), parse_dates=["date_time"], index_col="date_time",
                            nrows=args.rows)
        frame.columns = [field_for(c) for c in frame.columns]
        # The UCI times are Paris local time; the hours that do not exist or repeat at DST
        # changes cannot be placed and are left out (a few hundred readings).
        frame.index = frame.index.tz_localize("Europe/Paris", ambiguous="NaT", nonexistent="NaT")
        frame = frame[frame.index.notna() & ~frame.index.duplicated()]
        started = time.monotonic()
        with psycopg.connect(url) as conn:
            conn.execute("INSERT INTO meters (meter_id, timezone, tariff_per_kwh)"
                         " VALUES ('uci', 'Europe/Paris', 0.2)")
            copy_frame(conn, "uci", frame)
        print(f"loaded {len(frame):,} readings in {time.monotonic() - started:.1f} s (not timed)")
        env = {**os.environ, "PYTHONPATH": str(PROJECT), "WATTWATCH_DATABASE_URL": jobs_url}
        started = time.monotonic()
        subprocess.run([*WATTWATCH, "detect", "train", "--meter", "uci"], env=env, check=True)
        print(f"training (28 days) took {time.monotonic() - started:.1f} s")
        profile = ["-m", "cProfile", "-o", args.profile] if args.profile else []
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.monotonic()
        subprocess.run([sys.executable, *profile, *WATTWATCH[1:], "detect", "run", "--once"],
                       env=env, check=True)
        seconds = time.monotonic() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        peak_kib = after.ru_maxrss
        with psycopg.connect(url) as conn:
            scores, anomalies = conn.execute(
                "SELECT count(*), count(*) FILTER (WHERE is_anomaly) FROM anomaly_scores").fetchone()
            incidents = conn.execute("SELECT count(*) FROM anomaly_incidents").fetchone()[0]
        print(f"backfill: {scores:,} scores ({anomalies:,} anomalous, {incidents:,} incidents) "
              f"in {seconds:.1f} s = {scores / seconds:,.0f} readings/s end to end; "
              f"peak RSS of the detector process {peak_kib / 1024:.0f} MiB; its CPU time "
              f"{cpu:.1f} s (the database server's is not counted)")
        # Reference in the same run: the database alone writing the same scores into an
        # identical empty hypertable (same indexes and chunk interval), the floor under any
        # detector here.
        with psycopg.connect(url) as conn:
            conn.execute("CREATE TABLE reference_scores (LIKE anomaly_scores INCLUDING ALL)")
            conn.execute("SELECT create_hypertable('reference_scores', by_range('time',"
                         " (SELECT time_interval FROM timescaledb_information.dimensions"
                         "  WHERE hypertable_name = 'anomaly_scores')), create_default_indexes => false)")
            conn.commit()
            started = time.monotonic()
            conn.execute("INSERT INTO reference_scores SELECT * FROM anomaly_scores")
            conn.commit()
            floor = time.monotonic() - started
        print(f"reference: INSERT ... SELECT of the same scores into an identical hypertable "
              f"{floor:.1f} s = {scores / floor:,.0f} rows/s; the backfill takes "
              f"{seconds / floor:.1f}x that")
    finally:
        drop_database(admin, url)


if __name__ == "__main__":
    main()
