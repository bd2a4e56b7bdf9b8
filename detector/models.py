"""The detectors. A high score is indicative of an anomaly.

- `seasonal-iforest` (default): the contextual features of `detector.features` (seasonal
  profile, window means and minima, unmetered power, calm, rolling z-scores, rate of change,
  flat runs, physics, EN 50160 band, gaps), plus an
  IsolationForest on them for combinations no single rule sees, each turned into a calibrated
  tail probability; the rarest one (Bonferroni-corrected) gives the 0-100 score, and its
  feature is the explanation (`top_feature`).
- `iforest-raw`: the old system's approach, kept as a baseline: IsolationForest on the raw
  columns, anomalous below the 5th percentile of its training decision scores.

Both: `fit(frame)` learns from a training window and returns self; `score(frame)` returns one
row per reading with score, is_anomaly, severity, kind, top_feature, expected.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from sklearn.ensemble import IsolationForest

from detector.algorithms import DEFAULT_MODEL, RAW, SEASONAL  # noqa: F401 (re-exported)
from detector.calibration import TailCalibration, score_from_evidence, score_from_p, severities
from detector.features import POWER, ContextFeatures, Features
from detector.forests import FlatForest
from detector.kinds import classify
from detector.rolling import Prefixes

ISOLATION = "isolation_forest"
BAND = "voltage_v:band"
# Smallest tail scale per statistic, in its own unit, so that a statistic that never moved in
# training (all zeros) does not make the least wobble infinitely rare.
# The EN 50160 band statistic (% of nominal beyond +-10%) gets an e-fold rarer every quarter
# percent: voltage is judged on the band alone, so a swell a few percent beyond it is critical.
MIN_TAIL_SCALE = {"flat": 1.0, "sub_metering:physics": 1.0, "missing": 0.05, "gap": 1.0,
                  "range": 0.05, "band": 0.25, ISOLATION: 0.01}
DEFAULT_MIN_TAIL_SCALE = 0.5


def _min_tail_scale(name: str) -> float:
    return MIN_TAIL_SCALE.get(name, MIN_TAIL_SCALE.get(name.rpartition(":")[2],
                                                        DEFAULT_MIN_TAIL_SCALE))


def _as_standard_allows(stats: np.ndarray, names: list[str]) -> np.ndarray:
    """The training statistics with the EN 50160 band one at zero: the band is a standard, not
    a habit, so a supply that left it during training does not teach the model that this is
    normal (the other statistics do learn the meter's habits)."""
    if BAND not in names:
        return stats
    allowed = stats.copy()
    allowed[:, names.index(BAND)] = 0.0
    return allowed


def combine(evidence: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Score, evidence (-log10 of the Bonferroni p) and the index of the top rule feature (the
    explanation) of each reading, from the evidence of each statistic."""
    combined = np.maximum(evidence.max(axis=1) - np.log10(evidence.shape[1]), 0.0)
    top = evidence[:, :-1].argmax(axis=1)  # the forest is evidence, not an explanation
    return score_from_evidence(combined), combined, top


def judge(features: Features, isolation: np.ndarray, evidence_of: Callable, threshold,
          index: pd.Index) -> pd.DataFrame:
    """Score, evidence, anomaly flag, severity, kind and explanation of readings, from their
    statistics, the forest's isolation of them, their models' calibration (`evidence_of`) and
    threshold (one, or one per reading)."""
    # column-major: the calibration reads the statistics one column at a time
    stats = np.empty((len(isolation), features.stats.shape[1] + 1), order="F")
    stats[:, :-1], stats[:, -1] = features.stats, isolation
    evidence = evidence_of(stats)
    scores, combined, top = combine(evidence)
    anomalous = scores >= threshold
    rows = np.flatnonzero(anomalous)
    kind = np.full(len(index), None, dtype=object)
    top_feature = np.full(len(index), None, dtype=object)
    kind[rows] = classify(features, top, evidence, rows)
    top_feature[rows] = np.asarray(features.names, dtype=object)[top[rows]]
    return _result(index, scores, combined, anomalous, kind, top_feature, features.expected)


def _result(index: pd.Index, score, evidence, anomalous, kind, top, expected) -> pd.DataFrame:
    """The scored readings; raw_score and raw_evidence stay the model's when habituation
    (detector.habituation) discounts score and evidence."""
    stored, strength = score.astype(np.float32), evidence.astype(np.float32)
    return pd.DataFrame({
        "score": stored, "evidence": strength, "raw_score": stored, "raw_evidence": strength,
        "is_anomaly": anomalous, "severity": severities(score, anomalous), "kind": kind,
        "top_feature": top, "expected": expected,
    }, index=index)


class SeasonalDetector:
    """Seasonal, physical and IsolationForest evidence in one calibrated 0-100 score."""

    algorithm = SEASONAL

    def __init__(self, nominal_voltage_v: float = 230.0, alarm_rate: float = 1e-4,
                 n_estimators: int = 50, max_samples: int = 256,
                 max_forest_rows: int = 8192, random_state: int = 0):
        self.nominal_voltage_v = nominal_voltage_v
        self.alarm_rate = alarm_rate
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.max_forest_rows = max_forest_rows
        self.random_state = random_state

    def get_params(self) -> dict:
        return {name: getattr(self, name) for name in (
            "nominal_voltage_v", "alarm_rate", "n_estimators", "max_samples",
            "max_forest_rows", "random_state")}

    def fit(self, frame: pd.DataFrame, prefixes: Prefixes | None = None) -> "SeasonalDetector":
        """Fit on frame; `prefixes`: rolling statistics shared with fits on the first part of
        the same readings (`detector.rolling.Prefixes`)."""
        if not 0 < self.alarm_rate < 0.5:
            raise ValueError(f"alarm_rate must be in (0, 0.5), got {self.alarm_rate!r}")
        self.features_ = ContextFeatures(self.nominal_voltage_v)
        features = self.features_.fit_transform(frame, prefixes)
        inputs = np.log1p(features.stats)
        rng = np.random.default_rng(self.random_state)
        # The forest's trees draw max_samples rows each from a random pool of the window: a
        # pool of a few thousand serves them as the whole would, and scikit-learn's work per
        # tree grows with the rows it is handed.
        rows = rng.permutation(len(inputs))[:self.max_forest_rows]
        self.forest_ = FlatForest.of(IsolationForest(
            n_estimators=self.n_estimators, max_samples=min(self.max_samples, len(rows)),
            random_state=self.random_state).fit(inputs[rows]))
        stats = np.column_stack([features.stats, self._isolation(inputs)])
        self.names_ = features.names + [ISOLATION]
        floors = [_min_tail_scale(name) for name in self.names_]
        stats = _as_standard_allows(stats, self.names_)
        self.calibration_ = TailCalibration(floors).fit(stats)
        train_scores = combine(self.calibration_.evidence(stats))[0]
        # The threshold is the score of alarm_rate rarity, raised if the training window itself
        # would alarm more often than that.
        self.threshold_ = float(max(score_from_p(np.array([self.alarm_rate]))[0],
                                    np.quantile(train_scores, 1.0 - self.alarm_rate)))
        self.metrics_ = {
            "train_rows": len(frame),
            "train_anomaly_ratio": float(np.mean(train_scores >= self.threshold_)),
            "season": self.features_.season_.kind, "period": self.features_.season_.period,
            "features": self.names_,
        }
        return self

    @property
    def context_rows(self) -> int:
        return self.features_.context_rows

    @property
    def horizon(self) -> float:
        """Readings after which a persisting anomalous state's evidence is halved
        (detector.habituation): the level window, about an hour of readings."""
        return float(self.features_.level_window_)

    def _isolation(self, inputs: np.ndarray) -> np.ndarray:
        return self.forest_.isolation(inputs)

    def score(self, frame: pd.DataFrame) -> pd.DataFrame:
        features = self.features_.transform(frame)
        return judge(features, self._isolation(np.log1p(features.stats)),
                     self.calibration_.evidence, self.threshold_, frame.index)


class RawIForest:
    """Baseline: IsolationForest on the raw columns, threshold at the 5th percentile of its
    training decision scores (the old system's method)."""

    algorithm = RAW
    CONTAMINATION_PERCENTILE = 5.0

    def __init__(self, n_estimators: int = 100, random_state: int = 0):
        self.n_estimators = n_estimators
        self.random_state = random_state

    def get_params(self) -> dict:
        return {"n_estimators": self.n_estimators, "random_state": self.random_state}

    def _inputs(self, frame: pd.DataFrame) -> np.ndarray:
        return frame[self.columns_].fillna(self.fill_).to_numpy(float)

    def fit(self, frame: pd.DataFrame, prefixes: Prefixes | None = None) -> "RawIForest":
        """Fit on frame (`prefixes` is for the seasonal detector's windows: none here)."""
        self.columns_ = list(frame.columns)
        self.fill_ = frame.median()
        inputs = self._inputs(frame)
        self.forest_ = FlatForest.of(IsolationForest(
            n_estimators=self.n_estimators, random_state=self.random_state).fit(inputs))
        raw = self.forest_.isolation(inputs)
        self.cut_ = float(np.percentile(raw, 100.0 - self.CONTAMINATION_PERCENTILE))
        self.calibration_ = TailCalibration([0.01]).fit(raw[:, None])
        self.threshold_ = float(score_from_evidence(self.calibration_.evidence(
            np.array([[self.cut_]]))[0, 0]))
        self.metrics_ = {"train_rows": len(frame), "cut": self.cut_}
        return self

    @property
    def context_rows(self) -> int:
        return 0

    horizon = None  # the baseline is the old system's method, without habituation

    def score(self, frame: pd.DataFrame) -> pd.DataFrame:
        inputs = self._inputs(frame)
        raw = self.forest_.isolation(inputs)
        evidence = self.calibration_.evidence(raw[:, None])[:, 0]
        scores = score_from_evidence(evidence)
        anomalous = raw >= self.cut_
        # The baseline explains nothing; its kind is only the direction of the main column
        # against its training median (an incident needs a kind).
        primary = self.columns_.index(POWER) if POWER in self.columns_ else 0
        above = inputs[:, primary] >= self.fill_.iloc[primary]
        kind = np.where(anomalous, np.where(above, "spike", "drop"), None).astype(object)
        return _result(frame.index, scores, evidence, anomalous, kind,
                       np.full(len(frame), None, dtype=object), np.full(len(frame), np.nan))


MODELS = {SeasonalDetector.algorithm: SeasonalDetector, RawIForest.algorithm: RawIForest}


def make_model(name: str, **params):
    """A new, unfitted detector by algorithm name."""
    try:
        cls = MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(MODELS)}") from None
    return cls(**params)
