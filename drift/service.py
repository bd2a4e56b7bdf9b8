"""The drift service: one pass now, then light passes daily and full passes weekly, meters with a
new model judged within a minute, and the results on /metrics."""

from __future__ import annotations

import json
import time
from typing import Callable

import psycopg
import schedule
from prometheus_client import CollectorRegistry

from drift import catch_up
from drift.metrics import DriftMetrics
from drift.report import RunReport
from wattwatch import logs
from wattwatch.errors import WattwatchError, first_line
from wattwatch.metrics import serve_metrics

log = logs.get("drift")
CATCH_UP_SECONDS = 60
RETRY_SECONDS = (30, 600)  # first retry after a failed pass, and the longest wait between retries

# run(mode, meters) -> the stored report; `meters` None means every meter.
Run = Callable[[str, list[str] | None], RunReport]
# check(query) -> its answer, on a connection of its own (a restarted database costs nothing).
Check = Callable[[Callable[[psycopg.Connection], object]], object]


class DriftService:
    """Runs passes as the schedule says and keeps going through failures: a failed pass is logged,
    counted and retried with backoff; nothing stops the service but a signal."""

    def __init__(self, settings, run: Run, check: Check, metrics: DriftMetrics, print_json: bool):
        self.settings, self.run, self.check = settings, run, check
        self.metrics, self.print_json = metrics, print_json
        self.retry: tuple[float, float, str] | None = None  # (when, wait, mode) after a failure

    def job(self, mode: str, meters: list[str] | None = None) -> bool:
        started = time.monotonic()
        try:
            report = self.run(mode, meters)
        except Exception as exc:  # noqa: BLE001 - one failed pass must not stop the service
            self.metrics.failed(mode)
            self._failed(mode, exc)
            return False
        if self.retry is not None:
            log.info("drift passes work again after the failure above")
            self.retry = None
        self.metrics.publish(report, time.monotonic() - started)
        log.info("%s", summary(report))
        for meter, reason in report.failed.items():
            log.error("meter %s could not be judged: %s", meter, reason)
        if self.print_json:
            print(json.dumps(report.to_json()), flush=True)
        return True

    def _failed(self, mode: str, exc: Exception) -> None:
        wait = RETRY_SECONDS[0] if self.retry is None else min(self.retry[1] * 2, RETRY_SECONDS[1])
        if isinstance(exc, (WattwatchError, psycopg.Error)):
            log.error("%s pass failed: %s; retrying in %d s", mode, first_line(exc), wait)
        else:
            logs.unexpected(log, f"{mode} pass failed (retrying in {wait} s)", exc)
        self.retry = (time.monotonic() + wait, wait, mode)

    def catch_up(self) -> None:
        """Judge the meters whose model is new; retry a failed pass when its time has come."""
        if self.retry is not None:
            when, _, mode = self.retry
            if time.monotonic() >= when:
                self.job(mode)
            return
        try:
            meters = self.check(catch_up.meters_with_new_models)
            mode = "full" if meters and self.check(catch_up.full_pass_due) else "light"
        except (WattwatchError, psycopg.Error) as exc:
            self._failed("catch-up", exc)
            return
        if meters:
            log.info("judging %d meter(s) with a new model: %s", len(meters), ", ".join(meters[:10]))
            self.job(mode, meters)

    def first_mode(self, asked: str | None) -> str:
        """The start-up pass: as asked, else full when the weekly full pass was missed."""
        if asked:
            return asked
        try:
            return "full" if self.check(catch_up.full_pass_due) else "light"
        except (WattwatchError, psycopg.Error):
            return "light"  # the pass itself will report the database


def serve(settings, run: Run, check: Check, *, first_mode: str | None, port: int,
          print_json: bool) -> None:
    """Serve /metrics, run a start-up pass at once (so the gauges are never empty after a
    restart), then follow the schedule until interrupted."""
    registry = CollectorRegistry()
    metrics = DriftMetrics(registry)
    bound = serve_metrics(registry, port, settings.metrics_address)
    service = DriftService(settings, run, check, metrics, print_json)
    mode = service.first_mode(first_mode)
    log.info("drift service: metrics on http://%s:%d/metrics; light passes daily at %s, full "
             "passes on %s at %s, meters with a new model judged within %d s; start-up pass: %s",
             settings.metrics_address, bound, settings.drift_light_at, settings.drift_full_day,
             settings.drift_full_at, CATCH_UP_SECONDS, mode)
    scheduler = schedule.Scheduler()
    scheduler.every().day.at(settings.drift_light_at).do(service.job, "light")
    getattr(scheduler.every(), settings.drift_full_day).at(settings.drift_full_at).do(service.job, "full")
    scheduler.every(CATCH_UP_SECONDS).seconds.do(service.catch_up)
    service.job(mode)
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
    failed = f"; {len(report.failed)} meter(s) could not be judged" if report.failed else ""
    return (f"{report.mode} run {report.run_id}: {len(report.meters)} meter(s): {statuses}; "
            f"{requests} retrain request(s) written{failed}")
