"""Flower's half of ``bench/sim_vs_flower.py``: the same federation run by ``flwr.simulation``.

This file runs only inside the peer's own virtual environment (``bench/.venvs/flwr``), which
holds flwr, Ray, torch and numpy and never privml. Everything it needs comes from files the
driver wrote: ``task.json`` (settings, parameter names, the clients privml sampled each
round) and ``task.npz`` (the digits arrays, each client's row indices, privml's initial
parameters). The model, local step and evaluation are those of the plain loop, imported from
``privml_side.py``'s plain-torch part (which imports neither privml nor flwr). It writes one
JSON result.

Theory of operation: ``flwr.simulation.run_simulation`` starts the ServerApp in a thread of
this process, registers the virtual nodes, then starts Ray and a pool of actor processes
that run the ClientApp. Ray pickles the ClientApp with every message; functions defined in
``__main__`` would be pickled by value (with a fresh copy of their globals each time), so the
entry point re-imports this file as the module ``flower_side`` and the actors import it by
name, keeping one data cache per actor.

The same clients as privml: Flower's ServerApp sees only opaque, random node ids (the
node-to-partition mapping lives in each node's ``node_config``, on the client side), so the
strategy (:class:`ScheduledFedAvg`) waits for the nodes as ``FedAvg`` does, gives partition k
to the k-th node id in sorted order, addresses each round's messages to the nodes of the
partitions privml sampled, and names the partition in the message's config; the ClientApp
trains that partition with privml's seed for (round, partition). Aggregation and evaluation
are ``FedAvg``'s own (weighted by ``num-examples``; ``evaluate_fn`` on the test set).

Timings (``time.perf_counter``, one monotonic clock for every process of the machine):
``t_call`` is the call to ``run_simulation``; the first round "begins" when the first client
starts training (Ray and the actor pool are up; before that the ServerApp thread is already
waiting for nodes); ``federation_s`` is the whole call (Ray start, actor pool, rounds,
shutdown). Imports are timed separately. Progress goes to stdout as
``@@round <n> <accuracy> <seconds>`` lines the parent parses.
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
from collections.abc import Iterable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from privml_side import (  # noqa: E402
    build_model,
    check_local_training,
    client_seed,
    evaluate,
    initial_state,
    load_task,
    report_round,
    train_local,
)

_T_TORCH = time.perf_counter()

import flwr  # noqa: E402
from flwr.app import (  # noqa: E402
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp  # noqa: E402
from flwr.serverapp import Grid, ServerApp  # noqa: E402
from flwr.serverapp.strategy import FedAvg  # noqa: E402
from flwr.serverapp.strategy.strategy_utils import sample_nodes  # noqa: E402
from flwr.simulation import run_simulation  # noqa: E402

_T_IMPORTED = time.perf_counter()


client_app = ClientApp()


@client_app.train()
def client_train(msg: Message, context: Context) -> Message:
    t_start = time.perf_counter()
    cfg = msg.content["config"]
    task = load_task(str(cfg["task"]))
    pid = int(cfg["partition"])  # privml's sampled client (see ScheduledFedAvg)
    rows = task["parts"][pid]
    x, y = task["x_train"][rows], task["y_train"][rows]
    model = build_model(task)
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    loss = train_local(model, x, y, task,
                       client_seed(int(cfg["seed"]), int(cfg["server-round"]), pid))
    content = RecordDict({
        "arrays": ArrayRecord(model.state_dict()),
        "metrics": MetricRecord({"train_loss": loss, "num-examples": len(rows),
                                 "torch-threads": torch.get_num_threads(),
                                 "partition": pid, "t-start": t_start}),
    })
    return Message(content=content, reply_to=msg)


class ScheduledFedAvg(FedAvg):
    """FedAvg whose rounds train the partitions privml sampled (see the module doc)."""

    def __init__(self, schedule: list[list[int]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.schedule = schedule
        self.trained: list[list[int]] = []  # partitions that answered, per round
        self.first_train_start: float | None = None

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        clients = self.schedule[server_round - 1]
        # FedAvg's own wait for the nodes (it polls once a second); its sample is not used.
        _, nodes = sample_nodes(grid, self.min_available_nodes, len(clients))
        by_partition = sorted(nodes)
        messages = []
        for k in clients:
            cfg = ConfigRecord({**dict(config), "server-round": server_round, "partition": k})
            content = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: cfg})
            messages.append(Message(content=content, message_type=MessageType.TRAIN,
                                    dst_node_id=by_partition[k]))
        return messages

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> Any:
        replies = list(replies)
        metrics = [m.content["metrics"] for m in replies if m.has_content()]
        self.trained.append(sorted(int(m["partition"]) for m in metrics))
        if server_round == 1 and metrics:
            self.first_train_start = min(float(m["t-start"]) for m in metrics)
        return super().aggregate_train(server_round, replies)


# What the ServerApp thread measured; read by main() once run_simulation returns.
_SERVER: dict[str, Any] = {}


def make_server_app(task_json: str) -> ServerApp:
    task = load_task(task_json)
    server_app = ServerApp()

    @server_app.main()
    def server_main(grid: Grid, context: Context) -> None:
        random.seed(task["seed"])  # sample_nodes draws from `random` (unused, but seeded)
        model = build_model(task)
        history: list[dict[str, float]] = []
        t_round = [time.perf_counter()]

        def central_eval(server_round: int, arrays: ArrayRecord) -> MetricRecord:
            model.load_state_dict(arrays.to_torch_state_dict())
            loss, acc = evaluate(model, task["x_test"], task["y_test"])
            now = time.perf_counter()
            if server_round > 0:
                history.append({"round": server_round, "test_loss": loss,
                                "test_accuracy": acc, "seconds": now - t_round[0],
                                "t_end": now})
                report_round(server_round, acc, now - t_round[0])
            t_round[0] = now
            return MetricRecord({"accuracy": acc, "loss": loss})

        strategy = ScheduledFedAvg(task["schedule"], fraction_train=1.0,
                                   fraction_evaluate=0.0, min_train_nodes=task["per_round"],
                                   min_available_nodes=task["clients"])
        _SERVER["strategy"] = strategy
        t0 = time.perf_counter()
        fl_result = strategy.start(grid=grid, initial_arrays=ArrayRecord(initial_state(task)),
                                   num_rounds=task["rounds"],
                                   train_config=ConfigRecord({"task": task_json,
                                                              "seed": task["seed"]}),
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
        "ok": False, "engine": "flower", "versions": versions(),
        "import_s": flwr_done - start,
        "import_parts_s": {"torch_numpy": torch_done - start, "flwr": flwr_done - torch_done},
        "backend": "ray", "client_cpus": args.client_cpus, "ray_cpus": args.ray_cpus,
    }
    backend_config = {
        "client_resources": {"num_cpus": args.client_cpus, "num_gpus": 0.0},
        "init_args": {"num_cpus": args.ray_cpus, "num_gpus": 0, "include_dashboard": False,
                      "logging_level": logging.WARNING},
    }
    result["backend_config"] = backend_config
    result["local_training_max_abs_diff_vs_privml"] = check_local_training(task)
    t_call = time.perf_counter()
    run_simulation(server_app=make_server_app(args.task), client_app=client_app,
                   num_supernodes=task["clients"], backend_config=backend_config)
    result["federation_s"] = time.perf_counter() - t_call
    history = _SERVER.get("history", [])
    strategy: ScheduledFedAvg | None = _SERVER.get("strategy")
    if len(history) != task["rounds"] or strategy is None:
        result["error"] = (f"Flower's simulation returned after {len(history)} of "
                           f"{task['rounds']} rounds (see its log)")
        return result
    t_first = strategy.first_train_start or t_call
    # Round 1 as privml's is timed: from the start of training (Ray and its actors up) to
    # the round's evaluation; what came before it is start-up.
    history[0]["seconds"] = history[0]["t_end"] - t_first
    result.update(
        ok=True, t_call=t_call, t_first_round=t_first, startup_s=t_first - t_call,
        rounds_s=_SERVER["rounds_s"], history=history,
        actor_torch_threads=_SERVER.get("actor_torch_threads"),
        same_clients_as_privml=strategy.trained == [sorted(c) for c in task["schedule"]],
        final_accuracy=history[-1]["test_accuracy"], final_loss=history[-1]["test_loss"])
    return result


def main(argv: list[str] | None = None,
         marks: tuple[float, float, float] = (_T_START, _T_TORCH, _T_IMPORTED)) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True, help="task.json written by sim_vs_flower.py")
    parser.add_argument("--out", required=True, help="where to write the JSON result")
    parser.add_argument("--client-cpus", type=float, default=1.0)
    parser.add_argument("--ray-cpus", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    try:
        result = run(args, marks)
    except BaseException as exc:  # report why, whatever it was (Ray start, flwr_exit, ...)
        result = {"ok": False, "engine": "flower", "error": f"{type(exc).__name__}: {exc}",
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
    import flower_side

    sys.exit(flower_side.main(marks=(_T_START, _T_TORCH, _T_IMPORTED)))
