"""Which windows a meter is compared on: the current window, and the reference window (by
default the active model's training window, else the days just before the current window)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg


@dataclass(frozen=True)
class Windows:
    reference_from: datetime
    reference_to: datetime
    current_from: datetime
    current_to: datetime
    reference_source: str  # 'model N', 'configured' or 'given'


def model_windows(conn: psycopg.Connection) -> dict[str | None, tuple[int, datetime, datetime]]:
    """Training window of the newest active model per meter (key None: the all-meters model)."""
    rows = conn.execute(
        "SELECT DISTINCT ON (meter_id) meter_id, version, train_from, train_to FROM models "
        "WHERE status = 'active' ORDER BY meter_id, trained_at DESC, version DESC").fetchall()
    return {meter: (version, start, end) for meter, version, start, end in rows
            if start is not None and end is not None}


def windows_for(meter_id: str, *, current_from: datetime, current_to: datetime,
                reference_days: float, models: dict, given: tuple[datetime, datetime] | None = None
                ) -> Windows:
    """The windows for one meter. Against a model's training window, the current window starts
    no earlier than the end of training: drift is what the model has not seen, and data are
    never compared with themselves. So just after a retrain (trained up to now) the current
    window is short, the meter is insufficient_data until enough new readings arrive, and a
    change the new model has learnt is not reported again."""
    if given is not None:
        return Windows(*given, current_from, current_to, "given")
    model = models.get(meter_id) or models.get(None)
    if model is not None:
        version, start, end = model
        return Windows(start, end, min(max(current_from, end), current_to), current_to,
                       f"model {version}")
    return Windows(current_from - timedelta(days=reference_days), current_from, current_from,
                   current_to, "configured")
