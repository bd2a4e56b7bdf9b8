"""Per-meter advisory locks: one process at a time trains and scores a meter.

The locks are PostgreSQL session-level advisory locks keyed on the meter
(`hashtextextended(meter_id, SEED)`), held on a connection the process keeps. `detect run`
tries them (`pg_try_advisory_lock`) for the meters it is about to train or score, leaves the
meters another process holds to that process, and releases them all at the end of its cycle,
after its transactions have committed. One-shot commands (`detect train`) wait for their
meter. A session lock outlives the transactions of a backfill's batches, and a killed
process's locks vanish with its connection: a crash never leaves a meter locked.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import psycopg
from psycopg.pq import TransactionStatus

from timescale import advisory

# The detector's key space ("detector" in ASCII).
SEED = advisory.seed(b"detector")
KEY = advisory.key(SEED)


class MeterLocks:
    """The meters a `detect run` process holds in its current cycle, on its main connection."""

    def __init__(self, conn: psycopg.Connection):
        self.conn = conn
        self.held: set[str] = set()

    def claim(self, meter_ids: Iterable[str]) -> set[str]:
        """Those of the meters this process holds now (locked now or earlier in the cycle);
        the others are held by another process. One query for all of them; the caller's
        transaction may roll back, the locks stay until `release`."""
        meter_ids = list(meter_ids)
        self.held |= advisory.try_locks(self.conn, set(meter_ids) - self.held, SEED)
        return {meter_id for meter_id in meter_ids if meter_id in self.held}

    def release(self) -> None:
        """Release every meter (at the end of a cycle, after its commits). On a lost
        connection there is nothing to release: the locks went with the session."""
        if not self.held:
            return
        self.held.clear()
        if self.conn.closed:
            return
        try:
            if self.conn.info.transaction_status == TransactionStatus.INERROR:
                self.conn.rollback()
            self.conn.execute("SELECT pg_advisory_unlock_all()")
            self.conn.commit()
        except psycopg.OperationalError:
            pass  # the session is gone, and its locks with it


@contextmanager
def waiting_for(conn: psycopg.Connection, meter_id: str, log: logging.Logger) -> Iterator[None]:
    """Hold one meter's lock for a one-shot command, waiting while another process trains or
    scores it (at most until the end of that process's cycle); outside any transaction."""
    if not conn.execute("SELECT pg_try_advisory_lock(" + KEY + ")", (meter_id,)).fetchone()[0]:
        log.info("meter %s: waiting for the detector that is training or scoring it", meter_id)
        conn.execute("SELECT pg_advisory_lock(" + KEY + ")", (meter_id,))
    conn.commit()
    try:
        yield
    finally:
        try:
            if conn.info.transaction_status == TransactionStatus.INERROR:
                conn.rollback()
            conn.execute("SELECT pg_advisory_unlock(" + KEY + ")", (meter_id,))
            conn.commit()
        except psycopg.OperationalError:
            pass  # the session is gone, and its lock with it
