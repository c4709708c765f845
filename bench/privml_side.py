"""privml's half of ``bench/sim_vs_flower.py``: one federation of the simulator, in a fresh
process, so that both sides pay the same one-time costs (first torch use) inside the timing.

Imports are timed apart from the federation: the federation is ``run_simulation`` from call
to return (it loads the digits itself, builds the model, runs every round). Progress goes to
stdout as ``@@round <n> <accuracy> <seconds>`` lines, as ``flower_side.py`` writes them.
"""

from __future__ import annotations

import time

_T_START = time.perf_counter()

import argparse  # noqa: E402  (the import time of everything below is measured)
import importlib  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402
from dataclasses import asdict  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from privml.sim import RoundRecord, SimConfig, run_simulation  # noqa: E402
from privml.train import train_local  # noqa: E402

# Imports privml makes lazily on first use (scikit-learn for the digits split, torch._dynamo
# on the first optimizer): done here so that the federation's timing leaves imports out, as
# the brief asks. The modules a run still imports are recorded next to its timing.
PRE_IMPORTED = ("sklearn.datasets", "sklearn.model_selection", "torch._dynamo")
for _name in PRE_IMPORTED:
    importlib.import_module(_name)

_T_IMPORTED = time.perf_counter()


def run(args: argparse.Namespace) -> dict[str, Any]:
    meta = json.loads(Path(args.task).read_text())
    cfg = SimConfig(rounds=meta["rounds"], seed=meta["seed"])
    seen: set[tuple[int, int]] = set()
    kwargs: dict[str, Any] = {}
    if args.check_rows:
        # privml partitions inside the simulator; check it trained on the rows Flower gets.
        def recording_train(model: Any, client: Any, *rest: Any) -> Any:
            seen.add((len(client.indices), int(client.indices[0]) if len(client) else -1))
            return train_local(model, client, *rest)

        kwargs["train_fn"] = recording_train

    def on_round(r: RoundRecord) -> None:
        print(f"@@round {r.round} {r.test_accuracy:.6f} {r.seconds:.6f}", flush=True)

    before = set(sys.modules)
    t0 = time.perf_counter()
    result = run_simulation(cfg, progress=False, on_round=on_round, **kwargs)
    federation_s = time.perf_counter() - t0
    late: dict[str, int] = {}
    for name in set(sys.modules) - before:
        late[name.split(".")[0]] = late.get(name.split(".")[0], 0) + 1
    out: dict[str, Any] = {
        "ok": True, "import_s": _T_IMPORTED - _T_START, "pre_imported": list(PRE_IMPORTED),
        "modules_imported_during_federation": dict(sorted(late.items())),
        "federation_s": federation_s,
        "seconds_total": result.seconds_total, "torch_threads": torch.get_num_threads(),
        "rounds_recorded": len(result.history),
        "rounds_s": sum(r.seconds for r in result.history),
        "final_accuracy": result.final_accuracy, "final_loss": result.final_loss,
        "history": [asdict(r) for r in result.history]}
    if args.check_rows:
        with np.load(meta["npz"]) as z:
            handed = {(len(ix), int(ix[0]) if len(ix) else -1)
                      for ix in (z[f"part_{k}"] for k in range(meta["clients"]))}
        out["same_rows_as_flower"] = seen <= handed
        if not seen <= handed:
            out.update(ok=False, error="privml's simulator trained on other rows than those "
                                       "written for Flower (see partition_rng())")
    if len(result.history) != cfg.rounds:
        # Timed and reported all the same, but said loudly: the figure is then not like
        # for like (the run ended without aggregating or evaluating the missing rounds).
        out["warning"] = (f"privml's simulator recorded {len(result.history)} of "
                          f"{cfg.rounds} rounds")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True, help="task.json written by sim_vs_flower.py")
    parser.add_argument("--out", required=True, help="where to write the JSON result")
    parser.add_argument("--check-rows", action="store_true")
    args = parser.parse_args()
    try:
        result = run(args)
    except Exception as exc:
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                  "traceback": traceback.format_exc()}
    Path(args.out).write_text(json.dumps(result, indent=2))
    return 0 if result.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
