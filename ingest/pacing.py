"""Pacing of live loads (replay, simulate): flush often, refresh the rollups and log progress
now and then."""

from __future__ import annotations

import time

from ingest.batches import BatchLoader
from wattwatch import logs

FLUSH_SECONDS = 1.0
ROLLUP_SECONDS = 60.0
log = logs.get("ingest")


class Pacer:
    """Flushes a loader at least every FLUSH_SECONDS; every ROLLUP_SECONDS refreshes the rollups
    and logs what was stored since, so live data reaches readings quickly and dashboards soon
    after."""

    def __init__(self, loader: BatchLoader):
        self.loader = loader
        self.flushed = self.rolled = time.monotonic()
        self.logged = (0, 0, 0)  # loaded, duplicates, rejected at the last progress line

    def tick(self) -> None:
        now = time.monotonic()
        if now - self.flushed >= FLUSH_SECONDS:
            self.loader.flush()
            self.flushed = now
        if now - self.rolled >= ROLLUP_SECONDS:
            self.loader.refresh_rollups(live=True)
            self.progress(now - self.rolled)
            self.rolled = now

    def progress(self, seconds: float) -> None:
        """One line with what was stored since the last one: INFO when anything came, else DEBUG."""
        summary = self.loader.summary
        counts = (summary.loaded, summary.duplicates, summary.rejected_total)
        loaded, duplicates, rejected = (now - then for now, then in zip(counts, self.logged))
        level = logs.logging.INFO if loaded or duplicates or rejected else logs.logging.DEBUG
        log.log(level, "%s: %d readings stored, %d duplicates, %d rejected in the last %.0f s "
                "(%d meters, newest %s)", summary.source, loaded, duplicates, rejected, seconds,
                len(summary.meters), summary.last_time.isoformat() if summary.last_time else "none")
        self.logged = counts
