"""`wattwatch detect ...`: train, run, score-csv, patterns."""

from __future__ import annotations

import argparse
from pathlib import Path

from wattwatch.arguments import TIME_HELP, timestamp
from wattwatch.errors import WattwatchError
from wattwatch.settings import load_settings


def _meters(conn, meter_id: str | None):
    from detector.readings import meters

    found = meters(conn, meter_id)
    if meter_id and not found:
        raise WattwatchError(f"no meter {meter_id!r} in the meters table")
    return found


def cmd_train(args: argparse.Namespace) -> None:
    from detector.registry import train
    from timescale.connect import connect

    settings = load_settings()
    with connect(settings) as conn:
        for meter in _meters(conn, args.meter):
            with conn.transaction():
                version = train(conn, meter, settings, start=args.start, end=args.end,
                                algorithm=args.model, reason=args.reason)
            print(f"meter {meter.meter_id}: model version {version} ({args.model}) trained")


def cmd_run(args: argparse.Namespace) -> None:
    from prometheus_client import CollectorRegistry

    from detector.metrics import DetectorMetrics
    from detector.service import run
    from exporters.metrics import DEFAULT_PORTS, serve_metrics
    from timescale.connect import connect

    settings = load_settings()
    registry = CollectorRegistry()
    metrics = DetectorMetrics(registry)
    port = DEFAULT_PORTS["detector"] if args.metrics_port is None else args.metrics_port
    if not args.once or args.metrics_port is not None:
        bound = serve_metrics(registry, port, settings.metrics_address)
        print(f"metrics on http://{settings.metrics_address}:{bound}/metrics", flush=True)
    with connect(settings) as conn:
        written = run(conn, settings, metrics, once=args.once)
    print(f"{written} readings scored")


def cmd_score_csv(args: argparse.Namespace) -> None:
    from detector.csvscore import score_csv

    columns = [c.strip() for c in args.columns.split(",") if c.strip()]
    if not columns:
        raise WattwatchError("--columns names no column; expected e.g. --columns A,B")
    result = score_csv(args.input, args.output, args.time_column, columns,
                       train_fraction=args.train_fraction, model=args.model,
                       nominal_voltage_v=args.nominal_voltage)
    print(f"{len(result)} rows scored, {int(result['is_anomaly'].sum())} anomalous; "
          f"written to {args.output}")


def cmd_patterns(args: argparse.Namespace) -> None:
    from detector.patterns import store_patterns
    from timescale.connect import connect

    settings = load_settings()
    with connect(settings) as conn:
        for meter in _meters(conn, args.meter):
            with conn.transaction():
                found = store_patterns(conn, meter, days=args.days)
            print(f"meter {meter.meter_id}: {found}")


def register(commands: argparse._SubParsersAction) -> None:
    from detector.algorithms import ALGORITHMS, DEFAULT_MODEL

    detect = commands.add_parser(
        "detect", help="train anomaly models and score readings",
        description="Seasonal, explained anomaly scores (0-100) for every reading, written back "
        "to TimescaleDB with incidents and cost estimates.")
    sub = detect.add_subparsers(dest="detect_command", metavar="DETECT_COMMAND", required=True)

    train = sub.add_parser("train", help="train and store a new model version",
                           description="Train, validate and store a versioned model per meter "
                           "(all meters unless --meter); it becomes the meter's active model.")
    train.add_argument("--meter", help="only this meter")
    train.add_argument("--from", dest="start", type=timestamp, metavar="TS",
                       help=f"start of the training window: {TIME_HELP} (default: "
                       "WATTWATCH_DETECTOR_TRAIN_DAYS before --to)")
    train.add_argument("--to", dest="end", type=timestamp, metavar="TS",
                       help="end of the training window, same formats as --from (default: after "
                       "the newest reading)")
    train.add_argument("--model", choices=sorted(ALGORITHMS), default=DEFAULT_MODEL)
    train.add_argument("--reason", default="manual", help="why (stored with the model)")
    train.set_defaults(func=cmd_train)

    run = sub.add_parser("run", help="the scoring service",
                         description="Score new readings of every meter from its watermark, "
                         "write anomaly_scores and anomaly_incidents, serve /metrics. A meter "
                         "without a model gets one trained first.")
    run.add_argument("--once", action="store_true",
                     help="score everything pending and exit (how a history is backfilled)")
    run.add_argument("--metrics-port", type=int, metavar="PORT",
                     help="port of /metrics (default 9102; 0 picks a free one; with --once "
                     "metrics are served only when this is given)")
    run.set_defaults(func=cmd_run)

    score = sub.add_parser("score-csv", help="score a CSV file without a database",
                           description="Fit on the first --train-fraction of the rows, score "
                           "every row causally, write the original columns plus anomaly_score, "
                           "is_anomaly, severity and kind.")
    score.add_argument("input", type=Path, metavar="IN.csv")
    score.add_argument("--time-column", required=True,
                       help="column of timestamps or of integer steps")
    score.add_argument("--columns", required=True, help="comma-separated columns to score")
    score.add_argument("--train-fraction", type=float, default=0.15)
    score.add_argument("--model", choices=sorted(ALGORITHMS), default=DEFAULT_MODEL)
    score.add_argument("--nominal-voltage", type=float, default=230.0,
                       help="nominal voltage for the EN 50160 band [V] (default 230)")
    score.add_argument("-o", "--output", type=Path, required=True, metavar="OUT.csv")
    score.set_defaults(func=cmd_score_csv)

    patterns = sub.add_parser("patterns", help="typical and atypical days per meter",
                              description="Cluster each meter's daily load profiles "
                              "(RobustScaler, PCA 95%% of variance, DBSCAN with eps from the "
                              "k-distance curve) and store them in daily_patterns.")
    patterns.add_argument("--meter", help="only this meter")
    patterns.add_argument("--days", type=int, default=365, help="days of history (default 365)")
    patterns.set_defaults(func=cmd_patterns)
