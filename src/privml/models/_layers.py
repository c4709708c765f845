"""The layers of a portable model spec: pure data, validated on construction.

Each layer knows how it maps a channels-last input shape (without the batch axis) to its
output shape, so a whole stack can be checked before any framework builds it. Messages name
the layer; :class:`~privml.models.ModelSpec` prefixes them with the layer's position.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal, TypeAlias

from privml._exceptions import ConfigError

__all__ = [
    "LAYER_TYPES",
    "Conv2D",
    "Dense",
    "Dropout",
    "Flatten",
    "Layer",
    "MaxPool2D",
    "ReLU",
    "Softmax",
    "same_padding",
]

Shape: TypeAlias = tuple[int, ...]

# Names become torch submodule names ("<name>.weight") and TF.js weight names
# ("<name>/kernel"), so they may hold neither "." nor "/".
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")


def _check_name(kind: str, name: object) -> None:
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{kind}: name must be a non-empty string, got {name!r}")
    if not _NAME.fullmatch(name):
        raise ConfigError(
            f"{kind} {name!r}: name must start with a letter and hold only letters, digits,"
            " '_' or '-' (64 characters at most)"
        )


def _check_positive(where: str, field: str, value: object) -> None:
    # bool is an int subclass; True as a width is a bug, not a 1.
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{where}: {field} must be a positive integer, got {value!r}")


def _need_image(where: str, shape: Shape) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise ConfigError(
            f"{where}: needs an image input (H, W, C), got shape {shape}"
            " (give the model an (H, W, C) input_shape)"
        )
    return shape[0], shape[1], shape[2]


@dataclass(frozen=True, slots=True)
class Dense:
    """A fully connected layer on a flat input: ``y = x @ kernel + bias``."""

    units: int
    name: str

    def __post_init__(self) -> None:
        _check_name("Dense", self.name)
        _check_positive(f"Dense {self.name!r}", "units", self.units)

    def output_shape(self, shape: Shape) -> Shape:
        if len(shape) != 1:
            raise ConfigError(
                f"Dense {self.name!r}: needs a flat input, got shape {shape}"
                " (add a Flatten before it)"
            )
        return (self.units,)


@dataclass(frozen=True, slots=True)
class Conv2D:
    """A 2-D convolution on a channels-last image, Keras semantics (``same`` pads like TF)."""

    filters: int
    kernel_size: int
    name: str
    padding: Literal["same", "valid"] = "same"
    stride: int = 1

    def __post_init__(self) -> None:
        _check_name("Conv2D", self.name)
        where = f"Conv2D {self.name!r}"
        _check_positive(where, "filters", self.filters)
        _check_positive(where, "kernel_size", self.kernel_size)
        _check_positive(where, "stride", self.stride)
        if self.padding not in ("same", "valid"):
            raise ConfigError(f"{where}: padding must be 'same' or 'valid', got {self.padding!r}")

    def output_shape(self, shape: Shape) -> Shape:
        where = f"Conv2D {self.name!r}"
        h, w, _ = _need_image(where, shape)
        if self.padding == "same":
            return (-(-h // self.stride), -(-w // self.stride), self.filters)
        if h < self.kernel_size or w < self.kernel_size:
            raise ConfigError(
                f"{where}: kernel {self.kernel_size} does not fit a {h}x{w} input with"
                " padding 'valid'"
            )
        k, s = self.kernel_size, self.stride
        return ((h - k) // s + 1, (w - k) // s + 1, self.filters)


@dataclass(frozen=True, slots=True)
class MaxPool2D:
    """Max pooling over ``pool_size`` squares with stride ``pool_size`` (Keras defaults)."""

    pool_size: int = 2

    def __post_init__(self) -> None:
        _check_positive("MaxPool2D", "pool_size", self.pool_size)

    def output_shape(self, shape: Shape) -> Shape:
        h, w, c = _need_image("MaxPool2D", shape)
        p = self.pool_size
        if h < p or w < p:
            raise ConfigError(f"MaxPool2D: pool {p} shrinks a {h}x{w} input to nothing")
        return (h // p, w // p, c)


@dataclass(frozen=True, slots=True)
class Flatten:
    """Flatten to one axis in channels-last (H, W, C) order, as Keras and TF.js do."""

    def output_shape(self, shape: Shape) -> Shape:
        return (math.prod(shape),)


@dataclass(frozen=True, slots=True)
class ReLU:
    """max(x, 0), elementwise."""

    def output_shape(self, shape: Shape) -> Shape:
        return shape


@dataclass(frozen=True, slots=True)
class Softmax:
    """Softmax over the last (feature or channel) axis."""

    def output_shape(self, shape: Shape) -> Shape:
        return shape


@dataclass(frozen=True, slots=True)
class Dropout:
    """Zero each input with probability ``rate`` while training (inverted dropout)."""

    rate: float

    def __post_init__(self) -> None:
        ok = isinstance(self.rate, int | float) and not isinstance(self.rate, bool)
        # Written so that NaN fails too.
        if not (ok and 0.0 <= self.rate < 1.0):
            raise ConfigError(f"Dropout: rate must be in [0, 1), got {self.rate!r}")

    def output_shape(self, shape: Shape) -> Shape:
        return shape


Layer: TypeAlias = Dense | Conv2D | MaxPool2D | Flatten | ReLU | Softmax | Dropout
LAYER_TYPES: tuple[type[Layer], ...] = (Dense, Conv2D, MaxPool2D, Flatten, ReLU, Softmax, Dropout)


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF's ``same`` padding of one axis as (before, after); the odd pixel goes after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2
