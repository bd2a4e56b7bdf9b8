"""How long a worker killed with kill -9 keeps its seat: from the kill to its leaving
`live_workers` as another worker sees it. (The others then take its meters at their next look:
within timescale.fleet.CHECK_SECONDS for `detect run`, drift.service.FLEET_SECONDS for
`drift run`.)

    WATTWATCH_DATABASE_URL=postgresql://... python scripts/bench_handover.py [--runs 10]

The database must be migrated; the script takes seats named bench-* and leaves none behind.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from timescale.fleet import Fleet  # noqa: E402
from wattwatch.settings import load_settings  # noqa: E402

# A worker that takes its seat, says so, and waits to be killed.
HOLDER = """
import logging, sys, time
from prometheus_client import CollectorRegistry
from timescale.fleet import Fleet
from wattwatch.settings import load_settings
seat = Fleet(load_settings(), "detector", logging.getLogger("holder"), CollectorRegistry())
seat.refresh()
print("seated", flush=True)
time.sleep(600)
"""


def look(watcher: Fleet) -> tuple[str, ...]:
    """The live workers as the watcher sees them now."""
    watcher.refresh()
    return watcher.share.workers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    os.environ["WATTWATCH_WORKER_ID"] = "bench-watcher"
    watcher = Fleet(load_settings(), "detector", logging.getLogger("bench"), CollectorRegistry())
    env = {**os.environ, "WATTWATCH_WORKER_ID": "bench-victim",
           "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    seconds = []
    try:
        for _ in range(args.runs):
            victim = subprocess.Popen([sys.executable, "-c", HOLDER], env=env,
                                      stdout=subprocess.PIPE, text=True)
            assert victim.stdout.readline().strip() == "seated"
            while "bench-victim" not in look(watcher):
                time.sleep(0.01)
            victim.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            victim.wait()
            while "bench-victim" in look(watcher):
                pass
            seconds.append(time.monotonic() - killed)
    finally:
        watcher.close()
    print(f"kill -9 to seat gone, {args.runs} runs: median {statistics.median(seconds) * 1000:.0f}"
          f" ms, max {max(seconds) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
