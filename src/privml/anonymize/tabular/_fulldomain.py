"""Full-domain generalisation: one hierarchy level per QI for the whole table, the level
vector chosen by an optimal search of the generalisation lattice.

Theory of operation. A lattice node is a tuple of levels, one per QI; its successors raise
one level by one. A node is *anonymous* when the records of the classes that fail the
privacy model number at most the suppression limit (those records are suppressed).

:func:`flash` follows ARX's Flash (Kohlmayer et al., 2012): walking the lattice level by
level, it builds greedy paths upward from untagged nodes, binary-searches each path for its
lowest anonymous node, and *tags* predictively: a node found anonymous tags all its
successors anonymous, one found not anonymous tags all its predecessors not anonymous, so
only the nodes that decide the frontier are checked. It returns the checked anonymous node
with the lowest loss (GCP: mean normalised generalisation of the cells, a suppressed cell
counting 1).

That is the optimum when (a) the model is monotonic and (b) the loss only grows upward —
both hold without suppression. With suppression, loss can fall as generalising saves
suppressed records, and entropy l-diversity and t-closeness stop being monotonic, so Flash
may miss the optimum (it still never returns a node it did not check). :func:`brute_force`
checks every node of a small lattice; the two results side by side expose the gap.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from privml._exceptions import ConfigError

from ._hierarchy import Compiled
from ._models import Generalised, PrivacyModel, Sensitive, class_counts

__all__ = ["Lattice", "NodeResult", "brute_force", "flash"]

Node = tuple[int, ...]
IntArray = npt.NDArray[np.int64]
BRUTE_FORCE_LIMIT = 50_000


@dataclass(frozen=True, slots=True)
class NodeResult:
    node: Node
    anonymous: bool
    loss: float
    suppressed: int


class Lattice:
    """The generalisation lattice of a table, with node evaluation."""

    def __init__(
        self,
        comps: list[Compiled],
        model: PrivacyModel,
        sens: Sensitive | None,
        n: int,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        self.comps = comps
        self.model = model
        self.sens = sens
        self.n = n
        self.heights = tuple(c.height for c in comps)
        self.limit = math.floor(model.suppression * n + 1e-9)
        self.evaluated: dict[Node, NodeResult] = {}
        self._progress = progress
        use_sa = sens is not None and model.needs_sensitive
        self._sa = sens.codes if use_sa and sens is not None else np.zeros(n, dtype=np.int64)
        self._m = sens.m if use_sa and sens is not None else 1
        # per QI and level: each row's node id made local to the level, the level's size,
        # and each row's loss
        self._codes: list[list[tuple[IntArray, int]]] = []
        self._loss: list[list[npt.NDArray[np.float64]]] = []
        for c in comps:
            row_nodes = c.nodes[c.leaf]
            codes, losses = [], []
            for j in range(c.height + 1):
                lo = int(c.nodes[:, j].min())
                codes.append((row_nodes[:, j] - lo, int(c.nodes[:, j].max()) - lo + 1))
                losses.append(c.span[row_nodes[:, j]])
            self._codes.append(codes)
            self._loss.append(losses)

    @property
    def size(self) -> int:
        return math.prod(h + 1 for h in self.heights)

    def nodes(self) -> Iterator[Node]:
        return itertools.product(*(range(h + 1) for h in self.heights))

    def successors(self, node: Node) -> list[Node]:
        return [
            (*node[:i], v + 1, *node[i + 1 :]) for i, v in enumerate(node) if v < self.heights[i]
        ]

    def predecessors(self, node: Node) -> list[Node]:
        return [(*node[:i], v - 1, *node[i + 1 :]) for i, v in enumerate(node) if v > 0]

    def classes(self, node: Node) -> tuple[IntArray, int]:
        key = np.zeros(self.n, dtype=np.int64)
        if math.prod(self._codes[j][lv][1] for j, lv in enumerate(node)) < 2**62:
            for j, lv in enumerate(node):
                codes, card = self._codes[j][lv]
                key = key * card + codes
            _, ids = np.unique(key, return_inverse=True)
        else:
            stacked = np.stack([self._codes[j][lv][0] for j, lv in enumerate(node)], axis=1)
            _, ids = np.unique(stacked, axis=0, return_inverse=True)
        ids = ids.reshape(-1).astype(np.int64)
        return ids, int(ids.max()) + 1 if len(ids) else 0

    def failing_rows(self, node: Node) -> tuple[IntArray, npt.NDArray[np.bool_]]:
        ids, n_cls = self.classes(node)
        ok = self.model.passes(class_counts(ids, n_cls, self._sa, self._m), self.sens)
        return ids, ~ok[ids]

    def evaluate(self, node: Node) -> NodeResult:
        if node in self.evaluated:
            return self.evaluated[node]
        _, fail = self.failing_rows(node)
        n_supp = int(fail.sum())
        cell = np.zeros(self.n)
        for j, lv in enumerate(node):
            cell += self._loss[j][lv]
        d = len(node)
        loss = float((cell[~fail].sum() + n_supp * d) / max(self.n * d, 1))
        res = NodeResult(node, n_supp <= self.limit, loss, n_supp)
        self.evaluated[node] = res
        if self._progress is not None:
            self._progress(len(self.evaluated))
        return res

    def release(self, node: Node, info: dict[str, object]) -> Generalised:
        ids, fail = self.failing_rows(node)
        _, first, classes = np.unique(
            np.where(fail, -1, ids), return_index=True, return_inverse=True
        )
        classes = classes.reshape(-1).astype(np.int64)
        cls_fail = fail[first]  # a class is the failing rows or one node's passing rows
        labels = {}
        loss = np.ones((self.n, len(node)))
        for j, (c, lv) in enumerate(zip(self.comps, node, strict=True)):
            row_nodes = c.nodes[c.leaf, lv]
            lab = np.asarray(c.labels, dtype=object)[row_nodes[first]]
            lab[cls_fail] = "*"
            labels[c.column] = lab
            loss[~fail, j] = c.span[row_nodes[~fail]]
        return Generalised(labels, loss, classes, fail, dict(info))


def _best(results: list[NodeResult]) -> NodeResult | None:
    anon = [r for r in results if r.anonymous]
    if not anon:
        return None
    return min(anon, key=lambda r: (round(r.loss, 12), sum(r.node), r.node))


def brute_force(lattice: Lattice) -> NodeResult | None:
    """Check every node; the anonymous one with the lowest loss (None if none is)."""
    if lattice.size > BRUTE_FORCE_LIMIT:
        raise ConfigError(
            f"the lattice has {lattice.size} nodes; brute force is for lattices of at most "
            f"{BRUTE_FORCE_LIMIT}"
        )
    return _best([lattice.evaluate(node) for node in lattice.nodes()])


def flash(lattice: Lattice) -> NodeResult | None:
    """ARX's Flash search with predictive tagging; the best *checked* anonymous node."""
    tags: dict[Node, bool] = {}

    def tag(node: Node, anonymous: bool) -> None:
        stack = [node]
        while stack:
            cur = stack.pop()
            if cur in tags:
                continue
            tags[cur] = anonymous
            stack.extend(lattice.successors(cur) if anonymous else lattice.predecessors(cur))

    def order(nodes: list[Node]) -> list[Node]:
        return sorted(nodes, key=lambda v: (sum(v), v))

    def find_path(node: Node) -> list[Node]:
        path = [node]
        while True:
            nxt = [s for s in order(lattice.successors(path[-1])) if s not in tags]
            if not nxt:
                return path
            path.append(nxt[0])

    heap: list[tuple[int, Node]] = []

    def check_path(path: list[Node]) -> None:
        low, high = 0, len(path) - 1
        while low <= high:
            mid = (low + high) // 2
            node = path[mid]
            if node in tags:  # tagged meanwhile by an earlier check on this path
                if tags[node]:
                    high = mid - 1
                else:
                    low = mid + 1
                continue
            if lattice.evaluate(node).anonymous:
                tag(node, True)
                high = mid - 1
            else:
                tag(node, False)
                heapq.heappush(heap, (sum(node), node))
                low = mid + 1

    by_level = sorted(lattice.nodes(), key=lambda v: (sum(v), v))
    for start in by_level:
        if start in tags:
            continue
        check_path(find_path(start))
        while heap:
            _, head = heapq.heappop(heap)
            for up in order(lattice.successors(head)):
                if up not in tags:
                    check_path(find_path(up))
    return _best(list(lattice.evaluated.values()))
