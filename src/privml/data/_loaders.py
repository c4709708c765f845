"""The named datasets: digits (bundled with scikit-learn), Fashion-MNIST (IDX files on disk),
CSV and a generated synthetic problem. Nothing here downloads anything: a dataset that is
not on disk is a DataError that says where it was looked for and how to install it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from privml._exceptions import ConfigError, DataError
from privml.data._csv import load_csv
from privml.data._dataset import Dataset, check_seed, check_test_fraction, split
from privml.data._idx import read_idx
from privml.data._synthetic import make_synthetic, parse_synthetic

__all__ = [
    "DATASETS",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DIR",
    "FASHION_MNIST_ENV",
    "load_dataset",
    "load_digits",
    "load_fashion_mnist",
]

DATASETS: tuple[str, ...] = ("digits", "fashion-mnist", "csv", "synthetic")

#: Where the Debian package ``dataset-fashion-mnist`` installs the files.
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
#: Environment variable that overrides :data:`FASHION_MNIST_DIR`.
FASHION_MNIST_ENV = "PRIVML_FASHION_MNIST"
FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
_FASHION_SIDE = 28
_DIGITS_MAX_PIXEL = 16.0
_PIXEL_MAX = 255.0


def load_digits(*, seed: int = 0, test_fraction: float = 0.2) -> Dataset:
    """scikit-learn's bundled 8x8 digits as ``(n, 8, 8, 1)`` in ``[0, 1]``.

    The split is seeded and stratified, so the same seed always gives the same split and
    every digit is represented on both sides in proportion.
    """
    fraction = check_test_fraction(test_fraction)
    seed = check_seed(seed)
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    x = (np.asarray(bunch.data, dtype=np.float64) / _DIGITS_MAX_PIXEL).astype(np.float32)
    x = x.reshape(-1, 8, 8, 1)
    y = np.asarray(bunch.target, dtype=np.int64)
    x_train, y_train, x_test, y_test = split(x, y, test_fraction=fraction, seed=seed,
                                             stratify=True)
    return Dataset(name="digits", x_train=x_train, y_train=y_train, x_test=x_test,
                   y_test=y_test, num_classes=10, input_shape=(8, 8, 1),
                   classes=tuple(str(d) for d in range(10)))


def _fashion_file(directory: Path, stem: str) -> Path:
    """The gzip file if present, else an uncompressed one, else the gzip name (to report)."""
    gz = directory / f"{stem}.gz"
    if not gz.exists() and (directory / stem).exists():
        return directory / stem
    return gz


def _fashion_part(directory: Path, prefix: str) -> tuple[npt.NDArray[np.float32],
                                                         npt.NDArray[np.int64]]:
    images_path = _fashion_file(directory, f"{prefix}-images-idx3-ubyte")
    labels_path = _fashion_file(directory, f"{prefix}-labels-idx1-ubyte")
    images: npt.NDArray[Any] = read_idx(images_path)
    labels: npt.NDArray[Any] = read_idx(labels_path)
    if images.dtype != np.uint8 or images.shape[1:] != (_FASHION_SIDE, _FASHION_SIDE) \
            or images.ndim != 3:
        raise DataError(f"IDX file {images_path}: expected uint8 images of shape "
                        f"(n, 28, 28), got {images.dtype} {images.shape}")
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DataError(f"IDX file {labels_path}: expected a 1-D integer label vector, "
                        f"got {labels.dtype} {labels.shape}")
    if len(images) != len(labels):
        raise DataError(f"fashion-mnist {prefix}: {len(images)} images in {images_path} "
                        f"but {len(labels)} labels in {labels_path}")
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) > 9):
        raise DataError(f"IDX file {labels_path}: labels must lie in 0..9, found "
                        f"{int(labels.min())}..{int(labels.max())}")
    # Scale in place: the float32 copy of the training images is ~190 MB, so avoid a second.
    x = images.astype(np.float32)
    x /= np.float32(_PIXEL_MAX)
    return x.reshape(-1, _FASHION_SIDE, _FASHION_SIDE, 1), labels.astype(np.int64)


def load_fashion_mnist(path: str | Path | None = None) -> Dataset:
    """Fashion-MNIST from its four IDX files, with its own 60000/10000 train/test split.

    ``path`` is the directory holding the files (gzip or not); it defaults to
    ``$PRIVML_FASHION_MNIST``, else ``/usr/share/datasets/fashion-mnist`` (Debian package
    ``dataset-fashion-mnist``). Images are ``(n, 28, 28, 1)`` float32 in ``[0, 1]``.
    """
    if path is None:
        path = os.environ.get(FASHION_MNIST_ENV) or FASHION_MNIST_DIR
    directory = Path(path)
    if not directory.is_dir():
        raise DataError(f"fashion-mnist directory {directory} not found (install the Debian "
                        f"package dataset-fashion-mnist or set {FASHION_MNIST_ENV})")
    x_train, y_train = _fashion_part(directory, "train")
    x_test, y_test = _fashion_part(directory, "t10k")
    return Dataset(name="fashion-mnist", x_train=x_train, y_train=y_train, x_test=x_test,
                   y_test=y_test, num_classes=10, input_shape=(_FASHION_SIDE, _FASHION_SIDE, 1),
                   classes=FASHION_MNIST_CLASSES)


def load_dataset(name: str, *, seed: int = 0, path: str | Path | None = None,
                 label: str = "label", test_fraction: float = 0.2) -> Dataset:
    """Load one of :data:`DATASETS` by name.

    ``"csv"`` needs ``path`` (or the name ``"csv:PATH"``) and uses ``label``; ``seed`` and
    ``test_fraction`` shape the split of digits and CSV, while Fashion-MNIST keeps its own
    split and takes ``path`` as its directory. ``"synthetic"`` is
    :func:`~privml.data.make_synthetic` with 100,000 training rows, ``"synthetic:ROWS"``
    with ROWS (e.g. ``synthetic:1000000``); ``seed`` seeds it, it generates its own test
    rows (``test_fraction`` is not used) and takes no path. Raises
    :class:`~privml.ConfigError` for an unknown name or a missing CSV path.
    """
    if not isinstance(name, str):
        raise ConfigError(f"dataset name must be a string, got {type(name).__name__}")
    if name.startswith("csv:"):
        inline = name[len("csv:"):]
        if not inline:
            raise ConfigError("dataset 'csv:' names no file (use csv:PATH)")
        if path is not None and Path(path) != Path(inline):
            raise ConfigError(f"dataset {name!r} and path {str(path)!r} name different files")
        name, path = "csv", inline
    if name == "digits":
        if path is not None:
            raise ConfigError("dataset 'digits' is bundled with scikit-learn and takes no path")
        return load_digits(seed=seed, test_fraction=test_fraction)
    if name == "fashion-mnist":
        return load_fashion_mnist(path)
    if name == "synthetic" or name.startswith("synthetic:"):
        if path is not None:
            raise ConfigError("dataset 'synthetic' is generated and takes no path")
        return make_synthetic(parse_synthetic(name), seed=seed)
    if name == "csv":
        if path is None:
            raise ConfigError("dataset 'csv' needs a path (pass path=... or use csv:PATH)")
        return load_csv(path, label=label, test_fraction=test_fraction, seed=seed)
    raise ConfigError(f"unknown dataset {name!r} (choose from {', '.join(DATASETS)}; "
                      "csv:PATH and synthetic:ROWS name a file or a size)")
