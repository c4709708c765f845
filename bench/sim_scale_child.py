"""One measurement of ``bench/sim_scale.py``, in a fresh process of its own.

    .venv/bin/python bench/sim_scale_child.py '{"dataset": "fashion-mnist", ...}'

The argument is a JSON object of :class:`~privml.sim.SimConfig` fields. The process loads
the dataset (timed apart), runs ``run_simulation`` on it and writes JSON lines to stdout:
``{"event": "loaded", ...}``, one ``{"event": "round", ...}`` per round and a last
``{"event": "done", ...}`` (or ``{"event": "error", ...}``). Its parent samples the peak PSS
of this process's whole tree (this process and its workers) from outside; this process adds
what only it sees: PSS per process at points of the run, each process's ``VmHWM`` (its exact
peak RSS, an upper bound that counts shared pages once per process), and the examples each
round trained.

The per-round callback only records: its time counts in the next round's ``seconds`` (the
simulator restarts a round's clock before calling it), so the /proc reads wait for the last.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from privml.data import load_dataset
from privml.models import build_torch, zoo
from privml.sim import RoundRecord, SimConfig, run_simulation
from privml.sim import _parallel as parallel_module
from privml.sim._memory import process_tree
from privml.train import evaluate, set_params


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def smaps(pid: int) -> dict[str, int]:
    """PSS (and its anonymous / file / shmem parts) of one process, in bytes."""
    out: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("Pss", "Pss_Anon", "Pss_File", "Pss_Shmem", "Rss"):
            out[key] = 1024 * int(rest.split()[0])
    return out


def vm_hwm(pid: int) -> int | None:
    """The process's peak resident set (``VmHWM``) in bytes: exact, but RSS, not PSS."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return 1024 * int(line.split()[1])
    except OSError:
        return None
    return None


def snapshot() -> dict[str, Any]:
    """PSS of this process and of each descendant (the pool's workers)."""
    me = os.getpid()
    procs = {pid: smaps(pid) for pid in process_tree(me)}
    coordinator = procs.get(me, {})
    workers = [v for pid, v in procs.items() if pid != me]
    return {
        "tree_pss": sum(v.get("Pss", 0) for v in procs.values()),
        "coordinator_pss": coordinator.get("Pss", 0),
        "coordinator_pss_anon": coordinator.get("Pss_Anon", 0),
        "workers_pss": sum(v.get("Pss", 0) for v in workers),
        "workers": len(workers),
        "vm_hwm": {("coordinator" if pid == me else f"worker-{pid}"): vm_hwm(pid)
                   for pid in procs},
    }


class ExampleCounter:
    """Examples trained per round, from the pool's per-client counts.

    A measurement hook, not a change of behaviour: it wraps ``Parallel.round`` (the local
    and Ray pools) and reads what the round returned. The inline backend is counted through
    ``train_fn`` instead (a custom train_fn changes nothing there; on a pool it would turn
    vectorised training off, hence the hook)."""

    def __init__(self) -> None:
        self.current = 0
        self.per_round: list[int] = []
        self.hooked = False
        self.first_round_clients: list[int] | None = None  # which clients round 1 trained

    def hook_pool(self) -> None:
        """Wrap ``Parallel.round`` if it is there (else no counts: the report then says so)."""
        original = getattr(parallel_module.Parallel, "round", None)
        if original is None:
            return
        counter = self

        def counting_round(pool: Any, jobs: Any, *args: Any, **kwargs: Any) -> Any:
            if counter.first_round_clients is None:
                counter.first_round_clients = sorted(int(job[0]) for job in jobs)
            out = original(pool, jobs, *args, **kwargs)
            counter.current += int(sum(getattr(out, "num_examples", ())))
            return out

        parallel_module.Parallel.round = counting_round  # type: ignore[method-assign]
        self.hooked = True

    def train_fn(self) -> Any:
        from privml.train import train_local

        def counting_train(*args: Any) -> Any:
            result = train_local(*args)
            self.current += int(result.num_examples)
            return result

        self.hooked = True
        return counting_train

    def close_round(self) -> None:
        self.per_round.append(self.current)
        self.current = 0


def eval_seconds(cfg: SimConfig, ds: Any, params: Any, repeats: int = 3) -> float:
    """The median time of one test-set evaluation, as each round makes it (one thread)."""
    spec = zoo(cfg.model, input_shape=ds.input_shape, num_classes=ds.num_classes)
    model = build_torch(spec, seed=cfg.seed)
    set_params(model, params)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        evaluate(model, ds.x_test, ds.y_test)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(spec: dict[str, Any]) -> dict[str, Any]:
    torch.set_num_threads(1)  # as run_simulation sets it (threads=1) for its rounds
    cfg = SimConfig(**spec)
    baseline = snapshot()
    t0 = time.perf_counter()
    ds = load_dataset(cfg.dataset, seed=cfg.seed, path=cfg.data_path, label=cfg.label)
    load_s = time.perf_counter() - t0
    loaded = snapshot()
    emit("loaded", load_s=load_s, rows=len(ds.y_train), pss=loaded["tree_pss"])

    counter = ExampleCounter()
    kwargs: dict[str, Any] = {}
    if cfg.backend == "inline":
        kwargs["train_fn"] = counter.train_fn()
    else:
        counter.hook_pool()
    last: dict[str, Any] = {}

    def on_round(r: RoundRecord) -> None:
        counter.close_round()
        if r.round == cfg.rounds:  # the last: nothing is timed after it, so look now
            last.update(snapshot())
        emit("round", round=r.round, seconds=r.seconds, accuracy=r.test_accuracy,
             examples=counter.per_round[-1])

    t1 = time.perf_counter()
    result = run_simulation(cfg, dataset=ds, progress=False, on_round=on_round, **kwargs)
    run_s = time.perf_counter() - t1
    return {
        "config": cfg.to_dict(),
        "rows": len(ds.y_train),
        "test_rows": len(ds.y_test),
        "load_s": load_s,
        "run_s": run_s,
        "startup_s": float(result.extra.get("startup_s", float("nan"))),
        "extra": {k: v for k, v in result.extra.items() if _jsonable(v)},
        "history": [asdict(r) for r in result.history],
        "examples_per_round": counter.per_round if counter.hooked else None,
        "eval_s": eval_seconds(cfg, ds, result.params),
        "model_dim": int(sum(v.size for v in result.params.values())),
        "first_round_clients": counter.first_round_clients,
        "final_accuracy": result.final_accuracy,
        "memory": {"before_data": baseline, "after_data": loaded, "last_round": last},
        "index_bytes": {"order": int(8 * len(ds.y_train)), "offsets": int(8 * (cfg.clients + 1))},
        "python": sys.version.split()[0], "torch": torch.__version__, "numpy": np.__version__,
    }


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except TypeError:
        return False
    return True


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # run_simulation's finally then closes the pool


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _terminate)
    try:
        emit("done", result=main(json.loads(sys.argv[1])))
    except Exception as exc:
        emit("error", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
        sys.exit(1)
