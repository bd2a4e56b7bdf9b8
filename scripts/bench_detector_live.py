#!/usr/bin/env python3
"""Live benchmark: `wattwatch detect run` scoring --meters meters that each receive one new
reading every second; prints the 50th/95th percentile and the largest time from a reading's
insert (readings.ingested_at) to its score (anomaly_scores.scored_at).

WATTWATCH_DATABASE_URL must be a superuser URL of a TimescaleDB server; the script creates a
scratch database (dropped at the end) and gives every meter the same three days of UCI
history. Identical data give identical models, so one model is trained and stored once per
meter (each meter still loads and scores with its own version). The detector starts, scores
the history (timed apart), then readings are fed for --seconds: every second one transaction
with one reading per meter, as `wattwatch ingest simulate` writes a tick. With --simulator,
`wattwatch ingest simulate` itself writes the history and then feeds the meters live at its
default pace (one reading per meter a minute; the meters' models are the first one's). The
figures are taken once every fed reading is scored (or 120 s after the last one).

    WATTWATCH_DATABASE_URL=postgresql://... .venv/bin/python scripts/bench_detector_live.py --meters 1000
    WATTWATCH_DATABASE_URL=postgresql://... .venv/bin/python scripts/bench_detector_live.py \
        --meters 1000 --simulator --seconds 300
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psycopg

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from detector import registry  # noqa: E402
from detector.readings import COLUMNS, meters  # noqa: E402
from ingest.datasets import uci_household_csv  # noqa: E402
from ingest.synthetic import meter_id  # noqa: E402
from tests.support.readings import copy_frame  # noqa: E402
from tests.support.scratch import create_database, drop_database  # noqa: E402
from timescale.connect import connect_url, with_database  # noqa: E402
from timescale.migrate import migrate  # noqa: E402
from wattwatch.fields import field_for  # noqa: E402
from wattwatch.settings import Settings  # noqa: E402

# The CLI of this checkout, run by the interpreter running this script.
WATTWATCH = [sys.executable, "-m", "wattwatch.cli"]
HISTORY_DAYS = 3
SETTLE_SECONDS = 120


def _feed(conn: psycopg.Connection, ids: list[str], row: pd.DataFrame) -> None:
    """One reading (the row) for every meter, in one COPY and one transaction."""
    values = "\t".join("" if pd.isna(v) else repr(float(v)) for v in row[COLUMNS].iloc[0])
    stamp = row.index[0].strftime("%Y-%m-%d %H:%M:%S+00")
    text = "".join(f"{stamp}\t{meter_id}\t{values}\n" for meter_id in ids)
    with conn.transaction(), conn.cursor().copy(
            "COPY readings (time, meter_id, " + ", ".join(COLUMNS) + ") FROM STDIN") as copy:
        copy.write(text.replace("\t\t", "\t\\N\t"))


def _wait(conn: psycopg.Connection, query: str, params: tuple, timeout: float) -> bool:
    """Poll until the query returns true, at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if conn.execute(query, params).fetchone()[0]:
            return True
        time.sleep(0.5)
    return False


def _uci_history(url: str, ids: list[str], seconds: int) -> tuple[int, pd.DataFrame]:
    """Every meter gets the same HISTORY_DAYS of UCI readings (ending now); returns how many
    readings that stored per meter and the readings that follow, to be fed live."""
    uci = pd.read_csv(uci_household_csv(), parse_dates=["date_time"], index_col="date_time",
                      nrows=HISTORY_DAYS * 1440 + seconds + 10)
    uci.columns = [field_for(c) for c in uci.columns]
    start = pd.Timestamp.now(tz="UTC").floor("min") - pd.Timedelta(days=HISTORY_DAYS)
    uci.index = pd.date_range(start, periods=len(uci), freq="min")
    history = uci.iloc[:HISTORY_DAYS * 1440]
    with psycopg.connect(url) as conn:
        conn.execute("INSERT INTO meters (meter_id) SELECT unnest(%s::text[])", (ids,))
        for meter_id in ids:
            copy_frame(conn, meter_id, history)
    return len(history), uci.iloc[HISTORY_DAYS * 1440:]


def _simulated_history(env: dict, meters: int) -> int:
    """HISTORY_DAYS of `wattwatch ingest simulate` (one reading per meter a minute, ending now);
    returns how many readings that stored per meter."""
    end = pd.Timestamp.now(tz="UTC").floor("min")
    subprocess.run([*WATTWATCH, "ingest", "simulate", "--meters", str(meters), "--from",
                    (end - pd.Timedelta(days=HISTORY_DAYS)).isoformat(), "--to", end.isoformat()],
                   env=env, check=True, stdout=subprocess.DEVNULL)
    return HISTORY_DAYS * 1440


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=100)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--simulator", action="store_true",
                        help="history and live readings from `wattwatch ingest simulate` (its "
                             "default: one reading per meter a minute) instead of UCI readings "
                             "fed every second")
    args = parser.parse_args()
    admin = os.environ["WATTWATCH_DATABASE_URL"]
    name = f"ww_bench_live_{secrets.token_hex(4)}"
    url = create_database(admin, name)
    password = secrets.token_hex(8)
    settings = Settings(_env_file=None, database_url=url, jobs_password=password)
    owner_env = {**os.environ, "PYTHONPATH": str(PROJECT), "WATTWATCH_DATABASE_URL": url}
    detector = None
    try:
        with connect_url(url) as conn:
            migrate(conn, settings)
        started = time.monotonic()
        if args.simulator:
            ids = [meter_id("sim", number) for number in range(args.meters)]
            per_meter, live = _simulated_history(owner_env, args.meters), None
        else:
            ids = [f"m{number:04d}" for number in range(args.meters)]
            per_meter, live = _uci_history(url, ids, args.seconds)
        with psycopg.connect(url) as conn:
            version = registry.train(conn, meters(conn, ids[0])[0], settings, reason="benchmark")
            conn.execute(
                "INSERT INTO models (meter_id, algorithm, parameters, train_from, train_to,"
                " threshold, metrics, model, reason) SELECT m, algorithm, parameters, train_from,"
                " train_to, threshold, metrics, model, reason FROM models,"
                " unnest(%s::text[]) AS m WHERE version = %s", (ids[1:], version))
            conn.commit()
        print(f"{args.meters} meters with {HISTORY_DAYS} days each, stored with their models "
              f"in {time.monotonic() - started:.0f} s")
        env = {**os.environ, "PYTHONPATH": str(PROJECT),
               "WATTWATCH_DATABASE_URL": with_database(admin, name, "wattwatch_jobs", password)}
        detector = subprocess.Popen([*WATTWATCH, "detect", "run", "--metrics-port", "0"],
                                    env=env, stdout=subprocess.DEVNULL)
        with psycopg.connect(url, autocommit=True) as conn:
            started = time.monotonic()
            if not _wait(conn, "SELECT count(*) = %s FROM detector_watermarks", (args.meters,),
                         3600):
                raise SystemExit("the detector did not score the history within an hour")
            print(f"history ({args.meters * per_meter:,} readings) scored in "
                  f"{time.monotonic() - started:.0f} s")
            since = conn.execute("SELECT now()").fetchone()[0]
            if args.simulator:
                subprocess.run([*WATTWATCH, "ingest", "simulate", "--meters", str(args.meters),
                                "--duration", str(args.seconds), "--metrics-port", "0"],
                               env=owner_env, check=True, stdout=subprocess.DEVNULL)
                how = f"`ingest simulate`, {args.meters} meters for {args.seconds} s"
            else:
                for second in range(args.seconds):
                    tick = time.monotonic()
                    _feed(conn, ids, live.iloc[[second]])
                    time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
                how = f"{args.meters} meters x 1/s for {args.seconds} s"
            fed = conn.execute("SELECT count(*) FROM readings WHERE ingested_at >= %s",
                               (since,)).fetchone()[0]
            _wait(conn, "SELECT count(*) = %s FROM anomaly_scores s JOIN readings r"
                  " USING (meter_id, time) WHERE r.ingested_at >= %s", (fed, since),
                  SETTLE_SECONDS)
            p50, p95, most, scored = conn.execute(
                "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY lag),"
                " percentile_cont(0.95) WITHIN GROUP (ORDER BY lag), max(lag), count(lag) FROM"
                " (SELECT extract(epoch FROM s.scored_at - r.ingested_at) AS lag FROM readings r"
                "  LEFT JOIN anomaly_scores s USING (meter_id, time) WHERE r.ingested_at >= %s)"
                " AS l", (since,)).fetchone()
        detector.send_signal(signal.SIGINT)
        detector.wait(timeout=60)
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        print(f"live: {fed:,} readings fed ({how}), "
              f"{scored:,} scored; insert-to-score p50 {p50:.2f} s, p95 {p95:.2f} s, "
              f"max {most:.2f} s; detector CPU {usage.ru_utime + usage.ru_stime:.0f} s in all, "
              f"peak RSS {usage.ru_maxrss / 1024:.0f} MiB")
    finally:
        if detector is not None and detector.poll() is None:
            detector.send_signal(signal.SIGINT)
            detector.wait(timeout=60)
        drop_database(admin, url)


if __name__ == "__main__":
    main()
