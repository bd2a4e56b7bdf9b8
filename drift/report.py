"""A drift run's results: stored in drift_reports (with retrain requests) and shaped as JSON
like the old system's drift report."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

import psycopg

from drift.analysis import FeatureDrift
from drift.status import INSUFFICIENT, overall
from drift.windows import Windows

REPORT_COLUMNS = ("run_id", "run_at", "mode", "meter_id", "feature", "reference_from",
                  "reference_to", "current_from", "current_to", "reference_n", "current_n", "psi",
                  "ks_statistic", "ks_pvalue", "wasserstein_norm", "status", "recommendation")


@dataclass
class MeterDrift:
    meter_id: str
    windows: Windows
    features: list[FeatureDrift]
    retrain_requested: bool = False  # a request was written by this run
    retrain_pending: bool = False  # one was already waiting, so none was written

    @property
    def status(self) -> str:
        return overall([feature.status for feature in self.features])

    def actions(self) -> list[str]:
        """What to do, worst first, like the old report's recommended_actions."""
        meter = self.meter_id
        actions = []
        if self.status == "critical":
            state = "request written" if self.retrain_requested else "a request was already pending"
            actions.append(f"retrain the anomaly model of meter {meter} ({state})")
        for status, verb in (("critical", "investigate"), ("alert", "investigate"),
                             ("warning", "monitor")):
            names = [f.feature for f in self.features if f.status == status]
            if names:
                actions.append(f"{verb} {', '.join(names)} on meter {meter}")
        unjudged = [f.feature for f in self.features if f.status == INSUFFICIENT]
        if unjudged:
            actions.append(f"check data collection for {', '.join(unjudged)} on meter {meter}: "
                           "too little data to judge")
        return actions


@dataclass
class RunReport:
    mode: str
    run_at: datetime
    run_id: uuid.UUID = field(default_factory=uuid.uuid4)
    meters: list[MeterDrift] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # meter -> why it could not be judged

    @property
    def status(self) -> str:
        return overall([meter.status for meter in self.meters])

    def rows(self):
        for meter in self.meters:
            w = meter.windows
            for f in meter.features:
                yield (self.run_id, self.run_at, self.mode, meter.meter_id, f.feature,
                       w.reference_from, w.reference_to, w.current_from, w.current_to,
                       f.reference_n, f.current_n, f.psi, f.ks_statistic, f.ks_pvalue,
                       f.wasserstein_norm, f.status, f.recommendation)

    def to_json(self) -> dict:
        """The old system's report shape (timestamp, analysis_period, metrics per feature,
        overall_status, recommended_actions), once per meter, inside one run."""
        actions = [action for meter in self.meters for action in meter.actions()]
        return {
            "timestamp": self.run_at.isoformat(),
            "run_id": str(self.run_id),
            "mode": self.mode,
            "overall_status": self.status,
            "recommended_actions": actions or ["no action needed"],
            "meters": [_meter_json(meter) for meter in self.meters],
        }


def _meter_json(meter: MeterDrift) -> dict:
    w = meter.windows
    return {
        "meter_id": meter.meter_id,
        "analysis_period": {
            "baseline": f"{w.reference_from.isoformat()} to {w.reference_to.isoformat()}",
            "current": f"{w.current_from.isoformat()} to {w.current_to.isoformat()}",
            "baseline_source": w.reference_source,
        },
        "metrics": {f.feature: {
            "psi": f.psi, "psi_threshold": f.psi_threshold, "ks_statistic": f.ks_statistic,
            "ks_p_value": f.ks_pvalue, "wasserstein_norm": f.wasserstein_norm,
            "reference_n": f.reference_n, "current_n": f.current_n, "status": f.status,
            "recommendation": f.recommendation} for f in meter.features},
        "overall_status": meter.status,
        "recommended_actions": meter.actions() or ["no action needed"],
    }


def store(conn: psycopg.Connection, report: RunReport) -> None:
    """Write the run's rows and its retrain requests in one transaction: a run that fails
    half-way leaves nothing behind, and a rerun is a new run, never a duplicate of rows."""
    with conn.transaction(), conn.cursor() as cur:
        with cur.copy(f"COPY drift_reports ({', '.join(REPORT_COLUMNS)}) FROM STDIN") as copy:
            for row in report.rows():
                copy.write_row(row)
        critical = [meter for meter in report.meters if meter.status == "critical"]
        if critical:
            # One drift run at a time decides whether a request is pending.
            cur.execute("SELECT pg_advisory_xact_lock(hashtext('wattwatch.retrain_requests'))")
        for meter in critical:
            cur.execute(
                "INSERT INTO retrain_requests (meter_id, reason, requested_by) "
                "SELECT %(meter)s, %(reason)s, 'drift' WHERE NOT EXISTS (SELECT FROM "
                "retrain_requests WHERE (meter_id = %(meter)s OR meter_id IS NULL) "
                "AND handled_at IS NULL)",
                {"meter": meter.meter_id, "reason": _reason(meter, report)})
            meter.retrain_requested = cur.rowcount == 1
            meter.retrain_pending = not meter.retrain_requested


def _reason(meter: MeterDrift, report: RunReport) -> str:
    drifted = ", ".join(f"{f.feature} (PSI {f.psi:.2f})" for f in meter.features
                        if f.status == "critical")
    return f"critical drift on {drifted}; drift run {report.run_id}"

