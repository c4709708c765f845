"""Figures and write-up for ``bench/sim_scale.py``: the terminal table, and its section of
``BENCHMARKS.md`` (only the text between its own markers is ever replaced)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table

from sim_scale_figures import (
    MIB,
    OFFSET_BYTES,
    busy_fractions,
    failed_runs,
    mib,
    ok_runs,
    scaling_figures,
    signed_mib,
    synthetic_figures,
    worker_hwm,
)
from sim_scale_notes import aims, caveats, findings
from sim_scale_plot import plot

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
COMMAND = ".venv/bin/python bench/sim_scale.py"
MARK_START = "<!-- bench:sim_scale:start -->"
MARK_END = "<!-- bench:sim_scale:end -->"
AFTER = "<!-- bench:sim_vs_flower:end -->"  # where the section goes the first time


# ------------------------------------------------------------------------ the terminal

def terminal_table(results: dict[str, Any]) -> Table:
    table = Table(title="privml sim at scale")
    for col in ("run", "s/round", "examples/round", "peak PSS", "start-up s", "accuracy",
                "engine"):
        table.add_column(col, justify="left" if col == "run" else "right")
    for part in ("fashion", "scaling", "synthetic"):
        for r in results.get(part, {}).get("runs", []):
            if "history" not in r:
                table.add_row(r["label"], "[red]failed", "", "", "", "", "")
                continue
            s = r["steady"]
            table.add_row(r["label"], f"{s['seconds_per_round']:.3f}",
                          f"{s['examples_per_round']:,.0f}" if s["examples_per_round"] else "",
                          mib(r["peak_pss"]), f"{r['startup_s']:.1f}",
                          f"{r['final_accuracy']:.3f}", ",".join(r["extra"].get("engines", [])
                                                                 or ["inline"]))
    return table


# --------------------------------------------------------------------------- markdown

def _header(results: dict[str, Any]) -> list[str]:
    m = results.get("machine", {})
    busy = busy_fractions(results)
    parts = [f"{p} {results[p]['recorded']} (privml {results[p].get('commit') or '?'})"
             for p in ("fashion", "scaling", "synthetic") if p in results]
    return [
        "## Simulator at scale: 10,000 Fashion-MNIST clients, 100,000 synthetic ones",
        "",
        f"`{results.get('command', COMMAND)}` (results: `bench/results/"
        f"{results.get('json', 'sim_scale.json')}`, plot: `bench/results/"
        f"{results.get('png', 'sim_scale.png')}`; recorded: {'; '.join(parts)}). Machine: "
        f"{m.get('usable_cores', '?')} cores ({m.get('cpu', '?')}), "
        f"{(m.get('memory_bytes') or 0) / 2**30:.0f} GiB, Python {m.get('python', '?')}; "
        + (f"CPU busy with other work in the second before each measurement: "
           f"{100 * min(busy):.0f}% to {100 * max(busy):.0f}%." if busy else ""),
        "",
        "Every measurement is a fresh process (`bench/sim_scale_child.py`) running "
        "`privml.sim.run_simulation` with `backend=\"local\"` (worker processes that share "
        "the coordinator's training arrays and partition: one concatenated index array plus "
        "offsets), `vectorize=\"auto\"`. "
        "Memory is the PSS of the whole process tree (coordinator + workers), peak sampled "
        f"every {results.get('sample_interval_s', 0.1)} s from the parent. Seconds per "
        "round are `RoundRecord.seconds` (test-set evaluation included), median of rounds "
        f"{results.get('warmup_rounds', 0) + 1}..N (the first ones trace vmap, choose the "
        "engine and import torch's optimizer machinery).",
    ]


def _fashion(results: dict[str, Any], sc: dict[str, Any]) -> list[str]:
    runs = ok_runs(results, "fashion")
    if not runs:
        return ["", "### Fashion-MNIST, 10,000 clients", "", "No result: "
                + "; ".join(r.get("error", "?") for r in failed_runs(results, "fashion"))]
    r = runs[0]
    c, s, last = r["config"], r["steady"], r["memory"]["last_round"]
    hwm = last.get("vm_hwm", {})
    peaks = [row["peak_pss"] for row in sc.get("rows", []) if row["peak_pss"]]
    hwm_text = ", ".join(f"{name.split('-')[0]} {mib(v)}" for name, v in hwm.items())
    lines = [
        "", "### Fashion-MNIST, 10,000 clients, 100 a round", "",
        "| | |", "|---|---:|",
        f"| clients, label split | {c['clients']:,}, Dirichlet(alpha = {c['alpha']}) |",
        f"| clients a round, rounds | {c['per_round']}, {c['rounds']} |",
        f"| model, local training | zoo `{c['model']}`, {c['epochs']} epoch of SGD, batch "
        f"{c['batch_size']}, lr {c['lr']}, momentum {c['momentum']} |",
        f"| workers, engine picked | {r['extra'].get('workers')}, "
        f"{', '.join(r['extra'].get('engines') or [])} |",
        f"| examples trained a round (mean) | {s['examples_per_round']:,.0f} |",
        f"| **seconds per round** (median, rounds {s['rounds_used'][0]}..{s['rounds_used'][-1]})"
        f" | **{s['seconds_per_round']:.3f}** (min {s['seconds_min']:.3f}, max "
        f"{s['seconds_max']:.3f}) |",
        f"| of which test-set evaluation ({r['test_rows']:,} images) | {r['eval_s']:.3f} |",
        f"| data load, start-up (partition, model, pool) | {r['load_s']:.1f} s, "
        f"{r['startup_s']:.1f} s |",
        f"| **peak PSS of the tree** | **{mib(r['peak_pss'])}** |",
        f"| PSS after the last round: coordinator / {last.get('workers', '?')} workers | "
        f"{mib(last.get('coordinator_pss'))} / {mib(last.get('workers_pss'))} |",
        f"| peak RSS (VmHWM) per process | {hwm_text} |",
        f"| final test accuracy | {r['final_accuracy']:.3f} |",
    ]
    if c["model"] == "mlp":
        lines += ["", f"Model: `mlp` ({r['model_dim']:,} parameters), as the issue prefers; "
                  "`logreg` was the fallback were it too slow, and at "
                  f"{s['seconds_per_round']:.2f} s a round it is not."]
    if peaks:
        lines += ["", f"Peak PSS across the scaling runs below (10 to 1,000 clients a round): "
                  f"{mib(min(peaks))} to {mib(max(peaks))}."]
    return lines


def _scaling(results: dict[str, Any], sc: dict[str, Any]) -> list[str]:
    lines = ["", "### Time per round from 10 to 1,000 clients a round", ""]
    if not sc["rows"]:
        return [*lines, "No result: " + "; ".join(
            r.get("error", "?") for r in failed_runs(results, "scaling"))]
    lines += [
        "Same federation (Fashion-MNIST, 10,000 clients, Dirichlet(0.3), "
        f"`{sc['local'][0]['config']['model']}`, 1 epoch, batch 32), "
        f"{sc['local'][0]['config']['rounds']} rounds per size. *examples*: examples trained "
        "per round, "
        + ("counted from the pool's per-client counts (mean over the rounds used); "
           if all(r["steady"].get("examples_counted", True) for r in sc["local"]) else
           "expected (clients a round x mean client size; the pool's counts were not "
           "available); ")
        +
        "*ideal*: time proportional to examples, through the largest point; "
        "*minus eval*: the median round less one test-set evaluation.",
        "",
        "| clients a round | examples a round | s/round (local) | minus eval | ideal | "
        "measured / ideal | engine | peak PSS | s/round (inline) |",
        "|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for row in sc["rows"]:
        inline = f"{row['inline_seconds']:.3f}" if row["inline_seconds"] is not None else ""
        lines.append(
            f"| {row['per_round']:,} | {row['examples']:,.0f} | {row['seconds']:.3f} | "
            f"{row['train_s']:.3f} | {row['ideal_s']:.3f} | {row['ratio']:.1f}x | "
            f"{', '.join(row['engines'] or [])} | {mib(row['peak_pss'])} | {inline} |")
    if "fit" in sc:
        f = sc["fit"]
        lines += ["", f"Least-squares line through the local medians: **{f['fixed_s']:.3f} s "
                  f"+ {f['seconds_per_1000_examples']:.3f} s per 1,000 examples**. "
                  f"Plot: `bench/results/{results.get('png', 'sim_scale.png')}` (left)."]
    lines += _engines(sc)
    return lines


def _engines(sc: dict[str, Any]) -> list[str]:
    """vectorize on / off / auto at the sizes run all three ways."""
    by_size: dict[int, dict[str, dict[str, Any]]] = {}
    for r in sc["forced"] + sc["local"]:
        by_size.setdefault(r["spec"]["per_round"], {})[r["spec"].get("vectorize", "auto")] = r
    sizes = [k for k, v in sorted(by_size.items()) if {"on", "off"} <= v.keys()]
    if not sizes:
        return []
    lines = ["", "The two engines forced, beside `auto` (same federation; s/round, and the "
             "largest worker peak RSS):", "",
             "| clients a round | vmap (`on`) | loop (`off`) | `auto` (picked) |",
             "|---:|---:|---:|---:|"]
    for k in sizes:
        cell = {}
        for v in ("on", "off", "auto"):
            r = by_size[k].get(v)
            cell[v] = "" if r is None else (
                f"{r['steady']['seconds_per_round']:.3f} s, {mib(worker_hwm(r))}"
                + (f" ({', '.join(r['extra'].get('engines') or [])})" if v == "auto" else ""))
        lines.append(f"| {k:,} | {cell['on']} | {cell['off']} | {cell['auto']} |")
    return lines


def _synthetic(results: dict[str, Any], sy: dict[str, Any]) -> list[str]:
    lines = ["", "### 1,000,000 synthetic rows, logistic regression, 1,000 to 100,000 clients",
             ""]
    if not sy["rows"]:
        return [*lines, "No result: " + "; ".join(
            r.get("error", "?") for r in failed_runs(results, "synthetic"))]
    r0 = ok_runs(results, "synthetic")[0]
    c = r0["config"]
    base = sy["rows"][0]["clients"]
    lines += [
        f"`make_synthetic` ({r0['rows']:,} rows x 20 features, 10 Gaussian classes; "
        f"{r0['test_rows']:,} test rows), zoo `logreg`, IID split, {c['per_round']} "
        f"clients a round, {c['rounds']} rounds, {c['epochs']} epoch, batch "
        f"{c['batch_size']}, lr {c['lr']}; median of {sy['rows'][0]['repeats']} fresh "
        "processes per row (peak range in brackets). *index lists*: the concatenated index "
        "(8 B per row, the same for every client count) plus the offsets (8 B per client). "
        f"Growth is against {base:,} clients; *coordinator anon.*: the coordinating "
        "process's anonymous memory (PSS) after the last round, where per-client state "
        "lives.",
        "",
        "| clients | rows each | peak PSS [range] | peak growth | tree PSS after last round "
        "| its growth | coordinator anon. growth | index lists | their growth | s/round | "
        "start-up s | accuracy |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in sy["rows"]:
        spread = (f" [{row['peak_min'] / MIB:.0f}-{row['peak_max'] / MIB:.0f}]"
                  if row["repeats"] > 1 and row["peak_min"] is not None else "")
        lines.append(
            f"| {row['clients']:,} | {row['rows_per_client']:,.0f} | "
            f"{mib(row['peak_pss'])}{spread} | {signed_mib(row['peak_growth'])} | "
            f"{mib(row['tree_after'])} | {signed_mib(row['tree_growth'])} | "
            f"{signed_mib(row['coordinator_anon_growth'])} | {mib(row['index_bytes'], '.1f')} "
            f"| {signed_mib(row['index_growth'])} | {row['seconds']:.3f} | "
            f"{row['startup_s']:.1f} | {row['accuracy']:.3f} |")
    top = sy["rows"][-1]
    if top.get("peak_growth_per_client") is not None:
        coord = top.get("coordinator_anon_growth_per_client")
        tree = top.get("tree_growth_per_client")
        lines += ["", f"Per client added from {base:,} to {top['clients']:,}: peak PSS "
                  f"{top['peak_growth_per_client']:+.0f} B, tree PSS after the last round "
                  f"{_b(tree)}, coordinator anonymous memory {_b(coord)}; the index lists "
                  f"grow {OFFSET_BYTES} B (one offset)."]
    return lines


def _b(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.0f} B"


def markdown_section(results: dict[str, Any]) -> str:
    sc, sy = scaling_figures(results), synthetic_figures(results)
    lines = [MARK_START, *_header(results), *_fashion(results, sc), *_scaling(results, sc),
             *_synthetic(results, sy), "", *aims(results, sc, sy),
             *findings(results, sc, sy), *caveats(results), MARK_END]
    return "\n".join(lines)


def write_section(section: str, path: Path = BENCHMARKS_MD) -> None:
    """Replace this benchmark's block, or insert it after the sim_vs_flower block (else at
    the end). The file is read right before writing: other benchmarks rewrite theirs."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if MARK_START in text and MARK_END in text:
        head, rest = text.split(MARK_START, 1)
        text = head + section + rest.split(MARK_END, 1)[1]
    elif AFTER in text:
        head, rest = text.split(AFTER, 1)
        text = head + AFTER + "\n\n" + section + "\n" + rest
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


def render(results: dict[str, Any], *, png_path: Path, markdown: bool,
           md_path: Path = BENCHMARKS_MD) -> Table:
    """Draw the plot, refresh the BENCHMARKS.md section if asked, return the terminal
    table. The section is also written to ``<png stem>.md.tmp`` (git-ignored) to look at."""
    plot(results, png_path)
    section = markdown_section(results)
    png_path.with_suffix(".md.tmp").write_text(section + "\n")
    if markdown:
        write_section(section, md_path)
    return terminal_table(results)
