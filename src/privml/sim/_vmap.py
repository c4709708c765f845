"""Many clients trained at once: ``torch.func.vmap`` over stacked client parameters.

For small models a client's step is mostly Python and dispatch overhead, so training C
clients one after another costs C times that overhead; stacking their parameters along a
new leading axis and taking one vectorised step for all of them costs it once. The result
is the same training as :func:`privml.train.train_local` (same per-epoch permutation
``default_rng(seed).permutation(n)``, same batches, same SGD with momentum, weight decay and
FedProx term), equal to float tolerance: batched matrix products sum in another order.

Clients of different sizes take different numbers of steps: shorter clients are padded
with zero-weight examples and masked out of the steps they do not have (their parameters
and momentum are left untouched there). Only models whose forward pass is a pure function
of the parameters qualify (no dropout, no batch statistics, no buffers), with SGD.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value, vmap

from privml._exceptions import ConfigError
from privml.train import TrainConfig

__all__ = ["VectorTrainer", "vectorizable"]

_STATEFUL = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout,
             nn.modules.batchnorm._BatchNorm)
MAX_CHUNK = 64  # clients per vectorised call: bounds the stacked copies' memory


def vectorizable(model: nn.Module, cfg: TrainConfig) -> str | None:
    """None when ``model`` and ``cfg`` can be trained vectorised, else the reason not."""
    if cfg.optimizer != "sgd":
        return f"optimizer {cfg.optimizer} (only sgd is vectorised)"
    if list(model.buffers()):
        return "the model has buffers"
    for module in model.modules():
        if isinstance(module, _STATEFUL):
            return f"the model has a {type(module).__name__} layer"
    if any(p.dtype != torch.float32 for p in model.parameters()):
        return "the model has non-float32 parameters"
    spec = getattr(model, "spec", None)
    if any(type(layer).__name__ == "Dropout" for layer in getattr(spec, "layers", ())):
        return "the model has a Dropout layer"
    return None


class _Logits(nn.Module):
    """What the loss wants: the model's logits (``SpecModule.logits`` leaves out a trailing
    Softmax), under parameter names prefixed ``m.``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.m = model

    def forward(self, x: Tensor) -> Tensor:
        fn = getattr(self.m, "logits", None)
        out: Tensor = fn(x) if callable(fn) else self.m(x)
        return out


@dataclass(frozen=True, slots=True)
class Job:
    """One client to train: its rows (indices into the shared arrays) and its seed."""

    rows: npt.NDArray[np.int64]
    seed: int


class VectorTrainer:
    """Trains a list of clients from the same starting parameters in vectorised steps."""

    def __init__(self, model: nn.Module, cfg: TrainConfig) -> None:
        reason = vectorizable(model, cfg)
        if reason is not None:
            raise ConfigError(f"cannot vectorise training: {reason}")
        self.model = _Logits(model)
        self.cfg = cfg
        self.names = [n for n, _ in self.model.named_parameters()]
        self.shapes = [tuple(p.shape) for _, p in self.model.named_parameters()]
        self.sizes = [math.prod(s) for s in self.shapes]
        self._step = vmap(grad_and_value(self._loss), in_dims=(0, 0, 0, 0, None))

    def _loss(self, params: dict[str, Tensor], x: Tensor, y: Tensor, w: Tensor,
              anchor: dict[str, Tensor]) -> Tensor:
        logits = functional_call(self.model, params, (x,), {}, strict=True)
        ce = F.cross_entropy(logits, y, reduction="none")
        loss = (ce * w).sum() / w.sum().clamp_min(1.0)
        if self.cfg.prox_mu:
            prox = sum(((params[n] - anchor[n]) ** 2).sum() for n in self.names)
            loss = loss + 0.5 * self.cfg.prox_mu * prox
        return loss

    def chunks(self, start: Tensor, x: npt.NDArray[np.float32], y: npt.NDArray[np.int64],
               jobs: list[Job]) -> Iterator[tuple[list[int], Tensor, list[float]]]:
        """Train ``jobs`` a chunk at a time; yields (positions in ``jobs``, final flat
        parameters (k, dim), mean step loss per client) — folded by the caller as they
        come, so no more than one chunk of stacked models is ever alive."""
        # A chunk holds clients that take the same number of steps (no step is masked, and
        # one big client cannot make a chunk of small ones take its many steps), sorted by
        # size (few padded slots in each batch).
        bs, epochs = self.cfg.batch_size, self.cfg.epochs
        steps = [epochs * -(-len(j.rows) // bs) for j in jobs]
        order = sorted(range(len(jobs)), key=lambda k: (steps[k], len(jobs[k].rows)))
        lo = 0
        while lo < len(order):
            hi = lo + 1
            while hi < len(order) and hi - lo < MAX_CHUNK and steps[order[hi]] == steps[order[lo]]:
                hi += 1
            part = order[lo:hi]
            flat, losses = self._chunk(start, x, y, [jobs[k] for k in part])
            yield part, flat, losses
            lo = hi

    def train(self, start: Tensor, x: npt.NDArray[np.float32], y: npt.NDArray[np.int64],
              jobs: list[Job]) -> tuple[Tensor, list[float]]:
        """Final flat parameters (len(jobs), dim) and mean step loss, in ``jobs`` order."""
        out = torch.empty((len(jobs), start.numel()), dtype=start.dtype)
        losses = [0.0] * len(jobs)
        for part, flat, loss in self.chunks(start, x, y, jobs):
            out[torch.tensor(part)] = flat
            for k, v in zip(part, loss, strict=True):
                losses[k] = v
        return out, losses

    def _schedule(self, jobs: list[Job]) -> tuple[npt.NDArray[np.int64],
                                                  npt.NDArray[np.float32], list[int]]:
        """Row index and weight per (step, client, slot): train_local's batches, padded
        to the widest batch of the chunk (not to batch_size: small clients stay small)."""
        bs, epochs = self.cfg.batch_size, self.cfg.epochs
        per_epoch = [-(-len(j.rows) // bs) for j in jobs]
        steps = [epochs * s for s in per_epoch]
        total = max(steps)
        width = min(bs, max(len(j.rows) for j in jobs))
        idx = np.zeros((total, len(jobs), width), dtype=np.int64)
        wts = np.zeros((total, len(jobs), width), dtype=np.float32)
        for c, job in enumerate(jobs):
            n = len(job.rows)
            rng = np.random.default_rng(job.seed)
            s = 0
            for _ in range(epochs):
                perm = job.rows[rng.permutation(n)]
                for a in range(0, n, bs):
                    rows = perm[a:a + bs]
                    idx[s, c, :len(rows)] = rows
                    wts[s, c, :len(rows)] = 1.0
                    s += 1
        return idx, wts, steps

    def _chunk(self, start: Tensor, x: npt.NDArray[np.float32], y: npt.NDArray[np.int64],
               jobs: list[Job]) -> tuple[Tensor, list[float]]:
        cfg = self.cfg
        idx, wts, steps = self._schedule(jobs)
        c = len(jobs)
        pieces = torch.split(start, self.sizes)
        anchor = {n: t.view(s) for n, t, s in zip(self.names, pieces, self.shapes, strict=True)}
        params = {n: t.view(s).unsqueeze(0).repeat(c, *([1] * len(s)))
                  for n, t, s in zip(self.names, pieces, self.shapes, strict=True)}
        bufs: dict[str, Tensor] = {}
        loss_sum = torch.zeros(c, dtype=torch.float64)
        shape = x.shape[1:]
        with torch.no_grad():
            for s in range(idx.shape[0]):
                rows = idx[s]
                xb = torch.from_numpy(np.ascontiguousarray(x[rows.ravel()], dtype=np.float32)
                                      ).view(c, rows.shape[1], *shape)
                yb = torch.from_numpy(np.ascontiguousarray(y[rows.ravel()], dtype=np.int64)
                                      ).view(c, rows.shape[1])
                wb = torch.from_numpy(wts[s])
                active = wb[:, 0] > 0  # a step a client has always has its first slot
                everyone = bool(active.all())
                with torch.enable_grad():
                    grads, loss = self._step(params, xb, yb, wb, anchor)
                live = loss if everyone else loss[active]
                if not bool(torch.isfinite(live).all()):
                    raise ConfigError(f"training diverged: loss is {float(live.max())} "
                                      "(lower the learning rate)")
                loss_sum += (loss if everyone else torch.where(active, loss, 0.0)).double()
                for n, p in params.items():
                    g = grads[n]
                    if cfg.weight_decay:
                        g = g + cfg.weight_decay * p
                    mask = None if everyone else active.view(c, *([1] * (p.dim() - 1)))
                    if cfg.momentum:
                        # torch's SGD: the first step's buffer is the gradient itself.
                        if n not in bufs:
                            bufs[n] = g.clone() if mask is None else torch.where(mask, g, 0.0)
                        elif mask is None:
                            bufs[n].mul_(cfg.momentum).add_(g)
                        else:
                            bufs[n] = torch.where(mask, cfg.momentum * bufs[n] + g, bufs[n])
                        g = bufs[n]
                    if mask is None:
                        p.sub_(cfg.lr * g)
                    else:
                        p.sub_(torch.where(mask, cfg.lr * g, 0.0))
        flat = torch.cat([p.reshape(c, -1) for p in params.values()], dim=1)
        return flat, [float(loss_sum[k]) / steps[k] for k in range(c)]
