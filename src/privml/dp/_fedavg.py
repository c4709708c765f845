"""Client-level DP-FedAvg (McMahan et al. 2018) with a privacy ledger: the simulator's and
the coordinator's.

Each round, every sampled client's update is clipped to L2 norm ``clip_norm`` (C); the
clipped updates are summed and Gaussian noise is added to the sum, and the noisy sum is
divided by the *expected* number of clients q·N (a fixed denominator: the actual count
would leak who took part). The noise is placed

- **centrally** (no secure aggregation): the coordinator adds N(0, z²C²) to the sum and the
  round is a sampled Gaussian mechanism, accounted as Poisson-sampled (rate q) or as fixed-size
  sampling without replacement — whatever the sampler that ran was;
- **distributed** (with secure aggregation): each client adds discrete Gaussian noise to its
  integer-encoded update (:class:`privml.dp.DistributedDiscreteGaussian`) so the coordinator
  never holds a noise-free sum; the round is accounted from the survivors whose noise is
  actually in the sum (zCDP, without sampling amplification), assuming every survivor added
  its noise honestly.

Every round is accounted before its update is applied: a round that would take ε past the
target is refused (:class:`~privml.BudgetExceededError`), the model and the ledger unchanged,
and the run stops there. Rounds that fail (nobody sampled, too few updates) are charged as
if they had run: conservative, and it keeps the decision to skip from leaking anything.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from privml._exceptions import ConfigError, RoundAbortedError
from privml.dp._accounting import (
    PrivacyAccountant,
    event_to_json,
    fixed_size,
    noise_for,
    poisson,
)
from privml.dp._clip import AdaptiveClip, clip_l2
from privml.dp._discrete import DistributedDiscreteGaussian
from privml.dp._noise import gaussian_noise, insecure_rng, secure_rng

__all__ = ["ClientLevelDP", "DPSettings", "check_dp_settings"]


def check_dp_settings(*, target_epsilon: float | None, delta: float,
                      noise_multiplier: float | None, clip_norm: float, dp_sampling: str,
                      accountant: str, clip_quantile: float | None = None,
                      secagg: bool = False) -> None:
    """ConfigError naming the first bad client-level DP setting (simulator and server)."""
    if clip_quantile is not None:
        if isinstance(clip_quantile, bool) or not isinstance(clip_quantile, int | float) \
                or not 0 < clip_quantile < 1:
            raise ConfigError(f"clip_quantile must be in (0, 1), got {clip_quantile!r}")
        if secagg:
            raise ConfigError("adaptive clipping needs each client's clipped-or-not bit in "
                              "the clear; with secure aggregation use a fixed clip_norm")
    if target_epsilon is not None and not (math.isfinite(target_epsilon)
                                           and target_epsilon > 0):
        raise ConfigError(f"target_epsilon must be > 0, got {target_epsilon}")
    if not 0 < delta < 1:
        raise ConfigError(f"delta must be in (0, 1), got {delta}")
    if noise_multiplier is not None and not (math.isfinite(noise_multiplier)
                                             and noise_multiplier > 0):
        raise ConfigError(f"noise_multiplier must be > 0, got {noise_multiplier}")
    if not (math.isfinite(clip_norm) and clip_norm > 0):
        raise ConfigError(f"clip_norm must be > 0, got {clip_norm}")
    if dp_sampling not in ("poisson", "fixed"):
        raise ConfigError(f"dp_sampling must be 'poisson' or 'fixed', got {dp_sampling!r}")
    if accountant not in ("rdp", "pld"):
        raise ConfigError(f"accountant must be 'rdp' or 'pld', got {accountant!r}")
    if dp_sampling == "fixed" and accountant != "rdp":
        raise ConfigError("fixed-size sampling is accounted by RDP only (accountant='rdp')")


class DPSettings(Protocol):
    """What client-level DP needs to know (``SimConfig`` has it; the coordinator makes one).
    ``clients`` is the population sampled from and ``per_round`` the expected sample."""

    @property
    def clients(self) -> int: ...
    @property
    def per_round(self) -> int: ...
    @property
    def rounds(self) -> int: ...
    @property
    def target_epsilon(self) -> float | None: ...
    @property
    def delta(self) -> float: ...
    @property
    def noise_multiplier(self) -> float | None: ...
    @property
    def clip_norm(self) -> float: ...
    @property
    def dp_sampling(self) -> str: ...
    @property
    def accountant(self) -> str: ...
    @property
    def insecure_dp_seed(self) -> int | None: ...
    @property
    def secagg(self) -> bool: ...
    @property
    def clip_quantile(self) -> float | None: ...

_CENTRAL = ("the party that aggregates (simulator or coordinator) adds the noise and keeps "
            "the individual updates to itself")
_DISTRIBUTED = ("every client whose update is in the sum added its discrete Gaussian noise "
                "honestly; epsilon is for the survivors actually in the sum, and a client that "
                "withholds its noise lowers the real guarantee below the one reported")
_GRID = 4096  # integer steps per clip norm in the distributed encoding (gamma = C / 4096)


@dataclass
class ClientLevelDP:
    """The DP side of one simulation: noise calibration, aggregation, accountant, ledger."""

    cfg: DPSettings
    dim: int
    q: float = 0.0
    z: float = 0.0
    accountant: PrivacyAccountant = field(init=False)
    ledger: list[dict[str, Any]] = field(default_factory=list)
    ddg: DistributedDiscreteGaussian | None = None
    # Distributed noise: the honest noisers the calibration counts on in every round (the
    # simulator: the expected sample; a coordinator: the fewest survivors SecAgg reveals).
    noisers: int | None = None
    # Adaptive clipping (cfg.clip_quantile): the bound moves each round (dp/_clip.py), the
    # update noise is z_delta * C so that the round, bits included, stays at multiplier z.
    clip: AdaptiveClip | None = None
    z_update: float = 0.0

    def __post_init__(self) -> None:
        cfg = self.cfg
        self.q = cfg.per_round / cfg.clients
        self.accountant = PrivacyAccountant(
            kind="pld" if cfg.accountant == "pld" else "rdp",
            relation="replace_one" if cfg.dp_sampling == "fixed" else "add_or_remove")
        self._round_bound: float | None = None  # the bound this round's noisy sum used
        self._rng = (insecure_rng(cfg.insecure_dp_seed) if cfg.insecure_dp_seed is not None
                     else secure_rng())
        if cfg.secagg:
            self.ddg = self._calibrate_ddg()
            n = self.noisers or self._expected
            self.z = self.ddg.gamma * self.ddg.sigma * math.sqrt(n) / cfg.clip_norm
        elif cfg.noise_multiplier is not None:
            self.z = cfg.noise_multiplier
        elif cfg.target_epsilon is None:
            raise ConfigError("client-level DP needs target_epsilon or noise_multiplier")
        else:
            self.z = noise_for(target_epsilon=cfg.target_epsilon, delta=cfg.delta, q=self.q,
                               steps=cfg.rounds, accountant=self.accountant.kind,
                               sampling="fixed_size" if cfg.dp_sampling == "fixed"
                               else "poisson", population=cfg.clients)
        self.z_update = self.z
        if cfg.clip_quantile is not None and self.ddg is None:
            # sigma_b = n / 20, the paper's suggestion (n: the expected clients per round)
            self.clip = AdaptiveClip(initial=cfg.clip_norm, bit_noise_std=self._expected / 20,
                                     target_quantile=cfg.clip_quantile)
            self.z_update = self.clip.update_noise_multiplier(self.z)

    @property
    def bound(self) -> float:
        """This round's clip bound C."""
        return self.clip.bound if self.clip is not None else self.cfg.clip_norm

    @property
    def _expected(self) -> float:
        return self.q * self.cfg.clients

    @property
    def placement(self) -> str:
        return "distributed" if self.ddg is not None else "central"

    def _ddg(self, sigma: float) -> DistributedDiscreteGaussian:
        c = self.cfg.clip_norm
        return DistributedDiscreteGaussian(clip=c, gamma=c / _GRID, sigma=sigma, dim=self.dim,
                                           clients=self.cfg.per_round, bits=64)

    def _calibrate_ddg(self) -> DistributedDiscreteGaussian:
        """sigma (integer units) for the target over all rounds, each with the expected
        number of noisers; or from ``noise_multiplier`` (central std z·C)."""
        cfg, n = self.cfg, self.noisers or max(1, round(self._expected))
        if cfg.noise_multiplier is not None:
            return self._ddg(max(0.5, cfg.noise_multiplier * _GRID / math.sqrt(n)))
        if cfg.target_epsilon is None:
            raise ConfigError("client-level DP needs target_epsilon or noise_multiplier")
        lo, hi = 0.5, 0.5
        while self._ddg(hi).epsilon(delta=cfg.delta, survivors=n, rounds=cfg.rounds) \
                > cfg.target_epsilon:
            lo, hi = hi, hi * 2
            if hi > 1e9:
                raise ConfigError("no noise level reaches the target epsilon")
        for _ in range(60):
            mid = (lo + hi) / 2
            eps = self._ddg(mid).epsilon(delta=cfg.delta, survivors=n, rounds=cfg.rounds)
            lo, hi = (lo, mid) if eps <= cfg.target_epsilon else (mid, hi)
        return self._ddg(hi)

    # ---- one round ---------------------------------------------------------------------

    def event(self, survivors: int) -> Any:
        if self.ddg is not None:
            return self.ddg.event(survivors=max(1, survivors))
        if self.cfg.dp_sampling == "fixed":
            return fixed_size(sample_size=self.cfg.per_round, population=self.cfg.clients,
                              noise_multiplier=self.z)
        return poisson(q=self.q, noise_multiplier=self.z)

    def admit(self, survivors: int) -> float:
        """ε after this round; BudgetExceededError (nothing changed) if past the target."""
        event = self.event(survivors)
        if self.cfg.target_epsilon is None:
            return self.accountant.epsilon_after(event, delta=self.cfg.delta)
        return self.accountant.check_budget(event, target_epsilon=self.cfg.target_epsilon,
                                            delta=self.cfg.delta)

    def record(self, round_: int, survivors: int) -> None:
        event = self.event(survivors)
        self.accountant.compose(event)
        self.ledger.append({
            "round": round_, "unit": "client", "placement": self.placement,
            "sampling": self.cfg.dp_sampling if self.ddg is None else "none (zCDP, survivors)",
            "survivors": survivors, "event": event_to_json(event),
            "clip_norm": self._round_bound or self.bound,
            "epsilon": self.accountant.epsilon(delta=self.cfg.delta), "delta": self.cfg.delta,
            "accountant": self.cfg.accountant})
        self._round_bound = None

    def noisy_mean(self, updates: Mapping[str, np.ndarray], *, run: str,
                   round_: int) -> np.ndarray:
        """The noisy sum of the clipped updates over the expected client count."""
        if self.ddg is None:
            total = np.zeros(self.dim, dtype=np.float64)
            bound, fits = self.bound, 0
            for vec in updates.values():
                clipped, norm = clip_l2(vec.astype(np.float64), bound=bound)
                total += clipped
                fits += norm <= bound
            return self.noisy_mean_of_clipped(total, fits)
        from privml.secagg import run_round

        inputs = {c: self.ddg.encode(v.astype(np.float64), rng=self._rng)
                  for c, v in updates.items()}
        result = run_round(inputs, run=run, round_=round_, bits=self.ddg.bits)
        if len(result.survivors) != len(updates):  # (in-process: nobody drops)
            raise RoundAbortedError("a client dropped inside the simulator")
        return self.mean_of_sum(result.total)

    def noisy_mean_of_clipped(self, total: np.ndarray, fits: int) -> np.ndarray:
        """Central noise on a sum of updates each clipped to :attr:`bound` (by whoever
        clipped them: this process or the simulator's workers), over the expected count;
        ``fits``: how many were within the bound (adaptive clipping's bit count)."""
        if total.shape != (self.dim,):
            raise ConfigError(f"clipped sum of shape {total.shape}, expected ({self.dim},)")
        bound = self.bound
        self._round_bound = bound
        noisy = total.astype(np.float64) + gaussian_noise(self.dim, std=self.z_update * bound,
                                                          rng=self._rng)
        if self.clip is not None:  # the noisy bit count moves next round's bound
            self.clip = self.clip.updated(self.clip.noisy_fraction(
                int(fits), clients=max(1, round(self._expected)), rng=self._rng))
        return noisy / self._expected

    def mean_of_sum(self, total: np.ndarray) -> np.ndarray:
        """A securely aggregated sum of DDG encodings -> the noisy mean update."""
        if self.ddg is None:
            raise ConfigError("mean_of_sum needs distributed DP (secagg=True)")
        return self.ddg.decode(total) / self._expected

    def summary(self) -> dict[str, Any]:
        return {"epsilon": self.accountant.epsilon(delta=self.cfg.delta) if self.ledger
                else 0.0, "delta": self.cfg.delta, "accountant": self.cfg.accountant,
                "dp_unit": "client", "dp_placement": self.placement,
                "assumption": _DISTRIBUTED if self.ddg is not None else _CENTRAL,
                "noise_multiplier": self.z, "clip_norm": self.bound,
                "clip_quantile": self.cfg.clip_quantile,
                "sample_rate": self.q, "target_epsilon": self.cfg.target_epsilon,
                "ledger": list(self.ledger)}
