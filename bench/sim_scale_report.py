"""Figures and write-up for ``bench/sim_scale.py``: the terminal table, the plot, and its
section of ``BENCHMARKS.md`` (only the text between its own markers is ever replaced)."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
COMMAND = ".venv/bin/python bench/sim_scale.py"
MARK_START = "<!-- bench:sim_scale:start -->"
MARK_END = "<!-- bench:sim_scale:end -->"
AFTER = "<!-- bench:sim_vs_flower:end -->"  # where the section goes the first time
MIB = 2**20
OFFSET_BYTES = 8  # per client: one int64 offset into the concatenated index


def mib(value: float | None, spec: str = ".0f") -> str:
    return "n/a" if value is None else f"{value / MIB:{spec}} MiB"


def signed_mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value / MIB:+.1f} MiB"


def ok_runs(results: dict[str, Any], part: str) -> list[dict[str, Any]]:
    return [r for r in results.get(part, {}).get("runs", []) if "history" in r]


def failed_runs(results: dict[str, Any], part: str) -> list[dict[str, Any]]:
    return [r for r in results.get(part, {}).get("runs", []) if "history" not in r]


# ---------------------------------------------------------------------------- figures

def scaling_figures(results: dict[str, Any]) -> dict[str, Any]:
    """Per size: measured seconds per round, the proportional ideal through the largest
    local point, and a least-squares line t = a + b * examples over the local medians."""
    local = sorted((r for r in ok_runs(results, "scaling") if r["spec"]["backend"] != "inline"),
                   key=lambda r: r["spec"]["per_round"])
    inline = sorted((r for r in ok_runs(results, "scaling") if r["spec"]["backend"] == "inline"),
                    key=lambda r: r["spec"]["per_round"])
    points = [(r["steady"]["examples_per_round"], r["steady"]["seconds_per_round"], r)
              for r in local if r["steady"]["examples_per_round"]]
    out: dict[str, Any] = {"local": local, "inline": inline, "rows": []}
    if not points:
        return out
    x_max, t_max, _ = max(points, key=lambda p: p[0])
    per_example = t_max / x_max
    out["ideal_seconds_per_example"] = per_example
    if len(points) >= 2:
        xs, ts = [p[0] for p in points], [p[1] for p in points]
        mx, mt = statistics.mean(xs), statistics.mean(ts)
        slope = sum((x - mx) * (t - mt) for x, t in zip(xs, ts, strict=True)) / \
            sum((x - mx) ** 2 for x in xs)
        out["fit"] = {"fixed_s": mt - slope * mx, "seconds_per_1000_examples": slope * 1000}
    inline_by_size = {r["spec"]["per_round"]: r for r in inline}
    for x, t, r in points:
        k = r["spec"]["per_round"]
        other = inline_by_size.get(k)
        out["rows"].append({
            "per_round": k, "examples": x, "seconds": t,
            "train_s": r["steady"]["train_s_per_round"],
            "eval_s": r["eval_s"], "ideal_s": per_example * x, "ratio": t / (per_example * x),
            "peak_pss": r["peak_pss"], "engines": r["extra"].get("engines"),
            "inline_seconds": other["steady"]["seconds_per_round"] if other else None})
    return out


def _median(values: list[Any]) -> Any:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def synthetic_figures(results: dict[str, Any]) -> dict[str, Any]:
    """Per client count, medians over the repeats; growth against the smallest count."""
    groups: dict[int, list[dict[str, Any]]] = {}
    for r in ok_runs(results, "synthetic"):
        groups.setdefault(r["spec"]["clients"], []).append(r)
    out: dict[str, Any] = {"rows": []}
    for c in sorted(groups):
        runs = groups[c]
        r0 = runs[0]
        peaks = [r["peak_pss"] for r in runs if r["peak_pss"]]
        out["rows"].append({
            "clients": c, "repeats": len(runs), "rows_per_client": r0["rows"] / c,
            "peak_pss": _median(peaks), "peak_min": min(peaks, default=None),
            "peak_max": max(peaks, default=None),
            "tree_after": _median([r["memory"]["last_round"].get("tree_pss") for r in runs]),
            "coordinator_anon_after": _median(
                [r["memory"]["last_round"].get("coordinator_pss_anon") for r in runs]),
            "index_bytes": r0["index_bytes"]["order"] + r0["index_bytes"]["offsets"],
            "seconds": _median([r["steady"]["seconds_per_round"] for r in runs]),
            "startup_s": _median([r["startup_s"] for r in runs]),
            "accuracy": _median([r["final_accuracy"] for r in runs]),
            "engines": sorted({e for r in runs for e in r["extra"].get("engines") or []})})
    if not out["rows"]:
        return out
    base = out["rows"][0]
    for row in out["rows"]:
        added = row["clients"] - base["clients"]
        for key, name in (("peak_pss", "peak_growth"), ("tree_after", "tree_growth"),
                          ("coordinator_anon_after", "coordinator_anon_growth"),
                          ("index_bytes", "index_growth")):
            grow = None if row[key] is None or base[key] is None else row[key] - base[key]
            row[name] = grow
            if added:
                row[f"{name}_per_client"] = None if grow is None else grow / added
    return out


# ------------------------------------------------------------------------------- plot

def plot(results: dict[str, Any], path: Path) -> bool:
    """Seconds per round against examples per round (log-log), and synthetic memory."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sc, sy = scaling_figures(results), synthetic_figures(results)
    if not sc["rows"] and not sy["rows"]:
        return False
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.8),
                                 gridspec_kw={"width_ratios": [1.4, 1]})
    if sc["rows"]:
        warm = results.get("warmup_rounds", 0)
        for r in sc["local"]:
            ex = r.get("examples_per_round") or []
            pts = [(ex[i], h["seconds"]) for i, h in enumerate(r["history"])
                   if i >= warm and i < len(ex)]
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=10, color="tab:blue",
                       alpha=0.25, linewidths=0)
        xs = [row["examples"] for row in sc["rows"]]
        ax.plot(xs, [row["seconds"] for row in sc["rows"]], "o-", color="tab:blue",
                label=f"local, {sc['local'][0]['spec']['workers']} workers: median s/round")
        ax.plot(xs, [row["train_s"] for row in sc["rows"]], "o--", color="tab:blue",
                mfc="none", alpha=0.7, label="the same, minus the test-set evaluation")
        lo, hi = min(xs) / 1.5, max(xs) * 1.5
        k = sc["ideal_seconds_per_example"]
        ax.plot([lo, hi], [k * lo, k * hi], ":", color="black",
                label="ideal: proportional to examples (through the largest point)")
        if "fit" in sc:
            f = sc["fit"]
            grid = [lo * (hi / lo) ** (i / 50) for i in range(51)]
            ax.plot(grid, [f["fixed_s"] + f["seconds_per_1000_examples"] * g / 1000
                           for g in grid], "-", color="tab:gray", alpha=0.6,
                    label=f"fit: {f['fixed_s']:.3f} s + "
                          f"{f['seconds_per_1000_examples']:.3f} s per 1,000 examples")
        inl = [r for r in sc["inline"] if r["steady"]["examples_per_round"]]
        if inl:
            ax.plot([r["steady"]["examples_per_round"] for r in inl],
                    [r["steady"]["seconds_per_round"] for r in inl], "s-", color="tab:orange",
                    label="inline (one process): median s/round")
        for row in sc["rows"]:
            ax.annotate(f"{row['per_round']}/round", (row["examples"], row["seconds"]),
                        textcoords="offset points", xytext=(4, -12), fontsize=8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("examples trained per round (clients x examples each x epochs)")
        ax.set_ylabel("seconds per round (test-set evaluation included)")
        ax.set_title("Fashion-MNIST, 10,000 clients, Dirichlet(0.3)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    else:
        ax.set_axis_off()
    if sy["rows"]:
        labels = [f"{row['clients']:,}" for row in sy["rows"]]
        peak = [(row["peak_pss"] or 0) / MIB for row in sy["rows"]]
        index = [row["index_bytes"] / MIB for row in sy["rows"]]
        pos = range(len(labels))
        bx.bar([p - 0.2 for p in pos], peak, width=0.4, label="peak PSS of the tree")
        bx.bar([p + 0.2 for p in pos], index, width=0.4,
               label="index lists (8 B/row + 8 B/client)")
        for p, v in zip(pos, peak, strict=True):
            bx.annotate(f"{v:.0f}", (p - 0.2, v), ha="center", va="bottom", fontsize=8)
        bx.set_xticks(list(pos), labels)
        bx.set_xlabel("clients (1,000,000 synthetic rows, logreg, 100 a round)")
        bx.set_ylabel("MiB")
        bx.set_title("Memory against the number of clients")
        bx.legend(fontsize=8, loc="center right")
    else:
        bx.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


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
    loads = [r["loadavg_before"][0] for part in ("fashion", "scaling", "synthetic")
             for r in results.get(part, {}).get("runs", [])]
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
        f"1-minute load average before the runs {min(loads, default=0):.2f} to "
        f"{max(loads, default=0):.2f}.",
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
        "per round, counted from the pool's per-client counts (mean over the rounds used); "
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


def _worker_hwm(run: dict[str, Any]) -> int | None:
    hwm = run["memory"]["last_round"].get("vm_hwm", {})
    values = [v for k, v in hwm.items() if k.startswith("worker") and v]
    return max(values) if values else None


def aims(results: dict[str, Any], sc: dict[str, Any], sy: dict[str, Any]) -> list[str]:
    """What the issue asked for, met or not, in its figures."""
    out = ["**Aims.**", ""]
    fashion = ok_runs(results, "fashion")
    if fashion:
        r = fashion[0]
        out.append(
            f"- Fashion-MNIST over {r['config']['clients']:,} clients (Dirichlet "
            f"{r['config']['alpha']}), {r['config']['per_round']} a round: **met** -- "
            f"{len(r['history'])} rounds at {r['steady']['seconds_per_round']:.3f} s a round "
            f"(median), peak PSS of the tree {mib(r['peak_pss'])}, final accuracy "
            f"{r['final_accuracy']:.3f}.")
    else:
        out.append("- Fashion-MNIST over 10,000 clients: **not run** (see above).")
    rows = sc.get("rows", [])
    if len(rows) >= 2:
        lo, hi = rows[0], rows[-1]
        bounded = hi["peak_pss"] and lo["peak_pss"] and hi["peak_pss"] < 1.25 * lo["peak_pss"]
        out.append(
            f"- Peak memory bounded: it does not depend on the number of clients (the "
            f"synthetic table), but it does on clients *a round*: {mib(lo['peak_pss'])} at "
            f"{lo['per_round']:,} a round, {mib(hi['peak_pss'])} at {hi['per_round']:,} -- "
            + ("**met**." if bounded else "**bounded, but by clients a round** (finding 1)."))
        fit = sc.get("fit")
        steps = ""
        if len(rows) >= 2:
            a, b = rows[-2], rows[-1]
            steps = (f" Between the two largest sizes the time grew "
                     f"{b['seconds'] / a['seconds']:.1f}x for {b['examples'] / a['examples']:.1f}x "
                     "the examples.")
        fixed = (f" The fitted fixed cost is {fit['fixed_s']:.3f} s a round (one test-set "
                 f"evaluation is {lo['eval_s']:.3f} s of it)." if fit else "")
        out.append(
            f"- Time per round against the ideal linear growth: at {lo['per_round']} a round "
            f"the round takes {lo['ratio']:.1f}x the proportional ideal (a fixed cost per "
            f"round dominates small rounds).{fixed}{steps}")
    srows = sy.get("rows", [])
    if srows:
        top, base = srows[-1], srows[0]
        out.append(
            f"- {ok_runs(results, 'synthetic')[0]['rows']:,} synthetic rows over "
            f"{top['clients']:,} clients train a logistic regression: **met** -- accuracy "
            f"{top['accuracy']:.3f} after {ok_runs(results, 'synthetic')[0]['config']['rounds']}"
            " rounds (chance 0.100).")
        per = top.get("coordinator_anon_growth_per_client")
        tree = top.get("tree_growth")
        if per is not None and tree is not None and len(srows) >= 2:
            letter = tree <= (top["index_growth"] or 0) + MIB
            added = top["clients"] - base["clients"]
            out.append(
                "- Memory that does not grow with clients beyond their index lists: "
                + ("**met**" if letter else "**not met to the letter, small in size**")
                + f" -- from {base['clients']:,} to {top['clients']:,} clients the tree's PSS "
                f"after the last round grew {signed_mib(tree)} (peak: "
                f"{signed_mib(top['peak_growth'])}), the coordinator's anonymous memory "
                f"{per:+.0f} B per client, where the index lists grow {OFFSET_BYTES} B per "
                f"client ({signed_mib(OFFSET_BYTES * added)} in all). "
                + ("" if letter else "The rest is the simulator's per-client Python objects "
                   "(finding 2): bounded and linear, "
                   f"{(per * top['clients']) / MIB:.0f} MiB at {top['clients']:,} clients, "
                   f"{100 * per * top['clients'] / (top['tree_after'] or 1):.0f}% of the "
                   "tree."))
    return out


def findings(results: dict[str, Any], sc: dict[str, Any], sy: dict[str, Any]) -> list[str]:
    """What the measurements say about the simulator itself (each shown only if seen)."""
    out: list[str] = []
    local = sc.get("local", [])
    if len(local) >= 2 and _worker_hwm(local[0]) and _worker_hwm(local[-1]):
        lo, hi = local[0], local[-1]
        grew = _worker_hwm(hi) - _worker_hwm(lo)  # type: ignore[operator]
        share = hi["spec"]["per_round"] / hi["spec"]["workers"]
        copy = share * hi["model_dim"] * 4
        if grew > copy:
            out.append(
                f"1. **Worker memory grows with clients a round.** Each worker's peak RSS went "
                f"from {mib(_worker_hwm(lo))} at {lo['spec']['per_round']} a round to "
                f"{mib(_worker_hwm(hi))} at {hi['spec']['per_round']} "
                f"(+{grew / MIB:.0f} MiB, {grew / copy:.1f}x one float32 copy of its share's "
                f"parameters: {share:.0f} clients x {hi['model_dim']:,} values = "
                f"{copy / MIB:.0f} MiB). `Worker.run` (sim/_worker.py) materialises the final "
                "parameters of its whole share -- `VectorTrainer.train` concatenates every "
                "chunk and reorders it (two copies), `_loop` stacks them -- then "
                "`deltas = (final - start)` makes another, before folding them into one sum. "
                "Suggested fix: in the `sum` and `clip` modes fold each vmap chunk (or each "
                "looped client) into the float64 total as it finishes, keeping the stack for "
                "`each` (secure aggregation) only; a worker then holds at most "
                "`MAX_CHUNK` x dim values whatever the round's size (and stops faulting in "
                "fresh pages every round).")
    srows = sy.get("rows", [])
    if len(srows) >= 2:
        top = srows[-1]
        per = top.get("coordinator_anon_growth_per_client")
        if per is not None and per > 2 * OFFSET_BYTES + 8:
            out.append(
                f"2. **Per-client objects in the coordinator**: {per:.0f} B per client, "
                "against 8 B for an offset. Measured apart with tracemalloc: the list of "
                "client-id strings `_Federation.ids` (`client-00042`: 69 B each) and the "
                "round machine's `_available` dict (38 B an entry) hold ~107 B; the offsets "
                "and `Parallel.sizes` 16 B; each round `_maybe_start` also builds a sorted "
                "tuple of every id (8 B per client, transient). Suggested fix: name simulated "
                "clients by number and format ids on demand, and enrol a simulated population "
                "as a range (one event, O(1) state) instead of one `ClientAvailable` per "
                "client.")
        first, last = srows[0], srows[-1]
        if last["startup_s"] and first["startup_s"] and last["startup_s"] > \
                first["startup_s"] + 0.5:
            out.append(
                f"3. **Start-up grows with clients**: {first['startup_s']:.1f} s at "
                f"{first['clients']:,} clients, {last['startup_s']:.1f} s at "
                f"{last['clients']:,}. Under cProfile at 100,000 clients most of it is "
                "`partition_iid` building 100,000 small arrays, sorting each and validating "
                "each in `Partition.__post_init__` (`np.diff` per client), before `csr` "
                "concatenates them again, and one `ClientAvailable` event per client. "
                "Suggested fix: build the simulator's (order, offsets) directly (one "
                "argsort of the owner of each row) and validate them as two arrays.")
    pooled = [r for part in ("fashion", "scaling", "synthetic") for r in ok_runs(results, part)
              if r.get("first_round_clients") and r["spec"]["clients"] > r["spec"]["per_round"]]
    biased = [r for r in pooled
              if r["first_round_clients"] == list(range(r["spec"]["per_round"]))]
    if biased:
        out.append(
            f"4. **Round 1 is not a random sample**: in {len(biased)} of {len(pooled)} pool "
            "runs round 1 "
            "trained exactly clients 0 .. per_round-1. The simulator enrols its clients one "
            "`ClientAvailable` at a time and the round machine starts round 1 as soon as "
            "`per_round` are available (`RoundConfig(min_clients=1)` in sim/_engine.py), so it "
            "samples all of the first ones enrolled. Suggested fix: `min_clients=cfg.clients` "
            "for fixed-size sampling too (as the Poisson path already does), or enrol the "
            "population before the first sample.")
    engines = {tuple(r["extra"].get("engines") or []) for part in ("fashion", "scaling")
               for r in ok_runs(results, part) if r["spec"]["backend"] != "inline"}
    if len(engines) > 1:
        out.append(
            "5. **`vectorize=\"auto\"` picks differently from run to run** (engines seen: "
            + "; ".join(", ".join(e) for e in sorted(engines)) + "): each worker times one "
            "half of its first share each way, on a shared machine, and keeps the winner for "
            "the whole run; the two workers can disagree. Timings therefore mix engines.")
    return (["", "**Findings about the simulator** (from the runs above; src/privml/sim left "
             "untouched).", "", *out]) if out else []


def caveats(results: dict[str, Any]) -> list[str]:
    loads = [r["loadavg_before"][0] for part in ("fashion", "scaling", "synthetic")
             for r in results.get(part, {}).get("runs", [])]
    busy = max(loads, default=0) > 1.0
    return [
        "", "**Caveats.**", "",
        "- " + ("The machine was shared while this ran (1-minute load average up to "
                f"{max(loads, default=0):.1f} on {results.get('machine', {}).get('usable_cores')}"
                " cores): the timings are noisy; the memory figures much less so."
                if busy else "The machine was otherwise idle (load average below 1)."),
        f"- Peak PSS is sampled every {results.get('sample_interval_s', 0.1)} s, so a spike "
        "shorter than that can be missed; each process's VmHWM (exact peak RSS, shared "
        "pages counted in full) bounds it from above.",
        "- Round times include the test-set evaluation in the coordinator (a fixed cost per "
        "round), and the examples a round trains vary from round to round: a Dirichlet(0.3) "
        "split of 60,000 rows over 10,000 clients gives clients of very different sizes.",
        "- PSS splits a page shared by k processes k ways, so pages the forked workers share "
        "with the coordinator (the training arrays, torch's libraries) count once in the "
        "tree's total; a page a worker writes to (copy-on-write) counts again.",
    ]


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
