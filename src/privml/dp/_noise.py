"""Randomness for DP noise: a securely seeded numpy generator by default.

Every sampler takes ``rng=None`` and then draws from :func:`secure_rng`: a fresh PCG64
generator seeded with 128 bits from the OS CSPRNG (``secrets``), so noise is never
reproducible by default. PCG64's *outputs* are not cryptographic; what matters for DP is
that an adversary cannot know the seed, which comes from the OS. A reproducible generator
exists only for tests, and its name says so (:func:`insecure_rng`).
"""

from __future__ import annotations

import math
import secrets

import numpy as np
import numpy.typing as npt

from privml._exceptions import ConfigError

__all__ = ["gaussian_noise", "insecure_rng", "secure_rng"]


def secure_rng() -> np.random.Generator:
    """A numpy generator seeded from the OS CSPRNG (128 bits); not reproducible."""
    return np.random.default_rng(secrets.randbits(128))


def insecure_rng(seed: int) -> np.random.Generator:
    """A *reproducible* generator for tests only: noise from it protects nothing."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be an integer >= 0, got {seed!r}")
    return np.random.default_rng(seed)


def pick_rng(rng: np.random.Generator | None, insecure_seed: int | None) -> np.random.Generator:
    """The generator a sampler uses: ``rng`` if given, else the insecure test seed if given,
    else a fresh secure one. Both at once is ambiguous and refused."""
    if rng is not None and insecure_seed is not None:
        raise ConfigError("pass rng or insecure_seed, not both")
    if rng is not None:
        if not isinstance(rng, np.random.Generator):
            raise ConfigError(f"rng must be a numpy Generator, got {type(rng).__name__}")
        return rng
    if insecure_seed is not None:
        return insecure_rng(insecure_seed)
    return secure_rng()


def gaussian_noise(shape: int | tuple[int, ...], *, std: float,
                   rng: np.random.Generator | None = None,
                   insecure_seed: int | None = None) -> npt.NDArray[np.float64]:
    """Central Gaussian noise N(0, std^2) of ``shape`` (float64). ``std`` = noise
    multiplier x L2 clip bound. ``rng`` None: a secure generator (see :func:`secure_rng`);
    ``insecure_seed`` makes the draw reproducible, for tests only."""
    if isinstance(std, bool) or not isinstance(std, int | float) or not math.isfinite(std) \
            or std < 0:
        raise ConfigError(f"std must be a finite number >= 0, got {std!r}")
    gen = pick_rng(rng, insecure_seed)
    return gen.normal(0.0, float(std), size=shape)
