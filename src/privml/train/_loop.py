"""Local training and evaluation in torch: seeded, deterministic on CPU, no global state.

Shuffling uses a local ``numpy.random.Generator``; dropout draws from torch's generator inside
``torch.random.fork_rng``, so a client's training is a pure function of (model, data, config,
seed) and leaves the process's random state as it found it.

The step is plain minibatch training: each epoch visits the client's examples in the order
``numpy.random.default_rng(seed).permutation(n)`` (one draw per epoch), in batches of
``batch_size`` (the last one smaller), minimising the mean cross-entropy of the logits (plus
the FedProx term). ``bench/privml_side.py`` replays exactly this step for Flower and the plain
loop, so change both together.
If training fails (diverges, bad labels), the model is put back as it was on entry.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from privml import params as pm
from privml._exceptions import ConfigError, DataError, ParamsError
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


def _number(label: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{label} must be a number, got {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """Local training settings; validated on construction (:class:`~privml.ConfigError`).

    ``momentum`` is SGD's; Adam keeps its own moment estimates and ignores it. The optimizer
    is created afresh for every :func:`train_local` call, as federated clients do.
    """

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
        lr = _number("lr", self.lr)
        if not (math.isfinite(lr) and lr > 0):
            raise ConfigError(f"lr must be a finite number > 0, got {self.lr}")
        if self.optimizer not in ("sgd", "adam"):
            raise ConfigError(f"unknown optimizer {self.optimizer!r} (choose from sgd, adam)")
        if not 0 <= _number("momentum", self.momentum) < 1:
            raise ConfigError(f"momentum must be in [0, 1), got {self.momentum}")
        for label in ("weight_decay", "prox_mu"):
            value = _number(label, getattr(self, label))
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{label} must be a finite number >= 0, got {value}")


@dataclass(frozen=True, slots=True)
class TrainResult:
    """``num_examples``: the client's size (the FedAvg weight, not times epochs); ``loss``:
    the mean training loss over all steps; ``steps``: optimizer steps taken."""

    num_examples: int
    loss: float
    steps: int


@dataclass(frozen=True, slots=True)
class EvalResult:
    """Mean cross-entropy, accuracy in [0, 1] and the number of examples evaluated."""

    loss: float
    accuracy: float
    num_examples: int


#: A user-supplied training function: (model, data, config, seed, global_params) -> result.
#: :func:`train_local` is one; it trains ``model`` in place.
TrainFn = Callable[[nn.Module, ClientDataLike, TrainConfig, int, Params | None], TrainResult]


def _tensor(arr: npt.ArrayLike, dtype: type[np.generic]) -> Tensor:
    """A tensor over ``arr`` (no copy when it is already contiguous, writable ``dtype``)."""
    a = np.ascontiguousarray(arr, dtype=dtype)
    # torch warns about, and could write through, a read-only buffer (a shared dataset).
    return torch.from_numpy(a if a.flags.writeable else a.copy())


def _float_state(model: nn.Module) -> dict[str, Tensor]:
    # state_dict tensors share storage with the model's parameters and buffers.
    return {name: t for name, t in model.state_dict().items() if t.is_floating_point()}


def get_params(model: nn.Module) -> Params:
    """Every floating-point state entry (parameters and buffers such as BatchNorm's running
    statistics), as float32 numpy copies in ``state_dict`` order."""
    return {name: t.detach().to(torch.float32).cpu().numpy().copy()
            for name, t in _float_state(model).items()}


def param_spec(model: nn.Module) -> pm.Spec:
    """The names and shapes :func:`get_params` returns and :func:`set_params` expects."""
    return {name: tuple(t.shape) for name, t in _float_state(model).items()}


def _check_arrays(params: object) -> Mapping[str, npt.NDArray[Any]]:
    if not isinstance(params, Mapping):
        raise ParamsError(f"parameters must be a mapping of name to array, "
                          f"got {type(params).__name__}")
    for name, arr in params.items():
        if not isinstance(arr, np.ndarray):
            raise ParamsError(f"tensor {name!r}: not a numpy array ({type(arr).__name__})")
    return params


def set_params(model: nn.Module, params: Mapping[str, npt.NDArray[np.float32]]) -> None:
    """Load ``params`` into ``model`` after checking names, shapes, dtype and finiteness.

    Everything is checked before anything is copied: on :class:`~privml.ParamsError` the
    model is unchanged.
    """
    state = _float_state(model)
    checked = pm.validate(_check_arrays(params), {n: tuple(t.shape) for n, t in state.items()})
    _copy_in(state, checked)


def _copy_in(state: Mapping[str, Tensor], params: Params) -> None:
    with torch.no_grad():
        for name, arr in params.items():
            state[name].copy_(_tensor(arr, np.float32))


def _logits(model: nn.Module, x: Tensor) -> Tensor:
    fn = getattr(model, "logits", None)
    out: Tensor = fn(x) if callable(fn) else model(x)
    return out


def _cross_entropy(logits: Tensor, y: Tensor, reduction: str = "mean") -> Tensor:
    try:
        return F.cross_entropy(logits, y, reduction=reduction)
    except IndexError as exc:  # torch's "Target 12 is out of bounds."
        raise DataError(f"label out of range for a model with {logits.shape[-1]} outputs "
                        f"({exc})") from None


@contextmanager
def _mode(model: nn.Module, training: bool) -> Iterator[None]:
    was = model.training
    model.train(training)
    try:
        yield
    finally:
        model.train(was)


def _check_seed(seed: int) -> int:
    try:
        value = operator.index(seed)
    except TypeError:
        raise ConfigError(f"seed must be an integer, got {seed!r}") from None
    if not 0 <= value < 2**63:
        raise ConfigError(f"seed must be in [0, 2**63), got {value}")
    return value


def _optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("the model has no trainable parameters")
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                           weight_decay=cfg.weight_decay)


def _prox_anchor(model: nn.Module, config: TrainConfig,
                 global_params: Params | None) -> list[tuple[Tensor, Tensor]]:
    """(parameter, its global value) pairs for the FedProx term; empty when it is off."""
    if config.prox_mu == 0:
        return []
    if global_params is None:
        raise ConfigError("FedProx (prox_mu > 0) needs the global parameters")
    # The whole set is checked like an update off the wire: a wrong shape would otherwise
    # broadcast silently into the penalty.
    checked = pm.validate(_check_arrays(global_params), param_spec(model))
    return [(p, _tensor(checked[name], np.float32))
            for name, p in model.named_parameters() if p.requires_grad]


def _fit(model: nn.Module, data: ClientDataLike, config: TrainConfig, seed: int,
         anchor: list[tuple[Tensor, Tensor]]) -> tuple[float, int]:
    """The training loop proper; returns (sum of step losses, steps)."""
    opt = _optimizer(model, config)
    n, bs = len(data), config.batch_size
    order_rng = np.random.default_rng(seed)
    total, steps = 0.0, 0
    for _ in range(config.epochs):
        perm = order_rng.permutation(n)
        for start in range(0, n, bs):
            xb, yb = data.take(perm[start:start + bs])
            loss = _cross_entropy(_logits(model, _tensor(xb, np.float32)), _tensor(yb, np.int64))
            if anchor:
                prox = sum(((p - a) ** 2).sum() for p, a in anchor)
                loss = loss + 0.5 * config.prox_mu * prox
            value = float(loss.detach())
            # Checked before the step, so no NaN ever reaches the parameters.
            if not math.isfinite(value):
                raise ConfigError(f"training diverged: loss is {value} "
                                  "(lower the learning rate)")
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            total += value
            steps += 1
    return total, steps


def train_local(model: nn.Module, data: ClientDataLike, config: TrainConfig, seed: int,
                global_params: Params | None = None) -> TrainResult:
    """Train ``model`` in place on ``data`` (in train mode; its mode is restored after).

    Same ``seed`` and inputs give bit-identical parameters on CPU. ``global_params`` anchor
    the FedProx term and are needed only when ``config.prox_mu > 0``. Raises
    :class:`~privml.ConfigError` for empty data, a bad seed or a diverging loss,
    :class:`~privml.DataError` for labels the model has no output for, and
    :class:`~privml.ParamsError` for global parameters that do not fit; in every case the
    model is left as it was on entry.
    """
    if not isinstance(config, TrainConfig):
        raise ConfigError(f"config must be a TrainConfig, got {type(config).__name__}")
    seed = _check_seed(seed)
    n = len(data)
    if n == 0:
        raise ConfigError("cannot train on a client with no examples")
    anchor = _prox_anchor(model, config, global_params)
    state = _float_state(model)
    entry = {name: t.detach().clone() for name, t in state.items()}
    try:
        with _mode(model, True), torch.random.fork_rng(devices=[]):
            # The CPU generator only: torch.manual_seed also seeds every accelerator backend
            # lazily, formatting a stack trace each time (~1 ms a call, most of a small
            # client's training).
            torch.default_generator.manual_seed(seed)
            total, steps = _fit(model, data, config, seed, anchor)
    except BaseException:
        with torch.no_grad():
            for name, t in state.items():
                t.copy_(entry[name])
        raise
    return TrainResult(num_examples=n, loss=total / steps, steps=steps)


def _check_batch_size(batch_size: object) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    return batch_size


def evaluate(model: nn.Module, x: npt.NDArray[np.float32], y: npt.NDArray[np.int64], *,
             batch_size: int = 1024) -> EvalResult:
    """Mean cross-entropy and accuracy of ``model`` on (x, y), in eval mode, no gradients."""
    bs = _check_batch_size(batch_size)
    if len(x) == 0 or len(x) != len(y):
        raise ConfigError(f"evaluate needs matching, non-empty x and y ({len(x)} vs {len(y)})")
    loss_sum, correct = 0.0, 0
    with _mode(model, False), torch.no_grad():
        for start in range(0, len(x), bs):
            xb = _tensor(x[start:start + bs], np.float32)
            yb = _tensor(y[start:start + bs], np.int64)
            logits = _logits(model, xb)
            loss_sum += float(_cross_entropy(logits, yb, reduction="sum"))
            correct += int((logits.argmax(dim=1) == yb).sum())
    return EvalResult(loss=loss_sum / len(x), accuracy=correct / len(x), num_examples=len(x))


def predict_proba(model: nn.Module, x: npt.NDArray[np.float32], *,
                  batch_size: int = 1024) -> npt.NDArray[np.float32]:
    """Class probabilities (softmax of the logits), float32 (n, classes), in eval mode."""
    bs = _check_batch_size(batch_size)
    outs = []
    with _mode(model, False), torch.no_grad():
        # max(n, 1): an empty x still runs one (empty) batch, giving shape (0, classes).
        for start in range(0, max(len(x), 1), bs):
            xb = _tensor(x[start:start + bs], np.float32)
            outs.append(F.softmax(_logits(model, xb), dim=1).numpy())
    return np.concatenate(outs).astype(np.float32, copy=False)
