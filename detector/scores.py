"""Scored readings written into anomaly_scores, each reading's score exactly once, together
with the incidents of the scores actually inserted and the metrics that count them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import psycopg

from detector import incidents
from detector.cycles import Work
from detector.metrics import DetectorMetrics
from detector.score_copy import STAGING, payload
from detector.scoring import Scored
from detector.seasonality import epoch_ns, micros
from wattwatch.vocabulary import DETECTED_KINDS, SEVERITIES

# Texts travel as codes into the arrays passed along (see score_copy).
INSERT_SCORES = ("INSERT INTO anomaly_scores (time, meter_id, model_version, score, evidence,"
                 " is_anomaly, severity, kind, top_feature, expected_active_power_kw)"
                 " SELECT time, (%(meters)s::text[])[part], (%(versions)s::int[])[part], score,"
                 " evidence, is_anomaly,"
                 " (%(severities)s::text[])[severity], (%(kinds)s::text[])[kind],"
                 " (%(names)s::text[])[top], nullif(expected, 'NaN') FROM detector_batch b")
# The careful path: rows that may have a score already (a restart, a late reading behind the
# watermark) are skipped, whatever model version scored them.
INSERT_UNSCORED = (
    "WITH written AS (" + INSERT_SCORES + " WHERE CASE WHEN recheck THEN NOT EXISTS (SELECT FROM"
    " anomaly_scores s WHERE s.meter_id = (%(meters)s::text[])[b.part] AND s.time = b.time)"
    " ELSE true END"
    " ON CONFLICT DO NOTHING RETURNING meter_id, time, is_anomaly)"
    " SELECT meter_id, count(*), array_agg(time) FILTER (WHERE is_anomaly) FROM written"
    " GROUP BY meter_id")


class ScoreStore:
    """Writes scored batches in the caller's transaction, counting what it wrote."""

    def __init__(self, metrics: DetectorMetrics):
        self.metrics = metrics

    def write(self, conn: psycopg.Connection, batch: list[Scored], work: Work) -> int:
        """Insert the scores of one or more meters (never over existing ones) and the
        incidents of those inserted; rows inserted."""
        batch = [scored for scored in batch if len(scored.result)]
        if not batch:
            return 0
        names = sorted(set().union(*(scored.names for scored in batch)))
        conn.execute(STAGING)
        with conn.cursor().copy("COPY detector_batch FROM STDIN WITH (FORMAT binary)") as copy:
            copy.write(payload(batch, names))
        params = {"meters": [meter.meter_id for scored in batch for meter in scored.meters],
                  "versions": [model.version for scored in batch for model in scored.models],
                  "severities": list(SEVERITIES), "kinds": list(DETECTED_KINDS), "names": names}
        inserted = None
        if len(params["meters"]) == 1 and _span_is_free(conn, batch[0]):
            try:
                with conn.transaction():  # a savepoint: a racing writer sends us below
                    conn.execute(INSERT_SCORES, params)
                result = batch[0].result
                inserted = {params["meters"][0]: (
                    len(result), list(result.index[result["is_anomaly"].to_numpy()]))}
            except psycopg.errors.UniqueViolation:
                pass
        if inserted is None:
            inserted = {meter_id: (count, times) for meter_id, count, times
                        in conn.execute(INSERT_UNSCORED, params).fetchall()}
        written, offset, anomalous = 0, 0, []
        for scored in batch:
            found = {}
            for position, meter in enumerate(scored.meters):
                count, anomalous_times = inserted.get(meter.meter_id, (0, None))
                written += count
                work.scored(meter.meter_id, count)
                self.metrics.scored.labels(meter.meter_id).inc(count)
                if anomalous_times:
                    found[position] = anomalous_times
            if found:
                anomalous.append(_anomalies(scored, found, offset))
            offset += len(scored.meters)
        if anomalous:
            owners = [incidents.owner(meter, model) for scored in batch
                      for meter, model in zip(scored.meters, scored.models)]
            self._record_incidents(conn, owners, pd.concat(anomalous), work)
        return written

    def _record_incidents(self, conn: psycopg.Connection, owners: list[incidents.Owner],
                          found: pd.DataFrame, work: Work) -> None:
        """Merge newly inserted anomalous readings (`at`: their owner) into incidents, and
        count them."""
        for (severity, kind), n in found.groupby(["severity", "kind"]).size().items():
            self.metrics.anomalies.labels(severity, kind).inc(n)
        touched, opened = incidents.record(conn, owners, found)
        work.recorded(len(found), opened)
        for owner in np.flatnonzero(touched).tolist():
            self.metrics.incidents.labels(owners[owner].meter.meter_id).inc(int(touched[owner]))


def _anomalies(scored: Scored, found: dict[int, list], offset: int) -> pd.DataFrame:
    """The newly inserted anomalous readings of a scored batch (`found`: their times by the
    meter's position), with their power and their meter's place (`at`, counted from
    `offset`); taken from the batch at once, for a cycle in which many meters turn anomalous
    together."""
    flagged = np.flatnonzero(scored.result["is_anomaly"].to_numpy())
    inserted = {(position, micros(moment)) for position, times in found.items()
                for moment in times}
    stamps = epoch_ns(scored.result.index[flagged]) // 1000
    rows = flagged[[(position, moment) in inserted for position, moment
                    in zip(scored.part[flagged].tolist(), stamps.tolist())]]
    return scored.result.iloc[rows].assign(actual=scored.actual[rows],
                                           at=scored.part[rows] + offset)


def _span_is_free(conn: psycopg.Connection, scored: Scored) -> bool:
    """True when no score of the meter exists in the batch's time span (a first scoring, the
    common case): the scores then go in without per-row conflict checks."""
    if scored.recheck.any():
        return False
    return not conn.execute(
        "SELECT EXISTS (SELECT FROM anomaly_scores WHERE meter_id = %s AND time BETWEEN %s"
        " AND %s)", (scored.meters[0].meter_id, scored.result.index[0],
                     scored.result.index[-1])).fetchone()[0]
