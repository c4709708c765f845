"""Poisoning attacks against each aggregation strategy: final accuracy and backdoor success.

    .venv/bin/python bench/robustness.py            # the recorded table (~3 min on 2 cores)
    .venv/bin/python bench/robustness.py --quick    # 1 seed, 10 rounds (-> robustness.quick.json)
    .venv/bin/python bench/robustness.py --report-only

Digits, zoo ``mlp``, 50 clients split by a Dirichlet(0.5) label draw, 20 sampled a round,
30 rounds of 5 local epochs (the demo's local training); 20 % of the clients (10) attack,
drawn once per run, so a round samples 4 of them on average and sometimes more. Attacks
(``privml.sim.attacks``): ``sign_flip`` (-4x the honest update), ``scale`` (10x),
``label_flip`` (y -> 9 - y on all their data), ``backdoor`` (a 3x3 trigger in the
bottom-right corner stamped on half their examples, relabelled 0), ``backdoor_x10`` (the
same, with the update boosted 10x: model replacement), and none. Strategies: FedAvg,
coordinate-wise median, trimmed mean (20 % a side), Multi-Krum (f = 20 % of the round), norm
bounding (each update clipped to the round's median norm), and Krum (one update kept).
Every cell is the mean over ``--seeds`` seeds (partition, attackers, sampling and training
all follow the seed); the backdoor success rate is the share of non-0 test digits the
trigger turns into 0, measured for every cell (where nobody plants it, it is the clean
model's base rate).
Results: ``bench/results/robustness.json``, ``robustness.png`` and a section of
``BENCHMARKS.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from rich.progress import (  # noqa: E402
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from _report import write_section  # noqa: E402

RESULTS = HERE / "results"
COMMAND = ".venv/bin/python bench/robustness.py"
ATTACKS = ("none", "sign_flip", "scale", "label_flip", "backdoor", "backdoor_x10")
STRATEGIES = ("fedavg", "median", "trimmed_mean", "multikrum", "normbound", "krum")
START, END = "<!-- robustness:start -->", "<!-- robustness:end -->"
AIM_POINTS, AIM_BACKDOOR = 0.03, 0.10


def one(job: tuple[str, str, int, int]) -> dict[str, Any]:
    """One simulation (in a worker process): its final accuracy and backdoor success."""
    import torch

    from privml.data import load_dataset
    from privml.models import ModelSpec, build_torch
    from privml.sim import SimConfig, run_simulation
    from privml.sim.attacks import backdoor_success
    from privml.train import set_params

    attack, strategy, seed, rounds = job
    torch.set_num_threads(1)
    kind, _, boost = attack.partition("_x")  # backdoor_x10: the backdoor, boosted 10x
    cfg = SimConfig(dataset="digits", model="mlp", clients=50, per_round=20, rounds=rounds,
                    alpha=0.5, strategy=strategy, seed=seed, attack=kind, attackers=0.2,
                    attack_scale=float(boost) if boost else None)
    ds = load_dataset("digits", seed=seed)
    result = run_simulation(cfg, dataset=ds)
    assert result.model_spec_json is not None
    model = build_torch(ModelSpec.from_json(result.model_spec_json), seed=seed)
    set_params(model, result.params)
    return {"attack": attack, "strategy": strategy, "seed": seed,
            "accuracy": result.final_accuracy,
            "backdoor_success": backdoor_success(model, ds, 0),
            "attackers": (result.extra.get("attack") or {}).get("attackers", 0),
            "seconds": result.seconds_total}


def run(seeds: int, rounds: int) -> dict[str, Any]:
    jobs = [(a, s, seed, rounds) for seed in range(seeds) for a in ATTACKS for s in STRATEGIES]
    rows: list[dict[str, Any]] = []
    with Progress(TextColumn("[bold]runs"), MofNCompleteColumn(), BarColumn(),
                  TimeElapsedColumn()) as bar, \
            mp.get_context("fork").Pool(min(2, os.cpu_count() or 1)) as pool:
        task = bar.add_task("runs", total=len(jobs))
        for row in pool.imap_unordered(one, jobs):
            rows.append(row)
            bar.update(task, advance=1)
    return {"date": dt.date.today().isoformat(), "machine": f"{platform.machine()}, "
            f"{os.cpu_count()} cores", "seeds": seeds, "rounds": rounds,
            "setting": {"dataset": "digits", "model": "mlp", "clients": 50, "per_round": 20,
                        "alpha": 0.5, "epochs": 5, "attackers": 0.2},
            "runs": sorted(rows, key=lambda r: (r["attack"], r["strategy"], r["seed"]))}


def cells(data: dict[str, Any]) -> dict[tuple[str, str], dict[str, float]]:
    out: dict[tuple[str, str], dict[str, float]] = {}
    for a in ATTACKS:
        for s in STRATEGIES:
            runs = [r for r in data["runs"] if r["attack"] == a and r["strategy"] == s]
            acc = [r["accuracy"] for r in runs]
            out[a, s] = {"accuracy": statistics.fmean(acc), "min": min(acc), "max": max(acc),
                         "backdoor": statistics.fmean(r["backdoor_success"] for r in runs)}
    return out


def render(data: dict[str, Any]) -> str:
    c = cells(data)
    base = c["none", "fedavg"]["accuracy"]
    st = data["setting"]
    lines = [START, "## Robust aggregation under poisoning attacks", "",
             f"`{COMMAND}` — {data['date']}, {data['machine']}. {st['dataset']}, "
             f"{st['model']}, {st['clients']} clients (Dirichlet {st['alpha']}), "
             f"{st['per_round']} a round, {data['rounds']} rounds of {st['epochs']} local "
             f"epochs; {st['attackers']:.0%} of the clients attack. Each cell: final test "
             f"accuracy / backdoor success rate, the mean of {data['seeds']} seeds. The "
             "backdoor rate is the share of non-0 test digits that the trigger turns into 0; "
             "in rows without the backdoor attack it is the base rate of the model.", "",
             "| attack | " + " | ".join(STRATEGIES) + " |",
             "|---|" + "---:|" * len(STRATEGIES)]
    for a in ATTACKS:
        lines.append(f"| {a} | " + " | ".join(
            f"{c[a, s]['accuracy']:.3f} / {c[a, s]['backdoor']:.1%}" for s in STRATEGIES)
            + " |")
    lines += ["", f"Aim: with a robust strategy, accuracy within {AIM_POINTS * 100:.0f} points "
              f"of the no-attack FedAvg baseline ({base:.3f}) under every attack, and "
              f"backdoor success below {AIM_BACKDOOR:.0%}.", "",
              "| strategy | worst drop vs baseline (attack) | backdoor success (worse of the two) "
              "| aim |",
              "|---|---:|---:|---|"]
    for s in STRATEGIES[1:]:
        drop, worst = max((base - c[a, s]["accuracy"], a) for a in ATTACKS)
        bd = max(c["backdoor", s]["backdoor"], c["backdoor_x10", s]["backdoor"])
        ok = drop <= AIM_POINTS and bd < AIM_BACKDOOR
        lines.append(f"| {s} | {drop * 100:+.1f} points ({worst}) | {bd:.1%} | "
                     f"{'met' if ok else 'not met'} |")
    lines += ["", "Per-seed figures: `bench/results/robustness.json`; the plot: "
              "`bench/results/robustness.png`.", END]
    return "\n".join(lines)


def plot(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    c = cells(data)
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 4.4), constrained_layout=True)
    for ax, key, title, cmap in ((axes[0], "accuracy", "final accuracy", "viridis"),
                                 (axes[1], "backdoor", "backdoor success", "magma_r")):
        grid = np.array([[c[a, s][key] for s in STRATEGIES] for a in ATTACKS])
        ax.imshow(grid, cmap=cmap, vmin=0, vmax=1)
        ax.set_xticks(range(len(STRATEGIES)), STRATEGIES, rotation=20)
        ax.set_yticks(range(len(ATTACKS)), ATTACKS)
        ax.set_title(title)
        for i in range(len(ATTACKS)):
            for j in range(len(STRATEGIES)):
                ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center",
                        color="white" if (grid[i, j] < 0.5) == (key == "accuracy") else "black")
    fig.suptitle("digits, 50 clients, 20% attackers")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--quick", action="store_true", help="1 seed, 10 rounds; not recorded")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    stem = "robustness.quick" if args.quick else "robustness"
    path = RESULTS / f"{stem}.json"
    if args.report_only:
        data = json.loads(path.read_text())
    else:
        data = run(1 if args.quick else args.seeds, 10 if args.quick else args.rounds)
        RESULTS.mkdir(exist_ok=True)
        path.write_text(json.dumps(data, indent=1) + "\n")
    plot(data, RESULTS / f"{stem}.png")
    section = render(data)
    print(section)
    if not args.quick:
        write_section(START, END, section)


if __name__ == "__main__":
    main()
