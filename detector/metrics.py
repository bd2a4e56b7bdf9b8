"""The detector's Prometheus metrics (served by `detect run` on port 9102 by default).

    wattwatch_detector_scored_readings_total{meter_id="m1"} 1440.0
    wattwatch_detector_anomalies_total{severity="high",kind="spike"} 3.0
    wattwatch_detector_incidents_total{meter_id="m1"} 2.0
    wattwatch_detector_scoring_lag_seconds{meter_id="m1"} 0.41
    wattwatch_detector_batch_duration_seconds_bucket{le="0.1"} 12.0
    wattwatch_detector_model_info{meter_id="m1",version="3",algorithm="seasonal-iforest"} 1.0
    wattwatch_detector_cycles_total 57.0
    wattwatch_detector_worker_meters{worker="host-1234"} 334.0
    wattwatch_detector_workers 3.0

(The last two are the worker's share among the live workers: `timescale.fleet`.)
"""

from __future__ import annotations

from datetime import datetime, timezone

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class DetectorMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.scored = Counter("wattwatch_detector_scored_readings", "Readings scored and written",
                              ["meter_id"], registry=registry)
        self.anomalies = Counter("wattwatch_detector_anomalies", "Anomalous readings written",
                                 ["severity", "kind"], registry=registry)
        self.incidents = Counter("wattwatch_detector_incidents",
                                 "Incidents opened or extended", ["meter_id"], registry=registry)
        self.lag = Gauge("wattwatch_detector_scoring_lag_seconds",
                         "Seconds from the newest scored reading's insert to its score being "
                         "committed, at the last batch", ["meter_id"], registry=registry)
        self.batch = Histogram("wattwatch_detector_batch_duration_seconds",
                               "Time to read, score and write one batch",
                               buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
                               registry=registry)
        self.model = Gauge("wattwatch_detector_model_info",
                           "1 for the model version each meter is scored with",
                           ["meter_id", "version", "algorithm"], registry=registry)
        self.cycles = Counter("wattwatch_detector_cycles", "Scoring cycles completed",
                              registry=registry)

    def use_model(self, meter: str, version: int, algorithm: str, previous: tuple | None) -> None:
        if previous is not None:
            self.model.remove(meter, *previous)
        self.model.labels(meter, str(version), algorithm).set(1)

    def observe_lag(self, meter: str, newest: datetime) -> None:
        """The meter's readings up to `newest` (their ingested_at) have their scores committed."""
        lag = datetime.now(timezone.utc) - newest
        self.lag.labels(meter).set(max(lag.total_seconds(), 0.0))

    def forget(self, meters: set[str]) -> None:
        """Drop the lag of meters another worker scores now: theirs is its to tell."""
        for meter in meters:
            try:
                self.lag.remove(meter)
            except KeyError:
                pass  # never scored here
