#!/usr/bin/env python3
"""Training benchmark: --meters simulated meters with --days of one-minute readings each,
trained together as `detect train` does (`detector.fleet`), with the time of each stage (read,
profiles, forest, calibration, store), meters per second and peak RSS; then, for reference in
the same run, the old path (`registry.train`, one meter after another) on --reference meters;
then the memory the detector holds per model: RSS after loading --load models from the
registry and stacking them as `detect run` does.

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
    "profiles": ("features.py", "fit"), "forest": ("_iforest.py", "fit"),
    "calibration": ("calibration.py", "fit"),
}


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def children_peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


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
            seconds, storing, count = train_fleet(conn, meters, settings)
            print(f"new path (detector.fleet): {count} meters in {seconds:.1f} s = "
                  f"{count / seconds:.2f} meters/s ({seconds / count:.3f} s per meter), of which "
                  f"storing {storing:.1f} s; peak RSS {peak_mib():.0f} MiB here, "
                  f"{children_peak_mib():.0f} MiB the largest fitting process")
            per_meter = stages(conn, meters[:args.profile], settings)
            print("stages of one meter, in one process (cProfile, s): "
                  + ", ".join(f"{name} {value:.3f}" for name, value in per_meter.items()))
            reference = meters[:args.reference]
            started = time.monotonic()
            for meter in reference:
                with conn.transaction():
                    registry.train(conn, meter, settings, reason="benchmark")
            old = (time.monotonic() - started) / len(reference)
            print(f"old path (registry.train, one after another): {old:.3f} s per meter on "
                  f"{len(reference)} meters; the new path trains {old / (seconds / count):.1f}x "
                  f"as many meters per second")
            before = rss_mib()
            with conn.transaction():
                versions = registry.active_versions(conn, [m.meter_id for m in
                                                           meters[:args.load]])
                models = {meter_id: registry.load(conn, version)
                          for meter_id, version in versions.items()}
            loaded = rss_mib()
            by_layout: dict = {}
            for meter_id, model in models.items():
                by_layout.setdefault(stacked.layout(model.detector), {})[meter_id] = model.detector
            stacks = [stacked.Stack(members) for members in by_layout.values()]
            stacked_mib = rss_mib()
            print(f"memory: {len(models)} models loaded take {loaded - before:.0f} MiB = "
                  f"{(loaded - before) * 1024 / len(models):.0f} KiB per meter; their "
                  f"{len(stacks)} stack(s) {stacked_mib - loaded:.0f} MiB more = "
                  f"{(stacked_mib - before) * 1024 / len(models):.0f} KiB per meter in all")
    finally:
        stack.stop_postgres(info)
        stack.unmount_chroot_if_idle()
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
