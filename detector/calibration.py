"""From statistics to one calibrated 0-100 score, so the same score means the same rarity on
every meter.

Each statistic gets a tail probability learned on the training window: the empirical survival
function in the body, and beyond its 99th percentile a generalised Pareto tail fitted to the
exceedances (peaks over threshold, as in SPOT), so values never seen in training still get a
finite, ordered probability. The shape is kept >= 0 (no upper end point: nothing is declared
impossible) so heavy-tailed statistics of bursty loads get heavy tails and well-behaved ones
exponential tails. The reading's probability is the smallest one times the number of
statistics (Bonferroni). Its evidence is -log10(p), computed in logs so that no rarity
underflows (stored beside the score, for ranking or picking a threshold), and

    s = 12.5 * evidence                                   (p = 1e-4 -> 50, p = 10^-7.2 -> 90)
    score = s up to 90, then 100 - 10 / (1 + ln(1 + (s - 90) / 10))
                                                          (p = 1e-8 -> 94.1, p = 1e-16 -> 97.1)

so the score keeps its meaning up to 90 and goes on ranking above it (smoothly, slowly enough
that a stored real still tells strong evidence apart) without reaching 100.

Severity bands (wattwatch/vocabulary.py): low from the model's threshold, medium from 65, high
from 80, critical from 90.
"""

from __future__ import annotations

import numpy as np
from scipy import special
from scipy.stats import genpareto
from scipy.stats._distn_infrastructure import _LOGXMAX

from detector import neldermead
from wattwatch.vocabulary import SEVERITY_BANDS

TAIL = 0.01
BODY_LEVELS = np.linspace(0.0, 1.0 - TAIL, 100)
POINTS_PER_DECADE = 12.5


KNEE = 90.0  # the score is the scaled evidence up to here, then bends towards 100


def score_from_evidence(evidence: np.ndarray) -> np.ndarray:
    """0-100 score of -log10(p): linear up to KNEE, then smoothly (slope 1 at the knee) below 100."""
    s = POINTS_PER_DECADE * np.maximum(np.asarray(evidence, dtype=float), 0.0)
    room = 100.0 - KNEE
    bent = 100.0 - room / (1.0 + np.log1p(np.maximum(s - KNEE, 0.0) / room))
    return np.where(s <= KNEE, s, bent)


def evidence_from_score(score: float) -> float:
    """The evidence whose score is `score` (the inverse of score_from_evidence, below 100)."""
    if score <= KNEE:
        return score / POINTS_PER_DECADE
    room = 100.0 - KNEE
    return (KNEE + room * np.expm1(room / (100.0 - score) - 1.0)) / POINTS_PER_DECADE


def score_from_p(p: np.ndarray) -> np.ndarray:
    return score_from_evidence(-np.log10(np.asarray(p, dtype=float)))


def severities(scores: np.ndarray, anomalous: np.ndarray) -> np.ndarray:
    """Severity name of each score; 'none' where the reading is not anomalous."""
    out = np.full(len(scores), "none", dtype=object)
    for name, floor in reversed(SEVERITY_BANDS):
        out[anomalous & (scores >= floor)] = name
    return out


MIN_EXCEEDANCES = 20  # fewer than this and the shape is not estimable: exponential tail


def _pareto_tail(excess: np.ndarray) -> tuple[float, float]:
    """(shape >= 0, scale) of a generalised Pareto fit to exceedances; exponential when few."""
    if len(excess) < MIN_EXCEEDANCES:
        return 0.0, float(excess.mean()) if len(excess) else 0.0
    shape, scale = _fit_pareto(excess)
    if shape <= 0:
        return 0.0, float(excess.mean())
    return float(min(shape, 1.0)), float(scale)


def _fit_pareto(excess: np.ndarray) -> tuple[float, float]:
    """(shape, scale) of `genpareto.fit(excess, floc=0.0)`, bit for bit: the same start, the
    same Nelder-Mead (`detector.neldermead`) and the same negative log-likelihood
    (`_pareto_nnlf`), without scipy's generic per-call machinery, which costs most of a
    training."""
    start = genpareto._fitstart(excess)
    shape, scale = neldermead.fmin(_pareto_nnlf, [start[0], start[2]], args=(excess,))
    return shape, scale


def _pareto_nnlf(theta, x: np.ndarray) -> float:
    """scipy's penalized negative log-likelihood of genpareto with loc 0 (`rv_continuous.
    _penalized_nnlf`) of exceedances (x > 0): the same operations in the same order, so the
    same floats, less the checks that cannot fail on them (the support check when c >= 0 and
    the support has no upper end, the finite-value filter when every value is finite)."""
    c, scale = theta
    if not np.isfinite(c) or scale <= 0:
        return np.inf
    x = x / scale
    n_log_scale = len(x) * np.log(scale)
    n_bad = 0
    if c < 0:
        inside = (0.0 <= x) & (x <= -1.0 / c)
        n_bad = len(x) - np.count_nonzero(inside)
        if n_bad > 0:
            x = x[inside]
    logpdf = -special.xlog1py(c + 1.0, c * x) / c if c != 0 else -x
    finite = np.isfinite(logpdf)
    n_finite = np.count_nonzero(finite)
    if n_finite < finite.size:
        n_bad += finite.size - n_finite
        logpdf = logpdf[finite]
    return -(0 + np.sum(logpdf)) + n_bad * _LOGXMAX * 100 + n_log_scale


class TailCalibration:
    """Per-column tail probabilities of non-negative statistics (larger = stranger)."""

    def __init__(self, min_tail_scale: np.ndarray):
        self.min_tail_scale = np.asarray(min_tail_scale, dtype=float)

    def fit(self, stats: np.ndarray) -> "TailCalibration":
        stats = np.asarray(stats, dtype=float)
        n = len(stats)
        self.body_ = np.quantile(stats, BODY_LEVELS, axis=0).T  # (features, levels)
        self.u_ = self.body_[:, -1]
        above = stats > self.u_
        self.p_u_ = np.maximum(above.mean(axis=0), 1.0 / (n + 1))
        self.shape_ = np.zeros(stats.shape[1])
        self.beta_ = np.array(self.min_tail_scale, dtype=float)
        for j in range(stats.shape[1]):
            excess = stats[above[:, j], j] - self.u_[j]
            shape, scale = _pareto_tail(excess)
            self.shape_[j] = shape
            self.beta_[j] = max(scale, self.min_tail_scale[j])
        return self

    def evidence(self, stats: np.ndarray) -> np.ndarray:
        """-log10 of each statistic's tail probability (0 = ordinary, larger = rarer)."""
        stats = np.asarray(stats)
        e = np.empty(stats.shape, dtype=float, order="F")  # filled a column at a time
        for j in range(stats.shape[1]):
            x = np.ascontiguousarray(stats[:, j], dtype=float)
            column = -np.log10(1.0 - np.interp(x, self.body_[j], BODY_LEVELS))
            # The tail is computed only where it applies: beyond the 99th percentile, ~1%.
            above = np.flatnonzero(x > self.u_[j])
            if len(above):
                column[above] = _tail_evidence(x[above], self.u_[j], self.beta_[j],
                                               self.shape_[j], self.p_u_[j])
            e[:, j] = column
        return e


LN10 = np.log(10.0)


def _tail_evidence(x: np.ndarray, u, beta, shape, p_u) -> np.ndarray:
    """-log10 of the fitted tail's probability of values beyond the 99th percentile u
    (element-wise), in logs: no rarity underflows to a tie."""
    excess = (x - u) / beta
    positive = shape > 1e-6
    with np.errstate(divide="ignore", invalid="ignore"):  # the exponential case's 0/0
        pareto = np.log1p(shape * excess) / shape
    return np.maximum(np.where(positive, pareto, excess) / LN10 - np.log10(p_u), -np.log10(p_u))


class StackedCalibration:
    """The calibrations of several meters' models (same statistics), one row per meter: the
    probabilities of readings of many meters at once (live scoring)."""

    def __init__(self, calibrations: list[TailCalibration]):
        self.body = np.stack([c.body_ for c in calibrations])  # meters x features x levels
        self.u, self.beta, self.shape, self.p_u = (
            np.stack([getattr(c, name) for c in calibrations])
            for name in ("u_", "beta_", "shape_", "p_u_"))

    def share(self, calibrations: list[TailCalibration]) -> None:
        """Make each calibration's body (its largest part) a view of its row of the stack."""
        for n, calibration in enumerate(calibrations):
            calibration.body_ = self.body[n]

    def evidence(self, stats: np.ndarray, meters: np.ndarray) -> np.ndarray:
        """As TailCalibration.evidence, each row of stats with the calibration of its meter."""
        x = np.asarray(stats, dtype=float)
        body = self.body[meters]
        # np.interp per row: j is the last level at or below x
        j = (body <= x[..., None]).sum(axis=-1) - 1
        inside = (j >= 0) & (j < len(BODY_LEVELS) - 1)
        lo = np.clip(j, 0, len(BODY_LEVELS) - 2)
        x0 = np.take_along_axis(body, lo[..., None], axis=-1)[..., 0]
        x1 = np.take_along_axis(body, lo[..., None] + 1, axis=-1)[..., 0]
        f0, f1 = BODY_LEVELS[lo], BODY_LEVELS[lo + 1]
        with np.errstate(divide="ignore", invalid="ignore"):  # rows outside: not used
            level = np.where(inside, (f1 - f0) / (x1 - x0) * (x - x0) + f0,
                             np.where(j < 0, BODY_LEVELS[0], BODY_LEVELS[-1]))
        u, p_u = self.u[meters], self.p_u[meters]
        with np.errstate(divide="ignore", invalid="ignore"):  # rows in the tail: not used
            body = -np.log10(1.0 - level)
        return np.where(x > u, _tail_evidence(x, u, self.beta[meters], self.shape[meters], p_u),
                        body)
