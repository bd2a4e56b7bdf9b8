"""Typical and atypical days: each day's 24 hourly mean loads, scaled robustly, reduced by PCA
to 95% of the variance, clustered by DBSCAN. The clusters are the typical days; DBSCAN's noise
points are the atypical ones. eps comes from the data: the knee of the sorted k-distance curve.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import psycopg
from sklearn.cluster import DBSCAN
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors
from sklearn.preprocessing import RobustScaler

from detector.readings import Meter
from wattwatch.errors import WattwatchError

MIN_DAYS = 14


@dataclass
class Patterns:
    labels: np.ndarray   # cluster per day, -1 for atypical
    eps: float
    components: int

    @property
    def clusters(self) -> int:
        return len(set(self.labels.tolist()) - {-1})


def knee_eps(distances: np.ndarray) -> float:
    """The k-distance at the knee of the sorted curve: the point farthest below the chord from
    its first to its last point (where distances start to climb steeply)."""
    curve = np.sort(distances)
    x = np.linspace(0.0, 1.0, len(curve))
    span = curve[-1] - curve[0]
    if span <= 0:
        return float(curve[-1]) or 1e-9
    y = (curve - curve[0]) / span
    return float(curve[int(np.argmax(x - y))]) or 1e-9


def cluster_days(profiles: np.ndarray) -> Patterns:
    """Cluster daily profiles (days x 24)."""
    scaled = RobustScaler().fit_transform(profiles)
    reduced = PCA(n_components=0.95, svd_solver="full").fit_transform(scaled)
    min_samples = max(3, min(2 * reduced.shape[1], len(reduced) // 10))
    neighbours = NearestNeighbors(n_neighbors=min_samples).fit(reduced)
    distances = neighbours.kneighbors(reduced)[0][:, -1]
    eps = knee_eps(distances)
    labels = DBSCAN(eps=eps, min_samples=min_samples).fit_predict(reduced)
    return Patterns(labels, eps, reduced.shape[1])


def daily_profiles(conn: psycopg.Connection, meter: Meter, days: int) -> pd.DataFrame:
    """Hourly mean active power per local day (days x 24), complete days only."""
    rows = conn.execute(
        "SELECT date_trunc('hour', time AT TIME ZONE %s) AS hour, avg(active_power_kw)"
        " FROM readings WHERE meter_id = %s AND active_power_kw IS NOT NULL"
        " AND time > (SELECT max(time) FROM readings WHERE meter_id = %s) - %s * interval '1 day'"
        " GROUP BY 1 ORDER BY 1", (meter.timezone, meter.meter_id, meter.meter_id, days)).fetchall()
    if not rows:
        return pd.DataFrame(columns=range(24), dtype=float)
    hourly = pd.DataFrame(rows, columns=["hour", "kw"])
    hourly["hour"] = pd.to_datetime(hourly["hour"])
    hourly["kw"] = hourly["kw"].astype(float)
    table = hourly.pivot_table(index=hourly["hour"].dt.date, columns=hourly["hour"].dt.hour,
                               values="kw")
    return table.reindex(columns=range(24)).dropna()


def store_patterns(conn: psycopg.Connection, meter: Meter, days: int = 365) -> str:
    """Compute and store the meter's daily patterns (replacing the previous ones); a summary."""
    profiles = daily_profiles(conn, meter, days)
    if len(profiles) < MIN_DAYS:
        raise WattwatchError(f"meter {meter.meter_id!r} has {len(profiles)} complete days; "
                             f"daily patterns need at least {MIN_DAYS}")
    found = cluster_days(profiles.to_numpy())
    conn.execute("DELETE FROM daily_patterns WHERE meter_id = %s", (meter.meter_id,))
    conn.execute("DELETE FROM daily_pattern_profiles WHERE meter_id = %s", (meter.meter_id,))
    energy = profiles.sum(axis=1).to_numpy()  # 24 hourly means in kW sum to kWh
    with conn.cursor().copy("COPY daily_patterns (meter_id, day, cluster, is_atypical, energy_kwh)"
                            " FROM STDIN") as copy:
        for day, label, kwh in zip(profiles.index, found.labels, energy):
            copy.write_row((meter.meter_id, day, int(label), bool(label == -1), float(kwh)))
    for label in sorted(set(found.labels.tolist())):
        members = profiles.to_numpy()[found.labels == label]
        for hour, kw in enumerate(members.mean(axis=0)):
            conn.execute("INSERT INTO daily_pattern_profiles (meter_id, cluster, hour,"
                         " active_power_kw, n_days) VALUES (%s, %s, %s, %s, %s)",
                         (meter.meter_id, label, hour, float(kw), len(members)))
    atypical = int((found.labels == -1).sum())
    return (f"{len(profiles)} days: {found.clusters} typical pattern(s), {atypical} atypical "
            f"day(s) (PCA {found.components} components, eps {found.eps:.3g})")
