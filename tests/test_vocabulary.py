"""The core vocabulary (wattwatch/vocabulary.py, wattwatch/fields.py) against the schema the
migrations build: CHECK constraints read from pg_constraint, column comments for what has none."""

from __future__ import annotations

import re

import numpy as np

from detector.calibration import severities
from wattwatch.fields import FIELDS
from wattwatch.vocabulary import (ANOMALY_SEVERITIES, DETECTED_KINDS, DRIFT_MODES,
                                  DRIFT_STATUSES, KINDS, SEVERITIES, SEVERITY_BANDS)


def allowed(conn, table: str, column: str) -> list[str]:
    """The values a one-column `column IN (...)` CHECK constraint of `table` allows."""
    rows = conn.execute(
        """SELECT pg_get_constraintdef(c.oid) FROM pg_constraint c
           JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey)
           WHERE c.conrelid = %s::regclass AND c.contype = 'c' AND cardinality(c.conkey) = 1
             AND a.attname = %s""", (table, column)).fetchall()
    assert len(rows) == 1, f"one CHECK on {table}.{column} expected, got {rows!r}"
    return re.findall(r"'([^']*)'::text", rows[0][0])


def comment(conn, table: str, column: str) -> str:
    return conn.execute(
        "SELECT col_description(%s::regclass, attnum) FROM pg_attribute"
        " WHERE attrelid = %s::regclass AND attname = %s", (table, table, column)).fetchone()[0]


def test_severities_scores_and_incidents_may_have_are_the_core_lists(conn):
    assert allowed(conn, "anomaly_scores", "severity") == list(SEVERITIES)
    assert allowed(conn, "anomaly_incidents", "severity") == list(ANOMALY_SEVERITIES)


def test_drift_statuses_and_modes_are_the_core_lists(conn):
    assert allowed(conn, "drift_reports", "status") == list(DRIFT_STATUSES)
    assert allowed(conn, "drift_reports", "mode") == list(DRIFT_MODES)


def test_kinds_are_the_ones_the_scores_and_injections_tables_document(conn):
    def documented(table: str) -> list[str]:
        return [kind.strip() for kind in comment(conn, table, "kind").split(":", 1)[1].split(",")]

    assert documented("anomaly_scores") == list(DETECTED_KINDS)
    assert documented("injected_anomalies") == list(KINDS)


def test_fields_are_the_readings_columns_in_order_with_their_units(conn):
    columns = [name for (name,) in conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = 'readings'::regclass AND attnum > 0"
        " AND NOT attisdropped ORDER BY attnum")]
    assert [c for c in columns if c in FIELDS] == list(FIELDS)
    assert set(columns) - set(FIELDS) == {"time", "meter_id", "ingested_at"}
    for field, unit in FIELDS.items():
        assert comment(conn, "readings", field).endswith(f"[{unit}]"), field


def test_severity_bands_name_each_anomalous_score_by_its_floor():
    floors = [floor for _name, floor in SEVERITY_BANDS]
    assert floors == sorted(floors, reverse=True) and floors[-1] == 0.0
    scores = np.array([0.0, 64.9, 65.0, 80.0, 90.0, 100.0, 95.0])
    anomalous = np.array([True, True, True, True, True, True, False])
    assert list(severities(scores, anomalous)) == ["low", "low", "medium", "high", "critical",
                                                   "critical", "none"]
