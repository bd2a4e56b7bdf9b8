"""Training many meters together (`detect train`, and the first models of `detect run`): their
windows found in one query, their readings read a group of meters per query, their models
fitted on a pool of processes (detector_train_processes, by default one per core) while the
next group is read, and each model handed back to be stored as soon as it is fitted.

The models are those `registry.train` gives one meter at a time: the same windows, readings
and fit."""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor

import psycopg

from detector import readings, registry
from detector.algorithms import DEFAULT_MODEL
from wattwatch.settings import Settings

# Meters read per query; twice as many are in the pool at a time (the next group is read
# while the last one is fitted), which bounds the readings held in memory.
GROUP = 16


class _InProcess(Executor):
    """One process: each fit runs when submitted."""

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as exc:  # noqa: BLE001 - handed over as the pool would
            future.set_exception(exc)
        return future


def processes(settings: Settings) -> int:
    return settings.detector_train_processes or os.cpu_count() or 1


def _executor(settings: Settings, meters: int) -> Executor:
    count = min(processes(settings), meters)
    if count <= 1:
        return _InProcess()
    # forkserver: the workers do not inherit the detector's threads and connections
    return ProcessPoolExecutor(count, mp_context=multiprocessing.get_context("forkserver"))


def train_many(conn: psycopg.Connection, meters: list[readings.Meter], settings: Settings,
               keep: Callable[[readings.Meter, registry.Fitted], None], *,
               start=None, end=None, holdout_days: float = 0,
               algorithm: str = DEFAULT_MODEL) -> dict[str, Exception]:
    """Fit a model for each meter and hand it to `keep` (which stores it), meter after meter
    as they are fitted. Returns the meters that could not be trained, with why (a
    WattwatchError when they have too little data). A lost database is raised."""
    with conn.transaction():
        spans = registry.windows_of(conn, meters, settings, start, end, holdout_days)
    failed: dict[str, Exception] = {meter_id: span for meter_id, span in spans.items()
                                    if isinstance(span, Exception)}
    todo = [meter for meter in meters if meter.meter_id not in failed]
    fitting: deque[tuple[readings.Meter, Future]] = deque()

    def collect() -> None:
        meter, future = fitting.popleft()
        try:
            fitted = future.result()
        except Exception as exc:  # noqa: BLE001 - one meter's failure: the others go on
            failed[meter.meter_id] = exc
            return
        try:
            keep(meter, fitted)
        except psycopg.OperationalError:
            raise
        except Exception as exc:  # noqa: BLE001 - as above
            failed[meter.meter_id] = exc

    with _executor(settings, len(todo)) as pool:
        for first in range(0, len(todo), GROUP):
            group = todo[first:first + GROUP]
            with conn.transaction():
                frames = readings.windows(conn, [(meter, *spans[meter.meter_id])
                                                 for meter in group])
            for meter, frame in zip(group, frames):
                fitting.append((meter, pool.submit(registry.fit, meter, frame, settings,
                                                   *spans[meter.meter_id], algorithm)))
            while len(fitting) > GROUP:
                collect()
        while fitting:
            collect()
    return failed

