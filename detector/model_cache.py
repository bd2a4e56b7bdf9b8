"""Each meter's newest active model, loaded once per version, and the stacks of the models
that share a layout (`detector.stacked.Stacks`), rebuilt when one of their models changes.

With detector_model_cache_meters set, at most that many models stay loaded: beyond it, the
models of the meters scored longest ago are dropped and loaded again when their meters next
have readings to score."""

from __future__ import annotations

from collections.abc import Callable

import psycopg

from detector import readings, registry, stacked
from detector.cycles import Work
from detector.metrics import DetectorMetrics
from detector.training import Trainer


class ModelCache:
    def __init__(self, metrics: DetectorMetrics, trainer: Trainer):
        self.metrics = metrics
        self.trainer = trainer
        # in the order the meters were last scored, oldest first
        self.models: dict[str, registry.ActiveModel] = {}
        self.limit = trainer.settings.detector_model_cache_meters
        self.algorithms: dict[str, tuple] = {}
        # The loaded models' stacks, and the stack of each meter (None: scored alone).
        self.stacked = stacked.Stacks()
        self.stacks = self.stacked.stacks
        self.layouts = self.stacked.keys

    def active(self, conn: psycopg.Connection, meters: list[readings.Meter], work: Work,
               failed: Callable[[str, Exception], None]) -> dict[str, registry.ActiveModel]:
        """The newest active model of each meter (the meters without one are trained first,
        together; a meter is left out if it has too little data yet, or fails: `failed` is
        told), loaded once per version; the stacks of the layouts whose models changed are
        rebuilt."""
        models = {}
        with conn.transaction():
            versions = registry.active_versions(conn, [m.meter_id for m in meters])
        untrained = [meter for meter in meters if meter.meter_id not in versions]
        if untrained:
            versions.update(self.trainer.initial(conn, untrained, work, failed))
        for meter in meters:
            version, cached = versions.get(meter.meter_id), self.models.get(meter.meter_id)
            if version is None:
                continue
            if cached is None or cached.version != version:
                try:
                    with conn.transaction():
                        cached = registry.load(conn, version)
                except psycopg.OperationalError:
                    raise
                except Exception as exc:  # noqa: BLE001 - one meter's failure: the others go on
                    failed(meter.meter_id, exc)
                    continue
                self._use(meter.meter_id, cached)
            models[meter.meter_id] = self.models[meter.meter_id] = \
                self.models.pop(meter.meter_id)  # now the most recently scored
        self._bound(models)
        self.stacked.rebuild()
        return models

    def _bound(self, using: dict[str, registry.ActiveModel]) -> None:
        """Drop the models of the meters scored longest ago beyond the limit (never one this
        cycle uses)."""
        if not self.limit:
            return
        for meter_id in list(self.models)[:max(len(self.models) - self.limit, 0)]:
            if meter_id not in using:
                del self.models[meter_id]
                self.stacked.drop(meter_id)

    def _use(self, meter_id: str, model: registry.ActiveModel) -> None:
        """Score the meter with this model from now on (stacked at the next rebuild)."""
        self.models[meter_id] = model
        self.stacked.put(meter_id, model.detector)
        algorithm = model.detector.algorithm
        self.metrics.use_model(meter_id, model.version, algorithm, self.algorithms.get(meter_id))
        self.algorithms[meter_id] = (str(model.version), algorithm)
