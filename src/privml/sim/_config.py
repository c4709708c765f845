"""Simulation settings and results."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from privml._exceptions import ConfigError
from privml.params import Params
from privml.secagg import FixedPoint

__all__ = ["RoundRecord", "SimConfig", "SimResult"]

_ROBUST = ("median", "trimmed_mean", "krum", "multikrum", "normbound")


def _positive_int(label: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{label} must be an integer >= 1, got {value!r}")


@dataclass(frozen=True, slots=True)
class SimConfig:
    """One federated simulation. The defaults are the embedded demo: digits, 20 clients,
    Dirichlet(0.5) over labels, 10 clients per round, 30 rounds of FedAvg."""

    dataset: str = "digits"
    model: str = "mlp"
    clients: int = 20
    per_round: int = 10
    rounds: int = 30
    alpha: float | None = 0.5  # None: IID partition
    strategy: str = "fedavg"
    seed: int = 0
    epochs: int = 5
    batch_size: int = 16
    lr: float = 0.05
    optimizer: str = "sgd"
    momentum: float = 0.9
    mu: float = 0.01  # FedProx proximal weight
    server_lr: float = 0.1  # FedAdam / FedYogi server step
    trim: float = 0.2  # trimmed_mean: the fraction dropped at each end of every coordinate
    byzantine: float = 0.2  # krum / multikrum: the fraction of updates assumed malicious
    bound_factor: float = 1.0  # normbound: the bound, as a multiple of the median norm
    dropout: float = 0.0  # probability that a sampled client never answers (a straggler)
    min_updates: int = 1
    round_timeout: float = 60.0  # virtual seconds; only stragglers make it matter
    data_path: str | None = None
    label: str = "label"
    secagg: bool = False  # secure aggregation (SecAgg+) of each round's updates
    secagg_clip: float = 2.0  # each update coordinate clipped to [-clip, clip] first
    secagg_bits: int = 32  # the sum lives in Z_{2^bits}
    # Client-level DP (on when target_epsilon or noise_multiplier is given): see sim/_dp.py
    target_epsilon: float | None = None
    delta: float = 1e-5
    noise_multiplier: float | None = None  # z; default: calibrated to target_epsilon
    clip_norm: float = 1.0  # C, the L2 bound on each client's update (the initial one...)
    clip_quantile: float | None = None  # ...when adaptive: C tracks this quantile of norms
    dp_sampling: str = "poisson"  # "poisson" (rate per_round / clients) or "fixed"
    accountant: str = "rdp"  # "rdp" or "pld"
    insecure_dp_seed: int | None = None  # a fixed noise seed: for tests only
    # Where clients train (sim/_parallel.py): "inline" (one after another in this process),
    # "local" (worker processes, one per core) or "ray" (Ray actors, on a cluster).
    backend: str = "inline"
    workers: int | None = None  # pool size: default one per core / per CPU of the cluster
    ray_address: str | None = None  # join this Ray cluster instead of starting one
    vectorize: str = "auto"  # pools: train many clients at once (torch.func.vmap): auto/on/off
    on_worker_failure: str = "retry"  # a worker died mid-round: "retry" its clients, "drop"
    # Poisoning (sim/attacks.py): a fraction of the clients attack the run.
    attack: str = "none"  # sign_flip, scale, label_flip or backdoor
    attackers: float = 0.2  # the fraction of clients that attack (when attack != "none")
    attack_scale: float | None = None  # sign_flip: -4x, scale: 10x; backdoor: boost (1)
    backdoor_target: int = 0  # the label the backdoor's trigger turns inputs into

    def __post_init__(self) -> None:
        _positive_int("clients", self.clients)
        _positive_int("per_round", self.per_round)
        _positive_int("rounds", self.rounds)
        _positive_int("epochs", self.epochs)
        _positive_int("batch_size", self.batch_size)
        _positive_int("min_updates", self.min_updates)
        if self.per_round > self.clients:
            raise ConfigError(
                f"more clients per round ({self.per_round}) than clients ({self.clients})")
        if self.min_updates > self.per_round:
            raise ConfigError(
                f"min_updates ({self.min_updates}) exceeds clients per round ({self.per_round})")
        if self.alpha is not None and not (math.isfinite(self.alpha) and self.alpha > 0):
            raise ConfigError(f"alpha must be > 0, got {self.alpha}")
        from privml.strategies import make_strategy

        make_strategy(self.strategy, mu=self.mu, server_lr=self.server_lr, trim=self.trim,
                      byzantine=self.byzantine, bound_factor=self.bound_factor)
        if self.strategy in _ROBUST and (self.secagg or self.dp):
            what = "secure aggregation reveals only the sum of the updates" if self.secagg \
                else "client-level DP here noises the sum of the clipped updates"
            raise ConfigError(f"strategy {self.strategy!r} needs each client's update, but "
                              f"{what}: use fedavg (with client-side clipping) or turn it "
                              "off (README, Robust aggregation)")
        if self.secagg and not self.dp:
            self.encoding()  # refuses settings whose sum could wrap
        self._check_dp()
        from privml.sim._parallel import check_backend

        check_backend(self.backend, self.on_worker_failure, self.vectorize)
        from privml.sim.attacks import check_attack

        check_attack(self.attack, self.attackers, self.attack_scale, self.backdoor_target)
        if self.workers is not None:
            _positive_int("workers", self.workers)
        if self.ray_address is not None and self.backend != "ray":
            raise ConfigError("ray_address is for backend='ray'")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or \
                not 0 <= self.seed < 2**32:
            raise ConfigError(f"seed must be an integer in [0, 2**32), got {self.seed!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def dp(self) -> bool:
        return self.target_epsilon is not None or self.noise_multiplier is not None

    def _check_dp(self) -> None:
        from privml.dp import check_dp_settings

        check_dp_settings(target_epsilon=self.target_epsilon, delta=self.delta,
                          noise_multiplier=self.noise_multiplier, clip_norm=self.clip_norm,
                          dp_sampling=self.dp_sampling, accountant=self.accountant,
                          clip_quantile=self.clip_quantile, secagg=self.secagg)
        if self.dp and self.dropout > 0:
            raise ConfigError("client-level DP divides by the expected number of clients; "
                              "simulated stragglers would bias it (use dropout=0)")

    def encoding(self) -> FixedPoint:
        """The fixed-point encoding of updates under secure aggregation."""
        return FixedPoint(clip=self.secagg_clip, clients=self.per_round, bits=self.secagg_bits)


@dataclass(frozen=True, slots=True)
class RoundRecord:
    """What one round produced, as measured by the simulator."""

    round: int
    outcome: str
    updates: int
    dropped: int
    train_loss: float
    test_loss: float
    test_accuracy: float
    seconds: float
    worker_restarts: int = 0  # pools: workers that died this round and were restarted
    clients_retried: int = 0  # ...clients of theirs trained again on the new worker
    clients_lost: int = 0  # ...clients left out of the round (counted in ``dropped`` too)


@dataclass(slots=True)
class SimResult:
    config: SimConfig
    history: list[RoundRecord]
    params: Params
    seconds_total: float
    model_spec_json: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def final_accuracy(self) -> float:
        return self.history[-1].test_accuracy if self.history else float("nan")

    @property
    def final_loss(self) -> float:
        return self.history[-1].test_loss if self.history else float("nan")

    def summary(self) -> dict[str, Any]:
        """The JSON summary ``privml sim --json`` writes."""
        n = len(self.history)
        return {
            "final_accuracy": self.final_accuracy,
            "final_loss": self.final_loss,
            "best_accuracy": max((r.test_accuracy for r in self.history), default=float("nan")),
            "rounds": n,
            "rounds_completed": sum(r.outcome == "completed" for r in self.history),
            "clients": self.config.clients,
            "per_round": self.config.per_round,
            "dataset": self.config.dataset,
            "model": self.config.model,
            "strategy": self.config.strategy,
            "alpha": self.config.alpha,
            "seed": self.config.seed,
            "seconds_total": self.seconds_total,
            "seconds_per_round": sum(r.seconds for r in self.history) / n if n else 0.0,
            "config": self.config.to_dict(),
            "history": [asdict(r) for r in self.history],
            **self.extra,
        }
