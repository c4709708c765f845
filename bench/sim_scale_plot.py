"""The plot of ``bench/sim_scale.py``: seconds per round against examples per round
(log-log) beside the synthetic runs' memory against the number of clients."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sim_scale_figures import MIB, scaling_figures, synthetic_figures


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
            pts = [(r["spec"]["epochs"] * ex[i], h["seconds"])
                   for i, h in enumerate(r["history"]) if i >= warm and i < len(ex)]
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
        for engine, marker in (("on", "^"), ("off", "v")):
            forced = [r for r in sc["forced"] if r["spec"]["vectorize"] == engine]
            if forced:
                ax.scatter([r["steady"]["examples_per_round"] for r in forced],
                           [r["steady"]["seconds_per_round"] for r in forced], marker=marker,
                           s=36, color="tab:green" if engine == "on" else "tab:red",
                           zorder=3, label=f"local, vectorize={engine!r} forced "
                                           f"({'vmap' if engine == 'on' else 'loop'})")
        if "fit" in sc and sc["fit"]["fixed_s"] >= 0:  # (a negative one has no log curve)
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
