"""Benchmark of a full drift run: meters x 7 features, 30-day reference and current windows of
one-minute data (43,200 readings per window and meter).

Two measurements, printed separately (an extrapolation is labelled as one):

1. judging (numpy), in memory: `drift.runner.judge_meter` in full mode on synthetic meters
   (daily and weekly cycles, noise, one meter in ten with a step in the current window); the
   data are generated outside the timed part.
2. end to end through TimescaleDB: `run_pass` (binary COPY reads, judging, storing the run) on a
   throwaway database loaded by COPY with --db-meters meters; needs `scripts/stack.py up`'s
   server (--admin-url, a superuser URL).

    .venv/bin/python scripts/bench_drift.py --meters 1000
    .venv/bin/python scripts/bench_drift.py --meters 100 --db-meters 20 --admin-url postgresql://...
    .venv/bin/python scripts/bench_drift.py --meters 0 --quality-runs 100

3. with --quality-runs: false alarms on unchanged held-out days of the UCI household and the
   statuses reached by injected changes (drift/evaluation.py).

Peak memory is the process's maximum resident set size.
"""

from __future__ import annotations

import argparse
import resource
import secrets
import time
from datetime import datetime, timedelta, timezone

import numpy as np

from drift.analysis import DriftConfig
from drift.readings import POSTGRES_EPOCH, SIGNATURE
from drift.runner import MeterWork, judge_meter
from ingest.fields import FIELDS

MINUTES = 30 * 1440
START = datetime(2026, 1, 1, tzinfo=timezone.utc)


def synthetic_meter(rng: np.random.Generator, minutes: int, drifted: bool):
    """Unix seconds and (minutes, 7) values with daily and weekly cycles for two windows."""
    seconds = int(START.timestamp()) + 60 * np.arange(2 * minutes, dtype=np.int64)
    hour = (seconds % 86_400) / 3600
    weekend = ((seconds // 86_400 + 3) % 7) >= 5
    cycle = 0.4 + 0.6 * np.exp(-((hour - 19) ** 2) / 6) + 0.3 * np.exp(-((hour - 8) ** 2) / 2) + 0.2 * weekend
    active = np.maximum(cycle * rng.gamma(2.0, 0.5, cycle.size), 0.05)
    voltage = 235 + rng.normal(0, 2.5, cycle.size)
    if drifted:
        voltage[minutes:] += 4.0
    values = np.column_stack([
        active, 0.1 * active + rng.gamma(1.0, 0.05, cycle.size), voltage, active * 1000 / voltage,
        rng.poisson(0.3 * cycle), rng.poisson(0.5, cycle.size), rng.poisson(6 * cycle)]).astype(float)
    return (seconds[:minutes], values[:minutes]), (seconds[minutes:], values[minutes:])


def binary_copy(meter: str, seconds: np.ndarray, values: np.ndarray) -> bytes:
    """A whole binary COPY stream (meter_id, time, features) built by numpy: loading synthetic
    data at the server's speed rather than Python's."""
    name = meter.encode()
    row = np.dtype([("fields", ">i2"), ("meter_length", ">i4"), ("meter", f"S{len(name)}"),
                    ("time_length", ">i4"), ("time", ">i8")]
                   + [item for i in range(len(FIELDS)) for item in ((f"l{i}", ">i4"), (f"v{i}", ">f8"))])
    rows = np.zeros(len(seconds), dtype=row)
    rows["fields"], rows["meter_length"], rows["meter"] = 2 + len(FIELDS), len(name), name
    rows["time_length"], rows["time"] = 8, (seconds - POSTGRES_EPOCH) * 1_000_000
    for i in range(len(FIELDS)):
        rows[f"l{i}"], rows[f"v{i}"] = 8, values[:, i]
    return SIGNATURE + b"\0" * 8 + rows.tobytes() + b"\xff\xff"


def peak_rss_mb() -> str:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return f"{own:.0f} MB (largest worker process: {children:.0f} MB)"


def bench_judging(meters: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    config = DriftConfig()
    judging = generating = 0.0
    statuses = {}
    for index in range(meters):
        started = time.perf_counter()
        reference, current = synthetic_meter(rng, MINUTES, drifted=index % 10 == 0)
        generating += time.perf_counter() - started
        started = time.perf_counter()
        results = judge_meter("UTC", MeterWork(reference, {}, current, set()), mode="full", config=config).features
        judging += time.perf_counter() - started
        for result in results:
            statuses[result.status] = statuses.get(result.status, 0) + 1
    print(f"judging, in memory: {meters} meters x {len(FIELDS)} features x 2 x {MINUTES} minutes: "
          f"{judging:.1f} s ({1000 * judging / meters:.0f} ms per meter, one process); "
          f"data generation {generating:.1f} s, not counted")
    print(f"  feature statuses: {statuses}")
    if meters < 1000:
        print(f"  EXTRAPOLATION (not measured): 1000 meters would take about {judging / meters * 1000:.0f} s")
    print(f"  peak resident memory so far: {peak_rss_mb()}")


def bench_database(admin_url: str, meters: int, seed: int) -> None:
    import psycopg
    from psycopg import sql

    from drift.readings import read_window
    from drift.runner import run_pass
    from timescale.connect import connect_url
    from timescale.migrate import migrate
    from timescale.scratch import create_database, drop_database
    from wattwatch.settings import Settings

    name = f"ww_bench_drift_{secrets.token_hex(4)}"
    url = create_database(admin_url, name)
    try:
        settings = Settings(_env_file=None, database_url=url)
        with connect_url(url) as conn:
            migrate(conn, settings)
        rng = np.random.default_rng(seed)
        started = time.perf_counter()
        with psycopg.connect(url, autocommit=True) as conn, conn.cursor() as cur:
            columns = sql.SQL(", ").join(map(sql.Identifier, FIELDS))
            for index in range(meters):
                meter = f"m{index:04d}"
                cur.execute("INSERT INTO meters (meter_id) VALUES (%s)", [meter])
                reference, current = synthetic_meter(rng, MINUTES, drifted=index % 10 == 0)
                with cur.copy(sql.SQL("COPY readings (meter_id, time, {}) FROM STDIN (FORMAT BINARY)")
                              .format(columns)) as copy:
                    copy.write(binary_copy(meter, np.concatenate([reference[0], current[0]]),
                                           np.concatenate([reference[1], current[1]])))
            cur.execute("ANALYZE readings")
        print(f"database: loaded {meters} meters x {2 * MINUTES} readings in {time.perf_counter() - started:.0f} s")
        with connect_url(url, autocommit=True) as conn:
            started = time.perf_counter()
            rows = sum(len(read_window(conn, f"m{index:04d}", START, START + timedelta(days=60))[0])
                       for index in range(meters))
            elapsed = time.perf_counter() - started
            print(f"database, reading only (binary COPY into numpy): {rows} readings in {elapsed:.1f} s "
                  f"({rows / elapsed / 1e6:.2f} M readings/s, {1000 * elapsed / meters:.0f} ms per meter)")
            started = time.perf_counter()
            report = run_pass(conn, settings, mode="full", current_to=START + timedelta(days=60),
                              current_days=30, reference_days=30)
            elapsed = time.perf_counter() - started
        print(f"database, end to end (run_pass, full): {meters} meters in {elapsed:.1f} s "
              f"({1000 * elapsed / meters:.0f} ms per meter: read both windows, judge, store)")
        print(f"  meters per overall status: "
              f"{ {s: sum(m.status == s for m in report.meters) for s in {m.status for m in report.meters}} }")
        print(f"  EXTRAPOLATION (not measured): 1000 meters would take about {elapsed / meters * 1000:.0f} s")
        print(f"  peak resident memory so far: {peak_rss_mb()}")
    finally:
        drop_database(admin_url, url)


def measure_quality(runs: int, seed: int) -> None:
    """False alarms on unchanged held-out days and detections of injected changes, on the UCI
    household (drift/evaluation.py explains the held-out design)."""
    from drift.evaluation import (INJECTIONS, consecutive_split, false_alarms, held_out_split,
                                  judge_all, load_uci)
    from drift.status import ORDER
    from ingest.datasets import uci_household_csv

    calendar, values = load_uci(uci_household_csv())
    for half_days in (False, True):
        measured = false_alarms(calendar, values, runs, np.random.default_rng(seed + half_days), half_days)
        label = "half days (12 h of each current day)" if half_days else "whole days"
        print(f"unchanged data, {label}, {runs} runs x {len(FIELDS)} features: "
              f"{100 * measured.stable_share:.1f}% of features stable, "
              f"{100 * measured.meters_stable / runs:.1f}% of runs with every feature stable; "
              f"whole-window PSI >= 0.1 on {100 * measured.whole_window_alarms / len(measured.statuses):.1f}%")
    rng = np.random.default_rng(seed)
    judged = [judge_all(calendar, values[reference], reference, values[current], current)
              for reference, current in (consecutive_split(calendar, rng) for _ in range(runs))]
    statuses = [d.status for run in judged for d in run.values()]
    print(f"real consecutive weeks (7 days after 28), {runs} runs: "
          f"{ {status: statuses.count(status) for status in ORDER + ('insufficient_data',) if statuses.count(status)} } "
          f"over all features; every feature stable in "
          f"{100 * sum(all(d.status == 'stable' for d in run.values()) for run in judged) / runs:.0f}% of runs")
    for injection in INJECTIONS.values():
        rng = np.random.default_rng(seed)
        bands, others_stable = [], 0
        for _ in range(runs):
            reference, current = held_out_split(calendar, rng, 7)
            changed = injection.apply(values[current], calendar.stratum[current] % 24, values[reference])
            judged = judge_all(calendar, values[reference], reference, changed, current)
            bands += [judged[feature].status for feature in injection.changes]
            others_stable += all(d.status == "stable" for f, d in judged.items() if f not in injection.changes)
        counts = {band: bands.count(band) for band in ORDER if bands.count(band)}
        print(f"injected {injection.name} ({injection.description}), {runs} runs: changed features' "
              f"statuses {counts}; every other feature stable in {100 * others_stable / runs:.0f}% of runs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--meters", type=int, default=1000, help="meters judged in memory")
    parser.add_argument("--db-meters", type=int, default=0, help="meters loaded and run through the database")
    parser.add_argument("--admin-url", help="superuser URL of a TimescaleDB server (for --db-meters)")
    parser.add_argument("--quality-runs", type=int, default=0,
                        help="also measure false alarms and detections on the UCI household (runs each)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.meters:
        bench_judging(args.meters, args.seed)
    if args.db_meters:
        if not args.admin_url:
            parser.error("--db-meters needs --admin-url")
        bench_database(args.admin_url, args.db_meters, args.seed)
    if args.quality_runs:
        measure_quality(args.quality_runs, args.seed)


if __name__ == "__main__":
    main()
