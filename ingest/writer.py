"""Write parsed rows into `readings` in one transaction per batch, losing nothing.

Each batch ends up as loaded rows, duplicates (the same meter and time with the same values is
already stored) and `conflict` rejects (the same meter and time with other values: the first
stored row is kept). Rows go in by binary COPY straight into `readings` when no stored row of
the batch's meters falls in its time span (a first load, the common case); otherwise, or when a
concurrent writer got there first, through a temporary staging table and
INSERT ... ON CONFLICT DO NOTHING. Readings and rejects of a batch commit together, so a crash
loses at most the batch in flight and a rerun counts what was stored as duplicates.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg
from psycopg import errors, sql

from ingest.parse import COLUMNS, FIELD_NAMES, Reject

COPY_TYPES = ["text", "timestamptz"] + ["float8"] * len(FIELD_NAMES)
COLUMN_LIST = sql.SQL(", ").join(sql.Identifier(c) for c in COLUMNS)
STAGING = sql.SQL(
    "CREATE TEMP TABLE IF NOT EXISTS ingest_staging (line bigint, {columns}) ON COMMIT DELETE ROWS"
).format(columns=sql.SQL(", ").join(
    sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(t)) for c, t in zip(COLUMNS, COPY_TYPES)))


@dataclass
class BatchResult:
    loaded: int = 0
    duplicates: int = 0
    rejects: list[Reject] = field(default_factory=list)


def _sort_out(result: BatchResult, row: tuple, line: int | None, raw: str, first: tuple,
              where: str) -> None:
    """A row whose (meter, time) came before: a duplicate if the values match, else a conflict."""
    if first == row[2:]:
        result.duplicates += 1
        return
    diffs = "; ".join(f"{name} {a!r} stored, {b!r} here"
                      for name, a, b in zip(FIELD_NAMES, first, row[2:]) if a != b)
    result.rejects.append(Reject(line, raw, "conflict", f"meter {row[0]} at {row[1].isoformat()} "
                                 f"{where} with other values: {diffs}", row[0]))


def meter_spans(rows: list[tuple]) -> dict[str, tuple]:
    """Earliest and latest time of each meter in a batch: computed once, used for the span
    check, the ordering of parallel batches, the rollups and the summary."""
    if not rows:
        return {}
    if len({row[0] for row in rows}) == 1:  # the common case, at C speed
        times = [row[1] for row in rows]
        return {rows[0][0]: (min(times), max(times))}
    spans: dict[str, tuple] = {}
    for row in rows:
        meter, moment = row[0], row[1]
        span = spans.get(meter)
        if span is None:
            spans[meter] = (moment, moment)
        elif moment < span[0]:
            spans[meter] = (moment, span[1])
        elif moment > span[1]:
            spans[meter] = (span[0], moment)
    return spans


def register_meters(conn: psycopg.Connection, meters: set[str], timezone: str) -> None:
    """Add meters seen for the first time, in their own committed transaction (sorted, so two
    loaders never wait on each other in opposite orders)."""
    with conn.transaction():
        conn.execute("INSERT INTO meters (meter_id, timezone) SELECT unnest(%s::text[]), %s "
                     "ON CONFLICT (meter_id) DO NOTHING", (sorted(meters), timezone))


class ReadingWriter:
    """Writes batches of one source on one connection; their meters must be registered."""

    def __init__(self, conn: psycopg.Connection, source: str):
        self.conn = conn
        self.source = source

    def write(self, rows: list[tuple], lines: list[int | None], raws: list[str],
              rejects: list[Reject], spans: dict[str, tuple]) -> BatchResult:
        """Store one batch and its parse rejects in one transaction; `spans` is
        meter_spans(rows)."""
        result = BatchResult()
        unique_rows, unique_lines, unique_raws = self._dedupe(rows, lines, raws, result)
        with self.conn.transaction():
            if unique_rows:
                if self._span_is_empty(spans):
                    try:
                        with self.conn.transaction():  # savepoint: a concurrent writer may win
                            self._copy_into_readings(unique_rows)
                        result.loaded += len(unique_rows)
                    except errors.UniqueViolation:
                        self._stage_and_insert(unique_rows, unique_lines, unique_raws, result)
                else:
                    self._stage_and_insert(unique_rows, unique_lines, unique_raws, result)
            result.rejects[:0] = rejects
            self._write_rejects(result.rejects)
        return result

    def _dedupe(self, rows, lines, raws, result):
        """Keep the first row of each (meter, time) in the batch; later ones are duplicates or conflicts."""
        first: dict[tuple, int] = {}
        keep = []
        for index, row in enumerate(rows):
            key = (row[0], row[1])
            seen = first.get(key)
            if seen is None:
                first[key] = index
                keep.append(index)
            else:
                _sort_out(result, row, lines[index], raws[index], rows[seen][2:],
                          f"already read on line {lines[seen]}")
        if len(keep) == len(rows):
            return rows, lines, raws
        return [rows[i] for i in keep], [lines[i] for i in keep], [raws[i] for i in keep]

    def _span_is_empty(self, spans: dict[str, tuple]) -> bool:
        low = min(span[0] for span in spans.values())
        high = max(span[1] for span in spans.values())
        return not self.conn.execute(
            "SELECT EXISTS (SELECT 1 FROM readings WHERE meter_id = ANY(%s) AND time BETWEEN %s AND %s)",
            (sorted(spans), low, high)).fetchone()[0]

    def _copy_into_readings(self, rows: list[tuple]) -> None:
        with self.conn.cursor().copy(
                sql.SQL("COPY readings ({}) FROM STDIN (FORMAT BINARY)").format(COLUMN_LIST)) as copy:
            copy.set_types(COPY_TYPES)
            for row in rows:
                copy.write_row(row)

    def _stage_and_insert(self, rows, lines, raws, result: BatchResult) -> None:
        conn = self.conn
        conn.execute(STAGING)
        with conn.cursor().copy(sql.SQL("COPY ingest_staging (line, {}) FROM STDIN (FORMAT BINARY)")
                                .format(COLUMN_LIST)) as copy:
            copy.set_types(["int8", *COPY_TYPES])
            for index, row in enumerate(rows):
                copy.write_row((index, *row))  # batch position: lines may be None (simulator)
        times = [row[1] for row in rows]
        # Rows the insert skipped, with the stored row they collided with. The time bounds let
        # TimescaleDB look only at the batch's chunks.
        skipped = conn.execute(sql.SQL(
            """WITH inserted AS (
                   INSERT INTO readings ({columns}) SELECT {columns} FROM ingest_staging
                   ORDER BY line ON CONFLICT DO NOTHING RETURNING meter_id, time)
               SELECT s.line, r.meter_id IS NOT NULL, {stored}
               FROM ingest_staging s
               LEFT JOIN inserted i ON i.meter_id = s.meter_id AND i.time = s.time
               LEFT JOIN readings r ON r.meter_id = s.meter_id AND r.time = s.time
                    AND r.time BETWEEN %s AND %s
               WHERE i.meter_id IS NULL""").format(
                columns=COLUMN_LIST,
                stored=sql.SQL(", ").join(sql.Identifier("r", f) for f in FIELD_NAMES)),
            (min(times), max(times))).fetchall()
        result.loaded += len(rows) - len(skipped)
        unseen = [index for index, visible, *_ in skipped if not visible]
        if unseen:
            # Stored by a concurrent writer after this statement's snapshot: read them now.
            skipped = [row for row in skipped if row[1]] + conn.execute(sql.SQL(
                "SELECT s.line, true, {stored} FROM ingest_staging s JOIN readings r "
                "ON r.meter_id = s.meter_id AND r.time = s.time WHERE s.line = ANY(%s)").format(
                    stored=sql.SQL(", ").join(sql.Identifier("r", f) for f in FIELD_NAMES)),
                (unseen,)).fetchall()
        for index, _visible, *values in skipped:
            _sort_out(result, rows[index], lines[index], raws[index], tuple(values), "is already stored")

    def _write_rejects(self, rejects: list[Reject]) -> None:
        if not rejects:
            return
        with self.conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO ingest_rejects (source, line_number, raw, reason, detail, meter_id) "
                "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                [(self.source, r.line, r.raw.replace("\x00", "\\x00"), r.reason, r.detail, r.meter)
                 for r in rejects])  # PostgreSQL text cannot hold NUL
