"""`wattwatch detect ...`: train, run, score-csv, patterns."""

from __future__ import annotations

import argparse
from pathlib import Path

from wattwatch import logs
from wattwatch.arguments import TIME_HELP, timestamp
from wattwatch.errors import WattwatchError, first_line
from wattwatch.settings import MODEL_MAX_AGE_DAYS, load_settings

log = logs.get("detector")


def _meters(conn, meter_id: str | None):
    from detector.readings import meters

    found = meters(conn, meter_id)
    if meter_id and not found:
        raise WattwatchError(f"no meter {meter_id!r} in the meters table")
    return found


def _not_handled(failed: dict[str, str], meters: int | None, done: str) -> WattwatchError:
    """One line naming every meter that failed (of `meters` asked for), and why."""
    if meters == 1:
        return WattwatchError(next(iter(failed.values())))
    count = f"{len(failed)} of {meters} meters" if meters else \
        f"{len(failed)} meter{'s' if len(failed) > 1 else ''}"
    return WattwatchError(f"{count} not {done}: "
                          + "; ".join(failed[meter_id] for meter_id in sorted(failed)))


def _lost(exc: Exception) -> WattwatchError:
    return WattwatchError(f"database connection lost ({first_line(exc)}); run the same command "
                          "again: what was done is kept and nothing is done twice")


def cmd_train(args: argparse.Namespace) -> None:
    """Train every meter it can, many together (`detector.fleet`); each model is stored once
    the detector is done with its meter. The others are named at the end, and the exit status
    is 1."""
    import psycopg

    from detector.fleet import train_many
    from detector.locks import waiting_for
    from detector.registry import store
    from timescale.connect import connect

    settings = load_settings()

    def keep(meter, fitted) -> None:
        with waiting_for(conn, meter.meter_id, log), conn.transaction():
            version = store(conn, fitted, args.reason)
        print(f"meter {meter.meter_id}: model version {version} ({args.model}) trained")

    with connect(settings) as conn:
        meters = _meters(conn, args.meter)
        try:
            failed = train_many(conn, meters, settings, keep, start=args.start, end=args.end,
                                algorithm=args.model)
        except psycopg.OperationalError as exc:
            raise _lost(exc) from None
    for meter_id, exc in failed.items():
        if not isinstance(exc, WattwatchError):
            logs.unexpected(log, f"meter {meter_id}", exc)
            failed[meter_id] = f"meter {meter_id!r}: {type(exc).__name__}: {first_line(exc)}"
    if failed:
        raise _not_handled({meter_id: str(why) for meter_id, why in failed.items()},
                           len(meters), "trained")


def _started(conn, settings, metrics_url: str | None, once: bool, worker: str | None) -> None:
    """The start-up line: version, database role, the settings that matter."""
    role = conn.execute("SELECT current_user").fetchone()[0]
    conn.commit()
    shown = {"interval_s": settings.detector_interval_seconds,
             "train_days": settings.detector_train_days,
             "alarm_rate": settings.detector_alarm_rate,
             "batch_rows": settings.detector_batch_rows}
    logs.startup(log, "detect run --once" if once else "detect run", role, **shown,
                 **({"worker": worker} if worker else {}),
                 **({"metrics": metrics_url} if metrics_url else {}))


def cmd_run(args: argparse.Namespace) -> None:
    """The scoring service (or one pass with --once: then a lost database, or meters that
    could not be handled, end it with status 1 and one line)."""
    import psycopg
    from prometheus_client import CollectorRegistry

    from detector.metrics import DetectorMetrics
    from detector.service import run
    from wattwatch.metrics import DEFAULT_PORTS, serve_metrics
    from timescale.connect import connect, connect_url
    from timescale.fleet import Fleet

    settings = load_settings()
    registry = CollectorRegistry()
    metrics = DetectorMetrics(registry)
    fleet = None if args.once else Fleet(settings, "detector", log, registry)
    port = DEFAULT_PORTS["detector"] if args.metrics_port is None else args.metrics_port
    metrics_url = None
    if not args.once or args.metrics_port is not None:
        bound = serve_metrics(registry, port, settings.metrics_address)
        metrics_url = f"http://{settings.metrics_address}:{bound}/metrics"

    def connect_again() -> psycopg.Connection:  # one attempt: run() backs off between them
        return connect_url(settings.database_url.get_secret_value(),
                           timeout=settings.connect_timeout_seconds, attempts=1)

    failed: dict[str, str] = {}
    with connect(settings) as conn:
        _started(conn, settings, metrics_url, args.once, fleet and fleet.me)
        try:
            written = run(conn, settings, metrics, once=args.once, failed=failed,
                          connect_again=None if args.once else connect_again, fleet=fleet)
        except psycopg.OperationalError as exc:
            raise _lost(exc) from None
    print(f"{written} readings scored")
    if failed:
        raise _not_handled(failed, None, "scored")


def cmd_score_csv(args: argparse.Namespace) -> None:
    from detector.csvscore import score_csv

    columns = [c.strip() for c in args.columns.split(",") if c.strip()]
    if not columns:
        raise WattwatchError("--columns names no column; expected e.g. --columns A,B")
    result = score_csv(args.input, args.output, args.time_column, columns,
                       train_fraction=args.train_fraction, model=args.model,
                       nominal_voltage_v=args.nominal_voltage, train_file=args.train_file,
                       max_age_days=args.max_age_days)
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
                           "(all meters unless --meter); it becomes the meter's active model. A "
                           "meter the detector is scoring is trained once it is done with it. "
                           "Meters that cannot be trained (too little data) are named at the "
                           "end, and the exit status is 1.")
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
                         "without a model gets one trained first. Several may run: the services "
                         "share the meters out among themselves (WATTWATCH_WORKER_ID names each), "
                         "and a meter is trained and scored by one at a time. The service waits "
                         "for a lost database (reconnecting with backoff). With --once (which "
                         "takes no share: it scores every meter it can), a lost database ends the "
                         "run, and meters that could not be handled are named at the end; both "
                         "give exit status 1.")
    run.add_argument("--once", action="store_true",
                     help="score everything pending and exit (how a history is backfilled)")
    run.add_argument("--metrics-port", type=int, metavar="PORT",
                     help="port of /metrics (default 9102; 0 picks a free one; with --once "
                     "metrics are served only when this is given)")
    run.set_defaults(func=cmd_run)

    score = sub.add_parser("score-csv", help="score a CSV file without a database",
                           description="Fit on the first --train-fraction of the rows (or on "
                           "--train-file), score every row causally, write the original columns plus anomaly_score, "
                           "is_anomaly, severity and kind.")
    score.add_argument("input", type=Path, metavar="IN.csv")
    score.add_argument("--time-column", required=True,
                       help="column of timestamps or of integer steps")
    score.add_argument("--columns", required=True, help="comma-separated columns to score")
    fit = score.add_mutually_exclusive_group()
    fit.add_argument("--train-fraction", type=float, default=0.15,
                     help="share of the rows the model is fitted on (default 0.15)")
    fit.add_argument("--train-file", type=Path, metavar="REF.csv",
                     help="fit on this file instead (same columns; anomaly-free data of the "
                     "same source), and score every row of IN.csv")
    score.add_argument("--model", choices=sorted(ALGORITHMS), default=DEFAULT_MODEL)
    score.add_argument("--max-age-days", type=float, default=MODEL_MAX_AGE_DAYS, metavar="DAYS",
                       help="in a file of timestamps, refit the model on the readings before "
                       "the first one more than DAYS after those it was fitted on, as detect "
                       f"run retrains (default {MODEL_MAX_AGE_DAYS:g}; 0: one model for the file)")
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
