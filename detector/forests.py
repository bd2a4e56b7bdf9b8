"""IsolationForests as flat node arrays of compact types, and many meters' forests stacked
into one set of such arrays, walked together: the forest evidence for a few readings of each
of a thousand meters in a few numpy steps, where scikit-learn's score_samples costs about a
millisecond per call whatever the readings.

A fitted forest is flattened once (`FlatForest.of`) and its scikit-learn estimators dropped:
the flat arrays are all a model keeps. The result is scikit-learn's `-score_samples` exactly:
the same leaf for every reading, the same path lengths (the tree's depth of the leaf plus the
average path length of its samples) summed tree by tree in the same order, and the same
normalisation."""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import IsolationForest
from sklearn.ensemble._iforest import _average_path_length

# Node numbers: 4 bytes are plenty (a thousand meters' forests have ~6 million nodes).
NODE = np.int32


class FlatForest:
    """One forest's trees as flat arrays, node numbers from 0. scikit-learn grows trees depth
    first, so a node's left child is the next node, and the right one is kept as the distance
    to it (`jump`: the same wherever the forest sits in a stack). A leaf's threshold is -inf
    and its jump 0: every walk takes the same number of steps and stays on its leaf."""

    __slots__ = ("feature", "threshold", "jump", "value", "roots", "depth", "denominator",
                 "fitted")

    def __init__(self, feature: np.ndarray, threshold: np.ndarray, jump: np.ndarray,
                 value: np.ndarray, roots: np.ndarray, depth: int, denominator: float,
                 fitted: IsolationForest | None = None):
        self.feature = feature      # uint8: a forest sees few features
        self.threshold = threshold  # float32, rounded down: see `_float32_below`
        self.jump = jump            # int16: a tree has a few hundred nodes at most
        self.value = value          # at a leaf: its path length, as scikit-learn adds it up
        self.roots = roots
        self.depth = depth
        self.denominator = denominator
        # While a model is being trained, its scikit-learn forest scores the training window
        # faster than the flat walk; it is never stored (pickled) nor loaded.
        self.fitted = fitted

    def __getstate__(self):
        return {name: getattr(self, name) for name in self.__slots__ if name != "fitted"}

    def __setstate__(self, state):
        self.fitted = None
        for name, value in state.items():
            setattr(self, name, value)

    @classmethod
    def of(cls, forest: IsolationForest) -> "FlatForest":
        if forest._max_features != forest.n_features_in_:
            raise ValueError("only forests whose trees see every feature can be flattened")
        if forest.n_features_in_ > np.iinfo(np.uint8).max:
            raise ValueError("a flat forest sees at most 255 features")
        feature, threshold, jump, value, roots = [], [], [], [], []
        offset = 0
        for tree, path, average in zip(forest.estimators_, forest._decision_path_lengths,
                                       forest._average_path_length_per_tree):
            nodes = tree.tree_
            own = np.arange(nodes.node_count)
            leaf = nodes.children_left == -1
            if not np.array_equal(nodes.children_left[~leaf], own[~leaf] + 1):
                raise ValueError("a tree not grown depth first cannot be flattened")
            feature.append(np.where(leaf, 0, nodes.feature))
            threshold.append(np.where(leaf, -np.inf, nodes.threshold))
            jump.append(np.where(leaf, 0, nodes.children_right - own))
            value.append(path + average - 1.0)
            roots.append(offset)
            offset += nodes.node_count
        return cls(np.concatenate(feature).astype(np.uint8),
                   _float32_below(np.concatenate(threshold)),
                   _int16(np.concatenate(jump)), np.concatenate(value),
                   np.array(roots, dtype=NODE),
                   max(tree.tree_.max_depth for tree in forest.estimators_),
                   float(len(forest.estimators_) * _average_path_length([forest._max_samples])[0]),
                   forest)

    @property
    def nbytes(self) -> int:
        return sum(getattr(self, name).nbytes for name in (
            "feature", "threshold", "jump", "value", "roots"))

    def isolation(self, inputs: np.ndarray) -> np.ndarray:
        """-score_samples of each row of inputs: tree after tree over blocks of rows (a tree's
        few nodes and a block's walk stay in the CPU's cache)."""
        if self.fitted is not None:
            return -self.fitted.score_samples(inputs)
        inputs = np.asarray(inputs, dtype=np.float32)  # as scikit-learn compares them
        count, width = inputs.shape
        values = inputs.reshape(-1)
        feature = self.feature.astype(NODE)
        depths = np.zeros(count)
        for start in range(0, count, BLOCK_ROWS):
            end = min(count, start + BLOCK_ROWS)
            at = np.arange(start, end, dtype=np.int64) * width
            block = depths[start:end]
            for root in self.roots:  # tree after tree, as scikit-learn adds them up
                nodes = np.full(end - start, root, dtype=NODE)
                for _ in range(self.depth):
                    goes_left = values[at + feature[nodes]] <= self.threshold[nodes]
                    nodes = np.where(goes_left, nodes + 1, nodes + self.jump[nodes])
                block += self.value[nodes]
        return 2.0 ** -(depths / self.denominator)


BLOCK_ROWS = 8192


def _int16(jump: np.ndarray) -> np.ndarray:
    if jump.max(initial=0) > np.iinfo(np.int16).max:
        raise ValueError("a tree too large to flatten")
    return jump.astype(np.int16)


def _float32_below(threshold: np.ndarray) -> np.ndarray:
    """The largest float32 at or below each threshold: scikit-learn compares float32 inputs
    with float64 thresholds, and for a float32 x, x <= t exactly when x <= this."""
    rounded = threshold.astype(np.float32)
    above = rounded.astype(np.float64) > threshold
    rounded[above] = np.nextafter(rounded[above], np.float32(-np.inf))
    return rounded


class ForestStack:
    """The trees of several flat forests (the same number of trees each), one row of roots
    per forest."""

    def __init__(self, forests: list[FlatForest]):
        self.edges = np.cumsum([0] + [len(part.threshold) for part in forests])
        starts = self.edges[:-1].astype(NODE)
        self.feature = np.concatenate([part.feature for part in forests])
        self.threshold = np.concatenate([part.threshold for part in forests])
        self.jump = np.concatenate([part.jump for part in forests])
        self.value = np.concatenate([part.value for part in forests])
        self.roots = np.column_stack([part.roots + start for part, start in zip(forests, starts)])
        self.depth = max(part.depth for part in forests)
        self.denominator = np.array([part.denominator for part in forests])

    def share(self, forests: list[FlatForest]) -> None:
        """Make the stacked forests' node arrays views of their part of the stack: one copy
        of them in memory, for as long as the stack lives."""
        for part, start, end in zip(forests, self.edges[:-1], self.edges[1:]):
            part.feature, part.threshold, part.jump, part.value = (
                whole[start:end] for whole in (self.feature, self.threshold, self.jump,
                                               self.value))

    def isolation(self, inputs: np.ndarray, forests: np.ndarray) -> np.ndarray:
        """-score_samples of each row of inputs under the forest (position) given for it:
        every tree at once (a live cycle's few readings per meter)."""
        inputs = np.asarray(inputs, dtype=np.float32)  # as scikit-learn compares them
        nodes = self.roots[:, forests]  # trees x readings
        row = np.arange(len(inputs))
        for _ in range(self.depth):
            goes_left = inputs[row, self.feature[nodes]] <= self.threshold[nodes]
            nodes = np.where(goes_left, nodes + 1, nodes + self.jump[nodes])
        depths = np.zeros(len(inputs))
        for leaves in nodes:  # tree after tree, as scikit-learn adds them up
            depths += self.value[leaves]
        return 2.0 ** -(depths / self.denominator[forests])
