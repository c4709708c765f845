"""The verdicts of ``bench/sim_scale.py``: what the issue asked for, met or not; what the
runs show about the simulator (each finding only if the figures show it); caveats."""

from __future__ import annotations

from typing import Any

from sim_scale_figures import (
    BUSY_WARN,
    MIB,
    OFFSET_BYTES,
    busy_fractions,
    mib,
    ok_runs,
    signed_mib,
    worker_hwm,
)


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
        fixed = ""
        if fit and fit["fixed_s"] >= 0:
            fixed = (f" The fitted fixed cost is {fit['fixed_s']:.3f} s a round (one test-set "
                     f"evaluation is {lo['eval_s']:.3f} s of it).")
        elif fit:
            fixed = (" The least-squares line's intercept is negative: the largest size sits "
                     "above the line through the others.")
        same = [r["steady"]["seconds_per_round"] for r in sc["forced"] + sc["local"]
                if r["spec"]["per_round"] == hi["per_round"]]
        if len(same) > 1:
            fixed += (f" At {hi['per_round']:,} a round, the runs of this benchmark (auto, vmap, "
                      f"loop) took {min(same):.2f} to {max(same):.2f} s a round: the top of "
                      "the curve is as noisy as that.")
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
    if len(local) >= 2 and worker_hwm(local[0]) and worker_hwm(local[-1]):
        lo, hi = local[0], local[-1]
        grew = worker_hwm(hi) - worker_hwm(lo)  # type: ignore[operator]
        share = hi["spec"]["per_round"] / hi["spec"]["workers"]
        copy = share * hi["model_dim"] * 4
        if grew > copy:
            out.append(
                f"1. **Worker memory grows with clients a round.** Each worker's peak RSS went "
                f"from {mib(worker_hwm(lo))} at {lo['spec']['per_round']} a round to "
                f"{mib(worker_hwm(hi))} at {hi['spec']['per_round']} "
                f"(+{grew / MIB:.0f} MiB, {grew / copy:.1f}x one float32 copy of its share's "
                f"parameters: {share:.0f} clients x {hi['model_dim']:,} values = "
                f"{copy / MIB:.0f} MiB), up to full vmap chunks. A worker folds each chunk "
                "(at most `MAX_CHUNK` = 64 clients, sim/_vmap.py) into its running sum as it "
                "finishes, but while a chunk trains it holds the chunk's stacked parameters, "
                "gradients, momentum and deltas at once (a few x 64 x dim float32); once the "
                "chunks are full (above ~128 clients a round on 2 workers) the working set "
                "stops growing, and the glibc heap keeps what it touched. A lower `MAX_CHUNK` "
                "would trade speed for memory.")
    srows = sy.get("rows", [])
    if len(srows) >= 2:
        top = srows[-1]
        per = top.get("coordinator_anon_growth_per_client")
        if per is not None and per > 2 * OFFSET_BYTES + 8:
            out.append(
                f"2. **Per-client objects in the coordinator**: {per:.0f} B per client, "
                "against 8 B for an offset. Client ids are formatted on demand (no list of "
                "them is kept); what remains per client is the round machine's availability "
                "set (`RoundMachine._available`: one id string and one dict entry, ~100 B), "
                "shared with the coordinator, and each round `_maybe_start` builds a sorted "
                "tuple of every id (8 B per client, transient). Enrolling a simulated "
                "population as a range (one event, O(1) state) would remove it; not done.")
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
               for r in ok_runs(results, part) if r["spec"]["backend"] != "inline"
               and r["spec"].get("vectorize", "auto") == "auto"}
    if len(engines) > 1:
        out.append(
            "5. **`vectorize=\"auto\"` picks differently from run to run** (engines seen: "
            + "; ".join(", ".join(e) for e in sorted(engines)) + "): each worker times one "
            "half of its first share each way, on a shared machine, and keeps the winner for "
            "the whole run; the two workers can disagree. Timings therefore mix engines.")
    slower = []
    for r in sc.get("forced", []):
        if r["spec"]["vectorize"] != "on":
            continue
        twin = next((o for o in sc["forced"] if o["spec"]["vectorize"] == "off"
                     and o["spec"]["per_round"] == r["spec"]["per_round"]), None)
        if twin and r["steady"]["seconds_per_round"] > 1.15 * twin["steady"]["seconds_per_round"]:
            slower.append((r["spec"]["per_round"], r["steady"]["seconds_per_round"],
                           twin["steady"]["seconds_per_round"]))
    if slower:
        out.append(
            "6. **vmap is slower than the loop here**: "
            + "; ".join(f"{k:,} a round: vmap {a:.3f} s, loop {b:.3f} s" for k, a, b in slower)
            + ". These clients hold ~6 examples (one step of batch 32) but a Dirichlet(0.3) "
            "split has a few large ones, and the vectorised step's fixed cost is paid once "
            "per group of clients that take the same number of steps.")
    pairs = [(row["per_round"], row["inline_seconds"] / row["seconds"]) for row in
             sc.get("rows", []) if row["inline_seconds"]]
    if pairs and max(p[1] for p in pairs) < 1.5:
        workers = sc["local"][0]["spec"]["workers"]
        out.append(
            f"7. **{workers} workers are barely faster than one process** (inline s/round "
            "over local s/round: " + ", ".join(f"{k:,} a round {v:.2f}x" for k, v in pairs)
            + "). Not the pool's overhead alone: measured apart on the idle machine, one "
            "`Worker.run` of 500 of these clients (loop) took 0.65-0.78 s alone, and two "
            "workers side by side took ~1.0 s each (the round at 1,000 a round): the two "
            "vCPUs of this VM do not give twice the throughput on this memory-bound work.")
    return (["", "**Findings about the simulator** (from the runs above; what changed in "
             "privml since is said in each).", "", *out]) if out else []


def caveats(results: dict[str, Any]) -> list[str]:
    busy = busy_fractions(results)
    shared = max(busy, default=0.0) > BUSY_WARN
    return [
        "", "**Caveats.**", "",
        "- " + (f"The machine was shared while this ran (up to {100 * max(busy):.0f}% of its "
                f"{results.get('machine', {}).get('usable_cores')} cores busy with other work "
                "just before a measurement): the timings are noisy, the memory figures much "
                "less so." if shared else
                f"Other work used at most {100 * max(busy, default=0):.0f}% of the CPUs just "
                "before each measurement."),
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
