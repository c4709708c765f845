"""privml's sides of ``bench/sim_vs_flower.py``, and the plain-loop floor: one federation in a
fresh process, so that every side pays its one-time costs (first torch use) in its timing.

    privml_side.py --engine inline|local|ray --task task.json --out result.json [--workers 2]
    privml_side.py --engine plain --task task.json --out result.json

``inline``, ``local`` and ``ray`` run ``privml.sim.run_simulation`` with that backend (it loads
the digits itself, partitions them, builds the model, starts its pool, runs every round).
``plain`` is the floor no framework can beat by much: a bare Python loop over the same
sampled clients (the schedule privml drew, written to ``task.json`` by the driver), the same
rows, initial parameters and local step, FedAvg of the returned weights, central evaluation
after every round; one process, one torch thread, no privml.

The plain torch part (the MLP, the local step, evaluation, reading the task file) comes first
and imports neither privml nor flwr: ``flower_side.py`` imports it from here, so Flower's
client and the floor run literally the same code, and both are checked against privml's
``train_local`` on one client (``check_local_training``).

Timestamps are ``time.perf_counter()`` (CLOCK_MONOTONIC on Linux, one clock for every process
of the machine), so the driver can place this process's first round against its own spawn
time. Progress goes to stdout as ``@@round <n> <accuracy> <seconds>`` lines.
"""

from __future__ import annotations

import time

_T_START = time.perf_counter()

import argparse  # noqa: E402  (the import time of everything below is measured)
import importlib  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

# --------------------------------------------------------------------------- plain torch task


class MLP(nn.Module):
    """privml's zoo ``mlp`` as a plain torch module: Flatten -> Dense -> ReLU -> Dense.

    Inputs arrive channels-last (N, H, W, C), so a row-major flatten is exactly privml's
    (H, W, C) Flatten order.
    """

    def __init__(self, n_in: int, hidden: int, n_out: int) -> None:
        super().__init__()
        # privml's layer names, so that state-dict keys match one for one.
        self.dense1 = nn.Linear(n_in, hidden)
        self.dense2 = nn.Linear(hidden, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense2(torch.relu(self.dense1(x.flatten(1))))


# One cache per process (a side, each of Flower's Ray actors): the task file is read once.
_CACHE: dict[str, dict[str, Any]] = {}


def load_task(task_json: str) -> dict[str, Any]:
    """The task settings plus its arrays, read once per process."""
    if task_json not in _CACHE:
        meta = json.loads(Path(task_json).read_text())
        with np.load(meta["npz"]) as z:
            arrays = {k: z[k] for k in z.files}
        task = dict(meta)
        for key in ("x_train", "y_train"):
            task[key] = arrays[key]
        task["x_test"] = torch.from_numpy(arrays["x_test"])
        task["y_test"] = torch.from_numpy(arrays["y_test"])
        task["parts"] = [arrays[f"part_{k}"] for k in range(meta["clients"])]
        n_params = len(meta["param_names"])
        task["init"] = [arrays[f"param_{k}"] for k in range(n_params)]
        task["ref"] = [arrays[f"ref_{k}"] for k in range(n_params)]
        _CACHE[task_json] = task
    return _CACHE[task_json]


def build_model(task: dict[str, Any]) -> MLP:
    n_in = int(np.prod(task["input_shape"]))
    return MLP(n_in, task["hidden"], task["num_classes"])


def initial_state(task: dict[str, Any]) -> dict[str, torch.Tensor]:
    """privml's initial parameters, checked name for name and shape for shape."""
    want = {k: tuple(v.shape) for k, v in build_model(task).state_dict().items()}
    got = {n: tuple(a.shape) for n, a in zip(task["param_names"], task["init"], strict=True)}
    if got != want:
        raise SystemExit(f"privml's parameters {got} do not fit this MLP {want}")
    return {n: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
            for n, a in zip(task["param_names"], task["init"], strict=True)}


def client_seed(seed: int, round_: int, partition_id: int) -> int:
    """privml's per-client training seed (``sim/_engine.py``'s ``_client_seed``)."""
    return int(np.random.SeedSequence([seed, round_, partition_id]).generate_state(1)[0])


def train_local(model: nn.Module, x: np.ndarray, y: np.ndarray, task: dict[str, Any],
                seed: int) -> float:
    """privml's ``train_local`` step for step: ``epochs`` passes in an order drawn from
    ``numpy.random.default_rng(seed)``, minibatch SGD with momentum on the mean cross-entropy;
    returns the mean loss over all steps."""
    opt = torch.optim.SGD(model.parameters(), lr=task["lr"], momentum=task["momentum"])
    order_rng = np.random.default_rng(seed)
    n, bs = len(y), task["batch_size"]
    total, steps = 0.0, 0
    model.train()
    for _ in range(task["epochs"]):
        perm = order_rng.permutation(n)
        for start in range(0, n, bs):
            rows = perm[start:start + bs]
            loss = nn.functional.cross_entropy(model(torch.from_numpy(x[rows])),
                                               torch.from_numpy(y[rows]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach())
            steps += 1
    return total / steps


def check_local_training(task: dict[str, Any]) -> float:
    """Max abs difference between this train_local and privml's on one client (privml's
    result is in the task file): proof that the sides run the same local step."""
    ref = task["reference"]
    model = build_model(task)
    model.load_state_dict(initial_state(task))
    rows = task["parts"][ref["client"]]
    train_local(model, task["x_train"][rows], task["y_train"][rows], task, ref["seed"])
    mine = model.state_dict()
    return max(float(np.abs(mine[n].numpy() - r).max())
               for n, r in zip(task["param_names"], task["ref"], strict=True))


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    model.eval()
    logits = model(x)
    loss = float(nn.functional.cross_entropy(logits, y))
    acc = float((logits.argmax(1) == y).float().mean())
    return loss, acc


def report_round(round_: int, acc: float, seconds: float) -> None:
    print(f"@@round {round_} {acc:.6f} {seconds:.6f}", flush=True)


# --------------------------------------------------------------------------- the floor


def run_plain(task_json: str) -> dict[str, Any]:
    """The plain loop: privml's schedule, FedAvg of weights, evaluation every round."""
    torch.set_num_threads(1)  # small batches: one thread, as privml's engine uses
    t_call = time.perf_counter()
    task = load_task(task_json)
    model = build_model(task)
    state = initial_state(task)
    x, y, parts = task["x_train"], task["y_train"], task["parts"]
    history: list[dict[str, float]] = []
    t_first = t_round = time.perf_counter()
    for round_, clients in enumerate(task["schedule"], start=1):
        total = {n: torch.zeros_like(t) for n, t in state.items()}
        weight = 0
        for k in clients:
            model.load_state_dict(state)
            rows = parts[k]
            train_local(model, x[rows], y[rows], task, client_seed(task["seed"], round_, k))
            with torch.no_grad():
                for n, t in model.state_dict().items():
                    total[n].add_(t, alpha=len(rows))
            weight += len(rows)
        state = {n: t / weight for n, t in total.items()}
        model.load_state_dict(state)
        loss, acc = evaluate(model, task["x_test"], task["y_test"])
        now = time.perf_counter()
        history.append({"round": round_, "test_loss": loss, "test_accuracy": acc,
                        "seconds": now - t_round})
        report_round(round_, acc, now - t_round)
        t_round = now
    return {"ok": True, "t_call": t_call, "t_first_round": t_first,
            "startup_s": t_first - t_call, "federation_s": time.perf_counter() - t_call,
            "torch_threads": torch.get_num_threads(), "history": history,
            "local_training_max_abs_diff_vs_privml": check_local_training(task)}


# --------------------------------------------------------------------------- privml


# Imports privml makes lazily on first use (scikit-learn for the digits split, torch._dynamo
# on the first optimizer step): made before the federation's clock starts, on every side of
# this file, so that the federation's timing leaves imports out. The modules a run still
# imports are recorded next to its timing.
PRE_IMPORTED = ("sklearn.datasets", "sklearn.model_selection", "torch._dynamo")


def run_privml(task_json: str, engine: str, workers: int) -> dict[str, Any]:
    from dataclasses import asdict

    from privml.sim import RoundRecord, SimConfig, run_simulation

    meta = json.loads(Path(task_json).read_text())
    pool = {} if engine == "inline" else {"workers": workers}
    cfg = SimConfig(**meta["sim_config"], backend=engine, **pool)

    def on_round(r: RoundRecord) -> None:
        report_round(r.round, r.test_accuracy, r.seconds)

    before = set(sys.modules)
    t_call = time.perf_counter()
    result = run_simulation(cfg, progress=False, on_round=on_round)
    federation_s = time.perf_counter() - t_call
    late: dict[str, int] = {}
    for name in set(sys.modules) - before:
        late[name.split(".")[0]] = late.get(name.split(".")[0], 0) + 1
    startup_s = float(result.extra["startup_s"])
    out: dict[str, Any] = {
        "ok": True, "t_call": t_call, "t_first_round": t_call + startup_s,
        "startup_s": startup_s, "federation_s": federation_s,
        "modules_imported_during_federation": dict(sorted(late.items())),
        "extra": result.extra, "torch_threads": torch.get_num_threads(),
        "history": [asdict(r) for r in result.history]}
    if len(result.history) != cfg.rounds:
        # Timed and reported all the same, but said loudly: the figure is then not like
        # for like (the run ended without aggregating or evaluating the missing rounds).
        out["warning"] = (f"privml's simulator ({engine}) recorded {len(result.history)} of "
                          f"{cfg.rounds} rounds")
    return out


# --------------------------------------------------------------------------- main

# Packages that weigh on a process's memory and start-up, recorded when loaded by the end.
HEAVY = ("torch._dynamo", "sklearn", "scipy", "pandas", "matplotlib", "ray", "sympy")


def heavy_modules() -> list[str]:
    return [name for name in HEAVY if name in sys.modules]



def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", required=True, choices=("inline", "local", "ray", "plain"))
    parser.add_argument("--task", required=True, help="task.json written by sim_vs_flower.py")
    parser.add_argument("--out", required=True, help="where to write the JSON result")
    parser.add_argument("--workers", type=int, default=2, help="pool size (local, ray)")
    args = parser.parse_args()
    try:
        importlib.import_module("torch._dynamo")
        if args.engine != "plain":
            for name in ("privml.sim", *PRE_IMPORTED):
                importlib.import_module(name)
        if args.engine == "ray":
            importlib.import_module("ray")  # lazy in privml; flower_side imports it first too
        import_s = time.perf_counter() - _T_START
        if args.engine == "plain":
            result = run_plain(args.task)
        else:
            result = run_privml(args.task, args.engine, args.workers)
        result.update(engine=args.engine, import_s=import_s, heavy_modules=heavy_modules())
        if result.get("history"):
            result["final_accuracy"] = result["history"][-1]["test_accuracy"]
            result["final_loss"] = result["history"][-1]["test_loss"]
    except Exception as exc:
        result = {"ok": False, "engine": args.engine, "error": f"{type(exc).__name__}: {exc}",
                  "traceback": traceback.format_exc()}
    Path(args.out).write_text(json.dumps(result, indent=2, default=str))
    return 0 if result.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
