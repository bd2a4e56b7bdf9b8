"""What the drift service judges between its scheduled passes.

Meters taken over from a worker that left or died before judging them in the last scheduled
pass are judged at once (`not_judged_since`). A new active model is a new reference: its meter is judged at once, not at the next daily pass
(a first model trained on a loaded history gets its verdict within a minute). A full pass
(PSI, KS, Wasserstein) is due when none ran in the last week: a service that was down on its
weekly day catches up at start.
"""

from __future__ import annotations

from datetime import timedelta

import psycopg

FULL_PASS_EVERY = timedelta(days=7)
NEW_MODEL_AGE = timedelta(days=2)


def meters_with_new_models(conn: psycopg.Connection) -> list[str]:
    """Meters whose active model, trained within NEW_MODEL_AGE, has no drift report since.
    (Older models were judged by a scheduled pass; the age bound keeps this query small.)"""
    rows = conn.execute(
        "SELECT DISTINCT m.meter_id FROM models m WHERE m.status = 'active'"
        " AND m.meter_id IS NOT NULL AND m.trained_at > now() - %s"
        " AND NOT EXISTS (SELECT FROM drift_reports r"
        "                 WHERE r.meter_id = m.meter_id AND r.run_at >= m.trained_at)"
        " ORDER BY m.meter_id", (NEW_MODEL_AGE,)).fetchall()
    return [meter for (meter,) in rows]


def full_pass_due(conn: psycopg.Connection) -> bool:
    """True when no full pass was stored within FULL_PASS_EVERY."""
    return not conn.execute(
        "SELECT EXISTS (SELECT FROM drift_reports WHERE mode = 'full' AND run_at > now() - %s)",
        (FULL_PASS_EVERY,)).fetchone()[0]


def not_judged_since(conn: psycopg.Connection, meters: list[str], since) -> list[str]:
    """Those of the meters without a drift report since `since`: meters a worker takes over
    from one that left or died before its pass judged them."""
    rows = conn.execute(
        "SELECT m FROM unnest(%s::text[]) AS m WHERE NOT EXISTS (SELECT FROM drift_reports r"
        " WHERE r.meter_id = m AND r.run_at >= %s) ORDER BY m", (meters, since)).fetchall()
    return [meter for (meter,) in rows]
