"""The local worker pool: one process per core, one copy of the training data.

Workers are forked from the coordinating process (quick to start, and a model or training
function need not be picklable) and inherit its training arrays and partition (one
concatenated index array and its offsets): pages shared copy-on-write and never written,
so the data exists once whatever the number of workers or clients. Where a process cannot
fork, the arrays are written once to ``.npy`` files that every worker memory-maps
read-only (:class:`SharedArrays`): the page cache then holds the one copy. Each worker
ignores Ctrl-C, which the coordinating process handles by closing the pool. Parent and
worker speak over a pipe in JSON headers and raw float arrays.

A worker that dies (killed, out of memory) shows as a closed pipe: :meth:`ProcessPool.run`
reports it as a failure for that share, and the caller restarts it (:meth:`restart`) and
retries or drops its clients (``sim/_parallel.py``).
"""

from __future__ import annotations

import contextlib
import gc
import json
import multiprocessing as mp
import os
import shutil
import signal
import tempfile
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from privml._exceptions import ConfigError
from privml.sim._worker import Worker, WorkerSetup

__all__ = ["Outcome", "ProcessPool", "SharedArrays", "WorkerFailure", "default_workers"]

_NAMES = ("x", "y", "order", "offsets")
START_TIMEOUT_S = 120.0


def default_workers() -> int:
    """One worker per core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class SharedArrays:
    """The training arrays and partition as read-only memory-mapped ``.npy`` files."""

    def __init__(self, x: npt.NDArray[np.float32], y: npt.NDArray[np.int64],
                 order: npt.NDArray[np.int64], offsets: npt.NDArray[np.int64]) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="privml-sim-"))
        try:
            for name, arr in zip(_NAMES, (x, y, order, offsets), strict=True):
                np.save(self.directory / f"{name}.npy", np.ascontiguousarray(arr))
        except BaseException:
            self.close()
            raise

    def open(self) -> tuple[Any, ...]:
        return tuple(np.load(self.directory / f"{name}.npy", mmap_mode="r")
                     for name in _NAMES)

    def close(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


@dataclass(frozen=True, slots=True)
class WorkerFailure:
    """A share whose worker died before answering."""

    slot: int
    reason: str


Outcome = tuple[dict[str, Any], npt.NDArray[Any]] | WorkerFailure


Arrays = tuple[npt.NDArray[Any], ...]


def _serve(conn: Connection, setup: WorkerSetup, data: SharedArrays | Arrays) -> None:
    """A worker process's whole life: build, announce, then answer rounds until closed."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        arrays = data.open() if isinstance(data, SharedArrays) else data
        worker = Worker(setup, *arrays)
    except Exception as exc:  # reported to the parent, which raises it
        conn.send_bytes(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                                   ).encode())
        return
    conn.send_bytes(json.dumps({"ok": True, "pid": os.getpid(), "dim": worker.dim,
                                "vectorize": worker.choice, "why_not": worker.why_not}
                               ).encode())
    while True:
        try:
            head = json.loads(conn.recv_bytes())
        except EOFError:
            return
        if head.get("op") == "close":
            return
        flat = np.frombuffer(conn.recv_bytes(), dtype=np.float32)
        try:
            reply, arr = worker.run(head, flat)
        except Exception as exc:  # a training error: the parent decides what it means
            reply, arr = ({"ok": False, "error": f"{type(exc).__name__}: {exc}",
                           "kind": type(exc).__name__, "message": str(exc)},
                          np.zeros(0, dtype=np.float64))
        reply["dtype"] = str(arr.dtype)
        conn.send_bytes(json.dumps(reply).encode())
        conn.send_bytes(np.ascontiguousarray(arr).data.cast("B"))


class ProcessPool:
    """``size`` worker processes over one copy of the training arrays: forked workers
    inherit the parent's (copy-on-write pages that nobody writes: shared, never copied);
    where processes cannot fork, the arrays go to a :class:`SharedArrays` file that every
    worker maps."""

    backend = "local"

    def __init__(self, setup: WorkerSetup, arrays: Arrays, size: int,
                 start_method: str | None = None) -> None:
        if size < 1:
            raise ConfigError(f"workers must be >= 1, got {size}")
        method = start_method or ("fork" if "fork" in mp.get_all_start_methods()
                                  else "spawn")
        self._ctx: Any = mp.get_context(method)
        self.shared = SharedArrays(*arrays) if method != "fork" else None
        self.data: SharedArrays | Arrays = self.shared or arrays
        self.setup, self.size = setup, size
        self.procs: list[Any] = [None] * size
        self.conns: list[Connection | None] = [None] * size
        self.info: list[dict[str, Any]] = [{} for _ in range(size)]
        # Objects alive now go to the collector's permanent generation: a forked worker's
        # collections then leave them alone instead of writing to (and so copying) every
        # page of the parent's heap.
        gc.freeze()
        try:
            for slot in range(size):
                self._spawn(slot)
            for slot in range(size):
                self._ready(slot)
        except BaseException:
            self.close()
            raise

    def _spawn(self, slot: int) -> None:
        parent, child = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(target=_serve, args=(child, self.setup, self.data),
                                 name=f"privml-sim-worker-{slot}", daemon=True)
        proc.start()
        child.close()  # only the worker holds its end: its death closes the pipe
        self.procs[slot], self.conns[slot] = proc, parent

    def _ready(self, slot: int) -> None:
        conn = self.conns[slot]
        assert conn is not None  # nosec B101  # narrowing: _start set every slot's pipe
        if not conn.poll(START_TIMEOUT_S):
            raise ConfigError(f"simulation worker {slot} did not start")
        try:
            info = json.loads(conn.recv_bytes())
        except EOFError:
            raise ConfigError(f"simulation worker {slot} died while starting") from None
        if not info.get("ok"):
            raise ConfigError(f"simulation worker {slot} could not start: {info['error']}")
        self.info[slot] = info

    def pids(self) -> list[int]:
        return [int(p.pid) for p in self.procs if p is not None]

    def restart(self, slot: int) -> None:
        self._stop(slot, kill=True)
        self._spawn(slot)
        self._ready(slot)

    def run(self, headers: list[dict[str, Any] | None], flat: npt.NDArray[np.float32]
            ) -> dict[int, Outcome]:
        """Send each non-None header (with ``flat``) to its slot; every answer or failure."""
        payload = np.ascontiguousarray(flat, dtype=np.float32).data.cast("B")
        waiting: dict[Connection, int] = {}
        out: dict[int, Outcome] = {}
        for slot, head in enumerate(headers):
            if head is None:
                continue
            conn = self.conns[slot]
            assert conn is not None  # nosec B101  # narrowing: _start set every slot's pipe
            try:
                conn.send_bytes(json.dumps(head).encode())
                conn.send_bytes(payload)
                waiting[conn] = slot
            except (BrokenPipeError, ConnectionResetError, OSError) as exc:
                out[slot] = WorkerFailure(slot, f"worker unreachable ({exc})")
        while waiting:
            for ready in wait(list(waiting)):
                conn = cast(Connection, ready)
                slot = waiting.pop(conn)
                out[slot] = self._receive(slot, conn)
        return out

    def _receive(self, slot: int, conn: Connection) -> Outcome:
        try:
            reply = json.loads(conn.recv_bytes())
            raw = conn.recv_bytes()
        except (EOFError, ConnectionResetError, OSError):
            proc = self.procs[slot]
            if proc is not None:
                proc.join(5)
            code = proc.exitcode if proc is not None else None
            how = (f"killed by signal {-code}" if code is not None and code < 0
                   else f"exit code {code}")
            return WorkerFailure(slot, f"worker {slot} died ({how})")
        return reply, np.frombuffer(raw, dtype=np.dtype(reply.pop("dtype")))

    def _stop(self, slot: int, *, kill: bool = False) -> None:
        proc, conn = self.procs[slot], self.conns[slot]
        if conn is not None:
            if not kill:
                with contextlib.suppress(OSError):
                    conn.send_bytes(b'{"op": "close"}')
            conn.close()
        if proc is not None:
            proc.join(0 if kill else 2)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
        self.procs[slot], self.conns[slot] = None, None

    def close(self) -> None:
        for slot in range(self.size):
            self._stop(slot)
        gc.unfreeze()
        if self.shared is not None:
            self.shared.close()
