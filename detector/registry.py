"""The model registry (`models`): train, validate and store versioned models; load the newest
active one of a meter. When `detect run` trains is `detector.training`'s."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import psycopg
from psycopg.types.json import Jsonb

from detector import readings
from detector.models import DEFAULT_MODEL, make_model
from wattwatch.errors import WattwatchError
from wattwatch.settings import Settings

MIN_TRAIN_READINGS = 2 * 24 * 60  # two days of one-minute readings
VALIDATION_SHARE = 0.2


@dataclass
class ActiveModel:
    version: int
    detector: object
    fields: list[str]

    def __post_init__(self):
        # asked for every meter in every live cycle: computed once
        self.context_rows: int = self.detector.context_rows


def _default_end(conn: psycopg.Connection, meter_id: str, holdout: timedelta) -> datetime | None:
    """After the newest reading, or `holdout` before it when at least MIN_TRAIN_READINGS are
    older than that (a first model that leaves its newest days to be scored as new data)."""
    first, last = conn.execute("SELECT min(time), max(time) FROM readings WHERE meter_id = %s",
                               (meter_id,)).fetchone()
    if last is None:
        return None
    if holdout and last - holdout > first:
        before = conn.execute("SELECT count(*) FROM readings WHERE meter_id = %s AND time < %s",
                              (meter_id, last - holdout)).fetchone()[0]
        if before >= MIN_TRAIN_READINGS:
            return last - holdout
    return last + timedelta(microseconds=1)


def train(conn: psycopg.Connection, meter: readings.Meter, settings: Settings, *,
          start: datetime | None = None, end: datetime | None = None, holdout_days: float = 0,
          algorithm: str = DEFAULT_MODEL, reason: str = "manual") -> int:
    """Train on the meter's readings in [start, end) (default: the last detector_train_days
    before its newest reading, or `holdout_days` before it when enough readings are older),
    validate on the window's last fifth with a model fitted on the rest, store the new version
    as active and retire the meter's older ones. Returns the version."""
    end = end or _default_end(conn, meter.meter_id, timedelta(days=holdout_days))
    if end is None:
        raise WattwatchError(f"meter {meter.meter_id!r} has no readings to train on")
    start = start or end - timedelta(days=settings.detector_train_days)
    frame = readings.window(conn, meter, start, end)
    fields = readings.fields_present(frame)
    if len(frame) < MIN_TRAIN_READINGS or not fields:
        raise WattwatchError(
            f"meter {meter.meter_id!r} has {len(frame)} readings between {start:%Y-%m-%d %H:%M} "
            f"and {end:%Y-%m-%d %H:%M} (training needs at least {MIN_TRAIN_READINGS})")
    params = {"nominal_voltage_v": meter.nominal_voltage_v,
              "alarm_rate": settings.detector_alarm_rate} if algorithm == DEFAULT_MODEL else {}
    data = frame[fields]
    split = int(len(data) * (1 - VALIDATION_SHARE))
    held_out = make_model(algorithm, **params).fit(data.iloc[:split]).score(data)["is_anomaly"]
    detector = make_model(algorithm, **params).fit(data)
    metrics = {key: value for key, value in detector.metrics_.items() if key != "features"}
    metrics["validation_anomaly_ratio"] = float(np.mean(held_out.to_numpy()[split:]))
    metrics["validation_rows"] = len(data) - split
    parameters = {**detector.get_params(), "fields": fields,
                  "features": detector.metrics_.get("features")}
    # the older version first: the schema allows one active model per meter (migration 0038)
    conn.execute("UPDATE models SET status = 'retired' WHERE meter_id = %s AND status = 'active'",
                 (meter.meter_id,))
    return conn.execute(
        "INSERT INTO models (meter_id, algorithm, parameters, train_from, train_to, threshold,"
        " metrics, model, reason) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING version",
        (meter.meter_id, algorithm, Jsonb(parameters), frame.index[0], frame.index[-1],
         detector.threshold_, Jsonb(metrics), pickle.dumps((detector, fields)), reason),
    ).fetchone()[0]


def active_versions(conn: psycopg.Connection, meter_ids: list[str]) -> dict[str, int]:
    """Version of the newest active model of each meter (its own, else one shared by all);
    meters without one are left out. One query for all meters."""
    rows = conn.execute(
        "SELECT m.meter_id, (SELECT version FROM models WHERE status = 'active'"
        " AND (meter_id = m.meter_id OR meter_id IS NULL)"
        " ORDER BY meter_id IS NULL, trained_at DESC, version DESC LIMIT 1)"
        " FROM unnest(%s::text[]) AS m(meter_id)", (meter_ids,)).fetchall()
    return {meter_id: version for meter_id, version in rows if version is not None}


def load(conn: psycopg.Connection, version: int) -> ActiveModel:
    blob = conn.execute("SELECT model FROM models WHERE version = %s", (version,)).fetchone()[0]
    detector, fields = pickle.loads(blob)
    return ActiveModel(version, detector, fields)
