"""A one-line progress display on stderr when it is a terminal; silent otherwise."""

from __future__ import annotations

import sys
import time

from ingest.summary import Summary


class Progress:
    def __init__(self, stream=sys.stderr, every: float = 0.5):
        self.stream = stream
        self.enabled = stream.isatty()
        self.every = every
        self.started = time.perf_counter()
        self.shown = 0.0

    def __call__(self, summary: Summary) -> None:
        now = time.perf_counter()
        if not self.enabled or now - self.shown < self.every:
            return
        self.shown = now
        rate = summary.read / max(now - self.started, 1e-9)
        self.stream.write(f"\r{summary.read:,} rows  loaded {summary.loaded:,}  duplicates "
                          f"{summary.duplicates:,}  rejected {summary.rejected_total:,}  "
                          f"{rate:,.0f} rows/s ")
        self.stream.flush()

    def done(self) -> None:
        if self.enabled and self.shown:
            self.stream.write("\n")
            self.stream.flush()
