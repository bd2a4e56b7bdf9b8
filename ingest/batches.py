"""Collect rows and rejects, write them in batches, keep the run's summary and metrics, and
survive a lost database connection when the caller can reconnect.

File loads hand batches to writer threads, each with its own connection: PostgreSQL inserts
batch N on one backend (and N+1 on another) while Python parses the next, so the two cores are
both busy. Rows of a batch that go back in time for a meter could collide with rows of an
earlier batch still in flight; such a batch waits until every earlier batch is committed, so the
first row of a (meter, time) in the file is always the one kept. At most one batch per writer
waits in the queue, which bounds memory.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from datetime import datetime
from typing import Callable

import psycopg

from ingest.columns import Columns
from ingest.metrics import IngestMetrics
from ingest.parse import Reject
from ingest.summary import Summary
from ingest.writer import BatchResult, ReadingWriter, as_rows, meter_spans, register_meters
from timescale.reconnect import Outage, backoff
from timescale.rollups import refresh_rollups
from wattwatch import logs
from wattwatch.errors import WattwatchError, first_line

log = logs.get("ingest")
# rows, their line numbers, their raw lines, parse rejects, meter_spans(rows); rows as Columns
# carry their own line numbers and raw lines (the two lists are then None)
Batch = tuple[list[tuple] | Columns, list[int | None] | None, list[str] | None, list[Reject],
              dict[str, tuple]]


class BatchLoader:
    """Writes batches for one source; every input row is counted exactly once in the summary.

    `conn` registers meters and refreshes the rollups, and writes the batches itself unless
    `writer_connections` are given (one writer thread each).
    With `refresh_each_batch` the writer threads also bring the rollups of each batch up to date.
    """

    def __init__(self, conn: psycopg.Connection, source: str, summary: Summary, batch_rows: int, *,
                 meter_timezone: str = "UTC", metrics: IngestMetrics | None = None,
                 reconnect: Callable[[], psycopg.Connection] | None = None,
                 on_batch: Callable[[Summary], None] | None = None,
                 writer_connections: list[psycopg.Connection] = (),
                 refresh_each_batch: bool = False, source_sha256: str | None = None):
        self.conn = conn
        self.source = source
        self.source_sha256 = source_sha256  # part of the key of the source's rejects
        self.summary = summary
        self.batch_rows = batch_rows
        self.meter_timezone = meter_timezone
        self.metrics = metrics
        self.reconnect = reconnect
        self.on_batch = on_batch
        # Writer threads refresh the rollups of each batch they store (apache mode, where the
        # rollups are tables); otherwise refresh_rollups() covers what was written.
        self.refresh_each_batch = refresh_each_batch
        self.known_meters: set[str] = set()
        # Meters the database refused to register, with why: their rows are rejects.
        self.refused_meters: dict[str, str] = {}
        self.rows: list[tuple] = []
        self.lines: list[int | None] = []
        self.raws: list[str] = []
        self.rejects: list[Reject] = []
        self.columns: list[Columns] = []  # pending rows of add_columns
        self.column_rows = 0
        # Span of rows written since the rollups were last refreshed.
        self.unrolled: tuple[datetime, datetime] | None = None
        # Newest time per meter among batches handed out, to spot a batch that goes back in time.
        self._newest_handed: dict[str, datetime] = {}
        self._lock = threading.Lock()
        self._error: BaseException | None = None
        self._queue: queue.Queue | None = None
        self._threads: list[threading.Thread] = []
        if writer_connections:
            self._queue = queue.Queue(maxsize=len(writer_connections))
            for number, connection in enumerate(writer_connections):
                thread = threading.Thread(target=self._drain,
                                          args=(ReadingWriter(connection, source, source_sha256),),
                                          name=f"ingest-writer-{number}", daemon=True)
                thread.start()
                self._threads.append(thread)

    def add_row(self, row: tuple, line: int | None, raw: str) -> None:
        self.rows.append(row)
        self.lines.append(line)
        self.raws.append(raw)
        if len(self.rows) + len(self.rejects) >= self.batch_rows:
            self.flush()

    def add_reject(self, reject: Reject) -> None:
        self.rejects.append(reject)
        if len(self.rows) + len(self.rejects) >= self.batch_rows:
            self.flush()

    def add_columns(self, columns: Columns, rejects: list[Reject]) -> None:
        """Rows parsed as columns and the rejects of the same lines, in batches of batch_rows
        as add_row and add_reject make them."""
        self.rejects += rejects
        start = 0
        while True:
            room = max(self.batch_rows - self.column_rows - len(self.rejects), 0)
            part = columns.part(start, start + room)
            if len(part):
                self.columns.append(part)
                self.column_rows += len(part)
                start += len(part)
            if self.column_rows + len(self.rejects) >= self.batch_rows:
                self.flush()
            if start >= len(columns):
                return

    def flush(self) -> None:
        """Write the pending rows and rejects (or hand them to a writer thread)."""
        if not self.rows and not self.columns and not self.rejects:
            return
        if self.columns:  # a load gives rows one way or the other, never both
            rows = Columns.join(self.columns)
            batch: Batch = (rows, None, None, self.rejects, rows.spans())
        else:
            batch = (self.rows, self.lines, self.raws, self.rejects, meter_spans(self.rows))
        spans = batch[-1]
        self.rows, self.lines, self.raws, self.rejects = [], [], [], []
        self.columns, self.column_rows = [], 0
        self.with_retries(lambda: self._register_meters(spans))
        if self.refused_meters and not spans.keys().isdisjoint(self.refused_meters):
            batch = self._without_refused_meters(batch)
        if self._queue is None:
            self._store(self._writer(self.conn), batch, reconnecting=True)
            return
        self._raise_writer_error()
        if self._goes_back_in_time(spans):
            self._queue.join()  # earlier batches first, so the file's first row of a key wins
            self._raise_writer_error()
        self._queue.put(batch)

    def close(self) -> None:
        """Write what is pending and wait for the writers; re-raises a writer's error."""
        self.flush()
        if self._queue is not None:
            for _ in self._threads:
                self._queue.put(None)
            for thread in self._threads:
                thread.join()
            self._queue = None
        self._raise_writer_error()

    def refresh_rollups(self, live: bool = False) -> None:
        """Bring the hourly and daily rollups up to date for what was written (after close);
        `live` when the rows come from a live feed (see timescale/rollups.py)."""
        if self.unrolled:
            done = self.with_retries(lambda: refresh_rollups(self.conn, *self.unrolled, live=live))
            log.debug("rollups of %s: %s", self.source, done)
            self.unrolled = None

    def _writer(self, conn: psycopg.Connection) -> ReadingWriter:
        return ReadingWriter(conn, self.source, self.source_sha256)

    def _register_meters(self, spans: dict[str, tuple]) -> None:
        new = spans.keys() - self.known_meters - self.refused_meters.keys()
        if new:
            refused = register_meters(self.conn, new, self.meter_timezone)
            self.refused_meters.update(refused)
            self.known_meters |= new - refused.keys()

    def _without_refused_meters(self, batch: Batch) -> Batch:
        """The batch with the rows of refused meters turned into `database_refused` rejects."""
        rows, lines, raws = as_rows(*batch[:3])
        rejects = batch[3]
        refused = self.refused_meters
        kept = [i for i, row in enumerate(rows) if row[0] not in refused]
        rejects = rejects + [Reject(lines[i], raws[i], "database_refused",
                                    f"the database refused meter id: {refused[rows[i][0]]}", rows[i][0])
                             for i in range(len(rows)) if rows[i][0] in refused]
        rows = [rows[i] for i in kept]
        return rows, [lines[i] for i in kept], [raws[i] for i in kept], rejects, meter_spans(rows)

    def _goes_back_in_time(self, spans: dict[str, tuple]) -> bool:
        handed = self._newest_handed
        back = any(meter in handed and low <= handed[meter] for meter, (low, _) in spans.items())
        for meter, (_, high) in spans.items():
            if meter not in handed or high > handed[meter]:
                handed[meter] = high
        return back

    def _raise_writer_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _drain(self, writer: ReadingWriter) -> None:
        while (batch := self._queue.get()) is not None:
            try:
                if self._error is None:  # after a failure, only empty the queue
                    self._store(writer, batch, reconnecting=False)
            except BaseException as exc:  # handed to the parsing thread
                self._error = exc
            finally:
                self._queue.task_done()
        self._queue.task_done()

    def _store(self, writer: ReadingWriter, batch: Batch, reconnecting: bool) -> None:
        rows, _, _, rejects, spans = batch
        started = time.perf_counter()
        if reconnecting:
            result = self.with_retries(lambda: self._writer(self.conn).write(*batch))
        else:
            result = self._once(lambda: writer.write(*batch))
            if self.refresh_each_batch and spans:
                # After the commit, so the last refresh of any bucket sees every batch in it
                # (refreshes take turns on an advisory lock); it overlaps with parsing.
                low, high = _bounds(spans)
                self._once(lambda: refresh_rollups(writer.conn, low, high))
        seconds = time.perf_counter() - started
        self._account(len(rows) + len(rejects), spans, result, seconds)

    def _account(self, read: int, spans: dict[str, tuple], result: BatchResult,
                 seconds: float) -> None:
        rejected = Counter(r.reason for r in result.rejects)
        newest = {meter: high.timestamp() for meter, (_, high) in spans.items()}
        with self._lock:
            summary = self.summary
            summary.read += read
            summary.loaded += result.loaded
            summary.duplicates += result.duplicates
            summary.rejected.update(rejected)
            summary.meters.update(spans)
            if spans:
                low, high = _bounds(spans)
                summary.first_time = min(low, summary.first_time or low)
                summary.last_time = max(high, summary.last_time or high)
                if not (self.refresh_each_batch and self._queue is not None):
                    self.unrolled = (min(low, self.unrolled[0]), max(high, self.unrolled[1])) \
                        if self.unrolled else (low, high)
            if self.metrics:
                self.metrics.batch(result.loaded, result.duplicates, rejected, seconds, newest)
            if self.on_batch:
                self.on_batch(summary)

    def _once(self, action: Callable[[], BatchResult]) -> BatchResult:
        """Run a database action; a lost connection ends the load with a clear message."""
        try:
            return action()
        except psycopg.OperationalError as exc:
            if self.metrics:
                self.metrics.connection_errors.inc()
            raise WattwatchError(
                f"database connection lost during the load ({first_line(exc)}); run the "
                "same command again: rows already stored count as duplicates") from None

    def with_retries(self, action: Callable[[], object]):
        """Run a database action on `self.conn`; when the caller can reconnect, a lost
        connection is replaced with backoff and the action (a whole transaction) runs again."""
        if self.reconnect is None:
            return self._once(action)
        outage = Outage(log, f"{self.source} goes on where it stopped")
        delays = backoff()
        while True:
            try:
                result = action()
                outage.over()
                return result
            except psycopg.OperationalError as exc:
                outage.lost(exc)
                if self.metrics:
                    self.metrics.connection_errors.inc()
                time.sleep(next(delays))
                try:
                    self.conn = self.reconnect()
                    self.known_meters.clear()
                    self.summary.reconnects += 1
                except WattwatchError:
                    continue


def _bounds(spans: dict[str, tuple]) -> tuple:
    """Earliest and latest time over every meter of a batch."""
    return min(span[0] for span in spans.values()), max(span[1] for span in spans.values())
