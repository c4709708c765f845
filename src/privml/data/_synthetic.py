"""A synthetic classification dataset of any size, made without large temporaries.

Every class ``c`` has a centre ``mu_c`` drawn once from ``N(0, s^2 I)``; a row of class ``c``
is ``mu_c + N(0, I)``, its class drawn uniformly. With ``s = DISTANCE / sqrt(2 * features)``
two centres lie ``DISTANCE`` noise widths apart on average whatever the number of features,
so the difficulty barely moves with ``features``. The classes share one covariance, so the
Bayes-optimal classifier is linear: a logistic regression can reach it (about 83% accuracy
at the defaults, 20 features and 10 classes; chance is 10%).

Rows are written chunk by chunk straight into the preallocated float32 array (the normal
draws are float32 and made in place), so a million rows need the arrays themselves and a
few megabytes besides. Chunk ``i`` of the training part has its own generators, seeded by
``(seed, part, i)``, so the rows of a smaller dataset are a prefix of a larger one with the
same seed, and the test part does not depend on the number of training rows.
"""

from __future__ import annotations

import math
import re

import numpy as np
import numpy.typing as npt

from privml._exceptions import ConfigError
from privml.data._dataset import Dataset, check_seed

__all__ = ["DEFAULT_ROWS", "make_synthetic", "parse_synthetic"]

#: Training rows of the dataset named plainly ``synthetic``.
DEFAULT_ROWS = 100_000
DEFAULT_FEATURES = 20
DEFAULT_CLASSES = 10
MAX_TEST_ROWS = 10_000  # the default test part: rows // 5, at most this
DISTANCE = 4.0  # mean distance between two class centres, in noise standard deviations
CHUNK_ROWS = 1 << 16
_CENTRES, _TRAIN, _TEST = 0, 1, 2  # the parts' keys in the seed
_ROWS = re.compile(r"[0-9]+(?:_[0-9]+)*")  # what int() takes, less signs, spaces, Unicode


def _count(label: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ConfigError(f"synthetic dataset: {label} must be an int >= {minimum}, "
                          f"got {value!r}")
    return int(value)


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def _fill(x: npt.NDArray[np.float32], y: npt.NDArray[np.int64],
          centres: npt.NDArray[np.float32], seed: int, part: int) -> None:
    """Fill ``x`` and ``y`` in place, one chunk (and one generator) at a time."""
    for chunk, start in enumerate(range(0, len(y), CHUNK_ROWS)):
        stop = min(start + CHUNK_ROWS, len(y))
        # Labels and noise from two generators: a shorter chunk is then a prefix of a
        # longer one (one generator would start the noise where the labels left it).
        y[start:stop] = _rng(seed, part, chunk, 0).integers(0, len(centres), size=stop - start)
        block = x[start:stop]  # a contiguous view: the draw lands in x itself
        _rng(seed, part, chunk, 1).standard_normal(dtype=np.float32, out=block)
        block += centres[y[start:stop]]


def make_synthetic(rows: int, *, features: int = DEFAULT_FEATURES,
                   classes: int = DEFAULT_CLASSES, seed: int = 0,
                   test_rows: int | None = None) -> Dataset:
    """A learnable ``(rows, features)`` float32 classification problem (module doc).

    ``test_rows`` held-out rows come from the same distribution (default ``rows // 5``, at
    least 1 and at most 10,000, so that evaluating stays cheap at a million rows). The same
    ``seed`` gives the same data; labels are int64 in ``0..classes-1``. Raises
    :class:`~privml.ConfigError` for a count that is not a positive int (``classes`` >= 2)
    or a bad seed.
    """
    n = _count("rows", rows, 1)
    f = _count("features", features, 1)
    k = _count("classes", classes, 2)
    seed = check_seed(seed)
    n_test = (max(1, min(MAX_TEST_ROWS, n // 5)) if test_rows is None
              else _count("test_rows", test_rows, 1))
    scale = DISTANCE / math.sqrt(2.0 * f)
    centres = (_rng(seed, _CENTRES).standard_normal((k, f)) * scale).astype(np.float32)
    x_train = np.empty((n, f), dtype=np.float32)
    y_train = np.empty(n, dtype=np.int64)
    _fill(x_train, y_train, centres, seed, _TRAIN)
    x_test = np.empty((n_test, f), dtype=np.float32)
    y_test = np.empty(n_test, dtype=np.int64)
    _fill(x_test, y_test, centres, seed, _TEST)
    return Dataset(name="synthetic", x_train=x_train, y_train=y_train, x_test=x_test,
                   y_test=y_test, num_classes=k, input_shape=(f,),
                   classes=tuple(str(c) for c in range(k)))


def parse_synthetic(name: str) -> int:
    """The training rows a dataset name asks for: ``synthetic`` -> :data:`DEFAULT_ROWS`,
    ``synthetic:ROWS`` -> ROWS (digits, ``_`` allowed: ``synthetic:1_000_000``)."""
    if name == "synthetic":
        return DEFAULT_ROWS
    text = name.partition(":")[2]
    if not _ROWS.fullmatch(text):
        raise ConfigError(f"dataset {name!r}: use synthetic or synthetic:ROWS, ROWS a "
                          "positive whole number (e.g. synthetic:1000000)")
    return _count("rows", int(text), 1)
