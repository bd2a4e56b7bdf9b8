"""`wattwatch ingest file`: stream a file into `readings` in batches, reporting every row."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import timedelta
from itertools import chain
from pathlib import Path
from typing import Callable, Iterator

import psycopg

from ingest.batches import BatchLoader
from ingest.layout import Layout, LayoutOptions, detect_layout
from ingest.metrics import IngestMetrics
from ingest.parse import LineParser, Reject
from ingest.ranges import plausible_ranges
from ingest.source import open_text
from ingest.summary import Summary
from ingest.timestamps import LocalTimeResolver
from timescale.connect import connect
from timescale.migrate import schema_mode
from wattwatch.errors import WattwatchError
from wattwatch.settings import Settings


@dataclass
class LoadOptions:
    meter: str | None = None  # fixed meter id when the file has no meter column
    timezone: str = "UTC"  # zone of naive timestamps
    layout: LayoutOptions = field(default_factory=LayoutOptions)


def numbered_lines(stream) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its newline), blank lines left out."""
    for number, line in enumerate(stream, start=1):
        text = line.rstrip("\r\n")
        if text and not text.isspace():
            yield number, text


def read_layout(path: Path, lines: Iterator[tuple[int, str]], options: LoadOptions
                ) -> tuple[Layout, list[tuple[int, str]]]:
    """Detect the layout from the first two lines; returns them to be parsed too."""
    head = []
    for item in lines:
        head.append(item)
        if len(head) == 2:
            break
    try:
        layout = detect_layout([text for _, text in head], options.layout)
    except WattwatchError as exc:
        raise WattwatchError(f"{path}: format not recognised: {exc}") from None
    if layout.meter_column is None and not options.meter:
        raise WattwatchError(f"{path}: the file has no meter column; name the meter with --meter")
    return layout, head[1:] if layout.has_header else head


def load_file(conn: psycopg.Connection, path: Path, options: LoadOptions, settings: Settings,
              metrics: IngestMetrics | None = None,
              on_batch: Callable[[Summary], None] | None = None) -> Summary:
    """Load one file; returns its summary (read = loaded + duplicates + rejected)."""
    started = time.perf_counter()
    source = str(path.resolve())
    summary = Summary(source=source)
    resolver = LocalTimeResolver(options.timezone)
    with open_text(path) as stream:
        lines = numbered_lines(stream)
        try:
            layout, head = read_layout(path, lines, options)
        except UnicodeDecodeError:
            raise WattwatchError(f"{path}: not a text file") from None
        summary.layout = layout.describe()
        summary.ignored_columns = layout.ignored
        parser = LineParser(layout, options.meter, resolver, plausible_ranges(settings),
                            timedelta(seconds=settings.ingest_max_future_seconds))
        tables = schema_mode(conn) == "apache"  # rollups are tables the load keeps current
        conn.commit()  # end that read's transaction: meters are registered in their own
        writers = [connect(settings) for _ in range(settings.ingest_writers)]
        loader = BatchLoader(conn, source, summary, settings.ingest_batch_rows,
                             meter_timezone=options.timezone, metrics=metrics, on_batch=on_batch,
                             writer_connections=writers,
                             refresh_each_batch=tables)
        latest = parser.latest_allowed()
        try:
            for number, raw in chain(head, lines):
                parsed = parser.parse(number, raw, latest)
                if isinstance(parsed, Reject):
                    loader.add_reject(parsed)
                else:
                    loader.add_row(parsed, number, raw)
                if number % 65536 == 0:
                    latest = parser.latest_allowed()
            loader.close()
        finally:
            for writer in writers:
                writer.close()
        loader.refresh_rollups()
    summary.dst_ambiguous = resolver.ambiguous
    summary.dst_nonexistent = resolver.nonexistent
    summary.seconds = time.perf_counter() - started
    if not summary.balanced():  # the promise every run keeps; a failure here is a bug
        raise WattwatchError(f"{path}: row accounting does not balance: {summary.as_dict()}")
    return summary
