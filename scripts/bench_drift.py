"""Benchmark of a full drift run: meters x 7 features, 30-day reference and current windows of
one-minute data (43,200 readings per window and meter).

What is measured, printed separately (an extrapolation is labelled as one):

1. judging (numpy), in memory, one process, per synthetic meter (daily and weekly cycles,
   noise, one meter in ten with a voltage step in the current window), data generated outside
   the timed part: `drift.judgement.judge_meter` in full mode
   - cold: nothing stored (summarise the reference window and the 30 current days, judge);
   - warm: the stored baseline and 29 stored days, one new day of readings (a daily run).
2. end to end through TimescaleDB (--db-meters N, needs `scripts/stack.py up`'s server via
   --admin-url, a superuser URL): a throwaway database loaded by binary COPY with 61 days per
   meter and an active all-meters model trained on the first 30 days (the reference window);
   - reading only: both raw windows of every meter (what re-reading costs);
   - cold run: `run_pass` in full mode over days 30-60, nothing stored yet (it stores the
     baselines and the day summaries);
   - steady state: day 61 loaded (not timed), then the next day's full run over days 31-61.
   Each prints wall and CPU seconds (this process and its judging processes; the database
   server's CPU as the backend's, read from /proc when the server runs on this machine) and
   peak resident memory (this process; the largest judging process).

    .venv/bin/python scripts/bench_drift.py --meters 100
    .venv/bin/python scripts/bench_drift.py --meters 0 --db-meters 1000 --admin-url postgresql://...
    .venv/bin/python scripts/bench_drift.py --meters 0 --quality-runs 100

3. with --quality-runs: false alarms on unchanged held-out days of the UCI household and the
   statuses reached by injected changes (tests/support/drift_evaluation.py).
"""

from __future__ import annotations

import argparse
import os
import resource
import secrets
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

# tests/support is imported from the checkout, beside the installed packages.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from drift.analysis import DriftConfig  # noqa: E402
from drift.judgement import MeterWork, judge_meter  # noqa: E402
from timescale.binary_copy import HEADER, POSTGRES_EPOCH, TRAILER  # noqa: E402
from wattwatch.fields import FIELDS  # noqa: E402

MINUTES = 30 * 1440
VOLTAGE = list(FIELDS).index("voltage_v")
START = datetime(2026, 1, 1, tzinfo=timezone.utc)


def synthetic_series(rng: np.random.Generator, first_second: int, minutes: int):
    """Unix seconds and (minutes, 7) values with daily and weekly cycles."""
    seconds = first_second + 60 * np.arange(minutes, dtype=np.int64)
    hour = (seconds % 86_400) / 3600
    weekend = ((seconds // 86_400 + 3) % 7) >= 5
    cycle = 0.4 + 0.6 * np.exp(-((hour - 19) ** 2) / 6) + 0.3 * np.exp(-((hour - 8) ** 2) / 2) + 0.2 * weekend
    active = np.maximum(cycle * rng.gamma(2.0, 0.5, cycle.size), 0.05)
    voltage = 235 + rng.normal(0, 2.5, cycle.size)
    values = np.column_stack([
        active, 0.1 * active + rng.gamma(1.0, 0.05, cycle.size), voltage, active * 1000 / voltage,
        rng.poisson(0.3 * cycle), rng.poisson(0.5, cycle.size), rng.poisson(6 * cycle)]).astype(float)
    return seconds, values


def synthetic_meter(rng: np.random.Generator, minutes: int, drifted: bool):
    """Two consecutive windows of `minutes`; with `drifted`, voltage 4 V higher in the second."""
    seconds, values = synthetic_series(rng, int(START.timestamp()), 2 * minutes)
    if drifted:
        values[minutes:, VOLTAGE] += 4.0
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
    return HEADER + rows.tobytes() + TRAILER


def peak_rss_mb() -> str:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return f"peak resident memory {own:.0f} MB, largest judging process {ChildMemory.peak_mb:.0f} MB"


class ChildMemory(threading.Thread):
    """Samples the peak resident memory (VmHWM) of this process's children every 0.2 s.
    getrusage's children figure would not do: a child's maximum keeps its parent's size at
    fork across exec."""

    peak_mb = 0.0

    def __init__(self):
        super().__init__(daemon=True)
        self.start()

    def run(self):
        while True:
            for children in Path("/proc/self/task").glob("*/children"):
                for pid in children.read_text().split():
                    try:
                        status = Path(f"/proc/{pid}/status").read_text()
                    except OSError:
                        continue
                    for line in status.splitlines():
                        if line.startswith("VmHWM:"):
                            ChildMemory.peak_mb = max(ChildMemory.peak_mb, int(line.split()[1]) / 1024)
            time.sleep(0.2)


class Timer:
    """Wall and CPU seconds (this process and its waited-for children) of a block, and the
    database backend's CPU seconds when its process is visible here."""

    def __init__(self, backend_pid: int | None = None):
        self.backend_pid = backend_pid

    def __enter__(self):
        self.wall, self.cpu, self.server = time.perf_counter(), _cpu_seconds(), _process_cpu(self.backend_pid)
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.wall
        self.cpu = _cpu_seconds() - self.cpu
        server = _process_cpu(self.backend_pid)
        self.server = None if server is None or self.server is None else server - self.server

    def __str__(self):
        server = "" if self.server is None else f", database backend {self.server:.1f} s CPU"
        return f"{self.wall:.1f} s wall, {self.cpu:.1f} s CPU (process and judging processes){server}"


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _process_cpu(pid: int | None) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_judging(meters: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    config = DriftConfig()
    cold = warm = 0.0
    statuses = {}
    for index in range(meters):
        reference, (seconds, values) = synthetic_meter(rng, MINUTES, drifted=index % 10 == 0)
        started = time.process_time()
        first = judge_meter("UTC", MeterWork(reference, {}, (seconds, values), set(range(100_000)), settings="bench"),
                            mode="full", config=config)
        cold += time.process_time() - started
        last_day = seconds >= seconds[-1] - 86_400 + 60
        stored = dict(sorted(first.days.items())[:-1])
        started = time.process_time()
        judge_meter("UTC", MeterWork(first.baseline, stored, (seconds[last_day], values[last_day]), set(),
                                     baseline_id=1, settings="bench"), mode="full", config=config)
        warm += time.process_time() - started
        for result in first.features:
            statuses[result.status] = statuses.get(result.status, 0) + 1
    print(f"judging, in memory, one process: {meters} meters x {len(FIELDS)} features, 30-day windows "
          f"(2 x {MINUTES} minutes), full mode, CPU per meter:")
    print(f"  cold (summarise both windows, judge): {1000 * cold / meters:.0f} ms; "
          f"warm (stored baseline and 29 days, one new day): {1000 * warm / meters:.0f} ms")
    print(f"  feature statuses: {statuses}; {peak_rss_mb()}")


def load_days(url: str, meters: int, seed: int, first_day: int, days: int) -> None:
    """Days [first_day, first_day + days) of every synthetic meter, by binary COPY on two
    connections (one per core)."""
    import psycopg
    from psycopg import sql

    columns = sql.SQL(", ").join(map(sql.Identifier, FIELDS))
    query = sql.SQL("COPY readings (meter_id, time, {}) FROM STDIN (FORMAT BINARY)").format(columns)

    def load(part: int) -> None:
        with psycopg.connect(url, autocommit=True) as conn, conn.cursor() as cur:
            for index in range(part, meters, 2):
                seconds, values = synthetic_days(seed, index, first_day, days)
                with cur.copy(query) as copy:
                    copy.write(binary_copy(f"m{index:04d}", seconds, values))

    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(load, range(2)))


def synthetic_days(seed: int, index: int, first_day: int, days: int):
    """Days [first_day, first_day + days) of meter `index` (its own random stream per load);
    one meter in ten has its voltage 4 V higher from day 30 on."""
    seconds, values = synthetic_series(np.random.default_rng([seed, index, first_day]),
                                       int(START.timestamp()) + first_day * 86_400, days * 1440)
    if index % 10 == 0:
        values[seconds >= int(START.timestamp()) + 30 * 86_400, VOLTAGE] += 4.0
    return seconds, values


def bench_database(admin_url: str, meters: int, seed: int) -> None:
    import psycopg

    from drift.readings import read_window
    from drift.runner import run_pass
    from tests.support.scratch import create_database, drop_database
    from timescale.connect import connect_url
    from timescale.migrate import migrate
    from wattwatch.settings import Settings

    name = f"ww_bench_drift_{secrets.token_hex(4)}"
    url = create_database(admin_url, name)
    try:
        # The loads are over before each run starts: no reading is late.
        settings = Settings(_env_file=None, database_url=url, drift_ingest_margin_minutes=0)
        with connect_url(url) as conn:
            migrate(conn, settings)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.cursor().executemany("INSERT INTO meters (meter_id) VALUES (%s)",
                                      [(f"m{index:04d}",) for index in range(meters)])
            conn.execute("INSERT INTO models (meter_id, algorithm, train_from, train_to, reason) "
                         "VALUES (NULL, 'bench', %s, %s, 'bench')", [START, START + timedelta(days=30)])
        started = time.perf_counter()
        load_days(url, meters, seed, 0, 60)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("ANALYZE readings")
        print(f"database: loaded {meters} meters x {60 * 1440} readings in {time.perf_counter() - started:.0f} s "
              f"(2 connections); an active all-meters model trained on days 0-29")
        shape = f"{meters} meters x {len(FIELDS)} features, 30-day windows of one-minute data"
        with connect_url(url, autocommit=True) as conn:
            with Timer(conn.info.backend_pid) as timer:
                rows = sum(len(read_window(conn, f"m{index:04d}", START, START + timedelta(days=60))[0])
                           for index in range(meters))
            print(f"database, reading only (both raw windows, binary arrays into numpy, one connection): "
                  f"{rows} readings, {timer} ({rows / timer.wall / 1e6:.2f} M readings/s)")
            with Timer(conn.info.backend_pid) as timer:
                report = run_pass(conn, settings, mode="full", current_to=START + timedelta(days=60), current_days=30)
            sizes = conn.execute("SELECT pg_size_pretty(pg_total_relation_size('drift_baselines')), "
                                 "pg_size_pretty(pg_total_relation_size('drift_day_summaries'))").fetchone()
        print(f"database, cold run (nothing stored; run_pass, full): {shape}: {timer}")
        print(f"  meters per overall status: {_statuses(report)}; stored: baselines {sizes[0]}, day summaries {sizes[1]}")
        print(f"  {peak_rss_mb()}")
        started = time.perf_counter()
        load_days(url, meters, seed, 60, 1)
        print(f"database: loaded day 61 of every meter in {time.perf_counter() - started:.0f} s (not timed below)")
        with connect_url(url, autocommit=True) as conn:
            with Timer(conn.info.backend_pid) as timer:
                report = run_pass(conn, settings, mode="full", current_to=START + timedelta(days=61), current_days=30)
        print(f"database, steady state (the next day's run; run_pass, full): {shape}: {timer}")
        print(f"  meters per overall status: {_statuses(report)}; {peak_rss_mb()}")
        if meters < 1000:
            print(f"  EXTRAPOLATION (not measured): 1000 meters would take about {timer.wall / meters * 1000:.0f} s")
    finally:
        drop_database(admin_url, url)


def _statuses(report) -> dict:
    return {s: sum(m.status == s for m in report.meters) for s in sorted({m.status for m in report.meters})}


def measure_quality(runs: int, seed: int) -> None:
    """False alarms on unchanged held-out days and detections of injected changes, on the UCI
    household (tests/support/drift_evaluation.py explains the held-out design)."""
    from drift.status import ORDER
    from ingest.datasets import uci_household_csv
    from tests.support.drift_evaluation import (INJECTIONS, consecutive_split, false_alarms,
                                                held_out_split, judge_all, load_uci)

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
    parser.add_argument("--meters", type=int, default=100, help="meters judged in memory")
    parser.add_argument("--db-meters", type=int, default=0, help="meters loaded and run through the database")
    parser.add_argument("--admin-url", help="superuser URL of a TimescaleDB server (for --db-meters)")
    parser.add_argument("--quality-runs", type=int, default=0,
                        help="also measure false alarms and detections on the UCI household (runs each)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    ChildMemory()
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
