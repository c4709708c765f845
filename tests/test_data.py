"""Datasets: the public surface, digits, IDX files, Fashion-MNIST (fake and real), Dataset."""

from __future__ import annotations

import gzip
import struct
import types
from pathlib import Path

import numpy as np
import pytest

import privml.data as data
from privml import ConfigError, DataError
from privml.data import (
    DATASETS,
    FASHION_MNIST_CLASSES,
    Dataset,
    load_dataset,
    load_digits,
    load_fashion_mnist,
    read_idx,
)

CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(">i2"): 0x0B,
         np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}


def idx_bytes(arr: np.ndarray, code: int | None = None) -> bytes:
    be = arr.astype(arr.dtype.newbyteorder(">"))
    code = CODES[be.dtype] if code is None else code
    head = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return head + be.tobytes()


def write(path: Path, payload: bytes) -> Path:
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)
    return path


# ---------------------------------------------------------------------------- public surface

def test_all_matches_the_public_names() -> None:
    public = {name for name, value in vars(data).items()
              if not name.startswith("_") and not isinstance(value, types.ModuleType)}
    public -= {"annotations"}
    assert set(data.__all__) == public
    assert len(data.__all__) == len(set(data.__all__))
    assert DATASETS == ("digits", "fashion-mnist", "csv", "synthetic")


# ---------------------------------------------------------------------------------- digits

def test_digits_shapes_range_dtypes_and_classes() -> None:
    ds = load_digits()
    assert ds.name == "digits"
    assert ds.x_train.shape == (1437, 8, 8, 1) and ds.x_test.shape == (360, 8, 8, 1)
    assert ds.y_train.shape == (1437,) and ds.y_test.shape == (360,)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert ds.x_test.dtype == np.float32 and ds.y_test.dtype == np.int64
    assert ds.x_train.min() >= 0.0 and ds.x_train.max() == 1.0
    assert ds.num_classes == 10 and ds.input_shape == (8, 8, 1)
    assert ds.classes == tuple(str(d) for d in range(10))
    assert set(np.unique(ds.y_train)) == set(range(10))


def test_digits_split_is_seeded() -> None:
    a, b, c = load_digits(seed=7), load_dataset("digits", seed=7), load_digits(seed=8)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert not np.array_equal(a.y_train, c.y_train)


def test_digits_split_is_stratified() -> None:
    ds = load_digits(seed=3, test_fraction=0.25)
    total = np.bincount(ds.y_train, minlength=10) + np.bincount(ds.y_test, minlength=10)
    test = np.bincount(ds.y_test, minlength=10)
    assert np.all(np.abs(test - 0.25 * total) <= 1)


@pytest.mark.parametrize("fraction", [0, 1, -0.1, 1.5, float("nan"), True])
def test_bad_test_fraction(fraction: float) -> None:
    with pytest.raises(ConfigError, match="test_fraction must be in"):
        load_digits(test_fraction=fraction)


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5])
def test_bad_seed(seed: int) -> None:
    with pytest.raises(ConfigError, match="seed must be"):
        load_digits(seed=seed)


# ----------------------------------------------------------------------------- load_dataset

def test_unknown_dataset_name() -> None:
    with pytest.raises(ConfigError) as info:
        load_dataset("mnist")
    assert str(info.value) == ("unknown dataset 'mnist' (choose from digits, fashion-mnist, "
                               "csv, synthetic; csv:PATH and synthetic:ROWS name a file or "
                               "a size)")


def test_dataset_name_misuse() -> None:
    with pytest.raises(ConfigError, match="needs a path"):
        load_dataset("csv")
    with pytest.raises(ConfigError, match="names no file"):
        load_dataset("csv:")
    with pytest.raises(ConfigError, match="different files"):
        load_dataset("csv:a.csv", path="b.csv")
    with pytest.raises(ConfigError, match="takes no path"):
        load_dataset("digits", path="x")
    with pytest.raises(ConfigError, match="must be a string"):
        load_dataset(3)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------- IDX

@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", list(CODES))
def test_idx_round_trip(tmp_path: Path, dtype: np.dtype, suffix: str) -> None:
    rng = np.random.default_rng(0)
    for ndim in range(1, 5):
        shape = tuple(int(s) for s in rng.integers(1, 5, size=ndim))
        if dtype.kind == "f":
            arr = rng.normal(size=shape).astype(dtype)
        else:
            info = np.iinfo(dtype)
            arr = rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
        path = write(tmp_path / f"a{ndim}.idx{suffix}", idx_bytes(arr))
        back = read_idx(path)
        assert back.shape == shape and back.dtype == dtype.newbyteorder("=")
        assert back.dtype.isnative
        np.testing.assert_array_equal(back, arr)


def test_idx_gzip_is_detected_without_the_suffix(tmp_path: Path) -> None:
    arr = np.arange(6, dtype=np.uint8).reshape(2, 3)
    path = tmp_path / "plain.idx"
    path.write_bytes(gzip.compress(idx_bytes(arr)))
    np.testing.assert_array_equal(read_idx(str(path)), arr)


def _cases() -> dict[str, tuple[bytes, str]]:
    good = idx_bytes(np.arange(12, dtype=np.uint8).reshape(3, 4))
    return {
        "bad magic": (b"\x01\x00" + good[2:], "bad magic"),
        "unknown dtype": (good[:2] + b"\x0a" + good[3:], "unknown dtype code 0x0a"),
        "zero dims": (b"\x00\x00\x08\x00", "0 dimensions"),
        "five dims": (b"\x00\x00\x08\x05" + struct.pack(">5I", 1, 1, 1, 1, 1) + b"\x00",
                      "5 dimensions"),
        "short header": (b"\x00\x00", "truncated header"),
        "short dims": (good[:6], "truncated header"),
        "truncated data": (good[:-1], "truncated data"),
        "trailing bytes": (good + b"\x00", "trailing bytes"),
        "huge": (b"\x00\x00\x0e\x03" + struct.pack(">3I", 2**16, 2**16, 2**16), "limit"),
        "empty": (b"", "truncated header"),
    }


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("case", list(_cases()))
def test_idx_rejects_malformed_files(tmp_path: Path, case: str, suffix: str) -> None:
    payload, message = _cases()[case]
    path = write(tmp_path / f"bad.idx{suffix}", payload)
    with pytest.raises(DataError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("corrupt", ["garbage", "cut", "crc", "trailing junk"])
def test_idx_rejects_corrupt_gzip(tmp_path: Path, corrupt: str) -> None:
    packed = gzip.compress(idx_bytes(np.arange(100, dtype=np.uint8)))
    payload = {
        "garbage": b"this is not gzip at all",
        "cut": packed[: len(packed) // 2],
        "crc": packed[:-8] + bytes([packed[-8] ^ 0xFF]) + packed[-7:],
        "trailing junk": packed + b"junk",
    }[corrupt]
    path = tmp_path / "bad.idx.gz"
    path.write_bytes(payload)
    with pytest.raises(DataError) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_idx_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found") as info:
        read_idx(tmp_path / "nope.idx.gz")
    assert "nope.idx.gz" in str(info.value)
    with pytest.raises(DataError, match="cannot read"):
        read_idx(tmp_path)


# --------------------------------------------------------------------------- Fashion-MNIST

def fake_fashion(root: Path, n_train: int = 20, n_test: int = 10, *, gz: bool = True,
                 labels_shift: int = 0, image_shape: tuple[int, ...] = (28, 28),
                 n_train_labels: int | None = None) -> Path:
    rng = np.random.default_rng(1)
    root.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, *image_shape), dtype=np.uint8)
        images[0].flat[0] = 255
        n_labels = n_train_labels if prefix == "train" and n_train_labels is not None else n
        labels = (np.arange(n_labels) % 10 + labels_shift).astype(np.uint8)
        write(root / f"{prefix}-images-idx3-ubyte{suffix}", idx_bytes(images))
        write(root / f"{prefix}-labels-idx1-ubyte{suffix}", idx_bytes(labels))
    return root


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_from_a_fake_directory(tmp_path: Path, gz: bool) -> None:
    ds = load_fashion_mnist(fake_fashion(tmp_path / "fm", gz=gz))
    assert ds.name == "fashion-mnist" and ds.classes == FASHION_MNIST_CLASSES
    assert ds.x_train.shape == (20, 28, 28, 1) and ds.x_test.shape == (10, 28, 28, 1)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert ds.x_train[0, 0, 0, 0] == 1.0 and ds.x_train.min() >= 0.0
    np.testing.assert_array_equal(ds.y_train, np.arange(20) % 10)
    assert ds.num_classes == 10 and ds.input_shape == (28, 28, 1)


def test_fashion_mnist_path_from_the_environment(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRIVML_FASHION_MNIST", str(fake_fashion(tmp_path / "env")))
    assert load_dataset("fashion-mnist").x_test.shape == (10, 28, 28, 1)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"n_train_labels": 19}, "20 images .* but 19 labels"),
    ({"labels_shift": 1}, "labels must lie in 0..9"),
    ({"image_shape": (27, 28)}, "expected uint8 images of shape"),
    ({"image_shape": (28 * 28,)}, "expected uint8 images of shape"),
])
def test_fashion_mnist_rejects_inconsistent_files(tmp_path: Path, kwargs: dict[str, object],
                                                  message: str) -> None:
    root = fake_fashion(tmp_path / "fm", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(DataError, match=message) as info:
        load_fashion_mnist(root)
    assert str(root) in str(info.value)


def test_fashion_mnist_missing_directory_or_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path / "absent")
    root = fake_fashion(tmp_path / "fm")
    (root / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz: not found"):
        load_fashion_mnist(root)


def test_real_fashion_mnist(monkeypatch: pytest.MonkeyPatch) -> None:
    # The Debian package dataset-fashion-mnist is a test dependency (the Makefile installs it).
    monkeypatch.delenv("PRIVML_FASHION_MNIST", raising=False)
    ds = load_dataset("fashion-mnist")
    assert ds.x_train.shape == (60000, 28, 28, 1) and ds.x_test.shape == (10000, 28, 28, 1)
    assert ds.y_train.shape == (60000,) and ds.y_test.shape == (10000,)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert float(ds.x_train.min()) == 0.0 and float(ds.x_train.max()) == 1.0
    np.testing.assert_array_equal(np.bincount(ds.y_train), np.full(10, 6000))
    np.testing.assert_array_equal(np.bincount(ds.y_test), np.full(10, 1000))


# --------------------------------------------------------------------------------- Dataset

def small(**changes: object) -> Dataset:
    fields: dict[str, object] = {
        "name": "t", "x_train": np.zeros((4, 3), np.float32),
        "y_train": np.array([0, 1, 0, 1]), "x_test": np.zeros((2, 3), np.float32),
        "y_test": np.array([1, 0]), "num_classes": 2, "input_shape": (3,),
        "classes": ("a", "b"),
    }
    fields.update(changes)
    return Dataset(**fields)  # type: ignore[arg-type]


def test_dataset_accepts_a_consistent_record() -> None:
    ds = small()
    with pytest.raises(AttributeError):
        ds.name = "other"  # type: ignore[misc]


@pytest.mark.parametrize(("changes", "message"), [
    ({"name": ""}, "non-empty"),
    ({"x_train": np.zeros((4, 3))}, "x_train must be a float32"),
    ({"y_test": np.array([1, 0], np.int32)}, "y_test must be a 1-D int64"),
    ({"y_train": np.array([0, 1, 0])}, "4 x_train rows but 3 labels"),
    ({"x_test": np.zeros((2, 4), np.float32)}, "input_shape is"),
    ({"y_train": np.array([0, 1, 2, 1])}, "labels must lie in 0..1"),
    ({"classes": ("a",)}, "1 class names for 2 classes"),
    ({"num_classes": 0, "classes": ()}, "num_classes must be >= 1"),
    ({"input_shape": ()}, "input_shape must be"),
    ({"x_train": np.array([[0, np.nan, 0]] * 4, np.float32)}, "NaN or Inf"),
    ({"x_train": np.zeros((0, 3), np.float32), "y_train": np.zeros(0, np.int64)},
     "no training examples"),
])
def test_dataset_rejects_inconsistent_records(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        small(**changes)
