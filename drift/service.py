"""The drift service: one pass now, then light passes daily and full passes weekly, meters with a
new model judged within a minute, and the results on /metrics.

Several services share the meters: each judges the meters of its share among the live workers
(`timescale.fleet`, looked at every FLEET_SECONDS). Meters it takes over from a worker that left
or died before judging them in the last scheduled pass are judged at once, in that pass's mode.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from typing import Callable

import psycopg
import schedule
from prometheus_client import CollectorRegistry

from drift import catch_up
from drift.metrics import DriftMetrics
from drift.report import RunReport
from timescale.fleet import Fleet
from wattwatch import logs
from wattwatch.errors import WattwatchError, first_line
from wattwatch.metrics import serve_metrics

log = logs.get("drift")
CATCH_UP_SECONDS = 60
FLEET_SECONDS = 5
RETRY_SECONDS = (30, 600)  # first retry after a failed pass, and the longest wait between retries

# run(mode, meters) -> the stored report; `meters` None means every meter.
Run = Callable[[str, list[str] | None], RunReport]
# check(query) -> its answer, on a connection of its own (a restarted database costs nothing).
Check = Callable[[Callable[[psycopg.Connection], object]], object]


class DriftService:
    """Runs passes as the schedule says and keeps going through failures: a failed pass is logged,
    counted and retried with backoff; nothing stops the service but a signal."""

    def __init__(self, settings, run: Run, check: Check, metrics: DriftMetrics, print_json: bool,
                 fleet: Fleet | None = None):
        self.settings, self.run, self.check = settings, run, check
        self.metrics, self.print_json, self.fleet = metrics, print_json, fleet
        self.retry: tuple[float, float, str] | None = None  # (when, wait, mode) after a failure
        self.last_pass: tuple[str, datetime] | None = None  # the last scheduled pass: mode, start

    def job(self, mode: str, meters: list[str] | None = None) -> bool:
        """A pass over the given meters, or a scheduled pass (meters None) over every meter of
        this worker's share."""
        started = time.monotonic()
        try:
            if meters is None and self.fleet is not None:
                meters = self._share(mode)
                if not meters:
                    log.info("%s pass: no meter is this worker's to judge", mode)
                    return True
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

    def _share(self, mode: str) -> list[str]:
        """The meters of this worker's share as the live workers are now, for a scheduled pass."""
        self.metrics.forget(self.fleet.refresh()[1])
        self.last_pass = (mode, datetime.now(timezone.utc))
        return sorted(self.fleet.mine())

    def follow_fleet(self) -> None:
        """Look at the live workers again; judge the meters taken over that missed the last
        scheduled pass."""
        try:
            gained, lost = self.fleet.refresh()
            self.metrics.forget(lost)
            missed = []
            if gained and self.last_pass is not None:
                missed = self.check(lambda conn: catch_up.not_judged_since(
                    conn, sorted(gained), self.last_pass[1]))
        except (WattwatchError, psycopg.Error) as exc:  # the passes report a lost database
            log.debug("could not look at the live workers: %s", first_line(exc))
            return
        if missed:
            mode = self.last_pass[0]
            log.info("judging %d meter(s) taken over that missed the %s pass: %s", len(missed),
                     mode, ", ".join(missed[:10]))
            self.job(mode, missed)

    def catch_up(self) -> None:
        """Judge the meters whose model is new; retry a failed pass when its time has come."""
        if self.retry is not None:
            when, _, mode = self.retry
            if time.monotonic() >= when:
                self.job(mode)
            return
        try:
            meters = self.check(catch_up.meters_with_new_models)
            if self.fleet is not None:
                mine = self.fleet.mine()
                meters = [meter for meter in meters if meter in mine]
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
    fleet = Fleet(settings, "drift", log, registry)
    service = DriftService(settings, run, check, metrics, print_json, fleet)
    mode = service.first_mode(first_mode)
    log.info("drift service: metrics on http://%s:%d/metrics; light passes daily at %s, full "
             "passes on %s at %s, meters with a new model judged within %d s; worker %s; "
             "start-up pass: %s", settings.metrics_address, bound, settings.drift_light_at,
             settings.drift_full_day, settings.drift_full_at, CATCH_UP_SECONDS, fleet.me, mode)
    try:
        fleet.join()
    except psycopg.Error:
        pass  # the start-up pass will report the database
    scheduler = schedule.Scheduler()
    scheduler.every().day.at(settings.drift_light_at).do(service.job, "light")
    getattr(scheduler.every(), settings.drift_full_day).at(settings.drift_full_at).do(service.job, "full")
    scheduler.every(CATCH_UP_SECONDS).seconds.do(service.catch_up)
    scheduler.every(FLEET_SECONDS).seconds.do(service.follow_fleet)
    try:
        service.job(mode)
        while True:
            scheduler.run_pending()
            time.sleep(max(1.0, min(scheduler.idle_seconds or 60.0, 60.0)))
    finally:
        fleet.close()


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
