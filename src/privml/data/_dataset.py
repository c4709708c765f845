"""The :class:`Dataset` record and the seeded train/test split shared by the loaders."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from privml._exceptions import ConfigError

__all__ = ["Dataset", "check_seed", "check_test_fraction", "split"]


def _check_pair(name: str, part: str, x: npt.NDArray[np.generic],
                y: npt.NDArray[np.generic], *, input_shape: tuple[int, ...],
                num_classes: int) -> None:
    if not isinstance(x, np.ndarray) or x.dtype != np.float32:
        raise ConfigError(f"dataset {name!r}: x_{part} must be a float32 array")
    if not isinstance(y, np.ndarray) or y.dtype != np.int64 or y.ndim != 1:
        raise ConfigError(f"dataset {name!r}: y_{part} must be a 1-D int64 array")
    if x.shape[1:] != input_shape:
        raise ConfigError(
            f"dataset {name!r}: x_{part} rows have shape {x.shape[1:]}, "
            f"input_shape is {input_shape}"
        )
    if len(x) != len(y):
        raise ConfigError(f"dataset {name!r}: {len(x)} x_{part} rows but {len(y)} labels")
    if y.size and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ConfigError(
            f"dataset {name!r}: y_{part} labels must lie in 0..{num_classes - 1}, "
            f"found {int(y.min())}..{int(y.max())}"
        )
    # A NaN feature would silently poison every model trained on it, so refuse it here once.
    # A float64 sum is finite iff every float32 entry is (it cannot overflow), and it spares
    # a bool temporary as large as the images.
    if not math.isfinite(float(np.sum(x, dtype=np.float64))):
        raise ConfigError(f"dataset {name!r}: x_{part} contains NaN or Inf")


@dataclass(frozen=True, slots=True)
class Dataset:
    """A labelled train/test dataset held in memory.

    Images are channels-last ``(n, H, W, C)`` float32 in ``[0, 1]``; tabular data is
    ``(n, F)``. Labels are int64 in ``0..num_classes-1``. The arrays are shared with every
    :class:`~privml.data.ClientData` built from them, so treat them as read-only.
    """

    name: str
    x_train: npt.NDArray[np.float32]
    y_train: npt.NDArray[np.int64]
    x_test: npt.NDArray[np.float32]
    y_test: npt.NDArray[np.int64]
    num_classes: int
    input_shape: tuple[int, ...]
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError("dataset name must be a non-empty string")
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) \
                or self.num_classes < 1:
            raise ConfigError(f"dataset {self.name!r}: num_classes must be >= 1, "
                              f"got {self.num_classes!r}")
        if not isinstance(self.input_shape, tuple) or not self.input_shape or any(
                isinstance(d, bool) or not isinstance(d, int) or d < 1
                for d in self.input_shape):
            raise ConfigError(f"dataset {self.name!r}: input_shape must be a non-empty tuple "
                              f"of positive ints, got {self.input_shape!r}")
        if not isinstance(self.classes, tuple) or len(self.classes) != self.num_classes:
            raise ConfigError(f"dataset {self.name!r}: {len(self.classes)} class names for "
                              f"{self.num_classes} classes")
        if not all(isinstance(c, str) for c in self.classes):
            raise ConfigError(f"dataset {self.name!r}: class names must be strings")
        for part, x, y in (("train", self.x_train, self.y_train),
                           ("test", self.x_test, self.y_test)):
            _check_pair(self.name, part, x, y, input_shape=self.input_shape,
                        num_classes=self.num_classes)
        if len(self.x_train) == 0:
            raise ConfigError(f"dataset {self.name!r}: no training examples")


def check_seed(seed: int) -> int:
    """``seed`` if it is a usable split seed (sklearn wants 0 <= seed < 2**32)."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) \
            or not 0 <= int(seed) < 2**32:
        raise ConfigError(f"seed must be an int in [0, 2**32), got {seed!r}")
    return int(seed)


def check_test_fraction(test_fraction: float) -> float:
    """``test_fraction`` as a float, if it lies strictly between 0 and 1."""
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, int | float) \
            or not 0.0 < float(test_fraction) < 1.0:
        raise ConfigError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    return float(test_fraction)


def split(x: npt.NDArray[np.float32], y: npt.NDArray[np.int64], *, test_fraction: float,
          seed: int, stratify: bool) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64],
                                              npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """Seeded train/test split; stratified by ``y`` when ``stratify`` and the counts allow it.

    Stratification needs at least two examples of every class and room for every class on
    both sides; without that sklearn raises, so such data falls back to a plain shuffle
    rather than failing on, say, a small CSV with one rare label.
    Callers make sure ``len(y) >= 2``; the test side then gets ``ceil(fraction * n)`` rows
    and the train side at least one.
    """
    # Imported here: sklearn.model_selection takes over a second to import, which every
    # `import privml.data` (and so the CLI's start-up) would otherwise pay.
    from sklearn.model_selection import train_test_split

    n = len(y)
    n_test = min(max(math.ceil(test_fraction * n), 1), n - 1)
    counts = np.bincount(y)
    counts = counts[counts > 0]
    can_stratify = stratify and bool((counts >= 2).all()) \
        and n_test >= len(counts) and n - n_test >= len(counts)
    parts = train_test_split(x, y, test_size=n_test, random_state=seed,
                             stratify=y if can_stratify else None)
    x_train, x_test, y_train, y_test = parts
    return (np.ascontiguousarray(x_train), np.ascontiguousarray(y_train),
            np.ascontiguousarray(x_test), np.ascontiguousarray(y_test))
