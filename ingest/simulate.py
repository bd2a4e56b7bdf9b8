"""`wattwatch ingest simulate`: synthetic meters written live (one reading per meter per
interval, forever or for --duration) or as a labelled history (--from/--to) at bulk speed."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

import psycopg

from ingest.batches import BatchLoader
from ingest.metrics import IngestMetrics
from ingest.pacing import Pacer
from ingest.summary import Summary
from ingest.synthetic import (
    BLOCK_STEPS, aligned, block_of, block_rows, blocks_between, meter_id, record_injections,
    register_simulated_meters, simulate_block,
)
from timescale.connect import connect
from timescale.migrate import schema_mode
from wattwatch.settings import Settings


def source_of(seed: int) -> str:
    return f"simulate --seed {seed}"


def simulate_history(conn: psycopg.Connection, settings: Settings, *, meters: int, step_seconds: int,
                     seed: int, start: datetime, end: datetime, prefix: str, anomaly_rate: float,
                     metrics: IngestMetrics | None = None, on_batch=None) -> Summary:
    """Write [start, end) for every meter, with its labels; running it again changes nothing."""
    started = time.perf_counter()
    source = source_of(seed)
    summary = Summary(source=source)
    register_simulated_meters(conn, prefix, meters)
    tables = schema_mode(conn) == "apache"  # rollups are tables the load keeps current
    conn.commit()  # end that read's transaction: labels are written in their own
    writers = [connect(settings) for _ in range(settings.ingest_writers)]
    try:
        loader = BatchLoader(conn, source, summary, settings.ingest_batch_rows, metrics=metrics,
                             on_batch=on_batch, writer_connections=writers,
                             refresh_each_batch=tables)
        for block in blocks_between(start, end, step_seconds):
            for meter in range(meters):
                name = meter_id(prefix, meter)
                frame, injections = simulate_block(seed, meter, block, step_seconds, anomaly_rate)
                record_injections(conn, name, [i for i in injections
                                               if i.start >= start and i.end < end], source)
                for row in block_rows(frame, name, start, end):
                    loader.add_row(row, None, "")
        loader.close()
        loader.refresh_rollups()
    finally:
        for writer in writers:
            writer.close()
    summary.seconds = time.perf_counter() - started
    return summary


def live_steps(*, meters: int, step_seconds: int, seed: int, prefix: str, anomaly_rate: float,
               stop: threading.Event, duration: float | None = None, since: datetime | None = None):
    """Each step as its moment comes, until stopped: (the step's row of every meter, the labels
    [(meter, injections)] of the anomalies that begin at it); from `since` (a step boundary,
    e.g. where a history ended: the steps up to now come at once) or from now."""
    blocks: dict[int, tuple[int, list[tuple], list]] = {}  # meter -> (block, rows, pending labels)
    tick = since or aligned(datetime.now(timezone.utc), step_seconds)
    deadline = None if duration is None else time.monotonic() + duration
    step = timedelta(seconds=step_seconds)
    while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
        wait = (tick - datetime.now(timezone.utc)).total_seconds()
        if wait > 0:
            stop.wait(wait)
            continue
        block = block_of(tick, step_seconds)
        position = int((tick.timestamp() // step_seconds) % BLOCK_STEPS)
        rows, labels = [], []
        for meter in range(meters):
            name = meter_id(prefix, meter)
            if blocks.get(meter, (None,))[0] != block:
                frame, injections = simulate_block(seed, meter, block, step_seconds, anomaly_rate)
                blocks[meter] = (block, block_rows(frame, name), injections)
            _, block_readings, pending = blocks[meter]
            started_now = [i for i in pending if i.start <= tick]
            if started_now:  # a label is written when its anomaly begins
                labels.append((name, started_now))
                blocks[meter] = (block, block_readings, [i for i in pending if i.start > tick])
            rows.append(block_readings[position])
        yield rows, labels
        tick += step


def simulate_live(conn: psycopg.Connection, settings: Settings, *, meters: int, step_seconds: int,
                  seed: int, prefix: str, anomaly_rate: float, reconnect,
                  metrics: IngestMetrics | None = None, stop: threading.Event | None = None,
                  duration: float | None = None, since: datetime | None = None) -> Summary:
    """One reading per meter at every step boundary, written as it happens, until stopped
    (see live_steps)."""
    stop = stop or threading.Event()
    source = source_of(seed)
    summary = Summary(source=source)
    started = time.perf_counter()
    loader = BatchLoader(conn, source, summary, max(10 * meters, 1000), metrics=metrics,
                         reconnect=reconnect)
    loader.with_retries(lambda: register_simulated_meters(loader.conn, prefix, meters))
    pacer = Pacer(loader)
    for rows, labels in live_steps(meters=meters, step_seconds=step_seconds, seed=seed,
                                   prefix=prefix, anomaly_rate=anomaly_rate, stop=stop,
                                   duration=duration, since=since):
        for name, injections in labels:
            loader.with_retries(lambda: record_injections(loader.conn, name, injections, source))
        for row in rows:
            loader.add_row(row, None, "")
        loader.flush()  # every tick: a reading should reach the database within a second
        pacer.tick()
    loader.close()
    loader.refresh_rollups(live=True)
    summary.seconds = time.perf_counter() - started
    return summary
