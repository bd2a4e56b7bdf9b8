"""Surviving a lost database: a capped backoff between attempts to reconnect, and an outage
logged once when it starts and once when it ends, with its length.

A long-running service catches `psycopg.OperationalError` (a restarted or unreachable server:
AdminShutdown, "server closed the connection unexpectedly", "the database system is starting
up"...), calls `Outage.lost`, gets a new connection from `reconnect` and carries on from its
own durable state; once it has done a unit of work again it calls `Outage.over`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

import psycopg

from wattwatch.errors import WattwatchError, first_line

FIRST_BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 30.0


def backoff(first: float = FIRST_BACKOFF_SECONDS,
            most: float = MAX_BACKOFF_SECONDS) -> Iterator[float]:
    """Seconds to wait before each attempt: `first`, doubling, never more than `most`."""
    delay = first
    while True:
        yield delay
        delay = min(delay * 2, most)


class Outage:
    """One line when the database is lost (WARNING), one when work has resumed (INFO, with how
    long it took and what goes on: `resumed`); the failed attempts in between at DEBUG."""

    def __init__(self, log: logging.Logger, resumed: str = "work goes on",
                 clock: Callable[[], float] = time.monotonic):
        self.log = log
        self.resumed = resumed
        self.clock = clock
        self.since: float | None = None

    @property
    def ongoing(self) -> bool:
        return self.since is not None

    def lost(self, exc: BaseException) -> None:
        if self.since is None:
            self.since = self.clock()
            self.log.warning("database connection lost (%s: %s); reconnecting with backoff up "
                             "to %g s", type(exc).__name__, first_line(exc), MAX_BACKOFF_SECONDS)
        else:
            self.log.debug("database still unavailable: %s: %s", type(exc).__name__,
                           first_line(exc))

    def over(self) -> None:
        if self.since is not None:
            self.log.info("database back after %.1f s; %s", self.clock() - self.since,
                          self.resumed)
            self.since = None


def reconnect(open_connection: Callable[[], psycopg.Connection], outage: Outage,
              sleep: Callable[[float], None] = time.sleep) -> psycopg.Connection:
    """A new connection from `open_connection` (one attempt each), waiting with backoff while
    the server refuses or cannot be reached; it never gives up (a service waits for its
    database)."""
    for delay in backoff():
        sleep(delay)
        try:
            return open_connection()
        except (psycopg.OperationalError, WattwatchError) as exc:
            outage.lost(exc)
    raise AssertionError("unreachable")  # backoff() never ends
