"""Figures and write-up for ``bench/sim_vs_flower.py``: medians, the terminal table, and its
section of ``BENCHMARKS.md`` (replaced in place between its markers, other sections kept)."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from rich.table import Table

from _report import write_section

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
COMMAND = ".venv/bin/python bench/sim_vs_flower.py"
MARK_START = "<!-- bench:sim_vs_flower:start -->"
MARK_END = "<!-- bench:sim_vs_flower:end -->"


def steady_round_s(run: dict[str, Any]) -> float:
    """Median seconds of rounds 2..N: one round once everything is started and warm."""
    secs = [r["seconds"] for r in run["history"]]
    return statistics.median(secs[1:] if len(secs) > 1 else secs)


def summarize(privml_runs: list[dict[str, Any]], flower_runs: list[dict[str, Any]],
              rounds: int) -> dict[str, Any]:
    p_fed = statistics.median(r["federation_s"] for r in privml_runs)
    p_steady = statistics.median(steady_round_s(r) for r in privml_runs)
    s: dict[str, Any] = {
        "privml_seconds": p_fed, "privml_seconds_per_round": p_fed / rounds,
        "privml_steady_round_seconds": p_steady,
        "privml_final_accuracy": statistics.median(r["final_accuracy"] for r in privml_runs),
        "privml_final_accuracies": [r["final_accuracy"] for r in privml_runs],
        "privml_rounds_recorded": min(len(r["history"]) for r in privml_runs),
        "privml_process_seconds": statistics.median(r["process_s"] for r in privml_runs),
    }
    ok = [r for r in flower_runs if r.get("ok")]
    if ok and len(ok) == len(flower_runs):
        f_fed = statistics.median(r["federation_s"] for r in ok)
        f_steady = statistics.median(steady_round_s(r) for r in ok)
        s.update({
            "flower_seconds": f_fed, "flower_seconds_per_round": f_fed / rounds,
            "flower_steady_round_seconds": f_steady,
            "flower_final_accuracy": statistics.median(r["final_accuracy"] for r in ok),
            "flower_final_accuracies": [r["final_accuracy"] for r in ok],
            "flower_process_seconds": statistics.median(r["process_s"] for r in ok),
            "speedup": f_fed / p_fed, "speedup_steady_round": f_steady / p_steady,
        })
        s["speedup_process"] = s["flower_process_seconds"] / s["privml_process_seconds"]
        s["local_step_max_abs_diff"] = max(r["local_training_max_abs_diff_vs_privml"]
                                           for r in ok)
        s["accuracy_gap"] = s["privml_final_accuracy"] - s["flower_final_accuracy"]
    s["same_rows"] = bool(privml_runs[0].get("same_rows_as_flower"))
    return s


def report_table(result: dict[str, Any]) -> Table:
    s, v = result["summary"], result["versions"]
    table = Table(title=f"privml sim vs Flower {v.get('flwr', '?')} ({result['rounds']} rounds,"
                        f" median of {result['repeats']})")
    for col in ("", "privml", "Flower", "Flower / privml"):
        table.add_column(col, justify="right" if col else "left")

    def fmt(key: str, spec: str, suffix: str = "") -> str:
        return format(s[key], spec) + suffix if key in s else "n/a"

    table.add_row("federation wall time (s)", fmt("privml_seconds", ".2f"),
                  fmt("flower_seconds", ".2f"), fmt("speedup", ".1f", "x"))
    table.add_row("seconds per round", fmt("privml_seconds_per_round", ".3f"),
                  fmt("flower_seconds_per_round", ".3f"), "")
    table.add_row("steady round, rounds 2..N (s)", fmt("privml_steady_round_seconds", ".3f"),
                  fmt("flower_steady_round_seconds", ".3f"), fmt("speedup_steady_round", ".1f",
                                                                 "x"))
    table.add_row("whole process, cold (s)", fmt("privml_process_seconds", ".2f"),
                  fmt("flower_process_seconds", ".2f"), fmt("speedup_process", ".1f", "x"))
    table.add_row("final test accuracy", fmt("privml_final_accuracy", ".3f"),
                  fmt("flower_final_accuracy", ".3f"), "")
    return table


def markdown_section(result: dict[str, Any]) -> str:
    s, v, m = result["summary"], result["versions"], result["machine"]
    lines = [MARK_START, "## Federated simulation: privml vs Flower", "",
             f"`{COMMAND}` (results: `bench/results/sim_vs_flower.json`, "
             f"recorded {result['date']}, privml {result['privml_commit']})", "",
             "Same task in both: digits, 20 clients, Dirichlet(0.5) label split (identical "
             "rows), 10 clients a round, FedAvg weighted by examples, zoo `mlp` from identical "
             "initial parameters, 5 local epochs of SGD (batch 16, lr 0.05, momentum 0.9), "
             "central test accuracy after every round. Wall time of the whole federation, "
             f"median of {result['repeats']} runs; flwr {v.get('flwr', '?')} "
             f"(`flwr.simulation`, Ray {v.get('ray', '?')}), torch {v.get('torch', '?')}, "
             f"{m['nproc']} cores ({m['cpu']}).", ""]
    if "flower_seconds" in s:
        lines += [
            "| | privml | Flower | Flower / privml |", "|---|---:|---:|---:|",
            f"| federation wall time, {result['rounds']} rounds | {s['privml_seconds']:.2f} s |"
            f" {s['flower_seconds']:.2f} s | **{s['speedup']:.1f}x** |",
            f"| seconds per round | {s['privml_seconds_per_round']:.3f} |"
            f" {s['flower_seconds_per_round']:.3f} | |",
            f"| steady round (median of rounds 2..N) | {s['privml_steady_round_seconds']:.3f} s"
            f" | {s['flower_steady_round_seconds']:.3f} s | {s['speedup_steady_round']:.1f}x |",
            f"| whole process, cold (interpreter, imports, exit) | "
            f"{s['privml_process_seconds']:.2f} s | {s['flower_process_seconds']:.2f} s |"
            f" {s['speedup_process']:.1f}x |",
            f"| final test accuracy | {s['privml_final_accuracy']:.3f} |"
            f" {s['flower_final_accuracy']:.3f} | |", ""]
    else:
        lines += [f"Flower could not run here: {result['flower_error']}", "",
                  f"privml alone: {s['privml_seconds']:.2f} s "
                  f"({s['privml_seconds_per_round']:.3f} s a round), final accuracy "
                  f"{s['privml_final_accuracy']:.3f}.", ""]
    if "local_step_max_abs_diff" in s:
        lines += [f"Sameness checks: privml trained on the rows handed to Flower: "
                  f"{'yes' if s['same_rows'] else 'NO'}; Flower's client loop reproduces "
                  f"privml's `train_local` on one client to max |diff| = "
                  f"{s['local_step_max_abs_diff']:.1e}. Final accuracy per run: privml "
                  f"{', '.join(f'{a:.3f}' for a in s['privml_final_accuracies'])}; Flower "
                  f"{', '.join(f'{a:.3f}' for a in s['flower_final_accuracies'])}.", ""]
    for warning in result["warnings"]:
        lines += [f"**Warning: {warning}.**", ""]
    lines += ["Caveats:", "", *[f"- {c}" for c in result["caveats"]], MARK_END]
    return "\n".join(lines)


def update_benchmarks_md(section: str) -> None:
    write_section(MARK_START, MARK_END, section, BENCHMARKS_MD)


CAVEATS = [
    "Flower samples its 10 clients a round with its own RNG (Python `random`, seeded per "
    "repeat), privml with its own, so the two federations see different client sequences "
    "and their accuracies differ by that noise; the rows, initial parameters and local loop "
    "are the same.",
    "privml runs every client in one process, sequentially, on one torch thread "
    "(run_simulation's default); "
    "Flower runs clients in a Ray actor pool (one actor per `client_resources.num_cpus` of "
    "the machine's cores, each actor one torch thread) and so trains clients in parallel.",
    "Imports are left out of the federation time where the importing process exists before "
    "the federation starts: privml's one process imports what it would load lazily "
    "(scikit-learn, torch._dynamo) first, and Flower's driver imports flwr and torch first. "
    "Flower's Ray actors are started by `run_simulation` itself, so their start-up and "
    "imports fall inside Flower's time: that is what starting a Flower simulation costs. The "
    "steady-round line leaves all start-up out; the whole-process line counts all of it on "
    "both sides.",
    "flwr 1.42 marks `flwr.simulation.run_simulation` deprecated in favour of `flwr run`, "
    "which starts a local SuperLink process that drives the same Simulation Runtime (Ray "
    "backend, the only one shipped); the Python call is the lighter of the two paths.",
]
