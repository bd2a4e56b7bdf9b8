"""Read one meter's readings in a window, straight into numpy (timescale/arrays.py)."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import psycopg

from timescale.arrays import column_arrays
from wattwatch.fields import FIELDS

# Missing values come as NaN (never NULL), so every feature is one float array.
COLUMNS = ["time", *(f"coalesce({field}, 'NaN')" for field in FIELDS)]
WINDOW = "SELECT * FROM readings WHERE meter_id = %s AND time >= %s AND time < %s"


def read_window(conn: psycopg.Connection, meter_id: str, start: datetime,
                end: datetime) -> tuple[np.ndarray, np.ndarray]:
    """Unix seconds (n,) and feature values (n, features) of a meter's readings in
    [start, end), in time order, NaN where a value is missing."""
    micros, *values = column_arrays(conn, WINDOW, (meter_id, start, end), COLUMNS, order=["time"])
    seconds = micros.astype(np.int64) // 1_000_000
    return seconds, (np.column_stack(values).astype(np.float64) if len(seconds)
                     else np.empty((0, len(FIELDS))))
