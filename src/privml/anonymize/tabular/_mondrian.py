"""Strict multidimensional Mondrian (LeFevre et al., 2006), vectorised level by level.

Theory of operation. Rather than recursing one partition at a time, every round takes *all*
open partitions together: rows are sorted by partition, each partition's normalised width on
every QI comes from segment reductions (``np.minimum.reduceat``), and dimensions are tried
widest first. A try cuts each partition into parts — numeric and frequency-ordered
categorical dimensions at the median (strict: ``<= median`` | ``> median``, or ``< median``
when the median is the maximum), a dimension with a hierarchy into the children of the
lowest common ancestor of its values — and the cut is kept only if *every* part satisfies
the privacy model (k, l, t judged from one counts matrix of sensitive values per part).
Partitions no dimension can cut are final. A round costs a few passes over the rows, and
there are about log2(n / k) rounds, so nothing loops over rows in Python.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd  # type: ignore[import-untyped,unused-ignore]

from privml._exceptions import ConfigError

from ._hierarchy import Compiled, _fmt
from ._models import Generalised, PrivacyModel, Sensitive, class_counts

__all__ = ["Dim", "encode_dims", "mondrian"]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Dim:
    """One QI prepared for Mondrian. ``codes`` are ranks (numeric), frequency ranks
    (categorical without hierarchy) or leaf ids (with a hierarchy, ``comp`` set)."""

    column: str
    kind: str  # "numeric" | "ordinal" | "hier"
    codes: IntArray
    names: list[str]  # label of each code
    values: FloatArray  # numeric value of each code (numeric) or the code itself
    comp: Compiled | None = None
    row_nodes: IntArray | None = None  # rows x levels (hier)

    @property
    def n_codes(self) -> int:
        return len(self.names)


def encode_dims(df: pd.DataFrame, qi: Sequence[str], compiled: dict[str, Compiled]) -> list[Dim]:
    dims = []
    for col in qi:
        s = df[col]
        if col in compiled:
            c = compiled[col]
            dims.append(
                Dim(
                    col,
                    "hier",
                    c.leaf,
                    [str(v) for v in c.leaf_values],
                    np.arange(len(c.leaf_values), dtype=np.float64),
                    c,
                    c.nodes[c.leaf],
                )
            )
        elif pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
            codes, uniq = pd.factorize(s, sort=True)
            vals = np.asarray(uniq, dtype=np.float64)
            dims.append(Dim(col, "numeric", codes.astype(np.int64), [_fmt(v) for v in vals], vals))
        else:
            codes, uniq = pd.factorize(s, sort=True)
            freq = np.bincount(codes, minlength=len(uniq))
            # ordered by frequency (most common first, ties by value) so a median cut
            # separates common from rare categories
            by_freq = np.lexsort((np.arange(len(uniq)), -freq))
            rank = np.empty(len(uniq), dtype=np.int64)
            rank[by_freq] = np.arange(len(uniq))
            names = [str(uniq[i]) for i in by_freq]
            dims.append(
                Dim(col, "ordinal", rank[codes], names, np.arange(len(uniq), dtype=np.float64))
            )
    return dims


def _stats(
    dims: list[Dim], order: IntArray, starts: IntArray
) -> tuple[FloatArray, list[IntArray], list[IntArray]]:
    """Per partition (segments of ``order``) and dimension: normalised width, min and max
    code (hier: the LCA level and node)."""
    widths = np.zeros((len(starts), len(dims)))
    lo: list[IntArray] = []
    hi: list[IntArray] = []
    for d, dim in enumerate(dims):
        if dim.kind == "hier":
            assert dim.row_nodes is not None and dim.comp is not None
            nodes = dim.row_nodes[order]
            mn = np.minimum.reduceat(nodes, starts, axis=0)
            mx = np.maximum.reduceat(nodes, starts, axis=0)
            lca = np.argmax(mn == mx, axis=1).astype(np.int64)
            node = mn[np.arange(len(starts)), lca]
            widths[:, d] = dim.comp.span[node]
            lo.append(lca)
            hi.append(node)
        else:
            c = dim.codes[order]
            mn1 = np.minimum.reduceat(c, starts)
            mx1 = np.maximum.reduceat(c, starts)
            rng = (dim.values[-1] - dim.values[0]) if dim.kind == "numeric" else dim.n_codes - 1
            widths[:, d] = (dim.values[mx1] - dim.values[mn1]) / max(rng, 1e-300)
            lo.append(mn1)
            hi.append(mx1)
    return widths, lo, hi


def _segments(sorted_ids: IntArray) -> IntArray:
    flags = np.empty(len(sorted_ids), dtype=bool)
    flags[:1] = True
    np.not_equal(sorted_ids[1:], sorted_ids[:-1], out=flags[1:])
    return np.flatnonzero(flags)


def _cut(dim: Dim, rows: IntArray, seg: IntArray, lca: IntArray) -> IntArray:
    """The part of each row (rows sorted by segment) when its partition is cut on ``dim``."""
    if dim.kind == "hier":
        assert dim.row_nodes is not None
        return np.asarray(dim.row_nodes[rows, lca[seg] - 1], dtype=np.int64)
    c = dim.codes[rows]
    change = np.empty(len(seg), dtype=np.int64)
    change[0] = 0
    np.not_equal(seg[1:], seg[:-1], out=change[1:])
    local = np.cumsum(change)
    cs = np.sort(local * dim.n_codes + c) - local * dim.n_codes  # codes sorted per part
    starts = _segments(local)
    sizes = np.diff(starts, append=len(local))
    med = cs[starts + (sizes - 1) // 2]
    top = cs[starts + sizes - 1]
    thr = np.where(med == top, med - 1, med)
    return np.asarray(c > thr[local], dtype=np.int64)


def mondrian(dims: list[Dim], model: PrivacyModel, sens: Sensitive | None, n: int) -> Generalised:
    """Partition ``n`` rows; every final partition satisfies ``model``."""
    use_sa = sens is not None and model.needs_sensitive
    sa = sens.codes if use_sa and sens is not None else np.zeros(n, dtype=np.int64)
    m = sens.m if use_sa and sens is not None else 1
    if not model.passes(class_counts(np.zeros(n, dtype=np.int64), 1, sa, m), sens)[0]:
        raise ConfigError(
            "the privacy model cannot be satisfied: the whole table, as one class, fails it"
        )
    part = np.zeros(n, dtype=np.int64)
    n_parts, rounds = 1, 0
    active = np.ones(1, dtype=bool)
    while active.any():
        rounds += 1
        rows = np.flatnonzero(active[part])
        order = rows[np.argsort(part[rows], kind="stable")]
        starts = _segments(part[order])
        widths, lca, _ = _stats(dims, order, starts)
        sizes = np.diff(starts, append=len(order))
        seg_of = np.repeat(np.arange(len(starts)), sizes)
        rank = np.argsort(-widths, axis=1, kind="stable")
        pending = np.ones(len(starts), dtype=bool)
        created_from = n_parts
        for a in range(len(dims)):
            dim_a = rank[:, a]
            cand = pending & (widths[np.arange(len(starts)), dim_a] > 0)
            if not cand.any():
                break
            for d, dim in enumerate(dims):
                sel = cand & (dim_a == d)
                if not sel.any():
                    continue
                mask = sel[seg_of]
                r, s = order[mask], seg_of[mask]
                part_key = _cut(dim, r, s, lca[d])
                n_parts = _try_split(
                    part,
                    rows=r,
                    seg=s,
                    key=part_key,
                    model=model,
                    sens=sens,
                    sa=sa,
                    m=m,
                    n_parts=n_parts,
                    pending=pending,
                )
        active = np.zeros(n_parts, dtype=bool)
        active[created_from:] = True
    _, classes = np.unique(part, return_inverse=True)
    return _release(dims, classes.reshape(-1).astype(np.int64), {"rounds": rounds})


def _try_split(
    part: IntArray,
    *,
    rows: IntArray,
    seg: IntArray,
    key: IntArray,
    model: PrivacyModel,
    sens: Sensitive | None,
    sa: IntArray,
    m: int,
    n_parts: int,
    pending: npt.NDArray[np.bool_],
) -> int:
    """Apply the cuts whose parts all pass the model; returns the new partition count."""
    width = int(key.max()) + 1
    flat = seg * width + key
    present = np.bincount(flat, minlength=(int(seg[-1]) + 1) * width) > 0
    uniq = np.flatnonzero(present)
    grp = (np.cumsum(present) - 1)[flat]
    grp_seg = uniq // width
    ok_grp = model.passes(class_counts(grp, len(uniq), sa[rows], m), sens)
    first = np.zeros(len(uniq), dtype=np.int64)
    first[_segments(grp_seg)] = 1
    seg_inv = np.cumsum(first) - 1
    seg_ids = grp_seg[first == 1]
    bad = np.bincount(seg_inv, weights=~ok_grp, minlength=len(seg_ids))
    ok_seg = (bad == 0) & (np.bincount(seg_inv, minlength=len(seg_ids)) > 1)
    ok_grp_all = ok_seg[seg_inv]
    new_id = np.full(len(uniq), -1, dtype=np.int64)
    new_id[ok_grp_all] = n_parts + np.arange(int(ok_grp_all.sum()))
    moved = ok_grp_all[grp]
    part[rows[moved]] = new_id[grp[moved]]
    pending[seg_ids[ok_seg]] = False
    return n_parts + int(ok_grp_all.sum())


def _release(dims: list[Dim], classes: IntArray, info: dict[str, object]) -> Generalised:
    n = len(classes)
    order = np.argsort(classes, kind="stable")
    starts = _segments(classes[order])
    _, lo, hi = _stats(dims, order, starts)
    labels: dict[str, npt.NDArray[np.object_]] = {}
    loss = np.zeros((n, len(dims)))
    for d, dim in enumerate(dims):
        if dim.kind == "hier":
            assert dim.comp is not None
            node = hi[d]
            lab = np.asarray(dim.comp.labels, dtype=object)[node]
            cell_loss = dim.comp.span[node]
        elif dim.kind == "numeric":
            names = np.asarray(dim.names, dtype=object)
            a, b = names[lo[d]], names[hi[d]]
            lab = np.where(lo[d] == hi[d], a, "[" + a + "-" + b + "]")
            rng = max(dim.values[-1] - dim.values[0], 1e-300)
            cell_loss = (dim.values[hi[d]] - dim.values[lo[d]]) / rng
        else:
            lab, cell_loss = _set_labels(dim, classes, len(starts))
        labels[dim.column] = np.asarray(lab, dtype=object)[classes]
        loss[:, d] = np.asarray(cell_loss, dtype=np.float64)[classes]
    return Generalised(labels, loss, classes, np.zeros(n, dtype=bool), dict(info))


def _set_labels(
    dim: Dim, classes: IntArray, n_cls: int
) -> tuple[npt.NDArray[np.object_], FloatArray]:
    """Labels of a categorical dimension without hierarchy: the set of values present
    (``*`` when all are). Classes are keyed by a bitmask of their codes, so each distinct
    set is formatted once."""
    order = np.argsort(classes, kind="stable")
    starts = _segments(classes[order])
    codes = dim.codes[order]
    words = []
    for w in range((dim.n_codes + 63) // 64):
        inword = (codes >= 64 * w) & (codes < 64 * (w + 1))
        bits = np.where(inword, np.left_shift(np.uint64(1), (codes % 64).astype(np.uint64)), 0)
        words.append(np.bitwise_or.reduceat(bits.astype(np.uint64), starts))
    masks, inv = np.unique(np.stack(words, axis=1), axis=0, return_inverse=True)
    names = dim.names
    bits = np.unpackbits(
        np.ascontiguousarray(masks).view(np.uint8), axis=1, bitorder="little"
    ).astype(bool)
    set_count = bits.sum(axis=1).astype(np.float64)
    set_labels = np.empty(len(masks), dtype=object)
    for i, row in enumerate(bits):
        present = np.flatnonzero(row).tolist()
        if len(present) == 1:
            set_labels[i] = names[present[0]]
        elif len(present) == dim.n_codes:
            set_labels[i] = "*"
        else:
            set_labels[i] = "{" + ",".join(sorted(names[j] for j in present)) + "}"
    inv = inv.reshape(-1)
    return set_labels[inv], (set_count[inv] - 1) / max(dim.n_codes - 1, 1)
