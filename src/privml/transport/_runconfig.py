"""What a run is configured with, and what clients send about their work.

``RunConfig`` is checked in full when it is made (a bad setting is a ConfigError before any
round starts), including the secure-aggregation settings: the fixed-point encoding must not
wrap for ``clients_per_round`` clients (see :class:`privml.secagg.FixedPoint`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from privml._exceptions import ConfigError, ProtocolError
from privml.dp import ExampleLevelDP, check_dp_settings
from privml.protocol import RoundConfig
from privml.secagg import FixedPoint, SecAggConfig
from privml.strategies import Strategy, make_strategy, needs_updates

__all__ = ["EvaluationReport", "RunConfig", "UpdateMeta", "aggregate_evaluations"]

_UPDATE_ID = re.compile(r"[A-Za-z0-9_-]{8,64}")


@dataclass(frozen=True, slots=True)
class RunConfig:
    """What the coordinator runs and how strictly it checks updates."""

    rounds: int = 30
    clients_per_round: int = 8
    min_clients: int = 1  # a round starts once max(clients_per_round, this) are available
    min_updates: int = 1
    round_timeout: float = 60.0
    strategy: str = "fedavg"
    mu: float = 0.01
    server_lr: float = 0.1
    trim: float = 0.2  # trimmed_mean: the fraction dropped at each end of every coordinate
    byzantine: float = 0.2  # krum / multikrum: the fraction of updates assumed malicious
    bound_factor: float = 1.0  # normbound: the bound, as a multiple of the median norm
    epochs: int = 5
    batch_size: int = 16
    lr: float = 0.05
    momentum: float = 0.9
    norm_bound: float | None = None  # refuse updates whose L2 norm exceeds this
    max_update_bytes: int = 64 * 1024 * 1024
    seed: int = 0
    eval_every: int = 0  # evaluation round after every k-th round and the last; 0: none
    eval_clients: int | None = None  # default: clients_per_round
    eval_timeout: float | None = None  # default: round_timeout
    # Secure aggregation (SecAgg+): the coordinator sees only the sum of the updates.
    secagg: bool = False
    secagg_clip: float = 2.0  # each coordinate of an update is clipped to [-clip, clip]
    secagg_bits: int = 32  # the sum lives in Z_{2^bits}: 32 or 64
    secagg_max_weight: int = 1024  # a client's examples count up to this
    secagg_neighbours: int | None = None  # k; default 2*ceil(log2 n) + 2
    shamir_threshold: int | None = None  # default: a majority of the neighbours
    min_survivors: int | None = None  # default: max(2, ceil(n / 2))
    secagg_stage_timeout: float = 30.0  # seconds each stage after the first waits
    # DP, on when target_epsilon or noise_multiplier is set. dp_unit "client": client-level
    # DP-FedAvg, central noise added by the coordinator; "example": every client trains with
    # DP-SGD (Poisson rate dp_sample_rate, per-example clip clip_norm) and the coordinator
    # keeps the ledger — the unit for a few data holders, and it combines with secagg.
    target_epsilon: float | None = None
    delta: float = 1e-5
    noise_multiplier: float | None = None  # default: calibrated to target_epsilon
    clip_norm: float = 1.0
    clip_quantile: float | None = None  # client unit, central: adaptive clip to this quantile
    accountant: str = "rdp"
    dp_unit: str = "client"
    dp_sample_rate: float = 0.1  # example-level: each client's Poisson rate per DP-SGD step

    def __post_init__(self) -> None:
        if self.norm_bound is not None and not (math.isfinite(self.norm_bound)
                                                and self.norm_bound > 0):
            raise ConfigError(f"norm_bound must be > 0, got {self.norm_bound}")
        if self.max_update_bytes < 1024:
            raise ConfigError("max_update_bytes must be at least 1024")
        strategy = self.make_strategy()
        if needs_updates(strategy) and (self.secagg or (self.dp and self.dp_unit == "client")):
            what = ("secure aggregation reveals only the sum of the updates" if self.secagg
                    else "client-level DP noises the sum of the clipped updates")
            raise ConfigError(f"strategy {self.strategy!r} needs each client's update, but "
                              f"{what}: use fedavg (with norm_bound or clip_norm) or turn it "
                              "off (README, Robust aggregation)")
        self.round_config()  # validates the rest
        if self.dp_unit not in ("client", "example"):
            raise ConfigError(f"dp_unit must be 'client' or 'example', got {self.dp_unit!r}")
        if self.dp and self.dp_unit == "example":
            check_dp_settings(target_epsilon=self.target_epsilon, delta=self.delta,
                              noise_multiplier=self.noise_multiplier, clip_norm=self.clip_norm,
                              dp_sampling="poisson", accountant=self.accountant)
            if not (isinstance(self.dp_sample_rate, float | int)
                    and 0 < self.dp_sample_rate <= 1):
                raise ConfigError(f"dp_sample_rate must be in (0, 1], got "
                                  f"{self.dp_sample_rate!r}")
            if self.clip_quantile is not None:
                raise ConfigError("clip_quantile adapts the client-level clip; DP-SGD clips "
                                  "each example at clip_norm (drop clip_quantile)")
            if self.strategy == "fedprox":
                raise ConfigError("FedProx's proximal term is not per-example: DP-SGD "
                                  "(dp_unit 'example') runs with fedavg or fedadam")
        elif self.dp:
            self.dp_settings()  # validates
        if self.secagg:
            if self.norm_bound is not None:
                raise ConfigError("norm_bound checks individual updates, which secure "
                                  "aggregation hides; clip at the clients (secagg_clip)")
            if not (math.isfinite(self.secagg_stage_timeout)
                    and self.secagg_stage_timeout > 0):
                raise ConfigError("secagg_stage_timeout must be > 0")
            self.encoding()
            self.secagg_config()

    @property
    def dp(self) -> bool:
        return self.target_epsilon is not None or self.noise_multiplier is not None

    def dp_settings(self) -> _ServerDP:
        """The coordinator's client-level DP settings. It samples a fixed number of clients
        from a pool whose size it cannot vouch for, so it claims no amplification by
        sampling (q = 1): each round is accounted as a Gaussian mechanism over the sampled
        clients — with secure aggregation, as the distributed discrete Gaussian of the
        survivors (see :meth:`noisers`)."""
        check_dp_settings(target_epsilon=self.target_epsilon, delta=self.delta,
                          noise_multiplier=self.noise_multiplier, clip_norm=self.clip_norm,
                          dp_sampling="fixed", accountant=self.accountant,
                          clip_quantile=self.clip_quantile, secagg=self.secagg)
        return _ServerDP(clients=self.clients_per_round, per_round=self.clients_per_round,
                         rounds=self.rounds, target_epsilon=self.target_epsilon,
                         delta=self.delta, noise_multiplier=self.noise_multiplier,
                         clip_norm=self.clip_norm, accountant=self.accountant,
                         secagg=self.secagg, clip_quantile=self.clip_quantile)

    def noisers(self) -> int:
        """Distributed DP: the fewest survivors whose sum SecAgg+ reveals. The noise is
        calibrated, and each round admitted, as if only they had added theirs; a round is
        then charged for the survivors actually in the sum (never more ε than admitted)."""
        length = 1  # (the length does not change the thresholds)
        return self.secagg_config().resolve(self.clients_per_round, bits=64,
                                            length=length).min_survivors

    def example_dp(self) -> ExampleLevelDP:
        """Example-level DP (``dp_unit="example"``), its noise calibrated for all rounds."""
        return ExampleLevelDP(sample_rate=float(self.dp_sample_rate), epochs=self.epochs,
                              rounds=self.rounds, delta=self.delta, clip_norm=self.clip_norm,
                              accountant_name=self.accountant,
                              target_epsilon=self.target_epsilon,
                              noise_multiplier=self.noise_multiplier)

    def encoding(self) -> FixedPoint:
        """The fixed-point encoding of updates (ConfigError if the sum could wrap)."""
        return FixedPoint(clip=self.secagg_clip, clients=self.clients_per_round,
                          max_weight=self.secagg_max_weight, bits=self.secagg_bits)

    def secagg_config(self) -> SecAggConfig:
        return SecAggConfig(neighbours=self.secagg_neighbours,
                            shamir_threshold=self.shamir_threshold,
                            min_survivors=self.min_survivors)

    def round_config(self) -> RoundConfig:
        # With secure aggregation, training ends at round_timeout and the three stages
        # after it have their own deadlines; the round machine waits for all of them.
        extra = 3 * self.secagg_stage_timeout + 1.0 if self.secagg else 0.0
        return RoundConfig(num_rounds=self.rounds, clients_per_round=self.clients_per_round,
                           min_clients=self.min_clients, min_updates=self.min_updates,
                           round_timeout=self.round_timeout + extra,
                           eval_every=self.eval_every, eval_clients=self.eval_clients,
                           eval_timeout=(self.round_timeout if self.eval_timeout is None
                                         else self.eval_timeout))

    def make_strategy(self) -> Strategy:
        """The run's aggregation rule, with its settings."""
        return make_strategy(self.strategy, mu=self.mu, server_lr=self.server_lr,
                             trim=self.trim, byzantine=self.byzantine,
                             bound_factor=self.bound_factor)

    def train_options(self) -> dict[str, Any]:
        prox = make_strategy(self.strategy, mu=self.mu).client_options().get("prox_mu", 0.0)
        return {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr,
                "momentum": self.momentum, "prox_mu": prox}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class _ServerDP:
    clients: int
    per_round: int
    rounds: int
    target_epsilon: float | None
    delta: float
    noise_multiplier: float | None
    clip_norm: float
    accountant: str
    dp_sampling: str = "fixed"
    insecure_dp_seed: int | None = None
    secagg: bool = False
    clip_quantile: float | None = None


@dataclass(frozen=True, slots=True)
class UpdateMeta:
    """What a client says about its update (from request headers)."""

    run: str
    round: int
    update_id: str
    num_examples: int
    metrics: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _UPDATE_ID.fullmatch(self.update_id):
            raise ProtocolError("update id must be 8-64 characters of [A-Za-z0-9_-]",
                                code="bad_update_id", status=400)
        if self.num_examples < 1 or self.round < 1:
            raise ProtocolError("round and num_examples must be >= 1", code="bad_metadata",
                                status=400)


class EvaluationReport(BaseModel):
    """A client's answer to an ``evaluate`` task: the global model measured on its own
    held-out data (``num_examples`` = 0: it holds none, and weighs nothing)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    run: str = Field(max_length=64)
    round: int = Field(ge=1)
    num_examples: int = Field(ge=0, le=2**31)
    loss: float = Field(ge=0.0)
    accuracy: float = Field(ge=0.0, le=1.0)


def aggregate_evaluations(reports: Mapping[str, EvaluationReport]) -> dict[str, float]:
    """Example-weighted loss and accuracy of the clients' reports (a coordinator holds no
    test set): ``examples``, ``evaluators`` and, when any example was measured, ``loss``
    and ``accuracy``."""
    total = sum(r.num_examples for r in reports.values())
    out = {"examples": float(total), "evaluators": float(len(reports))}
    if total > 0:
        out["loss"] = sum(r.loss * r.num_examples for r in reports.values()) / total
        out["accuracy"] = sum(r.accuracy * r.num_examples for r in reports.values()) / total
    return out
