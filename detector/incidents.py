"""Runs of anomalous readings (`incident_runs`) written into anomaly_incidents: opened, or
extending the incident they continue, with the energy used above (or below) the expected
profile and its cost at the meter's tariff.

Incidents are built from the scores a batch actually inserted, so a batch scored twice after a
restart (its scores already there) never counts twice; a batch that continues an incident
extends it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

import numpy as np
import pandas as pd
import psycopg

from detector.habituation import OpenRun
from detector.incident_runs import INCIDENT_GAP, find_runs, step_micros
from detector.readings import Meter
from detector.registry import ActiveModel
from detector.seasonality import epoch_ns, micros, moment_of


@dataclass(frozen=True)
class Owner:
    """Whose anomalies a row of a batch is: the meter, the model version that scored it, and
    the meter's reading step (an incident's gap and a reading's energy)."""

    meter: Meter
    version: int
    step: timedelta


def owner(meter: Meter, model: ActiveModel) -> Owner:
    """The owner of a meter's anomalies scored by its active model."""
    return Owner(meter, model.version, timedelta(microseconds=step_micros(model.detector)))


class Recorded(NamedTuple):
    """What `record` did: the incidents opened or extended per owner, and how many it opened."""

    touched: np.ndarray
    opened: int


# An incident extended: its span, count, peak (severity and explanation with it), the most
# frequent kind among all its scores, energy and cost; every value from the row as it stands,
# so that two runs of the same cycle extending one incident add up.
SET = (" start_time = least(a.start_time, u.first), end_time = greatest(a.end_time, u.last),"
       " n_readings = a.n_readings + u.n, peak_score = greatest(a.peak_score, u.peak),"
       " peak_evidence = greatest(a.peak_evidence, u.peak_evidence),"
       " severity = CASE WHEN u.peak > a.peak_score THEN u.severity ELSE a.severity END,"
       " top_feature = CASE WHEN u.peak > a.peak_score THEN u.top ELSE a.top_feature END,"
       " kind = (SELECT kind FROM anomaly_scores s WHERE s.meter_id = a.meter_id"
       "   AND s.model_version = a.model_version AND s.is_anomaly"
       "   AND s.time BETWEEN least(a.start_time, u.first) AND greatest(a.end_time, u.last)"
       "   GROUP BY kind ORDER BY count(*) DESC, kind LIMIT 1),"
       " excess_energy_kwh = coalesce(a.excess_energy_kwh, 0) + u.excess,"
       " estimated_cost = (coalesce(a.excess_energy_kwh, 0) + u.excess) * u.tariff,"
       " updated_at = now()")
UPDATE_TYPES = ("timestamptz", "timestamptz", "int", "real", "real", "text", "text", "float8",
                "float8", "bigint")
UPDATE_COLUMNS = "(first, last, n, peak, peak_evidence, severity, top, excess, tariff, id)"
UPDATE_ALL = ("UPDATE anomaly_incidents a SET" + SET + " FROM unnest("
              + ", ".join(f"%s::{t}[]" for t in UPDATE_TYPES) + ") AS u" + UPDATE_COLUMNS
              + " WHERE a.incident_id = u.id")
UPDATE_ONE = ("UPDATE anomaly_incidents a SET" + SET + " FROM (VALUES ("
              + ", ".join(f"%s::{t}" for t in UPDATE_TYPES) + ")) AS u" + UPDATE_COLUMNS
              + " WHERE a.incident_id = u.id")
INSERT = ("INSERT INTO anomaly_incidents (meter_id, model_version, start_time, end_time,"
          " n_readings, peak_score, peak_evidence, severity, kind, top_feature, excess_energy_kwh,"
          " estimated_cost, currency) SELECT m, v, f, l, n, p, pe, s, k, t, e, e * r, c FROM"
          " unnest(%s::text[], %s::int[], %s::timestamptz[], %s::timestamptz[], %s::int[],"
          " %s::real[], %s::real[], %s::text[], %s::text[], %s::text[], %s::float8[],"
          " %s::float8[], %s::text[]) AS u(m, v, f, l, n, p, pe, s, k, t, e, r, c)"
          " ON CONFLICT (meter_id, model_version, start_time) DO NOTHING")


def record(conn: psycopg.Connection, owners: list[Owner], found: pd.DataFrame) -> Recorded:
    """Merge anomalous readings into anomaly_incidents; returns the incidents touched per owner
    and the number opened.

    `found`: the anomalous readings of the whole batch, one row each (index time; columns `at`,
    the owner's position, and raw_score, raw_evidence, kind, top_feature, expected, actual:
    an incident's peak is the model's, before habituation). Their runs are
    worked out on whole columns (`incident_runs`) and written in a few statements, however
    many meters turn anomalous at once."""
    touched = np.zeros(len(owners), dtype=int)
    if found.empty:
        return Recorded(touched, 0)
    step = np.array([owner.step // timedelta(microseconds=1) for owner in owners])
    runs = find_runs(found["at"].to_numpy(), epoch_ns(found.index) // 1000,
                     found["raw_score"].to_numpy(float), found["raw_evidence"].to_numpy(float),
                     found["kind"].to_numpy(object),
                     found["top_feature"].to_numpy(object),
                     found["actual"].to_numpy(float) - found["expected"].to_numpy(float), step)
    np.add.at(touched, runs.who, 1)
    gap = INCIDENT_GAP * step[runs.who]
    existing = _nearby(conn, owners, runs.who, runs.first - gap, runs.last + gap)
    new, updates = [], []
    for n, position in enumerate(runs.who.tolist()):
        owner = owners[position]
        values = (moment_of(runs.first[n]), moment_of(runs.last[n]), int(runs.sizes[n]),
                  float(runs.peak[n]), float(runs.peak_evidence[n]), runs.severity[n])
        tariff = owner.meter.tariff_per_kwh
        if n in existing:
            updates.append((*values, runs.top[n], float(runs.excess[n]), tariff, existing[n]))
        else:
            new.append((owner.meter.meter_id, owner.version, *values, runs.kind[n], runs.top[n],
                        float(runs.excess[n]), tariff, owner.meter.currency))
    with conn.cursor() as cursor:
        if updates:  # one statement for all of them, unless two runs extend one incident
            if len({update[-1] for update in updates}) == len(updates):
                cursor.execute(UPDATE_ALL, [list(column) for column in zip(*updates)])
            else:
                cursor.executemany(UPDATE_ONE, updates)
        opened = 0
        if new:
            cursor.execute(INSERT, [list(column) for column in zip(*new)])
            opened = cursor.rowcount
    return Recorded(touched, opened)


def open_runs(conn: psycopg.Connection, owners: list[Owner],
              firsts: list[datetime]) -> list[OpenRun | None]:
    """The run of anomalous readings open at each owner's first reading to score (`firsts`):
    its newest incident of the same model version, if it ended at most INCIDENT_GAP reading
    steps before (times in epoch microseconds, as `habituation` counts them)."""
    found: list[OpenRun | None] = [None] * len(owners)
    # a meter's incidents do not overlap: only its newest can be open (one index probe each)
    for n, start, end, peak in conn.execute(
            "SELECT q.n - 1, a.start_time, a.end_time, coalesce(a.peak_evidence, 0)"
            " FROM unnest(%s::text[], %s::int[], %s::timestamptz[])"
            " WITH ORDINALITY AS q(meter_id, version, low, n)"
            " CROSS JOIN LATERAL (SELECT start_time, end_time, peak_evidence"
            " FROM anomaly_incidents a WHERE a.meter_id = q.meter_id"
            " AND a.model_version = q.version ORDER BY a.start_time DESC LIMIT 1) a"
            " WHERE a.end_time >= q.low",
            ([owner.meter.meter_id for owner in owners], [owner.version for owner in owners],
             [first - INCIDENT_GAP * owner.step for owner, first in zip(owners, firsts)])):
        found[n] = OpenRun(micros(start), micros(end), float(np.float32(peak)))
    return found


def _nearby(conn: psycopg.Connection, owners: list[Owner], who: np.ndarray, low: np.ndarray,
            high: np.ndarray) -> dict[int, int]:
    """The incident each run extends (by the run's position): the earliest of its meter and
    model version within a gap of the run, locked until the transaction ends."""
    found: dict[int, int] = {}
    for n, incident_id in conn.execute(  # FOR UPDATE allows no DISTINCT ON: first one kept
            "SELECT q.n - 1, a.incident_id FROM unnest(%s::text[], %s::int[], %s::timestamptz[],"
            " %s::timestamptz[]) WITH ORDINALITY AS q(meter_id, version, low, high, n)"
            " JOIN anomaly_incidents a ON a.meter_id = q.meter_id"
            " AND a.model_version = q.version AND a.end_time >= q.low AND a.start_time <= q.high"
            " ORDER BY q.n, a.start_time FOR UPDATE OF a",
            ([owners[o].meter.meter_id for o in who.tolist()],
             [owners[o].version for o in who.tolist()],
             [moment_of(t) for t in low.tolist()], [moment_of(t) for t in high.tolist()])):
        found.setdefault(n, incident_id)
    return found
