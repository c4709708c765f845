"""SecAgg+ settings: the neighbour count, ``shamir_threshold`` and ``min_survivors``.

Defaults (n = clients that advertised keys, k = neighbours):

- ``neighbours``: 2·⌈log2 n⌉ + 2, at most n - 1 (the complete graph, i.e. Bonawitz et al.
  2017, when k ≥ n - 1). Bell et al. 2020 show k = O(log n) keeps the sum private and
  correct against a bounded fraction of dropouts; the constant is a conservative choice.
- ``shamir_threshold`` t: a strict majority of the neighbours, ⌊k/2⌋ + 1. A client's secrets
  are rebuilt from t of its k neighbours; fewer reveal nothing. A majority also means no two
  disjoint groups of neighbours can each rebuild one of a client's two secrets.
- ``min_survivors``: max(2, ⌈n/2⌉); the sum of fewer clients is never revealed (and never of
  one client alone: 2 is the floor, whatever is asked).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from privml._exceptions import ConfigError, RoundAbortedError

__all__ = ["RoundParams", "SecAggConfig"]


def _int(label: str, value: object, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{label} must be an integer >= {low}, got {value!r}")


@dataclass(frozen=True, slots=True)
class SecAggConfig:
    """What the coordinator asks for; ``None`` takes the documented default for the round."""

    neighbours: int | None = None
    shamir_threshold: int | None = None
    min_survivors: int | None = None

    def __post_init__(self) -> None:
        if self.neighbours is not None:
            _int("neighbours", self.neighbours, 2)
        if self.shamir_threshold is not None:
            _int("shamir_threshold", self.shamir_threshold, 1)
        if self.min_survivors is not None:
            _int("min_survivors", self.min_survivors, 2)
        if (self.neighbours is not None and self.shamir_threshold is not None
                and self.shamir_threshold > self.neighbours):
            raise ConfigError(f"shamir_threshold ({self.shamir_threshold}) cannot exceed "
                              f"neighbours ({self.neighbours})")

    def resolve(self, n: int, *, bits: int, length: int) -> RoundParams:
        """The round's parameters for ``n`` clients that advertised keys; RoundAbortedError
        when ``n`` is too small for the configuration."""
        if n < 2:
            raise RoundAbortedError(f"{n} client(s) advertised keys; secure aggregation "
                                    "needs at least 2")
        k = self.neighbours if self.neighbours is not None else 2 * math.ceil(math.log2(n)) + 2
        k = min(k, n - 1)
        if k % 2 and n % 2:  # no k-regular graph on an odd number of nodes with k odd
            k += 1
        t = self.shamir_threshold if self.shamir_threshold is not None else k // 2 + 1
        if t > k:
            raise RoundAbortedError(f"only {n} clients advertised keys: each has {k} "
                                    f"neighbours, fewer than shamir_threshold = {t}")
        floor = max(2, math.ceil(n / 2))
        m = self.min_survivors if self.min_survivors is not None else floor
        if n < m:
            raise RoundAbortedError(f"only {n} clients advertised keys, fewer than "
                                    f"min_survivors = {m}")
        return RoundParams(neighbours=k, shamir_threshold=t, min_survivors=m, bits=bits,
                           length=length)


@dataclass(frozen=True, slots=True)
class RoundParams:
    """One round's resolved parameters, sent to every client in the key directory."""

    neighbours: int
    shamir_threshold: int
    min_survivors: int
    bits: int
    length: int

    def __post_init__(self) -> None:
        _int("neighbours", self.neighbours, 1)
        _int("shamir_threshold", self.shamir_threshold, 1)
        _int("min_survivors", self.min_survivors, 2)
        _int("length", self.length, 1)
        if self.bits not in (32, 64):
            raise ConfigError(f"bits must be 32 or 64, got {self.bits!r}")
        if self.shamir_threshold > self.neighbours:
            raise ConfigError(f"shamir_threshold ({self.shamir_threshold}) exceeds "
                              f"neighbours ({self.neighbours})")
