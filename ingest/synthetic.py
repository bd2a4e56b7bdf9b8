"""Synthetic meters (the data of `wattwatch ingest simulate`) with daily and weekly cycles, appliance events, noise and labelled anomalies.

Time is cut into blocks of BLOCK_STEPS readings aligned on the Unix epoch. A block of one meter
is a pure function of (seed, meter number, block number): the same seed gives the same data in
live and in bulk mode, whatever the start. Each block carries an anomaly with probability
`anomaly_rate`, of the kind KINDS[(meter + block) % len(KINDS)] so that every kind appears, injected
by ingest/anomalies.py and recorded in `injected_anomalies` (the ground truth).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import psycopg

from ingest.anomalies import KINDS, Injection, inject_many

BLOCK_STEPS = 1440
NOMINAL_VOLTAGE = 230.0
FIELD_ORDER = ("active_power_kw", "reactive_power_kw", "voltage_v", "current_a",
               "sub_metering_1_wh", "sub_metering_2_wh", "sub_metering_3_wh")


@dataclass(frozen=True)
class MeterProfile:
    """The habits of one simulated household or small building."""

    base_kw: float
    morning_kw: float
    evening_kw: float
    weekend_factor: float
    events_per_day: float
    supply_v: float

    @classmethod
    def draw(cls, seed: int, meter: int) -> MeterProfile:
        rng = np.random.default_rng([seed, meter, 0])
        return cls(base_kw=float(rng.uniform(0.15, 0.6)), morning_kw=float(rng.uniform(0.4, 1.5)),
                   evening_kw=float(rng.uniform(0.8, 2.5)), weekend_factor=float(rng.uniform(1.1, 1.5)),
                   events_per_day=float(rng.uniform(3, 8)), supply_v=float(rng.uniform(232, 242)))


def meter_id(prefix: str, meter: int) -> str:
    return f"{prefix}-{meter:04d}"


def block_of(moment: datetime, step_seconds: int) -> int:
    return int(moment.timestamp() // (BLOCK_STEPS * step_seconds))


def simulate_block(seed: int, meter: int, block: int, step_seconds: int,
                   anomaly_rate: float) -> tuple[pd.DataFrame, list[Injection]]:
    """One block of readings of one meter, and the anomalies injected into it."""
    rng = np.random.default_rng([seed, meter, block + 1])
    profile = MeterProfile.draw(seed, meter)
    start = pd.Timestamp(block * BLOCK_STEPS * step_seconds, unit="s", tz="UTC")
    index = pd.date_range(start, periods=BLOCK_STEPS, freq=pd.Timedelta(seconds=step_seconds))
    hour = np.asarray(index.hour + index.minute / 60 + index.second / 3600, dtype=float)
    weekend = np.asarray(index.day_of_week >= 5)
    bump = lambda centre, width: np.exp(-0.5 * ((hour - centre) / width) ** 2)  # noqa: E731
    daily = profile.morning_kw * bump(7.5, 0.8) + profile.evening_kw * bump(19.5, 1.6)
    daily = np.where(weekend, daily * profile.weekend_factor + 0.4 * bump(13, 2.0), daily)
    fridge = 0.08 * (np.sin(2 * np.pi * hour / 0.75) > 0.3)

    # Appliance events (kitchen, laundry, water heater): sub-meters 1, 2 and 3.
    steps_per_hour = 3600 / step_seconds
    expected = profile.events_per_day * BLOCK_STEPS * step_seconds / 86400
    sub_kw = np.zeros((3, BLOCK_STEPS))
    for _ in range(rng.poisson(expected)):
        circuit = int(rng.integers(0, 3))
        length = max(1, int(rng.uniform(0.15, 1.0) * steps_per_hour))
        begin = int(rng.integers(0, BLOCK_STEPS))
        sub_kw[circuit, begin:begin + length] += (1.2, 2.0, 1.0)[circuit] * rng.uniform(0.7, 1.3)

    noise = rng.normal(0, 0.03, BLOCK_STEPS)
    active = np.maximum(profile.base_kw + daily + fridge + sub_kw.sum(axis=0) + noise, 0.05)
    reactive = np.maximum(0.08 * active + 0.04 + rng.normal(0, 0.01, BLOCK_STEPS), 0.0)
    voltage = profile.supply_v + 1.5 * np.sin(2 * np.pi * (hour - 4) / 24) - 0.6 * active \
        + rng.normal(0, 0.6, BLOCK_STEPS)
    frame = pd.DataFrame({
        "active_power_kw": active,
        "reactive_power_kw": reactive,
        "voltage_v": voltage,
        "current_a": 1000 * np.hypot(active, reactive) / voltage,
        "sub_metering_1_wh": sub_kw[0] * 1000 / steps_per_hour,
        "sub_metering_2_wh": sub_kw[1] * 1000 / steps_per_hour,
        "sub_metering_3_wh": sub_kw[2] * 1000 / steps_per_hour,
    }, index=index)
    injections: list[Injection] = []
    if rng.random() < anomaly_rate:
        kind = KINDS[(meter + block) % len(KINDS)]
        try:
            injections = inject_many(frame, rng, per_kind=1, kinds=(kind,), min_gap=30,
                                     nominal_voltage_v=NOMINAL_VOLTAGE, skip=30)
        except ValueError:
            pass  # no room for this block's kind (a drop needs a busy stretch): none this block
    return frame.round(3), injections


def block_rows(frame: pd.DataFrame, meter: str, since: datetime | None = None,
               until: datetime | None = None) -> list[tuple]:
    """Rows (meter_id, time, fields...) of a block, from `since` (inclusive) to `until`
    (exclusive); NaN (an outage) becomes NULL."""
    if since is not None:
        frame = frame[frame.index >= since]
    if until is not None:
        frame = frame[frame.index < until]
    if frame.empty:
        return []
    # Regular steps: adding a timedelta per row is cheaper than DatetimeIndex.to_pydatetime().
    first = frame.index[0].to_pydatetime()
    step = (frame.index[1] - frame.index[0]).to_pytimedelta() if len(frame) > 1 else timedelta(0)
    times = [first + step * position for position in range(len(frame))]
    values = frame[list(FIELD_ORDER)].to_numpy()
    rows = [(meter, moment, *row) for moment, row in zip(times, values.tolist())]
    for position in np.flatnonzero(np.isnan(values).any(axis=1)):
        meter_, moment, *row = rows[position]
        rows[position] = (meter_, moment, *(None if math.isnan(v) else v for v in row))
    return rows


def register_simulated_meters(conn: psycopg.Connection, prefix: str, meters: int) -> None:
    """Simulated meters with names, sites and a tariff, so costs and dashboards have values."""
    with conn.transaction():
        conn.execute(
            """INSERT INTO meters (meter_id, name, site, timezone, tariff_per_kwh, currency, nominal_voltage_v)
               SELECT %(prefix)s || '-' || lpad(i::text, 4, '0'), 'Simulated meter ' || i,
                      'site-' || (i / 10), 'UTC', 0.25, 'EUR', %(nominal)s
               FROM generate_series(0, %(n)s - 1) AS i
               ON CONFLICT (meter_id) DO NOTHING""",
            {"prefix": prefix, "n": meters, "nominal": NOMINAL_VOLTAGE})


def record_injections(conn: psycopg.Connection, meter: str, injections: list[Injection],
                      source: str) -> None:
    """Ground truth rows; writing them again changes nothing."""
    if not injections:
        return
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO injected_anomalies (meter_id, start_time, end_time, kind, magnitude, source) "
            "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (meter_id, start_time, kind) DO NOTHING",
            [(meter, i.start.to_pydatetime(), i.end.to_pydatetime(), i.kind, i.magnitude, source)
             for i in injections])


def aligned(moment: datetime, step_seconds: int) -> datetime:
    """The step boundary at or after `moment`."""
    stamp = math.ceil(moment.timestamp() / step_seconds) * step_seconds
    return datetime.fromtimestamp(stamp, tz=timezone.utc)


def blocks_between(start: datetime, end: datetime, step_seconds: int) -> range:
    return range(block_of(start, step_seconds), block_of(end - timedelta(microseconds=1), step_seconds) + 1)
