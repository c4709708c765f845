"""Fixed-point encoding of updates for secure aggregation, and its error bound.

A client's update x (d floats) and weight w (its number of examples, clipped to
[1, max_weight]) become d + 1 integers modulo 2^m::

    q_j = rint(clip(x_j, -c, c) * w * s)  mod 2^m      (j < d),    q_d = w

with s = 2^f (``frac_bits``). The coordinator gets sum_i q_i mod 2^m. If every true sum is
below 2^(m-1) in magnitude, the centred lift (read the m-bit value as signed) gives the exact
integer sum, and the decoded mean is  sum_i q_ij / (s * W)  with W = sum_i w_i — FedAvg's
example-weighted mean of the clipped updates. So the configuration is refused unless

    n * (c * max_weight * s + 1/2) + noise_bound < 2^(m-1)     and     n * max_weight < 2^(m-1)

(n = clients per round; ``noise_bound`` leaves room for integer noise a DP layer adds), and
by default f is the largest that passes (at most 52, where float64 products stay exact).

Error: rounding moves each q_ij by at most 1/2, so the sum by at most n/2, and the mean by
at most n / (2 s W); the float64 arithmetic of encode and decode adds a relative error of
a few ulps (bounded below by 2^-50 of the mean's magnitude, taken as 2^-50 * c). Clipping
the weight means clients with more than ``max_weight`` examples count as ``max_weight``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from privml._exceptions import ConfigError, ParamsError

__all__ = ["FixedPoint"]

_MAX_FRAC = 52


@dataclass(frozen=True, slots=True)
class FixedPoint:
    clip: float
    clients: int
    max_weight: int = 1024
    bits: int = 32
    noise_bound: int = 0
    frac_bits: int | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.clip, int | float) and math.isfinite(self.clip)
                and self.clip > 0):
            raise ConfigError(f"clip must be a finite number > 0, got {self.clip!r}")
        for name, low in (("clients", 1), ("max_weight", 1), ("noise_bound", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
        if self.bits not in (32, 64):
            raise ConfigError(f"bits must be 32 or 64, got {self.bits!r}")
        limit = 2 ** (self.bits - 1)
        if self.clients * self.max_weight >= limit:
            raise ConfigError(f"{self.clients} clients x max_weight {self.max_weight} wraps "
                              f"{self.bits} bits; use bits=64 or a smaller max_weight")
        if self.frac_bits is None:
            f = next((f for f in range(_MAX_FRAC, -1, -1) if self._max_abs(f) < limit), None)
            if f is None:
                raise ConfigError(f"clip {self.clip} x max_weight {self.max_weight} x "
                                  f"{self.clients} clients wraps {self.bits} bits even "
                                  "without fraction bits; use bits=64 or smaller settings")
            object.__setattr__(self, "frac_bits", f)
        elif (isinstance(self.frac_bits, bool) or not isinstance(self.frac_bits, int)
              or not 0 <= self.frac_bits <= _MAX_FRAC):
            raise ConfigError(f"frac_bits must be in [0, {_MAX_FRAC}], got {self.frac_bits!r}")
        elif self._max_abs(self.frac_bits) >= limit:
            raise ConfigError(f"frac_bits {self.frac_bits} lets the sum of {self.clients} "
                              f"clients wrap {self.bits} bits; use bits=64 or fewer bits")

    def _max_abs(self, frac_bits: int) -> float:
        return (self.clients * (self.clip * self.max_weight * 2.0**frac_bits + 0.5)
                + self.noise_bound)

    @property
    def scale(self) -> float:
        assert self.frac_bits is not None
        return 2.0**self.frac_bits

    @property
    def dtype(self) -> np.dtype[np.unsignedinteger]:
        return np.dtype(np.uint32 if self.bits == 32 else np.uint64)

    def encode(self, update: np.ndarray, weight: int) -> np.ndarray:
        if isinstance(weight, bool) or not isinstance(weight, int | np.integer) or weight < 1:
            raise ConfigError(f"weight must be an integer >= 1, got {weight!r}")
        x = np.asarray(update)
        if x.ndim != 1 or x.size == 0 or x.dtype.kind != "f":
            raise ParamsError("an update must be a non-empty 1-D float array")
        if not np.isfinite(x).all():
            raise ParamsError("an update must be finite (no NaN or inf)")
        w = min(int(weight), self.max_weight)
        q = np.rint(np.clip(x.astype(np.float64), -self.clip, self.clip) * (w * self.scale))
        out = np.empty(x.size + 1, dtype=np.int64)
        out[:-1] = q
        out[-1] = w
        if self.bits == 64:
            return out.view(np.uint64)
        return (out & 0xFFFFFFFF).astype(np.uint32)

    def decode(self, total: np.ndarray) -> tuple[np.ndarray, int]:
        """(the example-weighted mean, float64 of length d; the total weight W)."""
        if not isinstance(total, np.ndarray) or total.dtype != self.dtype or total.ndim != 1 \
                or total.size < 2:
            raise ParamsError(f"a sum must be a 1-D {self.dtype.name} array of length >= 2")
        signed = total.view(np.int32 if self.bits == 32 else np.int64)
        weight = int(signed[-1])
        if weight <= 0:
            raise ParamsError("no weight: the sum is empty or corrupt")
        return signed[:-1].astype(np.float64) / (self.scale * weight), weight

    def error_bound(self, summands: int, total_weight: int) -> float:
        """Bound on |decoded mean - exact weighted mean of the clipped updates|."""
        return summands / (2 * self.scale * total_weight) + 2.0**-50 * self.clip

    def describe(self) -> dict[str, float | int]:
        assert self.frac_bits is not None
        worst = self._max_abs(self.frac_bits)
        return {"bits": self.bits, "frac_bits": self.frac_bits, "clip": self.clip,
                "max_weight": self.max_weight, "clients": self.clients,
                "noise_bound": self.noise_bound, "max_abs_sum": worst,
                "headroom_bits": self.bits - 1 - math.log2(worst)}
