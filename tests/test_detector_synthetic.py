"""A synthetic household meter the detector tests build (daily and weekly cycles, appliance
bursts, physically consistent fields), and the injector's guarantees on it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ingest.anomalies import LENGTHS, inject, inject_many
from wattwatch.vocabulary import KINDS


def household(days: int = 21, seed: int = 0, start: str = "2026-01-05") -> pd.DataFrame:
    """One-minute readings of a made-up house: base load, weekday/weekend profiles, random
    appliance bursts, noise; current, reactive power and sub-meters consistent with power."""
    rng = np.random.default_rng(seed)
    index = pd.date_range(start, periods=days * 1440, freq="min", tz="UTC")
    hour = index.hour + index.minute / 60
    weekend = index.day_of_week >= 5
    weekday_profile = 0.9 * np.exp(-((hour - 7.5) / 1.0) ** 2) + 1.4 * np.exp(-((hour - 19.5) / 1.5) ** 2)
    weekend_profile = 1.1 * np.exp(-((hour - 12.5) / 2.5) ** 2) + 1.0 * np.exp(-((hour - 20) / 1.5) ** 2)
    power = 0.3 + np.where(weekend, weekend_profile, weekday_profile)
    bursts = np.zeros(len(index))
    for start_minute in rng.choice(len(index) - 30, size=days * 6, replace=False):
        bursts[start_minute:start_minute + rng.integers(3, 25)] += rng.uniform(0.5, 2.0)
    power = np.maximum(power * rng.lognormal(0, 0.08, len(index)) + bursts, 0.05)
    reactive = np.abs(0.12 * power + rng.normal(0, 0.01, len(index)))
    voltage = 236 + 2 * np.sin(2 * np.pi * hour / 24) + rng.normal(0, 0.8, len(index))
    current = 1000 * np.sqrt(power ** 2 + reactive ** 2) / voltage + rng.normal(0, 0.03, len(index))
    energy = power * 1000 / 60
    shares = rng.dirichlet([1, 1, 2], len(index)) * 0.7
    frame = pd.DataFrame({
        "active_power_kw": power.round(3), "reactive_power_kw": reactive.round(3),
        "voltage_v": voltage.round(2), "current_a": current.round(2),
    }, index=index)
    for number in range(3):
        frame[f"sub_metering_{number + 1}_wh"] = np.floor(energy * shares[:, number])
    return frame


def apparent_current(frame: pd.DataFrame) -> pd.Series:
    return 1000 * np.sqrt(frame.active_power_kw ** 2 + frame.reactive_power_kw ** 2) / frame.voltage_v


@pytest.mark.parametrize("kind", ["spike", "drop", "level_shift", "unusual_time", "voltage_sag",
                                  "voltage_swell"])
def test_injections_keep_physics_consistent(kind):
    frame = household(days=3)
    injection = inject(frame, kind, 2000, LENGTHS[kind][1], np.random.default_rng(1))
    changed = frame.loc[injection.start:injection.end]
    residual = (changed.current_a - apparent_current(changed)).abs()
    assert residual.max() < 0.2, f"{kind} broke I = 1000*S/V by {residual.max():.2f} A"
    energy = changed.active_power_kw * 1000 / 60
    assert (changed.filter(like="sub_metering").sum(axis=1) <= energy + 1e-9).all()


def test_inconsistency_breaks_physics_and_outage_blanks_the_meter():
    frame = household(days=3)
    rng = np.random.default_rng(3)
    bad = inject(frame, "inconsistency", 1000, 30, rng)
    changed = frame.loc[bad.start:bad.end]
    if bad.field == "current_a":
        assert ((changed.current_a - apparent_current(changed)).abs() > 0.5).all()
    else:
        assert (changed.filter(like="sub_metering").sum(axis=1)
                > changed.active_power_kw * 1000 / 60).all()
    outage = inject(frame, "outage", 3000, 20, rng)
    assert frame.loc[outage.start:outage.end].isna().all().all()
    assert outage.end - outage.start == pd.Timedelta(minutes=19)


def test_inject_many_spaces_every_kind_without_overlap():
    frame = household(days=21)
    injected = inject_many(frame, np.random.default_rng(5), per_kind=2, min_gap=300, skip=1440)
    assert sorted(i.kind for i in injected) == sorted(KINDS * 2)
    assert injected[0].start >= frame.index[1440]
    for before, after in zip(injected, injected[1:]):
        assert after.start - before.end > pd.Timedelta(minutes=300)


def test_unknown_kind_and_rows_outside_the_frame_are_refused():
    frame = household(days=1)
    with pytest.raises(ValueError, match="unknown anomaly kind 'surge'"):
        inject(frame, "surge", 0, 5, np.random.default_rng())
    with pytest.raises(ValueError, match="outside the frame"):
        inject(frame, "spike", 1439, 5, np.random.default_rng())
