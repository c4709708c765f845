"""Canaries for the one-run privacy audit (Steinke, Nasr & Jagielski 2023).

Theory of operation: ``m`` canary examples — inputs drawn uniformly from the data's range
with uniformly random labels, so nothing but memorisation lets a model fit them — are made
from a seed, and each is put into the training data independently with probability 1/2 (a
fair coin from the OS CSPRNG: the auditor keeps the bits, the training run must not be able
to guess them). After training, the audit scores every canary by its loss under the final
model (a low loss says "it was trained on") and counts how well the scores guess the bits
(:mod:`privml.audit._mia`). Canaries go to random clients; in a client-level run they test
an example inside a client's data, a weaker attack than replacing a whole client, so the
bound they give stays a valid lower bound on the run's ε.

What is stored (in the run's configuration in the run database): ``m``, the seed and the
inclusion bits as hex. They are the audit's secret; the run database is the auditor's.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from privml._exceptions import ConfigError
from privml.data import Dataset

__all__ = ["CanarySet", "with_canaries"]

MAX_CANARIES = 100_000


@dataclass(frozen=True, slots=True)
class CanarySet:
    m: int
    seed: int
    included: npt.NDArray[np.bool_]
    low: float = 0.0  # the range of the inputs
    high: float = 1.0

    def make(self, input_shape: tuple[int, ...], num_classes: int
             ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """The canaries' inputs and labels (the same from the same seed)."""
        rng = np.random.default_rng([self.seed, 0xCA7A])
        x = rng.uniform(self.low, self.high, size=(self.m, *input_shape)).astype(np.float32)
        y = rng.integers(0, num_classes, size=self.m).astype(np.int64)
        return x, y

    def to_dict(self) -> dict[str, Any]:
        return {"m": self.m, "seed": self.seed, "low": self.low, "high": self.high,
                "included": np.packbits(self.included).tobytes().hex()}

    @classmethod
    def from_dict(cls, d: object) -> CanarySet:
        try:
            if not isinstance(d, dict):
                raise TypeError(f"a {type(d).__name__}, not a mapping")
            m, seed = int(d["m"]), int(d["seed"])
            bits = np.unpackbits(np.frombuffer(bytes.fromhex(d["included"]), np.uint8))[:m]
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"the run's canary record is malformed: {exc}") from None
        if bits.size != m:
            raise ConfigError("the run's canary record is malformed: too few bits")
        return cls(m, seed, bits.astype(bool), float(d.get("low", 0.0)),
                   float(d.get("high", 1.0)))


def with_canaries(ds: Dataset, m: int, *, seed: int | None = None) -> tuple[Dataset, CanarySet]:
    """``ds`` with the included canaries appended to its training split (at random places
    in the order, so a partitioner spreads them over clients), and the canary record."""
    if isinstance(m, bool) or not isinstance(m, int) or not 1 <= m <= MAX_CANARIES:
        raise ConfigError(f"--audit-canaries takes 1..{MAX_CANARIES}, got {m!r}")
    seed = secrets.randbits(63) if seed is None else seed
    included = np.frombuffer(secrets.token_bytes(m), np.uint8) & 1 == 1
    canaries = CanarySet(m, seed, included, float(ds.x_train.min()), float(ds.x_train.max()))
    x, y = canaries.make(ds.input_shape, ds.num_classes)
    x_train = np.concatenate([ds.x_train, x[included]])
    y_train = np.concatenate([ds.y_train, y[included]])
    order = np.random.default_rng(seed).permutation(len(x_train))
    return replace(ds, x_train=x_train[order], y_train=y_train[order]), canaries
