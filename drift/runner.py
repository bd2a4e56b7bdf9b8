"""One drift pass over every meter (or the chosen ones): read what the stored summaries do
not cover, have each meter judged (`drift.judgement`, in worker processes), store the run and
the new summaries."""

from __future__ import annotations

import multiprocessing
from collections import deque
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import numpy as np
import psycopg

from drift import summary_store
from drift.analysis import DriftConfig
from drift.baselines import SECONDS_PER_DAY
from drift.judgement import MeterWork, judge_meter, utc_date
from drift.readings import read_window
from drift.report import MeterDrift, RunReport, store
from drift.windows import model_windows, windows_for
from wattwatch.errors import WattwatchError, first_line
from wattwatch.fields import FIELDS


def run_pass(conn: psycopg.Connection, settings, *, mode: str, current_to: datetime | None = None,
             current_days: float | None = None, reference: tuple[datetime, datetime] | None = None,
             reference_days: float | None = None, meters: list[str] | None = None) -> RunReport:
    """Compare each meter's current window (the `current_days` before `current_to`, default now)
    with its reference window, store the run and return it. `conn` must be in autocommit.

    Fixed reference windows (a model's training window, or given) are summarised once and
    their complete UTC days of current readings once each (drift/summary_store.py): a run
    reads only what no summary covers yet."""
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
    summary_store.drop_late(conn, settings.drift_ingest_margin_minutes)
    report = RunReport(mode=mode, run_at=run_at)
    # One thread does all database work on `conn` in order (reading the next meter, storing the
    # summaries of judged ones) while the judges work.
    with ThreadPoolExecutor(max_workers=1) as database, _judges(settings.drift_workers) as judges:
        # At most `workers` meters wait for judging beyond the one being read: memory stays
        # bounded whatever the number of meters.
        waiting, writes = deque(), []
        for plan, work in _read_ahead(database, conn, plans, config):
            waiting.append((plan, work, judges.submit(judge_meter, plan[1], work, mode=mode, config=config)))
            while len(waiting) > settings.drift_workers:
                _judged(database, conn, writes, report, *waiting.popleft())
        for item in waiting:
            _judged(database, conn, writes, report, *item)
        for future in writes:
            future.result()
    store(conn, report)
    return report


def _judged(database: Executor, conn, writes: list, report: RunReport, plan, work: MeterWork,
            future) -> None:
    """Add a judged meter to the report, or its failure: one meter's failure (a time zone
    that does not exist, say) must not cost the others their verdict."""
    meter, _, windows = plan
    try:
        result = future.result()
    except Exception as exc:  # noqa: BLE001 - reported per meter, the pass goes on
        report.failed[meter] = f"{type(exc).__name__}: {first_line(exc)}"
        return
    if work.settings is not None and (result.baseline is not None or result.days):
        baseline = result.baseline if result.baseline is not None else work.baseline_id
        writes.append(database.submit(summary_store.store, conn, meter, windows.reference_from,
                                      windows.reference_to, work.settings, baseline, result.days))
    report.meters.append(MeterDrift(meter, windows, result.features))


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


def _read_ahead(database: Executor, conn, plans, config: DriftConfig):
    """Yield each plan with its work, reading the next meter (waiting on the server) while the
    caller judges this one (numpy); two meters in memory at most."""
    ahead = None
    for plan in plans:
        future = database.submit(_read, conn, plan, config)
        if ahead is not None:
            yield ahead[0], ahead[1].result()
        ahead = (plan, future)
    if ahead is not None:
        yield ahead[0], ahead[1].result()


def _read(conn, plan, config: DriftConfig) -> MeterWork:
    """A meter's stored summaries, and the raw readings they do not cover. Only fixed
    reference windows are summarised: the configured one moves with every run."""
    meter, tz, w = plan
    settings = None if w.reference_source == "configured" else summary_store.settings_key(
        tz, config.bins, config.min_per_stratum)
    stored = None if settings is None else summary_store.load_baseline(
        conn, meter, w.reference_from, w.reference_to, settings)
    reference = stored[1] if stored else read_window(conn, meter, w.reference_from, w.reference_to)
    first = -(-int(w.current_from.timestamp()) // SECONDS_PER_DAY)  # complete UTC days only
    last = int(w.current_to.timestamp()) // SECONDS_PER_DAY - 1
    complete = set(range(first, last + 1)) if settings is not None else set()
    days = {}
    if stored and complete:
        days = summary_store.load_days(conn, stored[0], utc_date(first), utc_date(last))
    missing = [day for day in sorted(complete) if utc_date(day) not in days]
    # Raw readings: the window less the stored days, read as few contiguous ranges.
    ranges, start = [], w.current_from
    for day in sorted(complete):
        if utc_date(day) in days:
            day_start = _instant(day)
            if day_start > start:
                ranges.append((start, day_start))
            start = _instant(day + 1)
    if w.current_to > start:
        ranges.append((start, w.current_to))
    parts = [read_window(conn, meter, begin, end) for begin, end in ranges]
    current = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])) if parts \
        else (np.empty(0, np.int64), np.empty((0, len(FIELDS))))
    return MeterWork(reference, days, current, set(missing), stored[0] if stored else None, settings)


def _instant(day: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(days=day)


def _meters(conn, wanted: list[str] | None) -> list[tuple[str, str]]:
    rows = conn.execute("SELECT meter_id, timezone FROM meters ORDER BY meter_id").fetchall()
    if wanted is None:
        return rows
    found = {meter for meter, _ in rows}
    missing = [meter for meter in wanted if meter not in found]
    if missing:
        raise WattwatchError(f"unknown meter(s): {', '.join(missing)} (not in the meters table)")
    return [row for row in rows if row[0] in set(wanted)]
