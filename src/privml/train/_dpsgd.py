"""Sample-level DP-SGD on one client (Abadi et al. 2016), with fast per-sample clipping.

Each step draws a Poisson batch (every example independently with probability
``q = batch_size / n``), clips each example's gradient to L2 norm ``C`` (``_ghost.py``),
adds N(0, (z C)^2) to the *sum* and divides by the expected batch size ``q n``, exactly the
mechanism the RDP/PRV accountants (and Opacus) analyse. An epoch is ``round(1/q)`` steps and
an empty batch still takes a step of pure noise, as the analysis assumes. Whatever happens to
the noisy gradient afterwards (momentum, weight decay, Adam) is post-processing.

Secret randomness: the noise comes from a ``torch.Generator`` seeded from the OS CSPRNG on
every call, and so does the batch sampling (amplification by subsampling needs the batch to
be unknown to whoever sees the update). The ``seed`` argument of a TrainFn only drives
dropout, so it may be public. ``DPSGDConfig.insecure_seed`` replaces both OS draws, for
tests only. What a caller must account per call: ``sample_rate``, ``noise_multiplier`` and
``steps`` of the returned :class:`DPTrainResult`.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from privml._exceptions import ConfigError
from privml.params import Params
from privml.train._ghost import clipped_step
from privml.train._loop import (
    ClientDataLike,
    TrainConfig,
    TrainFn,
    TrainResult,
    _check_seed,
    _float_state,
    _mode,
    _optimizer,
    _tensor,
)

__all__ = ["DPSGDConfig", "DPTrainResult", "dp_train_fn", "train_dp"]


@dataclass(frozen=True, slots=True)
class DPSGDConfig:
    """The privacy side of DP-SGD; validated on construction (:class:`~privml.ConfigError`).

    ``noise_multiplier`` z >= 0 (0 is clipping without privacy), ``max_grad_norm`` C > 0.
    ``insecure_seed`` fixes the noise and the batch sampling: reproducible, and therefore
    no privacy at all — for tests only. ``sample_rate``, when given, is every client's
    Poisson rate q whatever its data size (the expected batch is then q·n): with clients of
    very different sizes, a fixed batch size gives the smallest the largest rate, and it is
    that client's ε that a federation reports.
    """

    noise_multiplier: float
    max_grad_norm: float
    insecure_seed: int | None = None
    sample_rate: float | None = None

    def __post_init__(self) -> None:
        for label in ("noise_multiplier", "max_grad_norm"):
            value = getattr(self, label)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"{label} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ConfigError(f"{label} must be finite, got {value}")
        if self.noise_multiplier < 0:
            raise ConfigError(f"noise_multiplier must be >= 0, got {self.noise_multiplier}")
        if self.max_grad_norm <= 0:
            raise ConfigError(f"max_grad_norm must be > 0, got {self.max_grad_norm}")
        if self.insecure_seed is not None:
            _check_seed(self.insecure_seed)
        if self.sample_rate is not None and (
                isinstance(self.sample_rate, bool) or not isinstance(self.sample_rate, float)
                or not 0 < self.sample_rate <= 1):
            raise ConfigError(f"sample_rate must be a float in (0, 1], got {self.sample_rate!r}")


@dataclass(frozen=True, slots=True)
class DPTrainResult(TrainResult):
    """A :class:`TrainResult` plus what the privacy accountant needs: ``steps`` (already
    there) Poisson-sampled steps at ``sample_rate`` q with ``noise_multiplier`` z.

    ``loss`` (the mean batch loss) is *not* differentially private; send it only if the
    deployment accepts that."""

    sample_rate: float
    noise_multiplier: float
    max_grad_norm: float


@dataclass(slots=True)
class _Rngs:
    """The step's randomness: Poisson masks (numpy) and Gaussian noise (torch)."""

    sampling: np.random.Generator
    noise: torch.Generator

    @classmethod
    def create(cls, dp: DPSGDConfig, seed: int) -> _Rngs:
        noise = torch.Generator()
        if dp.insecure_seed is None:
            noise.manual_seed(secrets.randbits(63))
            return cls(np.random.default_rng(secrets.randbits(128)), noise)
        noise.manual_seed(dp.insecure_seed)
        return cls(np.random.default_rng([dp.insecure_seed, seed]), noise)


def sample_rate(batch_size: int, n: int) -> float:
    """Poisson rate q = batch_size / n, capped at 1 (a batch larger than the data is all of it)."""
    return min(1.0, batch_size / n)


def steps_per_epoch(q: float) -> int:
    """round(1/q), at least 1: an epoch sees n examples in expectation."""
    return max(1, round(1.0 / q))


def poisson_positions(rng: np.random.Generator, n: int, q: float) -> np.ndarray:
    """The positions of one Poisson batch: each of ``n`` kept with probability ``q``."""
    return np.flatnonzero(rng.random(n) < q).astype(np.int64)


def add_noise(grad_sum: dict[str, Tensor], *, std: float, generator: torch.Generator
              ) -> dict[str, Tensor]:
    """grad_sum + N(0, std^2) per coordinate, drawn from ``generator`` (a new dict)."""
    return {n: _noisy_into(torch.empty_like(g), g, std=std, scale=1.0, generator=generator)
            for n, g in grad_sum.items()}


def _noisy_into(buf: Tensor, grad_sum: Tensor, *, std: float, scale: float,
                generator: torch.Generator) -> Tensor:
    """buf <- (grad_sum + N(0, std^2)) / scale, in place: the noise is drawn straight into
    ``buf``, which a training loop reuses step after step (a fresh large tensor per step costs
    page faults that, for a small model, rival the noise draw itself)."""
    if std == 0:
        buf.copy_(grad_sum)
    else:
        buf.normal_(0.0, std, generator=generator).add_(grad_sum)
    return buf.div_(scale) if scale != 1.0 else buf


def _dp_step(model: nn.Module, opt: torch.optim.Optimizer, xb: Tensor, yb: Tensor, *,
             dp: DPSGDConfig, expected: float, rngs: _Rngs) -> tuple[float, int]:
    """One DP-SGD step; returns (sum of the batch's losses, batch size)."""
    summed, _, losses = clipped_step(model, xb, yb, dp.max_grad_norm)
    loss_sum = float(losses.sum())
    if not math.isfinite(loss_sum):
        raise ConfigError(f"training diverged: loss is {loss_sum} (lower the learning rate)")
    std = dp.noise_multiplier * dp.max_grad_norm
    for name, p in model.named_parameters():
        if p.requires_grad:
            g, total = p.grad, summed[name]
            if g is None or g.shape != total.shape or g.dtype != total.dtype:
                g = p.grad = torch.empty_like(total)
            _noisy_into(g, total, std=std, scale=expected, generator=rngs.noise)
    opt.step()
    return loss_sum, int(xb.shape[0])


def _fit(model: nn.Module, data: ClientDataLike, config: TrainConfig, dp: DPSGDConfig,
         rngs: _Rngs) -> tuple[float, int, float]:
    """The DP-SGD loop; returns (mean per-example loss over all batches — NaN if every
    batch was empty —, steps, q)."""
    n = len(data)
    q = sample_rate(config.batch_size, n) if dp.sample_rate is None else dp.sample_rate
    steps = config.epochs * steps_per_epoch(q)
    opt = _optimizer(model, config)
    loss_total, seen = 0.0, 0
    for _ in range(steps):
        xb, yb = data.take(poisson_positions(rngs.sampling, n, q))
        loss_sum, b = _dp_step(model, opt, _tensor(xb, np.float32), _tensor(yb, np.int64),
                               dp=dp, expected=q * n, rngs=rngs)
        loss_total, seen = loss_total + loss_sum, seen + b
    return (loss_total / seen if seen else float("nan")), steps, q


def train_dp(model: nn.Module, data: ClientDataLike, config: TrainConfig, *, dp: DPSGDConfig,
             seed: int, global_params: Params | None = None) -> DPTrainResult:
    """Train ``model`` in place on ``data`` with DP-SGD (in train mode; mode restored after).

    ``config`` gives epochs, the *expected* batch size, lr, optimizer, momentum and weight
    decay; ``seed`` drives dropout only (the noise and the batches come from the OS CSPRNG
    unless ``dp.insecure_seed`` is set). ``global_params`` is accepted for the TrainFn
    signature; FedProx (``prox_mu > 0``) is refused, its term not being per-sample. On any
    error the model is left as it was on entry.
    """
    if not isinstance(config, TrainConfig):
        raise ConfigError(f"config must be a TrainConfig, got {type(config).__name__}")
    if not isinstance(dp, DPSGDConfig):
        raise ConfigError(f"dp must be a DPSGDConfig, got {type(dp).__name__}")
    if config.prox_mu > 0:
        raise ConfigError("FedProx (prox_mu > 0) is not supported with DP-SGD")
    seed = _check_seed(seed)
    n = len(data)
    if n == 0:
        raise ConfigError("cannot train on a client with no examples")
    state = _float_state(model)
    entry = {name: t.detach().clone() for name, t in state.items()}
    try:
        with _mode(model, True), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            loss, steps, q = _fit(model, data, config, dp, _Rngs.create(dp, seed))
    except BaseException:
        with torch.no_grad():
            for name, t in state.items():
                t.copy_(entry[name])
        raise
    finally:
        for p in model.parameters():
            p.grad = None
    return DPTrainResult(num_examples=n, loss=loss, steps=steps, sample_rate=q,
                         noise_multiplier=float(dp.noise_multiplier),
                         max_grad_norm=float(dp.max_grad_norm))


def dp_train_fn(dp: DPSGDConfig) -> TrainFn:
    """A :data:`TrainFn` (``(model, data, config, seed, global_params) -> TrainResult``) that
    trains with DP-SGD under ``dp``; its results are :class:`DPTrainResult`."""
    if not isinstance(dp, DPSGDConfig):
        raise ConfigError(f"dp must be a DPSGDConfig, got {type(dp).__name__}")

    def train_fn(model: nn.Module, data: ClientDataLike, config: TrainConfig, seed: int,
                 global_params: Params | None = None) -> TrainResult:
        return train_dp(model, data, config, dp=dp, seed=seed, global_params=global_params)

    return train_fn

