"""`wattwatch export`: serve the KPI exporter's metrics until interrupted."""

from __future__ import annotations

import argparse
import threading


def cmd_export(args: argparse.Namespace) -> None:
    from prometheus_client import CollectorRegistry

    from exporters.kpi import KpiCollector
    from wattwatch.metrics import DEFAULT_PORTS, serve_metrics
    from timescale.connect import connect
    from wattwatch import logs
    from wattwatch.settings import load_settings

    settings = load_settings()
    with connect(settings) as conn:  # a wrong URL or password is a one-line error now, not a scrape error
        role = conn.execute("SELECT current_user").fetchone()[0]
    registry = CollectorRegistry()
    collector = KpiCollector(lambda: connect(settings, application_name="wattwatch-export"), registry)
    port = DEFAULT_PORTS["exporter"] if args.metrics_port is None else args.metrics_port
    bound = serve_metrics(registry, port, settings.metrics_address)
    logs.startup(logs.get("export"), "export", role,
                 metrics=f"http://{settings.metrics_address}:{bound}/metrics")
    try:
        threading.Event().wait()
    finally:
        collector.close()


def register(commands: argparse._SubParsersAction) -> None:
    export = commands.add_parser(
        "export", help="serve the KPI exporter's Prometheus metrics",
        description="Serve database KPIs (readings stored and per meter, anomalies by severity, "
        "average power and voltage, load and last-reading age per meter, meters in critical "
        "drift, detector and drift activity) as Prometheus metrics, read fresh on every scrape "
        "from the rollups. Connect as the read-only role (wattwatch_reader).")
    export.add_argument("--metrics-port", type=int, metavar="PORT",
                        help="port of /metrics (default 9104; 0 picks a free one)")
    export.set_defaults(func=cmd_export)
