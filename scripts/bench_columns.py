#!/usr/bin/env python3
"""Columnar transfer benchmark: our PostgreSQL <-> numpy paths against Apache Arrow's ADBC
PostgreSQL driver (adbc-driver-postgresql with pyarrow), on the same rows, in one process.

Measures, best of --repeat runs each, as seconds and as a ratio ours / ADBC (below 1: ours is
faster):
- detector reads: `detector.readings.window` (binary arrays) against ADBC's fetch_arrow_table of
  the same SELECT turned into the same pandas frame;
- drift reads: `drift.readings.read_window` (binary arrays) against ADBC into the same arrays;
- bulk writes: psycopg binary COPY of numpy columns against ADBC's adbc_ingest of the same
  columns, into the same unlogged staging table.

ADBC is not a project dependency; install it beside the project to run this:
    pip install --target /tmp/adbc adbc-driver-postgresql pyarrow
    WATTWATCH_DATABASE_URL=<superuser url> PYTHONPATH=/tmp/adbc .venv/bin/python scripts/bench_columns.py
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

import adbc_driver_postgresql.dbapi as adbc  # noqa: E402

from detector.readings import COLUMNS, Meter, window  # noqa: E402
from drift.readings import read_window  # noqa: E402
from timescale.binary_copy import HEADER, POSTGRES_EPOCH, TRAILER  # noqa: E402
from timescale.connect import connect_url  # noqa: E402
from timescale.migrate import migrate  # noqa: E402
from tests.support.scratch import create_database, drop_database  # noqa: E402
from wattwatch.settings import Settings  # noqa: E402

START = datetime(2024, 1, 1, tzinfo=timezone.utc)
STAGING = ("CREATE UNLOGGED TABLE IF NOT EXISTS bench_staging (time timestamptz, "
           + ", ".join(f"{c} float8" for c in COLUMNS) + ")")


def best(repeat: int, work) -> float:
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        work()
        times.append(time.perf_counter() - began)
    return min(times)


def fill(conn: psycopg.Connection, meters: int, days: int) -> None:
    values = ", ".join(f"{1 + index} + sin(n / {60 + index}.0)" for index in range(len(COLUMNS)))
    for meter in range(meters):
        conn.execute("INSERT INTO meters (meter_id) VALUES (%s)", (f"m{meter}",))
        conn.execute(f"INSERT INTO readings (time, meter_id, {', '.join(COLUMNS)})"
                     f" SELECT %s + n * interval '1 minute', %s, {values}"
                     " FROM generate_series(0, %s) AS n", (START, f"m{meter}", days * 1440 - 1))
    conn.commit()
    conn.execute("ANALYZE readings")
    conn.commit()


def adbc_frame(db, meter: str, zone: str) -> pd.DataFrame:
    """The same frame as `window`, through ADBC."""
    with db.cursor() as cursor:
        cursor.execute(f"SELECT time, ingested_at, {', '.join(COLUMNS)} FROM readings"
                       f" WHERE meter_id = '{meter}' ORDER BY time")
        table = cursor.fetch_arrow_table()
    frame = pd.DataFrame({c: table.column(c).to_numpy(zero_copy_only=False).astype(float)
                          for c in COLUMNS},
                         index=pd.DatetimeIndex(table.column("time").to_pandas()).tz_convert(zone))
    frame.insert(0, "ingested_at", table.column("ingested_at").to_pandas())
    return frame


def adbc_window(db, meter: str, start: datetime, end: datetime) -> tuple[np.ndarray, np.ndarray]:
    """The same arrays as `read_window`, through ADBC."""
    columns = ", ".join(f"coalesce({c}, 'NaN')" for c in COLUMNS)
    with db.cursor() as cursor:
        cursor.execute(f"SELECT time, {columns} FROM readings WHERE meter_id = '{meter}'"
                       f" AND time >= '{start.isoformat()}' AND time < '{end.isoformat()}'")
        table = cursor.fetch_arrow_table()
    seconds = table.column(0).cast("int64").to_numpy() // 1_000_000
    return seconds, np.column_stack([table.column(i).to_numpy() for i in range(1, table.num_columns)])


def copy_columns(conn: psycopg.Connection, t: np.ndarray, values: np.ndarray) -> None:
    """Binary COPY of time (Unix microseconds) and float8 columns, built by numpy."""
    row = np.dtype([("fields", ">i2"), ("tl", ">i4"), ("t", ">i8")]
                   + [item for i in range(values.shape[1]) for item in ((f"l{i}", ">i4"), (f"v{i}", ">f8"))])
    rows = np.empty(len(t), row)
    rows["fields"] = 1 + values.shape[1]
    rows["tl"] = 8
    rows["t"] = t - POSTGRES_EPOCH * 1_000_000
    for i in range(values.shape[1]):
        rows[f"l{i}"] = 8
        rows[f"v{i}"] = values[:, i]
    with conn.cursor().copy("COPY bench_staging FROM STDIN WITH (FORMAT binary)") as copy:
        copy.write(HEADER + rows.tobytes() + TRAILER)
    conn.commit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=10)
    parser.add_argument("--days", type=int, default=28, help="one-minute readings per meter")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    admin = os.environ["WATTWATCH_DATABASE_URL"]
    url = create_database(admin, f"ww_bench_columns_{secrets.token_hex(4)}")
    try:
        with connect_url(url) as conn:
            migrate(conn, Settings(_env_file=None, database_url=url))
            fill(conn, args.meters, args.days)
            conn.execute(STAGING)
            conn.commit()
            rows = args.meters * args.days * 1440
            meters = [Meter(f"m{m}", "Europe/Paris", 230.0, None, "EUR") for m in range(args.meters)]
            end = START + timedelta(days=args.days)
            with adbc.connect(url) as db:
                figures = {
                    "detector read": (
                        best(args.repeat, lambda: [window(conn, m, None, None) for m in meters]),
                        best(args.repeat, lambda: [adbc_frame(db, m.meter_id, m.timezone) for m in meters])),
                    "drift read": (
                        best(args.repeat, lambda: [read_window(conn, m.meter_id, START, end) for m in meters]),
                        best(args.repeat, lambda: [adbc_window(db, m.meter_id, START, end) for m in meters])),
                }
                t = START.timestamp() * 1_000_000 + np.arange(rows, dtype=np.int64) * 60_000_000
                values = np.random.default_rng(0).random((rows, len(COLUMNS)))
                import pyarrow as pa
                arrow = pa.table({"time": pa.array(t.astype(np.int64), pa.timestamp("us", tz="UTC")),
                                  **{c: values[:, i] for i, c in enumerate(COLUMNS)}})

                def adbc_ingest():
                    with db.cursor() as cursor:
                        cursor.adbc_ingest("bench_staging", arrow, mode="append")
                    db.commit()

                figures["bulk write"] = (
                    best(args.repeat, lambda: copy_columns(conn, t.astype(np.int64), values)),
                    best(args.repeat, adbc_ingest))
                stored = conn.execute("SELECT count(*) FROM bench_staging").fetchone()[0]
                assert stored == 2 * args.repeat * rows, stored
        print(f"{rows:,} readings ({args.meters} meters x {args.days} days of one-minute readings),"
              f" best of {args.repeat}")
        print("| path | ours s | ADBC s | ours / ADBC |")
        print("|---|---|---|---|")
        for name, (ours, theirs) in figures.items():
            print(f"| {name} | {ours:.3f} | {theirs:.3f} | {ours / theirs:.2f} |")
    finally:
        drop_database(admin, url)


if __name__ == "__main__":
    main()
