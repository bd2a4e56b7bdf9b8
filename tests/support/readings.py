"""Readings put in place by COPY, for tests and benchmarks that need data without going through
`wattwatch ingest`."""

from __future__ import annotations

import io

import pandas as pd
import psycopg

from detector.readings import COLUMNS


def copy_frame(conn: psycopg.Connection, meter_id: str, frame: pd.DataFrame) -> int:
    """Store a frame of readings (UTC or zoned DatetimeIndex, our field columns) by COPY."""
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
