"""Drift of one feature of one meter: reference window against current window, in memory.

The pure core of a drift run: no database, so tests can repeat it over many windows.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from drift.baselines import DAY_PARTS, SeasonalBaseline, day_part
from drift.calibration import cell_counts, psi_threshold
from drift.distances import ks, seasonal_psi, wasserstein_norm
from drift.status import INSUFFICIENT, RECOMMENDATIONS, Bands

MODES = ("light", "full")


@dataclass(frozen=True)
class DriftConfig:
    """How drift is judged; `from_settings` reads it from the WATTWATCH_DRIFT_* settings."""

    bands: Bands = Bands()
    bins: int = 10
    false_alarm_rate: float = 0.01
    resamples: int = 200
    min_values: int = 720  # non-missing values needed in each window
    min_reference_days: int = 7  # distinct days the reference must span (for calibration)
    min_per_stratum: int = 10  # reference values a stratum needs for its readings to be compared

    @classmethod
    def from_settings(cls, settings) -> "DriftConfig":
        return cls(
            bands=Bands(settings.drift_psi_warning, settings.drift_psi_alert, settings.drift_psi_critical),
            bins=settings.drift_bins,
            false_alarm_rate=settings.drift_false_alarm_rate,
            resamples=settings.drift_calibration_resamples,
            min_values=settings.drift_min_values,
            min_reference_days=settings.drift_min_reference_days,
        )


@dataclass(frozen=True)
class Sample:
    """One feature's values in one window with their local calendar (NaN = missing)."""

    values: np.ndarray
    stratum: np.ndarray
    day: np.ndarray

    def present(self) -> "Sample":
        keep = ~np.isnan(self.values)
        return Sample(self.values[keep], self.stratum[keep], self.day[keep])

    def where(self, keep: np.ndarray) -> "Sample":
        return Sample(self.values[keep], self.stratum[keep], self.day[keep])


@dataclass(frozen=True)
class FeatureDrift:
    feature: str
    reference_n: int
    current_n: int
    status: str
    psi: float | None = None
    psi_threshold: float | None = None  # calibrated: PSI below it is resampling noise
    ks_statistic: float | None = None
    ks_pvalue: float | None = None
    wasserstein_norm: float | None = None

    @property
    def recommendation(self) -> str:
        return RECOMMENDATIONS[self.status]


def seed_for(feature: str) -> int:
    """A fixed seed per feature (tie-breaking and resampling), so that rerunning a run gives the
    same report and two meters with the same data get the same result."""
    return zlib.crc32(feature.encode())


def compare(feature: str, reference: Sample, current: Sample, *, mode: str = "light",
            config: DriftConfig = DriftConfig(), seed: int = 0) -> FeatureDrift:
    """Judge one feature: seasonal PSI on the baseline's per-stratum quantile bins against its
    calibrated threshold and the PSI bands; in full mode also KS (on PIT values) and the
    normalised Wasserstein distance (on residuals from the stratum medians)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    reference, current = reference.present(), current.present()
    if len(reference.values) < config.min_values or \
            len(np.unique(reference.day)) < config.min_reference_days:
        return FeatureDrift(feature, len(reference.values), len(current.values), INSUFFICIENT)
    baseline = SeasonalBaseline(reference.values, reference.stratum)
    # Current readings in strata the reference barely saw cannot be compared like with like.
    current = current.where(baseline.covered(current.stratum, config.min_per_stratum))
    if len(current.values) < config.min_values:
        return FeatureDrift(feature, len(reference.values), len(current.values), INSUFFICIENT)

    rng = np.random.default_rng(seed)
    reference_jitter = rng.random(len(reference.values))
    reference_pit = baseline.reference_pit(reference_jitter)
    current_pit = baseline.pit(current.values, current.stratum, rng.random(len(current.values)))
    reference_counts = _cell_counts(reference_pit, reference.stratum, config.bins)
    value = float(seasonal_psi(reference_counts, _cell_counts(current_pit, current.stratum, config.bins)))
    # Null PSI: held-out reference days, as many as the current window's readings make.
    held_out = baseline.held_out_pit(reference.day, reference_jitter)
    known = ~np.isnan(held_out)
    day_counts = _cell_counts(held_out[known], reference.stratum[known], config.bins, reference.day[known])
    current_days = len(current.values) / (len(reference.values) / len(np.unique(reference.day)))
    threshold = psi_threshold(reference_counts, day_counts, current_days, resamples=config.resamples,
                              false_alarm_rate=config.false_alarm_rate, rng=rng)
    status = config.bands.band(value) if value >= threshold else "stable"
    result = dict(feature=feature, reference_n=len(reference.values), current_n=len(current.values),
                  status=status, psi=value, psi_threshold=threshold)
    if mode == "full":
        statistic, pvalue = ks(reference_pit, current_pit)
        reference_residuals = baseline.residuals(reference.values, reference.stratum)
        result.update(ks_statistic=statistic, ks_pvalue=pvalue, wasserstein_norm=wasserstein_norm(
            reference_residuals, baseline.residuals(current.values, current.stratum),
            float(np.std(reference_residuals))))
    return FeatureDrift(**result)


def _cell_counts(pit: np.ndarray, stratum: np.ndarray, bins: int, day: np.ndarray | None = None
                 ) -> np.ndarray:
    """Counts per (part of day, quantile bin), or per (day, part, bin) when `day` is given.
    Bin k holds the k-th of `bins` equal shares of each stratum's reference values."""
    cells = day_part(stratum).astype(np.int64) * bins + np.minimum((pit * bins).astype(np.int64), bins - 1)
    counts = cell_counts(cells, DAY_PARTS * bins, day)
    return counts.reshape(DAY_PARTS, bins) if day is None else counts.reshape(-1, DAY_PARTS, bins)
