"""Flower's half of ``bench/sim_vs_flower.py``: the same federation run by ``flwr.simulation``.

This file runs only inside the peer's own virtual environment (``bench/.venvs/flwr``), which
holds flwr, Ray, torch and numpy and never privml. Everything it needs comes from files the
privml side wrote: ``task.json`` (settings, parameter names) and ``task.npz`` (the digits
arrays, each client's row indices, privml's initial parameters). It writes one JSON result.

Theory of operation: ``flwr.simulation.run_simulation`` starts Ray, runs the ServerApp in a
thread of this process and the ClientApp in a pool of Ray actor processes. Ray pickles the
ClientApp with every message; functions defined in ``__main__`` would be pickled by value
(with a fresh copy of their globals each time), so the entry point re-imports this file as
the module ``flower_side`` and the actors import it by name, keeping one data cache per actor.

Timings (``time.perf_counter``): ``federation_s`` is the whole ``run_simulation`` call (Ray
start, actor pool, rounds, shutdown) -- what a user waits for; ``rounds_s`` is the strategy's
round loop alone (first round sent to last evaluation done). Imports are timed separately.
Progress goes to stdout as ``@@round <n> <accuracy> <seconds>`` lines the parent parses.
"""

from __future__ import annotations

import time

_T_START = time.perf_counter()

import argparse  # noqa: E402  (the import time of everything below is measured)
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

_T_TORCH = time.perf_counter()

import flwr  # noqa: E402
from flwr.app import (  # noqa: E402
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp  # noqa: E402
from flwr.serverapp import Grid, ServerApp  # noqa: E402
from flwr.serverapp.strategy import FedAvg  # noqa: E402
from flwr.simulation import run_simulation  # noqa: E402

_T_IMPORTED = time.perf_counter()


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


# One cache per process (the driver, and each Ray actor): the task file is read once.
_CACHE: dict[str, dict[str, Any]] = {}


def load_task(task_json: str) -> dict[str, Any]:
    """The task settings plus its arrays, as torch tensors, read once per process."""
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
    result is in the task file): proof that both sides run the same local step."""
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


client_app = ClientApp()


@client_app.train()
def client_train(msg: Message, context: Context) -> Message:
    cfg = msg.content["config"]
    task = load_task(str(cfg["task"]))
    pid = int(context.node_config["partition-id"])
    rows = task["parts"][pid]
    x, y = task["x_train"][rows], task["y_train"][rows]
    model = build_model(task)
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    loss = train_local(model, x, y, task,
                       client_seed(int(cfg["seed"]), int(cfg["server-round"]), pid))
    content = RecordDict({
        "arrays": ArrayRecord(model.state_dict()),
        "metrics": MetricRecord({"train_loss": loss, "num-examples": len(rows),
                                 "torch-threads": torch.get_num_threads()}),
    })
    return Message(content=content, reply_to=msg)


# What the ServerApp thread measured; read by main() once run_simulation returns.
_SERVER: dict[str, Any] = {}


def make_server_app(task_json: str, seed: int) -> ServerApp:
    task = load_task(task_json)
    server_app = ServerApp()

    @server_app.main()
    def server_main(grid: Grid, context: Context) -> None:
        # FedAvg samples with the module-level `random`; seed it so a run can be repeated.
        random.seed(seed)
        model = build_model(task)
        history: list[dict[str, float]] = []
        t_round = [time.perf_counter()]

        def central_eval(server_round: int, arrays: ArrayRecord) -> MetricRecord:
            model.load_state_dict(arrays.to_torch_state_dict())
            loss, acc = evaluate(model, task["x_test"], task["y_test"])
            now = time.perf_counter()
            if server_round > 0:
                history.append({"round": server_round, "test_loss": loss,
                                "test_accuracy": acc, "seconds": now - t_round[0]})
                print(f"@@round {server_round} {acc:.6f} {now - t_round[0]:.6f}", flush=True)
            t_round[0] = now
            return MetricRecord({"accuracy": acc, "loss": loss})

        frac = task["per_round"] / task["clients"]
        strategy = FedAvg(fraction_train=frac, fraction_evaluate=0.0,
                          min_train_nodes=task["per_round"],
                          min_available_nodes=task["clients"])
        t0 = time.perf_counter()
        fl_result = strategy.start(grid=grid, initial_arrays=ArrayRecord(initial_state(task)),
                                   num_rounds=task["rounds"],
                                   train_config=ConfigRecord({"task": task_json, "seed": seed}),
                                   evaluate_fn=central_eval)
        _SERVER["rounds_s"] = time.perf_counter() - t0
        _SERVER["history"] = history
        last = fl_result.train_metrics_clientapp.get(task["rounds"])
        # Weighted mean over the round's clients: 1.0 when every actor trained on one thread.
        _SERVER["actor_torch_threads"] = float(last["torch-threads"]) if last else None

    return server_app


def versions() -> dict[str, str]:
    import ray

    return {"flwr": flwr.__version__, "ray": ray.__version__, "torch": torch.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


def run(args: argparse.Namespace, marks: tuple[float, float, float]) -> dict[str, Any]:
    task = load_task(args.task)
    start, torch_done, flwr_done = marks
    result: dict[str, Any] = {
        "ok": False, "versions": versions(),
        "import_s": {"torch_numpy": torch_done - start, "flwr": flwr_done - torch_done},
        "backend": "ray", "client_cpus": args.client_cpus, "ray_cpus": args.ray_cpus,
    }
    backend_config = {
        "client_resources": {"num_cpus": args.client_cpus, "num_gpus": 0.0},
        "init_args": {"num_cpus": args.ray_cpus, "num_gpus": 0, "include_dashboard": False,
                      "logging_level": logging.WARNING},
    }
    result["backend_config"] = backend_config
    result["local_training_max_abs_diff_vs_privml"] = check_local_training(task)
    t0 = time.perf_counter()
    run_simulation(server_app=make_server_app(args.task, args.seed), client_app=client_app,
                   num_supernodes=task["clients"], backend_config=backend_config)
    result["federation_s"] = time.perf_counter() - t0
    history = _SERVER.get("history", [])
    if len(history) != task["rounds"]:
        result["error"] = (f"Flower's simulation returned after {len(history)} of "
                           f"{task['rounds']} rounds (see its log)")
        return result
    result.update(ok=True, rounds_s=_SERVER["rounds_s"], history=history,
                  actor_torch_threads=_SERVER.get("actor_torch_threads"),
                  final_accuracy=history[-1]["test_accuracy"],
                  final_loss=history[-1]["test_loss"])
    return result


def main(argv: list[str] | None = None,
         marks: tuple[float, float, float] = (_T_START, _T_TORCH, _T_IMPORTED)) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True, help="task.json written by sim_vs_flower.py")
    parser.add_argument("--out", required=True, help="where to write the JSON result")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--client-cpus", type=float, default=1.0)
    parser.add_argument("--ray-cpus", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    try:
        result = run(args, marks)
    except BaseException as exc:  # report why, whatever it was (Ray start, flwr_exit, ...)
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                  "traceback": traceback.format_exc()}
    Path(args.out).write_text(json.dumps(result, indent=2))
    if not result.get("ok"):
        # After a crash of the Simulation Runtime the ServerApp thread may still wait for
        # nodes that will never come, and it would keep this process alive: leave now.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
    return 0


if __name__ == "__main__":
    # Re-enter as the importable module `flower_side` (see the module docstring).
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import flower_side

    sys.exit(flower_side.main(marks=(_T_START, _T_TORCH, _T_IMPORTED)))
