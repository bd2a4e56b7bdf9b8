"""The model registry (`models`): train, validate and store versioned models; load the newest
active one of a meter. When `detect run` trains is `detector.training`'s."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import psycopg
from psycopg.types.json import Jsonb
from sklearn.ensemble import IsolationForest

from detector import readings
from detector.forests import FlatForest
from detector.models import DEFAULT_MODEL, make_model
from detector.rolling import Prefixes
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


# Each meter's first and newest reading times, and how many readings are older than a
# holdout before the newest, in one query for many meters (index lookups per meter).
BOUNDS = (
    "SELECT m.meter_id, b.first, b.last, CASE WHEN %s > interval '0' AND b.last - %s > b.first"
    " THEN (SELECT count(*) FROM readings WHERE meter_id = m.meter_id AND time < b.last - %s)"
    " END FROM unnest(%s::text[]) AS m(meter_id) CROSS JOIN LATERAL (SELECT min(time) AS first,"
    " max(time) AS last FROM readings WHERE meter_id = m.meter_id) AS b")


def windows_of(conn: psycopg.Connection, meters: list[readings.Meter], settings: Settings,
               start: datetime | None, end: datetime | None,
               holdout_days: float = 0) -> dict[str, tuple[datetime, datetime] | WattwatchError]:
    """Each meter's training window [start, end): the given bounds; by default ending after
    its newest reading, or `holdout_days` before it when at least MIN_TRAIN_READINGS are
    older than that (a first model that leaves its newest days to be scored as new data), and
    starting detector_train_days before its end. A meter without readings gets the error."""
    holdout = timedelta(days=holdout_days)
    bounds = {} if end else {meter_id: (last, before) for meter_id, _, last, before in
                             conn.execute(BOUNDS, (holdout, holdout, holdout,
                                                   [m.meter_id for m in meters])).fetchall()}
    spans = {}
    for meter in meters:
        stop = end
        if stop is None:
            last, before = bounds[meter.meter_id]
            if last is None:
                spans[meter.meter_id] = WattwatchError(
                    f"meter {meter.meter_id!r} has no readings to train on")
                continue
            stop = last - holdout if (before or 0) >= MIN_TRAIN_READINGS else \
                last + timedelta(microseconds=1)
        spans[meter.meter_id] = (start or stop - timedelta(days=settings.detector_train_days),
                                 stop)
    return spans


@dataclass
class Fitted:
    """A meter's model fitted and validated, not stored yet (it may come from a worker
    process: everything here pickles)."""

    meter_id: str
    algorithm: str
    detector: object
    fields: list[str]
    parameters: dict
    metrics: dict
    train_from: datetime
    train_to: datetime


def fit(meter: readings.Meter, frame: pd.DataFrame, settings: Settings, start: datetime,
        end: datetime, algorithm: str = DEFAULT_MODEL) -> Fitted:
    """Fit a model on the meter's readings of its window [start, end), validated on the
    window's last fifth with a model fitted on the rest. No database: many meters' fits may
    run in other processes."""
    fields = readings.fields_present(frame)
    if len(frame) < MIN_TRAIN_READINGS or not fields:
        raise WattwatchError(
            f"meter {meter.meter_id!r} has {len(frame)} readings between {start:%Y-%m-%d %H:%M} "
            f"and {end:%Y-%m-%d %H:%M} (training needs at least {MIN_TRAIN_READINGS})")
    params = {"nominal_voltage_v": meter.nominal_voltage_v,
              "alarm_rate": settings.detector_alarm_rate} if algorithm == DEFAULT_MODEL else {}
    data = frame[fields]
    split = int(len(data) * (1 - VALIDATION_SHARE))
    # the window first: the validation model's fit on its first part reads the same windows
    prefixes = Prefixes()
    detector = make_model(algorithm, **params).fit(data, prefixes)
    held_out = make_model(algorithm, **params).fit(data.iloc[:split], prefixes)
    # the validation rows after the readings their features need: scored as in the whole window
    first = max(split - held_out.context_rows, 0)
    flagged = held_out.score(data.iloc[first:])["is_anomaly"].to_numpy()[split - first:]
    metrics = {key: value for key, value in detector.metrics_.items() if key != "features"}
    metrics["validation_anomaly_ratio"] = float(np.mean(flagged))
    metrics["validation_rows"] = len(data) - split
    parameters = {**detector.get_params(), "fields": fields,
                  "features": detector.metrics_.get("features")}
    return Fitted(meter.meter_id, algorithm, detector, fields, parameters, metrics,
                  frame.index[0], frame.index[-1])


def store(conn: psycopg.Connection, fitted: Fitted, reason: str) -> int:
    """Store a fitted model as the meter's active version and retire its older ones; the
    version."""
    # the older version first: the schema allows one active model per meter (migration 0038)
    conn.execute("UPDATE models SET status = 'retired' WHERE meter_id = %s AND status = 'active'",
                 (fitted.meter_id,))
    return conn.execute(
        "INSERT INTO models (meter_id, algorithm, parameters, train_from, train_to, threshold,"
        " metrics, model, reason) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING version",
        (fitted.meter_id, fitted.algorithm, Jsonb(fitted.parameters), fitted.train_from,
         fitted.train_to, fitted.detector.threshold_, Jsonb(fitted.metrics),
         pickle.dumps((fitted.detector, fitted.fields)), reason),
    ).fetchone()[0]


def train(conn: psycopg.Connection, meter: readings.Meter, settings: Settings, *,
          start: datetime | None = None, end: datetime | None = None, holdout_days: float = 0,
          algorithm: str = DEFAULT_MODEL, reason: str = "manual") -> int:
    """Train one meter on its window (`windows_of`), validate, store the new version as active
    and retire the meter's older ones (`fit`, `store`). Returns the version. Many meters at
    once: `detector.fleet`."""
    span = windows_of(conn, [meter], settings, start, end, holdout_days)[meter.meter_id]
    if isinstance(span, WattwatchError):
        raise span
    start, end = span
    frame = readings.window(conn, meter, start, end)
    return store(conn, fit(meter, frame, settings, start, end, algorithm), reason)


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
    if isinstance(getattr(detector, "forest_", None), IsolationForest):
        # stored before forests were flattened at training: flattened now, the same scores
        detector.forest_ = FlatForest.of(detector.forest_)
    features = getattr(detector, "features_", None)
    if features is not None and features.season_.slots == 168:
        # stored with the hour of the week's scales repeated for every day: one day's kept
        features.profiles_ = {name: (medians, scales[:24].copy() if len(scales) == 168 else scales)
                              for name, (medians, scales) in features.profiles_.items()}
    return ActiveModel(version, detector, fields)
