"""Local training and evaluation in torch: seeded, deterministic on CPU, no global state.

Shuffling uses a local ``numpy.random.Generator``; dropout draws from torch's generator inside
``torch.random.fork_rng``, so a client's training is a pure function of (model, data, config,
seed) and leaves the process's random state as it found it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from privml import params as pm
from privml._exceptions import ConfigError, ParamsError
from privml.params import Params

__all__ = [
    "ClientDataLike",
    "EvalResult",
    "TrainConfig",
    "TrainFn",
    "TrainResult",
    "evaluate",
    "get_params",
    "param_spec",
    "predict_proba",
    "set_params",
    "train_local",
]


class ClientDataLike(Protocol):
    """What training needs of a client's data (``privml.data.ClientData`` is one)."""

    def __len__(self) -> int: ...

    def take(self, positions: npt.NDArray[np.int64] | slice
             ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]: ...


@dataclass(frozen=True, slots=True)
class TrainConfig:
    epochs: int = 1
    batch_size: int = 32
    lr: float = 0.05
    optimizer: Literal["sgd", "adam"] | str = "sgd"
    momentum: float = 0.0
    weight_decay: float = 0.0
    prox_mu: float = 0.0  # FedProx: (mu/2)·||w - w_global||² added to the loss

    def __post_init__(self) -> None:
        for label in ("epochs", "batch_size"):
            value = getattr(self, label)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{label} must be an integer >= 1, got {value!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if self.optimizer not in ("sgd", "adam"):
            raise ConfigError(f"unknown optimizer {self.optimizer!r} (choose from sgd, adam)")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"momentum must be in [0, 1), got {self.momentum}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not (math.isfinite(self.prox_mu) and self.prox_mu >= 0):
            raise ConfigError(f"prox_mu must be >= 0, got {self.prox_mu}")


@dataclass(frozen=True, slots=True)
class TrainResult:
    num_examples: int
    loss: float
    steps: int


@dataclass(frozen=True, slots=True)
class EvalResult:
    loss: float
    accuracy: float
    num_examples: int


#: A user-supplied training function: (model, data, config, seed, global_params) -> result.
TrainFn = Callable[[nn.Module, ClientDataLike, TrainConfig, int, Params | None], TrainResult]


def get_params(model: nn.Module) -> Params:
    """Every floating-point state entry (parameters and buffers), as float32 numpy copies."""
    return {name: t.detach().to(torch.float32).cpu().numpy().copy()
            for name, t in model.state_dict().items() if t.is_floating_point()}


def param_spec(model: nn.Module) -> pm.Spec:
    return {name: tuple(t.shape) for name, t in model.state_dict().items()
            if t.is_floating_point()}


def set_params(model: nn.Module, params: Mapping[str, npt.NDArray[np.float32]]) -> None:
    """Load ``params`` into ``model`` after checking names, shapes, dtype and finiteness."""
    checked = pm.validate(params, param_spec(model))
    state = model.state_dict()
    with torch.no_grad():
        for name, arr in checked.items():
            state[name].copy_(torch.from_numpy(np.ascontiguousarray(arr)))


def _logits(model: nn.Module, x: Tensor) -> Tensor:
    fn = getattr(model, "logits", None)
    out: Tensor = fn(x) if callable(fn) else model(x)
    return out


def _optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                           weight_decay=cfg.weight_decay)


def train_local(model: nn.Module, data: ClientDataLike, config: TrainConfig, seed: int,
                global_params: Params | None = None) -> TrainResult:
    """Train ``model`` in place on ``data``; returns examples seen, mean loss and steps."""
    n = len(data)
    if n == 0:
        raise ConfigError("cannot train on a client with no examples")
    anchor: list[Tensor] = []
    if config.prox_mu > 0:
        if global_params is None:
            raise ConfigError("FedProx (prox_mu > 0) needs the global parameters")
        names = [name for name, _ in model.named_parameters()]
        missing = [nm for nm in names if nm not in global_params]
        if missing:
            raise ParamsError(f"tensor {missing[0]!r}: missing from the global parameters")
        anchor = [torch.from_numpy(global_params[nm]) for nm in names]
    opt = _optimizer(model, config)
    order_rng = np.random.default_rng(seed)
    total, steps = 0.0, 0
    model.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for _ in range(config.epochs):
            perm = order_rng.permutation(n)
            for start in range(0, n, config.batch_size):
                xb, yb = data.take(perm[start:start + config.batch_size])
                loss = F.cross_entropy(_logits(model, torch.from_numpy(xb)),
                                       torch.from_numpy(yb))
                if anchor:
                    prox = sum(((p - a) ** 2).sum()
                               for p, a in zip(model.parameters(), anchor, strict=True))
                    loss = loss + 0.5 * config.prox_mu * prox
                opt.zero_grad(set_to_none=True)
                loss.backward()  # type: ignore[no-untyped-call]
                opt.step()
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise ConfigError(f"training diverged: loss is {value} "
                                      "(lower the learning rate)")
                total += value
                steps += 1
    return TrainResult(num_examples=n, loss=total / steps, steps=steps)


def evaluate(model: nn.Module, x: npt.NDArray[np.float32], y: npt.NDArray[np.int64], *,
             batch_size: int = 1024) -> EvalResult:
    """Mean cross-entropy and accuracy of ``model`` on (x, y), in eval mode."""
    if len(x) == 0 or len(x) != len(y):
        raise ConfigError(f"evaluate needs matching, non-empty x and y ({len(x)} vs {len(y)})")
    model.eval()
    loss_sum, correct = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            xb = torch.from_numpy(np.ascontiguousarray(x[start:start + batch_size]))
            yb = torch.from_numpy(np.ascontiguousarray(y[start:start + batch_size]))
            logits = _logits(model, xb)
            loss_sum += float(F.cross_entropy(logits, yb, reduction="sum"))
            correct += int((logits.argmax(dim=1) == yb).sum())
    return EvalResult(loss=loss_sum / len(x), accuracy=correct / len(x), num_examples=len(x))


def predict_proba(model: nn.Module, x: npt.NDArray[np.float32], *,
                  batch_size: int = 1024) -> npt.NDArray[np.float32]:
    """Class probabilities (softmax of the logits), float32 (n, classes)."""
    model.eval()
    outs = []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            xb = torch.from_numpy(np.ascontiguousarray(x[start:start + batch_size], np.float32))
            outs.append(F.softmax(_logits(model, xb), dim=1).numpy())
    return np.concatenate(outs).astype(np.float32)
