"""What drift judging keeps instead of raw windows: one summary of each reference window and
summaries of current readings that add up.

Judging a current window against a reference window needs far less than both windows' readings:

- from the reference (fixed until the model is retrained): per stratum a grid of its sorted
  values with their rank ranges, dense enough that each current value's fine PIT bin comes out
  exactly as from all the reference values (`BaselineSummary.fine_bins`); the in-sample PIT
  counts per (part of day, fine bin); the held-out day counts that calibration resamples; the
  stratum medians, quantile edges and counts of the residuals, and their standard deviation;
- from the current readings: counts per (part of day, fine PIT bin), and the count and sum of
  the residuals in each residual bin (and beyond the reference's range). These add up,
  so a window's summary is the sum of its days' summaries and each day is summarised once.

PSI and its calibrated threshold come out of these as from the raw values (the bins are
exact). KS and Wasserstein are taken on the fine bins: `drift.distances` bounds their error.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, fields

import numpy as np

from drift.baselines import DAY_PARTS, STRATA, SeasonalBaseline, day_part

FINE_PER_BIN = 10  # fine PIT bins per PSI bin; KS is taken on the fine bins
RESIDUAL_BINS = 200  # quantile bins of the reference residuals; Wasserstein is taken on them
# Stream numbers of the seeded random generators: reference jitter, current jitter, calibration.
REFERENCE_STREAM, CURRENT_STREAM, CALIBRATION_STREAM = 0, 1, 2


@dataclass
class BaselineSummary:
    """One feature's reference window, summarised for judging. A reference without values
    keeps only its counts (`reference_n` 0)."""

    reference_n: int
    reference_days: int
    bins: int
    low: float = 0.0  # sort keys of the baseline (SeasonalBaseline.keys)
    span: float = 1.0
    counts: np.ndarray | None = None  # (STRATA,) reference values per stratum
    grid_keys: np.ndarray | None = None  # sort keys of the grid values, sorted
    grid_starts: np.ndarray | None = None  # (STRATA + 1,) where each stratum's grid starts
    grid_below: np.ndarray | None = None  # rank range of each grid value in its stratum
    grid_not_above: np.ndarray | None = None
    reference_fine: np.ndarray | None = None  # (DAY_PARTS, fine bins) in-sample PIT counts
    held_out: np.ndarray | None = None  # (days, DAY_PARTS, bins) held-out PIT counts
    medians: np.ndarray | None = None  # (STRATA,) median of each stratum
    residual_edges: np.ndarray | None = None  # (RESIDUAL_BINS + 1,) residual quantiles
    residual_counts: np.ndarray | None = None  # (RESIDUAL_BINS + 2,) below, bins, above
    residual_sums: np.ndarray | None = None  # sums of the residuals in the same slots
    residual_std: float = 0.0

    @property
    def fine(self) -> int:
        return self.bins * FINE_PER_BIN

    @classmethod
    def build(cls, values: np.ndarray, stratum: np.ndarray, day: np.ndarray, *, bins: int,
              jitter: np.ndarray | None = None, seed: int = 0) -> "BaselineSummary":
        """From one feature's reference values (NaN = missing) and their local calendar.
        `jitter` (uniform draws, one per present value) defaults to the feature's seeded stream."""
        keep = ~np.isnan(values)
        values, stratum, day = values[keep], stratum[keep], day[keep]
        summary = cls(len(values), len(np.unique(day)), bins)
        if len(values) == 0:
            return summary
        if jitter is None:
            jitter = reference_jitter(seed, len(values))
        base = SeasonalBaseline(values, stratum)
        summary.low, summary.span, summary.counts = base.low_, base.span_, base.counts_
        summary._draw_grid(base)
        reference_pit = base.reference_pit(jitter)
        summary.reference_fine = _fine_counts(_fine_bin(reference_pit, summary.fine), stratum, summary.fine)
        held_out = base.held_out_pit(day, jitter)
        known = ~np.isnan(held_out)  # NaN: no other day holds values of that stratum
        _, day_index = np.unique(day[known], return_inverse=True)
        cells = day_part(stratum[known]) * bins + np.minimum((held_out[known] * bins).astype(np.int64), bins - 1)
        summary.held_out = np.bincount(day_index * DAY_PARTS * bins + cells,
                                       minlength=(day_index.max(initial=-1) + 1) * DAY_PARTS * bins
                                       ).reshape(-1, DAY_PARTS, bins)
        summary.medians = base.medians_
        residuals = base.residuals(values, stratum)
        summary.residual_std = float(np.std(residuals))
        summary.residual_edges = np.quantile(residuals, np.linspace(0, 1, RESIDUAL_BINS + 1))
        slots = _residual_slot(residuals, summary.residual_edges)
        summary.residual_counts = np.bincount(slots, minlength=RESIDUAL_BINS + 2)
        summary.residual_sums = np.bincount(slots, weights=residuals, minlength=RESIDUAL_BINS + 2)
        return summary

    def _draw_grid(self, base: SeasonalBaseline) -> None:
        """Per stratum of c values, the sorted values at positions m - 1 and m for every fine
        level j (m = ceil(j c / fine)), and the first and last. Between two consecutive grid
        values no level boundary can fall, so a value's fine bin is known from its neighbours
        (see `fine_bins`)."""
        counts = self.counts
        starts = np.cumsum(counts) - counts
        levels = np.arange(1, self.fine)
        boundary = -(-levels[None, :] * counts[:, None] // self.fine)  # ceil(j c / fine)
        positions = np.concatenate([boundary - 1, boundary, np.zeros((STRATA, 1), np.int64),
                                    counts[:, None] - 1], axis=1)
        positions = np.clip(positions, 0, np.maximum(counts - 1, 0)[:, None]) + starts[:, None]
        chosen = np.unique(positions[counts > 0])
        self.grid_keys = base.sorted_keys_[chosen]
        self.grid_below = base.sorted_below_[chosen].astype(np.int32)
        self.grid_not_above = base.sorted_not_above_[chosen].astype(np.int32)
        grid_stratum = np.repeat(np.arange(STRATA), counts)[chosen]
        self.grid_starts = np.searchsorted(grid_stratum, np.arange(STRATA + 1))

    def keys(self, values: np.ndarray, stratum: np.ndarray) -> np.ndarray:
        # As SeasonalBaseline.keys: values beyond the reference's range rank first or last.
        return stratum + 0.5 * np.clip((values - self.low) / self.span, -0.4, 1.4)

    def fine_bins(self, values: np.ndarray, stratum: np.ndarray, jitter: np.ndarray) -> np.ndarray:
        """Fine PIT bin of each value: the bin of its share of the same stratum's reference
        values below it (ties spread by `jitter`), the same as from all reference values.

        A value equal to a grid value takes that value's rank range; a value between two
        consecutive grid values ranks somewhere between the first's 'not above' and the
        second's 'below', and no fine level boundary falls in that range. Strata need values.
        """
        keys = self.keys(values, stratum)
        # Binary searches of sorted queries: several times faster than of scattered ones.
        order = np.argsort(keys)
        left, right = np.empty(len(keys), np.int64), np.empty(len(keys), np.int64)
        left[order] = np.searchsorted(self.grid_keys, keys[order], "left")
        right[order] = np.searchsorted(self.grid_keys, keys[order], "right")
        hit = right > left
        at = np.minimum(left, len(self.grid_keys) - 1)
        before = np.maximum(left - 1, 0)
        between = np.where(left == self.grid_starts[stratum], 0, self.grid_not_above[before])
        below = np.where(hit, self.grid_below[at], between)
        not_above = np.where(hit, self.grid_not_above[at], between)
        return _fine_bin((below + jitter * (not_above - below)) / self.counts[stratum], self.fine)

    def summarise(self, values: np.ndarray, stratum: np.ndarray, day: np.ndarray, *, seed: int,
                  min_per_stratum: int) -> dict[int, "WindowSummary"]:
        """Current readings (NaN = missing, in time order) summarised against this baseline,
        one summary per distinct `day`; each day's ties are broken by its own seeded stream
        (`current_rng`), so a day gives the same summary alone or with others. Readings in
        strata the reference holds fewer than `min_per_stratum` values of are left out."""
        days, day_index = np.unique(day, return_inverse=True)
        present = ~np.isnan(values)
        present_counts = np.bincount(day_index[present], minlength=len(days))
        fine = np.zeros((len(days), DAY_PARTS, self.fine), np.int64)
        residual = np.zeros((len(days), RESIDUAL_BINS + 2), np.int64)
        sums = np.zeros((len(days), RESIDUAL_BINS + 2))
        if self.reference_n > 0:
            keep = present & (self.counts[stratum] >= max(min_per_stratum, 1))
            values, stratum, day_index = values[keep], stratum[keep], day_index[keep]
            order = np.argsort(day_index, kind="stable")
            jitter = np.empty(len(values))
            per_day = np.bincount(day_index, minlength=len(days))
            for number, rows in zip(days, np.split(order, np.cumsum(per_day)[:-1])):
                jitter[rows] = current_rng(seed, int(number)).random(len(rows))
            cells = day_part(stratum).astype(np.int64) * self.fine + self.fine_bins(values, stratum, jitter)
            size = DAY_PARTS * self.fine
            fine = np.bincount(day_index * size + cells, minlength=len(days) * size
                               ).reshape(len(days), DAY_PARTS, self.fine)
            residuals = values - self.medians[stratum]
            slots = RESIDUAL_BINS + 2
            flat = day_index * slots + _residual_slot(residuals, self.residual_edges)
            residual = np.bincount(flat, minlength=len(days) * slots).reshape(len(days), slots)
            sums = np.bincount(flat, weights=residuals, minlength=len(days) * slots).reshape(len(days), slots)
        return {int(number): WindowSummary(int(present_counts[i]), fine[i], residual[i], sums[i])
                for i, number in enumerate(days)}

    def reference_cells(self) -> np.ndarray:
        return _coarse(self.reference_fine, self.bins)

    def residual_widths(self) -> np.ndarray:
        """Widths of the residual slots: infinite below and above the reference's range."""
        return np.concatenate([[np.inf], np.diff(self.residual_edges), [np.inf]])

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}.{f.name}": np.asarray(getattr(self, f.name)) for f in fields(self)
                if getattr(self, f.name) is not None}

    @classmethod
    def from_arrays(cls, arrays, prefix: str) -> "BaselineSummary":
        found = {f.name: arrays[f"{prefix}.{f.name}"] for f in fields(cls) if f"{prefix}.{f.name}" in arrays}
        for name in ("reference_n", "reference_days", "bins"):
            found[name] = int(found[name])
        for name in ("low", "span", "residual_std"):
            found[name] = float(found[name])
        return cls(**found)


@dataclass
class WindowSummary:
    """Current readings of one feature summarised against a baseline; summaries add up."""

    present: int  # non-missing readings, before leaving out thinly covered strata
    fine: np.ndarray  # (DAY_PARTS, fine bins) PIT counts
    residual: np.ndarray  # (RESIDUAL_BINS + 2,) residual counts: below, bins, above
    residual_sums: np.ndarray  # sums of the residuals in the same slots

    @classmethod
    def empty(cls, fine: int) -> "WindowSummary":
        return cls(0, np.zeros((DAY_PARTS, fine), np.int64), np.zeros(RESIDUAL_BINS + 2, np.int64),
                   np.zeros(RESIDUAL_BINS + 2))

    @property
    def n(self) -> int:
        return int(self.fine.sum())

    def __add__(self, other: "WindowSummary") -> "WindowSummary":
        return WindowSummary(self.present + other.present, self.fine + other.fine,
                             self.residual + other.residual, self.residual_sums + other.residual_sums)

    def cells(self, bins: int) -> np.ndarray:
        return _coarse(self.fine, bins)

    def to_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        # int32: a day's counts stay far below 2**31 at any reading rate.
        return (np.concatenate([[self.present], self.fine.ravel(), self.residual]).astype(np.int32),
                self.residual_sums)

    @classmethod
    def from_vectors(cls, counts: np.ndarray, sums: np.ndarray, fine: int) -> "WindowSummary":
        cut = 1 + DAY_PARTS * fine
        counts = counts.astype(np.int64)
        return cls(int(counts[0]), counts[1:cut].reshape(DAY_PARTS, fine), counts[cut:], sums)


def reference_jitter(seed: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, REFERENCE_STREAM]).random(n)


def current_rng(seed: int, day: int) -> np.random.Generator:
    """The jitter stream of one day's current readings (fixed: rerunning gives the same report)."""
    return np.random.default_rng([seed, CURRENT_STREAM, day + 2 ** 31])


def calibration_rng(seed: int) -> np.random.Generator:
    return np.random.default_rng([seed, CALIBRATION_STREAM])


def pack(arrays: dict[str, np.ndarray]) -> bytes:
    """Arrays as bytes for a bytea column: a JSON header (name, dtype, shape of each), then
    their bytes, compressed."""
    arrays = {name: np.asarray(array) for name, array in arrays.items()}  # tobytes() is in C order
    header = json.dumps([(name, array.dtype.str, array.shape) for name, array in arrays.items()]).encode()
    body = b"".join(array.tobytes() for array in arrays.values())
    return struct.pack("<I", len(header)) + header + zlib.compress(body, 1)


def unpack(data: bytes) -> dict[str, np.ndarray]:
    (length,) = struct.unpack_from("<I", data)
    header = json.loads(bytes(data[4:4 + length]))
    body = zlib.decompress(data[4 + length:])
    arrays, offset = {}, 0
    for name, dtype, shape in header:
        count = int(np.prod(shape, dtype=np.int64))
        arrays[name] = np.frombuffer(body, dtype, count, offset).reshape(tuple(shape))
        offset += count * np.dtype(dtype).itemsize
    return arrays


def _fine_bin(pit: np.ndarray, fine: int) -> np.ndarray:
    return np.minimum((pit * fine).astype(np.int64), fine - 1)


def _fine_counts(fine_bins: np.ndarray, stratum: np.ndarray, fine: int) -> np.ndarray:
    cells = day_part(stratum).astype(np.int64) * fine + fine_bins
    return np.bincount(cells, minlength=DAY_PARTS * fine).reshape(DAY_PARTS, fine)


def _coarse(fine_counts: np.ndarray, bins: int) -> np.ndarray:
    """(parts, fine bins) counts as (parts, bins): fine bin f lies in PSI bin f // FINE_PER_BIN."""
    return fine_counts.reshape(DAY_PARTS, bins, FINE_PER_BIN).sum(axis=-1)


def _residual_slot(residuals: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Slot of each residual: 0 below the first edge, i + 1 in bin [e_i, e_i+1) (the last one
    closed), len(edges) above the last edge."""
    inside = np.clip(np.searchsorted(edges, residuals, "right") - 1, 0, len(edges) - 2) + 1
    return np.where(residuals < edges[0], 0, np.where(residuals > edges[-1], len(edges), inside))
