"""Secure aggregation: time per SecAgg+ round, beside the plain sum and beside Flower.

    .venv/bin/python bench/secagg.py              # the recorded grid, with Flower 1.42
    .venv/bin/python bench/secagg.py --quick      # n = 50, d = 10^5 only, without Flower

privml's side runs :func:`privml.secagg.run_round` in this process: n client machines and the
server machine, every message through its byte encoding. Each client's update is d float32
values, encoded with :class:`privml.secagg.FixedPoint` (clip 2, 32 bits). Timed separately:

- **server**: the coordinator's work in the round (decoding every message, adding each masked
  vector into its accumulator, closing each stage, rebuilding the survivors' self-mask seeds
  and removing their masks) -- what ``privml server --secagg`` does per round, minus HTTP;
  the masks it removes are built on one thread per core (AES-CTR runs without the GIL);
- **client**: one client's work (encoding its update, key pairs, shares, masks, messages),
  the mean over the n clients;
- **plain sum**: a numpy in-place sum of the same n float32 vectors (what a coordinator
  without secure aggregation does at least), the median of 3;
- **whole round**: the wall time of the entire round in one process, all n clients one after
  another plus the server: the figure set beside Flower's.

Overhead = server / plain sum. Flower's side (``bench/flower_secagg_side.py``, run in its own
venv, ``bench/.venvs/flwr``, made by ``bench/sim_vs_flower.py``'s ``ensure_peer_venv``) times a
round of ``SecAggPlusWorkflow`` under ``flwr.simulation`` with the same n, d and neighbours
(Flower's ``num_shares`` counts the client itself: num_shares = k + 1, and its
``reconstruction_threshold`` counts the client's own share: t + 1), clients returning fixed
random vectors; its time includes its Ray messaging, ours none (so the ratio flatters
neither side's networking: privml's clients run one after another on one core, Flower's on
two actor processes). Results: ``bench/results/secagg.json`` and the ``secagg`` section of
``BENCHMARKS.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from _report import write_section
from privml.secagg import ClientStage, FixedPoint, SecAggConfig, run_round

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
MARK_START, MARK_END = "<!-- bench:secagg:start -->", "<!-- bench:secagg:end -->"
COMMAND = ".venv/bin/python bench/secagg.py"
console = Console()


def _updates(n: int, d: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.uniform(-0.5, 0.5, size=d).astype(np.float32) for _ in range(n)]


def _plain_sum(vectors: list[np.ndarray]) -> float:
    times = []
    for _ in range(3):
        start = time.perf_counter()
        acc = np.zeros_like(vectors[0])
        for v in vectors:
            np.add(acc, v, out=acc)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def privml_case(n: int, d: int, *, drop: float = 0.0, seed: int = 0) -> dict[str, Any]:
    """One round at n clients and d values, ``drop`` of them silent after sharing keys."""
    fp = FixedPoint(clip=2.0, clients=n)
    vectors = _updates(n, d, seed)
    plain = _plain_sum(vectors)
    ids = [f"c{i:04d}" for i in range(n)]
    encode_s: list[float] = []
    encoded = {}
    for cid, v in zip(ids, vectors, strict=True):
        start = time.perf_counter()
        encoded[cid] = fp.encode(v, 100)
        encode_s.append(time.perf_counter() - start)
    del vectors
    dropped = {cid: ClientStage.MASKED_INPUT for cid in ids[: round(drop * n)]}
    cfg = SecAggConfig()
    params = cfg.resolve(n, bits=32, length=d + 1)
    lanes = os.cpu_count() or 1
    with ThreadPoolExecutor(lanes) as pool:
        start = time.perf_counter()
        res = run_round(encoded, run="bench", round_=1, config=cfg, drop_at=dropped,
                        map_fn=pool.map, lanes=lanes)
        wall = time.perf_counter() - start
    mean_client = statistics.fmean(res.client_seconds[c] for c in ids) + statistics.fmean(
        encode_s)
    return {"n": n, "d": d, "dropped": len(dropped), "neighbours": params.neighbours,
            "shamir_threshold": params.shamir_threshold, "server_s": res.server_seconds,
            "server_lanes": lanes,
            "client_s": mean_client, "whole_round_s": wall + sum(encode_s),
            "plain_sum_s": plain, "overhead": res.server_seconds / plain,
            "bytes_up_per_client": res.bytes_up / n, "frac_bits": fp.frac_bits}


def flower_case(n: int, d: int, k: int, t: int, *, secagg: bool, rounds: int
                ) -> dict[str, Any]:
    venv_py = HERE / ".venvs" / "flwr" / "bin" / "python"
    if not venv_py.exists():
        sys.path.insert(0, str(HERE))
        from sim_vs_flower import ensure_peer_venv  # type: ignore[import-not-found]

        ensure_peer_venv()
    out = RESULTS / f"flower_secagg_n{n}_d{d}{'' if secagg else '_plain'}.json"
    cmd = [str(venv_py), str(HERE / "flower_secagg_side.py"), "--clients", str(n),
           "--dim", str(d), "--rounds", str(rounds), "--out", str(out)]
    cmd += ["--num-shares", str(k + 1), "--threshold", str(t + 1)] if secagg else \
        ["--no-secagg"]
    sys.path.insert(0, str(HERE))
    from sim_vs_flower import peer_env  # type: ignore[import-not-found]

    subprocess.run(cmd, check=True, env=peer_env(), cwd=ROOT, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=1800)
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="n = 50, d = 10^5, no Flower")
    ap.add_argument("--no-flower", action="store_true")
    ap.add_argument("--flower-rounds", type=int, default=3)
    args = ap.parse_args()
    grid = [(50, 10**5)] if args.quick else [(n, d) for d in (10**5, 10**6)
                                             for n in (50, 100, 500)]
    cases: list[dict[str, Any]] = []
    with Progress(console=console) as bar:
        task = bar.add_task("privml SecAgg+ rounds", total=len(grid) + (not args.quick))
        for n, d in grid:
            cases.append(privml_case(n, d))
            bar.advance(task)
        if not args.quick:
            cases.append(privml_case(100, 10**5, drop=0.1))
            bar.advance(task)
    flower: list[dict[str, Any]] = []
    if not (args.quick or args.no_flower):
        with Progress(console=console) as bar:
            task = bar.add_task("Flower SecAgg+ (Ray)", total=4)
            for n in (50, 100):
                mine = next(c for c in cases if c["n"] == n and c["d"] == 10**5)
                for secagg in (True, False):
                    fl = flower_case(n, 10**5, mine["neighbours"], mine["shamir_threshold"],
                                     secagg=secagg, rounds=args.flower_rounds)
                    flower.append({"n": n, "d": 10**5, "secagg": secagg, **fl})
                    bar.advance(task)
    report = {"machine": platform.platform(), "python": platform.python_version(),
              "cases": cases, "flower": flower}
    RESULTS.mkdir(exist_ok=True)
    name = "secagg.quick.json" if args.quick else "secagg.json"
    (RESULTS / name).write_text(json.dumps(report, indent=2) + "\n")
    console.print(_table(cases, flower))
    if not args.quick:
        _write_markdown(cases, flower)
        console.print(f"updated {BENCHMARKS_MD.relative_to(ROOT)}")


def _flower_round(flower: list[dict[str, Any]], n: int, secagg: bool) -> float | None:
    for f in flower:
        if f["n"] == n and f["secagg"] == secagg:
            return float(f["median_s_per_round"])
    return None


def _table(cases: list[dict[str, Any]], flower: list[dict[str, Any]]) -> Table:
    t = Table(title="SecAgg+ round (seconds)")
    for col in ("n", "d", "dropped", "k / t", "server", "per client", "whole round",
                "plain sum", "overhead", "Flower round", "Flower / privml"):
        t.add_column(col, justify="right")
    for c in cases:
        fl = _flower_round(flower, c["n"], True) if c["d"] == 10**5 and not c["dropped"] \
            else None
        t.add_row(str(c["n"]), f"{c['d']:.0e}", str(c["dropped"]),
                  f"{c['neighbours']} / {c['shamir_threshold']}", f"{c['server_s']:.3f}",
                  f"{c['client_s']:.4f}", f"{c['whole_round_s']:.2f}",
                  f"{c['plain_sum_s']:.4f}", f"{c['overhead']:.1f}x",
                  "" if fl is None else f"{fl:.2f}",
                  "" if fl is None else f"{fl / c['whole_round_s']:.1f}x")
    return t


def _write_markdown(cases: list[dict[str, Any]], flower: list[dict[str, Any]]) -> None:
    rows = ["| n | d | dropped | k / t | server s | per client s | whole round s | plain sum s "
            "| overhead (server / plain) | Flower round s | Flower / privml |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in cases:
        fl = _flower_round(flower, c["n"], True) if c["d"] == 10**5 and not c["dropped"] \
            else None
        rows.append(
            f"| {c['n']} | 10^{round(np.log10(c['d']))} | {c['dropped']} | "
            f"{c['neighbours']} / {c['shamir_threshold']} | {c['server_s']:.3f} | "
            f"{c['client_s']:.4f} | {c['whole_round_s']:.2f} | {c['plain_sum_s']:.4f} | "
            f"**{c['overhead']:.1f}x** | {'' if fl is None else f'{fl:.2f}'} | "
            f"{'' if fl is None else '**%.0fx**' % (fl / c['whole_round_s'])} |")
    plain = [f"n = {f['n']}: {f['median_s_per_round']:.2f} s" for f in flower if not f["secagg"]]
    body = "\n".join([
        MARK_START, "## Secure aggregation (SecAgg+) vs a plain sum and Flower 1.42", "",
        f"`{COMMAND}` (results: `bench/results/secagg.json`). One round, every party in one "
        "process, every message through its bytes; updates are d float32 values, clipped to "
        "±2 and encoded in 32 bits. *server*: the coordinator's work in the round (the masks "
        "it removes built on one thread per core, 2 here); *per "
        "client*: one client's, mean over n; *whole round*: all n clients one after another "
        "plus the server; *plain sum*: numpy's in-place sum of the same float32 vectors. "
        "Flower: `SecAggPlusWorkflow` under `flwr.simulation` (Ray, 2 actor processes), same "
        "n, d, neighbours and threshold, clients returning fixed vectors; its round time "
        "includes its Ray messaging. Flower without SecAgg, same setting: "
        + (", ".join(plain) if plain else "not run") + ".", "",
        *rows, "", MARK_END])
    write_section(MARK_START, MARK_END, body)


if __name__ == "__main__":
    main()
