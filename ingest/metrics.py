"""Prometheus metrics of an ingest process (file load, replay or simulator)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class IngestMetrics:
    """Counters an ingest process updates after each committed batch."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        self.url: str | None = None  # where it is served, once it is
        self.rows = Counter("wattwatch_ingest_rows", "Input rows stored or skipped, by outcome "
                            "(loaded, duplicate)", ["outcome"], registry=self.registry)
        self.rejected = Counter("wattwatch_ingest_rejected_rows", "Input rows rejected, by reason",
                                ["reason"], registry=self.registry)
        self.batch_seconds = Histogram(
            "wattwatch_ingest_batch_duration_seconds", "Time to write one batch to the database",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry)
        self.last_reading = Gauge("wattwatch_ingest_last_reading_timestamp_seconds",
                                  "Time of the newest reading stored per meter (Unix time)",
                                  ["meter"], registry=self.registry)
        self.connection_errors = Counter("wattwatch_ingest_connection_errors",
                                         "Database connections lost or refused", registry=self.registry)
        for outcome in ("loaded", "duplicate"):
            self.rows.labels(outcome)
        self._newest: dict[str, float] = {}

    def batch(self, loaded: int, duplicates: int, rejected: dict[str, int], seconds: float,
              newest: dict[str, float]) -> None:
        self.rows.labels("loaded").inc(loaded)
        self.rows.labels("duplicate").inc(duplicates)
        for reason, count in rejected.items():
            self.rejected.labels(reason).inc(count)
        self.batch_seconds.observe(seconds)
        for meter, stamp in newest.items():
            if stamp > self._newest.get(meter, float("-inf")):  # a late batch never moves it back
                self._newest[meter] = stamp
                self.last_reading.labels(meter).set(stamp)
