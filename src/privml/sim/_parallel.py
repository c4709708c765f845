"""A round's clients spread over a worker pool (local processes or Ray actors).

Each round, the sampled clients are shared among the workers by size (the largest first,
each to the least loaded worker), every worker trains its share and folds it into one
partial result, and the partial results are added: one reduction per round. Which worker
trains a client does not change its update (its seed is its own), so the result depends on
the pool only through the order of floating-point additions.

A worker that dies mid-round is restarted; its clients are trained again on the new
worker (``on_worker_failure="retry"``, once) or left out of the round (``"drop"``, or when
the retry dies too) — then they count as clients that did not answer, and the round goes
on under its usual rules (``min_updates``, the deadline). Every restart, retry and loss is
reported in the round's record.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from privml._exceptions import ConfigError, DataError, ParamsError, PrivmlError
from privml.data import Dataset, Partition
from privml.sim._pool import Outcome, ProcessPool, WorkerFailure, default_workers
from privml.sim._worker import WorkerSetup

__all__ = ["MAX_RESTARTS", "Parallel", "RoundOutput", "WorkerError"]

_ERRORS: dict[str, type[Exception]] = {
    "ConfigError": ConfigError, "DataError": DataError, "ParamsError": ParamsError}
MAX_RESTARTS = 20  # per run: workers that keep dying mean something else is wrong


class WorkerError(PrivmlError):
    """Simulation workers failed beyond recovery (they keep dying, or training failed)."""


@dataclass(slots=True)
class RoundOutput:
    """What the pool returned for one round: per-client facts and the reduced array."""

    clients: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    num_examples: list[int] = field(default_factory=list)
    total: npt.NDArray[Any] | None = None  # sum / clipped sum, or stacked deltas ("each")
    weight: int = 0
    fits: int = 0
    lost: list[int] = field(default_factory=list)
    restarts: int = 0
    retried: int = 0
    engines: set[str] = field(default_factory=set)


def csr(part: Partition) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """The partition as one index array and per-client offsets into it."""
    sizes = part.sizes()
    offsets = np.zeros(len(sizes) + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    return np.concatenate(part.indices).astype(np.int64, copy=False), offsets


class Parallel:
    """The worker pool of one simulation and the round's reduction."""

    def __init__(self, *, backend: str, workers: int | None, ray_address: str | None,
                 policy: str, setup: WorkerSetup, dataset: Dataset,
                 order: npt.NDArray[np.int64], offsets: npt.NDArray[np.int64]) -> None:
        self.sizes = np.diff(offsets)
        self.policy = policy
        self.restarts = 0
        self.engine: str | None = None  # "vmap" or "loop" once the workers' timings decide
        self.timing: dict[str, float] = {}
        self.pool: Any
        arrays = (dataset.x_train, dataset.y_train, order, offsets)
        _warm_up(setup)
        if backend == "ray":
            from privml.sim._ray import RayPool

            self.pool = RayPool(setup, arrays, workers, ray_address)
        else:
            self.pool = ProcessPool(setup, arrays, workers or default_workers())

    @property
    def size(self) -> int:
        return int(self.pool.size)

    def describe(self) -> dict[str, Any]:
        info = self.pool.info[0] if self.pool.info else {}
        out = {"backend": self.pool.backend, "workers": self.size,
               "vectorize": self.engine or info.get("vectorize"),
               "not_vectorized_because": info.get("why_not")}
        if self.timing:
            out["engine_timing"] = self.timing
        return out

    def _split(self, jobs: list[tuple[int, int]]) -> list[list[tuple[int, int]]]:
        shares: list[list[tuple[int, int]]] = [[] for _ in range(self.size)]
        heap = [(0, slot) for slot in range(self.size)]
        for job in sorted(jobs, key=lambda j: -int(self.sizes[j[0]])):
            load, slot = heapq.heappop(heap)
            shares[slot].append(job)
            heapq.heappush(heap, (load + int(self.sizes[job[0]]), slot))
        return shares

    def round(self, jobs: list[tuple[int, int]], *, mode: str, bound: float | None,
              flat: npt.NDArray[np.float32]) -> RoundOutput:
        """Train ``jobs`` ((client index, seed) pairs) and reduce them per ``mode``."""
        shares = self._split(jobs)
        out = RoundOutput()
        parts: list[tuple[dict[str, Any], npt.NDArray[Any]]] = []
        pending = {slot: share for slot, share in enumerate(shares) if share}
        attempt = 0
        while pending:
            headers: list[dict[str, Any] | None] = [None] * self.size
            for slot, share in pending.items():
                headers[slot] = {"mode": mode, "bound": bound, "engine": self.engine,
                                 "clients": [[i, s] for i, s in share]}
            results: dict[int, Outcome] = self.pool.run(headers, flat)
            failed: dict[int, list[tuple[int, int]]] = {}
            for slot, result in results.items():
                if isinstance(result, WorkerFailure):
                    failed[slot] = pending[slot]
                    continue
                reply, arr = result
                if not reply.get("ok"):
                    # privml's own errors keep their type (as inline); others are wrapped.
                    known = _ERRORS.get(str(reply.get("kind")))
                    if known is not None:
                        raise known(str(reply.get("message")))
                    raise WorkerError(f"training failed in a worker: {reply.get('error')}")
                parts.append((reply, arr))
            for slot in failed:
                self._restart(slot)
                out.restarts += 1
            retry = self.policy == "retry" and attempt == 0
            if retry:
                out.retried += sum(len(s) for s in failed.values())
                pending = failed
            else:
                out.lost.extend(i for share in failed.values() for i, _ in share)
                pending = {}
            attempt += 1
        self._reduce(parts, mode, out)
        self._decide([reply.get("timing") or {} for reply, _ in parts])
        return out

    def _decide(self, timings: list[dict[str, float]]) -> None:
        """vectorize="auto": the first round's timings of every worker (half its share
        each way) pick one engine for all of them, per example trained."""
        if self.engine is not None or not any(timings):
            return
        total = {k: sum(t.get(k, 0.0) for t in timings)
                 for k in ("vmap_s", "vmap_examples", "loop_s", "loop_examples")}
        if total["vmap_examples"] and total["loop_examples"]:
            vmap = total["vmap_s"] / total["vmap_examples"]
            loop = total["loop_s"] / total["loop_examples"]
            self.engine = "vmap" if vmap < loop else "loop"
            self.timing = {"vmap_s_per_example": vmap, "loop_s_per_example": loop}

    def _restart(self, slot: int) -> None:
        self.restarts += 1
        if self.restarts > MAX_RESTARTS:
            raise WorkerError(f"simulation workers died {self.restarts} times in this run")
        self.pool.restart(slot)

    @staticmethod
    def _reduce(parts: list[tuple[dict[str, Any], npt.NDArray[Any]]], mode: str,
                out: RoundOutput) -> None:
        arrays = []
        for reply, arr in parts:
            out.clients.extend(int(i) for i in reply["clients"])
            out.losses.extend(float(v) for v in reply["losses"])
            out.num_examples.extend(int(n) for n in reply["num_examples"])
            if reply.get("engine") != "auto":
                out.engines.add(str(reply.get("engine")))
            out.weight += int(reply.get("weight", 0))
            out.fits += int(reply.get("fits", 0))
            arrays.append(arr)
        if not arrays:
            return
        if mode == "each":
            dim = max((a.size // max(1, len(r["clients"])) for (r, _), a in
                       zip(parts, arrays, strict=True) if len(r["clients"])), default=0)
            out.total = np.concatenate([a.reshape(-1, dim) for a in arrays]) if dim else None
            return
        total = arrays[0].astype(np.float64, copy=True)
        for arr in arrays[1:]:
            total += arr
        out.total = total

    def close(self) -> None:
        self.pool.close()


def _warm_up(setup: WorkerSetup) -> None:
    """Import here, once, what a worker's first optimizer step or vmap call imports
    (torch._dynamo: ~1 s): forked workers then start with it, sharing its pages."""
    if setup.vectorize == "off" and setup.train_fn is not None:
        return
    import importlib

    import torch
    from torch.func import grad_and_value, vmap

    importlib.import_module("torch._dynamo")
    vmap(grad_and_value(lambda p, x: (p * x).sum()))(torch.ones(2, 2), torch.ones(2, 2))


def check_backend(backend: str, on_worker_failure: str, vectorize: str) -> None:
    if backend not in ("inline", "local", "ray"):
        raise ConfigError(f"backend must be 'inline', 'local' or 'ray', got {backend!r}")
    if on_worker_failure not in ("retry", "drop"):
        raise ConfigError(f"on_worker_failure must be 'retry' or 'drop', "
                          f"got {on_worker_failure!r}")
    if vectorize not in ("auto", "on", "off"):
        raise ConfigError(f"vectorize must be 'auto', 'on' or 'off', got {vectorize!r}")
