"""What one scoring cycle of `detect run` did, and its log line: at INFO when it wrote or
failed something, at DEBUG when there was nothing to do."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from wattwatch import logs
from wattwatch.errors import first_line


@dataclass
class Work:
    """Counts of one cycle; the writer thread of a backfill adds to them too."""

    meters: set[str] = field(default_factory=set)  # meters with readings scored
    readings: int = 0
    anomalies: int = 0
    opened: int = 0                                # incidents opened
    # meter -> why it could not be handled (one line naming the meter)
    failed: dict[str, str] = field(default_factory=dict)
    # meters left for a later cycle: another process holds them or scored them meanwhile, or
    # the cycle had enough
    busy: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def scored(self, meter_id: str, readings: int) -> None:
        if readings:
            with self._lock:
                self.meters.add(meter_id)
                self.readings += readings

    def recorded(self, anomalies: int, opened: int) -> None:
        with self._lock:
            self.anomalies += anomalies
            self.opened += opened

    def log(self, log: logging.Logger, seconds: float) -> None:
        level = logging.INFO if self.readings or self.failed else logging.DEBUG
        if log.isEnabledFor(level):
            log.log(level, "cycle: %s scored, %d readings, %d anomalies, %d incidents opened"
                    "%s%s in %.2f s", _meters(len(self.meters)), self.readings, self.anomalies,
                    self.opened, f", {_meters(len(self.failed))} failed" if self.failed else "",
                    f", {_meters(len(self.busy))} left for a later cycle" if self.busy else "",
                    seconds)


def _meters(count: int) -> str:
    return f"{count} meter" if count == 1 else f"{count} meters"


def failure(log: logging.Logger, meter_id: str, exc: Exception) -> str:
    """Log an unexpected error of one meter (one line; its traceback at DEBUG) and return the
    line that reports it. (A lost connection is the whole process's, not a meter's: callers
    let psycopg.OperationalError through.)"""
    logs.unexpected(log, f"meter {meter_id}", exc)
    return f"meter {meter_id!r}: {type(exc).__name__}: {first_line(exc)}"
