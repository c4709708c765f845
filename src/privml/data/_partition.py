"""Splitting a dataset's training rows among simulated clients.

A :class:`Partition` is only index arrays, one per client, that together cover
``range(n)`` exactly once. :class:`ClientData` pairs a client's indices with the *shared*
dataset arrays, so a thousand clients cost a thousand index arrays, not a thousand copies of
the data; rows are gathered only when a batch is taken.

Two schemes: IID (a seeded shuffle cut into near-equal parts) and the label-skewed Dirichlet
split of Hsu et al. 2019: for every class, client shares are drawn from
``Dirichlet(alpha * ones(num_clients))`` and that class's shuffled rows are cut by them.
Small ``alpha`` gives each client a few dominant classes; large ``alpha`` tends to IID.
Every random choice comes from the ``numpy.random.Generator`` passed in.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from privml._exceptions import ConfigError

__all__ = [
    "MAX_DIRICHLET_ATTEMPTS",
    "ClientData",
    "Partition",
    "partition",
    "partition_dirichlet",
    "partition_iid",
]

#: How many Dirichlet draws :func:`partition_dirichlet` tries before giving up on min_size.
MAX_DIRICHLET_ATTEMPTS = 100

Index = npt.NDArray[np.int64]


def _check_labels(labels: npt.NDArray[np.integer], num_classes: int, n: int | None,
                  ) -> npt.NDArray[np.int64]:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int | np.integer) \
            or num_classes < 1:
        raise ConfigError(f"num_classes must be a positive int, got {num_classes!r}")
    if not isinstance(labels, np.ndarray) or labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise ConfigError("labels must be a 1-D integer array")
    if n is not None and len(labels) != n:
        raise ConfigError(f"{len(labels)} labels for {n} examples")
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ConfigError(f"labels must lie in 0..{num_classes - 1}, found "
                          f"{int(labels.min())}..{int(labels.max())}")
    return labels.astype(np.int64, copy=False)


@dataclass(frozen=True, slots=True)
class ClientData:
    """One client's examples: its row ``indices`` into the shared arrays ``x`` and ``y``.

    ``x`` and ``y`` are the dataset's own arrays (not copies); :meth:`take` gathers a batch.
    """

    x: npt.NDArray[np.float32]
    y: npt.NDArray[np.int64]
    indices: Index

    def __post_init__(self) -> None:
        if not isinstance(self.x, np.ndarray) or self.x.dtype != np.float32 or self.x.ndim < 1:
            raise ConfigError("ClientData.x must be a float32 array")
        if not isinstance(self.y, np.ndarray) or self.y.dtype != np.int64 or self.y.ndim != 1:
            raise ConfigError("ClientData.y must be a 1-D int64 array")
        if len(self.x) != len(self.y):
            raise ConfigError(f"ClientData: {len(self.x)} rows in x but {len(self.y)} in y")
        ix = self.indices
        if not isinstance(ix, np.ndarray) or ix.dtype != np.int64 or ix.ndim != 1:
            raise ConfigError("ClientData.indices must be a 1-D int64 array")
        if ix.size and (int(ix.min()) < 0 or int(ix.max()) >= len(self.x)):
            raise ConfigError(f"ClientData.indices must lie in 0..{len(self.x) - 1}")

    def __len__(self) -> int:
        return len(self.indices)

    def take(self, positions: Index | slice) -> tuple[npt.NDArray[np.float32], Index]:
        """The batch ``x[indices[positions]], y[indices[positions]]`` (freshly gathered)."""
        rows = self.indices[positions]
        return self.x[rows], self.y[rows]

    def label_histogram(self, num_classes: int) -> npt.NDArray[np.int64]:
        """How many of this client's examples carry each label, shape ``(num_classes,)``."""
        mine = _check_labels(self.y[self.indices], num_classes, None)
        return np.bincount(mine, minlength=num_classes).astype(np.int64)


@dataclass(frozen=True, slots=True)
class Partition:
    """One sorted int64 index array per client; together exactly ``range(n)``."""

    indices: tuple[Index, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.indices, tuple) or not self.indices:
            raise ConfigError("a partition needs a tuple of at least one index array")
        for k, ix in enumerate(self.indices):
            if not isinstance(ix, np.ndarray) or ix.dtype != np.int64 or ix.ndim != 1:
                raise ConfigError(f"partition client {k}: indices must be a 1-D int64 array")
        # Sorted and distinct within each client, checked on the concatenation at once (a
        # loop of np.diff per client costs seconds at 100,000 clients).
        cat = np.concatenate(self.indices)
        rising = np.diff(cat) > 0
        starts = np.cumsum([len(ix) for ix in self.indices])[:-1]
        rising[starts[(starts > 0) & (starts < cat.size)] - 1] = True  # client boundaries
        if not bool(rising.all()):
            first = int(np.flatnonzero(~rising)[0])
            k = int(np.searchsorted(starts, first, side="right"))
            raise ConfigError(f"partition client {k}: indices must be sorted and distinct")
        every = np.sort(cat)
        if not np.array_equal(every, np.arange(every.size)):
            raise ConfigError("partition indices must cover range(n) exactly once")

    @property
    def num_clients(self) -> int:
        return len(self.indices)

    @property
    def n(self) -> int:
        """The number of examples partitioned."""
        return sum(len(ix) for ix in self.indices)

    def sizes(self) -> npt.NDArray[np.int64]:
        """Examples per client, shape ``(num_clients,)``."""
        return np.array([len(ix) for ix in self.indices], dtype=np.int64)

    def label_histogram(self, labels: npt.NDArray[np.int64],
                        num_classes: int) -> npt.NDArray[np.int64]:
        """Label counts per client, shape ``(num_clients, num_classes)``."""
        y = _check_labels(labels, num_classes, self.n)
        return np.stack([np.bincount(y[ix], minlength=num_classes) for ix in self.indices]
                        ).astype(np.int64)

    def clients(self, x: npt.NDArray[np.float32],
                y: npt.NDArray[np.int64]) -> list[ClientData]:
        """A :class:`ClientData` per client, all sharing ``x`` and ``y`` (no copies)."""
        if len(x) != self.n or len(y) != self.n:
            raise ConfigError(f"partition of {self.n} examples given x of {len(x)} rows "
                              f"and y of {len(y)}")
        return [ClientData(x=x, y=y, indices=ix) for ix in self.indices]


def _check_counts(n: int, num_clients: int) -> None:
    if isinstance(num_clients, bool) or not isinstance(num_clients, int | np.integer) \
            or not 1 <= num_clients <= n:
        raise ConfigError(f"num_clients must be in 1..{n} (the number of examples), "
                          f"got {num_clients!r}")


def _check_rng(rng: np.random.Generator) -> None:
    if not isinstance(rng, np.random.Generator):
        raise ConfigError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")


def _sorted(parts: list[Index]) -> Partition:
    """Each part sorted: one lexsort of (owner, row) over all of them, then cut."""
    sizes = np.array([len(p) for p in parts], dtype=np.int64)
    rows = np.concatenate(parts).astype(np.int64, copy=False)
    owner = np.repeat(np.arange(len(parts)), sizes)
    ordered = rows[np.lexsort((rows, owner))]
    return Partition(tuple(np.split(ordered, np.cumsum(sizes)[:-1])))


def partition_iid(n: int, num_clients: int, *, rng: np.random.Generator) -> Partition:
    """A seeded shuffle of ``range(n)`` cut into ``num_clients`` parts (sizes differ by <= 1)."""
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ConfigError(f"n must be a positive int, got {n!r}")
    _check_counts(int(n), num_clients)
    _check_rng(rng)
    perm = rng.permutation(int(n)).astype(np.int64)
    return _sorted(list(np.array_split(perm, int(num_clients))))


def _dirichlet_owners(by_class: list[Index], num_clients: int, alpha: float,
                      rng: np.random.Generator, n: int) -> Index:
    """One draw: the client that owns each row (an array of length n)."""
    owner = np.empty(n, dtype=np.int64)
    for rows in by_class:
        shuffled = rng.permutation(rows)
        p = rng.dirichlet(np.full(num_clients, alpha))
        # Cut points from the cumulative shares; the last cut is the class size, so every
        # row lands somewhere even when the shares do not sum to exactly 1 in floating point.
        # Position i of the shuffled class goes to the client after the cuts <= i.
        cuts = np.clip(np.floor(np.cumsum(p)[:-1] * len(shuffled)).astype(np.int64),
                       0, len(shuffled))
        owner[shuffled] = np.searchsorted(cuts, np.arange(len(shuffled)), side="right")
    return owner


def _split_by_owner(owner: Index, num_clients: int) -> list[Index]:
    order = np.argsort(owner, kind="stable").astype(np.int64)  # rows ascending per client
    sizes = np.bincount(owner, minlength=num_clients)
    return list(np.split(order, np.cumsum(sizes)[:-1]))


def partition_dirichlet(labels: npt.NDArray[np.int64], num_clients: int, *, alpha: float,
                        rng: np.random.Generator, min_size: int = 1,
                        top_up: bool = True) -> Partition:
    """Label-skewed split: per class, client shares ~ ``Dirichlet(alpha * ones)``.

    Draws again (up to :data:`MAX_DIRICHLET_ATTEMPTS` times) until every client holds at
    least ``min_size`` examples. If no draw does (many clients per example: 10,000 clients
    on 60,000 rows leave some client empty in every draw), ``top_up`` moves random rows from
    the largest clients to those short of ``min_size`` in the last draw (see
    :func:`_top_up`); without it that is a ConfigError. Raises
    :class:`~privml.ConfigError` for ``alpha`` that is not a finite positive number,
    ``num_clients`` outside ``1..n``, or a ``min_size`` that cannot be met at all.
    """
    if not isinstance(labels, np.ndarray) or labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise ConfigError("labels must be a 1-D integer array")
    n = len(labels)
    if n < 1:
        raise ConfigError("labels is empty: nothing to partition")
    if isinstance(alpha, bool) or not isinstance(alpha, int | float | np.floating) \
            or not math.isfinite(alpha) or alpha <= 0:
        raise ConfigError(f"alpha must be > 0, got {alpha!r}")
    _check_counts(n, num_clients)
    _check_rng(rng)
    k = int(num_clients)
    if isinstance(min_size, bool) or not isinstance(min_size, int | np.integer) or min_size < 0:
        raise ConfigError(f"min_size must be an int >= 0, got {min_size!r}")
    if min_size * k > n:
        raise ConfigError(f"min_size {min_size} for {k} clients needs {min_size * k} "
                          f"examples, only {n} given")
    _, inverse = np.unique(labels, return_inverse=True)
    order = np.argsort(inverse, kind="stable").astype(np.int64)
    by_class = np.split(order, np.flatnonzero(np.diff(inverse[order])) + 1)
    owner = np.empty(0, np.int64)
    for _ in range(MAX_DIRICHLET_ATTEMPTS):
        owner = _dirichlet_owners(by_class, k, float(alpha), rng, n)
        if int(np.bincount(owner, minlength=k).min()) >= min_size:
            return _sorted(_split_by_owner(owner, k))
    if not top_up:
        raise ConfigError(f"no Dirichlet(alpha={alpha}) draw in {MAX_DIRICHLET_ATTEMPTS} "
                          f"attempts gave each of {k} clients >= {min_size} examples; raise "
                          "alpha, lower num_clients or min_size, or allow top_up")
    return _sorted(_top_up(_split_by_owner(owner, k), min_size, rng))


def _top_up(parts: list[Index], min_size: int, rng: np.random.Generator) -> list[Index]:
    """Give every client below ``min_size`` random rows of the currently largest clients.

    With many clients (say 10,000 on 60,000 rows) some Dirichlet share is empty in every
    draw, so redrawing never ends; this moves the fewest rows that fix it, one at a time
    from whoever holds the most, so the label skew of the draw is kept almost everywhere."""
    out = [rng.permutation(p) for p in parts]  # taking from the end takes random rows
    donors = [(-len(p), j) for j, p in enumerate(out) if len(p) > min_size]
    heapq.heapify(donors)
    for j in np.flatnonzero([len(p) < min_size for p in out]):
        while len(out[j]) < min_size:  # min_size * clients <= n: donors never run out
            _, d = heapq.heappop(donors)
            out[j] = np.append(out[j], out[d][-1])
            out[d] = out[d][:-1]
            if len(out[d]) > min_size:
                heapq.heappush(donors, (-len(out[d]), d))
    return out


def partition(labels: npt.NDArray[np.int64], num_clients: int, *, alpha: float | None,
              rng: np.random.Generator) -> Partition:
    """IID when ``alpha`` is None, else :func:`partition_dirichlet` with ``min_size=1``."""
    if alpha is None:
        if not isinstance(labels, np.ndarray) or labels.ndim != 1:
            raise ConfigError("labels must be a 1-D integer array")
        return partition_iid(len(labels), num_clients, rng=rng)
    return partition_dirichlet(labels, num_clients, alpha=alpha, rng=rng)
