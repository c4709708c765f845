"""Figures of ``bench/sim_scale.py`` computed from its JSON: medians, the ideal line, growth
against the smallest client count. Shared by the plot, the notes and the report."""

from __future__ import annotations

import statistics
from typing import Any

MIB = 2**20
OFFSET_BYTES = 8  # per client: one int64 offset into the concatenated index
BUSY_WARN = 0.15  # CPU busy fraction (other work) above which timings are flagged as noisy


def mib(value: float | None, spec: str = ".0f") -> str:
    return "n/a" if value is None else f"{value / MIB:{spec}} MiB"


def signed_mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value / MIB:+.1f} MiB"


def ok_runs(results: dict[str, Any], part: str) -> list[dict[str, Any]]:
    return [r for r in results.get(part, {}).get("runs", []) if "history" in r]


def failed_runs(results: dict[str, Any], part: str) -> list[dict[str, Any]]:
    return [r for r in results.get(part, {}).get("runs", []) if "history" not in r]


def worker_hwm(run: dict[str, Any]) -> int | None:
    hwm = run["memory"]["last_round"].get("vm_hwm", {})
    values = [v for k, v in hwm.items() if k.startswith("worker") and v]
    return max(values) if values else None


def busy_fractions(results: dict[str, Any]) -> list[float]:
    return [r["cpu_busy_before"] for part in ("fashion", "scaling", "synthetic")
            for r in results.get(part, {}).get("runs", []) if r.get("cpu_busy_before") is not None]


# ---------------------------------------------------------------------------- figures

def scaling_figures(results: dict[str, Any]) -> dict[str, Any]:
    """Per size: measured seconds per round, the proportional ideal through the largest
    local point, and a least-squares line t = a + b * examples over the local medians."""
    local = sorted((r for r in ok_runs(results, "scaling") if r["spec"]["backend"] != "inline"
                    and r["spec"].get("vectorize", "auto") == "auto"),
                   key=lambda r: r["spec"]["per_round"])
    inline = sorted((r for r in ok_runs(results, "scaling") if r["spec"]["backend"] == "inline"),
                    key=lambda r: r["spec"]["per_round"])
    points = [(r["steady"]["examples_per_round"], r["steady"]["seconds_per_round"], r)
              for r in local if r["steady"]["examples_per_round"]]
    forced = [r for r in ok_runs(results, "scaling")
              if r["spec"].get("vectorize", "auto") != "auto"]
    out: dict[str, Any] = {"local": local, "inline": inline, "forced": forced, "rows": []}
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
