"""Which meters have readings to score, and each meter's watermark: the `ingested_at` of the
newest reading scored.

Readings are found by `ingested_at`, so late readings with an old `time` are found too. A
transaction stamps its readings' ingested_at when it starts and may commit after a cycle moved
the watermark past that stamp: readings stored a little before the watermark are looked at
again (the late-commit check, see Mark), and of those only the ones without a score are
pending.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np
import psycopg

from detector import readings
from detector.seasonality import moment_of

# How long after its ingested_at stamp a transaction may still commit its readings.
LATE_COMMIT = timedelta(seconds=10)
# Kept apart from the readings after the watermark in the queries, so that the database can
# check a large window with one hash anti-join, not a probe per reading.
UNSCORED = "NOT EXISTS (SELECT FROM anomaly_scores s WHERE s.meter_id = r.meter_id AND s.time = r.time)"
NEVER = datetime.min.replace(tzinfo=timezone.utc)
NEVER_AFTER = datetime.max.replace(tzinfo=timezone.utc)
# More readings than this to check for a score at once are checked by a hash anti-join: a
# probe each costs more.
MANY_LATE = 20_000


@dataclass(frozen=True)
class Pending:
    """A meter with readings stored since its watermark."""

    meter: readings.Meter
    mark: datetime | None  # the watermark: ingested_at of the newest reading scored
    since: datetime        # readings stored after this are looked at (see Mark)
    newest: datetime       # the newest ingested_at to score up to
    first: datetime        # time of the oldest reading stored since `since`
    count: int             # readings stored since `since`
    settled: datetime      # readings stored by then were all committed when this was read

    @property
    def next_mark(self) -> datetime:
        """The watermark once these readings are written: past the settled point, so that
        readings stored in one transaction long before (a bulk load) are not looked at again."""
        return max(self.newest, self.settled)


@dataclass(frozen=True)
class Mark:
    """A meter's watermark, and where its late-commit check starts: readings stored up to the
    settled point of the cycle that moved it were all committed when that cycle read, those
    after it (up to the watermark) may still commit late."""

    at: datetime
    since: datetime

    def settles(self, settled: datetime) -> bool:
        """True when the check is open and every reading it covers has committed by now: one
        last look closes it."""
        return self.since < self.at <= settled


def pending(conn: psycopg.Connection, held: dict[str, np.ndarray]) -> list[Pending]:
    """Meters with readings stored after their watermark, or stored before it without a
    score (committed late). Meters with a watermark are found through the ingested_at index
    from the oldest start of a late-commit check on, all in one query; meters without one yet
    (never scored) in another. `held`: the times (epoch microseconds) of the readings this
    process holds of some meters, read and scored (see _late_unscored)."""
    known = readings.meters(conn)
    settled = conn.execute("SELECT now() - %s", (LATE_COMMIT,)).fetchone()[0]
    marks = {meter_id: Mark(at, since) for meter_id, at, since in conn.execute(
        "SELECT meter_id, ingested_at, coalesce(recheck_after, ingested_at - %s)"
        " FROM detector_watermarks", (LATE_COMMIT,)).fetchall()}
    found = {}
    if marks:
        oldest = min(mark.since for mark in marks.values())
        found.update((row[0], list(row[1:])) for row in conn.execute(
            "SELECT r.meter_id, max(r.ingested_at), min(r.time), count(*) FROM readings r"
            " JOIN detector_watermarks w USING (meter_id)"
            " WHERE r.ingested_at > %s AND r.ingested_at > w.ingested_at"
            " GROUP BY r.meter_id", (oldest,)).fetchall())
        # idle meters whose check has settled get their last look now, not when their
        # next reading arrives (after a bulk load: a whole transaction of history each)
        settling = {meter_id for meter_id, mark in marks.items()
                    if meter_id not in found and mark.settles(settled)}
        if found or settling:
            for meter_id, first, count in _late_unscored(conn, oldest, set(found) | settling,
                                                         held):
                row = found.setdefault(meter_id, [marks[meter_id].at, first, 0])
                row[1] = min(row[1], first)
                row[2] += count
        if settling - found.keys():
            closed = sorted(settling - found.keys())
            conn.execute(  # closed: nothing stored up to the watermark is left
                "UPDATE detector_watermarks w SET recheck_after = w.ingested_at"
                " FROM unnest(%s::text[], %s::timestamptz[]) AS c(meter_id, at)"
                " WHERE w.meter_id = c.meter_id AND w.ingested_at = c.at",  # unless moved
                (closed, [marks[meter_id].at for meter_id in closed]))
    new = [meter.meter_id for meter in known if meter.meter_id not in marks]
    if new:
        found.update((row[0], row[1:]) for row in conn.execute(
            "SELECT meter_id, max(ingested_at), min(time), count(*) FROM readings"
            " WHERE meter_id = ANY(%s) GROUP BY meter_id", (new,)).fetchall())
    conn.commit()
    return [Pending(meter, mark.at if mark else None, mark.since if mark else NEVER,
                    *found[meter.meter_id], settled)
            for meter in known if meter.meter_id in found
            for mark in [marks.get(meter.meter_id)]]


def _late_unscored(conn: psycopg.Connection, oldest: datetime, meter_ids: set[str],
                   held: dict[str, np.ndarray]) -> list[tuple]:
    """(meter, oldest time, count) of the readings of these meters stored in their
    late-commit window (see Mark) that have no score: their transaction committed after the
    cycle that moved the watermark read. Readings the process holds (`held`) vouch for the
    times they contain: of the readings from their start on, only the others are looked up in
    anomaly_scores, between constant time bounds (a probe per reading into every chunk costs
    too much at a thousand meters). Older readings, and all of a meter with none held (a
    history stored just before the watermark, say), are checked by the database at once."""
    starts = {meter_id: moment_of(held[meter_id][0]) for meter_id in meter_ids
              if meter_id in held and len(held[meter_id])}
    window = (" FROM readings r JOIN detector_watermarks w USING (meter_id) JOIN unnest("
              "%(meters)s::text[], %(starts)s::timestamptz[]) AS h(meter_id, start)"
              " USING (meter_id) WHERE r.ingested_at > %(oldest)s"
              " AND r.ingested_at > coalesce(w.recheck_after, w.ingested_at - %(late)s)"
              " AND r.ingested_at <= w.ingested_at")
    ids = list(meter_ids)
    older = {"meters": ids, "starts": [starts.get(m, NEVER_AFTER) for m in ids],
             "oldest": oldest, "late": LATE_COMMIT}
    count, older["low"], older["high"] = conn.execute(
        "SELECT count(*), min(r.time), max(r.time)" + window + " AND r.time < h.start",
        older).fetchone()
    late = []
    if count:
        if count > MANY_LATE:  # a history stored just before: one hash anti-join
            conn.execute("SET LOCAL enable_nestloop = off")
        # constant bounds on time, so that only the chunks that can hold them are read
        late = conn.execute(
            "SELECT r.meter_id, min(r.time), count(*)" + window + " AND r.time < h.start"
            " AND r.time BETWEEN %(low)s AND %(high)s AND NOT EXISTS (SELECT FROM"
            " anomaly_scores s WHERE s.meter_id = r.meter_id AND s.time = r.time"
            " AND s.time BETWEEN %(low)s AND %(high)s) GROUP BY r.meter_id", older).fetchall()
    read = conn.cursor(binary=True).execute(
        "SELECT r.meter_id, array_agg((extract(epoch FROM r.time) * 1e6)::bigint)" + window
        + " AND r.time >= h.start GROUP BY r.meter_id",
        {"meters": list(starts), "starts": list(starts.values()), "oldest": oldest,
         "late": LATE_COMMIT}).fetchall() if starts else []
    ids, times = [], []
    for meter_id, stamps in read:
        stamps = np.array(stamps, dtype=np.int64)
        unknown = stamps[~np.isin(stamps, held[meter_id])]
        ids += [meter_id] * len(unknown)
        times += [moment_of(t) for t in unknown]
    if ids:
        late += conn.execute(
            "SELECT c.meter_id, min(c.time), count(*) FROM unnest(%s::text[],"
            " %s::timestamptz[]) AS c(meter_id, time) WHERE NOT EXISTS (SELECT FROM"
            " anomaly_scores s WHERE s.meter_id = c.meter_id AND s.time = c.time"
            " AND s.time BETWEEN %s AND %s) GROUP BY c.meter_id",
            (ids, times, min(times), max(times))).fetchall()
    return late


def current(conn: psycopg.Connection, meter_ids: list[str]) -> dict[str, datetime]:
    """The watermarks of these meters as committed now."""
    marks = dict(conn.execute(
        "SELECT meter_id, ingested_at FROM detector_watermarks WHERE meter_id = ANY(%s)",
        (sorted(meter_ids),)).fetchall())
    conn.commit()
    return marks


def next_new(conn: psycopg.Connection, pending: Pending, after: datetime | None) -> datetime | None:
    """Time of the first reading to score after `after`: already-scored stretches between
    late readings are skipped, not re-read."""
    row = conn.execute(
        "SELECT min(time) FROM (SELECT min(time) AS time FROM readings WHERE meter_id ="
        " %(m)s AND ingested_at > %(mark)s AND ingested_at <= %(newest)s AND time > %(after)s"
        " UNION ALL SELECT min(time) FROM readings r WHERE meter_id = %(m)s"
        " AND ingested_at > %(since)s AND ingested_at <= %(mark)s AND time > %(after)s AND "
        + UNSCORED + ") AS firsts",
        {"m": pending.meter.meter_id, "since": pending.since, "mark": pending.mark or NEVER,
         "newest": pending.newest, "after": after or NEVER}).fetchone()
    conn.commit()
    return row[0]


def advance(conn: psycopg.Connection, done: list[Pending]) -> None:
    """Move the watermarks of meters whose pending readings are all written."""
    conn.execute(
        "INSERT INTO detector_watermarks (meter_id, ingested_at, recheck_after)"
        " SELECT * FROM unnest(%s::text[], %s::timestamptz[], %s::timestamptz[])"
        " ON CONFLICT (meter_id) DO UPDATE SET ingested_at = excluded.ingested_at,"
        " recheck_after = excluded.recheck_after, updated_at = now()",
        ([p.meter.meter_id for p in done], [p.next_mark for p in done],
         [p.settled for p in done]))
