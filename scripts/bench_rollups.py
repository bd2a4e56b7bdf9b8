#!/usr/bin/env python3
"""Benchmark: why the apache-mode rollups are job-maintained tables and not plain views.

Loads synthetic one-minute readings for --meters meters over --days days into a fresh database,
then times the dashboard queries against the rollup table and against a plain view computing the
same aggregates over `readings` with time_bucket, and the cost of keeping the table current
(refreshing one day) against loading that day. Figures are ratios measured in one run, so the
machine's noise cancels out. Uses WATTWATCH_DATABASE_URL (a superuser or owner URL) or, when it
is unset, starts a throwaway stack with scripts/stack.py; the data goes into a scratch database
that is dropped at the end.

    .venv/bin/python scripts/bench_rollups.py --meters 100 --days 14
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from tests.support.scratch import create_database, drop_database  # noqa: E402
from timescale.migrate import migrate  # noqa: E402
from wattwatch.settings import Settings  # noqa: E402

VIEW = """CREATE VIEW hourly_view AS
SELECT time_bucket(INTERVAL '1 hour', time) AS bucket, meter_id, count(*) AS n_readings,
       avg(active_power_kw) AS active_power_kw_avg, max(active_power_kw) AS active_power_kw_max,
       avg(voltage_v) AS voltage_v_avg
FROM readings GROUP BY 1, 2"""
QUERIES = {
    "power per meter, last 7 days, 10 meters": (
        "SELECT bucket, meter_id, active_power_kw_avg FROM {rel} WHERE bucket >= %(end)s - INTERVAL '7 days'"
        " AND meter_id = ANY(%(meters)s) ORDER BY 1"),
    "readings per meter, last 24 h, all meters": (
        "SELECT meter_id, sum(n_readings) FROM {rel} WHERE bucket >= %(end)s - INTERVAL '24 hours' GROUP BY 1"),
    "average voltage, whole range": "SELECT avg(voltage_v_avg) FROM {rel}",
}


def timed(conn, query, params, repeat) -> float:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        conn.execute(query, params).fetchall()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def load(conn, meters: int, start: datetime, days: int) -> float:
    started = time.perf_counter()
    conn.execute(
        """INSERT INTO readings (meter_id, time, active_power_kw, voltage_v)
           SELECT 'm' || m, %(start)s + make_interval(mins => i),
                  1 + sin(i / 229.0) + m * 0.01, 230 + cos(i / 97.0)
           FROM generate_series(1, %(meters)s) m, generate_series(0, %(minutes)s - 1) i""",
        {"start": start, "meters": meters, "minutes": days * 1440},
    )
    return time.perf_counter() - started


def run(admin_url: str, meters: int, days: int, repeat: int) -> dict:
    """Measure in a scratch database created beside the admin URL's and dropped afterwards."""
    url = create_database(admin_url, "wattwatch_bench_rollups", replace=True)
    try:
        return measure(url, meters, days, repeat)
    finally:
        drop_database(admin_url, url)


def measure(url: str, meters: int, days: int, repeat: int) -> dict:
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn, Settings(_env_file=None, database_url=url))
        if conn.execute("SELECT to_regclass('readings_hourly')::text").fetchone()[0] is None:
            raise SystemExit("bench: migrations did not create readings_hourly")
        mode = conn.execute("SELECT DISTINCT mode FROM wattwatch_migrations").fetchone()[0]
        if mode != "apache":
            raise SystemExit("bench: this compares apache-mode rollup tables; the server is 'timescale'")
        conn.execute("INSERT INTO meters (meter_id) SELECT 'm' || m FROM generate_series(1, %s) m", (meters,))
        end = datetime(2026, 1, 1, tzinfo=timezone.utc)
        start = end - timedelta(days=days)
        load_seconds = load(conn, meters, start, days - 1)
        conn.execute("SELECT refresh_readings_rollups(%s, %s)", (start, end))
        conn.execute("VACUUM ANALYZE")
        conn.execute(VIEW)
        # Keeping the table current: load one more day, then refresh just that day.
        last_day_load = load(conn, meters, end - timedelta(days=1), 1)
        started = time.perf_counter()
        conn.execute("SELECT refresh_readings_rollups(%s, %s)", (end - timedelta(days=1), end))
        refresh_seconds = time.perf_counter() - started
        params = {"end": end, "meters": [f"m{i}" for i in range(1, 11)]}
        results = {}
        for name, query in QUERIES.items():
            table = timed(conn, query.format(rel="readings_hourly"), params, repeat)
            view = timed(conn, query.format(rel="hourly_view"), params, repeat)
            results[name] = {"table_ms": round(table * 1000, 2), "view_ms": round(view * 1000, 1),
                             "view_over_table": round(view / table, 1)}
    return {
        "meters": meters, "days": days, "rows": meters * days * 1440,
        "initial_load_s": round(load_seconds, 1),
        "refresh_one_day_over_load_one_day": round(refresh_seconds / last_day_load, 3),
        "queries": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=100)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    state = Path.home() / ".cache" / "wattwatch" / "stacks" / "bench-rollups"
    url = os.environ.get("WATTWATCH_DATABASE_URL")
    stack = [sys.executable, str(PROJECT / "scripts" / "stack.py")]
    if not url:
        info = json.loads(subprocess.run([*stack, "up", "--state", str(state)], check=True,
                                         capture_output=True, text=True).stdout)
        url = info["database_url"]
    try:
        print(json.dumps(run(url, args.meters, args.days, args.repeat), indent=2))
    finally:
        if not os.environ.get("WATTWATCH_DATABASE_URL"):
            subprocess.run([*stack, "down", "--state", str(state)], check=False)


if __name__ == "__main__":
    main()
