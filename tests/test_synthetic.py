"""The synthetic dataset: shapes, seeds, chunking, learnability, memory, names, bad input."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privml import ConfigError
from privml.data import DATASETS, load_dataset, make_synthetic
from privml.data import _synthetic as synthetic_module
from privml.sim import SimConfig, run_simulation

SETTINGS = settings(max_examples=25, deadline=None)


@SETTINGS
@given(rows=st.integers(1, 3000), features=st.integers(1, 12), classes=st.integers(2, 12),
       seed=st.integers(0, 2**32 - 1))
def test_shapes_dtypes_and_labels(rows: int, features: int, classes: int, seed: int) -> None:
    ds = make_synthetic(rows, features=features, classes=classes, seed=seed)
    n_test = max(1, min(10_000, rows // 5))
    assert ds.name == "synthetic"
    assert ds.x_train.shape == (rows, features) and ds.x_test.shape == (n_test, features)
    assert ds.y_train.shape == (rows,) and ds.y_test.shape == (n_test,)
    assert ds.x_train.dtype == ds.x_test.dtype == np.float32
    assert ds.y_train.dtype == ds.y_test.dtype == np.int64
    assert ds.x_train.flags.c_contiguous and ds.x_test.flags.c_contiguous
    assert ds.input_shape == (features,) and ds.num_classes == classes
    assert ds.classes == tuple(str(c) for c in range(classes))
    for y in (ds.y_train, ds.y_test):
        assert int(y.min()) >= 0 and int(y.max()) < classes
    assert np.isfinite(ds.x_train).all() and np.isfinite(ds.x_test).all()


def test_default_test_part_is_a_fifth_capped_at_ten_thousand() -> None:
    assert len(make_synthetic(4).y_test) == 1
    assert len(make_synthetic(500).y_test) == 100
    assert len(make_synthetic(60_000, features=2).y_test) == 10_000
    assert len(make_synthetic(50, test_rows=7).y_test) == 7


def test_every_class_appears_in_about_equal_shares() -> None:
    counts = np.bincount(make_synthetic(20_000, classes=5).y_train, minlength=5)
    assert counts.min() > 0.9 * 4000 and counts.max() < 1.1 * 4000


@SETTINGS
@given(seed=st.integers(0, 2**32 - 2))
def test_same_seed_same_data_other_seed_other_data(seed: int) -> None:
    a, b = make_synthetic(300, seed=seed), make_synthetic(300, seed=seed)
    c = make_synthetic(300, seed=seed + 1)
    for part in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, part), getattr(b, part))
    assert not np.array_equal(a.x_train, c.x_train)
    assert not np.array_equal(a.x_test, c.x_test)


@SETTINGS
@given(small=st.integers(1, 60), extra=st.integers(0, 60), chunk=st.integers(1, 16))
def test_a_smaller_dataset_is_a_prefix_of_a_larger_one(small: int, extra: int, chunk: int,
                                                       ) -> None:
    # A tiny chunk size puts many chunk boundaries inside these few rows.
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(synthetic_module, "CHUNK_ROWS", chunk)
        a = make_synthetic(small, seed=5, test_rows=small)
        b = make_synthetic(small + extra, seed=5, test_rows=small + extra)
    np.testing.assert_array_equal(a.x_train, b.x_train[:small])
    np.testing.assert_array_equal(a.y_train, b.y_train[:small])
    np.testing.assert_array_equal(a.x_test, b.x_test[:small])
    np.testing.assert_array_equal(a.y_test, b.y_test[:small])


def test_train_and_test_parts_differ() -> None:
    ds = make_synthetic(100, test_rows=100)
    assert not np.array_equal(ds.x_train, ds.x_test)


def test_a_logistic_regression_learns_it() -> None:
    from sklearn.linear_model import LogisticRegression

    ds = make_synthetic(5000, seed=3)
    accuracy = LogisticRegression(max_iter=300).fit(ds.x_train, ds.y_train).score(
        ds.x_test, ds.y_test)
    assert accuracy > 0.6  # chance is 0.1; about 0.8 is typical


def test_a_federated_logreg_learns_it_by_name() -> None:
    cfg = SimConfig(dataset="synthetic:3000", model="logreg", clients=10, per_round=5,
                    rounds=3, alpha=None, epochs=1, batch_size=32, lr=0.05)
    result = run_simulation(cfg)
    assert result.final_accuracy > 0.5


def test_a_million_rows_cost_little_beyond_the_arrays() -> None:
    tracemalloc.start()
    try:
        ds = make_synthetic(1_000_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    arrays = sum(a.nbytes for a in (ds.x_train, ds.y_train, ds.x_test, ds.y_test))
    assert arrays == 1_000_000 * (20 * 4 + 8) + 10_000 * (20 * 4 + 8)
    # One chunk's temporaries are ~5 MB; a float64 copy of x alone would be 160 MB.
    assert peak < arrays + 16 * 2**20


# -------------------------------------------------------------------------------- by name

def test_load_dataset_names() -> None:
    assert "synthetic" in DATASETS
    ds = load_dataset("synthetic", seed=4)
    assert ds.x_train.shape == (100_000, 20)
    np.testing.assert_array_equal(ds.x_train[:50], make_synthetic(50, seed=4).x_train)
    assert load_dataset("synthetic:1_500").x_train.shape == (1500, 20)
    assert load_dataset("synthetic:7", seed=1).y_train.shape == (7,)


@pytest.mark.parametrize("name", ["synthetic:", "synthetic:abc", "synthetic:-5", "synthetic:0",
                                  "synthetic: 5", "synthetic:1e6", "synthetic:+5",
                                  "synthetic:1__0", "synthetic:_1", "synthetic:5_",
                                  "synthetic:\u0661\u0662"])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="synthetic"):
        load_dataset(name)


def test_a_path_is_refused() -> None:
    with pytest.raises(ConfigError, match="takes no path"):
        load_dataset("synthetic", path="/tmp/x.csv")


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"rows": 0}, "rows must be an int >= 1"),
    ({"rows": -3}, "rows must be an int >= 1"),
    ({"rows": 2.5}, "rows must be an int >= 1"),
    ({"rows": True}, "rows must be an int >= 1"),
    ({"rows": "100"}, "rows must be an int >= 1"),
    ({"rows": 10, "features": 0}, "features must be an int >= 1"),
    ({"rows": 10, "classes": 1}, "classes must be an int >= 2"),
    ({"rows": 10, "classes": 2.0}, "classes must be an int >= 2"),
    ({"rows": 10, "test_rows": 0}, "test_rows must be an int >= 1"),
    ({"rows": 10, "seed": -1}, "seed must be an int"),
    ({"rows": 10, "seed": 2**32}, "seed must be an int"),
])
def test_bad_arguments_are_refused(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        make_synthetic(**kwargs)  # type: ignore[arg-type]
