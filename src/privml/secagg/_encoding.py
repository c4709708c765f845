"""Fixed-point encoding of model updates for secure aggregation, and its error bound.

Theory of operation
-------------------
Encoding. A client's update x (d floats) and weight w (its number of examples) become
d + 1 integers modulo 2^m (m = ``bits``, 32 or 64), with s = 2^f (f = ``frac_bits``)::

    w   = min(weight, max_weight)                        (weights clipped to [1, max_weight])
    q_j = rint(clip(x_j, -c, c) * w * s)   mod 2^m       (j < d, two's complement)
    q_d = w

The coordinator only learns sum_i q_i mod 2^m (the caller adds encodings in the unsigned
dtype; its wraparound *is* the modulus, so negative values cost nothing extra).

Wrap check. If every true integer sum lies in (-2^(m-1), 2^(m-1)), reading the m-bit result
as signed (the centred lift) gives it back exactly. With n = ``clients`` summands at most,
each |q_j| <= c * max_weight * s + 1/2 and q_d <= max_weight, and a DP layer may add integer
noise of total magnitude at most ``noise_bound`` per value coordinate, so a configuration is
refused (ConfigError) unless

    n * (c * max_weight * s + 1/2) + noise_bound < 2^(m-1)      (value coordinates)
    n * max_weight                                < 2^(m-1)      (weight coordinate)

The first bound is evaluated in exact rational arithmetic, together with the exact largest
integer ``encode`` can produce (rint of the float64 product, which float rounding can push a
hair past c * max_weight * s + 1/2 once that exceeds 2^53); both must fit. By default f is
the largest that passes, capped at 52: a step 1/s finer than 2^-52 is below float64's own
resolution for values of order one (its ulp at 1.0 is 2^-52), so the error would be ruled by
the float64 slack term below and more bits would only eat headroom. Settings with clip << 1
therefore gain nothing from the cap; scale the update instead.

Decoding. With S_j the lifted sums and W = S_d = sum_i w_i, the mean is S_j / (s * W): the
example-weighted mean of the clipped updates, i.e. FedAvg, except that a client with more
than ``max_weight`` examples counts as ``max_weight`` (clipping bounds every client's
influence and keeps the weight sum from wrapping).

Error bound. Write u = 2^-53 and y = clip(x) (exact in float64). In encode, fl(w*s) and
fl(y * fl(w*s)) each round by a relative u, then rint moves by at most 1/2, so
|q_j - y_j w s| <= 1/2 + (2u + u^2)|y_j| w s. Summing n encodings exactly (no wrap):
|S_j - s sum_i w_i y_ij| <= n/2 + (2u + u^2) s c W. Decode rounds S_j, W and the division by
a relative u each (s is a power of two), i.e. at most ~3u of |S_j/(sW)| <= c + r. With
r = n / (2 s W) the total is below r + 5.1 u c + 3.1 u r, which we bound by

    |decoded mean - exact weighted mean of the clipped updates| <= r + 2^-50 * (c + r).

The slack 2^-50 (c + r) = 8u (c + r) is float64's contribution: ~1e-15 for c = 1. Integer
noise added by a DP layer is not part of this bound: it moves the mean by noise / (s W).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import numpy.typing as npt

from privml._exceptions import ConfigError, ParamsError

__all__ = ["FixedPoint"]

_MAX_FRAC = 52  # see the module docstring: finer steps are below float64 resolution
_SLACK = 2.0**-50  # 8 ulps of 1.0: covers the ~5.1 u c + 3.1 u r of float64 rounding
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_BIG = "; use bits=64 or a smaller clip, max_weight or clients"


def _is_int(value: object) -> bool:
    # bool is an int subclass, but True as a count of clients is a bug, not a 1
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def _int_at_least(name: str, value: object, low: int, what: str = "") -> int:
    if not isinstance(value, int | np.integer) or isinstance(value, bool | np.bool_) \
            or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}{what}, got {value!r}")
    return int(value)


@dataclass(frozen=True, slots=True)
class FixedPoint:
    """Fixed-point encoding of example-weighted updates in Z_{2^bits} (see the module
    docstring for the encoding, the wrap check and the error bound).

    ``clip``: coordinates are clipped to [-clip, clip]. ``clients``: the most summands a
    round can have. ``max_weight``: weights are clipped to [1, max_weight]. ``bits``: 32
    or 64. ``noise_bound``: bound on |sum of integer noise| per coordinate a DP layer may
    add. ``frac_bits``: None picks the largest that cannot wrap (resolved on construction).
    Construction refuses, with :class:`ConfigError`, any setting whose sum could wrap.
    """

    clip: float
    clients: int
    max_weight: int = 1024
    bits: int = 32
    noise_bound: int = 0
    frac_bits: int | None = None

    def __post_init__(self) -> None:
        self._check_fields()
        object.__setattr__(self, "clip", float(self.clip))
        for name in ("clients", "max_weight", "bits", "noise_bound"):
            object.__setattr__(self, name, int(getattr(self, name)))
        if self.clients * self.max_weight >= self._limit:
            raise ConfigError(
                f"the weight sum wraps: clients={self.clients} x max_weight="
                f"{self.max_weight} = {self.clients * self.max_weight} is not below "
                f"2^{self.bits - 1}{_BIG}")
        if self.frac_bits is None:
            object.__setattr__(self, "frac_bits", self._auto_frac())
        else:
            self._check_frac(self.frac_bits)

    def _check_fields(self) -> None:
        c = self.clip
        if (isinstance(c, bool | np.bool_) or not isinstance(c, int | float | np.floating)
                or not math.isfinite(c) or c <= 0):
            raise ConfigError(f"clip must be a finite number > 0, got {c!r}")
        for name, low in (("clients", 1), ("max_weight", 1), ("noise_bound", 0)):
            _int_at_least(name, getattr(self, name), low)
        if not _is_int(self.bits) or self.bits not in (32, 64):
            raise ConfigError(f"bits must be 32 or 64, got {self.bits!r}")

    @property
    def _limit(self) -> int:
        return 1 << (self.bits - 1)

    def _value_worst(self, frac_bits: int) -> Fraction:
        """Worst-case |sum| of a value coordinate at ``frac_bits``, exactly: the larger of the
        documented bound and the largest integer encode really produces."""
        n, mw = self.clients, self.max_weight
        documented = n * (Fraction(self.clip) * mw * (1 << frac_bits) + Fraction(1, 2))
        product = self.clip * (mw * 2.0**frac_bits)  # the same float64 steps as encode
        # round() is rint (half to even) giving an exact int; an overflowed product is
        # already far past the documented bound, which then refuses the setting
        reached = n * round(product) if math.isfinite(product) else 0
        return max(documented, Fraction(reached)) + self.noise_bound

    def _auto_frac(self) -> int:
        for f in range(_MAX_FRAC, -1, -1):
            if self._value_worst(f) < self._limit:
                return f
        raise ConfigError(
            f"the value sum wraps even with frac_bits=0: clients={self.clients} x "
            f"(clip={self.clip} x max_weight={self.max_weight} + 1/2) + noise_bound="
            f"{self.noise_bound} is not below 2^{self.bits - 1}{_BIG}")

    def _check_frac(self, frac: object) -> None:
        f = _int_at_least("frac_bits", frac, 0, " (or None)")
        if f > _MAX_FRAC:
            raise ConfigError(f"frac_bits must be at most {_MAX_FRAC} (float64 resolution), "
                              f"got {f}")
        object.__setattr__(self, "frac_bits", f)
        worst = self._value_worst(self._frac)
        if worst >= self._limit:
            raise ConfigError(
                f"frac_bits={f} lets the value sum wrap: worst case {float(worst):.6g} is not "
                f"below 2^{self.bits - 1}{_BIG}, or fewer frac_bits (None picks the largest "
                "that fits)")

    @property
    def _frac(self) -> int:
        if self.frac_bits is None:  # unreachable: __post_init__ resolves it
            raise AssertionError("frac_bits was not resolved")
        return self.frac_bits

    @property
    def scale(self) -> float:
        """s = 2^frac_bits: a value v is carried as the integer rint(v * s)."""
        return 2.0**self._frac

    @property
    def dtype(self) -> np.dtype[np.unsignedinteger]:
        """The unsigned dtype whose wraparound is the modulus 2^bits."""
        return np.dtype(np.uint32 if self.bits == 32 else np.uint64)

    @property
    def _signed(self) -> type[np.int32] | type[np.int64]:
        return np.int32 if self.bits == 32 else np.int64

    def encode(self, update: npt.ArrayLike, weight: int) -> npt.NDArray[np.unsignedinteger]:
        """A 1-D float32/float64 update (length d >= 1, all finite, else ParamsError) and an
        integer weight >= 1 (bool refused; ConfigError) -> d + 1 values of :attr:`dtype`:
        rint(clip(x, -clip, clip) * w * s) mod 2^bits, then w = min(weight, max_weight)."""
        w = self._clip_weight(weight)
        y = _as_update(update).astype(np.float64)  # a copy; float32 -> float64 is exact
        np.clip(y, -self.clip, self.clip, out=y)
        np.multiply(y, w * self.scale, out=y)
        np.rint(y, out=y)
        # The wrap check bounds |q| < 2^(bits-1), so the cast to the signed type is exact and
        # the unsigned view is the two's complement residue mod 2^bits.
        out = np.empty(y.size + 1, dtype=self._signed)
        out[:-1] = y
        out[-1] = w
        return out.view(self.dtype)

    def _clip_weight(self, weight: object) -> int:
        w = _int_at_least("weight", weight, 1, " (a number of examples)")
        return min(w, self.max_weight)

    def decode(self, total: npt.NDArray[np.unsignedinteger]) -> tuple[
            npt.NDArray[np.float64], int]:
        """The modular sum of encodings (:attr:`dtype`, length d + 1) -> (the float64
        example-weighted mean of length d, the total weight W), via the centred lift.

        ParamsError for a wrong type, dtype or shape, for W <= 0 (an empty or corrupt sum),
        for W > clients * max_weight (more than any admitted sum: corrupt), and for a value
        sum no clipped inputs of weight W can reach (an input was not clipped)."""
        if not isinstance(total, np.ndarray):
            raise ParamsError(f"a sum must be a numpy array, got {type(total).__name__}")
        if total.dtype != self.dtype:
            raise ParamsError(f"a sum must have dtype {self.dtype}, got {total.dtype}")
        if total.ndim != 1 or total.size < 2:
            raise ParamsError("a sum must be 1-D with d >= 1 values and the weight, got "
                              f"shape {total.shape}")
        lifted = total.view(self._signed)
        weight = int(lifted[-1])
        if weight <= 0:
            raise ParamsError("no weight: the sum is empty or corrupt")
        if weight > self.clients * self.max_weight:
            raise ParamsError(f"total weight {weight} exceeds clients x max_weight = "
                              f"{self.clients * self.max_weight}: the sum is corrupt")
        # The check of the unmasked aggregate: honest encodings are clipped, so every
        # |S_j| <= c s W + n/2 (+ the DP layer's noise). A larger one means some input was
        # not clipped (a malicious or broken client): the sum is refused, not applied.
        limit = self.clip * self.scale * weight + self.clients / 2 + self.noise_bound
        limit = limit * (1 + _SLACK) + 1  # encode's float64 rounding (module docstring)
        values = lifted[:-1]
        if values.size and float(np.abs(values).max()) > limit:
            raise ParamsError(
                "the unmasked sum lies outside what clipped inputs can add up to (|mean| > "
                f"clip {self.clip:g}): some client's input was not clipped; the sum is "
                "refused")
        mean = values.astype(np.float64)
        mean /= self.scale * weight
        return mean, weight

    def error_bound(self, summands: int, total_weight: int) -> float:
        """Bound on |decoded mean - exact weighted mean of the clipped updates| per
        coordinate, for ``summands`` encodings of (clipped) total weight ``total_weight``.

        r = summands / (2 s W): each summand's rint moves it by at most 1/2, so the sum by
        summands/2, and the mean by that over s W. Plus 2^-50 (clip + r) for float64: encode
        rounds w*s and the product (2u relative, u = 2^-53), decode rounds the sum, W and
        the quotient (3u), which stays below 8u (clip + r). Noise a DP layer adds is extra.
        """
        n = _int_at_least("summands", summands, 1)
        total = _int_at_least("total_weight", total_weight, n, " (= summands)")
        r = n / (2 * self.scale * total)
        return r + _SLACK * (self.clip + r)

    def describe(self) -> dict[str, float | int]:
        """JSON-friendly summary. ``max_abs_sum``: the worst-case |sum| of any coordinate
        (values with noise, or the weight); ``headroom_bits``: log2(2^(bits-1) /
        max_abs_sum), how far the worst case stays from wrapping."""
        worst = max(float(self._value_worst(self._frac)), float(self.clients * self.max_weight))
        return {"bits": self.bits, "frac_bits": self._frac, "clip": self.clip,
                "max_weight": self.max_weight, "clients": self.clients,
                "noise_bound": self.noise_bound, "max_abs_sum": worst,
                "headroom_bits": self.bits - 1 - math.log2(worst)}


def _as_update(update: npt.ArrayLike) -> npt.NDArray[np.floating]:
    x = np.asarray(update)
    if x.dtype not in _FLOATS:
        raise ParamsError(f"an update must be float32 or float64, got {x.dtype}")
    if x.ndim != 1:
        raise ParamsError(f"an update must be 1-D, got shape {x.shape}")
    if x.size == 0:
        raise ParamsError("an update must not be empty")
    finite = np.isfinite(x)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ParamsError(f"an update must be finite: {bad.size} NaN/inf values (first at "
                          f"index {bad[0]})")
    return x
