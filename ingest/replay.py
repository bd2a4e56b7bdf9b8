"""`wattwatch ingest replay`: stream a file into `readings` as if its meters were live.

The first reading is stored at the moment the replay starts; each later one at
start + (its time - first time) / speed, written when that moment comes, so the stored times
follow the wall clock and never lie in the future. With a history of N days, the file's first N
days are stored at once, ending at the start, and the rest follows live from there. Rows go out in small batches (at least once
a second); a lost database connection is replaced with backoff and the batch written again, so
nothing is lost or duplicated.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone
from itertools import chain
from pathlib import Path

import psycopg

from ingest.batches import BatchLoader
from ingest.load import LoadOptions, ended_early, read_layout, truncated_reject
from ingest.metrics import IngestMetrics
from ingest.pacing import FLUSH_SECONDS, Pacer
from ingest.parse import LineParser, Reject
from ingest.ranges import plausible_ranges
from ingest.source import TextSource
from ingest.summary import Summary
from ingest.timestamps import LocalTimeResolver
from wattwatch.settings import Settings

REPLAY_BATCH_ROWS = 10_000


def replay_file(conn: psycopg.Connection, path: Path, options: LoadOptions, settings: Settings,
                speed: float, reconnect, metrics: IngestMetrics | None = None,
                stop: threading.Event | None = None, history_days: float = 0) -> Summary:
    """Replay one file until its end (or until `stop` is set); returns the summary."""
    history = timedelta(days=history_days)
    stop = stop or threading.Event()
    source = f"replay:{path.resolve()}"
    summary = Summary(source=source)
    started = time.perf_counter()
    resolver = LocalTimeResolver(options.timezone)
    with TextSource(path) as text:
        lines = text.lines()
        layout, head = read_layout(text, lines, options)
        summary.layout = layout.describe()
        parser = LineParser(layout, options.meter, resolver, plausible_ranges(settings),
                            timedelta(seconds=settings.ingest_max_future_seconds))
        loader = BatchLoader(conn, source, summary, REPLAY_BATCH_ROWS,
                             meter_timezone=options.timezone, metrics=metrics, reconnect=reconnect,
                             source_sha256=text.sha256)
        latest = parser.latest_allowed()
        wall_start = datetime.now(timezone.utc)
        first_time: datetime | None = None
        pacer = Pacer(loader)
        for number, raw in chain(head, lines):
            if stop.is_set():
                break
            parsed = parser.parse(number, raw, latest)
            if isinstance(parsed, Reject):
                loader.add_reject(parsed)
                continue
            first_time = first_time or parsed[1]
            offset = parsed[1] - first_time
            # History rows are stored at once (they end at the start); the rest when due.
            due = wall_start - history + offset if offset < history else wall_start + (offset - history) / speed
            while (wait := (due - datetime.now(timezone.utc)).total_seconds()) > 0 and not stop.is_set():
                pacer.tick()
                stop.wait(min(wait, FLUSH_SECONDS))
            loader.add_row((parsed[0], due, *parsed[2:]), number, raw)
            pacer.tick()
        if text.stopped and not stop.is_set():
            loader.add_reject(truncated_reject(text.stopped, parser.fixed_meter))
            summary.ended_early = ended_early(text.stopped)
        loader.close()
        loader.refresh_rollups(live=True)
    summary.dst_ambiguous, summary.dst_nonexistent = resolver.ambiguous, resolver.nonexistent
    summary.seconds = time.perf_counter() - started
    return summary
