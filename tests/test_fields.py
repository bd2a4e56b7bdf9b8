"""Column names people bring map onto our fields."""

from wattwatch.fields import FIELDS, field_for


def test_uci_names_in_any_case_map_to_our_fields():
    assert field_for("Global_active_power") == "active_power_kw"
    assert field_for("GLOBAL_INTENSITY") == "current_a"
    assert field_for(" voltage ") == "voltage_v"
    assert field_for("Sub_metering_3") == "sub_metering_3_wh"


def test_our_names_map_to_themselves_and_others_to_none():
    assert all(field_for(name) == name for name in FIELDS)
    assert field_for("temperature") is None
    assert field_for("date_time") is None
