"""The kind of an anomalous reading, from the feature that explains it and the direction of
the deviation."""

from __future__ import annotations

import numpy as np

from detector.features import FLOORS, RAISED_FLOOR, Features

# Above this evidence (-log10 p: below p = 1e-3) the current-vs-power check counts as failed.
PHYSICS_FAILS = 3.0


def classify(features: Features, top: np.ndarray, evidence: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Kind of each reading in `rows` (indices), given the index of its top feature."""
    names = features.names
    physics = names.index("current_a:physics") if "current_a:physics" in names else None
    # A stuck meter is a flatline whatever else its frozen values look like.
    flat = [j for j, name in enumerate(names) if name.endswith(":flat")]
    stuck = (evidence[:, flat] > PHYSICS_FAILS).any(axis=1) if flat else np.zeros(len(evidence), bool)
    # Voltage outside the EN 50160 band is named before the current check, which it upsets
    # whenever a meter's current does not follow the voltage at once.
    band = names.index("voltage_v:band") if "voltage_v:band" in names else None
    off_band = evidence[:, band] > PHYSICS_FAILS if band is not None else np.zeros(len(evidence), bool)
    kinds = np.empty(len(rows), dtype=object)
    for out, row in enumerate(rows):
        name = names[top[row]]
        column, _, stat = name.partition(":")
        if name in ("missing", "gap"):
            kinds[out] = "outage"
        elif stat in ("flat", "calm") or stuck[row]:
            kinds[out] = "flatline"
        elif column == "voltage_v" or off_band[row]:
            delta = features.voltage_delta[row] if features.voltage_delta is not None else 0.0
            kinds[out] = "voltage_sag" if delta < 0 else "voltage_swell"
        elif stat == "physics" or (column == "current_a" and physics is not None
                                   and evidence[row, physics] > PHYSICS_FAILS):
            kinds[out] = "inconsistency"
        elif stat == "pattern":
            # the stretch's mean is below what the meter's history has at that phase: a peak
            # that did not come, a working day shaped like a holiday
            kinds[out] = "pattern"
        elif stat in ("level", "excess", *FLOORS) and features.windowed_z[name][row] > RAISED_FLOOR:
            # A load that stays on: at an hour that is usually quiet and not (yet) for long,
            # an unusual time of use; otherwise the base load itself moved.
            quiet_hour = features.quiet[row] and not features.long_raised[row]
            kinds[out] = "unusual_time" if quiet_hour else "level_shift"
        elif features.seasonal_z[row] < 0 or features.floor_z[row] < -RAISED_FLOOR:
            kinds[out] = "drop"
        elif features.primary[row] > features.primary_q999[row]:
            kinds[out] = "spike"
        elif stat == "seasonal":
            kinds[out] = "unusual_time"
        else:
            kinds[out] = "spike"
    return kinds
