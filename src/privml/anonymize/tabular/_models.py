"""Privacy models (k-anonymity, distinct/entropy l-diversity, t-closeness) and the checker.

Theory of operation. Every model is judged per equivalence class from one matrix: the counts
of each sensitive value in each class (classes x values). From it come the class size (k),
the number of distinct values (distinct l), ``exp`` of the entropy (entropy l) and the earth
mover's distance of the class distribution Q to the table's distribution P (t):

* ordered distance (numeric sensitive values, ranked): ``sum_i |cumsum(Q - P)_i| / (m - 1)``;
* equal distance (categorical): ``sum_i |Q_i - P_i| / 2``;
* hierarchical distance (a hierarchy of height H is given): each internal node N at level h
  moves ``min(positive, negative extra of its children) * h / H`` (Li et al., 2007).

These are the conventions of pycanon (the independent checker the tests use). P is always
the whole released table, suppressed rows included: they are published too.

Suppressed records carry ``*`` in every quasi-identifier. They form one class that counts
toward the suppression limit; like ARX, :func:`measure` leaves it out of k, l and t unless
``include_suppressed=True`` (then it is an ordinary class, as pycanon sees it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd  # type: ignore[import-untyped,unused-ignore]

from privml._exceptions import ConfigError

from ._hierarchy import Compiled, Hierarchy, compile_column

__all__ = [
    "Achieved",
    "Generalised",
    "PrivacyModel",
    "Sensitive",
    "class_counts",
    "emd",
    "encode_sensitive",
    "measure",
]

SUPPRESSED = "*"
_EPS = 1e-9
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
LKind = Literal["distinct", "entropy"]


@dataclass(frozen=True, slots=True)
class PrivacyModel:
    """What a release must achieve. ``suppression`` is the largest fraction of records that
    may be suppressed."""

    k: int
    l: float | None = None  # noqa: E741
    l_kind: LKind = "distinct"
    t: float | None = None
    suppression: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int | np.integer) or self.k < 1:
            raise ConfigError(f"k must be an integer >= 1, got {self.k!r}")
        if self.l is not None and not self.l >= 1:
            raise ConfigError(f"l must be >= 1, got {self.l!r}")
        if self.l_kind not in ("distinct", "entropy"):
            raise ConfigError(f"l_kind must be 'distinct' or 'entropy', got {self.l_kind!r}")
        if self.l is not None and self.l_kind == "distinct" and float(self.l) != int(self.l):
            raise ConfigError(f"distinct l-diversity needs an integer l, got {self.l!r}")
        if self.t is not None and not 0 <= self.t <= 1:
            raise ConfigError(f"t must lie in [0, 1], got {self.t!r}")
        if not 0 <= self.suppression < 1:
            raise ConfigError(f"suppression must lie in [0, 1), got {self.suppression!r}")

    @property
    def needs_sensitive(self) -> bool:
        return self.l is not None or self.t is not None

    @property
    def monotonic(self) -> bool:
        """Whether generalising never breaks the model (Flash's premise). Merging classes
        keeps k and distinct l; entropy l (concave) and t (convex EMD) survive a merge only
        of classes that all pass, so with suppression they are not monotonic."""
        return self.suppression == 0 or (self.t is None and self.l_kind == "distinct")

    def passes(self, counts: FloatArray, sens: Sensitive | None) -> npt.NDArray[np.bool_]:
        """Which classes (rows of the classes x values count matrix) satisfy the model."""
        size = counts.sum(axis=1)
        ok = size >= self.k
        if self.l is not None:
            if self.l_kind == "distinct":
                ok &= (counts > 0).sum(axis=1) >= self.l
            else:
                ok &= _entropy(counts, size) >= math.log(self.l) - _EPS
        if self.t is not None:
            assert sens is not None
            ok &= emd(counts, sens) <= self.t + _EPS
        return np.asarray(ok, dtype=np.bool_)


@dataclass(frozen=True, slots=True)
class Sensitive:
    """A sensitive column encoded for the models: codes of its values in order, the table's
    distribution, and the EMD ground distance to use."""

    column: str
    codes: IntArray
    p: FloatArray
    kind: Literal["ordered", "equal", "hierarchical"]
    hierarchy: Compiled | None = None

    @property
    def m(self) -> int:
        return int(self.p.shape[0])


@dataclass(frozen=True, slots=True)
class Achieved:
    """What a released table actually achieves (from :func:`measure`)."""

    k: int
    l_distinct: int | None
    l_entropy: float | None
    t: float | None
    suppressed: int
    classes: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def encode_sensitive(
    df: pd.DataFrame, column: str, hierarchy: Hierarchy | None = None
) -> Sensitive:
    """Encode ``df[column]``: ordered EMD for numbers, equal distance for categories,
    hierarchical distance when a hierarchy is given."""
    values = df[column]
    if values.isna().any():
        row = values.index[int(np.flatnonzero(values.isna().to_numpy())[0])]
        raise ConfigError(f"sensitive column {column!r} has a missing value at row {row}")
    if hierarchy is not None:
        comp = compile_column(column, values, hierarchy)
        codes, kind = comp.leaf, "hierarchical"
    else:
        raw, _ = pd.factorize(values, sort=True)
        codes, comp = raw.astype(np.int64), None
        numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
        kind = "ordered" if numeric else "equal"
    m = int(codes.max()) + 1 if len(codes) else 0
    p = np.bincount(codes, minlength=m) / max(len(codes), 1)
    return Sensitive(column, codes, p.astype(np.float64), kind, comp)  # type: ignore[arg-type]


def class_counts(class_ids: IntArray, n_classes: int, codes: IntArray, m: int) -> FloatArray:
    """Counts of each sensitive value (columns) in each class (rows)."""
    flat = np.bincount(class_ids * m + codes, minlength=n_classes * m)
    return flat.reshape(n_classes, m).astype(np.float64)


def _entropy(counts: FloatArray, size: FloatArray) -> FloatArray:
    q = counts / np.maximum(size, 1)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(q > 0, q * np.log(np.where(q > 0, q, 1.0)), 0.0)
    return np.asarray(-terms.sum(axis=1), dtype=np.float64)


def emd(counts: FloatArray, sens: Sensitive) -> FloatArray:
    """Earth mover's distance of each class's sensitive distribution to the table's."""
    size = counts.sum(axis=1)
    r = counts / np.maximum(size, 1)[:, None] - sens.p[None, :]
    if sens.m <= 1:
        return np.zeros(len(counts))
    if sens.kind == "ordered":
        return np.asarray(np.abs(np.cumsum(r, axis=1)).sum(axis=1) / (sens.m - 1))
    if sens.kind == "equal":
        return np.asarray(0.5 * np.abs(r).sum(axis=1))
    assert sens.hierarchy is not None
    return _hierarchical_emd(r, sens.hierarchy)


def _hierarchical_emd(r: FloatArray, h: Compiled) -> FloatArray:
    nodes = h.nodes  # leaves x levels, global node ids
    m, height = nodes.shape[0], nodes.shape[1] - 1
    total = np.zeros(len(r))
    for j in range(1, height + 1):
        child_u, child_inv = np.unique(nodes[:, j - 1], return_inverse=True)
        leaf_to_child = np.zeros((m, len(child_u)))
        leaf_to_child[np.arange(m), child_inv] = 1.0
        extra = r @ leaf_to_child  # each child's surplus (+) or deficit (-) of mass
        parent_of = np.empty(len(child_u), dtype=np.int64)
        parent_of[child_inv] = nodes[:, j]
        _, par_inv = np.unique(parent_of, return_inverse=True)
        child_to_par = np.zeros((len(child_u), int(par_inv.max()) + 1))
        child_to_par[np.arange(len(child_u)), par_inv] = 1.0
        pos = np.maximum(extra, 0) @ child_to_par
        neg = np.maximum(-extra, 0) @ child_to_par
        total += (j / height) * np.minimum(pos, neg).sum(axis=1)
    return total


# ---- the checker --------------------------------------------------------------------------


def equivalence_classes(df: pd.DataFrame, qi: Sequence[str]) -> tuple[IntArray, int]:
    """Class id of each row, from the released QI values (NaN is a value like any other)."""
    if not len(df):
        return np.zeros(0, dtype=np.int64), 0
    cols = [pd.factorize(df[c], use_na_sentinel=False)[0].astype(np.int64) for c in qi]
    _, ids = np.unique(np.stack(cols, axis=1), axis=0, return_inverse=True)
    ids = ids.reshape(-1).astype(np.int64)
    return ids, int(ids.max()) + 1


def measure(
    df: pd.DataFrame,
    qi: Sequence[str],
    sensitive: str | None = None,
    *,
    sensitive_hierarchy: Hierarchy | None = None,
    include_suppressed: bool = False,
) -> Achieved:
    """Compute what a released table achieves: classes are rows with equal released QI
    values; rows with ``*`` in every QI are the suppressed class (left out of k, l and t
    unless ``include_suppressed``)."""
    missing = [c for c in [*qi, *([sensitive] if sensitive else [])] if c not in df.columns]
    if missing:
        raise ConfigError(f"unknown column {missing[0]!r}; the table has {list(df.columns)}")
    df = df.reset_index(drop=True)
    supp = np.ones(len(df), dtype=bool)
    for c in qi:
        supp &= (df[c].astype(str) == SUPPRESSED).to_numpy()
    n_supp = 0 if include_suppressed else int(supp.sum())
    keep = np.ones(len(df), dtype=bool) if include_suppressed else ~supp
    ids, n_cls = equivalence_classes(df.loc[keep], qi)
    sizes = np.bincount(ids, minlength=n_cls)
    k = int(sizes.min()) if n_cls else 0
    if sensitive is None:
        return Achieved(k, None, None, None, n_supp, n_cls)
    sens = encode_sensitive(df, sensitive, sensitive_hierarchy)
    counts = class_counts(ids, n_cls, sens.codes[keep], sens.m)
    if not n_cls:
        return Achieved(0, 0, 0.0, 0.0, n_supp, 0)
    l_dist = int((counts > 0).sum(axis=1).min())
    l_ent = float(np.exp(_entropy(counts, counts.sum(axis=1))).min())
    t = float(emd(counts, sens).max())
    return Achieved(k, l_dist, l_ent, t, n_supp, n_cls)


@dataclass(frozen=True, slots=True)
class Generalised:
    """An algorithm's output before it becomes a table: each QI's released label per row,
    each cell's normalised loss in [0, 1] (rows x QIs), the class of each row and which
    rows are suppressed (``*`` everywhere, loss 1)."""

    labels: dict[str, npt.NDArray[np.object_]]
    loss: FloatArray
    classes: IntArray
    suppressed: npt.NDArray[np.bool_]
    info: dict[str, Any]
