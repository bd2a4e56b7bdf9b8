"""Consecutive anomalous readings of a meter merged into incidents, with the energy used above
(or below) the expected profile and its cost at the meter's tariff.

Incidents are built from the scores a batch actually inserted, so a batch scored twice after a
restart (its scores already there) never counts twice; a batch that continues an incident
extends it.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import numpy as np
import pandas as pd
import psycopg

from detector.calibration import severities
from detector.seasonality import epoch_ns

# Anomalous readings at most this many reading steps apart belong to the same incident.
INCIDENT_GAP = 60


def _groups(times: pd.DatetimeIndex, gap: timedelta) -> list[slice]:
    breaks = np.flatnonzero(np.diff(epoch_ns(times)) > pd.Timedelta(gap).value)
    edges = [0, *(breaks + 1).tolist(), len(times)]
    return [slice(a, b) for a, b in zip(edges[:-1], edges[1:])]


def record(conn: psycopg.Connection, meter, version: int, anomalies: pd.DataFrame,
           step: timedelta) -> int:
    """Merge anomalous readings (index: time; columns score, kind, top_feature, expected,
    actual) into anomaly_incidents of (meter, version); returns the incidents touched."""
    if anomalies.empty:
        return 0
    anomalies = anomalies.sort_index()
    gap = INCIDENT_GAP * step
    hours = step / timedelta(hours=1)
    # The incidents this batch may extend: those within a gap of its span (usually the last).
    nearby = conn.execute(
        "SELECT incident_id, start_time, end_time, peak_score, excess_energy_kwh"
        " FROM anomaly_incidents WHERE meter_id = %s AND model_version = %s AND end_time >= %s"
        " AND start_time <= %s ORDER BY start_time FOR UPDATE",
        (meter.meter_id, version, anomalies.index[0] - gap, anomalies.index[-1] + gap)).fetchall()
    new_rows = []
    for rows in _groups(anomalies.index, gap):
        part = anomalies.iloc[rows]
        start, end = part.index[0].to_pydatetime(), part.index[-1].to_pydatetime()
        peak = int(part["score"].to_numpy().argmax())
        peak_score = float(part["score"].iloc[peak])
        excess = float(np.nansum(part["actual"].to_numpy() - part["expected"].to_numpy()) * hours)
        severity = severities(np.array([peak_score]), np.array([True]))[0]
        top_feature = part["top_feature"].iloc[peak]
        existing = next((i for i in nearby if i[2] >= start - gap and i[1] <= end + gap), None)
        if existing is None:
            kind = Counter(part["kind"]).most_common(1)[0][0]
            new_rows.append((meter.meter_id, version, start, end, len(part), peak_score, severity,
                             kind, top_feature, excess, _cost(excess, meter), meter.currency))
            continue
        incident_id, _, _, old_peak, old_excess = existing
        total = (old_excess or 0.0) + excess
        higher = peak_score > old_peak
        conn.execute(
            "UPDATE anomaly_incidents SET start_time = least(start_time, %s),"
            " end_time = greatest(end_time, %s), n_readings = n_readings + %s,"
            " peak_score = greatest(peak_score, %s),"
            " severity = CASE WHEN %s THEN %s ELSE severity END,"
            " top_feature = CASE WHEN %s THEN %s ELSE top_feature END,"
            " kind = (SELECT kind FROM anomaly_scores WHERE meter_id = %s AND model_version = %s"
            "   AND is_anomaly AND time BETWEEN least(anomaly_incidents.start_time, %s)"
            "   AND greatest(anomaly_incidents.end_time, %s)"
            "   GROUP BY kind ORDER BY count(*) DESC, kind LIMIT 1),"
            " excess_energy_kwh = %s, estimated_cost = %s, updated_at = now()"
            " WHERE incident_id = %s",
            (start, end, len(part), peak_score, higher, severity, higher, top_feature,
             meter.meter_id, version, start, end, total, _cost(total, meter), incident_id))
    if new_rows:
        with conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO anomaly_incidents (meter_id, model_version, start_time, end_time,"
                " n_readings, peak_score, severity, kind, top_feature, excess_energy_kwh,"
                " estimated_cost, currency) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (meter_id, model_version, start_time) DO NOTHING", new_rows)
    return len(_groups(anomalies.index, gap))


def _cost(kwh: float, meter) -> float | None:
    return kwh * meter.tariff_per_kwh if meter.tariff_per_kwh is not None else None
