"""Byzantine-robust aggregation: each needs the individual updates, not only their sum.

- ``median`` — the coordinate-wise median of the deltas (Yin et al. 2018): with n updates,
  fewer than n/2 arbitrary ones cannot move any coordinate outside the honest range.
- ``trimmed_mean`` — per coordinate, the ``trim`` fraction of largest and of smallest values
  is dropped and the rest averaged (Yin et al. 2018): up to ``floor(trim * n)`` arbitrary
  updates are ignored.
- ``krum`` / ``multikrum`` — each update is scored by the summed squared distances to its
  ``n - f - 2`` nearest neighbours, ``f = floor(byzantine * n)``; Krum keeps the best-scored
  update, Multi-Krum the mean of the ``n - f`` best (Blanchard et al. 2017; El Mhamdi et al.
  2018). Sound when ``n >= 2f + 3``.
- ``normbound`` — every update is clipped to ``bound_factor`` times the median of the
  round's update norms, then the example-weighted mean is taken (Sun et al. 2019): a scaled
  (boosted) update weighs no more than a typical one.

Secure aggregation reveals only the sum, so none of these can run under it: the
configuration refuses the pair (see the README's "Robust aggregation").
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from privml import params as pm
from privml._exceptions import ConfigError
from privml.params import Params
from privml.strategies._core import ClientUpdate, ServerState, weighted_mean_delta

__all__ = ["ROBUST", "Krum", "Median", "MultiKrum", "NormBound", "TrimmedMean"]


def _stack(updates: Sequence[ClientUpdate]) -> tuple[np.ndarray, pm.Spec]:
    if not updates:
        raise ConfigError("cannot aggregate zero updates")
    spec = pm.spec_of(updates[0].delta)
    for u in updates[1:]:
        if pm.spec_of(u.delta) != spec:
            raise ConfigError("client updates have different names or shapes")
    return np.stack([pm.flatten(u.delta).astype(np.float64) for u in updates]), spec


def _check_fraction(label: str, value: float, upper: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not 0 <= value < upper:
        raise ConfigError(f"{label} must be in [0, {upper}), got {value!r}")


class _Robust(ABC):
    """What every robust strategy shares: no client options, no SecAgg sum."""

    name: ClassVar[str]
    needs_updates: ClassVar[bool] = True

    def client_options(self) -> dict[str, float]:
        return {}

    def apply(self, global_params: Params, mean: Params,
              state: ServerState) -> tuple[Params, ServerState]:
        raise ConfigError(f"strategy {self.name!r} needs the individual updates; a sum (what "
                          "secure aggregation reveals) is not enough")

    @abstractmethod
    def _robust_delta(self, updates: Sequence[ClientUpdate]) -> np.ndarray:
        """The round's aggregated delta, flat float64."""

    def aggregate(self, global_params: Params, updates: Sequence[ClientUpdate],
                  state: ServerState) -> tuple[Params, ServerState]:
        delta = self._robust_delta(updates)
        spec = pm.spec_of(global_params)
        if spec != pm.spec_of(updates[0].delta):
            raise ConfigError("client updates do not match the global parameters")
        return (pm.add(global_params, pm.unflatten(delta.astype(np.float32), spec)),
                ServerState(step=state.step + 1))


@dataclass(frozen=True, slots=True)
class Median(_Robust):
    name: ClassVar[str] = "median"

    def _robust_delta(self, updates: Sequence[ClientUpdate]) -> np.ndarray:
        stack, _ = _stack(updates)
        out: np.ndarray = np.median(stack, axis=0)
        return out


@dataclass(frozen=True, slots=True)
class TrimmedMean(_Robust):
    name: ClassVar[str] = "trimmed_mean"
    trim: float = 0.2  # fraction cut at each end, per coordinate

    def __post_init__(self) -> None:
        _check_fraction("trimmed_mean trim", self.trim, 0.5)

    def _robust_delta(self, updates: Sequence[ClientUpdate]) -> np.ndarray:
        stack, _ = _stack(updates)
        n = len(stack)
        k = math.floor(self.trim * n)
        ordered = np.sort(stack, axis=0)
        out: np.ndarray = ordered[k:n - k].mean(axis=0)
        return out


def _krum_scores(stack: np.ndarray, f: int) -> np.ndarray:
    """Each row's summed squared distance to its n - f - 2 nearest other rows."""
    n = len(stack)
    sq = np.einsum("ij,ij->i", stack, stack)
    dist = np.maximum(sq[:, None] + sq[None, :] - 2 * stack @ stack.T, 0.0)
    np.fill_diagonal(dist, np.inf)
    keep = max(1, n - f - 2)
    out: np.ndarray = np.sort(dist, axis=1)[:, :keep].sum(axis=1)
    return out


@dataclass(frozen=True, slots=True)
class Krum(_Robust):
    name: ClassVar[str] = "krum"
    byzantine: float = 0.2  # the fraction of updates assumed malicious (f = floor(. * n))

    def __post_init__(self) -> None:
        _check_fraction(f"{self.name} byzantine", self.byzantine, 0.5)

    def _f(self, n: int) -> int:
        f = math.floor(self.byzantine * n)
        if n < 2 * f + 3:
            raise ConfigError(f"{self.name} with {f} assumed malicious of {n} updates needs "
                              f"at least {2 * f + 3} updates (n >= 2f + 3)")
        return f

    def selected(self, updates: Sequence[ClientUpdate]) -> list[int]:
        """The indices of the updates kept (Krum: one; Multi-Krum: n - f)."""
        stack, _ = _stack(updates)
        f = self._f(len(stack))
        order = np.argsort(_krum_scores(stack, f), kind="stable")
        return [int(i) for i in order[:self._keep(len(stack), f)]]

    def _keep(self, n: int, f: int) -> int:
        return 1

    def _robust_delta(self, updates: Sequence[ClientUpdate]) -> np.ndarray:
        chosen = [updates[i] for i in self.selected(updates)]
        return pm.flatten(weighted_mean_delta(chosen)).astype(np.float64)


@dataclass(frozen=True, slots=True)
class MultiKrum(Krum):
    name: ClassVar[str] = "multikrum"

    def _keep(self, n: int, f: int) -> int:
        return n - f


@dataclass(frozen=True, slots=True)
class NormBound(_Robust):
    name: ClassVar[str] = "normbound"
    bound_factor: float = 1.0  # the bound: this times the round's median update norm

    def __post_init__(self) -> None:
        if not (math.isfinite(self.bound_factor) and self.bound_factor > 0):
            raise ConfigError(f"normbound bound_factor must be > 0, got {self.bound_factor}")

    def _robust_delta(self, updates: Sequence[ClientUpdate]) -> np.ndarray:
        stack, _ = _stack(updates)
        norms = np.linalg.norm(stack, axis=1)
        bound = self.bound_factor * float(np.median(norms))
        scale = np.where(norms > bound, bound / np.maximum(norms, 1e-300), 1.0)
        weights = np.array([u.num_examples for u in updates], dtype=np.float64)
        out: np.ndarray = (weights * scale) @ stack / weights.sum()
        return out


ROBUST: tuple[str, ...] = ("median", "trimmed_mean", "krum", "multikrum", "normbound")
