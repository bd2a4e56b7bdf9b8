"""Parsed rows of a file held as columns, in file order, and their binary COPY payload built by
numpy: a file's rows go to the server without a Python object per row. The writer's rarer
paths (duplicates in a batch, rows already stored, rows the server refuses) take them as rows."""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from ingest.parse import FIELD_NAMES
from ingest.timestamps import EPOCH
from timescale.binary_copy import HEADER, POSTGRES_EPOCH, TRAILER

MICROSECOND = timedelta(microseconds=1)
N_FIELDS = len(FIELD_NAMES)
NULL = struct.pack(">i", -1)
TO_POSTGRES = POSTGRES_EPOCH * 1_000_000  # Unix microseconds to PostgreSQL's


def micros(moment: datetime) -> int:
    """An aware datetime as microseconds since 1970-01-01 UTC."""
    return (moment - EPOCH) // MICROSECOND


def moment(value: int) -> datetime:
    return EPOCH + timedelta(microseconds=value)


@dataclass
class Columns:
    """Rows as columns: meter ids by code (`meters[code]`), times in microseconds since
    1970-01-01 UTC, the fields in FIELD_NAMES order (NaN: NULL, never a value: the parser
    rejects NaN), the line numbers and the raw lines."""

    meters: list[str]
    codes: np.ndarray  # int32 per row
    times: np.ndarray  # int64 per row
    values: np.ndarray  # float64, rows x fields
    lines: np.ndarray  # int64 per row
    raws: list[str]

    def __len__(self) -> int:
        return len(self.times)

    def part(self, start: int, stop: int) -> Columns:
        return Columns(self.meters, self.codes[start:stop], self.times[start:stop],
                       self.values[start:stop], self.lines[start:stop], self.raws[start:stop])

    @staticmethod
    def join(parts: list[Columns]) -> Columns:
        """One Columns of several in order, the meters coded anew."""
        if len(parts) == 1:
            return parts[0]
        meters: dict[str, int] = {}
        codes = []
        for part in parts:
            recode = np.array([meters.setdefault(m, len(meters)) for m in part.meters], np.int32)
            codes.append(recode[part.codes] if len(part) else part.codes)
        return Columns(list(meters), np.concatenate(codes),
                       np.concatenate([p.times for p in parts]),
                       np.concatenate([p.values for p in parts]),
                       np.concatenate([p.lines for p in parts]),
                       [raw for p in parts for raw in p.raws])

    def _by_meter(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Row order grouped by meter (stable), the codes present and where each group starts."""
        order = np.argsort(self.codes, kind="stable")
        grouped = self.codes[order]
        starts = np.flatnonzero(np.r_[True, grouped[1:] != grouped[:-1]])
        return order, grouped[starts], starts

    def spans(self) -> dict[str, tuple[datetime, datetime]]:
        """Earliest and latest time of each meter, as meter_spans gives them for rows."""
        if not len(self):
            return {}
        order, present, starts = self._by_meter()
        times = self.times[order]
        low, high = np.minimum.reduceat(times, starts), np.maximum.reduceat(times, starts)
        return {self.meters[code]: (moment(int(a)), moment(int(b)))
                for code, a, b in zip(present.tolist(), low.tolist(), high.tolist())}

    def keys_unique(self) -> bool:
        """Whether no (meter, time) comes twice."""
        order = np.lexsort((self.times, self.codes))
        codes, times = self.codes[order], self.times[order]
        return not np.any((codes[1:] == codes[:-1]) & (times[1:] == times[:-1]))

    def rows(self) -> tuple[list[tuple], list[int], list[str]]:
        """The rows as the parser makes them (meter, time, *fields; None for NULL), their line
        numbers and raw lines."""
        values = self.values.astype(object)
        values[np.isnan(self.values)] = None
        meters = [self.meters[code] for code in self.codes.tolist()]
        times = [moment(value) for value in self.times.tolist()]
        rows = [(meter, time, *fields) for meter, time, fields in zip(meters, times, values.tolist())]
        return rows, self.lines.tolist(), list(self.raws)

    def copy_payload(self) -> bytes:
        """The rows as one binary COPY of (meter_id, time, *FIELD_NAMES)."""
        parts = [HEADER]
        times = self.times - TO_POSTGRES
        complete = ~np.isnan(self.values).any(axis=1)
        order, present, starts = self._by_meter()
        ends = np.r_[starts[1:], len(order)]
        for code, start, end in zip(present.tolist(), starts.tolist(), ends.tolist()):
            meter = self.meters[code].encode()
            rows = order[start:end]
            full = rows[complete[rows]]
            if len(full):
                parts.append(_full_rows(meter, times[full], self.values[full]))
            for row in rows[~complete[rows]].tolist():
                parts.append(_row_with_nulls(meter, int(times[row]), self.values[row]))
        parts.append(TRAILER)
        return b"".join(parts)


def _full_rows(meter: bytes, times: np.ndarray, values: np.ndarray) -> bytes:
    """Rows without NULL of one meter, as whole arrays: each field a length and a big-endian
    value."""
    fields = [("n", ">i2"), ("lm", ">i4"), ("meter", f"S{len(meter)}"), ("lt", ">i4"), ("time", ">i8")]
    for index in range(N_FIELDS):
        fields += [(f"l{index}", ">i4"), (f"v{index}", ">f8")]
    records = np.empty(len(times), np.dtype(fields))
    records["n"], records["lm"], records["meter"] = 2 + N_FIELDS, len(meter), meter
    records["lt"], records["time"] = 8, times
    for index in range(N_FIELDS):
        records[f"l{index}"], records[f"v{index}"] = 8, values[:, index]
    return records.tobytes()


def _row_with_nulls(meter: bytes, time: int, values: np.ndarray) -> bytes:
    fields = [struct.pack(">hi", 2 + N_FIELDS, len(meter)), meter, struct.pack(">iq", 8, time)]
    fields += [NULL if math.isnan(value) else struct.pack(">id", 8, value) for value in values.tolist()]
    return b"".join(fields)
