"""Scoring the newest readings of many meters in one pass, the live case: their models'
parameters are stacked one row per meter (`features.Tables`, `calibration.StackedCalibration`,
`forests.ForestStack`), so that a cycle over many meters costs a few numpy steps instead of one
model call per meter. The results are each model's own `score()`."""

from __future__ import annotations

import ctypes
import ctypes.util

import numpy as np
import pandas as pd

from detector.calibration import StackedCalibration
from detector.features import Tables
from detector.forests import ForestStack
from detector.models import SeasonalDetector, judge
from detector.seasonality import utc_index


def align(histories: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Meters' histories, each (epoch nanoseconds, readings x columns) oldest first, right-aligned
    in one array each: values (columns x meters x longest), NaN before a meter's first reading
    (as absent to the windows), and times (meters x longest), the first repeated before it."""
    width = max(len(t) for t, _ in histories)
    columns = histories[0][1].shape[1]
    values = np.full((columns, len(histories), width), np.nan)
    times = np.empty((len(histories), width), dtype=np.int64)
    for m, (t, rows) in enumerate(histories):
        start = width - len(t)
        values[:, m, start:] = rows.T
        times[m, start:] = t
        times[m, :start] = t[0]
    return values, times


def layout(detector) -> tuple | None:
    """The key of the stack a detector can join; None if it is scored on its own."""
    return detector.features_.layout() if isinstance(detector, SeasonalDetector) else None


class Stack:
    """Seasonal detectors of one layout, by meter."""

    def __init__(self, detectors: dict[str, SeasonalDetector]):
        self.position = {meter_id: n for n, meter_id in enumerate(detectors)}
        models = list(detectors.values())
        self.features = models[0].features_
        self.tables = Tables.of([model.features_ for model in models])
        self.forests = ForestStack([model.forest_ for model in models])
        self.calibration = StackedCalibration([model.calibration_ for model in models])
        self.thresholds = np.array([model.threshold_ for model in models])
        # The models' largest arrays become views of their rows here: a model and its stack
        # hold one copy of them (a stack rebuilt from them takes them over).
        self.tables.share([model.features_ for model in models])
        self.forests.share([model.forest_ for model in models])
        self.calibration.share([model.calibration_ for model in models])

    def score(self, meter_ids: list[str], histories: list[tuple[np.ndarray, np.ndarray]],
              zones: list[str], k: int) -> pd.DataFrame:
        """Scores of the last k readings of each meter, meter after meter (index: UTC time).
        `histories`: each meter's readings with the context its features need, as (epoch
        nanoseconds, readings x the layout's columns `self.features.columns_`) oldest first;
        `zones` each meter's time zone, for its cycle slots."""
        meters = np.array([self.position[meter_id] for meter_id in meter_ids])
        values, times = align(histories)
        values = dict(zip(self.features.columns_, values))
        index = utc_index(times[:, -k:].reshape(-1))
        # the slots of the k readings and of those before them the unmetered excess reads
        now = times[:, -(k + self.features.excess_lookback):]
        slots = np.empty(now.shape, dtype=np.int64)
        zones = np.asarray(zones)
        for zone in np.unique(zones):
            mine = zones == zone
            slots[mine] = self.features.season_.slots_at(now[mine], zone)
        features = self.features.compute(self.tables, meters, values, times, slots, k=k)
        rows = np.repeat(meters, k)
        isolation = self.forests.isolation(np.log1p(features.stats), rows)
        return judge(features, isolation, lambda stats: self.calibration.evidence(stats, rows),
                     self.thresholds[rows], index)


# Meters per stack: a model that changes rebuilds its block only, and building the stacks of
# many meters one block at a time bounds the memory a build takes on top of the models.
BLOCK_METERS = 1_000


class Stacks:
    """The stacks of many meters' models, by layout and block of at most BLOCK_METERS
    meters. `keys` says which stack (`stacks`) scores each meter (None: scored alone)."""

    def __init__(self):
        self.stacks: dict[tuple, Stack] = {}
        self.keys: dict[str, tuple | None] = {}
        self.members: dict[tuple, dict[str, SeasonalDetector]] = {}
        self.changed: set[tuple] = set()
        self.waiting = 0  # models put since the last build, each holding its own arrays

    def put(self, meter_id: str, detector) -> None:
        """Stack the meter's new model (once `rebuild` is called)."""
        self.drop(meter_id)
        its = layout(detector)
        if its is None:
            self.keys[meter_id] = None
            return
        block = 0
        while len(self.members.get((its, block), ())) >= BLOCK_METERS:
            block += 1
        key = (its, block)
        members = self.members.setdefault(key, {})
        members[meter_id] = detector
        self.keys[meter_id] = key
        self.changed.add(key)
        self.waiting += 1
        if self.waiting >= BLOCK_METERS:
            # A block's worth of new models is stacked at once, whatever their layouts: the
            # memory their own copies leave is reused by the next models loaded, so a cold
            # start of many layouts never holds every model twice.
            self.rebuild()

    def drop(self, meter_id: str) -> None:
        key = self.keys.pop(meter_id, None)
        if key is not None:
            del self.members[key][meter_id]
            self.changed.add(key)

    def rebuild(self) -> None:
        """Build the stacks whose members changed, one at a time; each takes over its models'
        large arrays (`Stack`), whose old copies go back to the system at the end."""
        for key in sorted(self.changed, key=lambda key: key[1]):
            self._build(key)
        self.waiting = 0
        _release_freed_memory()

    def _build(self, key: tuple) -> None:
        members = self.members.get(key)
        if members:
            self.stacks[key] = Stack(members)
        else:
            self.stacks.pop(key, None)
            self.members.pop(key, None)
        self.changed.discard(key)


_LIBC = ctypes.util.find_library("c")


def _release_freed_memory() -> None:
    """Give the heap's free pages back to the system (glibc): the many small arrays of the
    models a stack took over are freed in the middle of the heap, where the allocator would
    otherwise keep them."""
    if _LIBC:
        trim = getattr(ctypes.CDLL(_LIBC), "malloc_trim", None)
        if trim is not None:
            trim(0)
