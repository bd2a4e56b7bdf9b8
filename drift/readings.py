"""Read one meter's readings in a window, straight into numpy (binary COPY, no Python rows)."""

from __future__ import annotations

import struct
from datetime import datetime

import numpy as np
import psycopg
from psycopg import sql

from timescale.binary_copy import POSTGRES_EPOCH, SIGNATURE
from wattwatch.errors import WattwatchError
from wattwatch.fields import FIELDS

# Binary COPY rows: field count, then (length, value) per field: time as microseconds since
# 2000-01-01 UTC, then each feature as float8. Missing values come as NaN (never NULL), so every
# row has the same size and the whole buffer is one numpy structured array.
ROW = np.dtype([("fields", ">i2"), ("time_length", ">i4"), ("time", ">i8")]
               + [item for index in range(len(FIELDS))
                  for item in ((f"length_{index}", ">i4"), (f"value_{index}", ">f8"))])


def read_window(conn: psycopg.Connection, meter_id: str, start: datetime,
                end: datetime) -> tuple[np.ndarray, np.ndarray]:
    """Unix seconds (n,) and feature values (n, features) of a meter's readings in
    [start, end), NaN where a value is missing; rows in no particular order."""
    columns = sql.SQL(", ").join(
        sql.SQL("coalesce({}, 'NaN')").format(sql.Identifier(field)) for field in FIELDS)
    query = sql.SQL("COPY (SELECT time, {} FROM readings WHERE meter_id = {} AND time >= {} "
                    "AND time < {}) TO STDOUT (FORMAT BINARY)").format(
        columns, sql.Literal(meter_id), sql.Literal(start), sql.Literal(end))
    with conn.cursor() as cur, cur.copy(query) as copy:
        data = b"".join(bytes(block) for block in copy)
    return parse_binary_copy(data, meter_id)


def parse_binary_copy(data: bytes, meter_id: str) -> tuple[np.ndarray, np.ndarray]:
    if not data.startswith(SIGNATURE):
        raise WattwatchError(f"reading meter {meter_id!r}: the server's COPY output is not binary COPY")
    (extension,) = struct.unpack_from(">i", data, len(SIGNATURE) + 4)
    body = memoryview(data)[len(SIGNATURE) + 8 + extension:-2]  # the trailer is int16 -1
    if len(body) % ROW.itemsize:
        raise WattwatchError(f"reading meter {meter_id!r}: COPY rows are not {ROW.itemsize} bytes each")
    rows = np.frombuffer(body, dtype=ROW)
    seconds = rows["time"] // 1_000_000 + POSTGRES_EPOCH
    values = np.column_stack([rows[f"value_{index}"] for index in range(len(FIELDS))]) \
        if len(rows) else np.empty((0, len(FIELDS)))
    return seconds.astype(np.int64), values.astype(np.float64)
