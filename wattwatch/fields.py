"""The reading fields wattwatch stores, and the column names people bring for them.

UCI names (any case) and our own names are recognised wherever a file is read (ingest,
`detect score-csv`), so the physical checks work on a UCI export without a mapping. Any other
column is a plain series.
"""

from __future__ import annotations

# Our field names, in the order of the readings table, with their unit.
FIELDS = {
    "active_power_kw": "kW",
    "reactive_power_kw": "kW",
    "voltage_v": "V",
    "current_a": "A",
    "sub_metering_1_wh": "Wh",
    "sub_metering_2_wh": "Wh",
    "sub_metering_3_wh": "Wh",
}

# Lower-cased column name -> field.
ALIASES = {
    "global_active_power": "active_power_kw",
    "global_reactive_power": "reactive_power_kw",
    "voltage": "voltage_v",
    "global_intensity": "current_a",
    "sub_metering_1": "sub_metering_1_wh",
    "sub_metering_2": "sub_metering_2_wh",
    "sub_metering_3": "sub_metering_3_wh",
    **{name: name for name in FIELDS},
}


def field_for(column: str) -> str | None:
    """Our field for a column name (UCI or ours, any case, surrounding spaces ignored), else None."""
    return ALIASES.get(column.strip().lower())
