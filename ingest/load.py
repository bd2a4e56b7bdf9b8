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
from ingest.block_parse import BlockParser
from ingest.layout import Layout, LayoutOptions, detect_layout
from ingest.metrics import IngestMetrics
from ingest.parse import LineParser, Reject, meter_id_problem
from ingest.ranges import plausible_ranges
from ingest.source import Stop, TextSource, numbered_lines
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


def read_layout(source: TextSource, lines: Iterator[tuple[int, str]], options: LoadOptions
                ) -> tuple[Layout, list[tuple[int, str]]]:
    """Detect the layout from the first two lines; returns them to be parsed too."""
    path = source.path
    head = []
    for item in lines:
        head.append(item)
        if len(head) == 2:
            break
    if not head and source.stopped:
        raise WattwatchError(f"{path}: {ended_early(source.stopped)}; nothing could be read")
    try:
        layout = detect_layout([text for _, text in head], options.layout)
    except WattwatchError as exc:
        raise WattwatchError(f"{path}: format not recognised: {exc}") from None
    if layout.meter_column is None:
        if not options.meter:
            raise WattwatchError(f"{path}: the file has no meter column; name the meter with --meter")
        if problem := meter_id_problem(options.meter):
            raise WattwatchError(f"--meter: {problem}")
    return layout, head[1:] if layout.has_header else head


def ended_early(stop: Stop) -> str:
    """The one-line account of a broken stream, as the summary and the CLI print it."""
    return f"file ended early at line {stop.line:,}: {stop.error}"


def truncated_reject(stop: Stop, meter: str | None) -> Reject:
    """The line where a broken stream stopped, as a reject: its partial text, or empty when the
    stream broke between lines. It counts as one row read and rejected."""
    return Reject(stop.line, stop.raw, "truncated_stream",
                  f"the file ended early here ({stop.error}); the rows before it were read", meter)


def _recorded(blocks: Iterator[tuple[int, list[str]]], seen: list[tuple[int, list[str]]]
              ) -> Iterator[tuple[int, list[str]]]:
    """`blocks`, keeping in `seen` each block handed out."""
    for block in blocks:
        seen.append(block)
        yield block


def _data_lines(start: int, lines: list[str], header: int | None) -> tuple[list[int], list[str]]:
    """The numbers and texts of a block's non-blank lines other than the header."""
    end = start + len(lines)
    if (header is None or not start <= header < end) and "" not in lines \
            and not any(map(str.isspace, lines)):
        return list(range(start, end)), lines
    kept = [(number, text) for number, text in enumerate(lines, start)
            if text and not text.isspace() and number != header]
    return [number for number, _ in kept], [text for _, text in kept]


def load_file(conn: psycopg.Connection, path: Path, options: LoadOptions, settings: Settings,
              metrics: IngestMetrics | None = None,
              on_batch: Callable[[Summary], None] | None = None) -> Summary:
    """Load one file; returns its summary (read = loaded + duplicates + rejected)."""
    started = time.perf_counter()
    source = str(path.resolve())
    summary = Summary(source=source)
    resolver = LocalTimeResolver(options.timezone)
    with TextSource(path) as text:
        blocks = text.blocks()
        first_blocks: list[tuple[int, list[str]]] = []  # read while detecting the layout
        layout, _ = read_layout(text, numbered_lines(_recorded(blocks, first_blocks)), options)
        summary.layout = layout.describe()
        summary.ignored_columns = layout.ignored
        parser = LineParser(layout, options.meter, resolver, plausible_ranges(settings),
                            timedelta(seconds=settings.ingest_max_future_seconds))
        block_parser = BlockParser(parser, resolver.is_utc)
        header = next(numbered_lines(first_blocks))[0] if layout.has_header else None
        tables = schema_mode(conn) == "apache"  # rollups are tables the load keeps current
        conn.commit()  # end that read's transaction: meters are registered in their own
        writers = [connect(settings) for _ in range(settings.ingest_writers)]
        loader = BatchLoader(conn, source, summary, settings.ingest_batch_rows,
                             meter_timezone=options.timezone, metrics=metrics, on_batch=on_batch,
                             writer_connections=writers,
                             refresh_each_batch=tables, source_sha256=text.sha256)
        try:
            for start, lines in chain(first_blocks, blocks):
                numbers, texts = _data_lines(start, lines, header)
                loader.add_columns(*block_parser.parse(numbers, texts, parser.latest_allowed()))
            if text.stopped:
                loader.add_reject(truncated_reject(text.stopped, parser.fixed_meter))
                summary.ended_early = ended_early(text.stopped)
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
