"""One drift pass over every meter (or the chosen ones): read both windows of each meter,
judge each feature, store the run."""

from __future__ import annotations

import multiprocessing
from collections import deque
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import psycopg

from drift.analysis import DriftConfig, Sample, compare, seed_for
from drift.baselines import local_calendar
from drift.readings import read_window
from drift.report import MeterDrift, RunReport, store
from drift.windows import model_windows, windows_for
from ingest.fields import FIELDS
from wattwatch.errors import WattwatchError


def run_pass(conn: psycopg.Connection, settings, *, mode: str, current_to: datetime | None = None,
             current_days: float | None = None, reference: tuple[datetime, datetime] | None = None,
             reference_days: float | None = None, meters: list[str] | None = None) -> RunReport:
    """Compare each meter's current window (the `current_days` before `current_to`, default now)
    with its reference window, store the run and return it. `conn` must be in autocommit."""
    run_at = datetime.now(timezone.utc)
    current_to = current_to or run_at
    current_from = current_to - timedelta(days=current_days or settings.drift_current_days)
    config = DriftConfig.from_settings(settings)
    known = _meters(conn, meters)
    models = model_windows(conn)
    plans = [(meter, tz, windows_for(meter, current_from=current_from, current_to=current_to,
                                     reference_days=reference_days or settings.drift_reference_days,
                                     models=models, given=reference))
             for meter, tz in known]
    report = RunReport(mode=mode, run_at=run_at)
    with _judges(settings.drift_workers) as judges:
        # At most `workers` meters wait for judging beyond the one being read: memory stays
        # bounded whatever the number of meters.
        waiting = deque()
        for (meter, tz, windows), (reference_data, current_data) in _read_ahead(conn, plans):
            waiting.append((meter, windows, judges.submit(
                judge_meter, tz, reference_data, current_data, mode=mode, config=config)))
            while len(waiting) > settings.drift_workers:
                report.meters.append(_judged(*waiting.popleft()))
        report.meters.extend(_judged(*item) for item in waiting)
    store(conn, report)
    return report


def _judged(meter: str, windows, future) -> MeterDrift:
    return MeterDrift(meter, windows, future.result())


def _judges(workers: int) -> Executor:
    """Processes that judge meters in parallel (numpy work holds the GIL between calls), or the
    calling thread itself for one worker."""
    if workers == 1:
        return _InlineExecutor()
    # spawn, not fork: the service has threads (the /metrics server) that fork would copy.
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))


class _InlineExecutor(Executor):
    def submit(self, fn, /, *args, **kwargs) -> Future:
        future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as exc:  # noqa: BLE001 - handed to the caller through the future
            future.set_exception(exc)
        return future


def judge_meter(tz: str, reference_data, current_data, *, mode: str,
                config: DriftConfig) -> list:
    """Every feature of one meter; data are (unix seconds, values (n, features)) pairs."""
    (reference_time, reference_values), (current_time, current_values) = reference_data, current_data
    reference_calendar = local_calendar(reference_time, tz)
    current_calendar = local_calendar(current_time, tz)
    return [compare(feature,
                    Sample(reference_values[:, index], reference_calendar.stratum, reference_calendar.day),
                    Sample(current_values[:, index], current_calendar.stratum, current_calendar.day),
                    mode=mode, config=config, seed=seed_for(feature))
            for index, feature in enumerate(FIELDS)]


def _read_ahead(conn, plans):
    """Yield each plan with its two windows' data, reading the next meter (waiting on the
    server) while the caller judges this one (numpy); two meters in memory at most."""
    def read(plan):
        meter, _, windows = plan
        return (read_window(conn, meter, windows.reference_from, windows.reference_to),
                read_window(conn, meter, windows.current_from, windows.current_to))

    with ThreadPoolExecutor(max_workers=1) as reader:
        ahead = None
        for plan in plans:
            future = reader.submit(read, plan)
            if ahead is not None:
                yield ahead[0], ahead[1].result()
            ahead = (plan, future)
        if ahead is not None:
            yield ahead[0], ahead[1].result()


def _meters(conn, wanted: list[str] | None) -> list[tuple[str, str]]:
    rows = conn.execute("SELECT meter_id, timezone FROM meters ORDER BY meter_id").fetchall()
    if wanted is None:
        return rows
    found = {meter for meter, _ in rows}
    missing = [meter for meter in wanted if meter not in found]
    if missing:
        raise WattwatchError(f"unknown meter(s): {', '.join(missing)} (not in the meters table)")
    return [row for row in rows if row[0] in set(wanted)]
