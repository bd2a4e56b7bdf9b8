"""Scores as one binary COPY payload of the detector's staging table, built by numpy as whole
columns; texts travel as codes (0 = NULL) that the INSERT decodes."""

from __future__ import annotations

import numpy as np
import pandas as pd

from detector.scoring import Scored
from detector.seasonality import epoch_ns
from timescale.binary_copy import HEADER, POSTGRES_EPOCH, TRAILER
from wattwatch.vocabulary import DETECTED_KINDS, SEVERITIES

# part: the meter's place in the batch, an integer: a live cycle may hold more meters than a
# smallint counts.
STAGING = ("CREATE TEMP TABLE IF NOT EXISTS detector_batch (part integer, time timestamptz,"
           " score real, evidence real, is_anomaly boolean, severity smallint, kind smallint,"
           " top smallint, expected double precision, recheck boolean) ON COMMIT DELETE ROWS")
# One binary COPY row of the staging table: 10 fields, each a length and a big-endian value.
ROW = np.dtype([("n", ">i2"), ("lp", ">i4"), ("part", ">i4"), ("l0", ">i4"), ("time", ">i8"),
                ("l1", ">i4"), ("score", ">f4"), ("le", ">i4"), ("evidence", ">f4"),
                ("l2", ">i4"), ("anomaly", "u1"),
                ("l3", ">i4"), ("severity", ">i2"), ("l4", ">i4"), ("kind", ">i2"),
                ("l5", ">i4"), ("top", ">i2"), ("l6", ">i4"), ("expected", ">f8"),
                ("l7", ">i4"), ("recheck", "u1")])
LENGTHS = {"n": 10, "lp": 4, "l0": 8, "l1": 4, "le": 4, "l2": 1, "l3": 2, "l4": 2, "l5": 2,
           "l6": 8, "l7": 1}


def payload(batch: list[Scored], names: list[str]) -> bytes:
    """The scores of a batch, its meters numbered from 1 in order (`part`), the top features
    coded by their place in `names`; coded once for the whole batch (a live cycle holds many
    meters' few readings)."""
    results = [scored.result for scored in batch]

    def column(name: str) -> np.ndarray:
        return np.concatenate([result[name].to_numpy() for result in results])

    def codes(name: str, categories) -> np.ndarray:
        return pd.Categorical(column(name), categories=categories).codes + 1

    rows = np.zeros(sum(len(result) for result in results), dtype=ROW)
    for field, length in LENGTHS.items():
        rows[field] = length
    first = np.cumsum([0] + [len(scored.meters) for scored in batch[:-1]])
    rows["part"] = np.concatenate([scored.part + 1 + at for scored, at in zip(batch, first)])
    times = np.concatenate([epoch_ns(result.index) for result in results])
    rows["time"] = times // 1000 - POSTGRES_EPOCH * 1_000_000
    rows["score"] = column("score")
    rows["evidence"] = column("evidence")
    rows["anomaly"] = column("is_anomaly")
    rows["severity"] = codes("severity", SEVERITIES)
    rows["kind"] = codes("kind", DETECTED_KINDS)
    rows["top"] = codes("top_feature", names)
    rows["expected"] = column("expected").astype(float)
    rows["recheck"] = np.concatenate([scored.recheck for scored in batch])
    return HEADER + rows.tobytes() + TRAILER
