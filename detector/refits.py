"""A model that keeps learning in `score-csv`: refitted by age, as `detect run` retrains.

`detect run` retrains a meter's model once it is older than detector_model_max_age_days, on
the trailing window of the meter's readings, and the new version starts without an open
incident. Here the age is counted in the file's own time, from the last reading the model
was fitted on: the first reading past that age is scored by a model fitted on the readings
before it, over the same span as the first model's training, and scoring goes on from there
without an open incident. Every model is fitted on earlier readings only, so a row's score
never depends on the rows after it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from detector.habituation import score_series
from wattwatch import logs

log = logs.get("detect")


@dataclass(frozen=True)
class AgeRule:
    """When a model is refitted and on what: past `max_age` after the last reading it was
    fitted on, on the readings of the `span` before the first reading past it."""

    max_age: pd.Timedelta
    span: pd.Timedelta


def score_refitting(detector, frame: pd.DataFrame, trained_to: pd.Timestamp, rule: AgeRule,
                    fit: Callable[[pd.DataFrame], object]) -> pd.DataFrame:
    """Every reading of a timestamped series (in time order) scored as `score_series` does,
    by `detector` (fitted on readings up to `trained_to`) until it is past the rule's age, then
    by models `fit` on the trailing readings, each from no open run. A window that cannot be
    fitted (`fit` raises ValueError) keeps the model in use, and is tried again an age later."""
    times = frame.index.to_numpy()
    parts, first, refits = [], 0, 0
    while True:
        # every model scores at least one reading, so a gap longer than the age refits once
        end = max(int(np.searchsorted(times, np.datetime64(trained_to + rule.max_age),
                                      "right")), first + 1)
        context = max(first - detector.context_rows, 0)
        parts.append(score_series(detector, frame.iloc[context:end]).iloc[first - context:])
        if end >= len(frame):
            log.info("model refitted %d time(s), each on the %.1f days before it", refits,
                     rule.span / pd.Timedelta(days=1))
            return pd.concat(parts)
        first, now = end, frame.index[end]
        window = frame.iloc[int(np.searchsorted(times, np.datetime64(now - rule.span),
                                                "left")):end]
        try:
            if window.empty:
                raise ValueError(f"no readings in the {rule.span} before it")
            detector, trained_to = fit(window), window.index[-1]
        except ValueError as exc:
            log.warning("model kept past its age at %s: %s", now, exc)
            trained_to = now
            continue
        refits += 1
        log.debug("model refitted at %s on the %d readings since %s", now, len(window),
                  window.index[0])
