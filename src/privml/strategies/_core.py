"""FedAvg, FedProx, FedAdam and FedYogi over :mod:`privml.params` parameter sets."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

import numpy as np

from privml import params as pm
from privml._exceptions import ConfigError, ParamsError
from privml.params import Params

__all__ = [
    "STRATEGIES",
    "ClientUpdate",
    "FedAdam",
    "FedAvg",
    "FedProx",
    "FedYogi",
    "ServerState",
    "Strategy",
    "make_strategy",
    "weighted_mean_delta",
]


@dataclass(frozen=True, slots=True)
class ClientUpdate:
    """One client's contribution to a round: ``delta = w_local - w_global``."""

    delta: Params
    num_examples: int

    def __post_init__(self) -> None:
        if isinstance(self.num_examples, bool) or not isinstance(self.num_examples, int):
            raise ConfigError("num_examples must be an int")
        if self.num_examples < 1:
            raise ConfigError(f"num_examples must be >= 1, got {self.num_examples}")


@dataclass(frozen=True, slots=True)
class ServerState:
    """Server optimizer state (empty for FedAvg/FedProx); replaced, never mutated."""

    step: int = 0
    m: Params = field(default_factory=dict)
    v: Params = field(default_factory=dict)


def weighted_mean_delta(updates: Sequence[ClientUpdate]) -> Params:
    """The example-weighted mean of the clients' deltas (float64 accumulation)."""
    if not updates:
        raise ConfigError("cannot aggregate zero updates")
    total = sum(u.num_examples for u in updates)
    return pm.weighted_sum([u.delta for u in updates], [u.num_examples / total for u in updates])


class Strategy(Protocol):
    """What every aggregation strategy offers the coordinator."""

    name: ClassVar[str]

    def client_options(self) -> dict[str, float]:
        """Options the clients' local training must apply (e.g. FedProx's ``prox_mu``)."""
        ...

    def aggregate(self, global_params: Params, updates: Sequence[ClientUpdate],
                  state: ServerState) -> tuple[Params, ServerState]:
        """New global parameters (and server state) from the round's updates."""
        ...

    def apply(self, global_params: Params, mean: Params,
              state: ServerState) -> tuple[Params, ServerState]:
        """The same from the example-weighted mean delta alone (what secure aggregation
        reveals)."""
        ...


def _check_against(global_params: Mapping[str, np.ndarray], mean: Params) -> None:
    if pm.spec_of(global_params) != pm.spec_of(mean):
        raise ParamsError("client updates do not match the global parameters' names or shapes")


@dataclass(frozen=True, slots=True)
class FedAvg:
    """McMahan et al. 2017: the new model is the example-weighted mean of the clients'."""

    name: ClassVar[str] = "fedavg"

    def client_options(self) -> dict[str, float]:
        return {}

    def aggregate(self, global_params: Params, updates: Sequence[ClientUpdate],
                  state: ServerState) -> tuple[Params, ServerState]:
        return self.apply(global_params, weighted_mean_delta(updates), state)

    def apply(self, global_params: Params, mean: Params,
              state: ServerState) -> tuple[Params, ServerState]:
        _check_against(global_params, mean)
        return pm.add(global_params, mean), ServerState(step=state.step + 1)


@dataclass(frozen=True, slots=True)
class FedProx(FedAvg):
    """Li et al. 2020: FedAvg aggregation, proximal term ``mu`` in the clients' loss."""

    name: ClassVar[str] = "fedprox"
    mu: float = 0.01

    def __post_init__(self) -> None:
        if not (math.isfinite(self.mu) and self.mu > 0):
            raise ConfigError(f"fedprox mu must be > 0, got {self.mu}")

    def client_options(self) -> dict[str, float]:
        return {"prox_mu": self.mu}


@dataclass(frozen=True, slots=True)
class FedAdam:
    """Server-side Adam on the mean delta (Reddi et al. 2021, Algorithm 2)."""

    name: ClassVar[str] = "fedadam"
    lr: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"{self.name} server lr must be > 0, got {self.lr}")
        for label, beta in (("beta1", self.beta1), ("beta2", self.beta2)):
            if not 0 <= beta < 1:
                raise ConfigError(f"{self.name} {label} must be in [0, 1), got {beta}")
        if not (math.isfinite(self.tau) and self.tau > 0):
            raise ConfigError(f"{self.name} tau must be > 0, got {self.tau}")

    def client_options(self) -> dict[str, float]:
        return {}

    def _second_moment(self, v: np.ndarray, g2: np.ndarray) -> np.ndarray:
        return self.beta2 * v + (1 - self.beta2) * g2

    def aggregate(self, global_params: Params, updates: Sequence[ClientUpdate],
                  state: ServerState) -> tuple[Params, ServerState]:
        return self.apply(global_params, weighted_mean_delta(updates), state)

    def apply(self, global_params: Params, mean: Params,
              state: ServerState) -> tuple[Params, ServerState]:
        _check_against(global_params, mean)
        new_w: Params = {}
        new_m: Params = {}
        new_v: Params = {}
        for name, w in global_params.items():
            g = mean[name].astype(np.float64)
            m_prev = state.m.get(name, np.zeros_like(w)).astype(np.float64)
            # Reddi et al. start v at tau^2 so the first step is bounded by lr / (1 - beta1).
            v_prev = state.v.get(name, np.full_like(w, self.tau**2)).astype(np.float64)
            m = self.beta1 * m_prev + (1 - self.beta1) * g
            v = self._second_moment(v_prev, g * g)
            step = self.lr * m / (np.sqrt(v) + self.tau)
            new_w[name] = (w.astype(np.float64) + step).astype(np.float32)
            new_m[name] = m.astype(np.float32)
            new_v[name] = v.astype(np.float32)
        return new_w, ServerState(step=state.step + 1, m=new_m, v=new_v)


@dataclass(frozen=True, slots=True)
class FedYogi(FedAdam):
    """Server-side Yogi: the second moment moves additively, by sign (Zaheer et al. 2018)."""

    name: ClassVar[str] = "fedyogi"

    def _second_moment(self, v: np.ndarray, g2: np.ndarray) -> np.ndarray:
        out: np.ndarray = v - (1 - self.beta2) * g2 * np.sign(v - g2)
        return out


STRATEGIES: tuple[str, ...] = ("fedavg", "fedprox", "fedadam", "fedyogi", "median",
                               "trimmed_mean", "krum", "multikrum", "normbound")


def needs_updates(strategy: object) -> bool:
    """Whether ``strategy`` aggregates individual updates (robust ones), not only a sum."""
    return bool(getattr(strategy, "needs_updates", False))


def make_strategy(name: str, *, mu: float = 0.01, server_lr: float = 0.1, trim: float = 0.2,
                  byzantine: float = 0.2, bound_factor: float = 1.0) -> Strategy:
    """The strategy called ``name``; ConfigError naming the choices for an unknown one."""
    from privml.strategies import _robust

    match name:
        case "median":
            return _robust.Median()
        case "trimmed_mean":
            return _robust.TrimmedMean(trim=trim)
        case "krum":
            return _robust.Krum(byzantine=byzantine)
        case "multikrum":
            return _robust.MultiKrum(byzantine=byzantine)
        case "normbound":
            return _robust.NormBound(bound_factor=bound_factor)
        case "fedavg":
            return FedAvg()
        case "fedprox":
            return FedProx(mu=mu)
        case "fedadam":
            return FedAdam(lr=server_lr)
        case "fedyogi":
            return FedYogi(lr=server_lr)
    raise ConfigError(f"unknown strategy {name!r} (choose from {', '.join(STRATEGIES)})")
