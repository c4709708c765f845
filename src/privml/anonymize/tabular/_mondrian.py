"""Strict multidimensional Mondrian (LeFevre et al., 2006), vectorised level by level.

Theory of operation. Rather than recursing one partition at a time, every round takes *all*
open partitions together: rows are sorted by partition, each partition's normalised width on
every QI comes from segment reductions (``np.minimum.reduceat``), and dimensions are tried
widest first. The width is the loss the QI would cost the partition's class (numeric range,
share of the categories present, hierarchy node span), so cuts go where generalisation costs
most, which keeps GCP low. A try cuts each partition into parts — numeric and
frequency-ordered categorical dimensions at the median (strict: ``<= median`` | ``> median``,
or ``< median`` when the median is the maximum), a dimension with a hierarchy into the
children of the lowest common ancestor of its values — and the cut is kept only if *every*
part satisfies the privacy model (k, l, t judged from one counts matrix of sensitive values
per part). Partitions no dimension can cut are final. A round costs a few passes over the
rows, and there are about log2(n / k) rounds, so nothing loops over rows in Python.
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
    code (hier: the LCA level and node). The width is the loss a class of the partition
    would carry on the dimension (as GCP counts it): numeric range over the column's,
    categorical (values present - 1) / (values in the column - 1), the LCA node's span."""
    widths = np.zeros((len(starts), len(dims)))
    lo: list[IntArray] = []
    hi: list[IntArray] = []
    seg: IntArray | None = None
    for d, dim in enumerate(dims):
        if dim.kind == "hier":
            assert dim.row_nodes is not None and dim.comp is not None  # nosec B101  # narrowing: a 'hier' dim is built with both
            nodes = dim.row_nodes[order]
            mn = np.minimum.reduceat(nodes, starts, axis=0)
            mx = np.maximum.reduceat(nodes, starts, axis=0)
            lca = np.argmax(mn == mx, axis=1).astype(np.int64)
            node = mn[np.arange(len(starts)), lca]
            widths[:, d] = dim.comp.span[node]
            lo.append(lca)
            hi.append(node)
            continue
        c = dim.codes[order]
        mn1 = np.minimum.reduceat(c, starts)
        mx1 = np.maximum.reduceat(c, starts)
        if dim.kind == "numeric":
            rng = max(dim.values[-1] - dim.values[0], 1e-300)
            widths[:, d] = (dim.values[mx1] - dim.values[mn1]) / rng
        else:
            if seg is None:
                seg = np.repeat(np.arange(len(starts)), _ends(starts, len(order)) - starts)
            widths[:, d] = (_distinct(c, seg, len(starts), dim.n_codes) - 1) / max(
                dim.n_codes - 1, 1
            )
        lo.append(mn1)
        hi.append(mx1)
    return widths, lo, hi


def _distinct(codes: IntArray, seg: IntArray, n_seg: int, n_codes: int) -> IntArray:
    """The number of distinct ``codes`` (below ``n_codes``) in each segment ``seg``."""
    pair = seg * n_codes + codes
    if n_seg * n_codes <= 4 * len(codes) + 65536:  # a presence table of bounded size
        seen = np.zeros(n_seg * n_codes, dtype=bool)
        seen[pair] = True
        return np.asarray(seen.reshape(n_seg, n_codes).sum(axis=1), dtype=np.int64)
    return np.bincount(np.unique(pair) // n_codes, minlength=n_seg).astype(np.int64)


def _segments(sorted_ids: IntArray) -> IntArray:
    flags = np.empty(len(sorted_ids), dtype=bool)
    flags[:1] = True
    np.not_equal(sorted_ids[1:], sorted_ids[:-1], out=flags[1:])
    return np.flatnonzero(flags)


def _ends(starts: IntArray, n: int) -> IntArray:
    """Where each segment beginning at ``starts`` (of ``n`` items) ends."""
    ends = np.empty_like(starts)
    ends[:-1] = starts[1:]
    ends[-1:] = n
    return ends


def mondrian(dims: list[Dim], model: PrivacyModel, sens: Sensitive | None, n: int) -> Generalised:
    """Partition ``n`` rows; every final partition satisfies ``model``."""
    run = _Partitioner(dims, model, sens, n)
    if not model.passes(class_counts(run.part, 1, run.sa, run.m), sens)[0]:
        raise ConfigError(
            "the privacy model cannot be satisfied: the whole table, as one class, fails it"
        )
    rows, rounds = np.arange(n, dtype=np.int64), 0
    while len(rows):
        rounds += 1
        rows = run.round(rows)
    used = np.zeros(run.n_parts, dtype=np.int64)
    used[run.part] = 1
    classes = (np.cumsum(used) - 1)[run.part]  # partitions numbered in order, without gaps
    return _release(dims, classes, {"rounds": rounds})


class _Partitioner:
    """One run's state: each row's partition (``part``) and the number of partitions."""

    def __init__(self, dims: list[Dim], model: PrivacyModel, sens: Sensitive | None, n: int):
        self.dims, self.model, self.sens, self.n = dims, model, sens, n
        use_sa = sens is not None and model.needs_sensitive
        self.sa = sens.codes if use_sa and sens is not None else np.zeros(n, dtype=np.int64)
        self.m = sens.m if use_sa and sens is not None else 1
        self.part = np.zeros(n, dtype=np.int64)
        self.n_parts = 1
        # numeric and ordinal dimensions are all cut the same way (at the median code), so
        # one pass cuts every partition whose chosen dimension is one of them
        self.flat = np.array([d.kind != "hier" for d in dims])
        self.codes = np.stack([d.codes for d in dims])  # dims x rows
        self.n_codes = np.array([d.n_codes for d in dims], dtype=np.int64)

    def round(self, rows: IntArray) -> IntArray:
        """Try to cut every partition of ``rows`` (sorted by partition) in two or more;
        returns the rows of the partitions made, sorted by partition."""
        starts = _segments(self.part[rows])
        widths, lca, _ = _stats(self.dims, rows, starts)
        seg_of = np.repeat(np.arange(len(starts)), _ends(starts, len(rows)) - starts)
        rank = np.argsort(-widths, axis=1, kind="stable")
        pending = np.ones(len(starts), dtype=bool)
        created_from = self.n_parts
        for a in range(len(self.dims)):
            dim_a = rank[:, a]
            cand = pending & (widths[np.arange(len(starts)), dim_a] > 0)
            if not cand.any():
                break
            groups = [(self.flat[dim_a], -1)]
            groups += [(dim_a == d, d) for d, dim in enumerate(self.dims) if dim.kind == "hier"]
            for on_dim, d in groups:
                sel = cand & on_dim
                if not sel.any():
                    continue
                mask = sel[seg_of]
                r, s = rows[mask], seg_of[mask]
                if d < 0:
                    key = self._cut_median(r, s, dim_a[s])
                else:  # into the children of the partition's LCA node
                    nodes = self.dims[d].row_nodes
                    assert nodes is not None  # nosec B101  # narrowing: d >= 0 only for 'hier' dims, built with row_nodes
                    key = np.asarray(nodes[r, lca[d][s] - 1], dtype=np.int64)
                self._try_split(r, s, key, pending)
        made = np.flatnonzero(self.part >= created_from)
        # rows ascending within each partition, as a stable sort would leave them
        order = np.sort((self.part[made] - created_from) * self.n + made)
        return np.asarray(order % self.n, dtype=np.int64)

    def _cut_median(self, rows: IntArray, seg: IntArray, dim: IntArray) -> IntArray:
        """The part (0 or 1) of each row (``rows`` sorted by segment ``seg``) when its
        partition is cut at the median code of its dimension ``dim``: strict, ``<= median``
        | ``> median``, or ``< median`` | ``>= median`` when the median is the maximum."""
        c = self.codes[dim, rows]
        change = np.empty(len(seg), dtype=np.int64)
        change[0] = 0
        np.not_equal(seg[1:], seg[:-1], out=change[1:])
        local = np.cumsum(change)
        width = int(self.n_codes[dim].max())
        cs = np.sort(local * width + c) - local * width  # codes sorted per part
        starts = _segments(local)
        last = _ends(starts, len(local)) - 1
        med = cs[(starts + last) // 2]
        top = cs[last]
        thr = np.where(med == top, med - 1, med)
        return np.asarray(c > thr[local], dtype=np.int64)

    def _try_split(
        self, rows: IntArray, seg: IntArray, key: IntArray, pending: npt.NDArray[np.bool_]
    ) -> None:
        """Apply the cuts (row ``rows[i]`` of segment ``seg[i]`` to part ``key[i]``) whose
        parts all pass the model; a segment cut is no longer ``pending``."""
        width = int(key.max()) + 1
        flat = seg * width + key
        present = np.bincount(flat, minlength=(int(seg[-1]) + 1) * width) > 0
        uniq = np.flatnonzero(present)
        grp = (np.cumsum(present) - 1)[flat]
        grp_seg = uniq // width
        sa = self.sa[rows] if self.m > 1 else np.zeros(len(rows), dtype=np.int64)
        ok_grp = self.model.passes(class_counts(grp, len(uniq), sa, self.m), self.sens)
        first = np.zeros(len(uniq), dtype=np.int64)
        first[_segments(grp_seg)] = 1
        seg_inv = np.cumsum(first) - 1
        seg_ids = grp_seg[first == 1]
        bad = np.bincount(seg_inv, weights=~ok_grp, minlength=len(seg_ids))
        ok_seg = (bad == 0) & (np.bincount(seg_inv, minlength=len(seg_ids)) > 1)
        ok_grp_all = ok_seg[seg_inv]
        n_new = int(ok_grp_all.sum())
        new_id = np.full(len(uniq), -1, dtype=np.int64)
        new_id[ok_grp_all] = self.n_parts + np.arange(n_new)
        moved = ok_grp_all[grp]
        self.part[rows[moved]] = new_id[grp[moved]]
        pending[seg_ids[ok_seg]] = False
        self.n_parts += n_new


def _release(dims: list[Dim], classes: IntArray, info: dict[str, object]) -> Generalised:
    """Each class's label and loss on every QI, computed once per class."""
    order = np.argsort(classes, kind="stable")
    starts = _segments(classes[order])
    _, lo, hi = _stats(dims, order, starts)
    labels: dict[str, npt.NDArray[np.object_]] = {}
    loss = np.zeros((len(starts), len(dims)))
    for d, dim in enumerate(dims):
        if dim.kind == "hier":
            assert dim.comp is not None  # nosec B101  # narrowing: a 'hier' dim is built with comp
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
            lab, cell_loss = _set_labels(dim, dim.codes[order], starts)
        labels[dim.column] = np.asarray(lab, dtype=object)
        loss[:, d] = cell_loss
    n = len(classes)
    return Generalised(labels, loss[classes], classes, np.zeros(n, dtype=bool), dict(info))


def _set_labels(
    dim: Dim, codes: IntArray, starts: IntArray
) -> tuple[npt.NDArray[np.object_], FloatArray]:
    """Labels of a categorical dimension without hierarchy, per class (``codes`` sorted by
    class, classes starting at ``starts``): the set of values present (``*`` when all are).
    Classes are keyed by a bitmask of their codes, so each distinct set is formatted once."""
    words = []
    for w in range((dim.n_codes + 63) // 64):
        inword = (codes >= 64 * w) & (codes < 64 * (w + 1))
        bits = np.where(inword, np.left_shift(np.uint64(1), (codes % 64).astype(np.uint64)), 0)
        words.append(np.bitwise_or.reduceat(bits.astype(np.uint64), starts))
    if len(words) == 1:
        masks, inv = np.unique(words[0], return_inverse=True)
        masks = masks[:, None]
    else:
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
