#!/usr/bin/env python3
"""Memory a detector holds per meter: --meters models loaded (unpickled, as `detect run`
loads them from the registry) and stacked as `detect run` stacks them (`detector.stacked.
Stacks`), with the RSS of this process after, against before. One model is trained on --days
of a simulated meter and loaded --meters times (each load is a model of its own in memory).
No database.

    .venv/bin/python scripts/bench_model_memory.py --meters 10000
"""

from __future__ import annotations

import argparse
import gc
import pickle
import sys
import time
from pathlib import Path

import pandas as pd

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from detector import stacked  # noqa: E402
from detector.models import make_model  # noqa: E402
from ingest.synthetic import simulate_block  # noqa: E402

sys.path.insert(0, str(PROJECT / "scripts"))
from bench_training import peak_mib, rss_mib  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=1000)
    parser.add_argument("--days", type=int, default=28)
    args = parser.parse_args()
    end = int(pd.Timestamp("2026-11-01", tz="UTC").timestamp() // 86400)
    frame = pd.concat([simulate_block(14, 0, block, 60, 0.05)[0]
                       for block in range(end - args.days, end)]).tz_convert("Europe/Paris")
    detector = make_model("seasonal-iforest").fit(frame)
    blob = pickle.dumps((detector, list(frame.columns)))
    del detector, frame
    gc.collect()
    base = rss_mib()
    started = time.monotonic()
    stacks = stacked.Stacks()
    models = []
    for n in range(args.meters):  # as `detect run`'s model cache: load, stack, next
        models.append(pickle.loads(blob)[0])
        stacks.put(f"m{n}", models[-1])
    stacks.rebuild()
    gc.collect()
    done = rss_mib()
    print(f"{args.meters} models loaded and stacked in {time.monotonic() - started:.1f} s: "
          f"{done - base:.0f} MiB = {(done - base) * 1024 / args.meters:.0f} KiB per meter "
          f"(stored model {len(blob) / 1024:.0f} KiB); process RSS {done:.0f} MiB, "
          f"peak {peak_mib():.0f} MiB")
    assert len(stacks.keys) == len(models)


if __name__ == "__main__":
    main()
