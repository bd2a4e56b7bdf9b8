"""Reading readings and meter facts out of TimescaleDB for the detector."""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd
import psycopg

from ingest.fields import FIELDS

COLUMNS = list(FIELDS)
SELECT = ("SELECT (extract(epoch FROM time) * 1e6)::bigint AS t,"
          " (extract(epoch FROM ingested_at) * 1e6)::bigint AS i, " + ", ".join(COLUMNS) +
          " FROM readings")
# Readings travel as one binary array per column: far faster than a Python tuple per row.
AS_ARRAYS = ("SELECT array_agg(t ORDER BY t), array_agg(i ORDER BY t), " +
             ", ".join(f"array_agg({c} ORDER BY t)" for c in COLUMNS) + " FROM ({}) AS rows")


@dataclass(frozen=True)
class Meter:
    meter_id: str
    timezone: str
    nominal_voltage_v: float
    tariff_per_kwh: float | None
    currency: str


def meters(conn: psycopg.Connection, meter_id: str | None = None) -> list[Meter]:
    rows = conn.execute(
        "SELECT meter_id, timezone, nominal_voltage_v, tariff_per_kwh, currency FROM meters"
        " WHERE %(m)s::text IS NULL OR meter_id = %(m)s ORDER BY meter_id", {"m": meter_id}
    ).fetchall()
    return [Meter(*row) for row in rows]


def query_frame(conn: psycopg.Connection, query: str, params: tuple, timezone: str) -> pd.DataFrame:
    """The rows of `query` (a SELECT of SELECT's columns) as a frame in time order, indexed by
    local time (the meter's zone, for its cycles), with `ingested_at` (UTC) and our fields."""
    arrays = conn.cursor(binary=True).execute(AS_ARRAYS.format(query), params).fetchone()
    times = np.array(arrays[0] or [], dtype=np.int64)
    frame = pd.DataFrame({c: np.array(a or [], dtype=float) for c, a in zip(COLUMNS, arrays[2:])},
                         index=pd.DatetimeIndex(pd.to_datetime(times, unit="us", utc=True))
                         .tz_convert(timezone))
    frame.insert(0, "ingested_at", pd.to_datetime(np.array(arrays[1] or [], dtype=np.int64),
                                                  unit="us", utc=True))
    return frame


def fields_present(frame: pd.DataFrame) -> list[str]:
    """The fields with at least one value (a meter without voltage has no voltage column)."""
    return [c for c in COLUMNS if c in frame and np.isfinite(frame[c].to_numpy(float)).any()]


def window(conn: psycopg.Connection, meter: Meter, start: datetime | None,
           end: datetime | None) -> pd.DataFrame:
    """The meter's readings with start <= time < end (open bounds when None), in time order."""
    return query_frame(
        conn, SELECT + " WHERE meter_id = %s AND (%s::timestamptz IS NULL OR time >= %s)"
        " AND (%s::timestamptz IS NULL OR time < %s) ORDER BY time",
        (meter.meter_id, start, start, end, end), meter.timezone)


def copy_frame(conn: psycopg.Connection, meter_id: str, frame: pd.DataFrame) -> int:
    """Store a frame of readings (UTC or zoned DatetimeIndex, our field columns) by COPY, for
    tests and benchmarks that need data in place without going through `wattwatch ingest`."""
    columns = [c for c in COLUMNS if c in frame]
    table = frame[columns].copy()
    table.insert(0, "meter_id", meter_id)
    table.insert(0, "time", frame.index.tz_convert("UTC").strftime("%Y-%m-%d %H:%M:%S.%f+00"))
    buffer = io.StringIO()
    table.to_csv(buffer, index=False, header=False, na_rep="")
    with conn.cursor().copy("COPY readings (time, meter_id, " + ", ".join(columns) + ")"
                            " FROM STDIN WITH (FORMAT csv)") as copy:
        copy.write(buffer.getvalue())
    return len(table)
