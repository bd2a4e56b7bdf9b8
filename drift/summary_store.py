"""Drift summaries in the database: a baseline per meter and fixed reference window
(drift_baselines) and the summary of each complete UTC day against it (drift_day_summaries).

Each row is written whole by one statement, so a run that stops half-way leaves complete
summaries or none; readings that arrive late into a summarised day or reference window are
found by their `ingested_at` and the summaries they touch are deleted before judging.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

import psycopg
import psycopg.errors

from drift.summaries import FINE_PER_BIN, RESIDUAL_BINS

FORMAT = 1  # changes whenever the summaries' content changes: old rows are then not used


def settings_key(timezone: str, bins: int, min_per_stratum: int) -> str:
    """What a baseline's and its day summaries' content depends on besides the meter and the
    reference window."""
    return (f"format={FORMAT} timezone={timezone} bins={bins} fine={FINE_PER_BIN} "
            f"residual_bins={RESIDUAL_BINS} min_per_stratum={min_per_stratum}")


def drop_late(conn: psycopg.Connection, margin_minutes: int) -> None:
    """Delete the day summaries and baselines whose days received readings since the previous
    check (less the margin: an ingest transaction that began before the check and committed
    after it stamps its rows with its start), then move the check to now. One run at a time."""
    with conn.transaction():
        row = conn.execute("SELECT checked_through FROM drift_summary_checks FOR UPDATE").fetchone()
        if row is None:  # never checked: no summary can be trusted
            conn.execute("DELETE FROM drift_baselines")
            conn.execute("INSERT INTO drift_summary_checks (checked_through) VALUES (now()) "
                         "ON CONFLICT (singleton) DO UPDATE SET checked_through = now()")
            return
        conn.execute(
            "CREATE TEMPORARY TABLE drift_late ON COMMIT DROP AS SELECT DISTINCT meter_id, "
            "(time AT TIME ZONE 'UTC')::date AS day FROM readings WHERE ingested_at >= %s",
            [row[0] - timedelta(minutes=margin_minutes)])
        conn.execute("DELETE FROM drift_day_summaries s USING drift_baselines b, drift_late l "
                     "WHERE s.baseline_id = b.baseline_id AND b.meter_id = l.meter_id AND s.day = l.day")
        conn.execute("DELETE FROM drift_baselines b USING drift_late l WHERE b.meter_id = l.meter_id "
                     "AND l.day::timestamp AT TIME ZONE 'UTC' < b.reference_to "
                     "AND l.day::timestamp AT TIME ZONE 'UTC' + interval '1 day' > b.reference_from")
        conn.execute("UPDATE drift_summary_checks SET checked_through = now()")


def load_baseline(conn: psycopg.Connection, meter: str, start: datetime, end: datetime,
                  settings: str) -> tuple[int, bytes] | None:
    return conn.execute("SELECT baseline_id, summary FROM drift_baselines WHERE meter_id = %s AND "
                        "reference_from = %s AND reference_to = %s AND settings = %s",
                        [meter, start, end, settings]).fetchone()


def load_days(conn: psycopg.Connection, baseline_id: int, first: date, last: date) -> dict[date, bytes]:
    rows = conn.execute("SELECT day, summary FROM drift_day_summaries WHERE baseline_id = %s "
                        "AND day BETWEEN %s AND %s", [baseline_id, first, last]).fetchall()
    return dict(rows)


def store(conn: psycopg.Connection, meter: str, start: datetime, end: datetime, settings: str,
          baseline: bytes | int, days: dict[date, bytes]) -> None:
    """Store a new baseline (bytes) or add to a stored one (its id), and new day summaries.
    A new baseline replaces the meter's baselines of other windows (their day summaries go
    with them). A concurrent run's rows win: the same inputs give the same summaries; if it
    deleted the baseline meanwhile, the day summaries are not stored (they are only a cache)."""
    try:
        _store(conn, meter, start, end, settings, baseline, days)
    except psycopg.errors.ForeignKeyViolation:
        pass


def _store(conn, meter, start, end, settings, baseline, days) -> None:
    with conn.transaction():
        if isinstance(baseline, bytes):
            conn.execute("DELETE FROM drift_baselines WHERE meter_id = %s AND settings = %s AND "
                         "(reference_from, reference_to) <> (%s, %s)", [meter, settings, start, end])
            conn.execute("INSERT INTO drift_baselines (meter_id, reference_from, reference_to, "
                         "settings, summary) VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                         [meter, start, end, settings, baseline])
            baseline_id = load_baseline(conn, meter, start, end, settings)[0]
        else:
            baseline_id = baseline
        if days:
            with conn.cursor() as cur:
                cur.executemany("INSERT INTO drift_day_summaries (baseline_id, day, summary) "
                                "VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                                [(baseline_id, day, data) for day, data in days.items()])
