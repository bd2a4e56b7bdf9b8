"""Plausible value ranges per field: a value outside is rejected as out_of_range, not stored."""

from __future__ import annotations

from wattwatch.settings import Settings

# Wide enough for a household to a large building; narrow it with WATTWATCH_INGEST_RANGES.
DEFAULT_RANGES: dict[str, tuple[float, float]] = {
    "active_power_kw": (0.0, 10_000.0),
    "reactive_power_kw": (-10_000.0, 10_000.0),  # negative: capacitive loads
    "voltage_v": (0.0, 500.0),
    "current_a": (0.0, 100_000.0),
    "sub_metering_1_wh": (0.0, 1_000_000.0),
    "sub_metering_2_wh": (0.0, 1_000_000.0),
    "sub_metering_3_wh": (0.0, 1_000_000.0),
}


def plausible_ranges(settings: Settings) -> dict[str, tuple[float, float]]:
    return {**DEFAULT_RANGES, **settings.ingest_ranges}
