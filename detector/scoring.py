"""Readings turned into scores to write (`Scored`), with no database: one meter's readings by
its own model, or the newest readings of many meters in one pass of their models' stack.

Of the readings scored, only those stored since the meter's `since` are kept; those stored by
its watermark may already have a score, perhaps from an older model version, and are marked to
be written only where they have none (`recheck`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

from detector import habituation, readings, registry
from detector.habituation import OpenRun
from detector.seasonality import micros
from detector.stacked import Stack
from detector.watermarks import NEVER, Pending

POWER = readings.COLUMNS.index("active_power_kw")


@dataclass
class Scored:
    """Freshly scored readings of one meter, or of several scored in one stack, to be
    written."""

    meters: list[readings.Meter]
    models: list[registry.ActiveModel]  # each meter's model
    part: np.ndarray       # each row's meter (a position in meters)
    result: pd.DataFrame   # one row per reading, as the models' score() returns
    actual: np.ndarray     # the readings' active power, for the incidents' excess energy
    recheck: np.ndarray    # rows that may have a score already
    newest: datetime       # newest ingested_at among them
    runs: list[OpenRun | None]  # each meter's run of anomalous readings open after them

    @property
    def names(self) -> list[str]:
        """The feature names of its models (one layout)."""
        features = getattr(self.models[0].detector, "features_", None)
        return features.names() if features is not None else []


def score_frame(pending: Pending, model: registry.ActiveModel, context: pd.DataFrame,
                chunk: pd.DataFrame, run: OpenRun | None) -> Scored:
    """Score the chunk's readings (after their context) with the meter's model; keep those
    stored since `since`, habituated after the meter's open run `run`."""
    frame = pd.concat([context, chunk])
    result = model.detector.score(frame[model.fields]).iloc[len(context):]
    fresh = (chunk["ingested_at"] > pending.since).to_numpy()
    recheck = (chunk["ingested_at"] <= (pending.mark or NEVER)).to_numpy()[fresh]
    result, runs = habituation.habituate(result[fresh],
                                         [habituation.Meter(slice(None), model.detector, run)])
    return Scored([pending.meter], [model], np.zeros(int(fresh.sum()), dtype=np.intp),
                  result, chunk["active_power_kw"].to_numpy(float)[fresh], recheck,
                  chunk["ingested_at"].max(), runs)


def score_stacked(stack: Stack, members: list[tuple[Pending, registry.ActiveModel,
                                                     readings.Rows, int]],
                  runs: list[OpenRun | None]) -> Scored:
    """Score the new readings of meters of one layout in one pass of their stack; each
    member is (pending, model, its readings with their context, how many are new), `runs`
    their open runs. Each meter's last k readings are scored (k: the most new readings of any
    member)."""
    k = max(count for *_, count in members)
    fields = [readings.COLUMNS.index(column) for column in stack.features.columns_]
    result = stack.score([p.meter.meter_id for p, *_ in members],
                         [(rows.t * 1000, rows.values[:, fields]) for _, _, rows, _ in members],
                         [p.meter.timezone for p, *_ in members], k)
    # Each meter's k rows end with its new readings (its last `count`); the rows before them
    # are context, never written.
    ingested = np.full((len(members), k), np.iinfo(np.int64).min)
    power = np.full((len(members), k), np.nan)
    for m, (_, _, rows, count) in enumerate(members):
        ingested[m, k - count:] = rows.i[-count:]
        power[m, k - count:] = rows.values[-count:, POWER]
    since, mark = (np.array([micros(edge) for edge in edges]) for edges in zip(
        *[(p.since, p.mark or NEVER) for p, *_ in members]))
    keep = np.flatnonzero(ingested.reshape(-1) > np.repeat(since, k))
    part = keep // k
    bounds = np.searchsorted(part, np.arange(len(members) + 1))
    result, runs = habituation.habituate(result.iloc[keep], [
        habituation.Meter(slice(bounds[m], bounds[m + 1]), model.detector, runs[m])
        for m, (_, model, *_) in enumerate(members)])
    return Scored([p.meter for p, *_ in members], [model for _, model, *_ in members], part,
                  result, power.reshape(-1)[keep], ingested.reshape(-1)[keep] <= mark[part],
                  max(p.newest for p, *_ in members), runs)
