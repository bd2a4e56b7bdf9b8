#!/usr/bin/env python3
"""Training benchmark: --meters simulated meters with --days of one-minute readings each,
trained together as `detect train` does (`detector.fleet`), with the time of each stage (read,
profiles, forest, calibration, store), meters per second and peak RSS; then, for reference in
the same run, the old path (`registry.train`, one meter after another) on --reference meters;
then the memory the detector holds per model: RSS after loading --load models from the
registry and stacking them as `detect run` does (`scripts/bench_model_memory.py` does the same
for any number of meters, without a database).

It starts a TimescaleDB of its own (wattwatch/stack.py) in a fresh state directory under /tmp,
loads the readings by COPY (timed apart), and stops the server at the end.

    .venv/bin/python scripts/bench_training.py --meters 1000 --days 28
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import resource
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import psycopg

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from detector import fleet, readings, registry, stacked  # noqa: E402
from ingest.synthetic import FIELD_ORDER, meter_id, simulate_block  # noqa: E402
from timescale.connect import connect_url  # noqa: E402
from timescale.migrate import migrate  # noqa: E402
from wattwatch import stack  # noqa: E402
from wattwatch.settings import Settings  # noqa: E402

SEED = 14
# The stages of a fit, by the functions whose cumulative time they are (profiled in-process
# on --profile meters: the pool's workers cannot be profiled from here).
STAGES = {
    "profiles": ("features.py", "_fit"), "forest": ("_iforest.py", "fit"),
    "calibration": ("calibration.py", "fit"),
}


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class ProcessTree:
    """CPU seconds and peak RSS of this process and its descendants (the pool's workers are the
    forkserver's children, which getrusage does not count), sampled from /proc every 0.2 s
    while it is open."""

    def __init__(self):
        self.cpu: dict[int, float] = {}
        self.peak: dict[int, float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> "ProcessTree":
        self._read()
        self.start_cpu = dict(self.cpu)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()

    def _sample(self) -> None:
        while not self.stop.wait(0.2):
            self._read()

    def _read(self) -> None:
        parents, stats = {}, {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as stat:
                        fields = stat.read().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                parents[int(entry)] = int(fields[1])
                stats[int(entry)] = fields
        ours, tick, page = {os.getpid()}, os.sysconf("SC_CLK_TCK"), os.sysconf("SC_PAGE_SIZE")
        for pid in sorted(parents):
            chain, at = [], pid
            while at not in ours and at in parents and at > 1:
                chain.append(at)
                at = parents[at]
            if at in ours:
                ours.update(chain)
        for pid in ours & set(stats):
            fields = stats[pid]
            self.cpu[pid] = (int(fields[11]) + int(fields[12])) / tick
            self.peak[pid] = max(self.peak.get(pid, 0.0), int(fields[21]) * page / 2**20)

    def used(self) -> float:
        return sum(cpu - self.start_cpu.get(pid, 0.0) for pid, cpu in self.cpu.items())

    def largest_other(self) -> float:
        return max((mib for pid, mib in self.peak.items() if pid != os.getpid()), default=0.0)


def load(conn: psycopg.Connection, meters: int, days: int) -> int:
    """Simulated readings (`ingest simulate`'s generator) of every meter, by COPY."""
    end_block = int(pd.Timestamp("2026-11-01", tz="UTC").timestamp() // 86400)
    rows = 0
    conn.execute("INSERT INTO meters (meter_id, timezone) SELECT id, 'Europe/Paris'"
                 " FROM unnest(%s::text[]) AS id",
                 ([meter_id("bench", m) for m in range(meters)],))
    for m in range(meters):
        frame = pd.concat([simulate_block(SEED, m, block, 60, 0.05)[0]
                           for block in range(end_block - days, end_block)])
        table = frame[list(FIELD_ORDER)]
        table.insert(0, "meter_id", meter_id("bench", m))
        table.insert(0, "time", frame.index.strftime("%Y-%m-%d %H:%M:%S+00"))
        buffer = io.StringIO()
        table.to_csv(buffer, index=False, header=False, na_rep="")
        with conn.cursor().copy("COPY readings (time, meter_id, " + ", ".join(FIELD_ORDER)
                                + ") FROM STDIN WITH (FORMAT csv)") as copy:
            copy.write(buffer.getvalue())
        conn.commit()
        rows += len(table)
    conn.execute("ANALYZE readings")
    conn.commit()
    return rows


def train_fleet(conn, meters, settings) -> tuple[float, float, int]:
    """`detect train`'s path: seconds, seconds of it storing, models stored."""
    stored = [0.0, 0]

    def keep(meter, fitted) -> None:
        started = time.monotonic()
        with conn.transaction():
            registry.store(conn, fitted, "benchmark")
        stored[0] += time.monotonic() - started
        stored[1] += 1

    started = time.monotonic()
    failed = fleet.train_many(conn, meters, settings, keep)
    if failed:
        raise SystemExit(f"{len(failed)} meters not trained: {next(iter(failed.values()))}")
    return time.monotonic() - started, stored[0], stored[1]


def stages(conn, meters, settings) -> dict[str, float]:
    """Seconds per meter of each stage of the old path, profiled in this process."""
    spans = registry.windows_of(conn, meters, settings, None, None)
    profile = cProfile.Profile()
    read = 0.0
    for meter in meters:
        started = time.monotonic()
        with conn.transaction():
            frame = readings.window(conn, meter, *spans[meter.meter_id])
        read += time.monotonic() - started
        profile.enable()
        registry.fit(meter, frame, settings, *spans[meter.meter_id])
        profile.disable()
    stats = pstats.Stats(profile).stats
    out = {"read": read / len(meters)}
    for stage, (file, function) in STAGES.items():
        out[stage] = sum(entry[3] for (path, _, name), entry in stats.items()
                         if path.endswith(file) and name == function) / len(meters)
    out["fit total"] = sum(entry[3] for (path, _, name), entry in stats.items()
                           if path.endswith("registry.py") and name == "fit") / len(meters)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=200)
    parser.add_argument("--days", type=int, default=28)
    parser.add_argument("--reference", type=int, default=10,
                        help="meters trained one after another by the old path (default 10)")
    parser.add_argument("--profile", type=int, default=3,
                        help="meters whose fit is profiled for the stage times (default 3)")
    parser.add_argument("--load", type=int, default=None,
                        help="models loaded and stacked for the memory figure (default: all)")
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="ww_bench_training_"))
    info = stack.start_postgres(state)
    try:
        url = info["database_url"]
        settings = Settings(_env_file=None, database_url=url)
        with connect_url(url) as conn:
            migrate(conn, settings)
        with psycopg.connect(url) as conn:
            started = time.monotonic()
            rows = load(conn, args.meters, args.days)
            print(f"loaded {args.meters} meters x {args.days} days = {rows:,} readings in "
                  f"{time.monotonic() - started:.0f} s (not timed)")
            meters = readings.meters(conn)
            print(f"training: {fleet.processes(settings)} processes, {os.cpu_count()} cores")
            load_before = os.getloadavg()[0]
            with ProcessTree() as tree:
                seconds, storing, count = train_fleet(conn, meters, settings)
            print(f"new path (detector.fleet): {count} meters in {seconds:.1f} s = "
                  f"{count / seconds:.2f} meters/s ({seconds / count:.3f} s per meter), of which "
                  f"storing {storing:.1f} s; CPU {tree.used():.0f} s = "
                  f"{tree.used() / count:.2f} s per meter (this process and its workers; the "
                  f"database server's not counted); peak RSS {peak_mib():.0f} MiB here, "
                  f"{tree.largest_other():.0f} MiB the largest worker; load average "
                  f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after")
            per_meter = stages(conn, meters[:args.profile], settings)
            print("stages of one meter, in one process (cProfile, s): "
                  + ", ".join(f"{name} {value:.3f}" for name, value in per_meter.items()))
            reference = meters[:args.reference]
            started, cpu = time.monotonic(), time.process_time()
            for meter in reference:
                with conn.transaction():
                    registry.train(conn, meter, settings, reason="benchmark")
            old = (time.monotonic() - started) / len(reference)
            old_cpu = (time.process_time() - cpu) / len(reference)
            print(f"old path (registry.train, one after another): {old:.3f} s per meter "
                  f"(CPU {old_cpu:.2f} s) on {len(reference)} meters; the new path trains "
                  f"{old / (seconds / count):.1f}x as many meters per second")
            before = rss_mib()
            stacks = stacked.Stacks()
            with conn.transaction():
                versions = registry.active_versions(conn, [m.meter_id for m in
                                                           meters[:args.load]])
                for meter_id, version in versions.items():  # as `detect run` loads them
                    stacks.put(meter_id, registry.load(conn, version).detector)
            stacks.rebuild()
            held = rss_mib() - before
            print(f"memory: {len(versions)} models loaded from the registry and stacked take "
                  f"{held:.0f} MiB = {held * 1024 / len(versions):.0f} KiB per meter")
    finally:
        stack.stop_postgres(info)
        stack.unmount_chroot_if_idle()
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
