"""The drift service: one pass now, then light passes daily and full passes weekly, with the
results on /metrics."""

from __future__ import annotations

import json
import sys
import time
from typing import Callable

import psycopg
import schedule
from prometheus_client import CollectorRegistry

from drift.metrics import DriftMetrics
from drift.report import RunReport
from exporters.metrics import serve_metrics
from wattwatch.errors import WattwatchError, first_line


def serve(settings, run: Callable[[str], RunReport], *, first_mode: str, port: int,
          print_json: bool) -> None:
    """Serve /metrics, run a `first_mode` pass at once (so the gauges are never empty after a
    restart), then follow the schedule until interrupted. A failed pass is counted and logged;
    the service keeps running and tries again at the next scheduled time."""
    registry = CollectorRegistry()
    metrics = DriftMetrics(registry)
    bound = serve_metrics(registry, port, settings.metrics_address)
    print(f"drift: serving metrics on http://{settings.metrics_address}:{bound}/metrics", flush=True)

    def job(mode: str) -> None:
        started = time.monotonic()
        try:
            report = run(mode)
        except Exception as exc:  # noqa: BLE001 - one failed pass must not stop the service
            metrics.failed(mode)
            reason = first_line(exc) if isinstance(exc, (WattwatchError, psycopg.Error)) \
                else f"{type(exc).__name__}: {first_line(exc)}"
            print(f"drift: {mode} run failed: {reason}", file=sys.stderr, flush=True)
            return
        metrics.publish(report, time.monotonic() - started)
        print(summary(report), flush=True)
        if print_json:
            print(json.dumps(report.to_json()), flush=True)

    scheduler = schedule.Scheduler()
    scheduler.every().day.at(settings.drift_light_at).do(job, "light")
    getattr(scheduler.every(), settings.drift_full_day).at(settings.drift_full_at).do(job, "full")
    job(first_mode)
    while True:
        scheduler.run_pending()
        time.sleep(max(1.0, min(scheduler.idle_seconds or 60.0, 60.0)))


def summary(report: RunReport) -> str:
    """One line per run: counts of meters per overall status."""
    counts = {}
    for meter in report.meters:
        counts[meter.status] = counts.get(meter.status, 0) + 1
    statuses = ", ".join(f"{count} {status}" for status, count in sorted(counts.items())) or "no meters"
    requests = sum(meter.retrain_requested for meter in report.meters)
    return (f"drift: {report.mode} run {report.run_id}: {len(report.meters)} meter(s): {statuses}; "
            f"{requests} retrain request(s) written")
