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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from privml import params as pm
from privml._exceptions import ConfigError
from privml.data import ClientData
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


#: (positions in the share, final flat parameters (k, dim), mean losses, examples)
_Piece = tuple[list[int], torch.Tensor, list[float], list[int]]


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
              global_params: pm.Params) -> Iterator[_Piece]:
        train = self.setup.train_fn or train_local
        for k, (index, seed) in enumerate(jobs):
            self._load(start)
            data = ClientData(x=self.x, y=self.y, indices=np.asarray(self.rows(index)))
            result = train(self.model, data, self.setup.train_cfg, seed, global_params)
            yield [k], self._read().unsqueeze(0), [float(result.loss)], \
                [int(result.num_examples)]

    def _vmap(self, start: torch.Tensor, jobs: list[tuple[int, int]]) -> Iterator[_Piece]:
        assert self.vector is not None  # nosec B101  # narrowing: _vmap runs only when the vmap engine was built
        work = [Job(np.asarray(self.rows(i)), s) for i, s in jobs]
        for part, flat, losses in self.vector.chunks(start, self.x, self.y, work):
            yield part, flat, losses, [len(work[k].rows) for k in part]

    def _pieces(self, start: torch.Tensor, jobs: list[tuple[int, int]],
                global_params: pm.Params, timing: dict[str, float]) -> Iterator[_Piece]:
        if self.choice == "vmap":
            yield from self._vmap(start, jobs)
            return
        if self.choice == "loop" or len(jobs) < 4:
            yield from self._loop(start, jobs, global_params)
            return
        # "auto": half of this share each way, timed per example; the coordinating process
        # adds up every worker's timings and tells all of them which to keep.
        for _ in self._vmap(start, jobs[:1]):  # the first vmap call traces: not timed
            pass
        half = len(jobs) // 2
        for name, gen in (("vmap", self._vmap(start, jobs[:half])),
                          ("loop", self._loop(start, jobs[half:], global_params))):
            offset = 0 if name == "vmap" else half
            t0, examples = time.perf_counter(), 0
            for part, flat, losses, sizes in gen:
                examples += sum(sizes)
                took = time.perf_counter() - t0
                yield [offset + k for k in part], flat, losses, sizes
                t0 = time.perf_counter() - took  # the caller's folding is not timed
            timing[f"{name}_s"] = time.perf_counter() - t0
            timing[f"{name}_examples"] = examples

    def run(self, header: dict[str, Any], global_flat: npt.NDArray[np.float32]
            ) -> tuple[dict[str, Any], npt.NDArray[Any]]:
        """One round's share: ``header`` names the clients ([index, seed] pairs), the mode
        and the clip bound (and, once decided, the engine); returns the reply header and
        the array the mode asks for. Each trained piece is folded in as it comes."""
        mode = header["mode"]
        if mode not in MODES:
            raise ConfigError(f"unknown worker mode {mode!r}")
        if global_flat.shape != (self.dim,):
            raise ConfigError(f"global parameters of shape {global_flat.shape}, the model "
                              f"has {self.dim} values")
        if header.get("engine") in ("vmap", "loop") and self.vector is not None:
            self.choice = header["engine"]
        bound = float(header["bound"]) if mode == "clip" else 0.0
        if mode == "clip" and not (math.isfinite(bound) and bound > 0):
            raise ConfigError(f"clip bound must be > 0, got {header['bound']}")
        jobs = [(int(i), int(s)) for i, s in header["clients"]]
        start = torch.from_numpy(np.array(global_flat, dtype=np.float32))
        global_params = pm.unflatten(global_flat, self.spec)
        t0 = time.perf_counter()
        timing: dict[str, float] = {}
        clients: list[int] = []
        losses: list[float] = []
        sizes: list[int] = []
        rows: list[npt.NDArray[np.float32]] = []
        total = np.zeros(self.dim if mode != "each" else 0, dtype=np.float64)
        fits = 0
        for part, final, loss, n in self._pieces(start, jobs, global_params, timing):
            deltas = (final - start).numpy()
            if not np.isfinite(deltas).all():
                bad = [jobs[part[k]][0] for k in
                       np.flatnonzero(~np.isfinite(deltas).all(axis=1))]
                raise ConfigError(f"clients {bad[:5]} produced non-finite parameters")
            clients.extend(jobs[k][0] for k in part)
            losses.extend(loss)
            sizes.extend(n)
            if mode == "each":
                rows.append(deltas.astype(np.float32, copy=True))
            elif mode == "sum":
                for k, weight in enumerate(n):  # row by row: no float64 copy of the chunk
                    total += weight * deltas[k].astype(np.float64)
            else:
                from privml.dp._clip import clip_l2  # (privml.dp loads the accountants)

                for k in range(len(part)):
                    clipped, norm = clip_l2(deltas[k].astype(np.float64), bound=bound)
                    total += clipped
                    fits += int(norm <= bound)
        reply: dict[str, Any] = {"ok": True, "clients": clients, "losses": losses,
                                 "num_examples": sizes, "engine": self.choice,
                                 "train_s": time.perf_counter() - t0, "timing": timing}
        if mode == "each":
            return reply, (np.concatenate(rows) if rows
                           else np.zeros((0, self.dim), dtype=np.float32))
        if mode == "sum":
            reply["weight"] = int(sum(sizes))
        else:
            reply["fits"] = fits
        return reply, total
