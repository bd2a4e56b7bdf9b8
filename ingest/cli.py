"""`wattwatch ingest ...`: file (bulk load), replay (a file as if live), simulate (synthetic meters)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from wattwatch.errors import WattwatchError
from wattwatch.settings import load_settings


def _mapping(text: str) -> tuple[str, str]:
    column, sep, target = text.partition("=")
    if not sep or not column or not target:
        raise argparse.ArgumentTypeError(f"expected COLUMN=FIELD, e.g. kw=active_power_kw, got {text!r}")
    return column, target


def _header(text: str) -> bool | None:
    choices = {"auto": None, "yes": True, "no": False}
    if text not in choices:
        raise argparse.ArgumentTypeError(f"expected auto, yes or no, got {text!r}")
    return choices[text]


def _separator(text: str) -> str:
    value = {"tab": "\t", "\\t": "\t"}.get(text, text)
    if value not in (",", ";", "\t"):
        raise argparse.ArgumentTypeError(f"expected ',', ';' or tab, got {text!r}")
    return value


def _metrics(args: argparse.Namespace, settings):
    """Serve /metrics when a port was given (0 picks a free one); None otherwise."""
    if args.metrics_port is None:
        return None
    from exporters.metrics import serve_metrics
    from ingest.metrics import IngestMetrics

    metrics = IngestMetrics()
    serve_metrics(metrics.registry, args.metrics_port, settings.metrics_address)
    return metrics


def layout_options(args: argparse.Namespace):
    from ingest.layout import LayoutOptions

    return LayoutOptions(separator=args.sep, header=args.header, time_column=args.time_column,
                         meter_column=args.meter_column, mapping=dict(args.map or []),
                         time_format=args.time_format)


def cmd_file(args: argparse.Namespace) -> None:
    from ingest.load import LoadOptions, load_file
    from ingest.progress import Progress
    from timescale.connect import connect

    settings = load_settings()
    metrics = _metrics(args, settings)
    for path in args.paths:
        if not path.is_file():
            raise WattwatchError(f"{path}: no such file")
    with connect(settings) as conn:
        summaries = []
        for path in args.paths:
            progress = Progress()
            options = LoadOptions(meter=args.meter, timezone=args.timezone, layout=layout_options(args))
            summary = load_file(conn, path, options, settings, metrics, on_batch=progress)
            progress.done()
            summaries.append(summary)
            if not args.json:
                print(summary.format())
    if args.json:
        print(json.dumps([s.as_dict() for s in summaries] if len(summaries) > 1
                         else summaries[0].as_dict(), indent=2))


def add_layout_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--meter", help="meter id for files without a meter column")
    parser.add_argument("--timezone", default="UTC",
                        help="IANA zone of naive timestamps (default UTC); see README for the "
                        "daylight-saving rule")
    parser.add_argument("--sep", type=_separator, help="separator: ',', ';' or tab (default: detected)")
    parser.add_argument("--header", type=_header, default=None, metavar="auto|yes|no",
                        help="whether the first line is a header (default: detected)")
    parser.add_argument("--time-column", metavar="COL",
                        help="time column name or 1-based number; DATE+TIME joins two columns "
                        "(default: time/timestamp/date_time, or Date+Time)")
    parser.add_argument("--meter-column", metavar="COL", help="meter column name or number "
                        "(default: a column named meter or meter_id)")
    parser.add_argument("--map", type=_mapping, action="append", metavar="COLUMN=FIELD",
                        help="read COLUMN as FIELD (e.g. kw=active_power_kw); UCI and our own "
                        "column names are recognised without it")
    parser.add_argument("--time-format", metavar="FMT",
                        help="iso, dayfirst, epoch or a strptime format (default: detected)")


def register(commands: argparse._SubParsersAction) -> None:
    ingest = commands.add_parser("ingest", help="load readings from files, replay them, simulate meters",
                                 description="Load readings into TimescaleDB.")
    sub = ingest.add_subparsers(dest="ingest_command", metavar="INGEST_COMMAND", required=True)
    file = sub.add_parser(
        "file", help="bulk-load CSV files (UCI or generic, plain or gzip)",
        description="Bulk-load files with COPY, in batches. Every row is loaded, skipped as a "
        "duplicate or recorded in ingest_rejects with its reason; loading a file again changes "
        "nothing. Exit status 0 when the files were read, even with rejects.")
    file.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    add_layout_arguments(file)
    file.add_argument("--json", action="store_true", help="print the summary as JSON")
    file.add_argument("--metrics-port", type=int, metavar="PORT",
                      help="serve Prometheus metrics on this port while loading")
    file.set_defaults(func=cmd_file)
