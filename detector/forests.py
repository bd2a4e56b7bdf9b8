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

from collections.abc import Iterator

import numpy as np
from sklearn.ensemble import IsolationForest
from sklearn.ensemble._iforest import _average_path_length
from sklearn.tree._tree import NODE_DTYPE, TREE_LEAF, TREE_UNDEFINED, Tree

# Node numbers: 4 bytes are plenty (a thousand meters' forests have ~6 million nodes).
NODE = np.int32


class FlatForest:
    """One forest's trees as flat arrays, node numbers from 0. scikit-learn grows trees depth
    first, so a node's left child is the next node, and the right one is kept as the distance
    to it (`jump`: the same wherever the forest sits in a stack). A leaf's jump is 0: every
    walk takes the same number of steps and stays on its leaf. `split` is a node's threshold
    (float64, as scikit-learn compares the float32 inputs with it) or, at a leaf, its path
    length as scikit-learn adds it up."""

    __slots__ = ("feature", "split", "jump", "roots", "depth", "denominator")

    def __init__(self, feature: np.ndarray, split: np.ndarray, jump: np.ndarray,
                 roots: np.ndarray, depth: int, denominator: float):
        self.feature = feature  # uint8: a forest sees few features
        self.split = split
        self.jump = jump        # int16: a tree has a few hundred nodes at most
        self.roots = roots
        self.depth = depth
        self.denominator = denominator

    def __getstate__(self):
        return {name: getattr(self, name) for name in self.__slots__}

    def __setstate__(self, state):
        for name, value in state.items():
            setattr(self, name, value)

    @classmethod
    def of(cls, forest: IsolationForest) -> "FlatForest":
        if forest._max_features != forest.n_features_in_:
            raise ValueError("only forests whose trees see every feature can be flattened")
        if forest.n_features_in_ > np.iinfo(np.uint8).max:
            raise ValueError("a flat forest sees at most 255 features")
        feature, split, jump, roots = [], [], [], []
        offset = 0
        for tree, path, average in zip(forest.estimators_, forest._decision_path_lengths,
                                       forest._average_path_length_per_tree):
            nodes = tree.tree_
            own = np.arange(nodes.node_count)
            leaf = nodes.children_left == -1
            if not np.array_equal(nodes.children_left[~leaf], own[~leaf] + 1):
                raise ValueError("a tree not grown depth first cannot be flattened")
            feature.append(np.where(leaf, 0, nodes.feature))
            split.append(np.where(leaf, path + average - 1.0, nodes.threshold))
            jump.append(np.where(leaf, 0, nodes.children_right - own))
            roots.append(offset)
            offset += nodes.node_count
        return cls(np.concatenate(feature).astype(np.uint8),
                   np.concatenate(split), _int16(np.concatenate(jump)),
                   np.array(roots, dtype=NODE),
                   max(tree.tree_.max_depth for tree in forest.estimators_),
                   float(len(forest.estimators_) * _average_path_length([forest._max_samples])[0]))

    def isolation(self, inputs: np.ndarray) -> np.ndarray:
        """-score_samples of each row of inputs: each tree rebuilt for the call as a
        scikit-learn `Tree` (its C walk is the fastest over many rows) and its leaves' path
        lengths added up tree after tree, as scikit-learn does."""
        inputs = np.ascontiguousarray(inputs, dtype=np.float32)  # as scikit-learn compares them
        depths = np.zeros(len(inputs))
        for root, tree in self._trees(inputs.shape[1]):
            depths += self.split[root + tree.apply(inputs)]
        return 2.0 ** -(depths / self.denominator)

    def _trees(self, features: int) -> Iterator[tuple[int, Tree]]:
        """(first node, scikit-learn tree) of each tree, with the nodes' children, features
        and thresholds (what `Tree.apply` reads; sklearn.tree._tree's layout)."""
        ends = [*self.roots[1:], len(self.split)]
        for root, end in zip(self.roots, ends):
            jump = self.jump[root:end].astype(np.intp)
            leaf = jump == 0
            own = np.arange(len(jump))
            nodes = np.zeros(len(jump), dtype=NODE_DTYPE)
            nodes["left_child"] = np.where(leaf, TREE_LEAF, own + 1)
            nodes["right_child"] = np.where(leaf, TREE_LEAF, own + jump)
            nodes["feature"] = np.where(leaf, TREE_UNDEFINED, self.feature[root:end])
            nodes["threshold"] = np.where(leaf, TREE_UNDEFINED, self.split[root:end])
            tree = Tree(features, np.array([1], dtype=np.intp), 1)
            tree.__setstate__({"max_depth": self.depth, "node_count": len(jump), "nodes": nodes,
                               "values": np.zeros((len(jump), 1, 1))})
            yield int(root), tree


def _int16(jump: np.ndarray) -> np.ndarray:
    if jump.max(initial=0) > np.iinfo(np.int16).max:
        raise ValueError("a tree too large to flatten")
    return jump.astype(np.int16)


class ForestStack:
    """The trees of several flat forests (the same number of trees each), one row of roots
    per forest."""

    def __init__(self, forests: list[FlatForest]):
        self.edges = np.cumsum([0] + [len(part.split) for part in forests])
        starts = self.edges[:-1].astype(NODE)
        self.feature = np.concatenate([part.feature for part in forests])
        self.split = np.concatenate([part.split for part in forests])
        self.jump = np.concatenate([part.jump for part in forests])
        self.roots = np.column_stack([part.roots + start for part, start in zip(forests, starts)])
        self.depth = max(part.depth for part in forests)
        self.denominator = np.array([part.denominator for part in forests])

    def share(self, forests: list[FlatForest]) -> None:
        """Make the stacked forests' node arrays views of their part of the stack: one copy
        of them in memory, for as long as the stack lives."""
        for part, start, end in zip(forests, self.edges[:-1], self.edges[1:]):
            part.feature, part.split, part.jump = (
                whole[start:end] for whole in (self.feature, self.split, self.jump))

    def isolation(self, inputs: np.ndarray, forests: np.ndarray) -> np.ndarray:
        """-score_samples of each row of inputs under the forest (position) given for it:
        every tree at once (a live cycle's few readings per meter)."""
        inputs = np.asarray(inputs, dtype=np.float32)  # as scikit-learn compares them
        nodes = self.roots[:, forests]  # trees x readings
        row = np.arange(len(inputs))
        for _ in range(self.depth):
            jump = self.jump[nodes]
            goes_left = (inputs[row, self.feature[nodes]] <= self.split[nodes]) & (jump != 0)
            nodes = np.where(goes_left, nodes + 1, nodes + jump)
        depths = np.zeros(len(inputs))
        for leaves in nodes:  # tree after tree, as scikit-learn adds them up
            depths += self.split[leaves]
        return 2.0 ** -(depths / self.denominator[forests])
