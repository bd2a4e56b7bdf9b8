"""Reading readings and meter facts out of TimescaleDB for the detector."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd
import psycopg

from detector.seasonality import epoch_ns
from timescale.arrays import column_arrays
from wattwatch.fields import FIELDS

COLUMNS = list(FIELDS)
READING = "time AS t, ingested_at AS i, " + ", ".join(COLUMNS)
SELECT = "SELECT " + READING + " FROM readings"
# Readings travel as one binary array per column (timescale/arrays.py), aggregated in the time
# order the query already walks in, so the server sorts nothing of its own.
# Several meters' readings in one query: for each meter (numbered n from 1), the `context`
# readings before `first` and then up to %s readings from `first` on stored by `newest`.
GROUP_SELECT = (
    "SELECT m.n, r.* FROM unnest(%s::text[], %s::timestamptz[], %s::timestamptz[], %s::int[])"
    " WITH ORDINALITY AS m(meter_id, first, newest, context, n) CROSS JOIN LATERAL ("
    "(" + SELECT + " WHERE meter_id = m.meter_id AND time < m.first ORDER BY time DESC"
    " LIMIT m.context) UNION ALL (" + SELECT + " WHERE meter_id = m.meter_id"
    " AND time >= m.first AND ingested_at <= m.newest ORDER BY time LIMIT %s)) AS r")
# Several meters' new readings alone (n, first and newest as above), stored after `since`:
# one scan of the ingested_at index, its time bounded by a constant (the oldest `first`) so
# that only the chunks that can hold them are planned and read.
NEW_SELECT = (
    "SELECT m.n, r.* FROM unnest(%(meters)s::text[], %(firsts)s::timestamptz[],"
    " %(newests)s::timestamptz[]) WITH ORDINALITY AS m(meter_id, first, newest, n) JOIN ("
    "SELECT meter_id AS id, time AS at, ingested_at AS stored, " + READING + " FROM readings"
    " WHERE time >= %(earliest)s AND ingested_at > %(since)s AND ingested_at <= %(newest)s)"
    " AS r ON r.id = m.meter_id AND r.at >= m.first AND r.stored <= m.newest")

# Readings a fresh bulk load brought have no planner statistics yet: the planner then takes
# every reading after the start by bitmap scans and sorts them all, to keep the first few.
# Without bitmap scans it walks the (meter_id, time) index in time order up to the limit (SET
# LOCAL: for the rest of the reading's transaction).
ORDERED_SCANS = "SET LOCAL enable_bitmapscan = off"


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


def _arrays(conn: psycopg.Connection, query: str, params, keys: tuple[str, ...] = ()):
    """One numpy array per column of `query` (keys, t, i, our fields; NaN where a value is
    missing), in the order of keys then time."""
    return column_arrays(conn, query, params,
                         [*keys, "t", "i", *(f"coalesce({c}, 'NaN')" for c in COLUMNS)],
                         order=[*keys, "t"])


def _columns(arrays) -> list[np.ndarray]:
    """The fetched arrays of (t, i, our fields) as t and i in microseconds since the epoch and
    the fields as floats."""
    return [*(a.astype(np.int64, copy=False) for a in arrays[:2]),
            *(a.astype(float, copy=False) for a in arrays[2:])]


def _frame(columns: list[np.ndarray], timezone: str) -> pd.DataFrame:
    """Columns (t, i, our fields) as a frame indexed by local time (the meter's zone, for its
    cycles), with `ingested_at` (UTC) and our fields."""
    frame = pd.DataFrame(dict(zip(COLUMNS, columns[2:])),
                         index=pd.DatetimeIndex(pd.to_datetime(columns[0], unit="us", utc=True))
                         .tz_convert(timezone))
    frame.insert(0, "ingested_at", pd.to_datetime(columns[1], unit="us", utc=True))
    return frame


def query_frame(conn: psycopg.Connection, query: str, params: tuple, timezone: str) -> pd.DataFrame:
    """The rows of `query` (a SELECT of SELECT's columns) as a frame in time order."""
    conn.execute(ORDERED_SCANS)
    return _frame(_columns(_arrays(conn, query, params)), timezone)


@dataclass(frozen=True)
class Rows:
    """A meter's readings as arrays, in time order: time and ingested_at in microseconds since
    the epoch, and one column per field (COLUMNS)."""

    t: np.ndarray
    i: np.ndarray
    values: np.ndarray  # readings x COLUMNS

    def __len__(self) -> int:
        return len(self.t)

    @classmethod
    def of(cls, frame: pd.DataFrame) -> "Rows":
        """The rows of a frame as `query_frame` returns it."""
        return cls(epoch_ns(frame.index) // 1000,
                   epoch_ns(pd.DatetimeIndex(frame["ingested_at"])) // 1000,
                   frame[COLUMNS].to_numpy(float))

    def frame(self, timezone: str) -> pd.DataFrame:
        return _frame([self.t, self.i, *self.values.T], timezone)

    def then(self, later: "Rows") -> "Rows":
        """These readings followed by later ones."""
        return Rows(np.concatenate([self.t, later.t]), np.concatenate([self.i, later.i]),
                    np.concatenate([self.values, later.values]))

    def tail(self, n: int) -> "Rows":
        start = max(len(self) - n, 0)
        return Rows(self.t[start:], self.i[start:], self.values[start:])


def group_rows(conn: psycopg.Connection, wanted: list[tuple[Meter, datetime, datetime, int]],
               limit: int) -> list[Rows]:
    """For each (meter, first, newest, context) wanted: its `context` readings before `first`
    and up to `limit` readings from `first` on stored by `newest`, in time order; all meters in
    one query."""
    if not wanted:
        return []
    columns = list(zip(*[(m.meter_id, first, newest, context) for m, first, newest, context in wanted]))
    return _split(_arrays(conn, GROUP_SELECT, (*map(list, columns), limit), keys=("n",)),
                  len(wanted))


def new_rows(conn: psycopg.Connection, wanted: list[tuple[Meter, datetime, datetime]],
             since: datetime) -> list[Rows]:
    """For each (meter, first, newest) wanted: its readings from `first` on stored after
    `since` and by `newest`, in time order; all meters in one query."""
    if not wanted:
        return []
    meters, firsts, newests = (list(column) for column in zip(*wanted))
    params = {"meters": [meter.meter_id for meter in meters], "firsts": firsts,
              "newests": newests, "earliest": min(firsts), "since": since,
              "newest": max(newests)}
    return _split(_arrays(conn, NEW_SELECT, params, keys=("n",)), len(wanted))


def _split(arrays, count: int) -> list[Rows]:
    """The fetched arrays (n, t, i, our fields) as each of `count` meters' rows (n from 1)."""
    numbers = arrays[0]
    t, i, *fields = _columns(arrays[1:])
    values = np.column_stack(fields)
    edges = np.searchsorted(numbers, np.arange(1, count + 2))
    return [Rows(t[a:b], i[a:b], values[a:b]) for a, b in zip(edges[:-1], edges[1:])]


def fields_present(frame: pd.DataFrame) -> list[str]:
    """The fields with at least one value (a meter without voltage has no voltage column)."""
    return [c for c in COLUMNS if c in frame and np.isfinite(frame[c].to_numpy(float)).any()]


# Several meters' readings with start <= time < stop, one meter (numbered n from 1) after the
# other.
WINDOWS_SELECT = (
    "SELECT m.n, r.* FROM unnest(%s::text[], %s::timestamptz[], %s::timestamptz[])"
    " WITH ORDINALITY AS m(meter_id, start, stop, n) CROSS JOIN LATERAL ("
    + SELECT + " WHERE meter_id = m.meter_id AND time >= m.start AND time < m.stop"
    " ORDER BY time) AS r")


def windows(conn: psycopg.Connection,
            wanted: list[tuple[Meter, datetime, datetime]]) -> list[pd.DataFrame]:
    """For each (meter, start, stop) wanted, its readings with start <= time < stop as
    `window` returns them; all meters in one query."""
    if not wanted:
        return []
    meters, starts, stops = (list(column) for column in zip(*wanted))
    conn.execute(ORDERED_SCANS)
    parts = _split(_arrays(conn, WINDOWS_SELECT, ([m.meter_id for m in meters], starts, stops),
                           keys=("n",)), len(wanted))
    return [rows.frame(meter.timezone) for meter, rows in zip(meters, parts)]


def window(conn: psycopg.Connection, meter: Meter, start: datetime | None,
           end: datetime | None) -> pd.DataFrame:
    """The meter's readings with start <= time < end (open bounds when None), in time order."""
    return query_frame(
        conn, SELECT + " WHERE meter_id = %s AND (%s::timestamptz IS NULL OR time >= %s)"
        " AND (%s::timestamptz IS NULL OR time < %s) ORDER BY time",
        (meter.meter_id, start, start, end, end), meter.timezone)
