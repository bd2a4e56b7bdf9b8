#!/usr/bin/env python3
"""Fault suite: inject faults into a running wattwatch and count what was lost or stored twice.

Runs on a throwaway stack of its own (scripts/stack.py: TimescaleDB and Prometheus on loopback),
with every service as a real process connected as its own role, and prints one table row per
fault: what was injected, rows lost, rows duplicated, readings left unscored, readings scored
twice. Zero is expected everywhere.

    .venv/bin/python scripts/faults.py                      # every fault, 100 meters
    .venv/bin/python scripts/faults.py --only restart kill  # some of them
    .venv/bin/python scripts/faults.py --only soak --soak-minutes 60 --soak-meters 1000

Faults: `restart` (the database restarted fast, then immediately, under live ingest, detector,
drift and exporter), `kill` (kill -9 of each service mid-cycle, then started again), `twice`
(two of each batch command at once: ingest file, detect train, detect run --once, drift run
--once), `disk-full` (the WAL moved to a small tmpfs that a writer fills under live services: the
server stops, then the tmpfs grows and the server restarts; needs root, and runs last because it
changes the cluster), `soak` (only when named: live services for --soak-minutes, RSS of each sampled every
minute).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from tests.conftest import ROLE_PASSWORDS, settings_for  # noqa: E402
from wattwatch import stack as cluster  # noqa: E402  (where the cluster lives, how to run pg_ctl)
from timescale.connect import with_database  # noqa: E402
from timescale.migrate import migrate  # noqa: E402

STACK = PROJECT / "scripts" / "stack.py"

PYTHON = sys.executable
ROLES = {"ingest": "wattwatch_ingest", "detector": "wattwatch_jobs", "drift": "wattwatch_jobs",
         "exporter": "wattwatch_reader"}
UNSCORED = ("SELECT count(*) FROM readings r WHERE NOT EXISTS (SELECT FROM anomaly_scores s"
            " WHERE s.meter_id = r.meter_id AND s.time = r.time)")
TWICE = ("SELECT count(*) FROM (SELECT 1 FROM anomaly_scores GROUP BY meter_id, time"
         " HAVING count(*) > 1) t")


@dataclass
class Row:
    fault: str
    lost: int
    duplicated: int
    unscored: int
    scored_twice: int
    note: str = ""

    def line(self) -> str:
        return (f"| {self.fault} | {self.lost} | {self.duplicated} | {self.unscored} | "
                f"{self.scored_twice} | {self.note} |")


class Stack:
    """A throwaway stack and a fresh migrated database with the role passwords."""

    def __init__(self):
        self.state = Path(tempfile.mkdtemp(prefix="wattwatch-faults-"))
        self.logs = Path(tempfile.mkdtemp(prefix="wattwatch-faults-logs-"))  # kept after the stack
        done = subprocess.run([PYTHON, str(STACK), "up", "--state", str(self.state)],
                              capture_output=True, text=True, check=True)
        self.info = json.loads(done.stdout)
        self.admin = self.info["database_url"]
        self.processes: dict[str, subprocess.Popen] = {}
        self.mounts: list[Path] = []

    def fresh_database(self) -> str:
        name = f"faults_{secrets.token_hex(4)}"
        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
            conn.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = on')
        self.url = with_database(self.admin, name)
        with psycopg.connect(self.url, autocommit=True) as conn:
            migrate(conn, settings_for(self.url))
        return self.url

    def role_url(self, role: str) -> str:
        return with_database(self.url, psycopg.conninfo.conninfo_to_dict(self.url)["dbname"],
                             role, ROLE_PASSWORDS[role])

    def start(self, name: str, args: list[str], env: dict | None = None) -> subprocess.Popen:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("WATTWATCH_")}
        environment = {**clean, "PYTHONPATH": str(PROJECT), "WATTWATCH_CONNECT_TIMEOUT_SECONDS": "2",
                       "WATTWATCH_DATABASE_URL": self.role_url(ROLES[name.split("-")[0]]), **(env or {})}
        log = open(self.logs / f"{name}.log", "a")
        process = subprocess.Popen([PYTHON, "-m", "wattwatch.cli", *args], env=environment,
                                   stdout=log, stderr=subprocess.STDOUT)
        self.processes[name] = process
        return process

    def stop(self, name: str, sig: int = signal.SIGTERM) -> None:
        process = self.processes.pop(name)
        process.send_signal(sig)
        process.wait(timeout=60)

    def stop_all(self) -> None:
        for name in list(self.processes):
            self.stop(name)

    def restart_database(self, mode: str) -> None:
        subprocess.run([PYTHON, str(STACK), "restart", "--state", str(self.state), "--mode", mode],
                       check=True, capture_output=True)

    def query(self, sql: str, params=()) -> list[tuple]:
        deadline = time.monotonic() + 60
        while True:
            try:
                with psycopg.connect(self.url) as conn:
                    return conn.execute(sql, params).fetchall()
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)

    def down(self) -> None:
        self.stop_all()
        subprocess.run([PYTHON, str(STACK), "down", "--state", str(self.state)], capture_output=True)
        for mount in self.mounts:
            subprocess.run(["umount", str(mount)], check=False)
            mount.rmdir()

    def wal_on_tmpfs(self, size_mib: int) -> Path:
        """Stop the cluster, move its WAL to a tmpfs of `size_mib` and start it again."""
        data = self.info["postgres_data"]
        wal = f"{data}-wal"
        mount = cluster.host_path(wal)
        mount.mkdir()
        with psycopg.connect(self.admin, autocommit=True) as conn:  # checkpoints keep the WAL small
            conn.execute("ALTER SYSTEM SET max_wal_size = '128MB'")
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs", str(mount)], check=True)
        self.mounts.append(mount)
        cluster.as_postgres([f"{cluster.PG_BIN}/pg_ctl", "-D", data, "-m", "fast", "-w", "stop"],
                            stdout=subprocess.DEVNULL)
        cluster.as_root(["chown", "postgres:postgres", wal])
        cluster.as_root(["chmod", "700", wal])
        cluster.as_postgres(["sh", "-c", f"mv {data}/pg_wal/* {wal}/ && rmdir {data}/pg_wal"
                             f" && ln -s {wal} {data}/pg_wal"])
        self.restart_database("fast")  # pg_ctl restart starts a stopped server too
        return mount


def live_services(stack: Stack, meters: int, interval: int, history_days: float) -> None:
    """A history then live readings, the detector, drift and the exporter."""
    stack.start("ingest", ["ingest", "simulate", "--meters", str(meters), "--interval", str(interval),
                           "--history-days", str(history_days), "--metrics-port", "0"])
    jobs = {"WATTWATCH_DETECTOR_INITIAL_HOLDOUT_DAYS": "1", "WATTWATCH_DRIFT_CURRENT_DAYS": "1",
            "WATTWATCH_DRIFT_MIN_REFERENCE_DAYS": "2", "WATTWATCH_DRIFT_WORKERS": "1"}
    stack.start("detector", ["detect", "run", "--metrics-port", "0"], jobs)
    stack.start("drift", ["drift", "run", "--metrics-port", "0"], jobs)
    stack.start("exporter", ["export", "--metrics-port", "0"])


def live_scoring(stack: Stack, meters: int) -> None:
    """Live services at one reading a second, once the first scores are stored."""
    live_services(stack, meters, interval=1, history_days=0.05)  # 4,320 readings: enough to train
    wait_until(lambda: stack.query("SELECT count(*) FROM anomaly_scores")[0][0] > 0, 300)


def live_outcome(stack: Stack, fault: str, note: str = "") -> Row:
    """Stop the live services and count what the fault cost; says which services outlived it."""
    alive = sorted(name for name, process in stack.processes.items() if process.poll() is None)
    stack.stop("ingest")
    row = live_counts(stack, 1, fault, "; ".join(filter(None, [note, f"services alive after: {', '.join(alive)}"])))
    stack.stop_all()
    return row


def wait_scored(stack: Stack, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while (left := stack.query(UNSCORED)[0][0]) and time.monotonic() < deadline:
        time.sleep(2)
    return left


def live_counts(stack: Stack, interval: int, fault: str, note: str = "") -> Row:
    """Readings of each simulated meter must be one per interval from its first to its last."""
    rows = stack.query("SELECT count(*), count(DISTINCT time), min(time), max(time) FROM readings"
                       " GROUP BY meter_id")
    lost = sum(int((high - low).total_seconds()) // interval + 1 - distinct
               for _, distinct, low, high in rows)
    duplicated = sum(count - distinct for count, distinct, _, _ in rows)
    unscored = wait_scored(stack, 300)
    return Row(fault, lost, duplicated, unscored, stack.query(TWICE)[0][0], note)


def fault_restart(stack: Stack, meters: int) -> list[Row]:
    stack.fresh_database()
    live_scoring(stack, meters)
    time.sleep(20)
    stack.restart_database("fast")
    time.sleep(15)
    stack.restart_database("immediate")
    time.sleep(20)
    return [live_outcome(stack, f"database restarted fast then immediately, {meters} meters live")]


def fault_kill(stack: Stack, meters: int) -> list[Row]:
    """kill -9 of each service while it works, then started again as compose would."""
    stack.fresh_database()
    live_scoring(stack, meters)
    rows = []
    for name in ("detector", "drift", "exporter", "ingest"):
        time.sleep(5)
        args = stack.processes[name].args[3:]
        stack.stop(name, signal.SIGKILL)
        time.sleep(2)
        stack.start(name, args)
    time.sleep(20)
    stack.stop("ingest")
    # The restarted simulator writes its history again (duplicates, skipped), which covers the
    # seconds it was down: every meter must still have one reading a second.
    rows.append(live_counts(stack, 1, "kill -9 of detector, drift, exporter and ingest mid-cycle, restarted"))
    stack.stop_all()
    # kill -9 of a bulk load, then the same command again: the result equals one clean load.
    stack.fresh_database()
    path = stack.state / "load.csv"
    write_file(path, meters=10, minutes=20_000)
    env = {"WATTWATCH_INGEST_BATCH_ROWS": "5000"}
    load = stack.start("ingest-file", ["ingest", "file", str(path)], env)
    wait_until(lambda: stack.query("SELECT count(*) FROM readings")[0][0] > 20_000, 120)
    load.send_signal(signal.SIGKILL)
    load.wait()
    stack.processes.pop("ingest-file")
    stack.start("ingest-file", ["ingest", "file", str(path)], env).wait(timeout=600)
    stack.processes.pop("ingest-file")
    stored = stack.query("SELECT count(*), count(DISTINCT (meter_id, time)) FROM readings")[0]
    rows.append(Row("kill -9 of ingest file mid-load, then the same command", 10 * 20_000 - stored[1],
                    stored[0] - stored[1], 0, 0))
    return rows


def fault_twice(stack: Stack, meters: int) -> list[Row]:
    """Two of each batch command at once."""
    stack.fresh_database()
    path = stack.state / "twice.csv"
    write_file(path, meters=meters, minutes=4 * 1440)
    both = [stack.start(f"ingest-{n}", ["ingest", "file", str(path)]) for n in (1, 2)]
    for process in both:
        process.wait(timeout=900)
    stored = stack.query("SELECT count(*), count(DISTINCT (meter_id, time)) FROM readings")[0]
    rows = [Row("two `ingest file` of the same file at once", meters * 4 * 1440 - stored[1],
                stored[0] - stored[1], 0, 0)]
    trains = [stack.start(f"detector-train-{n}", ["detect", "train"]) for n in (1, 2)]
    for process in trains:
        process.wait(timeout=900)
    active = stack.query("SELECT count(*) FROM models WHERE status = 'active' GROUP BY meter_id"
                         " HAVING count(*) > 1")
    rows.append(Row("two `detect train` at once", 0, len(active), 0, 0,
                    f"{stack.query('SELECT count(*) FROM models')[0][0]} models stored"))
    runs = [stack.start(f"detector-once-{n}", ["detect", "run", "--once"]) for n in (1, 2)]
    for process in runs:
        process.wait(timeout=900)
    rows.append(Row("two `detect run --once` at once", 0, 0, stack.query(UNSCORED)[0][0],
                    stack.query(TWICE)[0][0]))
    drifts = [stack.start(f"drift-once-{n}", ["drift", "run", "--once"],
                          {"WATTWATCH_DRIFT_WORKERS": "1"}) for n in (1, 2)]
    for process in drifts:
        process.wait(timeout=900)
    per_run = stack.query("SELECT run_id, count(*) FROM drift_reports GROUP BY 1")
    expected = meters * 7  # one row per meter and feature in each run
    rows.append(Row("two `drift run --once` at once", sum(max(expected - n, 0) for _, n in per_run),
                    sum(max(n - expected, 0) for _, n in per_run), 0, 0, f"{len(per_run)} runs stored"))
    stack.processes.clear()
    return rows


def fault_disk_full(stack: Stack, meters: int) -> list[Row]:
    """The WAL's disk fills under live services; space comes back and the server restarts."""
    stack.fresh_database()
    mount = stack.wal_on_tmpfs(512)
    live_scoring(stack, meters)
    filler = "INSERT INTO filler SELECT repeat(md5(n::text), 30) FROM generate_series(1, 20000) n"
    error = ""
    with psycopg.connect(stack.url, autocommit=True) as conn:
        conn.execute("CREATE TABLE filler (x text)")
        # A slot that nobody reads keeps all WAL from now on, so checkpoints free nothing.
        conn.execute("SELECT pg_create_physical_replication_slot('faults_hold', true)")
        try:
            for _ in range(100):  # about 20 MB of WAL each: far past the tmpfs
                conn.execute(filler)
        except psycopg.Error as failure:
            error = str(failure).splitlines()[0]
    if not error:
        raise SystemExit("faults: the WAL's tmpfs never filled")
    time.sleep(10)  # the services meet the outage
    subprocess.run(["mount", "-o", "remount,size=4096m", str(mount)], check=True)
    stack.restart_database("fast")
    stack.query("SELECT pg_drop_replication_slot('faults_hold')")
    time.sleep(30)
    return [live_outcome(stack, f"WAL disk full under {meters} meters live, then space and a restart",
                         f"writer stopped by: {error}")]


def fault_soak(stack: Stack, meters: int, minutes: int) -> list[Row]:
    stack.fresh_database()
    live_services(stack, meters, interval=60, history_days=3)
    samples: dict[str, list[int]] = {name: [] for name in stack.processes}
    for _ in range(minutes):
        time.sleep(60)
        for name, process in stack.processes.items():
            samples[name].append(rss_kib(process.pid))
    stack.stop("ingest")
    row = live_counts(stack, 60, f"soak: {minutes} min at {meters} meters live",
                      "; ".join(f"{name} RSS MiB {', '.join(str(s // 1024) for s in values)}"
                                for name, values in samples.items()))
    stack.stop_all()
    return [row]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def write_file(path: Path, meters: int, minutes: int) -> None:
    with path.open("w") as out:
        out.write("time,meter,active_power_kw,voltage_v\n")
        for minute in range(minutes):
            stamp = time.strftime("%Y-%m-%dT%H:%M:00Z", time.gmtime(1_700_000_000 // 60 * 60 + 60 * minute))
            for meter in range(meters):
                out.write(f"{stamp},file-{meter:04d},{1 + (minute % 97) / 50:.3f},{230 + meter % 5}\n")


def wait_until(condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"faults: gave up waiting after {timeout} s")
        time.sleep(2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=100)
    parser.add_argument("--only", nargs="+", choices=("restart", "kill", "twice", "disk-full", "soak"),
                        help="these faults (default: all but soak)")
    parser.add_argument("--soak-minutes", type=int, default=60)
    parser.add_argument("--soak-meters", type=int, default=1000)
    args = parser.parse_args()
    stack = Stack()
    table = []
    try:
        for name in args.only or ("restart", "kill", "twice", "disk-full"):
            if name == "soak":
                table += fault_soak(stack, args.soak_meters, args.soak_minutes)
            else:
                table += globals()[f"fault_{name.replace('-', '_')}"](stack, args.meters)
    finally:
        print(f"faults: the services' logs are in {stack.logs}", file=sys.stderr)
        stack.down()
    print("| fault | rows lost | rows duplicated | readings unscored | readings scored twice | note |")
    print("|---|---|---|---|---|---|")
    for row in table:
        print(row.line())
    if any(row.lost or row.duplicated or row.unscored or row.scored_twice for row in table):
        sys.exit(1)


if __name__ == "__main__":
    main()
