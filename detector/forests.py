"""Many meters' IsolationForests as one set of flat node arrays, walked together: the forest
evidence for a few readings of each of a thousand meters in a few numpy steps, where
scikit-learn's score_samples costs about a millisecond per call whatever the readings.

The result is scikit-learn's `-score_samples` exactly: the same leaf for every reading, the same
path lengths (the tree's depth of the leaf plus the average path length of its samples) summed
tree by tree in the same order, and the same normalisation."""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np
from sklearn.ensemble import IsolationForest
from sklearn.ensemble._iforest import _average_path_length


class ForestStack:
    """The trees of several fitted IsolationForests (the same number of trees each), one row
    of roots per forest."""

    def __init__(self, forests: list[IsolationForest]):
        parts = [_flat(forest) for forest in forests]
        starts = np.cumsum([0] + [len(part.threshold) for part in parts[:-1]]).astype(NODE)
        self.feature = np.concatenate([part.feature for part in parts])
        self.threshold = np.concatenate([part.threshold for part in parts])
        self.left = np.concatenate([part.left + start for part, start in zip(parts, starts)])
        self.right = np.concatenate([part.right + start for part, start in zip(parts, starts)])
        self.value = np.concatenate([part.value for part in parts])
        self.roots = np.column_stack([part.roots + start for part, start in zip(parts, starts)])
        self.depth = max(part.depth for part in parts)
        self.denominator = np.array([part.denominator for part in parts])

    def isolation(self, inputs: np.ndarray, forests: np.ndarray) -> np.ndarray:
        """-score_samples of each row of inputs under the forest (position) given for it."""
        inputs = np.asarray(inputs, dtype=np.float32)  # as scikit-learn compares them
        nodes = self.roots[:, forests]  # trees x readings
        row = np.arange(len(inputs))
        for _ in range(self.depth):
            goes_left = inputs[row, self.feature[nodes]] <= self.threshold[nodes]
            nodes = np.where(goes_left, self.left[nodes], self.right[nodes])
        depths = np.zeros(len(inputs))
        for leaves in nodes:  # tree after tree, as scikit-learn adds them up
            depths += self.value[leaves]
        return 2.0 ** -(depths / self.denominator[forests])


@dataclass(frozen=True)
class _Flat:
    """One forest's trees as flat arrays (node numbers from 0)."""

    feature: np.ndarray
    threshold: np.ndarray
    left: np.ndarray
    right: np.ndarray
    value: np.ndarray     # at a leaf: its path length, as scikit-learn adds it up
    roots: np.ndarray
    depth: int
    denominator: float


# Node numbers and features: 4 bytes are plenty (a thousand meters' forests have ~6 million
# nodes) and halve the memory the stacks of many meters take.
NODE = np.int32
# Flattened once per fitted forest (a thousand forests take a second), kept while it lives:
# stacks are rebuilt whenever one meter's model changes.
_FLATTENED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _flat(forest: IsolationForest) -> _Flat:
    flat = _FLATTENED.get(forest)
    if flat is not None:
        return flat
    if forest._max_features != forest.n_features_in_:
        raise ValueError("only forests whose trees see every feature can be stacked")
    feature, threshold, left, right, value, roots = [], [], [], [], [], []
    offset = 0
    for tree, path, average in zip(forest.estimators_, forest._decision_path_lengths,
                                   forest._average_path_length_per_tree):
        nodes = tree.tree_
        own = np.arange(nodes.node_count)
        leaf = nodes.children_left == -1
        feature.append(np.where(leaf, 0, nodes.feature))
        threshold.append(nodes.threshold)
        # A leaf is its own child: every walk takes the same number of steps.
        left.append(np.where(leaf, own, nodes.children_left) + offset)
        right.append(np.where(leaf, own, nodes.children_right) + offset)
        value.append(path + average - 1.0)
        roots.append(offset)
        offset += nodes.node_count
    flat = _FLATTENED[forest] = _Flat(
        np.concatenate(feature).astype(NODE), np.concatenate(threshold),
        np.concatenate(left).astype(NODE), np.concatenate(right).astype(NODE),
        np.concatenate(value), np.array(roots, dtype=NODE),
        max(tree.tree_.max_depth for tree in forest.estimators_),
        float(len(forest.estimators_) * _average_path_length([forest._max_samples])[0]))
    return flat
