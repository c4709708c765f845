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


def synthetic_figures(results: dict[str, Any]) -> dict[str, Any]:
    runs = sorted(ok_runs(results, "synthetic"), key=lambda r: r["spec"]["clients"])
    out: dict[str, Any] = {"rows": []}
    if not runs:
        return out
    base = runs[0]

    def after(run: dict[str, Any], key: str) -> int | None:
        return run["memory"]["last_round"].get(key)

    for r in runs:
        c, b = r["spec"]["clients"], base["spec"]["clients"]
        index = r["index_bytes"]["order"] + r["index_bytes"]["offsets"]
        base_index = base["index_bytes"]["order"] + base["index_bytes"]["offsets"]
        row = {"clients": c, "rows_per_client": r["rows"] / c, "peak_pss": r["peak_pss"],
               "peak_growth": (r["peak_pss"] - base["peak_pss"])
               if r["peak_pss"] and base["peak_pss"] else None,
               "tree_after": after(r, "tree_pss"),
               "coordinator_anon_after": after(r, "coordinator_pss_anon"),
               "workers_after": after(r, "workers_pss"),
               "index_bytes": index, "index_growth": index - base_index,
               "seconds": r["steady"]["seconds_per_round"], "startup_s": r["startup_s"],
               "accuracy": r["final_accuracy"], "engines": r["extra"].get("engines")}
        for key, name in (("tree_after", "tree_growth"),
                          ("coordinator_anon_after", "coordinator_anon_growth")):
            now, then = row[key], after(base, key.replace("_after", "").replace(
                "coordinator_anon", "coordinator_pss_anon").replace("tree", "tree_pss"))
            row[name] = None if now is None or then is None else now - then
        if c != b:
            row["peak_growth_per_client"] = (row["peak_growth"] / (c - b)
                                             if row["peak_growth"] is not None else None)
            row["coordinator_growth_per_client"] = (
                row["coordinator_anon_growth"] / (c - b)
                if row["coordinator_anon_growth"] is not None else None)
        out["rows"].append(row)
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
        f"`{COMMAND}` (results: `bench/results/sim_scale.json`, plot: "
        f"`bench/results/sim_scale.png`; recorded: {'; '.join(parts)}). Machine: "
        f"{m.get('usable_cores', '?')} cores ({m.get('cpu', '?')}), "
        f"{(m.get('memory_bytes') or 0) / 2**30:.0f} GiB, Python {m.get('python', '?')}; "
        f"1-minute load average before the runs {min(loads, default=0):.2f} to "
        f"{max(loads, default=0):.2f}.",
        "",
        "Every measurement is a fresh process (`bench/sim_scale_child.py`) running "
        "`privml.sim.run_simulation` with `backend=\"local\"` (worker processes forked from "
        "the coordinator; the training arrays and the partition, one concatenated index "
        "array plus offsets, memory-mapped read-only by every worker), `vectorize=\"auto\"`. "
        "Memory is the PSS of the whole process tree (coordinator + workers), peak sampled "
        f"every {results.get('sample_interval_s', 0.1)} s from the parent. Seconds per "
        "round are `RoundRecord.seconds` (test-set evaluation included), median of the "
        f"rounds after the first {results.get('warmup_rounds', 0)} (vmap tracing and the "
        "engine choice happen there).",
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
                  f"Plot: `bench/results/sim_scale.png` (left)."]
    return lines


def _synthetic(results: dict[str, Any], sy: dict[str, Any]) -> list[str]:
    lines = ["", "### 1,000,000 synthetic rows, logistic regression, 1,000 to 100,000 clients",
             ""]
    if not sy["rows"]:
        return [*lines, "No result: " + "; ".join(
            r.get("error", "?") for r in failed_runs(results, "synthetic"))]
    runs = sorted(ok_runs(results, "synthetic"), key=lambda r: r["spec"]["clients"])
    c = runs[0]["config"]
    base = sy["rows"][0]["clients"]
    lines += [
        f"`make_synthetic` ({runs[0]['rows']:,} rows x 20 features, 10 Gaussian classes; "
        f"{runs[0]['test_rows']:,} test rows), zoo `logreg`, IID split, {c['per_round']} "
        f"clients a round, {c['rounds']} rounds, {c['epochs']} epoch, batch "
        f"{c['batch_size']}, lr {c['lr']}. *index lists*: the concatenated index (8 B per "
        "row, the same for every client count) plus the offsets (8 B per client). Growth is "
        f"against {base:,} clients.",
        "",
        "| clients | rows each | peak PSS | peak growth | tree PSS after last round | its "
        "growth | coordinator anon. PSS growth | index lists | their growth | s/round | "
        "start-up s | accuracy |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in sy["rows"]:
        lines.append(
            f"| {row['clients']:,} | {row['rows_per_client']:,.0f} | {mib(row['peak_pss'])} | "
            f"{signed_mib(row['peak_growth'])} | {mib(row['tree_after'])} | "
            f"{signed_mib(row['tree_growth'])} | {signed_mib(row['coordinator_anon_growth'])} "
            f"| {mib(row['index_bytes'], '.1f')} | {signed_mib(row['index_growth'])} | "
            f"{row['seconds']:.3f} | {row['startup_s']:.1f} | {row['accuracy']:.3f} |")
    top = sy["rows"][-1]
    if "peak_growth_per_client" in top and top["peak_growth_per_client"] is not None:
        per = top["peak_growth_per_client"]
        coord = top.get("coordinator_growth_per_client")
        lines += ["", f"From {base:,} to {top['clients']:,} clients the peak grew "
                  f"{per:.0f} B per added client (the coordinator's anonymous memory after "
                  f"the last round: {coord:.0f} B per client), against {OFFSET_BYTES} B per "
                  "client of offsets."]
    return lines


def markdown_section(results: dict[str, Any], notes: list[str]) -> str:
    sc, sy = scaling_figures(results), synthetic_figures(results)
    lines = [MARK_START, *_header(results), *_fashion(results, sc), *_scaling(results, sc),
             *_synthetic(results, sy)]
    if notes:
        lines += ["", *notes]
    lines.append(MARK_END)
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
           notes: list[str] | None = None) -> Table:
    """Draw the plot, refresh BENCHMARKS.md if asked, and return the terminal table."""
    plot(results, png_path)
    if markdown:
        write_section(markdown_section(results, notes if notes is not None else NOTES))
    return terminal_table(results)


NOTES: list[str] = []  # the verdicts and caveats, filled in below once figures exist
