"""The drift service's Prometheus metrics: the latest result per meter and feature, and how
the runs go.

    wattwatch_drift_psi{meter_id="m1",feature="voltage_v"} 0.04
    wattwatch_drift_status{meter_id="m1",feature="voltage_v"} 0
    wattwatch_drift_meter_status{meter_id="m1"} 0
    wattwatch_drift_last_run_timestamp_seconds{mode="light"} 1.7e+09

Status values: -1 insufficient_data, 0 stable, 1 warning, 2 alert, 3 critical. A feature
without a number in the latest run (insufficient data; KS in a light run) keeps no PSI series,
or keeps the KS of the last full run.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from drift.report import RunReport
from drift.status import CODES

LABELS = ("meter_id", "feature")


class DriftMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.psi = Gauge("wattwatch_drift_psi", "Seasonal PSI of the latest run", LABELS,
                         registry=registry)
        self.psi_threshold = Gauge(
            "wattwatch_drift_psi_threshold", "Calibrated PSI that undrifted data exceeds at the "
            "configured false-alarm rate", LABELS, registry=registry)
        self.ks = Gauge("wattwatch_drift_ks_statistic", "KS statistic of the latest full run",
                        LABELS, registry=registry)
        self.wasserstein = Gauge(
            "wattwatch_drift_wasserstein_norm", "Wasserstein distance over the baseline standard "
            "deviation, latest full run", LABELS, registry=registry)
        self.status = Gauge("wattwatch_drift_status", "Drift status per feature: -1 "
                            "insufficient_data, 0 stable, 1 warning, 2 alert, 3 critical", LABELS,
                            registry=registry)
        self.meter_status = Gauge("wattwatch_drift_meter_status", "Overall drift status of a "
                                  "meter (worst feature), coded as wattwatch_drift_status",
                                  ["meter_id"], registry=registry)
        self.last_run = Gauge("wattwatch_drift_last_run_timestamp_seconds",
                              "When the last successful run started", ["mode"], registry=registry)
        self.duration = Gauge("wattwatch_drift_last_run_duration_seconds",
                              "How long the last successful run took", ["mode"], registry=registry)
        self.runs = Counter("wattwatch_drift_runs_total", "Successful drift runs", ["mode"],
                            registry=registry)
        self.errors = Counter("wattwatch_drift_run_errors_total", "Drift runs that failed",
                              ["mode"], registry=registry)
        self.retrain = Counter("wattwatch_drift_retrain_requests_total",
                               "Retrain requests written on critical drift", registry=registry)
        for mode in ("light", "full"):  # so that rate() and absent() work from the start
            self.runs.labels(mode)
            self.errors.labels(mode)

    def publish(self, report: RunReport, duration_seconds: float) -> None:
        for meter in report.meters:
            self.meter_status.labels(meter.meter_id).set(CODES[meter.status])
            self.retrain.inc(meter.retrain_requested)
            for f in meter.features:
                labels = (meter.meter_id, f.feature)
                self.status.labels(*labels).set(CODES[f.status])
                _set_or_drop(self.psi, labels, f.psi)
                _set_or_drop(self.psi_threshold, labels, f.psi_threshold)
                if report.mode == "full":
                    _set_or_drop(self.ks, labels, f.ks_statistic)
                    _set_or_drop(self.wasserstein, labels, f.wasserstein_norm)
        self.last_run.labels(report.mode).set(report.run_at.timestamp())
        self.duration.labels(report.mode).set(duration_seconds)
        self.runs.labels(report.mode).inc()

    def failed(self, mode: str) -> None:
        self.errors.labels(mode).inc()

    def forget(self, meter_ids: set[str]) -> None:
        """Drop the series of meters another worker judges now: their verdicts are its."""
        per_feature = (self.psi, self.psi_threshold, self.ks, self.wasserstein, self.status)
        for gauge, names in [(g, LABELS) for g in per_feature] + [(self.meter_status, LABELS[:1])]:
            for sample in [sample for metric in gauge.collect() for sample in metric.samples]:
                if sample.labels["meter_id"] in meter_ids:
                    gauge.remove(*(sample.labels[name] for name in names))


def _set_or_drop(gauge: Gauge, labels: tuple, value: float | None) -> None:
    if value is None:
        try:
            gauge.remove(*labels)
        except KeyError:
            pass
    else:
        gauge.labels(*labels).set(value)
