"""One meter's many pending readings (a backfill) scored in batches, in a pipeline of three
connections: the next batch is read while this one is scored and the last one written, each
batch committed in its own transaction."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta

import pandas as pd
import psycopg

from detector import readings, registry, watermarks
from detector.cycles import Work
from detector.incidents import open_runs, owner
from detector.metrics import DetectorMetrics
from detector.scoring import Scored, score_frame
from detector.scores import ScoreStore
from detector.watermarks import Pending
from timescale.connect import connect
from wattwatch.errors import WattwatchError
from wattwatch.settings import Settings


def prepared_plans_off(conn: psycopg.Connection) -> psycopg.Connection:
    """Prepared statements get generic plans, which cannot leave out chunks by the values of
    the parameters: the detector's queries are planned with their values each time."""
    conn.prepare_threshold = None
    return conn


class Connections:
    """A connection of its own for each pipeline stage ("read", "write"), opened on first use
    and kept."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.opened: dict[str, psycopg.Connection] = {}

    def get(self, purpose: str) -> psycopg.Connection:
        conn = self.opened.get(purpose)
        if conn is None or conn.closed:
            try:
                conn = self.opened[purpose] = prepared_plans_off(connect(self.settings))
            except WattwatchError as exc:  # the database is lost, not the meter at hand
                raise psycopg.OperationalError(str(exc)) from exc
        return conn

    def close(self) -> None:
        for conn in self.opened.values():
            conn.close()
        self.opened.clear()


def score_in_batches(pending: Pending, model: registry.ActiveModel, connections: Connections,
                     store: ScoreStore, work: Work, metrics: DetectorMetrics,
                     batch_rows: int) -> tuple[int, readings.Rows | None]:
    """Read, score and write the meter's pending readings in batches of `batch_rows`; rows
    written, and the newest readings (as many as the model's features need before the next
    one) if any were read."""
    # the run open before the first pending reading; then each batch's carries to the next
    # (the writer may not have committed it yet)
    with connections.get("read").transaction():
        run = open_runs(connections.get("read"), [owner(pending.meter, model)], [pending.first])[0]
    writer = _Writer(connections, store, work, metrics)
    batches = _Prefetch(lambda: _batches(connections, pending, model, batch_rows))
    chunk = None
    try:
        for context, chunk, started in batches:
            scored = score_frame(pending, model, context, chunk, run)
            run = scored.runs[0]
            writer.put((scored, started))
    finally:
        batches.close()
        written = writer.close()
    if chunk is None:
        return written, None
    return written, readings.Rows.of(pd.concat([context, chunk]).tail(model.context_rows))


def _batches(connections: Connections, pending: Pending, model: registry.ActiveModel,
             rows: int) -> Iterator[tuple[pd.DataFrame, pd.DataFrame, float]]:
    """(context, chunk, start time) of each batch of the meter's pending readings, read on
    the pipeline's read connection."""
    conn = connections.get("read")
    context_rows = model.context_rows
    # A meter never scored has every reading pending: its batches follow each other, each
    # one's context is the tail of the one before, and no query looks for the next start.
    contiguous = pending.mark is None
    position = pending.first if contiguous else watermarks.next_new(conn, pending, None)
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
            context, position = None, watermarks.next_new(conn, pending, chunk.index[-1])
        elif len(chunk) < rows:
            position = None
        else:
            context = pd.concat([context, chunk]).tail(context_rows)
            position = chunk.index[-1] + timedelta(microseconds=1)


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
    write connection while the next batch is scored."""

    def __init__(self, connections: Connections, store: ScoreStore, work: Work,
                 metrics: DetectorMetrics):
        self.connections = connections
        self.store = store
        self.work = work
        self.metrics = metrics
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
                conn = self.connections.get("write")
                with conn.transaction():
                    self.written += self.store.write(conn, [scored], self.work)
            except BaseException as exc:  # noqa: BLE001 - handed to the scorer's thread
                self.error = exc
                continue
            self.metrics.batch.observe(time.monotonic() - started)
            self.metrics.observe_lag(scored.meters[0].meter_id, scored.newest)

    def put(self, item: tuple[Scored, float]) -> None:
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
