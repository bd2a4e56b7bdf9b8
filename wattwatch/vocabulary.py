"""The names every part of wattwatch stores, publishes and reads back: anomaly severities and
kinds, drift statuses and run modes. One definition each; the migrations' CHECK constraints spell
the same lists (tests/test_vocabulary.py holds them together). Fields and units: wattwatch/fields.py.
"""

from __future__ import annotations

# Severity of an anomalous reading by score band, highest first: a band starts at its floor
# [score 0-100]; "low" starts at the model's threshold, whatever it is.
SEVERITY_BANDS = (("critical", 90.0), ("high", 80.0), ("medium", 65.0), ("low", 0.0))
# Severities of anomalous readings and incidents, mildest first.
ANOMALY_SEVERITIES = tuple(name for name, _floor in reversed(SEVERITY_BANDS))
# Every severity a score can have: "none" for a reading that is not anomalous.
SEVERITIES = ("none", *ANOMALY_SEVERITIES)

# What an anomalous reading looks like; the simulator injects the same kinds.
KINDS = ("spike", "drop", "outage", "flatline", "voltage_sag", "voltage_swell",
         "inconsistency", "level_shift", "unusual_time")
# What the detector names: those, and a cycle shaped wrong while its values are in range (a
# missing or extra peak, a working day shaped like a holiday), which nothing injects.
DETECTED_KINDS = (*KINDS, "pattern")

# Drift statuses from best to worst; insufficient_data is outside the order (no number to judge).
DRIFT_ORDER = ("stable", "warning", "alert", "critical")
DRIFT_INSUFFICIENT = "insufficient_data"
DRIFT_STATUSES = (*DRIFT_ORDER, DRIFT_INSUFFICIENT)
# light: PSI only, daily; full: PSI, KS and Wasserstein, weekly.
DRIFT_MODES = ("light", "full")
