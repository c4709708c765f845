"""Partitions: invariants under hypothesis, Dirichlet skew against alpha, client views."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privml import ConfigError
from privml.data import (
    ClientData,
    Partition,
    load_digits,
    partition,
    partition_dirichlet,
    partition_iid,
)

SETTINGS = settings(max_examples=50, deadline=None)
seeds = st.integers(0, 2**32 - 1)


def covers_exactly_once(p: Partition, n: int) -> None:
    every = np.concatenate(p.indices)
    np.testing.assert_array_equal(np.sort(every), np.arange(n))
    for ix in p.indices:
        assert ix.dtype == np.int64
        assert np.all(np.diff(ix) > 0)
    assert int(p.sizes().sum()) == n


def same(a: Partition, b: Partition) -> bool:
    return a.num_clients == b.num_clients and all(
        np.array_equal(x, y) for x, y in zip(a.indices, b.indices, strict=True))


def random_labels(seed: int, n: int, num_classes: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, num_classes, size=n).astype(np.int64)


def tv_from_global(p: Partition, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Total-variation distance of each client's label distribution from the global one."""
    hist = p.label_histogram(labels, num_classes).astype(np.float64)
    local = hist / hist.sum(axis=1, keepdims=True)
    overall = np.bincount(labels, minlength=num_classes) / len(labels)
    tv: np.ndarray = 0.5 * np.abs(local - overall).sum(axis=1)
    return tv


# --------------------------------------------------------------------------------------- IID

@SETTINGS
@given(n=st.integers(1, 500), data=st.data(), seed=seeds)
def test_iid_assigns_every_index_once(n: int, data: st.DataObject, seed: int) -> None:
    k = data.draw(st.integers(1, min(n, 40)))
    p = partition_iid(n, k, rng=np.random.default_rng(seed))
    assert p.num_clients == k
    covers_exactly_once(p, n)
    assert int(p.sizes().max() - p.sizes().min()) <= 1
    assert same(p, partition_iid(n, k, rng=np.random.default_rng(seed)))


# --------------------------------------------------------------------------------- Dirichlet

@SETTINGS
@given(k=st.integers(1, 8), per_client=st.integers(30, 60), num_classes=st.integers(1, 6),
       alpha=st.floats(0.5, 1000.0), min_size=st.integers(0, 2), seed=seeds)
def test_dirichlet_invariants(k: int, per_client: int, num_classes: int, alpha: float,
                              min_size: int, seed: int) -> None:
    n = k * per_client
    labels = random_labels(seed, n, num_classes)
    p = partition_dirichlet(labels, k, alpha=alpha, rng=np.random.default_rng(seed),
                            min_size=min_size)
    assert p.num_clients == k
    covers_exactly_once(p, n)
    assert int(p.sizes().min()) >= min_size
    again = partition_dirichlet(labels, k, alpha=alpha, rng=np.random.default_rng(seed),
                                min_size=min_size)
    assert same(p, again)
    hist = p.label_histogram(labels, num_classes)
    np.testing.assert_array_equal(hist.sum(axis=0), np.bincount(labels, minlength=num_classes))


@SETTINGS
@given(k=st.integers(2, 10), num_classes=st.integers(2, 10), seed=seeds)
def test_dirichlet_with_min_size_keeps_every_client_fed(k: int, num_classes: int,
                                                        seed: int) -> None:
    labels = random_labels(seed, 100 * k, num_classes)
    p = partition_dirichlet(labels, k, alpha=1.0, rng=np.random.default_rng(seed), min_size=10)
    covers_exactly_once(p, len(labels))
    assert int(p.sizes().min()) >= 10


@SETTINGS
@given(k=st.integers(1, 10), num_classes=st.integers(2, 10), seed=seeds)
def test_large_alpha_is_close_to_iid(k: int, num_classes: int, seed: int) -> None:
    labels = random_labels(seed, 150 * k, num_classes)
    p = partition_dirichlet(labels, k, alpha=1e4, rng=np.random.default_rng(seed))
    assert int(p.sizes().min()) >= 100
    assert float(tv_from_global(p, labels, num_classes).max()) < 0.2


@settings(max_examples=20, deadline=None)
@given(seed=seeds)
def test_small_alpha_is_far_more_skewed(seed: int) -> None:
    labels = np.arange(2000, dtype=np.int64) % 10
    skewed = partition_dirichlet(labels, 10, alpha=0.05, rng=np.random.default_rng(seed))
    flat = partition_dirichlet(labels, 10, alpha=1e4, rng=np.random.default_rng(seed))
    tv_skewed = float(tv_from_global(skewed, labels, 10).mean())
    tv_flat = float(tv_from_global(flat, labels, 10).mean())
    assert tv_skewed > 0.4 and tv_skewed > tv_flat + 0.3


def test_partition_dispatches_on_alpha() -> None:
    labels = np.arange(100, dtype=np.int64) % 4
    iid = partition(labels, 5, alpha=None, rng=np.random.default_rng(3))
    assert same(iid, partition_iid(100, 5, rng=np.random.default_rng(3)))
    skew = partition(labels, 5, alpha=0.3, rng=np.random.default_rng(3))
    assert same(skew, partition_dirichlet(labels, 5, alpha=0.3, rng=np.random.default_rng(3)))


# ------------------------------------------------------------------------------ bad input

@pytest.mark.parametrize("alpha", [0, 0.0, -1, float("nan"), float("inf"), True])
def test_bad_alpha(alpha: float) -> None:
    labels = np.zeros(10, dtype=np.int64)
    with pytest.raises(ConfigError, match="alpha must be > 0, got"):
        partition_dirichlet(labels, 2, alpha=alpha, rng=np.random.default_rng(0))
    with pytest.raises(ConfigError, match="alpha must be > 0"):
        partition(labels, 2, alpha=alpha, rng=np.random.default_rng(0))


@pytest.mark.parametrize("k", [0, -1, 11, 2.0])
def test_bad_num_clients(k: int) -> None:
    labels = np.zeros(10, dtype=np.int64)
    rng = np.random.default_rng(0)
    with pytest.raises(ConfigError, match=r"num_clients must be in 1\.\.10"):
        partition_iid(10, k, rng=rng)
    with pytest.raises(ConfigError, match=r"num_clients must be in 1\.\.10"):
        partition_dirichlet(labels, k, alpha=1.0, rng=rng)
    with pytest.raises(ConfigError, match=r"num_clients must be in 1\.\.10"):
        partition(labels, k, alpha=None, rng=rng)


def test_other_bad_arguments() -> None:
    labels = np.zeros(10, dtype=np.int64)
    rng = np.random.default_rng(0)
    with pytest.raises(ConfigError, match=r"numpy\.random\.Generator"):
        partition_iid(10, 2, rng=np.random.RandomState(0))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="n must be a positive int"):
        partition_iid(0, 1, rng=rng)
    with pytest.raises(ConfigError, match="needs 12 examples, only 10"):
        partition_dirichlet(labels, 4, alpha=1.0, rng=rng, min_size=3)
    with pytest.raises(ConfigError, match="min_size must be"):
        partition_dirichlet(labels, 4, alpha=1.0, rng=rng, min_size=-1)
    with pytest.raises(ConfigError, match="1-D integer array"):
        partition_dirichlet(labels.astype(np.float32), 2, alpha=1.0, rng=rng)
    with pytest.raises(ConfigError, match="empty"):
        partition_dirichlet(labels[:0], 1, alpha=1.0, rng=rng)


def test_unreachable_min_size_gives_up_without_top_up() -> None:
    # One class, ten clients and a tiny alpha: nearly all rows go to one client every draw.
    labels = np.zeros(20, dtype=np.int64)
    with pytest.raises(ConfigError, match=r"no Dirichlet.*100 attempts"):
        partition_dirichlet(labels, 10, alpha=1e-3, rng=np.random.default_rng(0), min_size=2,
                            top_up=False)
    # With top-up (the default) the short clients get rows of the largest ones.
    p = partition_dirichlet(labels, 10, alpha=1e-3, rng=np.random.default_rng(0), min_size=2)
    assert p.sizes().tolist() == [2] * 10 and p.n == 20


def test_ten_thousand_clients_on_sixty_thousand_rows_all_get_data() -> None:
    """Fashion-MNIST's scale: every Dirichlet(0.5) draw leaves clients empty, so the last
    draw is topped up; only the short clients change, by the fewest rows."""
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 10, 60_000).astype(np.int64)
    p = partition_dirichlet(labels, 10_000, alpha=0.5, rng=np.random.default_rng(0))
    sizes = p.sizes()
    assert sizes.min() >= 1 and p.n == 60_000 and p.num_clients == 10_000
    # Still label-skewed: most clients hold few distinct labels.
    hist = p.label_histogram(labels, 10)
    assert np.median((hist > 0).sum(axis=1)) <= 4


@pytest.mark.parametrize(("indices", "message"), [
    ((), "at least one"),
    ((np.array([0, 1]), np.array([1, 2])), "exactly once"),
    ((np.array([0, 2]),), "exactly once"),
    ((np.array([1, 0]),), "sorted and distinct"),
    ((np.array([0, 1], dtype=np.int32),), "int64"),
])
def test_partition_validates(indices: tuple[np.ndarray, ...], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Partition(indices)


# ---------------------------------------------------------------------------- client views

def test_clients_are_views_of_the_dataset() -> None:
    ds = load_digits()
    p = partition_dirichlet(ds.y_train, 7, alpha=0.5, rng=np.random.default_rng(2))
    clients = p.clients(ds.x_train, ds.y_train)
    assert len(clients) == 7
    hist = p.label_histogram(ds.y_train, ds.num_classes)
    assert hist.shape == (7, 10)
    for k, cd in enumerate(clients):
        assert cd.x is ds.x_train and cd.y is ds.y_train
        assert cd.indices is p.indices[k]
        assert len(cd) == len(p.indices[k])
        h = cd.label_histogram(ds.num_classes)
        assert int(h.sum()) == len(cd)
        np.testing.assert_array_equal(h, hist[k])
        positions = np.array([0, len(cd) - 1, len(cd) // 2], dtype=np.int64)
        xb, yb = cd.take(positions)
        rows = cd.indices[positions]
        np.testing.assert_array_equal(xb, ds.x_train[rows])
        np.testing.assert_array_equal(yb, ds.y_train[rows])
        xs, ys = cd.take(slice(1, 4))
        np.testing.assert_array_equal(xs, ds.x_train[cd.indices[1:4]])
        np.testing.assert_array_equal(ys, ds.y_train[cd.indices[1:4]])
        assert not np.shares_memory(xb, ds.x_train)  # a batch is a copy, the data is not


def test_client_data_validates() -> None:
    x = np.zeros((5, 2), np.float32)
    y = np.zeros(5, np.int64)
    with pytest.raises(ConfigError, match=r"must lie in 0\.\.4"):
        ClientData(x=x, y=y, indices=np.array([0, 5]))
    with pytest.raises(ConfigError, match="5 rows in x but 4 in y"):
        ClientData(x=x, y=y[:4], indices=np.array([0]))
    with pytest.raises(ConfigError, match="int64"):
        ClientData(x=x, y=y, indices=np.array([0], np.int32))
    cd = ClientData(x=x, y=y, indices=np.array([0, 1]))
    with pytest.raises(ConfigError, match="num_classes must be a positive int"):
        cd.label_histogram(0)
    with pytest.raises(ConfigError, match=r"labels must lie in 0\.\.0"):
        ClientData(x=x, y=np.arange(5), indices=np.array([0, 4])).label_histogram(1)
    p = partition_iid(5, 2, rng=np.random.default_rng(0))
    with pytest.raises(ConfigError, match="given x of 4 rows"):
        p.clients(x[:4], y[:4])
    with pytest.raises(ConfigError, match="4 labels for 5 examples"):
        p.label_histogram(y[:4], 1)
