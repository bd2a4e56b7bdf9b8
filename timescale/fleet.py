"""Several workers of one service (`detect run`, `drift run`) on one database: which are alive,
and which meters are this one's.

A worker takes a seat: a session advisory lock on (its service's class, hashtext(worker id)),
held on a connection of its own for as long as it lives, and a row in `workers` that names
it. The live workers are the rows whose lock is held (the `live_workers` view reads
pg_locks): a killed process's lock goes with its connection at once, a vanished machine's
when the server's TCP keepalives give up on it (`timescale.connect`). Every worker lists the
live ones at most every CHECK_SECONDS and holds the meters that rendezvous hashing gives it
(`timescale.rendezvous`), so a worker that comes or goes moves only the meters it takes or
leaves. No other coordinator: two workers that briefly disagree about the list are kept
apart meter by meter by the jobs' own advisory locks.
"""

from __future__ import annotations

import logging
import os
import socket
import time

import psycopg
from prometheus_client import CollectorRegistry, Gauge

from timescale.connect import connect_url
from timescale.rendezvous import Share
from wattwatch.errors import WattwatchError
from wattwatch.settings import Settings

# The first key of each service's seats: two-key advisory locks, apart from the one-key
# locks of meters and migrations.
LOCK_CLASSES = {"detector": 0x57570001, "drift": 0x57570002}
# How often a worker lists the live workers at most.
CHECK_SECONDS = 2.0

_SEAT = """INSERT INTO workers (service, worker_id, lock_class, lock_key, host, pid, meters)
           VALUES (%(service)s, %(me)s, %(class)s, hashtext(%(me)s), %(host)s, %(pid)s,
                   %(meters)s)
           ON CONFLICT (service, worker_id) DO UPDATE SET seen_at = now(),
             meters = excluded.meters, lock_key = excluded.lock_key, host = excluded.host,
             pid = excluded.pid, started_at = CASE WHEN %(new)s THEN now()
                                                   ELSE workers.started_at END"""
_LOOK = """SELECT array(SELECT worker_id FROM live_workers WHERE service = %(service)s),
                  array(SELECT meter_id FROM meters)"""
_FORGET_DEAD = """DELETE FROM workers w WHERE service = %(service)s AND NOT EXISTS
                  (SELECT FROM live_workers l WHERE l.service = w.service
                   AND l.worker_id = w.worker_id)"""


def default_worker_id() -> str:
    """Host name and process id: unique on one machine, and across compose replicas (each
    container has a host name of its own)."""
    return f"{socket.gethostname()}-{os.getpid()}"


class Fleet:
    """This worker's seat among the live workers of its service, and its share of the meters;
    its gauges (in `registry`):

        wattwatch_detector_worker_meters{worker="host-1234"} 334.0
        wattwatch_detector_workers 3.0
    """

    def __init__(self, settings: Settings, service: str, log: logging.Logger,
                 registry: CollectorRegistry):
        self.settings, self.service, self.log = settings, service, log
        self.me = settings.worker_id or default_worker_id()
        self.share = Share(self.me)
        self.conn: psycopg.Connection | None = None
        self.checked = float("-inf")
        self.taken = False  # the seat was found taken (logged once until it is free)
        self.meters = Gauge(f"wattwatch_{service}_worker_meters",
                            "Meters this worker holds (its share among the live workers)",
                            ["worker"], registry=registry)
        self.workers = Gauge(f"wattwatch_{service}_workers",
                             "Live workers sharing the meters, as this worker last counted them",
                             registry=registry)
        self.meters.labels(self.me).set(0)

    def join(self) -> None:
        """Take the seat, and give the workers started together time to take theirs: the
        first work (training every meter without a model, say) is then shared out too.
        psycopg.OperationalError when the database is lost."""
        self.refresh()
        time.sleep(CHECK_SECONDS)

    def mine(self) -> set[str]:
        """The meters this worker holds, listing the live workers again when CHECK_SECONDS
        have passed. psycopg.OperationalError when the database is lost: the worker holds
        nothing until it has its seat again."""
        if time.monotonic() - self.checked >= CHECK_SECONDS:
            self.refresh()
        return self.share.mine()

    def refresh(self) -> tuple[set[str], set[str]]:
        """List the live workers and the meters now; the meters this worker gained, and
        those it lost."""
        self.checked = time.monotonic()
        try:
            new = self.conn is None
            if new and not self._sit():
                return self._update((), ())
            params = {"service": self.service, "me": self.me, "class": LOCK_CLASSES[self.service],
                      "host": socket.gethostname(), "pid": os.getpid(), "new": new}
            workers, meters = self.conn.execute(_LOOK, params).fetchone()
            change = self._update({*workers, self.me}, meters)
            self.conn.execute(_SEAT, {**params, "meters": len(self.share.mine())})
            self.conn.execute(_FORGET_DEAD, params)
        except psycopg.OperationalError:
            self.close()
            self._update((), ())
            raise
        return change

    def close(self) -> None:
        """Leave the seat: the others take this worker's meters at their next look."""
        if self.conn is None:
            return
        try:
            self.conn.execute("DELETE FROM workers WHERE service = %s AND worker_id = %s",
                              (self.service, self.me))
            self.conn.execute("SELECT pg_advisory_unlock_all()")
        except psycopg.OperationalError:
            pass  # the session is gone, and its lock with it
        finally:
            self.conn.close()
            self.conn = None

    def _sit(self) -> bool:
        """Take the seat on a new connection; False while another session holds it."""
        try:
            conn = connect_url(self.settings.database_url.get_secret_value(),
                               timeout=self.settings.connect_timeout_seconds, attempts=1,
                               autocommit=True,
                               application_name=f"wattwatch {self.service} {self.me}"[:63])
        except WattwatchError as exc:  # the database is lost: the caller's outage
            raise psycopg.OperationalError(str(exc)) from exc
        if not conn.execute("SELECT pg_try_advisory_lock(%s, hashtext(%s))",
                            (LOCK_CLASSES[self.service], self.me)).fetchone()[0]:
            conn.close()
            if not self.taken:
                self.log.warning(
                    "worker id %r is held by a live session (another %s worker with the same "
                    "WATTWATCH_WORKER_ID, or this worker's old session that the server has not "
                    "dropped yet): holding no meters until it is free", self.me, self.service)
            self.taken = True
            return False
        self.conn, self.taken = conn, False
        return True

    def _update(self, workers, meters) -> tuple[set[str], set[str]]:
        """Take the live workers and the meters; log a change of the workers; set the gauges."""
        before = self.share.workers
        gained, lost = self.share.update(workers, meters)
        held = len(self.share.mine())
        if self.share.workers != before and self.share.workers:
            self.log.info("%d live %s worker(s): %s; this one (%s) holds %d of %d meters "
                          "(%d gained, %d lost)", len(self.share.workers), self.service,
                          ", ".join(self.share.workers), self.me, held, len(self.share.owners),
                          len(gained), len(lost))
        elif gained or lost:
            self.log.debug("meters added or removed: this worker holds %d of %d", held,
                           len(self.share.owners))
        self.meters.labels(self.me).set(held)
        self.workers.set(len(self.share.workers))
        return gained, lost
