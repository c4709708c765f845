"""The Ray backend: the same workers as Ray actors, so a simulation spreads over a cluster.

``ray.init(address=...)`` joins a running cluster (``--ray-address``); without an address a
local Ray is started with one CPU per worker and shut down at the end. The training arrays
and partition are put once in Ray's object store, which every actor on a node maps without
copying; each round puts the global parameters there once and every actor reads them.

A dead actor (its process killed, its node lost) surfaces as Ray's ``RayActorError``: it is
reported as a failure of that share, and the caller restarts the actor and retries or drops
its clients, exactly as with local processes. Ray moves Python objects with (cloud)pickle
between the processes of the cluster: the cluster is one trust domain, as local worker
processes are; nothing a client or the network sends passes through it.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import numpy as np
import numpy.typing as npt

from privml._exceptions import ConfigError
from privml.sim._pool import Outcome, WorkerFailure
from privml.sim._worker import Worker, WorkerSetup

__all__ = ["RayPool", "ray_available"]


def ray_available() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


class _Actor:
    """A :class:`Worker` inside a Ray actor; errors come back as replies, as from a pipe."""

    def __init__(self, setup: WorkerSetup, x: Any, y: Any, order: Any, offsets: Any) -> None:
        self.worker = Worker(setup, x, y, order, offsets)

    def info(self) -> dict[str, Any]:
        return {"ok": True, "pid": os.getpid(), "dim": self.worker.dim,
                "vectorize": self.worker.choice, "why_not": self.worker.why_not}

    def run(self, head: dict[str, Any], flat: npt.NDArray[np.float32]
            ) -> tuple[dict[str, Any], npt.NDArray[Any]]:
        try:
            return self.worker.run(head, np.asarray(flat, dtype=np.float32))
        except Exception as exc:
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                           "kind": type(exc).__name__, "message": str(exc)}, np.zeros(0)


class RayPool:
    """``size`` actors (one CPU each) over arrays put once in the object store."""

    backend = "ray"

    def __init__(self, setup: WorkerSetup, arrays: tuple[npt.NDArray[Any], ...],
                 size: int | None, address: str | None) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError("--backend ray needs Ray: pip install 'privml[ray]'") from None
        self._ray = ray
        self._owns = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                      "configure_logging": False}
            if address is None:
                # A cluster of this machine alone: advertised on loopback. (Ray's token
                # authentication, on by default since Ray 2.5x, guards its ports; some
                # of them still listen on every interface: see README, Simulation at scale.)
                kwargs.update(num_cpus=size or _cores(), _node_ip_address="127.0.0.1")
            try:
                ray.init(address=address, **kwargs)
            except (ConnectionError, TimeoutError, ValueError, RuntimeError) as exc:
                where = f"join the Ray cluster at {address}" if address else "start Ray"
                raise ConfigError(f"could not {where}: {exc}") from None
            self._owns = True
        cpus = int(ray.cluster_resources().get("CPU", 1))  # type: ignore[no-untyped-call]
        self.size = size or max(1, cpus)
        if self.size < 1:
            raise ConfigError(f"workers must be >= 1, got {self.size}")
        self.setup = setup
        self.refs = [ray.put(a) for a in arrays]
        self._cls = ray.remote(num_cpus=1, max_restarts=0)(_Actor)
        self.actors: list[Any] = [None] * self.size
        self.info: list[dict[str, Any]] = [{} for _ in range(self.size)]
        try:
            for slot in range(self.size):
                self.actors[slot] = self._cls.remote(setup, *self.refs)
            infos = ray.get([a.info.remote() for a in self.actors])
        except ray.exceptions.RayError as exc:
            self.close()
            raise ConfigError(f"Ray workers could not start: {exc}") from None
        self.info = list(infos)

    def pids(self) -> list[int]:
        return [int(i["pid"]) for i in self.info]

    def restart(self, slot: int) -> None:
        ray = self._ray
        old = self.actors[slot]
        if old is not None:
            ray.kill(old, no_restart=True)
        self.actors[slot] = self._cls.remote(self.setup, *self.refs)
        try:
            self.info[slot] = ray.get(self.actors[slot].info.remote())
        except ray.exceptions.RayError as exc:
            raise ConfigError(f"Ray worker {slot} could not restart: {exc}") from None

    def run(self, headers: list[dict[str, Any] | None], flat: npt.NDArray[np.float32]
            ) -> dict[int, Outcome]:
        ray = self._ray
        ref = ray.put(np.ascontiguousarray(flat, dtype=np.float32))
        pending = {slot: self.actors[slot].run.remote(head, ref)
                   for slot, head in enumerate(headers) if head is not None}
        out: dict[int, Outcome] = {}
        for slot, task in pending.items():
            try:
                reply, arr = ray.get(task)
            except ray.exceptions.RayActorError as exc:
                out[slot] = WorkerFailure(slot, f"Ray worker {slot} died "
                                                f"({type(exc).__name__})")
                continue
            out[slot] = (reply, np.asarray(arr))
        return out

    def close(self) -> None:
        ray = self._ray
        for actor in self.actors:
            if actor is not None:
                with contextlib.suppress(Exception):  # already gone: nothing to stop
                    ray.kill(actor, no_restart=True)
        self.actors = []
        self.refs = []
        if self._owns:
            ray.shutdown()


def _cores() -> int:
    from privml.sim._pool import default_workers

    return default_workers()
