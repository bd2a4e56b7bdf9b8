"""Drift of one feature of one meter: reference window against current window.

The pure core of a drift run: no database, so tests can repeat it over many windows. Judging
works on summaries (drift/summaries.py), which a run keeps in the database between runs.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from drift.calibration import psi_threshold
from drift.distances import ks_binned, seasonal_psi, wasserstein_binned
from drift.status import INSUFFICIENT, RECOMMENDATIONS, Bands
from drift.summaries import BaselineSummary, WindowSummary, calibration_rng
from wattwatch.vocabulary import DRIFT_MODES


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
    """Judge one feature of a reference and a current window held in memory."""
    baseline = BaselineSummary.build(reference.values, reference.stratum, reference.day,
                                     bins=config.bins, seed=seed)
    window = baseline.summarise(current.values, current.stratum, np.zeros(len(current.values), np.int64),
                                seed=seed, min_per_stratum=config.min_per_stratum).get(0)
    window = window or WindowSummary.empty(baseline.fine)
    return judge(feature, baseline, window, mode=mode, config=config, seed=seed)


def judge(feature: str, baseline: BaselineSummary, window: WindowSummary, *, mode: str = "light",
          config: DriftConfig = DriftConfig(), seed: int = 0) -> FeatureDrift:
    """Judge one feature from its summaries: seasonal PSI on the baseline's per-stratum
    quantile bins against its calibrated threshold and the PSI bands; in full mode also KS (on
    PIT values) and the normalised Wasserstein distance (on residuals from the stratum
    medians)."""
    if mode not in DRIFT_MODES:
        raise ValueError(f"mode must be one of {DRIFT_MODES}, got {mode!r}")
    if baseline.reference_n < config.min_values or baseline.reference_days < config.min_reference_days:
        return FeatureDrift(feature, baseline.reference_n, window.present, INSUFFICIENT)
    # Current readings in strata the reference barely saw were left out (not like with like).
    if window.n < config.min_values:
        return FeatureDrift(feature, baseline.reference_n, window.n, INSUFFICIENT)
    reference_cells = baseline.reference_cells()
    value = float(seasonal_psi(reference_cells, window.cells(config.bins)))
    # Null PSI: held-out reference days, as many as the current window's readings make.
    current_days = window.n / (baseline.reference_n / baseline.reference_days)
    threshold = psi_threshold(reference_cells, baseline.held_out, current_days, resamples=config.resamples,
                              false_alarm_rate=config.false_alarm_rate, rng=calibration_rng(seed))
    status = config.bands.band(value) if value >= threshold else "stable"
    result = dict(feature=feature, reference_n=baseline.reference_n, current_n=window.n,
                  status=status, psi=value, psi_threshold=threshold)
    if mode == "full":
        statistic, pvalue = ks_binned(baseline.reference_fine.sum(axis=0), window.fine.sum(axis=0))
        distance = wasserstein_binned(baseline.residual_counts, baseline.residual_sums, window.residual,
                                      window.residual_sums, baseline.residual_widths(),
                                      baseline.residual_std)
        result.update(ks_statistic=statistic.value, ks_pvalue=pvalue,
                      wasserstein_norm=None if distance is None else distance.value)
    return FeatureDrift(**result)
