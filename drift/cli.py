"""`wattwatch drift run`: compare recent data with its baseline, once or on a schedule."""

from __future__ import annotations

import argparse
import json

from wattwatch.arguments import TIME_HELP, timestamp
from wattwatch.errors import WattwatchError


def positive_days(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of days, got {text!r}")
    return value


def cmd_run(args: argparse.Namespace) -> None:
    from drift.runner import run_pass
    from drift.service import serve, summary
    from wattwatch.metrics import DEFAULT_PORTS
    from timescale.advisory import seed, try_locks
    from timescale.connect import connect
    from wattwatch.settings import load_settings

    if (args.reference_from is None) != (args.reference_to is None):
        raise WattwatchError("--reference-from and --reference-to go together")
    if args.reference_from is not None and args.reference_from >= args.reference_to:
        raise WattwatchError("--reference-from must be before --reference-to")
    settings = load_settings()
    keys = seed(b"drift")  # the key space of the drift service's meter locks
    reference = (args.reference_from, args.reference_to) if args.reference_from else None

    def run(mode: str, meters: list[str] | None = None):
        """A pass over the given meters (of --meter, if given), else over --meter or all. The
        given ones are a worker's: it judges those no other worker is judging now (each held
        by an advisory lock until the pass's connection closes)."""
        with connect(settings, autocommit=True) as conn:
            if meters is not None:
                meters = sorted(try_locks(conn, set(meters) & set(args.meter or meters), keys))
            return run_pass(conn, settings, mode=mode, current_to=args.current_to,
                            current_days=args.current_days, reference=reference,
                            reference_days=args.reference_days,
                            meters=args.meter if meters is None else meters)

    def check(query):
        with connect(settings, autocommit=True) as conn:
            return query(conn)

    if args.once:
        report = run(args.mode or "full")
        print(json.dumps(report.to_json(), indent=2) if args.json else summary(report))
        if report.failed:
            raise WattwatchError(f"{len(report.failed)} meter(s) could not be judged: " + "; ".join(
                f"{meter} ({reason})" for meter, reason in sorted(report.failed.items())))
        return
    port = DEFAULT_PORTS["drift"] if args.metrics_port is None else args.metrics_port
    serve(settings, run, check, first_mode=args.mode, port=port, print_json=args.json)


def register(commands: argparse._SubParsersAction) -> None:
    drift = commands.add_parser(
        "drift", help="compare recent data with its baseline and report drift",
        description="Data drift per meter and feature: seasonal PSI, KS and Wasserstein of the "
        "current window against a reference window, hour of the day against hour of the day.")
    drift_commands = drift.add_subparsers(dest="drift_command", metavar="DRIFT_COMMAND", required=True)
    run = drift_commands.add_parser(
        "run", help="one drift pass (--once) or the scheduled service",
        description="Without --once: serve /metrics, run one pass at once, then light passes "
        "(PSI) daily at WATTWATCH_DRIFT_LIGHT_AT and full passes (PSI, KS, Wasserstein) weekly "
        "on WATTWATCH_DRIFT_FULL_DAY at WATTWATCH_DRIFT_FULL_AT. Each pass writes drift_reports "
        "and, for a meter in critical drift, a retrain request unless one is pending. A meter "
        "whose model is new is judged within a minute; a failed pass is retried with backoff. "
        "Several services share the meters out among themselves (WATTWATCH_WORKER_ID names "
        "each); --once takes no share.")
    run.add_argument("--once", action="store_true", help="run one pass, print its summary, exit")
    run.add_argument("--mode", choices=("light", "full"),
                     help="mode of the pass run now (--once: default full; service: the start-up "
                     "pass, default full when no full pass ran in the last week, else light)")
    run.add_argument("--json", action="store_true",
                     help="print each pass's report as JSON (the old drift report's shape)")
    run.add_argument("--meter", action="append", metavar="ID",
                     help="only this meter (repeatable); default every meter")
    run.add_argument("--current-to", type=timestamp, metavar="TS",
                     help=f"end of the current window: {TIME_HELP}; default now")
    run.add_argument("--current-days", type=positive_days, metavar="DAYS",
                     help="length of the current window (default WATTWATCH_DRIFT_CURRENT_DAYS)")
    run.add_argument("--reference-from", type=timestamp, metavar="TS",
                     help="start of the reference window for every meter (with --reference-to), "
                     "same formats as --current-to; default the active model's training window")
    run.add_argument("--reference-to", type=timestamp, metavar="TS",
                     help="end of the reference window for every meter, same formats as "
                     "--current-to")
    run.add_argument("--reference-days", type=positive_days, metavar="DAYS",
                     help="reference length when a meter has no active model: the days before "
                     "the current window (default WATTWATCH_DRIFT_REFERENCE_DAYS)")
    run.add_argument("--metrics-port", type=int, metavar="PORT",
                     help="port of /metrics (default 9103; 0 picks a free one)")
    run.set_defaults(func=cmd_run)
