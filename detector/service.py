"""`wattwatch detect run`: score every meter's new readings from its watermark, in bulk.

Per meter and cycle: readings stored since the watermark (by `ingested_at`, so late readings
with an old `time` are found too) are read in time order with the readings before them that
the features need, scored with the meter's newest active model, and written to anomaly_scores
with INSERT ... ON CONFLICT DO NOTHING in the same transaction as the incidents built from the
rows actually inserted. The watermark moves only after its readings are committed: a crash
re-reads them, and the conflict clause keeps every score written exactly once.
"""

from __future__ import annotations

import logging
import queue
import struct
import threading
import time
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import psycopg

from detector import incidents, readings, registry
from detector.calibration import SEVERITIES
from detector.kinds import KINDS
from detector.metrics import DetectorMetrics
from detector.seasonality import epoch_ns
from timescale.connect import connect
from wattwatch.errors import WattwatchError
from wattwatch.settings import Settings

log = logging.getLogger("wattwatch.detector")

# A transaction that stamped its readings' ingested_at (its start time) may commit after the
# watermark passed that stamp: readings this close behind the watermark are looked at again.
LATE_COMMIT = timedelta(seconds=10)
COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
COPY_TRAILER = struct.pack(">h", -1)
# One binary COPY row of the staging table: 8 fields, each a length and a big-endian value.
ROW = np.dtype([("n", ">i2"), ("l0", ">i4"), ("time_us", ">i8"), ("l1", ">i4"), ("score", ">f4"),
                ("l2", ">i4"), ("anomaly", "u1"), ("l3", ">i4"), ("severity", ">i2"),
                ("l4", ">i4"), ("kind", ">i2"), ("l5", ">i4"), ("top", ">i2"),
                ("l6", ">i4"), ("expected", ">f8"), ("l7", ">i4"), ("recheck", "u1")])
LENGTHS = {"n": 8, "l0": 8, "l1": 4, "l2": 1, "l3": 2, "l4": 2, "l5": 2, "l6": 8, "l7": 1}


SCORE_COLUMNS = ("INSERT INTO anomaly_scores (time, meter_id, model_version, score, is_anomaly,"
                 " severity, kind, top_feature, expected_active_power_kw)"
                 " SELECT timestamptz 'epoch' + time_us * interval '1 microsecond', %s, %s,"
                 " score, is_anomaly, (%s::text[])[severity], (%s::text[])[kind],"
                 " (%s::text[])[top], nullif(expected, 'NaN') FROM detector_batch b")
INSERT_SCORES = SCORE_COLUMNS
# The careful path: rows that may have a score already (a restart, a late reading behind the
# watermark) are skipped, whatever model version scored them.
INSERT_UNSCORED = (
    "WITH written AS (" + SCORE_COLUMNS + " WHERE CASE WHEN recheck THEN NOT EXISTS (SELECT FROM"
    " anomaly_scores s WHERE s.meter_id = %s AND s.time = timestamptz 'epoch' + b.time_us *"
    " interval '1 microsecond') ELSE true END ON CONFLICT DO NOTHING RETURNING time, is_anomaly)"
    " SELECT count(*), array_agg(time) FILTER (WHERE is_anomaly) FROM written")


def _copy_rows(result: pd.DataFrame, names: list[str], recheck: np.ndarray) -> bytes:
    """The scores as one binary COPY payload; texts travel as codes (0 = NULL) decoded by SQL."""
    rows = np.zeros(len(result), dtype=ROW)
    for field, length in LENGTHS.items():
        rows[field] = length
    rows["time_us"] = epoch_ns(result.index) // 1000
    rows["score"] = result["score"].to_numpy()
    rows["anomaly"] = result["is_anomaly"].to_numpy()
    rows["severity"] = pd.Categorical(result["severity"], categories=SEVERITIES).codes + 1
    rows["kind"] = pd.Categorical(result["kind"], categories=KINDS).codes + 1
    rows["top"] = pd.Categorical(result["top_feature"], categories=names).codes + 1
    rows["expected"] = result["expected"].to_numpy(float)
    rows["recheck"] = recheck
    return COPY_HEADER + rows.tobytes() + COPY_TRAILER


class Scorer:
    """Scores all meters; one instance per `detect run` process."""

    def __init__(self, conn: psycopg.Connection, settings: Settings, metrics: DetectorMetrics):
        self.conn = conn
        self.settings = settings
        self.metrics = metrics
        self.models: dict[str, registry.ActiveModel] = {}
        self.algorithms: dict[str, tuple] = {}
        self._write_conn: psycopg.Connection | None = None

    def write_connection(self) -> psycopg.Connection:
        """The connection scores are written on (opened on first use, kept)."""
        if self._write_conn is None or self._write_conn.closed:
            self._write_conn = connect(self.settings)
        return self._write_conn

    def close(self) -> None:
        if self._write_conn is not None:
            self._write_conn.close()

    def cycle(self) -> int:
        """Act on retrain requests, then score what is pending for every meter; rows written."""
        with self.conn.transaction():
            registry.handle_retrain_requests(self.conn, self.settings)
        written = 0
        for meter, newest in self._pending():
            model = self._model(meter)
            if model is not None:
                written += self._score_meter(meter, model, newest)
        self.metrics.cycles.inc()
        return written

    def _pending(self) -> list[tuple[readings.Meter, datetime]]:
        """Meters with readings stored after their watermark, and the newest such ingested_at.
        Meters with a watermark are found through the ingested_at index from the oldest
        watermark on; a meter without one yet is asked about on its own."""
        marks = dict(self.conn.execute(
            "SELECT meter_id, ingested_at FROM detector_watermarks").fetchall())
        pending = {}
        if marks:
            pending.update(self.conn.execute(
                "SELECT r.meter_id, max(r.ingested_at) FROM readings r"
                " JOIN detector_watermarks w USING (meter_id)"
                " WHERE r.ingested_at > %s AND r.ingested_at > w.ingested_at GROUP BY r.meter_id",
                (min(marks.values()),)).fetchall())
        known = readings.meters(self.conn)
        for meter in known:
            if meter.meter_id not in marks:
                newest = self.conn.execute("SELECT max(ingested_at) FROM readings"
                                           " WHERE meter_id = %s", (meter.meter_id,)).fetchone()[0]
                if newest is not None:
                    pending[meter.meter_id] = newest
        self.conn.commit()
        return [(meter, pending[meter.meter_id]) for meter in known if meter.meter_id in pending]

    def _model(self, meter: readings.Meter) -> registry.ActiveModel | None:
        with self.conn.transaction():
            version = registry.active_version(self.conn, meter.meter_id)
            if version is None:
                try:
                    version = registry.train(self.conn, meter, self.settings, reason="initial")
                except WattwatchError as exc:
                    log.info("meter %s not scored yet: %s", meter.meter_id, exc)
                    return None
            cached = self.models.get(meter.meter_id)
            if cached is None or cached.version != version:
                cached = self.models[meter.meter_id] = registry.load(self.conn, version)
                algorithm = cached.detector.algorithm
                self.metrics.use_model(meter.meter_id, version, algorithm,
                                       self.algorithms.get(meter.meter_id))
                self.algorithms[meter.meter_id] = (str(version), algorithm)
        return cached

    def _score_meter(self, meter: readings.Meter, model: registry.ActiveModel,
                     newest: datetime) -> int:
        row = self.conn.execute("SELECT ingested_at FROM detector_watermarks WHERE meter_id = %s",
                                (meter.meter_id,)).fetchone()
        mark = row[0] if row else datetime.min.replace(tzinfo=timezone.utc)
        since = mark - LATE_COMMIT if row else mark
        writer = _Writer(self)
        try:
            position = self._next_new(meter, since, newest, None)
            while position is not None:
                started = time.monotonic()
                with self.conn.transaction():
                    chunk, context = self._read(meter, model, position, newest)
                frame = pd.concat([context, chunk])
                result = model.detector.score(frame[model.fields]).iloc[len(context):]
                fresh = (chunk["ingested_at"] > since).to_numpy()
                # Readings from before the watermark may already have a score, perhaps from
                # an older model version: they are written only if they have none.
                recheck = (chunk["ingested_at"] <= mark).to_numpy()[fresh]
                writer.put((meter, model, result[fresh], chunk["active_power_kw"][fresh],
                            recheck, started, chunk["ingested_at"].max()))
                position = self._next_new(meter, since, newest, chunk.index[-1])
        finally:
            written = writer.close()
        with self.conn.transaction():
            self.conn.execute(
                "INSERT INTO detector_watermarks (meter_id, ingested_at) VALUES (%s, %s)"
                " ON CONFLICT (meter_id) DO UPDATE SET ingested_at = excluded.ingested_at,"
                " updated_at = now()", (meter.meter_id, newest))
        return written

    def _next_new(self, meter, since, newest, after) -> datetime | None:
        """Time of the first reading to score after `after`: already-scored stretches between
        late readings are skipped, not re-read."""
        row = self.conn.execute(
            "SELECT min(time) FROM readings WHERE meter_id = %s AND ingested_at > %s"
            " AND ingested_at <= %s AND (%s::timestamptz IS NULL OR time > %s)",
            (meter.meter_id, since, newest, after, after)).fetchone()
        self.conn.commit()
        return row[0]

    def _read(self, meter, model, position, newest) -> tuple[pd.DataFrame, pd.DataFrame]:
        """A batch of readings from `position` on, and the readings before it the features need."""
        chunk = readings.query_frame(
            self.conn, readings.SELECT + " WHERE meter_id = %s AND time >= %s AND ingested_at <= %s"
            " ORDER BY time LIMIT %s",
            (meter.meter_id, position, newest, self.settings.detector_batch_rows), meter.timezone)
        context = readings.query_frame(
            self.conn, readings.SELECT + " WHERE meter_id = %s AND time < %s"
            " ORDER BY time DESC LIMIT %s",
            (meter.meter_id, position, model.detector.context_rows), meter.timezone)
        return chunk, context

    def _write(self, conn: psycopg.Connection, meter, model, result: pd.DataFrame,
               actual: pd.Series, recheck: np.ndarray) -> int:
        """Insert the scores (never over existing ones) and the incidents of those inserted."""
        if result.empty:
            return 0
        names = model.detector.features_.names() if hasattr(model.detector, "features_") else []
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS detector_batch (time_us bigint,"
                          " score real, is_anomaly boolean, severity smallint, kind smallint,"
                          " top smallint, expected double precision, recheck boolean)"
                          " ON COMMIT DELETE ROWS")
        with conn.cursor().copy("COPY detector_batch FROM STDIN WITH (FORMAT binary)") as copy:
            copy.write(_copy_rows(result, names, recheck))
        params = (meter.meter_id, model.version, list(SEVERITIES), list(KINDS), names)
        if self._span_is_free(conn, meter, result, recheck):
            try:
                with conn.transaction():  # a savepoint: a racing writer sends us below
                    conn.execute(INSERT_SCORES, params)
                anomalous_times = result.index[result["is_anomaly"].to_numpy()]
                inserted = (len(result), list(anomalous_times))
            except psycopg.errors.UniqueViolation:
                inserted = None
        else:
            inserted = None
        if inserted is None:
            inserted = conn.execute(INSERT_UNSCORED, (*params, meter.meter_id)).fetchone()
        count, anomalous_times = inserted
        self.metrics.scored.labels(meter.meter_id).inc(count)
        if anomalous_times:
            anomalies = result.loc[result.index.isin(pd.DatetimeIndex(anomalous_times))].copy()
            anomalies["actual"] = actual.loc[anomalies.index].to_numpy()
            for (severity, kind), n in anomalies.groupby(["severity", "kind"]).size().items():
                self.metrics.anomalies.labels(severity, kind).inc(n)
            touched = incidents.record(conn, meter, model.version, anomalies,
                                       self._step(model))
            self.metrics.incidents.labels(meter.meter_id).inc(touched)
        return count

    def _span_is_free(self, conn: psycopg.Connection, meter, result: pd.DataFrame, recheck: np.ndarray) -> bool:
        """True when no score of the meter exists in the batch's time span (a first scoring,
        the common case): the scores then go in without per-row conflict checks."""
        if recheck.any():
            return False
        return not conn.execute(
            "SELECT EXISTS (SELECT FROM anomaly_scores WHERE meter_id = %s AND time BETWEEN %s"
            " AND %s)", (meter.meter_id, result.index[0], result.index[-1])).fetchone()[0]

    @staticmethod
    def _step(model: registry.ActiveModel) -> timedelta:
        step_ns = getattr(getattr(model.detector, "features_", None), "step_ns_", None)
        return timedelta(microseconds=step_ns / 1000) if step_ns else timedelta(minutes=1)


class _Writer:
    """Writes scored batches, in order and each in its own transaction, on a second connection
    while the scorer reads and scores the next batch: the database and Python work at once."""

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
            meter, model, result, actual, recheck, started, newest = item
            try:
                conn = self.scorer.write_connection()
                with conn.transaction():
                    self.written += self.scorer._write(conn, meter, model, result, actual, recheck)
            except BaseException as exc:  # noqa: BLE001 - handed to the scorer's thread
                self.error = exc
                continue
            metrics = self.scorer.metrics
            metrics.batch.observe(time.monotonic() - started)
            lag = datetime.now(timezone.utc) - newest
            metrics.lag.labels(meter.meter_id).set(max(lag.total_seconds(), 0.0))

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
        once: bool = False) -> int:
    """Score until interrupted (with once: one cycle, everything pending when it starts)."""
    scorer = Scorer(conn, settings, metrics)
    total = 0
    try:
        while True:
            started = time.monotonic()
            total += scorer.cycle()
            if once:
                return total
            time.sleep(max(0.0, settings.detector_interval_seconds - (time.monotonic() - started)))
    finally:
        scorer.close()
