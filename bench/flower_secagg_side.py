"""Flower's side of the secure-aggregation benchmark: seconds per SecAgg+ round in flwr.

Run only with the peer's virtual environment (``bench/.venvs/flwr``, made by
``ensure_peer_venv`` in ``bench/sim_vs_flower.py``), which holds flwr, Ray and numpy::

    bench/.venvs/flwr/bin/python bench/flower_secagg_side.py --clients 50 --dim 100000 \\
        --rounds 3 --num-shares 15 --threshold 8 --out bench/results/flower_secagg_n50.json
    bench/.venvs/flwr/bin/python bench/flower_secagg_side.py --clients 50 --dim 100000 \\
        --rounds 3 --no-secagg --out bench/results/flower_secagg_n50_plain.json

What runs: ``flwr.simulation.run_simulation`` with a legacy-API ServerApp, whose main builds
a ``LegacyContext`` around ``flwr.server.strategy.FedAvg`` (fraction_fit=1.0, so all n
clients every round; fraction_evaluate=0.0, no evaluation; initial parameters d zeros, so no
client is asked for them) and runs ``DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(
num_shares=K, reconstruction_threshold=T))`` -- or plain ``DefaultWorkflow()`` with
``--no-secagg`` as Flower's own baseline. The ClientApp is a ``NumPyClient`` behind
``secaggplus_mod`` (no mod with ``--no-secagg``). Its ``fit`` trains nothing: it returns d
float32 values drawn from ``numpy.random.default_rng([seed, round, partition-id])``, uniform
in [-0.5, 0.5), and ``--num-examples`` (the same for every client, so FedAvg's weighted
mean is the plain mean). The quantization settings are the workflow's defaults
(clipping_range 8.0, quantization_range 2**22, modulus_range 2**32, max_weight 1000.0).

num_shares -> neighbours: ``SecAggPlusWorkflow.setup_stage`` puts the sampled nodes on a
shuffled ring and gives each node ``{ring[(idx + offset) % n] for offset in
range(-half_share, half_share + 1)}`` with ``half_share = num_shares >> 1``: the set holds the
node itself (offset 0). A client splits its secrets into num_shares Shamir shares, keeps one
and sends one to each of the other ``2 * (num_shares >> 1)`` nodes: an odd num_shares = K
gives K - 1 neighbours (an even one is bumped to K + 1 with a warning). The threshold T counts
shares among those K, the client's own share included.

What is timed (``time.perf_counter`` in the ServerApp thread): each round's fit workflow,
wrapped by ``TimedFit`` -- from ``configure_fit`` (sampling) through the four SecAgg+ stages
(setup, share keys, collect masked vectors, unmask) and ``aggregate_fit`` to the new global
parameters stored in the context; for ``--no-secagg`` the same span around Flower's
``default_fit_workflow`` (send fit instructions, receive n updates, aggregate). That is
everything in a round here: centralized evaluation is off and federated evaluation samples
nobody. ``startup_s`` is from the ``run_simulation`` call to the end of a warm-up in which the
ServerApp sends every node a legacy ``get_properties`` message and waits for all replies:
the ServerApp thread starts at once, while Ray is still starting, so without it round 1 would
carry Ray's start, the actor pool's creation and each actor's import of the ClientApp.
``until_first_round_s`` adds DefaultWorkflow's node registration and parameter
initialisation; ``shutdown_s`` is from the end of the last round to ``run_simulation``'s
return. The correctness check (aggregate vs the plain mean
of the clients' vectors, recomputed on the server) runs after each round's timer has stopped.

Resources: the machine this was written for has 2 CPUs. Flower's Ray backend makes
``int(ray_cpus / client num_cpus)`` actors, and every (virtual) node's state, SecAgg+'s
included, lives in the simulation engine, not in the actor; so any number of nodes is served
by a small pool. ``--client-cpus 1.0`` with ``--ray-cpus 2`` gives two actor processes (one per
core); a small fraction such as 0.02 would start 100 actor processes, each with its own Python
and flwr, which buys nothing on two cores and costs gigabytes of memory.

The entry point re-imports this file as the module ``flower_secagg_side`` so that Ray actors
import the ClientApp by name instead of unpickling ``__main__`` by value (as
``bench/flower_side.py`` does).
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
import statistics  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import flwr  # noqa: E402
import numpy as np  # noqa: E402
from flwr.app import Context, Message  # noqa: E402
from flwr.client import ClientApp, NumPyClient  # noqa: E402
from flwr.client.mod import secaggplus_mod  # noqa: E402
from flwr.common import (  # noqa: E402
    GetPropertiesIns,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.common.constant import MessageTypeLegacy  # noqa: E402
from flwr.common.secure_aggregation.secaggplus_constants import (  # noqa: E402
    RECORD_KEY_CONFIGS,
)
from flwr.common.secure_aggregation.secaggplus_constants import Key as SecAggKey  # noqa: E402
from flwr.compat.common.recorddict_compat import getpropertiesins_to_recorddict  # noqa: E402
from flwr.server import Grid, LegacyContext, ServerApp, ServerConfig  # noqa: E402
from flwr.server.strategy import FedAvg  # noqa: E402
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow  # noqa: E402
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, Key  # noqa: E402
from flwr.server.workflow.default_workflows import default_fit_workflow  # noqa: E402
from flwr.simulation import run_simulation  # noqa: E402

_T_IMPORTED = time.perf_counter()


def client_vector(seed: int, round_: int, partition_id: int, dim: int) -> np.ndarray:
    """A client's update: ``dim`` float32 values in [-0.5, 0.5), fixed by seed/round/id."""
    rng = np.random.default_rng([seed, round_, partition_id])
    return rng.random(dim, dtype=np.float32) - np.float32(0.5)


def expected_mean(seed: int, round_: int, clients: int, dim: int) -> np.ndarray:
    """The plain mean of all clients' updates in a round (float64)."""
    total = np.zeros(dim, dtype=np.float64)
    for pid in range(clients):
        total += client_vector(seed, round_, pid, dim)
    return total / clients


class UpdateClient(NumPyClient):
    """No training: ``fit`` returns the fixed update for this node and round."""

    def __init__(self, partition_id: int, dim: int, seed: int, num_examples: int) -> None:
        self.partition_id = partition_id
        self.dim = dim
        self.seed = seed
        self.num_examples = num_examples

    def fit(self, parameters: list[np.ndarray],
            config: dict[str, Any]) -> tuple[list[np.ndarray], int, dict[str, Any]]:
        round_ = int(config["server_round"])
        vec = client_vector(self.seed, round_, self.partition_id, self.dim)
        return [vec], self.num_examples, {}


def make_client_app(secagg: bool, dim: int, seed: int, num_examples: int) -> ClientApp:
    def client_fn(context: Context) -> Any:
        pid = int(context.node_config["partition-id"])
        return UpdateClient(pid, dim, seed, num_examples).to_client()

    return ClientApp(client_fn=client_fn, mods=[secaggplus_mod] if secagg else [])


class GridSpy:
    """The ServerApp's Grid, passed through, timing each ``send_and_receive`` of a round and
    counting, in the SecAgg+ 'share keys' replies, how many other nodes each client sent a
    key share to -- its neighbours, as observed rather than as read off the source."""

    def __init__(self, grid: Grid) -> None:
        self._grid = grid
        self.exchange_s: list[float] = []
        self.share_counts: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def send_and_receive(self, messages: Any, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        replies = list(self._grid.send_and_receive(messages, *args, **kwargs))
        self.exchange_s.append(time.perf_counter() - t0)
        for reply in replies:
            if reply.has_content() and RECORD_KEY_CONFIGS in reply.content.config_records:
                cfg = reply.content.config_records[RECORD_KEY_CONFIGS]
                if SecAggKey.DESTINATION_LIST in cfg:
                    self.share_counts.append(len(cfg[SecAggKey.DESTINATION_LIST]))
        return replies


class TimedFit:
    """Wraps a fit workflow: times each call (one round's fit) and checks its aggregate."""

    def __init__(self, inner: Any, strategy: RecordingFedAvg, args: argparse.Namespace,
                 record: dict[str, Any]) -> None:
        self.inner = inner
        self.strategy = strategy
        self.args = args
        self.record = record

    def __call__(self, grid: Grid, context: LegacyContext) -> None:
        round_ = int(context.state.config_records[MAIN_CONFIGS_RECORD][Key.CURRENT_ROUND])
        self.strategy.last_aggregate = None
        spy = GridSpy(grid)
        t0 = time.perf_counter()
        self.record.setdefault("first_round_start", t0)
        self.inner(spy, context)
        t1 = time.perf_counter()
        # Seconds in each message exchange (SecAgg+: setup, share keys, collect masked
        # vectors, unmask; plain: the one fit exchange); the rest is server-side work.
        self.record["exchange_s"].append(spy.exchange_s)
        if spy.share_counts:
            self.record["shares_sent"].append(sorted(set(spy.share_counts)))
        self.record["last_round_end"] = t1
        seconds = t1 - t0
        self.record["round_s"].append(seconds)
        agg = self.strategy.last_aggregate
        if agg is None:
            err = float("nan")
            self.record["errors"].append(f"round {round_}: no aggregate")
        else:
            want = expected_mean(self.args.seed, round_, self.args.clients, self.args.dim)
            err = float(np.abs(agg[0].astype(np.float64) - want).max())
        self.record["max_abs_error"].append(err)
        print(f"@@round {round_} {seconds:.3f}s max_abs_error={err:.3g}", flush=True)


class RecordingFedAvg(FedAvg):
    """FedAvg that keeps the last aggregate (as arrays) for the check after the timer."""

    last_aggregate: list[np.ndarray] | None = None

    def aggregate_fit(self, server_round: int, results: Any, failures: Any) -> Any:
        parameters, metrics = super().aggregate_fit(server_round, results, failures)
        if parameters is not None:
            self.last_aggregate = parameters_to_ndarrays(parameters)
        if failures:
            print(f"@@failures round {server_round}: {len(failures)}", flush=True)
        return parameters, metrics


def warm_up(grid: Grid, clients: int) -> None:
    """Ask every node for its properties once and wait for all replies.

    The ServerApp thread starts while Ray is still starting; this makes the first round start
    only once Ray is up, its actors exist and each has loaded the ClientApp. Not a TRAIN
    message, so ``secaggplus_mod`` passes it through untouched.
    """
    node_ids: list[int] = []
    while len(node_ids) < clients:
        node_ids = list(grid.get_node_ids())
        if len(node_ids) < clients:
            time.sleep(0.1)
    content = getpropertiesins_to_recorddict(GetPropertiesIns(config={}))
    replies = grid.send_and_receive([
        Message(content=content, dst_node_id=nid,
                message_type=MessageTypeLegacy.GET_PROPERTIES, group_id="warm-up")
        for nid in node_ids])
    bad = [r for r in replies if r.has_error()]
    if len(replies) != len(node_ids) or bad:
        raise RuntimeError(f"warm-up: {len(replies)} replies of {len(node_ids)}, "
                           f"{len(bad)} errors ({bad[0].error if bad else ''})")


# What the ServerApp thread measured; read by run() once run_simulation returns.
_SERVER: dict[str, Any] = {"round_s": [], "max_abs_error": [], "errors": [], "exchange_s": [],
                           "shares_sent": []}


def make_server_app(args: argparse.Namespace) -> ServerApp:
    server_app = ServerApp()

    @server_app.main()
    def server_main(grid: Grid, context: Context) -> None:
        warm_up(grid, args.clients)
        _SERVER["warm_up_done"] = time.perf_counter()
        random.seed(args.seed)  # SecAgg+ shuffles the ring with the module-level `random`
        strategy = RecordingFedAvg(
            fraction_fit=1.0, fraction_evaluate=0.0,
            min_fit_clients=args.clients, min_evaluate_clients=0,
            min_available_clients=args.clients,
            initial_parameters=ndarrays_to_parameters([np.zeros(args.dim, np.float32)]),
            on_fit_config_fn=lambda r: {"server_round": r},
        )
        legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=args.rounds),
                               strategy=strategy)
        if args.no_secagg:
            inner: Any = default_fit_workflow
        else:
            inner = SecAggPlusWorkflow(num_shares=args.num_shares,
                                       reconstruction_threshold=args.threshold)
        DefaultWorkflow(fit_workflow=TimedFit(inner, strategy, args, _SERVER))(grid, legacy)

    return server_app


def versions() -> dict[str, str]:
    import ray

    return {"flwr": flwr.__version__, "ray": ray.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def run(args: argparse.Namespace, marks: tuple[float, float]) -> dict[str, Any]:
    secagg = not args.no_secagg
    # The values used: the defaults of SecAggPlusWorkflow's signature, read off an instance.
    defaults = SecAggPlusWorkflow(num_shares=3, reconstruction_threshold=2)
    quant = {k: getattr(defaults, k)
             for k in ("clipping_range", "quantization_range", "modulus_range", "max_weight")}
    neighbours = None
    if secagg:
        k = args.num_shares
        if isinstance(k, int) and k > 2:
            shares = k + 1 if (k < args.clients and k % 2 == 0) else k
            neighbours = min(2 * (shares >> 1), args.clients - 1)
    result: dict[str, Any] = {
        "ok": False, "versions": versions(), "flwr": flwr.__version__,
        "import_s": marks[1] - marks[0],
        "secagg": secagg, "n": args.clients, "d": args.dim, "rounds": args.rounds,
        "num_shares": args.num_shares if secagg else None,
        "neighbours": neighbours,
        "neighbours_rule": ("setup_stage: neighbours of a node = {ring[(idx + o) % n] for o in "
                            "range(-(num_shares >> 1), (num_shares >> 1) + 1)}, which includes "
                            "the node itself (o = 0); so neighbours other than itself = "
                            "2 * (num_shares >> 1) = num_shares - 1 for odd num_shares"),
        "threshold": args.threshold if secagg else None,
        "quantization": quant if secagg else None,
        "num_examples": args.num_examples, "seed": args.seed,
        "client_cpus": args.client_cpus, "ray_cpus": args.ray_cpus,
    }
    backend_config = {
        "client_resources": {"num_cpus": args.client_cpus, "num_gpus": 0.0},
        "init_args": {"num_cpus": args.ray_cpus, "num_gpus": 0, "include_dashboard": False,
                      "logging_level": logging.WARNING},
    }
    result["backend_config"] = backend_config
    t0 = time.perf_counter()
    run_simulation(server_app=make_server_app(args),
                   client_app=make_client_app(secagg, args.dim, args.seed, args.num_examples),
                   num_supernodes=args.clients, backend_config=backend_config)
    t_end = time.perf_counter()
    rounds = _SERVER["round_s"]
    result["federation_s"] = t_end - t0
    if "first_round_start" in _SERVER:
        result["startup_s"] = _SERVER["warm_up_done"] - t0
        result["until_first_round_s"] = _SERVER["first_round_start"] - t0
        result["shutdown_s"] = t_end - _SERVER["last_round_end"]
    result["per_round_s"] = rounds
    result["max_abs_error_per_round"] = _SERVER["max_abs_error"]
    result["exchange_s_per_round"] = _SERVER["exchange_s"]
    # Distinct per-client counts of key shares sent to other nodes in each round.
    result["observed_neighbours_per_round"] = _SERVER["shares_sent"]
    if secagg and any(seen != [neighbours] for seen in _SERVER["shares_sent"]):
        _SERVER["errors"].append(f"clients sent shares to {_SERVER['shares_sent']} other "
                                 f"nodes, not the {neighbours} neighbours derived")
    if len(rounds) != args.rounds or _SERVER["errors"]:
        result["error"] = (f"{len(rounds)} of {args.rounds} rounds timed; "
                           f"{'; '.join(_SERVER['errors']) or 'see the log'}")
        return result
    result["median_s_per_round"] = statistics.median(rounds)
    result["max_abs_error"] = max(_SERVER["max_abs_error"])
    result["ok"] = result["max_abs_error"] < args.tolerance
    if not result["ok"]:
        result["error"] = f"aggregate off the plain mean by {result['max_abs_error']:.3g}"
    return result


def main(argv: list[str] | None = None,
         marks: tuple[float, float] = (_T_START, _T_IMPORTED)) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, required=True, help="n, all sampled per round")
    parser.add_argument("--dim", type=int, required=True, help="d, float32 values per update")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--num-shares", type=int, default=15,
                        help="SecAggPlusWorkflow num_shares (odd K: K - 1 neighbours)")
    parser.add_argument("--threshold", type=int, default=8,
                        help="SecAggPlusWorkflow reconstruction_threshold")
    parser.add_argument("--no-secagg", action="store_true",
                        help="plain DefaultWorkflow (FedAvg without SecAgg+)")
    parser.add_argument("--num-examples", type=int, default=100,
                        help="each client's weight (same for all; SecAgg+ max_weight 1000)")
    parser.add_argument("--tolerance", type=float, default=1e-3,
                        help="largest |aggregate - mean| accepted")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--client-cpus", type=float, default=1.0)
    parser.add_argument("--ray-cpus", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", required=True, help="where to write the JSON result")
    args = parser.parse_args(argv)
    try:
        result = run(args, marks)
    except BaseException as exc:  # report why, whatever it was (Ray start, flwr_exit, ...)
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                  "traceback": traceback.format_exc(), "per_round_s": _SERVER["round_s"]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    summary = {k: result.get(k) for k in ("ok", "n", "d", "num_shares", "neighbours",
                                          "threshold", "per_round_s", "median_s_per_round",
                                          "startup_s", "max_abs_error", "error")}
    print("@@result " + json.dumps(summary), flush=True)
    if not result.get("ok"):
        # After a crash of the Simulation Runtime the ServerApp thread may still wait for
        # nodes that will never come, and it would keep this process alive: leave now.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
    return 0


if __name__ == "__main__":
    # Re-enter as the importable module `flower_secagg_side` (see the module docstring).
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import flower_secagg_side

    sys.exit(flower_secagg_side.main(marks=(_T_START, _T_IMPORTED)))
