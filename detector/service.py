"""`wattwatch detect run`: score every meter's new readings from its watermark, in bulk.

Each cycle finds, in one query, the meters with readings stored since their watermark (by
`ingested_at`, so late readings with an old `time` are found too). Readings are scored in time
order with the readings before them that the features need, with the meter's newest active
model, and written to anomaly_scores together with the incidents built from the rows actually
inserted; a row that may have a score already is inserted only if it has none.

- Meters with few pending readings (the live case) are scored together: one read of all their
  new readings (with the readings before them that the features need, unless kept from the
  meter's previous cycle), one pass of the models stacked by layout (`detector.stacked`), one
  write of all their scores, incidents and watermarks, in one transaction.
- A meter with many (a backfill) is scored in batches of detector_batch_rows, in a pipeline of
  three connections: the next batch is read while this one is scored and the last one written.
  Its watermark moves after all its batches are committed: a crash re-reads them, and the
  checks on insert keep every score written exactly once.

A meter is trained and scored by one process at a time: each cycle holds the advisory locks
of the meters it works on (`detector.locks`) and leaves those another process holds. A meter
that fails (too little data to train, an unexpected error) is reported and tried again later
with backoff (`detector.training`, `detector.retries`); the others go on. `run` survives a
lost database: it reconnects with backoff and resumes from the watermarks
(`timescale.reconnect`).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import psycopg
from psycopg.pq import TransactionStatus

from detector import incidents, readings, registry, stacked
from detector.cycles import Work, failure
from detector.locks import MeterLocks
from detector.metrics import DetectorMetrics
from detector.retries import HeldBack
from detector.seasonality import epoch_ns, micros, moment_of
from detector.training import Trainer
from timescale.binary_copy import HEADER, POSTGRES_EPOCH, TRAILER
from timescale.connect import connect
from timescale.reconnect import Outage, backoff, reconnect
from wattwatch import logs
from wattwatch.errors import WattwatchError
from wattwatch.settings import Settings
from wattwatch.vocabulary import KINDS, SEVERITIES

log = logs.get("detector")

# A transaction that stamped its readings' ingested_at (its start time) may commit after the
# watermark passed that stamp: readings this close behind the watermark are looked at again.
LATE_COMMIT = timedelta(seconds=10)
# Of the readings stored a little before the watermark, only those without a score are
# pending: a history stored in one transaction just before live readings is not re-read. The
# queries keep this check apart from the readings after the watermark, so that the database
# can check a large window with one hash anti-join, not a probe per reading.
UNSCORED = "NOT EXISTS (SELECT FROM anomaly_scores s WHERE s.meter_id = r.meter_id AND s.time = r.time)"
# Meters scored together may each bring detector_batch_rows / (meters pending) readings, and
# never fewer than this; a meter with more is scored alone, in batches.
GROUP_MIN_ROWS = 1_000
# A meter with at most this many new readings is scored in its models' stack; with more, the
# stack's sliding windows would cost more than the meter's own model call.
STACK_MAX_NEW = 32
NEVER = datetime.min.replace(tzinfo=timezone.utc)
NEVER_AFTER = datetime.max.replace(tzinfo=timezone.utc)
# `run --once` looks again this often for meters another process was scoring.
BUSY_WAIT = 0.5
# A cycle works on at most this many meters, those scored longest ago first: each holds an
# advisory lock until the cycle ends, and the server's lock table holds about
# max_locks_per_transaction x max_connections (6,400 by default; 1,000 cost 6 ms to take).
MAX_METERS_PER_CYCLE = 5_000
# More readings than this to check for a score at once are checked by a hash anti-join, not a
# probe each (828,000 probes took 4 s, the hash join 0.5 s).
MANY_LATE = 20_000
POWER = readings.COLUMNS.index("active_power_kw")
# One binary COPY row of the staging table: 9 fields, each a length and a big-endian value.
ROW = np.dtype([("n", ">i2"), ("lp", ">i4"), ("part", ">i4"), ("l0", ">i4"), ("time", ">i8"),
                ("l1", ">i4"), ("score", ">f4"), ("l2", ">i4"), ("anomaly", "u1"),
                ("l3", ">i4"), ("severity", ">i2"), ("l4", ">i4"), ("kind", ">i2"),
                ("l5", ">i4"), ("top", ">i2"), ("l6", ">i4"), ("expected", ">f8"),
                ("l7", ">i4"), ("recheck", "u1")])
LENGTHS = {"n": 9, "lp": 4, "l0": 8, "l1": 4, "l2": 1, "l3": 2, "l4": 2, "l5": 2, "l6": 8, "l7": 1}
STAGING = ("CREATE TEMP TABLE IF NOT EXISTS detector_batch (part integer, time timestamptz,"
           " score real, is_anomaly boolean, severity smallint, kind smallint, top smallint,"
           " expected double precision, recheck boolean) ON COMMIT DELETE ROWS")

# Texts travel as codes into the arrays passed along (part: the meter's place in the batch,
# an integer: a live cycle may hold more meters than a smallint counts).
INSERT_SCORES = ("INSERT INTO anomaly_scores (time, meter_id, model_version, score, is_anomaly,"
                 " severity, kind, top_feature, expected_active_power_kw)"
                 " SELECT time, (%(meters)s::text[])[part], (%(versions)s::int[])[part], score, is_anomaly,"
                 " (%(severities)s::text[])[severity], (%(kinds)s::text[])[kind],"
                 " (%(names)s::text[])[top], nullif(expected, 'NaN') FROM detector_batch b")
# The careful path: rows that may have a score already (a restart, a late reading behind the
# watermark) are skipped, whatever model version scored them.
INSERT_UNSCORED = (
    "WITH written AS (" + INSERT_SCORES + " WHERE CASE WHEN recheck THEN NOT EXISTS (SELECT FROM"
    " anomaly_scores s WHERE s.meter_id = (%(meters)s::text[])[b.part] AND s.time = b.time)"
    " ELSE true END"
    " ON CONFLICT DO NOTHING RETURNING meter_id, time, is_anomaly)"
    " SELECT meter_id, count(*), array_agg(time) FILTER (WHERE is_anomaly) FROM written"
    " GROUP BY meter_id")


@dataclass(frozen=True)
class Pending:
    """A meter with readings stored since its watermark."""

    meter: readings.Meter
    mark: datetime | None  # the watermark: ingested_at of the newest reading scored
    since: datetime        # readings stored after this are looked at (see Mark)
    newest: datetime       # the newest ingested_at to score up to
    first: datetime        # time of the oldest reading stored since `since`
    count: int             # readings stored since `since`
    settled: datetime      # readings stored by then were all committed when this was read

    @property
    def next_mark(self) -> datetime:
        """The watermark once these readings are written: past the settled point, so that
        readings stored in one transaction long before (a bulk load) are not looked at again."""
        return max(self.newest, self.settled)


@dataclass(frozen=True)
class Mark:
    """A meter's watermark, and where its late-commit check starts: readings stored up to the
    settled point of the cycle that moved it were all committed when that cycle read, those
    after it (up to the watermark) may still commit late."""

    at: datetime
    since: datetime

    def settles(self, settled: datetime) -> bool:
        """True when the check is open and every reading it covers has committed by now: one
        last look closes it."""
        return self.since < self.at <= settled


@dataclass
class Scored:
    """Freshly scored readings of one meter, or of several scored in one stack, to be
    written."""

    meters: list[readings.Meter]
    models: list[registry.ActiveModel]  # each meter's model
    part: np.ndarray       # each row's meter (a position in meters)
    result: pd.DataFrame   # one row per reading, as the models' score() returns
    actual: np.ndarray     # the readings' active power, for the incidents' excess energy
    recheck: np.ndarray    # rows that may have a score already
    newest: datetime       # newest ingested_at among them

    @property
    def names(self) -> list[str]:
        """The feature names of its models (one layout)."""
        features = getattr(self.models[0].detector, "features_", None)
        return features.names() if features is not None else []


@dataclass(frozen=True)
class _Tail:
    """A meter's newest readings scored in a live cycle, as many as its model's features need
    before the next reading: the next cycle then reads only the new readings."""

    version: int
    rows: readings.Rows
    mark: datetime  # the watermark this process wrote with them

    def serves(self, pending: Pending, model: registry.ActiveModel) -> bool:
        """True when these are the readings just before the pending ones (same model, the
        watermark as this process left it: nobody else scored the meter since, and no pending
        reading older than them: a late reading sends the meter back to the database)."""
        return (self.version == model.version and pending.mark == self.mark
                and len(self.rows) > 0 and micros(pending.first) > self.rows.t[-1])


def _copy_rows(batch: list[Scored], names: list[str]) -> bytes:
    """The scores as one binary COPY payload; texts travel as codes (0 = NULL) decoded by SQL,
    coded once for the whole batch (a thousand meters' few readings in a live cycle)."""
    results = [scored.result for scored in batch]

    def column(name: str) -> np.ndarray:
        return np.concatenate([result[name].to_numpy() for result in results])

    def codes(name: str, categories) -> np.ndarray:
        return pd.Categorical(column(name), categories=categories).codes + 1

    rows = np.zeros(sum(len(result) for result in results), dtype=ROW)
    for field, length in LENGTHS.items():
        rows[field] = length
    first = np.cumsum([0] + [len(scored.meters) for scored in batch[:-1]])
    rows["part"] = np.concatenate([scored.part + 1 + at for scored, at in zip(batch, first)])
    times = np.concatenate([epoch_ns(result.index) for result in results])
    rows["time"] = times // 1000 - POSTGRES_EPOCH * 1_000_000
    rows["score"] = column("score")
    rows["anomaly"] = column("is_anomaly")
    rows["severity"] = codes("severity", SEVERITIES)
    rows["kind"] = codes("kind", KINDS)
    rows["top"] = codes("top_feature", names)
    rows["expected"] = column("expected").astype(float)
    rows["recheck"] = np.concatenate([scored.recheck for scored in batch])
    return HEADER + rows.tobytes() + TRAILER


class Scorer:
    """Scores all meters; one instance per `detect run` process."""

    def __init__(self, conn: psycopg.Connection, settings: Settings, metrics: DetectorMetrics,
                 *, once: bool = False):
        self.conn = conn
        self.settings = settings
        self.metrics = metrics
        self.models: dict[str, registry.ActiveModel] = {}
        self.algorithms: dict[str, tuple] = {}
        self.tails: dict[str, _Tail] = {}
        # The loaded models' stacks by layout, and each meter's layout (None: not stacked).
        self.stacks: dict[tuple, stacked.Stack] = {}
        self.layouts: dict[str, tuple | None] = {}
        # Prepared statements get generic plans, which cannot leave out chunks by the values
        # of the parameters: a live cycle's read of a thousand meters took 6 times longer.
        conn.prepare_threshold = None
        self._connections: dict[str, psycopg.Connection] = {}
        self.locks = MeterLocks(conn)
        self.held_back = HeldBack()
        self.trainer = Trainer(settings, self.held_back, retrying=not once)
        self.work = Work()  # what the last cycle did

    def connection(self, purpose: str) -> psycopg.Connection:
        """A connection of its own for a pipeline stage ("read", "write"), opened on first
        use and kept."""
        conn = self._connections.get(purpose)
        if conn is None or conn.closed:
            try:
                conn = self._connections[purpose] = connect(self.settings)
            except WattwatchError as exc:  # the database is lost, not the meter at hand
                raise psycopg.OperationalError(str(exc)) from exc
            conn.prepare_threshold = None  # as self.conn, see __init__
        return conn

    def close(self) -> None:
        for conn in self._connections.values():
            conn.close()
        self._connections.clear()

    def reset(self, conn: psycopg.Connection) -> None:
        """Go on with a new main connection after the database was lost: the pipeline's
        connections are opened again, and the readings kept of each meter are dropped (the
        next cycle reads from the watermarks). Models, loaded by version, are kept."""
        self.close()
        if conn is not self.conn:
            self.conn.close()
        self.conn = conn
        conn.prepare_threshold = None
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
            pending = self._claim(self._pending())
            models = self._models([p.meter for p in pending])
            pending = [p for p in pending if p.meter.meter_id in models]
            limit = max(GROUP_MIN_ROWS, self.settings.detector_batch_rows // max(len(pending), 1))
            few = [p for p in pending if p.count < limit]
            written, alone = self._score_together(few, models, limit)
            for p in alone + [p for p in pending if p.count >= limit]:
                try:
                    written += self._score_meter(p, models[p.meter.meter_id])
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
        marks = dict(self.conn.execute(  # read after the locks: what their last holder committed
            "SELECT meter_id, ingested_at FROM detector_watermarks WHERE meter_id = ANY(%s)",
            (sorted(held),)).fetchall())
        self.conn.commit()
        claimed = [p for p in pending if p.meter.meter_id in held
                   and marks.get(p.meter.meter_id) == p.mark]
        self.work.busy = {p.meter.meter_id for p in pending} - {p.meter.meter_id for p in claimed}
        return claimed

    def _score_together(self, few: list[Pending], models: dict[str, registry.ActiveModel],
                        limit: int) -> tuple[int, list[Pending]]:
        """_score_group, and when it fails unexpectedly, each of its meters scored alone (so
        that the meter at fault is named and the others go on)."""
        if not few:
            return 0, []
        try:
            return self._score_group(few, models, limit)
        except psycopg.OperationalError:
            raise
        except Exception as exc:  # noqa: BLE001 - retried meter by meter
            logs.unexpected(log, f"scoring {len(few)} meters together (now scored one by one)",
                            exc)
            return 0, few

    def _pending(self) -> list[Pending]:
        """Meters with readings stored after their watermark, or stored before it without a
        score (committed late). Meters with a watermark are found through the ingested_at
        index from the oldest start of a late-commit check on, all in one query; meters
        without one yet (never scored) in another."""
        known = readings.meters(self.conn)
        settled = self.conn.execute("SELECT now() - %s", (LATE_COMMIT,)).fetchone()[0]
        marks = {meter_id: Mark(at, since) for meter_id, at, since in self.conn.execute(
            "SELECT meter_id, ingested_at, coalesce(recheck_after, ingested_at - %s)"
            " FROM detector_watermarks", (LATE_COMMIT,)).fetchall()}
        found = {}
        if marks:
            oldest = min(mark.since for mark in marks.values())
            found.update((row[0], list(row[1:])) for row in self.conn.execute(
                "SELECT r.meter_id, max(r.ingested_at), min(r.time), count(*) FROM readings r"
                " JOIN detector_watermarks w USING (meter_id)"
                " WHERE r.ingested_at > %s AND r.ingested_at > w.ingested_at"
                " GROUP BY r.meter_id", (oldest,)).fetchall())
            # idle meters whose check has settled get their last look now, not when their
            # next reading arrives (after a bulk load: a whole transaction of history each)
            settling = {meter_id for meter_id, mark in marks.items()
                        if meter_id not in found and mark.settles(settled)}
            if found or settling:
                for meter_id, first, count in self._late_unscored(oldest, set(found) | settling):
                    row = found.setdefault(meter_id, [marks[meter_id].at, first, 0])
                    row[1] = min(row[1], first)
                    row[2] += count
            if settling - found.keys():
                closed = sorted(settling - found.keys())
                self.conn.execute(  # closed: nothing stored up to the watermark is left
                    "UPDATE detector_watermarks w SET recheck_after = w.ingested_at"
                    " FROM unnest(%s::text[], %s::timestamptz[]) AS c(meter_id, at)"
                    " WHERE w.meter_id = c.meter_id AND w.ingested_at = c.at",  # unless moved
                    (closed, [marks[meter_id].at for meter_id in closed]))
        new = [meter.meter_id for meter in known if meter.meter_id not in marks]
        if new:
            found.update((row[0], row[1:]) for row in self.conn.execute(
                "SELECT meter_id, max(ingested_at), min(time), count(*) FROM readings"
                " WHERE meter_id = ANY(%s) GROUP BY meter_id", (new,)).fetchall())
        self.conn.commit()
        return [Pending(meter, mark.at if mark else None, mark.since if mark else NEVER,
                        *found[meter.meter_id], settled)
                for meter in known if meter.meter_id in found
                for mark in [marks.get(meter.meter_id)]]

    def _late_unscored(self, oldest: datetime, meter_ids: set[str]) -> list[tuple]:
        """(meter, oldest time, count) of the readings of these meters stored in their
        late-commit window (see Mark) that have no score: their transaction committed after
        the cycle that moved the watermark read. A tail the service holds vouches for the
        times it contains (read and scored): of the readings from its start on, only the
        others are looked up in anomaly_scores, between constant time bounds (a probe per
        reading into every chunk cost 0.3 s per cycle at 1,000 meters). Older readings, and
        all of a meter without a tail (a history stored just before the watermark, say), are
        checked by the database at once."""
        starts = {meter_id: moment_of(self.tails[meter_id].rows.t[0])
                  for meter_id in meter_ids
                  if meter_id in self.tails and len(self.tails[meter_id].rows)}
        window = (" FROM readings r JOIN detector_watermarks w USING (meter_id) JOIN unnest("
                  "%(meters)s::text[], %(starts)s::timestamptz[]) AS h(meter_id, start)"
                  " USING (meter_id) WHERE r.ingested_at > %(oldest)s"
                  " AND r.ingested_at > coalesce(w.recheck_after, w.ingested_at - %(late)s)"
                  " AND r.ingested_at <= w.ingested_at")
        ids = list(meter_ids)
        older = {"meters": ids, "starts": [starts.get(m, NEVER_AFTER) for m in ids],
                 "oldest": oldest, "late": LATE_COMMIT}
        count, older["low"], older["high"] = self.conn.execute(
            "SELECT count(*), min(r.time), max(r.time)" + window + " AND r.time < h.start",
            older).fetchone()
        late = []
        if count:
            if count > MANY_LATE:  # a history stored just before: one hash anti-join
                self.conn.execute("SET LOCAL enable_nestloop = off")
            # constant bounds on time, so that only the chunks that can hold them are read
            late = self.conn.execute(
                "SELECT r.meter_id, min(r.time), count(*)" + window + " AND r.time < h.start"
                " AND r.time BETWEEN %(low)s AND %(high)s AND NOT EXISTS (SELECT FROM"
                " anomaly_scores s WHERE s.meter_id = r.meter_id AND s.time = r.time"
                " AND s.time BETWEEN %(low)s AND %(high)s) GROUP BY r.meter_id", older).fetchall()
        read = self.conn.cursor(binary=True).execute(
            "SELECT r.meter_id, array_agg((extract(epoch FROM r.time) * 1e6)::bigint)" + window
            + " AND r.time >= h.start GROUP BY r.meter_id",
            {"meters": list(starts), "starts": list(starts.values()), "oldest": oldest,
             "late": LATE_COMMIT}).fetchall() if starts else []
        ids, times = [], []
        for meter_id, stamps in read:
            stamps = np.array(stamps, dtype=np.int64)
            unknown = stamps[~np.isin(stamps, self.tails[meter_id].rows.t)]
            ids += [meter_id] * len(unknown)
            times += [moment_of(t) for t in unknown]
        if ids:
            late += self.conn.execute(
                "SELECT c.meter_id, min(c.time), count(*) FROM unnest(%s::text[],"
                " %s::timestamptz[]) AS c(meter_id, time) WHERE NOT EXISTS (SELECT FROM"
                " anomaly_scores s WHERE s.meter_id = c.meter_id AND s.time = c.time"
                " AND s.time BETWEEN %s AND %s) GROUP BY c.meter_id",
                (ids, times, min(times), max(times))).fetchall()
        return late

    def _models(self, meters: list[readings.Meter]) -> dict[str, registry.ActiveModel]:
        """The newest active model of each meter (trained first if it has none; left out if
        it has too little data yet, or fails), loaded once per version; the stacks of the
        layouts whose models changed are rebuilt."""
        models, changed = {}, set()
        with self.conn.transaction():
            versions = registry.active_versions(self.conn, [m.meter_id for m in meters])
        for meter in meters:
            version, cached = versions.get(meter.meter_id), self.models.get(meter.meter_id)
            if cached is None or cached.version != version:
                try:
                    with self.conn.transaction():
                        if version is None:
                            version = self.trainer.initial(self.conn, meter, self.work)
                        if version is not None:
                            cached = registry.load(self.conn, version)
                except psycopg.OperationalError:
                    raise
                except Exception as exc:  # noqa: BLE001 - one meter's failure: the others go on
                    self._failed(meter.meter_id, exc)
                    continue
                if version is None:
                    continue
                self.models[meter.meter_id] = cached
                layout = stacked.layout(cached.detector)
                changed |= {self.layouts.get(meter.meter_id), layout}
                self.layouts[meter.meter_id] = layout
                algorithm = cached.detector.algorithm
                self.metrics.use_model(meter.meter_id, version, algorithm,
                                       self.algorithms.get(meter.meter_id))
                self.algorithms[meter.meter_id] = (str(version), algorithm)
            models[meter.meter_id] = cached
        for layout in changed - {None}:
            members = {meter_id: self.models[meter_id].detector
                       for meter_id, its in self.layouts.items() if its == layout}
            if members:
                self.stacks[layout] = stacked.Stack(members)
            else:
                self.stacks.pop(layout, None)
        return models

    @staticmethod
    def _score(pending: Pending, model: registry.ActiveModel, context: pd.DataFrame,
               chunk: pd.DataFrame) -> Scored:
        """Score the chunk's readings (after their context); keep those stored since `since`."""
        frame = pd.concat([context, chunk])
        result = model.detector.score(frame[model.fields]).iloc[len(context):]
        fresh = (chunk["ingested_at"] > pending.since).to_numpy()
        # Readings from before the watermark may already have a score, perhaps from an older
        # model version: they are written only if they have none.
        recheck = (chunk["ingested_at"] <= (pending.mark or NEVER)).to_numpy()[fresh]
        return Scored([pending.meter], [model], np.zeros(int(fresh.sum()), dtype=np.intp),
                      result[fresh], chunk["active_power_kw"].to_numpy(float)[fresh], recheck,
                      chunk["ingested_at"].max())

    def _score_group(self, group: list[Pending], models: dict[str, registry.ActiveModel],
                     limit: int) -> tuple[int, list[Pending]]:
        """Score meters with few pending readings together: one read, then their scores,
        incidents and watermarks in one transaction. Returns the rows written and the meters
        that brought `limit` readings or more (to be scored alone, in batches)."""
        started = time.monotonic()
        tails = {}
        for p in group:
            tail = self.tails.get(p.meter.meter_id)
            if tail is not None and tail.serves(p, models[p.meter.meter_id]):
                tails[p.meter.meter_id] = tail.rows
        held = [p for p in group if p.meter.meter_id in tails]
        other = [p for p in group if p.meter.meter_id not in tails]
        with self.conn.transaction():
            fetched = dict(zip([p.meter.meter_id for p in held + other], readings.new_rows(
                self.conn, [(p.meter, p.first, p.newest) for p in held],
                min((p.since for p in held), default=NEVER)) + readings.group_rows(
                self.conn, [(p.meter, p.first, p.newest, models[p.meter.meter_id].context_rows)
                            for p in other], limit)))
        batch, done, alone, stacks = [], [], [], {}
        for p in group:
            meter_id, model = p.meter.meter_id, models[p.meter.meter_id]
            rows = fetched[meter_id]
            if meter_id in tails:
                rows = tails[meter_id].then(rows)
            new = rows.t >= micros(p.first)
            count = int(new.sum())
            if count >= limit:
                alone.append(p)
                self.tails.pop(meter_id, None)
                continue
            done.append(p)
            self.tails[meter_id] = _Tail(model.version, rows.tail(model.context_rows), p.next_mark)
            layout = self.layouts.get(meter_id)
            if 0 < count <= STACK_MAX_NEW and layout is not None:
                stacks.setdefault(layout, []).append((p, model, rows, count))
                continue
            frame = rows.frame(p.meter.timezone)
            scored = self._score(p, model, frame[~new], frame[new])
            if len(scored.result):
                batch.append(scored)
        batch += [self._score_stacked(layout, members) for layout, members in stacks.items()]
        with self.conn.transaction():
            written = self._write(self.conn, batch) if batch else 0
            self._advance(done)
        self.metrics.batch.observe(time.monotonic() - started)
        for p in done:
            self._observe_lag(p.meter, p.newest)
        return written, alone

    def _score_stacked(self, layout: tuple, members: list[tuple]) -> Scored:
        """Score the new readings of meters of one layout in one pass of their stack; each
        member is (pending, model, its readings with their context, how many are new)."""
        stack = self.stacks[layout]
        k = max(count for *_, count in members)
        width = max(len(rows) for _, _, rows, _ in members)
        fields = [readings.COLUMNS.index(column) for column in stack.features.columns_]
        values = np.full((len(fields), len(members), width), np.nan)
        times = np.empty((len(members), width), dtype=np.int64)
        # The k readings scored per meter: its new ones (the last `count`) stored since
        # `since` are written, those stored by its watermark only where they have no score.
        ingested = np.full((len(members), k), np.iinfo(np.int64).min)
        power = np.full((len(members), k), np.nan)
        since, mark = (np.array([micros(edge) for edge in edges]) for edges in zip(
            *[(p.since, p.mark or NEVER) for p, *_ in members]))
        for m, (_, _, rows, count) in enumerate(members):
            start = width - len(rows)  # a short history: nothing before it (NaN)
            values[:, m, start:] = rows.values[:, fields].T
            times[m, start:] = rows.t
            times[m, :start] = rows.t[0]
            ingested[m, k - count:] = rows.i[-count:]
            power[m, k - count:] = rows.values[-count:, POWER]
        result = stack.score([p.meter.meter_id for p, *_ in members],
                             dict(zip(stack.features.columns_, values)), times * 1000,
                             [p.meter.timezone for p, *_ in members], k)
        keep = np.flatnonzero(ingested.reshape(-1) > np.repeat(since, k))
        part = keep // k
        return Scored([p.meter for p, *_ in members], [model for _, model, *_ in members], part,
                      result.iloc[keep], power.reshape(-1)[keep],
                      ingested.reshape(-1)[keep] <= mark[part], max(p.newest for p, *_ in members))

    def _score_meter(self, pending: Pending, model: registry.ActiveModel) -> int:
        """Score one meter's pending readings in batches, read, scored and written at once."""
        self.tails.pop(pending.meter.meter_id, None)
        writer = _Writer(self)
        batches = _Prefetch(lambda: self._batches(pending, model))
        chunk = None
        try:
            for context, chunk, started in batches:
                writer.put((self._score(pending, model, context, chunk), started))
        finally:
            batches.close()
            written = writer.close()
        with self.conn.transaction():
            self._advance([pending])
        if chunk is not None:  # the last batch ends with the newest readings: kept for live
            last = pd.concat([context, chunk]).tail(model.context_rows)
            self.tails[pending.meter.meter_id] = _Tail(model.version, readings.Rows.of(last),
                                                       pending.next_mark)
        return written

    def _batches(self, pending: Pending, model: registry.ActiveModel):
        """(context, chunk, start time) of each batch of the meter's pending readings, read on
        the pipeline's read connection."""
        conn = self.connection("read")
        rows, context_rows = self.settings.detector_batch_rows, model.context_rows
        # A meter never scored has every reading pending: its batches follow each other, each
        # one's context is the tail of the one before, and no query looks for the next start.
        contiguous = pending.mark is None
        position = pending.first if contiguous else self._next_new(conn, pending, None)
        context = None
        while position is not None:
            started = time.monotonic()
            with conn.transaction():
                chunk = readings.query_frame(
                    conn, readings.SELECT + " WHERE meter_id = %s AND time >= %s"
                    " AND ingested_at <= %s ORDER BY time LIMIT %s",
                    (pending.meter.meter_id, position, pending.newest, rows),
                    pending.meter.timezone)
                if context is None:
                    context = readings.query_frame(
                        conn, readings.SELECT + " WHERE meter_id = %s AND time < %s"
                        " ORDER BY time DESC LIMIT %s",
                        (pending.meter.meter_id, position, context_rows), pending.meter.timezone)
            yield context, chunk, started
            if not contiguous:
                context, position = None, self._next_new(conn, pending, chunk.index[-1])
            elif len(chunk) < rows:
                position = None
            else:
                context = pd.concat([context, chunk]).tail(context_rows)
                position = chunk.index[-1] + timedelta(microseconds=1)

    @staticmethod
    def _next_new(conn: psycopg.Connection, pending: Pending, after) -> datetime | None:
        """Time of the first reading to score after `after`: already-scored stretches between
        late readings are skipped, not re-read."""
        row = conn.execute(
            "SELECT min(time) FROM (SELECT min(time) AS time FROM readings WHERE meter_id ="
            " %(m)s AND ingested_at > %(mark)s AND ingested_at <= %(newest)s AND time > %(after)s"
            " UNION ALL SELECT min(time) FROM readings r WHERE meter_id = %(m)s"
            " AND ingested_at > %(since)s AND ingested_at <= %(mark)s AND time > %(after)s AND "
            + UNSCORED + ") AS firsts",
            {"m": pending.meter.meter_id, "since": pending.since, "mark": pending.mark or NEVER,
             "newest": pending.newest, "after": after or NEVER}).fetchone()
        conn.commit()
        return row[0]

    def _advance(self, done: list[Pending]) -> None:
        """Move the watermarks of meters whose pending readings are all written."""
        self.conn.execute(
            "INSERT INTO detector_watermarks (meter_id, ingested_at, recheck_after)"
            " SELECT * FROM unnest(%s::text[], %s::timestamptz[], %s::timestamptz[])"
            " ON CONFLICT (meter_id) DO UPDATE SET ingested_at = excluded.ingested_at,"
            " recheck_after = excluded.recheck_after, updated_at = now()",
            ([p.meter.meter_id for p in done], [p.next_mark for p in done],
             [p.settled for p in done]))

    def _observe_lag(self, meter: readings.Meter, newest: datetime) -> None:
        lag = datetime.now(timezone.utc) - newest
        self.metrics.lag.labels(meter.meter_id).set(max(lag.total_seconds(), 0.0))

    def _write(self, conn: psycopg.Connection, batch: list[Scored]) -> int:
        """Insert the scores of one or more meters (never over existing ones) and the
        incidents of those inserted; rows inserted."""
        batch = [scored for scored in batch if len(scored.result)]
        if not batch:
            return 0
        names = sorted(set().union(*(scored.names for scored in batch)))
        conn.execute(STAGING)
        with conn.cursor().copy("COPY detector_batch FROM STDIN WITH (FORMAT binary)") as copy:
            copy.write(_copy_rows(batch, names))
        params = {"meters": [meter.meter_id for scored in batch for meter in scored.meters],
                  "versions": [model.version for scored in batch for model in scored.models],
                  "severities": list(SEVERITIES), "kinds": list(KINDS), "names": names}
        inserted = None
        if len(params["meters"]) == 1 and self._span_is_free(conn, batch[0]):
            try:
                with conn.transaction():  # a savepoint: a racing writer sends us below
                    conn.execute(INSERT_SCORES, params)
                result = batch[0].result
                inserted = {params["meters"][0]: (
                    len(result), list(result.index[result["is_anomaly"].to_numpy()]))}
            except psycopg.errors.UniqueViolation:
                pass
        if inserted is None:
            inserted = {meter_id: (count, times) for meter_id, count, times
                        in conn.execute(INSERT_UNSCORED, params).fetchall()}
        written, offset, anomalous = 0, 0, []
        for scored in batch:
            found = {}
            for position, meter in enumerate(scored.meters):
                count, anomalous_times = inserted.get(meter.meter_id, (0, None))
                written += count
                self.work.scored(meter.meter_id, count)
                self.metrics.scored.labels(meter.meter_id).inc(count)
                if anomalous_times:
                    found[position] = anomalous_times
            if found:
                anomalous.append(self._anomalies(scored, found, offset))
            offset += len(scored.meters)
        if anomalous:
            owners = [incidents.Owner(meter, model.version, self._step(model))
                      for scored in batch for meter, model in zip(scored.meters, scored.models)]
            self._record_incidents(conn, owners, pd.concat(anomalous))
        return written

    @staticmethod
    def _anomalies(scored: Scored, found: dict[int, list], offset: int) -> pd.DataFrame:
        """The newly inserted anomalous readings of a scored batch (`found`: their times by the
        meter's position), with their power and their meter's place (`at`, counted from
        `offset`); taken from the batch at once, for a cycle in which many meters turn
        anomalous together."""
        flagged = np.flatnonzero(scored.result["is_anomaly"].to_numpy())
        inserted = {(position, micros(moment)) for position, times in found.items()
                    for moment in times}
        stamps = epoch_ns(scored.result.index[flagged]) // 1000
        rows = flagged[[(position, moment) in inserted for position, moment
                        in zip(scored.part[flagged].tolist(), stamps.tolist())]]
        return scored.result.iloc[rows].assign(actual=scored.actual[rows],
                                               at=scored.part[rows] + offset)

    def _record_incidents(self, conn: psycopg.Connection, owners: list[incidents.Owner],
                          found: pd.DataFrame) -> None:
        """Merge newly inserted anomalous readings (`at`: their owner) into incidents, and
        count them."""
        for (severity, kind), n in found.groupby(["severity", "kind"]).size().items():
            self.metrics.anomalies.labels(severity, kind).inc(n)
        touched, opened = incidents.record(conn, owners, found)
        self.work.recorded(len(found), opened)
        for owner in np.flatnonzero(touched).tolist():
            self.metrics.incidents.labels(owners[owner].meter.meter_id).inc(int(touched[owner]))

    @staticmethod
    def _span_is_free(conn: psycopg.Connection, scored: Scored) -> bool:
        """True when no score of the meter exists in the batch's time span (a first scoring,
        the common case): the scores then go in without per-row conflict checks."""
        if scored.recheck.any():
            return False
        return not conn.execute(
            "SELECT EXISTS (SELECT FROM anomaly_scores WHERE meter_id = %s AND time BETWEEN %s"
            " AND %s)", (scored.meters[0].meter_id, scored.result.index[0],
                         scored.result.index[-1])).fetchone()[0]

    @staticmethod
    def _step(model: registry.ActiveModel) -> timedelta:
        step_ns = getattr(getattr(model.detector, "features_", None), "step_ns_", None)
        return timedelta(microseconds=step_ns / 1000) if step_ns else timedelta(minutes=1)


class _Prefetch:
    """Runs a generator on a thread of its own, one item ahead of its consumer: the database
    reads the next batch while Python scores this one."""

    def __init__(self, produce: Callable[[], Iterator]):
        self.queue: queue.Queue = queue.Queue(maxsize=1)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._loop, args=(produce,),
                                       name="detector-reader", daemon=True)
        self.thread.start()

    def _loop(self, produce: Callable[[], Iterator]) -> None:
        try:
            for item in produce():
                if self.stopped.is_set():
                    return
                self.queue.put(("item", item))
            self.queue.put(("done", None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer's thread
            self.queue.put(("error", exc))

    def __iter__(self) -> Iterator:
        while True:
            what, item = self.queue.get()
            if what == "done":
                return
            if what == "error":
                raise item
            yield item

    def close(self) -> None:
        """Stop reading ahead (the consumer is done or failed) and wait for the thread."""
        self.stopped.set()
        while self.thread.is_alive():
            try:
                self.queue.get(timeout=0.1)  # unblocks a put, so the thread sees the stop
            except queue.Empty:
                pass
        self.thread.join()


class _Writer:
    """Writes scored batches, in order and each in its own transaction, on the pipeline's
    write connection while the scorer scores the next batch."""

    def __init__(self, scorer: Scorer):
        self.scorer = scorer
        self.queue: queue.Queue = queue.Queue(maxsize=1)
        self.error: BaseException | None = None
        self.written = 0
        self.thread = threading.Thread(target=self._loop, name="detector-writer", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while (item := self.queue.get()) is not None:
            if self.error is not None:
                continue  # keep draining so the scorer never blocks; it re-raises the error
            scored, started = item
            try:
                conn = self.scorer.connection("write")
                with conn.transaction():
                    self.written += self.scorer._write(conn, [scored])
            except BaseException as exc:  # noqa: BLE001 - handed to the scorer's thread
                self.error = exc
                continue
            self.scorer.metrics.batch.observe(time.monotonic() - started)
            self.scorer._observe_lag(scored.meters[0], scored.newest)

    def put(self, item: tuple) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put(item)

    def close(self) -> int:
        """Wait for every batch to be committed; rows written, or the writer's error."""
        self.queue.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self.written


def run(conn: psycopg.Connection, settings: Settings, metrics: DetectorMetrics, *,
        once: bool = False, connect_again: Callable[[], psycopg.Connection] | None = None,
        failed: dict[str, str] | None = None) -> int:
    """Score until interrupted; rows written. With once: everything pending when it starts,
    waiting for the meters another process is scoring. With `connect_again` (opens a
    connection), a lost database is waited for with backoff and scoring resumes from the
    watermarks, and an unexpected error of a whole cycle is logged and the cycle tried again
    with backoff; without it both are raised. `failed` gathers the meters that could not be
    handled, with why."""
    scorer = Scorer(conn, settings, metrics, once=once)
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
