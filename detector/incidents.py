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
from detector.seasonality import epoch_ns, moment_of

# Anomalous readings at most this many reading steps apart belong to the same incident.
INCIDENT_GAP = 60


def _groups(times: pd.DatetimeIndex, gap: timedelta) -> list[slice]:
    breaks = np.flatnonzero(np.diff(epoch_ns(times)) > pd.Timedelta(gap).value)
    edges = [0, *(breaks + 1).tolist(), len(times)]
    return [slice(a, b) for a, b in zip(edges[:-1], edges[1:])]


# An incident extended: its span, count, peak (severity and explanation with it), the most
# frequent kind among all its scores, energy and cost. Parameters in the order of `updates`.
SET = (" start_time = least(a.start_time, u.first), end_time = greatest(a.end_time, u.last),"
       " n_readings = a.n_readings + u.n, peak_score = greatest(a.peak_score, u.peak),"
       " severity = CASE WHEN u.higher THEN u.severity ELSE a.severity END,"
       " top_feature = CASE WHEN u.higher THEN u.top ELSE a.top_feature END,"
       " kind = (SELECT kind FROM anomaly_scores s WHERE s.meter_id = u.meter_id"
       "   AND s.model_version = u.version AND s.is_anomaly"
       "   AND s.time BETWEEN least(a.start_time, u.first) AND greatest(a.end_time, u.last)"
       "   GROUP BY kind ORDER BY count(*) DESC, kind LIMIT 1),"
       " excess_energy_kwh = u.total, estimated_cost = u.cost, updated_at = now()")
COLUMNS = "(first, last, n, peak, higher, severity, higher_too, top, meter_id, version, low," \
    " high, total, cost, id)"
UPDATE_ALL = (
    "UPDATE anomaly_incidents a SET" + SET + " FROM unnest(%s::timestamptz[],"
    " %s::timestamptz[], %s::int[], %s::real[], %s::bool[], %s::text[], %s::bool[], %s::text[],"
    " %s::text[], %s::int[], %s::timestamptz[], %s::timestamptz[], %s::float8[], %s::float8[],"
    " %s::bigint[]) AS u" + COLUMNS + " WHERE a.incident_id = u.id")
UPDATE_ONE = (
    "UPDATE anomaly_incidents a SET" + SET + " FROM (VALUES (%s::timestamptz, %s::timestamptz,"
    " %s::int, %s::real, %s::bool, %s::text, %s::bool, %s::text, %s::text, %s::int,"
    " %s::timestamptz, %s::timestamptz, %s::float8, %s::float8, %s::bigint)) AS u" + COLUMNS +
    " WHERE a.incident_id = u.id")


def record(conn: psycopg.Connection, batch: list[tuple]) -> list[int]:
    """Merge anomalous readings into anomaly_incidents, for each (meter, model version,
    anomalies, reading step) of the batch (anomalies: index time; columns score, kind,
    top_feature, expected, actual); returns the incidents touched per item. All meters' nearby
    incidents are read in one query and written in two pipelines: a cycle in which a
    thousand meters turn anomalous at once (readings resuming after a fleet-wide gap, say)
    costs a few round trips, not a few per meter."""
    batch = [(meter, version, anomalies.sort_index(), INCIDENT_GAP * step, step)
             for meter, version, anomalies, step in batch if not anomalies.empty]
    if not batch:
        return []
    # The incidents each item may extend: those within a gap of its span (usually the last).
    nearby: dict[int, list] = {n: [] for n in range(len(batch))}
    for n, *incident in conn.execute(
            "SELECT q.n, a.incident_id, a.start_time, a.end_time, a.peak_score,"
            " a.excess_energy_kwh FROM unnest(%s::text[], %s::int[], %s::timestamptz[],"
            " %s::timestamptz[]) WITH ORDINALITY AS q(meter_id, version, low, high, n)"
            " JOIN anomaly_incidents a ON a.meter_id = q.meter_id"
            " AND a.model_version = q.version AND a.end_time >= q.low AND a.start_time <= q.high"
            " ORDER BY q.n, a.start_time FOR UPDATE OF a",
            ([meter.meter_id for meter, *_ in batch], [version for _, version, *_ in batch],
             [anomalies.index[0] - gap for _, _, anomalies, gap, _ in batch],
             [anomalies.index[-1] + gap for _, _, anomalies, gap, _ in batch])).fetchall():
        nearby[n - 1].append(incident)
    new_rows, updates, touched = [], [], []
    for n, (meter, version, anomalies, gap, step) in enumerate(batch):
        hours = step / timedelta(hours=1)
        # plain arrays: a fleet-wide anomaly brings a thousand meters' few readings at once
        times = epoch_ns(anomalies.index)
        scores, kinds, tops = (anomalies[c].to_numpy() for c in ("score", "kind", "top_feature"))
        excess_of = anomalies["actual"].to_numpy(float) - anomalies["expected"].to_numpy(float)
        groups = _groups(anomalies.index, gap)
        touched.append(len(groups))
        for rows in groups:
            start = moment_of(times[rows.start] // 1000)
            end = moment_of(times[rows.stop - 1] // 1000)
            peak = rows.start + int(scores[rows].argmax())
            peak_score = float(scores[peak])
            excess = float(np.nansum(excess_of[rows]) * hours)
            severity = severities(np.array([peak_score]), np.array([True]))[0]
            top_feature = tops[peak]
            existing = next((i for i in nearby[n] if i[2] >= start - gap and i[1] <= end + gap),
                            None)
            if existing is None:
                kind = Counter(kinds[rows]).most_common(1)[0][0]
                new_rows.append((meter.meter_id, version, start, end, rows.stop - rows.start,
                                 peak_score, severity, kind, top_feature, excess,
                                 _cost(excess, meter), meter.currency))
                continue
            incident_id, _, _, old_peak, old_excess = existing
            total = (old_excess or 0.0) + excess
            higher = peak_score > old_peak
            updates.append((start, end, rows.stop - rows.start, peak_score, higher, severity,
                            higher, top_feature, meter.meter_id, version, start, end, total,
                            _cost(total, meter), incident_id))
    with conn.cursor() as cursor:
        if updates:  # one statement for all of them, unless two extend one incident
            one_each = len({update[-1] for update in updates}) == len(updates)
            statement = UPDATE_ALL if one_each else UPDATE_ONE
            if one_each:
                cursor.execute(statement, [list(column) for column in zip(*updates)])
            else:
                cursor.executemany(statement, updates)
        if new_rows:  # one statement for all of them
            cursor.execute(
                "INSERT INTO anomaly_incidents (meter_id, model_version, start_time, end_time,"
                " n_readings, peak_score, severity, kind, top_feature, excess_energy_kwh,"
                " estimated_cost, currency) SELECT * FROM unnest(%s::text[], %s::int[],"
                " %s::timestamptz[], %s::timestamptz[], %s::int[], %s::real[], %s::text[],"
                " %s::text[], %s::text[], %s::float8[], %s::float8[], %s::text[])"
                " ON CONFLICT (meter_id, model_version, start_time) DO NOTHING",
                [list(column) for column in zip(*new_rows)])
    return touched


def _cost(kwh: float, meter) -> float | None:
    return kwh * meter.tariff_per_kwh if meter.tariff_per_kwh is not None else None
