"""One simulation worker: its share of a round's clients, trained one model at a time.

A worker holds one torch model and views of the shared training arrays (memory-mapped, or
Ray's object store): a client is only its slice ``order[offsets[k]:offsets[k + 1]]`` of row
indices, never a copy of its rows. For each client of its share it loads the global
parameters into the model in place, trains (or trains many clients at once with
:class:`~privml.sim._vmap.VectorTrainer`), and folds the update into what the round needs:

- ``sum``: the example-weighted sum of the deltas and the total weight (FedAvg & co.);
- ``clip``: the sum of the deltas clipped to L2 norm ``bound`` and how many fitted
  (client-level DP with central noise);
- ``each``: every delta, stacked (secure aggregation, which encodes each one).

The messages in and out are a JSON header and one raw float array: no pickle.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from privml import params as pm
from privml._exceptions import ConfigError
from privml.data import ClientData
from privml.dp._clip import clip_l2
from privml.models import ModelSpec, build_torch
from privml.sim._vmap import Job, VectorTrainer, vectorizable
from privml.train import TrainConfig, TrainFn, train_local

__all__ = ["Worker", "WorkerSetup"]

MODES = ("sum", "clip", "each")


@dataclass(frozen=True, slots=True)
class WorkerSetup:
    """Everything a worker is built from (the data comes apart: paths or object refs)."""

    train_cfg: TrainConfig
    spec_json: str | None = None
    model_fn: Callable[[], nn.Module] | None = None
    train_fn: TrainFn | None = None
    vectorize: str = "auto"  # "auto": measured on the first round; "on"; "off"
    threads: int = 1


def _state(model: nn.Module) -> list[torch.Tensor]:
    # The float state entries get_params returns, in its order, sharing the model's storage.
    return [t for t in model.state_dict().values() if t.is_floating_point()]


class Worker:
    """Trains clients on one in-place model; see the module doc."""

    def __init__(self, setup: WorkerSetup, x: npt.NDArray[np.float32],
                 y: npt.NDArray[np.int64], order: npt.NDArray[np.int64],
                 offsets: npt.NDArray[np.int64]) -> None:
        torch.set_num_threads(setup.threads)
        self.setup = setup
        if setup.model_fn is not None:
            self.model = setup.model_fn()
        elif setup.spec_json is not None:
            self.model = build_torch(ModelSpec.from_json(setup.spec_json))
        else:
            raise ConfigError("a worker needs a model spec or a model function")
        self.x, self.y, self.order, self.offsets = x, y, order, offsets
        self.state = _state(self.model)
        self.sizes = [t.numel() for t in self.state]
        self.names = [n for n, t in self.model.state_dict().items() if t.is_floating_point()]
        self.spec = {n: tuple(t.shape) for n, t in zip(self.names, self.state, strict=True)}
        self.dim = sum(self.sizes)
        self.vector: VectorTrainer | None = None
        self.choice = "loop"
        self.why_not: str | None = None
        if setup.train_fn is not None:
            self.why_not = "a custom train_fn"
        elif setup.vectorize != "off":
            self.why_not = vectorizable(self.model, setup.train_cfg)
        if self.why_not is None and setup.vectorize != "off":
            self.vector = VectorTrainer(self.model, setup.train_cfg)
            self.choice = "vmap" if setup.vectorize == "on" else "auto"
        elif setup.vectorize == "on":
            raise ConfigError(f"vectorize='on' but cannot vectorise: {self.why_not}")

    def rows(self, index: int) -> npt.NDArray[np.int64]:
        return self.order[int(self.offsets[index]):int(self.offsets[index + 1])]

    def _load(self, flat: torch.Tensor) -> None:
        with torch.no_grad():
            for t, piece in zip(self.state, torch.split(flat, self.sizes), strict=True):
                t.copy_(piece.view_as(t))

    def _read(self) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([t.reshape(-1) for t in self.state])

    def _loop(self, start: torch.Tensor, jobs: list[tuple[int, int]],
              global_params: pm.Params) -> tuple[torch.Tensor, list[float], list[int]]:
        train = self.setup.train_fn or train_local
        out, losses, sizes = [], [], []
        for index, seed in jobs:
            self._load(start)
            data = ClientData(x=self.x, y=self.y, indices=np.asarray(self.rows(index)))
            result = train(self.model, data, self.setup.train_cfg, seed, global_params)
            out.append(self._read().clone())
            losses.append(float(result.loss))
            sizes.append(int(result.num_examples))
        return torch.stack(out) if out else start.new_zeros((0, self.dim)), losses, sizes

    def _vmap(self, start: torch.Tensor, jobs: list[tuple[int, int]]
              ) -> tuple[torch.Tensor, list[float], list[int]]:
        assert self.vector is not None
        work = [Job(np.asarray(self.rows(i)), s) for i, s in jobs]
        flat, losses, _ = self.vector.train(start, self.x, self.y, work)
        return flat, losses, [len(j.rows) for j in work]

    def _train(self, start: torch.Tensor, jobs: list[tuple[int, int]],
               global_params: pm.Params) -> tuple[torch.Tensor, list[float], list[int]]:
        if self.choice == "vmap":
            return self._vmap(start, jobs)
        if self.choice == "loop" or len(jobs) < 4:
            return self._loop(start, jobs, global_params)
        # "auto": half of this share each way, timed per example; the faster one stays.
        self._vmap(start, jobs[:1])  # the first vmap call traces: keep it out of the timing
        half = len(jobs) // 2
        t0 = time.perf_counter()
        a = self._vmap(start, jobs[:half])
        t1 = time.perf_counter()
        b = self._loop(start, jobs[half:], global_params)
        t2 = time.perf_counter()
        per_vmap = (t1 - t0) / max(1, sum(a[2]))
        per_loop = (t2 - t1) / max(1, sum(b[2]))
        self.choice = "vmap" if per_vmap < per_loop else "loop"
        return torch.cat([a[0], b[0]]), a[1] + b[1], a[2] + b[2]

    def run(self, header: dict[str, Any], global_flat: npt.NDArray[np.float32]
            ) -> tuple[dict[str, Any], npt.NDArray[Any]]:
        """One round's share: ``header`` names the clients ([index, seed] pairs), the mode
        and the clip bound; returns the reply header and the array the mode asks for."""
        mode = header["mode"]
        if mode not in MODES:
            raise ConfigError(f"unknown worker mode {mode!r}")
        if global_flat.shape != (self.dim,):
            raise ConfigError(f"global parameters of shape {global_flat.shape}, the model "
                              f"has {self.dim} values")
        jobs = [(int(i), int(s)) for i, s in header["clients"]]
        start = torch.from_numpy(np.array(global_flat, dtype=np.float32))
        global_params = pm.unflatten(global_flat, self.spec)
        t0 = time.perf_counter()
        final, losses, sizes = self._train(start, jobs, global_params)
        deltas = (final - start).numpy()
        if not np.isfinite(deltas).all():
            bad = [jobs[k][0] for k in np.flatnonzero(~np.isfinite(deltas).all(axis=1))]
            raise ConfigError(f"clients {bad[:5]} produced non-finite parameters")
        reply: dict[str, Any] = {"ok": True, "clients": [i for i, _ in jobs], "losses": losses,
                                 "num_examples": sizes, "engine": self.choice,
                                 "train_s": time.perf_counter() - t0}
        if mode == "each":
            return reply, np.ascontiguousarray(deltas, dtype=np.float32)
        total = np.zeros(self.dim, dtype=np.float64)
        if mode == "sum":
            for k, n in enumerate(sizes):
                total += n * deltas[k].astype(np.float64)
            reply["weight"] = int(sum(sizes))
            return reply, total
        bound = float(header["bound"])
        if not (math.isfinite(bound) and bound > 0):
            raise ConfigError(f"clip bound must be > 0, got {bound}")
        fits = 0
        for k in range(len(jobs)):
            clipped, norm = clip_l2(deltas[k].astype(np.float64), bound=bound)
            total += clipped
            fits += int(norm <= bound)
        reply["fits"] = fits
        return reply, total
