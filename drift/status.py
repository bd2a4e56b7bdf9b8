"""Status bands, the overall status of a meter, and what to do about each status."""

from __future__ import annotations

from dataclasses import dataclass

from wattwatch.vocabulary import DRIFT_INSUFFICIENT as INSUFFICIENT
from wattwatch.vocabulary import DRIFT_ORDER as ORDER

# Published as the value of the status gauges.
CODES = {INSUFFICIENT: -1, "stable": 0, "warning": 1, "alert": 2, "critical": 3}

RECOMMENDATIONS = {
    "stable": "no action needed",
    "warning": "monitor: the distribution has started to move",
    "alert": "investigate the change; consider retraining the anomaly model",
    "critical": "retrain requested: the anomaly model no longer matches the data",
    INSUFFICIENT: "not enough data in the reference or current window to judge",
}


@dataclass(frozen=True)
class Bands:
    """PSI band edges (the old system's: 0.1, 0.25, 0.5): PSI below `warning` is stable."""

    warning: float = 0.1
    alert: float = 0.25
    critical: float = 0.5

    def __post_init__(self):
        if not 0 < self.warning < self.alert < self.critical:
            raise ValueError("PSI bands must increase: 0 < warning < alert < critical, got "
                             f"{self.warning!r}, {self.alert!r}, {self.critical!r}")

    def band(self, psi: float) -> str:
        if psi >= self.critical:
            return "critical"
        if psi >= self.alert:
            return "alert"
        if psi >= self.warning:
            return "warning"
        return "stable"


def overall(statuses: list[str]) -> str:
    """A meter's status: its worst feature; insufficient_data only when no feature could be
    judged (a meter with one unjudged feature is still judged on the others)."""
    judged = [status for status in statuses if status != INSUFFICIENT]
    if not judged:
        return INSUFFICIENT
    return max(judged, key=ORDER.index)
