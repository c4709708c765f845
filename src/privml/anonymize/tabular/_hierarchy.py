"""Generalisation hierarchies: user-given (YAML) or automatic, compiled against a column.

A hierarchy turns each value of a column into coarser labels, one per level. Level 0 is the
value itself; the top level is always the single root ``*`` (added when the user's last
level has more than one label). Three kinds, all compiled to the same :class:`Compiled`:

* ``levels``: chained mappings; level 1 maps each value, level j+1 maps each label of
  level j. Every value and label must be covered (the error names the value and column).
* ``rows``: ARX-style rows ``[value, level1, level2, ...]``.
* ``intervals``: numeric bins, either ``widths`` (one level per width, anchored at
  ``start``, default the column minimum) or explicit ``cuts`` (ascending bin edges per
  level). Integer bins are labelled ``[30-39]`` (both ends included), others
  ``[30.5-40.5)``.

A numeric column with no hierarchy gets :func:`auto_intervals`: widths doubling per level,
the first chosen so that there are at most ``max_levels`` interval levels.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd  # type: ignore[import-untyped,unused-ignore]
import yaml  # type: ignore[import-untyped,unused-ignore]

from privml._exceptions import ConfigError, DataError

__all__ = [
    "Compiled",
    "Hierarchy",
    "auto_intervals",
    "compile_column",
    "load_hierarchies",
]

ROOT = "*"
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Hierarchy:
    """One column's hierarchy, before it meets the data. Exactly one kind is set."""

    levels: tuple[Mapping[str, str], ...] = ()
    widths: tuple[float, ...] = ()
    cuts: tuple[tuple[float, ...], ...] = ()
    start: float | None = None

    def __post_init__(self) -> None:
        kinds = sum(bool(x) for x in (self.levels, self.widths, self.cuts))
        if kinds != 1:
            raise ConfigError("a hierarchy needs exactly one of levels, rows, widths or cuts")
        if any(not 0 < w < math.inf for w in self.widths):
            raise ConfigError(f"interval widths must be positive, got {list(self.widths)}")
        if self.start is not None and not math.isfinite(self.start):
            raise ConfigError(f"interval start must be a finite number, got {self.start}")
        for c in self.cuts:
            # (NaN compares false both ways: without the finiteness check it passes as sorted)
            if len(c) < 2 or not all(map(math.isfinite, c)) or any(
                    b <= a for a, b in itertools.pairwise(c)):
                raise ConfigError(f"interval cuts must be ascending finite edges, got {list(c)}")

    @property
    def is_interval(self) -> bool:
        return bool(self.widths or self.cuts)


@dataclass(frozen=True, slots=True)
class Compiled:
    """A hierarchy applied to one column.

    ``leaf`` gives each row's leaf index (distinct raw values, in ``leaf_values`` order);
    ``nodes[v, j]`` is the node id of leaf v at level j (level 0: the leaf itself, last
    level: the root). ``labels[node]`` is a node's released label and ``span[node]`` its
    normalised width in [0, 1] (0 for a single value, 1 for the root), used for loss.
    """

    column: str
    leaf: IntArray
    leaf_values: list[Any]
    nodes: IntArray
    labels: list[str]
    span: npt.NDArray[np.float64]
    leaf_count: IntArray = field(repr=False)

    @property
    def height(self) -> int:
        return int(self.nodes.shape[1] - 1)


# ---- loading ------------------------------------------------------------------------------


def load_hierarchies(source: str | Path | Mapping[str, Any]) -> dict[str, Hierarchy]:
    """Parse hierarchies from a YAML file or an already-loaded mapping.

    The top-level mapping is ``{column: spec}`` (optionally under a ``hierarchies:`` key),
    where spec is ``{levels: [...]}``, ``{rows: [...]}``, ``{widths: [...], start: x}`` or
    ``{cuts: [[...], ...]}``.
    """
    if isinstance(source, str | Path):
        try:
            raw = yaml.safe_load(Path(source).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read hierarchies file {source}: {exc}") from exc
        except (yaml.YAMLError, RecursionError) as exc:  # (nested deeper than yaml recurses)
            raise ConfigError(f"hierarchies file {source} is not valid YAML: {exc}") from exc
    else:
        raw = source
    if isinstance(raw, Mapping) and "hierarchies" in raw:
        raw = raw["hierarchies"]
    if not isinstance(raw, Mapping):
        raise ConfigError("hierarchies must be a mapping of column name to hierarchy")
    return {str(col): _parse_one(str(col), spec) for col, spec in raw.items()}


def _parse_one(col: str, spec: Any) -> Hierarchy:
    if isinstance(spec, Hierarchy):
        return spec
    if not isinstance(spec, Mapping):
        raise ConfigError(f"hierarchy for column {col!r} must be a mapping")
    unknown = set(spec) - {"levels", "rows", "widths", "cuts", "start"}
    if unknown:
        # (sorted as strings: YAML keys may mix types, and str < int raises TypeError)
        raise ConfigError(f"hierarchy for column {col!r}: unknown keys "
                          f"{sorted(map(str, unknown))}")
    try:
        if "levels" in spec:
            levels = tuple(
                {str(k): str(v) for k, v in dict(level).items()} for level in spec["levels"]
            )
            return Hierarchy(levels=levels)
        if "rows" in spec:
            return Hierarchy(levels=_rows_to_levels(col, spec["rows"]))
        if "widths" in spec:
            start = spec.get("start")
            return Hierarchy(
                widths=tuple(float(w) for w in spec["widths"]),
                start=None if start is None else float(start),
            )
        if "cuts" in spec:
            return Hierarchy(cuts=tuple(tuple(float(x) for x in c) for c in spec["cuts"]))
    except (TypeError, ValueError, OverflowError) as exc:  # (float() of a huge integer)
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"hierarchy for column {col!r} is malformed: {exc}") from exc
    raise ConfigError(f"hierarchy for column {col!r} needs levels, rows, widths or cuts")


def _rows_to_levels(col: str, rows: Sequence[Sequence[Any]]) -> tuple[dict[str, str], ...]:
    rows = [[str(x) for x in r] for r in rows]
    depth = {len(r) for r in rows}
    if len(depth) != 1 or min(depth) < 2:
        raise ConfigError(f"hierarchy rows for column {col!r} must all have the same length >= 2")
    levels: list[dict[str, str]] = [{} for _ in range(depth.pop() - 1)]
    for r in rows:
        for j in range(len(levels)):
            prev = levels[j].setdefault(r[j], r[j + 1])
            if prev != r[j + 1]:
                raise ConfigError(
                    f"hierarchy for column {col!r}: {r[j]!r} maps to both {prev!r} and "
                    f"{r[j + 1]!r} at level {j + 1}"
                )
    return tuple(levels)


# ---- compiling ----------------------------------------------------------------------------


def auto_intervals(values: pd.Series, *, max_levels: int = 6) -> Hierarchy:
    """Interval hierarchy with widths doubling per level (at most ``max_levels`` of them)."""
    lo, hi = float(values.min()), float(values.max())
    span = hi - lo
    if span <= 0:
        return Hierarchy(widths=(1.0,), start=lo)
    base = span / 2 ** (max_levels - 1)
    if pd.api.types.is_integer_dtype(values):
        base = float(max(1, math.ceil(base)))
    widths = [base]
    while widths[-1] * 2 <= span and len(widths) < max_levels:
        widths.append(widths[-1] * 2)
    return Hierarchy(widths=tuple(widths), start=math.floor(lo) if base >= 1 else lo)


def compile_column(col: str, values: pd.Series, hierarchy: Hierarchy) -> Compiled:
    """Apply ``hierarchy`` to the column; every value must be covered."""
    codes, uniques = pd.factorize(values, sort=True)
    if (codes < 0).any():
        row = int(np.flatnonzero(codes < 0)[0])
        raise DataError(f"column {col!r} has a missing value at row {values.index[row]}")
    leaf_values = list(uniques)
    if hierarchy.is_interval:
        if not pd.api.types.is_numeric_dtype(values):
            raise ConfigError(f"interval hierarchy given for non-numeric column {col!r}")
        level_labels = _interval_levels(values, leaf_values, hierarchy)
    else:
        level_labels = _mapping_levels(col, leaf_values, hierarchy.levels)
    return _build(col, codes.astype(np.int64), leaf_values, level_labels, values)


def _mapping_levels(
    col: str, leaves: list[Any], levels: Sequence[Mapping[str, str]]
) -> list[list[str]]:
    current = [str(v) for v in leaves]
    out = [current]
    for j, mapping in enumerate(levels, start=1):
        missing = [v for v in dict.fromkeys(current) if v not in mapping]
        if missing:
            raise ConfigError(
                f"hierarchy for column {col!r} does not cover value {missing[0]!r} "
                f"at level {j}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            )
        current = [mapping[v] for v in current]
        out.append(current)
    return out


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _interval_levels(values: pd.Series, leaves: list[Any], h: Hierarchy) -> list[list[str]]:
    arr = np.asarray(leaves, dtype=np.float64)
    integer = pd.api.types.is_integer_dtype(values)
    out = [[_fmt(v) for v in arr]]
    edges_per_level: list[tuple[IntArray, npt.NDArray[np.float64]]] = []
    if h.widths:
        start = float(arr.min()) if h.start is None else h.start
        if arr.min() < start:
            raise ConfigError(
                f"value {_fmt(arr.min())} of column {values.name!r} lies below the interval "
                f"start {_fmt(start)}"
            )
        for w in h.widths:
            idx = np.floor((arr - start) / w).astype(np.int64)
            lows = start + idx * w
            edges_per_level.append((idx, np.stack([lows, lows + w], axis=1)))
    else:
        for cuts in h.cuts:
            c = np.asarray(cuts)
            idx = np.searchsorted(c, arr, side="right").astype(np.int64) - 1
            bad = (idx < 0) | (idx >= len(c) - 1)
            if (arr == c[-1]).any():  # the last edge is included in the last bin
                idx[arr == c[-1]] = len(c) - 2
                bad = (idx < 0) | (idx >= len(c) - 1)
            if bad.any():
                v = arr[np.flatnonzero(bad)[0]]
                raise ConfigError(
                    f"interval cuts {list(cuts)} do not cover value {_fmt(v)} of column "
                    f"{values.name!r}"
                )
            edges_per_level.append((idx, np.stack([c[idx], c[idx + 1]], axis=1)))
    for _, bounds in edges_per_level:
        if integer and all(float(b).is_integer() for b in bounds.ravel()):
            labels = [f"[{_fmt(a)}-{_fmt(b - 1)}]" for a, b in bounds]
        else:
            labels = [f"[{_fmt(a)}-{_fmt(b)})" for a, b in bounds]
        out.append(labels)
    return out


def _build(
    col: str,
    leaf: IntArray,
    leaf_values: list[Any],
    level_labels: list[list[str]],
    values: pd.Series,
) -> Compiled:
    if len(set(level_labels[-1])) > 1 or level_labels[-1][0] != ROOT:
        level_labels = [*level_labels, [ROOT] * len(leaf_values)]
    n_leaves = len(leaf_values)
    nodes = np.empty((n_leaves, len(level_labels)), dtype=np.int64)
    labels: list[str] = []
    counts: list[int] = []
    next_id = 0
    for j, lab in enumerate(level_labels):
        ids, uniq = pd.factorize(np.asarray(lab, dtype=object))
        if j > 0:
            # a tree: every node of level j-1 must have one parent at level j
            pairs = np.unique(np.stack([nodes[:, j - 1], ids], axis=1), axis=0)
            if len(np.unique(pairs[:, 0])) != len(pairs):
                child = labels[int(pairs[np.flatnonzero(np.diff(pairs[:, 0]) == 0)[0], 0])]
                raise ConfigError(
                    f"hierarchy for column {col!r} is not a tree: {child!r} has two parents "
                    f"at level {j}"
                )
        nodes[:, j] = ids + next_id
        labels.extend(str(u) for u in uniq)
        counts.extend(np.bincount(ids, minlength=len(uniq)).tolist())
        next_id += len(uniq)
    leaf_count = np.asarray(counts, dtype=np.int64)
    span = _spans(nodes, leaf_values, values, leaf_count, n_leaves)
    return Compiled(col, leaf, leaf_values, nodes, labels, span, leaf_count)


def _spans(
    nodes: IntArray,
    leaf_values: list[Any],
    values: pd.Series,
    leaf_count: IntArray,
    n_leaves: int,
) -> npt.NDArray[np.float64]:
    """Normalised width of each node: value range for numbers, leaf share otherwise."""
    n_nodes = int(nodes.max()) + 1
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        v = np.asarray(leaf_values, dtype=np.float64)
        rng = float(v.max() - v.min()) or 1.0
        lo = np.full(n_nodes, np.inf)
        hi = np.full(n_nodes, -np.inf)
        for j in range(nodes.shape[1]):
            np.minimum.at(lo, nodes[:, j], v)
            np.maximum.at(hi, nodes[:, j], v)
        return np.asarray((hi - lo) / rng, dtype=np.float64)
    return np.asarray((leaf_count - 1) / max(n_leaves - 1, 1), dtype=np.float64)
