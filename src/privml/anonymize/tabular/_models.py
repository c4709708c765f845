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
    "equivalence_classes",
    "measure",
    "measure_release",
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
            assert sens is not None  # nosec B101  # narrowing: callers pass the sensitive column whenever t is set
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
    assert sens.hierarchy is not None  # nosec B101  # narrowing: only kind 'hierarchical' (built with its hierarchy) is left
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


def factorize(values: pd.Series | npt.NDArray[Any]) -> tuple[IntArray, pd.Index]:
    """Codes of ``values`` (equal values share one) and the distinct values; missing values
    (NaN, None, ...) all take the code ``len(uniques)``. Like ``pd.factorize(values,
    use_na_sentinel=False)``, at half the cost on strings."""
    codes, uniq = pd.factorize(values)
    codes = np.asarray(codes, dtype=np.int64)
    codes[codes < 0] = len(uniq)
    return codes, uniq


def _label_codes(
    columns: Sequence[pd.Series | npt.NDArray[Any]],
) -> tuple[list[IntArray], list[int], npt.NDArray[np.bool_]]:
    """Codes of each column's values (equal values, NaN included, share a code), each
    column's number of codes, and which rows read ``*`` in every column. ``*`` is judged on
    ``str`` of the value, once per distinct value rather than once per row."""
    codes: list[IntArray] = []
    cards: list[int] = []
    supp: npt.NDArray[np.bool_] | None = None
    for col in columns:
        c, uniq = factorize(col)
        star = (pd.Series(np.asarray(uniq, dtype=object)).astype(str) == SUPPRESSED).to_numpy()
        star = np.append(star, False)  # the missing values' code, if any
        supp = star[c] if supp is None else supp & star[c]
        codes.append(c)
        cards.append(len(uniq) + 1)
    if supp is None:
        raise ConfigError("no quasi-identifier columns")
    return codes, cards, supp


def _group(codes: Sequence[IntArray], cards: Sequence[int]) -> tuple[IntArray, int]:
    """Id of each row's tuple of codes, numbered in lexicographic order of the tuples."""
    n = len(codes[0])
    if not n:
        return np.zeros(0, dtype=np.int64), 0
    if math.prod(max(c, 1) for c in cards) < 2**62:
        key = np.zeros(n, dtype=np.int64)
        for c, card in zip(codes, cards, strict=True):
            key = key * card + c  # mixed radix keeps the lexicographic order of the tuples
        _, ids = np.unique(key, return_inverse=True)
    else:
        _, ids = np.unique(np.stack(codes, axis=1), axis=0, return_inverse=True)
    ids = ids.reshape(-1).astype(np.int64)
    return ids, int(ids.max()) + 1


def equivalence_classes(df: pd.DataFrame, qi: Sequence[str]) -> tuple[IntArray, int]:
    """Class id of each row, from the released QI values (NaN is a value like any other)."""
    if not len(df):
        return np.zeros(0, dtype=np.int64), 0
    codes, cards, _ = _label_codes([df[c] for c in qi])
    return _group(codes, cards)


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
    if not len(df):
        ids, n_cls, supp = np.zeros(0, dtype=np.int64), 0, np.zeros(0, dtype=bool)
    else:
        codes, cards, supp = _label_codes([df[c] for c in qi])
        ids, n_cls = _group(codes, cards)
    sens = None if sensitive is None else encode_sensitive(df, sensitive, sensitive_hierarchy)
    return _achieved(ids, n_cls, supp, sens, include_suppressed)


def measure_release(
    gen: Generalised, qi: Sequence[str], sens: Sensitive | None, *, include_suppressed: bool
) -> Achieved:
    """:func:`measure` of the table ``gen`` releases, computed per class rather than per row.

    Every row of the released table carries its class's labels (``gen.labels``), so
    grouping the rows by equal labels is grouping the *classes* by equal label tuples and
    giving each row its class's group: the same partition of the rows, at the cost of
    ``n_classes`` rather than ``n`` rows. Classes whose labels coincide (an all-``*`` class
    beside the suppressed one, equal labels from different hierarchy nodes) are merged,
    exactly as :func:`measure` merges them. ``sens`` must encode the released sensitive
    column, which is the input's unchanged."""
    if not len(gen.classes):
        return _achieved(gen.classes, 0, np.zeros(0, dtype=bool), sens, include_suppressed)
    codes, cards, supp = _label_codes([gen.class_labels[c] for c in qi])
    group, n_groups = _group(codes, cards)
    return _achieved(group[gen.classes], n_groups, supp[gen.classes], sens, include_suppressed)


def _achieved(
    ids: IntArray,
    n_ids: int,
    supp: npt.NDArray[np.bool_],
    sens: Sensitive | None,
    include_suppressed: bool,
) -> Achieved:
    """The figures of the classes ``ids`` (numbered below ``n_ids``); rows in ``supp`` are
    left out unless ``include_suppressed``. P for t is the whole table, ``supp`` included."""
    keep = np.ones(len(ids), dtype=bool) if include_suppressed else ~supp
    n_supp = 0 if include_suppressed else int(supp.sum())
    kept_ids = ids[keep]
    sizes = np.bincount(kept_ids, minlength=n_ids)
    present = sizes > 0
    n_cls = int(present.sum())
    k = int(sizes[present].min()) if n_cls else 0
    if sens is None:
        return Achieved(k, None, None, None, n_supp, n_cls)
    if not n_cls:
        return Achieved(0, 0, 0.0, 0.0, n_supp, 0)
    counts = class_counts(kept_ids, n_ids, sens.codes[keep], sens.m)[present]
    l_dist = int((counts > 0).sum(axis=1).min())
    l_ent = float(np.exp(_entropy(counts, counts.sum(axis=1))).min())
    t = float(emd(counts, sens).max())
    return Achieved(k, l_dist, l_ent, t, n_supp, n_cls)


@dataclass(frozen=True, slots=True)
class Generalised:
    """An algorithm's output before it becomes a table. Labels are held per class:
    ``class_labels[qi][c]`` is the released label of class ``c`` (``*`` everywhere for the
    suppressed rows' class), so each is formatted once and a row's label is its class's
    (:meth:`labels`). ``loss`` is each cell's normalised loss in [0, 1] (rows x QIs),
    ``classes`` the class of each row (numbered from 0 without gaps), ``suppressed`` which
    rows are suppressed (loss 1)."""

    class_labels: dict[str, npt.NDArray[np.object_]]
    loss: FloatArray
    classes: IntArray
    suppressed: npt.NDArray[np.bool_]
    info: dict[str, Any]

    def __post_init__(self) -> None:
        n_cls = int(self.classes.max()) + 1 if len(self.classes) else 0
        for col, lab in self.class_labels.items():
            if len(lab) != n_cls:
                raise ValueError(f"{len(lab)} labels of {col!r} for {n_cls} classes")

    @property
    def n_classes(self) -> int:
        return int(self.classes.max()) + 1 if len(self.classes) else 0

    def labels(self, column: str) -> npt.NDArray[np.object_]:
        """Each row's released label of QI ``column``."""
        return np.asarray(self.class_labels[column][self.classes], dtype=object)
