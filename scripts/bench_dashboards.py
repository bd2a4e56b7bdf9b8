#!/usr/bin/env python3
"""Benchmark: the Grafana dashboards' SQL and the KPI exporter's scrape, at scale.

1. Dashboards over the full UCI history (2,075,259 one-minute readings of one meter, Dec 2006 -
   Nov 2010), loaded with `wattwatch ingest file`, with a score for every reading (made by SQL:
   the detector's own speed is scripts/bench_detector.py's business; here only the table's size
   matters), an incident a day and weekly drift reports. Every SQL query of every dashboard is
   expanded with Grafana's macros exactly as the tests do and run as wattwatch_reader, at the
   dashboard's default time range ending at the last reading (50th and 95th percentile over
   --repeat runs of all its queries, i.e. what one dashboard refresh costs per query) and over
   the whole four years (interval = range / 1000, as a 1000-pixel-wide panel asks).
2. The exporter with --meters meters: a daily rollup over --years years, the hourly rollup over
   the last 90 days, raw readings over the last two days plus one reading a day over the years
   (so `readings` has years of chunks), 1% anomalies over two days and daily drift reports of
   seven features over a year. Scrape time: the first (cold) scrape, then percentiles of --repeat.

Goals (issue 6): dashboard queries under 200 ms at the 95th percentile at their default range,
under 1 s over the full history; an exporter scrape under 100 ms with 1,000 meters.

Uses WATTWATCH_DATABASE_URL (a superuser URL) or starts a throwaway stack with scripts/stack.py;
the data goes into scratch databases dropped at the end.

    .venv/bin/python scripts/bench_dashboards.py [--meters 1000] [--years 4] [--repeat 20]
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
from prometheus_client import CollectorRegistry

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from exporters.kpi import KpiCollector  # noqa: E402
from ingest.datasets import uci_household_csv  # noqa: E402
from tests.grafana_macros import expand, parse_interval  # noqa: E402
from tests.grafana_stack import DASHBOARDS, sql_queries, variables  # noqa: E402
from tests.support.scratch import create_database, drop_database  # noqa: E402
from timescale.connect import with_database  # noqa: E402
from timescale.migrate import migrate  # noqa: E402
from wattwatch.settings import Settings  # noqa: E402

READER_PASSWORD = "bench-reader"
FEATURES = ["active_power_kw", "reactive_power_kw", "voltage_v", "current_a",
            "sub_metering_1_wh", "sub_metering_2_wh", "sub_metering_3_wh"]


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def scratch(admin_url: str, name: str) -> tuple[str, str]:
    """A fresh migrated database; its owner URL and its wattwatch_reader URL."""
    url = create_database(admin_url, name, replace=True)
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn, Settings(_env_file=None, database_url=url, reader_password=READER_PASSWORD))
    return url, with_database(admin_url, name, "wattwatch_reader", READER_PASSWORD)


def drop(admin_url: str, name: str) -> None:
    drop_database(admin_url, with_database(admin_url, name))


def load_uci(url: str) -> datetime:
    """The UCI history as meter 'uci' with scores, incidents and drift; returns its last time."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WATTWATCH_")}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "wattwatch.cli", "ingest", "file", str(uci_household_csv()),
                    "--meter", "uci", "--timezone", "Europe/Paris"],
                   env={**clean, "WATTWATCH_DATABASE_URL": url}, check=True, stdout=subprocess.DEVNULL)
    print(f"loaded the UCI history in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    with psycopg.connect(url, autocommit=True) as conn:
        version = conn.execute("INSERT INTO models (meter_id, algorithm, reason) VALUES "
                               "('uci', 'bench', 'bench') RETURNING version").fetchone()[0]
        # A deterministic score per reading distributed as the detector's calibrated scores
        # are on normal data (12.5 * -log10 p, p uniform), with 1 reading in 1,000 anomalous.
        conn.execute("""
            INSERT INTO anomaly_scores (time, meter_id, model_version, score, is_anomaly, severity, kind)
            SELECT time, meter_id, %(v)s, s, s >= 37.5,
                   CASE WHEN s >= 50 THEN 'critical' WHEN s >= 43 THEN 'high'
                        WHEN s >= 37.5 THEN 'medium' ELSE 'none' END,
                   CASE WHEN s >= 37.5 THEN (ARRAY['spike', 'drop', 'level_shift'])[1 + (extract(epoch FROM time)::bigint / 60) %% 3] END
            FROM (SELECT time, meter_id,
                         least(100, 12.5 * -log(((abs(hashtext(time::text)) %% 1000000) + 1) / 1000000.0)) AS s
                  FROM readings) r""",
                     {"v": version})
        conn.execute("""
            INSERT INTO anomaly_incidents (meter_id, model_version, start_time, end_time, n_readings,
                                           peak_score, severity, kind, excess_energy_kwh, estimated_cost)
            SELECT 'uci', %(v)s, d + interval '19 hours', d + interval '19 hours 12 minutes', 12, 97,
                   (ARRAY['medium', 'high', 'critical'])[1 + extract(doy FROM d)::int %% 3], 'spike', 0.8, 0.2
            FROM generate_series('2006-12-17'::timestamptz, '2010-11-26', interval '1 day') d""",
                     {"v": version})
        conn.execute("""
            INSERT INTO drift_reports (run_id, run_at, mode, meter_id, feature, reference_from, reference_to,
                current_from, current_to, reference_n, current_n, psi, ks_statistic, ks_pvalue,
                wasserstein_norm, status)
            SELECT md5(w::text)::uuid, w, 'full', 'uci', f, w - interval '35 days', w - interval '7 days',
                   w - interval '7 days', w, 40320, 10080, p, p / 3, 0.01, p / 2,
                   CASE WHEN p >= 0.5 THEN 'critical' WHEN p >= 0.25 THEN 'alert'
                        WHEN p >= 0.1 THEN 'warning' ELSE 'stable' END
            FROM generate_series('2007-02-04'::timestamptz, '2010-11-21', interval '7 days') w,
                 unnest(%(f)s::text[]) f,
                 LATERAL (SELECT (abs(hashtext(w::text || f)) %% 600) / 1000.0 AS p) x""",
                     {"f": FEATURES})
        conn.execute("VACUUM ANALYZE")
        return conn.execute("SELECT max(time) FROM readings").fetchone()[0]


def bench_dashboards(reader_url: str, end: datetime, repeat: int) -> None:
    queries = sql_queries()
    history = end - datetime(2006, 12, 16, tzinfo=timezone.utc)
    print(f"\nDashboards, UCI history ({history.days} days, one meter), as wattwatch_reader")
    print(f"{'dashboard':<17} {'queries':>7} {'default range':>13} {'p50 ms':>8} {'p95 ms':>8} "
          f"{'full history: max ms':>21}  slowest over the full history")
    with psycopg.connect(reader_url, autocommit=True) as reader:
        for name, board in DASHBOARDS.items():
            values = variables(board, reader)
            mine = [q for q in queries if q.dashboard == name]
            default = parse_interval(board["time"]["from"].removeprefix("now-"))
            runs = {"default": (end - default, end), "full": (end - history, end)}
            samples: dict[str, dict[str, list[float]]] = {run: {} for run in runs}
            for run, (start, stop) in runs.items():
                for _ in range(repeat if run == "default" else max(3, repeat // 5)):
                    for query in mine:
                        interval = max((stop - start) / 1000, query.interval or timedelta(0), timedelta(seconds=1))
                        text = expand(query.text, start, stop, interval, values)
                        started = time.perf_counter()
                        reader.execute(text).fetchall()
                        samples[run].setdefault(query.where, []).append(time.perf_counter() - started)
            flat = [s for per_query in samples["default"].values() for s in per_query]
            full = {where: statistics.median(s) for where, s in samples["full"].items()}
            slowest = max(full, key=full.get)
            print(f"{name:<17} {len(mine):>7} {board['time']['from']:>13} {1000 * percentile(flat, 0.5):>8.1f} "
                  f"{1000 * percentile(flat, 0.95):>8.1f} {1000 * full[slowest]:>21.1f}  {slowest}")


def fill_exporter_scale(url: str, meters: int, years: int) -> None:
    now = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    ids = [f"m{i:05d}" for i in range(meters)]
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO meters (meter_id) SELECT unnest(%s::text[])", (ids,))
        params = {"ids": ids, "now": now, "years": f"{years} years"}
        conn.execute("""
            INSERT INTO readings_daily (bucket, meter_id, n_readings, active_power_kw_avg, voltage_v_avg)
            SELECT d, m, 1440, 1.0, 230 FROM unnest(%(ids)s::text[]) m,
                   generate_series(date_trunc('day', %(now)s - %(years)s::interval), %(now)s, interval '1 day') d""",
                     params)
        conn.execute("""
            INSERT INTO readings_hourly (bucket, meter_id, n_readings, active_power_kw_avg, voltage_v_avg)
            SELECT h, m, 60, 1.0, 230 FROM unnest(%(ids)s::text[]) m,
                   generate_series(%(now)s - interval '90 days', %(now)s, interval '1 hour') h""", params)
        # Years of chunks: one reading a day of the first meter; then two days of every meter.
        conn.execute("""
            INSERT INTO readings (time, meter_id, active_power_kw)
            SELECT d, %(first)s, 1.0 FROM generate_series(%(now)s - %(years)s::interval,
                                                          %(now)s - interval '3 days', interval '1 day') d""",
                     {**params, "first": ids[0]})
        conn.execute("""
            INSERT INTO readings (time, meter_id, active_power_kw, voltage_v)
            SELECT t, m, 1.0, 230 FROM unnest(%(ids)s::text[]) m,
                   generate_series(%(now)s - interval '2 days', %(now)s, interval '1 minute') t""", params)
        version = conn.execute("INSERT INTO models (algorithm, reason) VALUES ('bench', 'bench') "
                               "RETURNING version").fetchone()[0]
        conn.execute("""
            INSERT INTO anomaly_scores (time, meter_id, model_version, score, is_anomaly, severity)
            SELECT time, meter_id, %(v)s, 95, true, 'high' FROM readings
            WHERE time >= %(now)s - interval '2 days' AND abs(hashtext(meter_id || time::text)) %% 100 = 0""",
                     {**params, "v": version})
        conn.execute("""
            INSERT INTO drift_reports (run_id, run_at, mode, meter_id, feature, reference_from, reference_to,
                current_from, current_to, reference_n, current_n, psi, status)
            SELECT md5(d::text)::uuid, d, 'light', m, f, d - interval '35 days', d - interval '7 days',
                   d - interval '7 days', d, 40320, 10080, 0.05,
                   CASE WHEN abs(hashtext(m || f || d::text)) %% 500 = 0 THEN 'critical' ELSE 'stable' END
            FROM generate_series(%(now)s - interval '1 year', %(now)s, interval '1 day') d,
                 unnest(%(ids)s::text[]) m, unnest(%(f)s::text[]) f""", {**params, "f": FEATURES})
        conn.execute("INSERT INTO detector_watermarks (meter_id, ingested_at) SELECT unnest(%s::text[]), now()", (ids,))
        conn.execute("VACUUM ANALYZE")
        chunks = conn.execute("SELECT count(*) FROM timescaledb_information.chunks "
                              "WHERE hypertable_name = 'readings'").fetchone()[0]
        sizes = conn.execute("SELECT (SELECT count(*) FROM readings_daily), (SELECT count(*) FROM readings_hourly), "
                             "(SELECT count(*) FROM drift_reports)").fetchone()
    print(f"filled {meters} meters in {time.perf_counter() - started:.0f} s: {chunks} readings chunks, "
          f"{sizes[0]:,} daily and {sizes[1]:,} hourly rollup rows, {sizes[2]:,} drift reports", file=sys.stderr)


def bench_exporter(reader_url: str, meters: int, years: int, repeat: int) -> None:
    registry = CollectorRegistry()
    collector = KpiCollector(lambda: psycopg.connect(reader_url), registry)
    try:
        started = time.perf_counter()
        families = list(registry.collect())
        cold = time.perf_counter() - started
        samples = []
        for _ in range(repeat):
            started = time.perf_counter()
            families = list(registry.collect())
            samples.append(time.perf_counter() - started)
    finally:
        collector.close()
    series = sum(len(f.samples) for f in families)
    errors = [s.value for f in families for s in f.samples if s.name == "wattwatch_exporter_scrape_errors_total"]
    print(f"\nKPI exporter, {meters} meters, {years} years of daily rollup: {series} series per scrape, "
          f"errors {errors[0]:.0f}")
    print(f"first scrape {1000 * cold:.1f} ms (includes the connection and the closed-days total); "
          f"then p50 {1000 * percentile(samples, 0.5):.1f} ms, p95 {1000 * percentile(samples, 0.95):.1f} ms "
          f"over {repeat} scrapes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=1000)
    parser.add_argument("--years", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--skip-uci", action="store_true", help="only the exporter benchmark")
    args = parser.parse_args()
    state = Path.home() / ".cache" / "wattwatch" / "stacks" / "bench-dashboards"
    stack = [sys.executable, str(PROJECT / "scripts" / "stack.py")]
    admin = os.environ.get("WATTWATCH_DATABASE_URL")
    if not admin:
        info = json.loads(subprocess.run([*stack, "up", "--state", str(state)], check=True,
                                         capture_output=True, text=True).stdout)
        admin = info["database_url"]
    try:
        if not args.skip_uci:
            url, reader = scratch(admin, "wattwatch_bench_dashboards")
            try:
                bench_dashboards(reader, load_uci(url), args.repeat)
            finally:
                drop(admin, "wattwatch_bench_dashboards")
        url, reader = scratch(admin, "wattwatch_bench_exporter")
        try:
            fill_exporter_scale(url, args.meters, args.years)
            bench_exporter(reader, args.meters, args.years, args.repeat)
        finally:
            drop(admin, "wattwatch_bench_exporter")
    finally:
        if not os.environ.get("WATTWATCH_DATABASE_URL"):
            subprocess.run([*stack, "down", "--state", str(state)], check=False)


if __name__ == "__main__":
    main()
