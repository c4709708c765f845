"""Client-level L2 clipping, fixed and adaptive.

Adaptive clipping follows Andrew, Thakkar, McMahan & Ramaswamy 2021, "Differentially
private learning with adaptive clipping" (NeurIPS), geometric update. Each round every
client reports the bit b_i = [||update_i|| <= C]; the server forms the noisy fraction

    b~ = (sum_i b_i + N(0, sigma_b^2)) / n          (n: the expected number of clients)

and moves C <- C * exp(-eta * (b~ - gamma)): when more than a gamma fraction of updates
fit under C, C shrinks, and it grows otherwise, so C tracks the gamma-quantile of norms.

The bit sum is a second Gaussian query on the same clients. The paper (Section 3, the
noise-splitting argument) has clients send b_i - 1/2, whose sum has sensitivity 1/2, so a
round that releases the update sum with noise multiplier z_delta and the bit sum with
noise std sigma_b is exactly as private as ONE Gaussian query with multiplier z when

    z_delta = (z^-2 - (2 sigma_b)^-2)^(-1/2).

Account for the round with z (unchanged), and add noise z_delta * C to the update sum.
This needs 2 sigma_b > z; the paper suggests sigma_b = n / 20.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from privml._exceptions import ConfigError
from privml.dp._noise import pick_rng

__all__ = ["AdaptiveClip", "adaptive_noise_multiplier", "clip_l2"]


def _finite_positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating) \
            or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def clip_l2(vector: npt.ArrayLike, *, bound: float) -> tuple[npt.NDArray[np.floating], float]:
    """Scale a float vector (any shape, e.g. a flattened update) to L2 norm <= ``bound``.

    Returns (clipped copy, original L2 norm). Non-finite values raise ConfigError: a NaN
    would pass every norm check and then poison the sum."""
    c = _finite_positive("bound", bound)
    x = np.asarray(vector)
    if x.dtype not in (np.float32, np.float64):
        raise ConfigError(f"clip_l2 needs a float32/float64 array, got {x.dtype}")
    if not np.isfinite(x).all():
        raise ConfigError("clip_l2 needs finite values")
    norm = float(np.linalg.norm(x.astype(np.float64).ravel()))
    out = x.copy()
    if norm > c:
        out *= c / norm
        # float rounding may leave the norm an ulp or two above c; shrink until it holds
        while float(np.linalg.norm(out.astype(np.float64).ravel())) > c:
            out *= np.nextafter(out.dtype.type(1), out.dtype.type(0))
    return out, norm


def adaptive_noise_multiplier(*, noise_multiplier: float, bit_noise_std: float) -> float:
    """z_delta = (z^-2 - (2 sigma_b)^-2)^(-1/2): the update-sum noise multiplier that keeps
    the whole round (update sum + clipped-bit sum) at multiplier z (Andrew et al. 2021).
    ConfigError unless 2 sigma_b > z."""
    z = _finite_positive("noise_multiplier", noise_multiplier)
    sb = _finite_positive("bit_noise_std", bit_noise_std)
    rest = z**-2 - (2 * sb) ** -2
    if rest <= 0:
        raise ConfigError(f"bit_noise_std {sb:g} is too small for noise_multiplier {z:g}: "
                          "need 2 * bit_noise_std > noise_multiplier")
    return float(rest**-0.5)


@dataclass(frozen=True, slots=True, kw_only=True)
class AdaptiveClip:
    """The clip bound C of one round and the rule that moves it (module docstring).

    ``initial``: C this round. ``bit_noise_std``: sigma_b, std of the noise on the bit sum
    (keyword-only, required: it is a privacy parameter). ``target_quantile``: gamma in
    (0, 1). ``learning_rate``: eta > 0. :meth:`updated` returns the next round's object."""

    initial: float
    bit_noise_std: float
    target_quantile: float = 0.5
    learning_rate: float = 0.2

    def __post_init__(self) -> None:
        object.__setattr__(self, "initial", _finite_positive("initial", self.initial))
        object.__setattr__(self, "bit_noise_std",
                           _finite_positive("bit_noise_std", self.bit_noise_std))
        gamma = self.target_quantile
        if isinstance(gamma, bool) or not isinstance(gamma, int | float) \
                or not 0 < gamma < 1:
            raise ConfigError(f"target_quantile must be in (0, 1), got {gamma!r}")
        object.__setattr__(self, "learning_rate",
                           _finite_positive("learning_rate", self.learning_rate))

    @property
    def bound(self) -> float:
        """The clip bound C to use this round."""
        return self.initial

    def clip_bit(self, norm: float) -> int:
        """Client side: 1 if an update of L2 ``norm`` fits under C, else 0."""
        return int(norm <= self.initial)

    def noisy_fraction(self, bit_sum: int, *, clients: int,
                       rng: np.random.Generator | None = None,
                       insecure_seed: int | None = None) -> float:
        """Server side: (sum of bits + N(0, sigma_b^2)) / clients."""
        if isinstance(clients, bool) or not isinstance(clients, int) or clients < 1:
            raise ConfigError(f"clients must be an integer >= 1, got {clients!r}")
        noise = pick_rng(rng, insecure_seed).normal(0.0, self.bit_noise_std)
        return (float(bit_sum) + float(noise)) / clients

    def updated(self, noisy_fraction: float) -> AdaptiveClip:
        """Next round: C * exp(-eta * (noisy_fraction - gamma))."""
        if not math.isfinite(noisy_fraction):
            raise ConfigError(f"noisy_fraction must be finite, got {noisy_fraction!r}")
        step = -self.learning_rate * (noisy_fraction - self.target_quantile)
        return dataclasses.replace(self, initial=self.initial * math.exp(step))

    def update_noise_multiplier(self, noise_multiplier: float) -> float:
        """z_delta for this clip's sigma_b (see :func:`adaptive_noise_multiplier`)."""
        return adaptive_noise_multiplier(noise_multiplier=noise_multiplier,
                                         bit_noise_std=self.bit_noise_std)
