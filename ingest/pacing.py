"""Pacing of live loads (replay, simulate): flush often, refresh the rollups now and then."""

from __future__ import annotations

import time

from ingest.batches import BatchLoader

FLUSH_SECONDS = 1.0
ROLLUP_SECONDS = 60.0


class Pacer:
    """Flushes a loader at least every FLUSH_SECONDS and refreshes the rollups every
    ROLLUP_SECONDS, so live data reaches readings quickly and dashboards soon after."""

    def __init__(self, loader: BatchLoader):
        self.loader = loader
        self.flushed = self.rolled = time.monotonic()

    def tick(self) -> None:
        now = time.monotonic()
        if now - self.flushed >= FLUSH_SECONDS:
            self.loader.flush()
            self.flushed = now
        if now - self.rolled >= ROLLUP_SECONDS:
            self.loader.refresh_rollups(live=True)
            self.rolled = now
