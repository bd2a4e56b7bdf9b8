"""`wattwatch detect run`: score every meter's new readings from its watermark, in bulk.

Each cycle: find the meters with pending readings (`detector.watermarks`) -> read them with
the readings before them that the features need -> score them with the meter's newest active
model (`detector.model_cache`) -> write the scores and the incidents of the rows actually
inserted (`detector.scores`) -> advance the watermarks.

- Meters with few pending readings (the live case) are read and scored together
  (`detector.live`, `detector.stacked`), and their scores, incidents and watermarks written in
  one transaction.
- A meter with many (a backfill) is scored in batches of detector_batch_rows, each read, scored
  and written at once on connections of their own (`detector.pipeline`). Its watermark moves
  after all its batches are committed: a crash re-reads them, and the checks on insert keep
  every score written exactly once.

Several `detect run` processes share the meters: each scores only the meters of its share
among the live workers (`timescale.fleet`), which follows when workers come and go. A meter is
trained and scored by one process at a time even while the workers' lists disagree (a hand-over,
or `run --once`, which takes no share and scores every meter it can hold): each cycle holds the
advisory locks of the meters it works on (`detector.locks`) and leaves those another process
holds. A meter
that fails (too little data to train, an unexpected error) is reported and tried again later
with backoff (`detector.training`, `detector.retries`); the others go on. `run` survives a
lost database: it reconnects with backoff and resumes from the watermarks
(`timescale.reconnect`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import psycopg
from psycopg.pq import TransactionStatus

from detector import live, pipeline, registry, watermarks
from detector.cycles import Work, failure
from detector.live import Tail
from detector.locks import MeterLocks
from detector.metrics import DetectorMetrics
from detector.model_cache import ModelCache
from detector.retries import HeldBack
from detector.scores import ScoreStore
from detector.training import Trainer
from detector.watermarks import NEVER, Pending
from timescale.fleet import Fleet
from timescale.reconnect import Outage, backoff, reconnect
from wattwatch import logs
from wattwatch.settings import Settings

log = logs.get("detector")

# Meters scored together may each bring detector_batch_rows / (meters pending) readings, and
# never fewer than this; a meter with more is scored alone, in batches.
GROUP_MIN_ROWS = 1_000
# `run --once` looks again this often for meters another process was scoring.
BUSY_WAIT = 0.5
# A cycle works on at most this many meters, those scored longest ago first: each holds an
# advisory lock until the cycle ends, and the server's lock table holds about
# max_locks_per_transaction x max_connections.
MAX_METERS_PER_CYCLE = 5_000


class Scorer:
    """Scores all meters; one instance per `detect run` process."""

    def __init__(self, conn: psycopg.Connection, settings: Settings, metrics: DetectorMetrics,
                 *, once: bool = False, fleet: Fleet | None = None):
        self.conn = pipeline.prepared_plans_off(conn)
        self.fleet = fleet  # None: every meter is this process's to try
        self.share: set[str] = set()  # the meters of this worker's share at the last cycle
        self.settings = settings
        self.metrics = metrics
        self.connections = pipeline.Connections(settings)
        self.locks = MeterLocks(conn)
        self.held_back = HeldBack()
        self.trainer = Trainer(settings, self.held_back, retrying=not once)
        self.cache = ModelCache(metrics, self.trainer)
        self.store = ScoreStore(metrics)
        self.tails: dict[str, Tail] = {}
        self.work = Work()  # what the last cycle did

    def close(self) -> None:
        self.connections.close()
        if self.fleet is not None:
            self.fleet.close()

    def reset(self, conn: psycopg.Connection) -> None:
        """Go on with a new main connection after the database was lost: the pipeline's
        connections are opened again, and the readings kept of each meter are dropped (the
        next cycle reads from the watermarks). Models, loaded by version, are kept."""
        self.close()
        if conn is not self.conn:
            self.conn.close()
        self.conn = pipeline.prepared_plans_off(conn)
        self.locks = MeterLocks(conn)
        self.tails.clear()

    def cycle(self) -> int:
        """Act on retrain requests, then score what is pending for every meter this process
        can hold (the others are another process's); rows written. What the cycle did is in
        `self.work`, and logged."""
        work = self.work = Work()
        started = time.monotonic()
        try:
            with self.conn.transaction():
                self.trainer.retrain(self.conn, self.locks, work)
            pending = self._claim(self._share(
                watermarks.pending(self.conn, live.held_times(self.tails))))
            models = self.cache.active(self.conn, [p.meter for p in pending], work, self._failed)
            pending = [p for p in pending if p.meter.meter_id in models]
            limit = max(GROUP_MIN_ROWS, self.settings.detector_batch_rows // max(len(pending), 1))
            few = [p for p in pending if p.count < limit]
            written, alone = self._score_together(few, models, limit)
            for p in alone + [p for p in pending if p.count >= limit]:
                if self.fleet is not None and p.meter.meter_id not in self.fleet.mine():
                    work.busy.add(p.meter.meter_id)  # another worker's since the cycle began
                    continue
                try:
                    written += self._score_alone(p, models[p.meter.meter_id])
                except psycopg.OperationalError:
                    raise
                except Exception as exc:  # noqa: BLE001 - one meter's failure: the others go on
                    self._failed(p.meter.meter_id, exc)
        finally:
            self.locks.release()
        self.metrics.cycles.inc()
        work.log(log, time.monotonic() - started)
        return written

    def _failed(self, meter_id: str, exc: Exception) -> None:
        """An unexpected error of one meter: logged, reported, tried again with backoff."""
        self.work.failed[meter_id] = failure(log, meter_id, exc)
        self.held_back.failed(meter_id)
        self.tails.pop(meter_id, None)

    def _share(self, pending: list[Pending]) -> list[Pending]:
        """The pending meters of this worker's share; the readings kept of the others are
        dropped (their new holder scores them from the watermarks)."""
        if self.fleet is None:
            return pending
        mine = self.fleet.mine()
        for meter_id in self.tails.keys() - mine:
            del self.tails[meter_id]
        self.metrics.forget(self.share - mine)
        self.share = mine
        return [p for p in pending if p.meter.meter_id in mine]

    def _claim(self, pending: list[Pending]) -> list[Pending]:
        """The pending meters this cycle scores: not held back after a failure, at most
        MAX_METERS_PER_CYCLE of them (scored longest ago first), held by this process (another
        process has the others), and still at the watermark they were found with (another
        process may have scored them in between). The others are left for a later cycle."""
        pending = [p for p in pending if self.held_back.due(p.meter.meter_id)]
        if not pending:
            return []
        if len(pending) > MAX_METERS_PER_CYCLE:
            pending.sort(key=lambda p: p.mark or NEVER)
        held = self.locks.claim(p.meter.meter_id for p in pending[:MAX_METERS_PER_CYCLE])
        marks = watermarks.current(self.conn, list(held))  # what their last holder committed
        claimed = [p for p in pending if p.meter.meter_id in held
                   and marks.get(p.meter.meter_id) == p.mark]
        self.work.busy = {p.meter.meter_id for p in pending} - {p.meter.meter_id for p in claimed}
        return claimed

    def _score_together(self, few: list[Pending], models: dict[str, registry.ActiveModel],
                        limit: int) -> tuple[int, list[Pending]]:
        """Score meters with few pending readings together: one read, then their scores,
        incidents and watermarks in one transaction. Returns the rows written and the meters
        that brought `limit` readings or more (to be scored alone). When it fails unexpectedly,
        all its meters are left to be scored alone (so that the meter at fault is named and
        the others go on)."""
        if not few:
            return 0, []
        try:
            started = time.monotonic()
            group = live.score_group(self.conn, few, models, limit, self.tails,
                                     self.cache.layouts, self.cache.stacks)
            with self.conn.transaction():
                written = self.store.write(self.conn, group.batch, self.work)
                watermarks.advance(self.conn, group.done)
        except psycopg.OperationalError:
            raise
        except Exception as exc:  # noqa: BLE001 - retried meter by meter
            logs.unexpected(log, f"scoring {len(few)} meters together (now scored one by one)",
                            exc)
            return 0, few
        self.metrics.batch.observe(time.monotonic() - started)
        for p in group.done:
            self.metrics.observe_lag(p.meter.meter_id, p.newest)
        return written, group.alone

    def _score_alone(self, pending: Pending, model: registry.ActiveModel) -> int:
        """Score one meter's pending readings in batches, then move its watermark."""
        self.tails.pop(pending.meter.meter_id, None)
        written, last = pipeline.score_in_batches(
            pending, model, self.connections, self.store, self.work, self.metrics,
            self.settings.detector_batch_rows)
        with self.conn.transaction():
            watermarks.advance(self.conn, [pending])
        if last is not None:  # the last batch ends with the newest readings: kept for live
            self.tails[pending.meter.meter_id] = Tail(model.version, last, pending.next_mark)
        return written


def run(conn: psycopg.Connection, settings: Settings, metrics: DetectorMetrics, *,
        once: bool = False, connect_again: Callable[[], psycopg.Connection] | None = None,
        failed: dict[str, str] | None = None, fleet: Fleet | None = None) -> int:
    """Score until interrupted; rows written. With once: everything pending when it starts,
    waiting for the meters another process is scoring. With `connect_again` (opens a
    connection), a lost database is waited for with backoff and scoring resumes from the
    watermarks, and an unexpected error of a whole cycle is logged and the cycle tried again
    with backoff; without it both are raised. `failed` gathers the meters that could not be
    handled, with why. With `fleet`, only the meters of this worker's share are scored (and
    the fleet is left when it ends)."""
    scorer = Scorer(conn, settings, metrics, once=once, fleet=fleet)
    if fleet is not None:
        try:
            fleet.join()
        except psycopg.OperationalError:
            pass  # the first cycle meets the lost database, and waits for it
    outage = Outage(log, "scoring goes on from the watermarks")
    failing, told, total = None, False, 0
    try:
        while True:
            started = time.monotonic()
            try:
                total += scorer.cycle()
            except psycopg.OperationalError as exc:
                if connect_again is None:
                    raise
                outage.lost(exc)
                scorer.reset(reconnect(connect_again, outage))
                continue
            except Exception as exc:  # noqa: BLE001 - a service logs it and goes on
                if connect_again is None:
                    raise
                logs.unexpected(log, "scoring cycle", exc)
                if scorer.conn.info.transaction_status == TransactionStatus.INERROR:
                    scorer.conn.rollback()
                scorer.tails.clear()
                failing = failing or backoff()
                time.sleep(next(failing))
                continue
            outage.over()
            failing = None
            if failed is not None:
                failed.update(scorer.work.failed)
            if once and not scorer.work.busy:
                return total
            if once and not told:
                told = True
                log.info("%d meters left for a later cycle (another detector is scoring them, or "
                         "more than %d are pending): looking again", len(scorer.work.busy),
                         MAX_METERS_PER_CYCLE)
            pause = BUSY_WAIT if once else settings.detector_interval_seconds
            time.sleep(max(0.0, pause - (time.monotonic() - started)))
    finally:
        scorer.close()
        if scorer.conn is not conn:
            scorer.conn.close()
