"""Query results straight into numpy: the server aggregates each column into one binary array,
which numpy parses in one go, with no Python object per row (the detector's and drift's reads)."""

from __future__ import annotations

import struct

import numpy as np
import psycopg
from psycopg.adapt import Loader
from psycopg.pq import Format

from timescale.binary_copy import POSTGRES_EPOCH

# Element types read (binary: big-endian), with what is added to each value: timestamptz[]
# (microseconds since 2000-01-01 UTC, turned into microseconds since the Unix epoch), float8[],
# int8[].
ELEMENTS = {1185: (np.dtype(">i8"), POSTGRES_EPOCH * 1_000_000), 1022: (np.dtype(">f8"), 0),
            1016: (np.dtype(">i8"), 0)}


class _ArrayLoader(Loader):
    """A one-dimensional binary array of fixed-size elements without NULLs, as a numpy array:
    after a 20-byte header, each element is its length (int32) and its value."""

    format = Format.BINARY
    element: np.dtype
    offset: int

    def load(self, data) -> np.ndarray:
        dimensions, has_null, _ = struct.unpack_from(">iii", data)
        native = self.element.newbyteorder("=")
        if dimensions == 0:
            return np.empty(0, native)
        if dimensions != 1 or has_null:
            raise ValueError("expected a one-dimensional array without NULLs")
        (count,) = struct.unpack_from(">i", data, 12)
        items = np.frombuffer(data, np.dtype([("length", ">i4"), ("value", self.element)]),
                              count, 20)
        values = items["value"].astype(native)
        if self.offset:
            values += self.offset
        return values


LOADERS = {oid: type(f"ArrayLoader{oid}", (_ArrayLoader,), {"element": element, "offset": offset})
           for oid, (element, offset) in ELEMENTS.items()}


def column_arrays(conn: psycopg.Connection, query: str, params, columns: list[str],
                  order: list[str]) -> list[np.ndarray]:
    """One numpy array per expression of `columns` over the rows of `query` (bigint,
    timestamptz or float8, never NULL), in `order`: timestamps as microseconds since the Unix
    epoch. An empty result gives empty arrays."""
    by = ", ".join(order)
    aggregates = ", ".join(f"array_agg({column} ORDER BY {by})" for column in columns)
    cursor = conn.cursor(binary=True)
    for oid, loader in LOADERS.items():
        cursor.adapters.register_loader(oid, loader)
    row = cursor.execute(f"SELECT {aggregates} FROM ({query}) AS rows", params).fetchone()
    return [np.empty(0) if array is None else array for array in row]
