"""Write parsed rows into `readings` in one transaction per batch, losing nothing.

Each batch ends up as loaded rows, duplicates (the same meter and time with the same values is
already stored) and `conflict` rejects (the same meter and time with other values: the first
stored row is kept). Rows go in by binary COPY straight into `readings` when no stored row of
the batch's meters falls in its time span (a first load, the common case); otherwise, or when a
concurrent writer got there first, through a temporary staging table and
INSERT ... ON CONFLICT DO NOTHING. Readings and rejects of a batch commit together, so a crash
loses at most the batch in flight and a rerun counts what was stored as duplicates.

When the server refuses a batch for a row's data (a DataError or an IntegrityError other than
the key, e.g. a constraint added to readings), the batch is halved until the refused rows are
found: the others are stored, each refused row is a `database_refused` reject with the first
line of the server's message. The fast path (COPY of a batch the server takes) still costs
one savepoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg
from psycopg import errors, sql

from ingest.columns import Columns
from ingest.parse import COLUMNS, FIELD_NAMES, Reject
from wattwatch.errors import first_line

COPY_TYPES = ["text", "timestamptz"] + ["float8"] * len(FIELD_NAMES)
COLUMN_LIST = sql.SQL(", ").join(sql.Identifier(c) for c in COLUMNS)
STAGING = sql.SQL(
    "CREATE TEMP TABLE IF NOT EXISTS ingest_staging (line bigint, {columns}) ON COMMIT DELETE ROWS"
).format(columns=sql.SQL(", ").join(
    sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(t)) for c, t in zip(COLUMNS, COPY_TYPES)))
# What the server (or psycopg, for a NUL in a text parameter) raises when it refuses a row for
# its data; a UniqueViolation on the key is a duplicate, handled before this.
REFUSED = (psycopg.DataError, psycopg.IntegrityError)


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


def as_rows(rows: list[tuple] | Columns, lines: list[int | None] | None, raws: list[str] | None
            ) -> tuple[list[tuple], list[int | None], list[str]]:
    """A batch's rows as tuples, with their line numbers and raw lines."""
    return rows.rows() if isinstance(rows, Columns) else (rows, lines, raws)


def register_meters(conn: psycopg.Connection, meters: set[str], timezone: str) -> dict[str, str]:
    """Add meters seen for the first time, in their own committed transaction (sorted, so two
    loaders never wait on each other in opposite orders). Returns the meters the server refused,
    with the first line of its message (then each meter is added on its own)."""
    insert = ("INSERT INTO meters (meter_id, timezone) SELECT unnest(%s::text[]), %s "
              "ON CONFLICT (meter_id) DO NOTHING")
    try:
        with conn.transaction():
            conn.execute(insert, (sorted(meters), timezone))
        return {}
    except REFUSED:
        pass
    refused = {}
    for meter in sorted(meters):
        try:
            with conn.transaction():
                conn.execute(insert, ([meter], timezone))
        except REFUSED as exc:
            refused[meter] = first_line(exc)
    return refused


class ReadingWriter:
    """Writes batches of one source on one connection; their meters must be registered."""

    def __init__(self, conn: psycopg.Connection, source: str, source_sha256: str | None = None):
        self.conn = conn
        self.source = source
        self.source_sha256 = source_sha256  # with source, line and meter: a reject's key
        self._staged = False  # ingest_staging holds rows of this transaction

    def write(self, rows: list[tuple] | Columns, lines: list[int | None] | None, raws: list[str] | None,
              rejects: list[Reject], spans: dict[str, tuple]) -> BatchResult:
        """Store one batch and its parse rejects in one transaction; `spans` is
        meter_spans(rows)."""
        result = BatchResult()
        if isinstance(rows, Columns) and rows.keys_unique():
            unique_rows, unique_lines, unique_raws = rows, lines, raws
        else:
            unique_rows, unique_lines, unique_raws = self._dedupe(*as_rows(rows, lines, raws), result)
        with self.conn.transaction():
            self._staged = False
            if unique_rows:
                copy = self._span_is_empty(spans)
                try:
                    self._insert(unique_rows, unique_lines, unique_raws, result, copy)
                except REFUSED as exc:
                    self._isolate(*as_rows(unique_rows, unique_lines, unique_raws), result, copy, exc)
            result.rejects[:0] = rejects
            self._write_rejects(result.rejects)
        return result

    def _insert(self, rows, lines, raws, result: BatchResult, copy: bool) -> None:
        """Store rows in a savepoint: by COPY when `copy` (no stored row in the batch's span)
        unless a concurrent writer got there first, else through staging. Raises REFUSED, with
        nothing of the rows stored and `result` untouched, when the server refuses one."""
        if copy:
            try:
                with self.conn.transaction():  # savepoint: a concurrent writer may win
                    self._copy_into_readings(rows)
                result.loaded += len(rows)
                return
            except errors.UniqueViolation:
                pass
        found = BatchResult()
        with self.conn.transaction():
            self._stage_and_insert(*as_rows(rows, lines, raws), found)
        result.loaded += found.loaded
        result.duplicates += found.duplicates
        result.rejects += found.rejects

    def _isolate(self, rows, lines, raws, result: BatchResult, copy: bool,
                 error: psycopg.Error) -> None:
        """The server refused these rows together: store them by halves, down to the rows it
        refuses one by one, which become `database_refused` rejects."""
        if len(rows) == 1:
            result.rejects.append(Reject(lines[0], raws[0], "database_refused",
                                         f"the database refused the row: {first_line(error)}",
                                         rows[0][0]))
            return
        middle = len(rows) // 2
        for part in (slice(None, middle), slice(middle, None)):
            try:
                self._insert(rows[part], lines[part], raws[part], result, copy)
            except REFUSED as exc:
                self._isolate(rows[part], lines[part], raws[part], result, copy, exc)

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
        """No stored row of any meter of the batch within that meter's own span. Per meter, so
        that consecutive batches of a live feed, whose meters' spans interleave in time, still
        go by COPY; the overall bounds let TimescaleDB skip the other chunks."""
        meters = sorted(spans)
        # Never prepared: a generic plan cannot leave out chunks by the bounds' values, and
        # would lock and look at every chunk of readings.
        return not self.conn.execute(
            "SELECT EXISTS (SELECT 1 FROM unnest(%s::text[], %s::timestamptz[], %s::timestamptz[])"
            " AS s(meter_id, low, high) JOIN readings r ON r.meter_id = s.meter_id"
            " AND r.time BETWEEN s.low AND s.high WHERE r.time BETWEEN %s AND %s)",
            (meters, [spans[m][0] for m in meters], [spans[m][1] for m in meters],
             min(span[0] for span in spans.values()),
             max(span[1] for span in spans.values())), prepare=False).fetchone()[0]

    def _copy_into_readings(self, rows: list[tuple] | Columns) -> None:
        with self.conn.cursor().copy(
                sql.SQL("COPY readings ({}) FROM STDIN (FORMAT BINARY)").format(COLUMN_LIST)) as copy:
            if isinstance(rows, Columns):
                copy.write(rows.copy_payload())
                return
            copy.set_types(COPY_TYPES)
            for row in rows:
                copy.write_row(row)

    def _stage_and_insert(self, rows, lines, raws, result: BatchResult) -> None:
        conn = self.conn
        conn.execute(STAGING)
        if self._staged:  # rows of an earlier part of this batch (see _isolate)
            conn.execute("DELETE FROM ingest_staging")
        self._staged = True
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
            (min(times), max(times)), prepare=False).fetchall()  # planned with the bounds, as above
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
            # The key (source, source_sha256, line_number, meter_id) makes a rerun of the same
            # file record nothing twice (migration 0037). A line of a message (MessageLine of
            # ingest/payloads.py) carries its own digest and topic (migration 0039).
            cur.executemany(
                "INSERT INTO ingest_rejects (source, source_sha256, line_number, raw, reason, "
                "detail, meter_id, topic) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT DO NOTHING",
                [(self.source, getattr(r.line, "digest", self.source_sha256), r.line,
                  _text(r.raw), r.reason, _text(r.detail), _text(r.meter),
                  _text(getattr(r.line, "topic", None))) for r in rejects])


def _text(value: str | None) -> str | None:
    """PostgreSQL text cannot hold NUL: written as the four characters \\x00."""
    return value.replace("\x00", "\\x00") if value and "\x00" in value else value
