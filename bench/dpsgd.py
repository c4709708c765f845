"""privml's DP-SGD step beside a non-private step and beside Opacus, on one torch thread.

    .venv/bin/python bench/dpsgd.py                 # the recorded figure (20 steps, batch 256)
    .venv/bin/python bench/dpsgd.py --steps 5       # a quick check

Three models (defined in ``bench/opacus_side.py`` as plain torch, so both venvs build the
same): (a) MLP 784-256-10, (b) privml's zoo ``cnn`` for 28x28x1, (c) a GroupNorm CNN on
32x32x3. For each, the median seconds per step after warm-up of: a non-private SGD step
(mean cross-entropy, backward, step), privml's DP-SGD step (``train/_dpsgd._dp_step``:
per-sample clipping, Gaussian noise, SGD step; Poisson sampling left out, the batch fixed
at 256 on both sides) and Opacus in each ``grad_sample_mode`` that runs on the model, in its
own venv (``bench/.venvs/opacus``, made here on first use). Results go to
``bench/results/dpsgd.json`` and a section of ``BENCHMARKS.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812

from _report import write_section
from _venv import PeerVenv
from opacus_side import MODELS, batch, build, median_step
from privml.train._dpsgd import DPSGDConfig, _dp_step, _Rngs

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
START, END = "<!-- bench:dpsgd:start -->", "<!-- bench:dpsgd:end -->"
COMMAND = ".venv/bin/python bench/dpsgd.py"
# torch first and pinned: pip then takes the CPU build from local disk (unpinned, it would
# pull gigabytes of CUDA wheels); then the Opacus release the comparison is about.
PEER = PeerVenv(
    "opacus", (("torch==2.13.0",), ("opacus==1.6.*",)),
    "import json, opacus, torch, platform; print(json.dumps({'opacus': opacus.__version__, "
    "'torch': torch.__version__, 'python': platform.python_version()}))",
    extra_env={"OMP_NUM_THREADS": "1"})
LABELS = {"mlp": "MLP 784-256-10", "cnn": "CNN (zoo `cnn`, 28x28x1)",
          "gn_cnn": "GroupNorm CNN (32x32x3)"}


# --------------------------------------------------------------------------- the sides


def privml_side(name: str, *, steps: int, warmup: int, size: int) -> dict[str, Any]:
    x, y = batch(name, size)
    plain = build(name)
    opt = torch.optim.SGD(plain.parameters(), lr=0.05)

    def plain_step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(plain(x), y).backward()
        opt.step()

    model = build(name)
    dp_opt = torch.optim.SGD(model.parameters(), lr=0.05)
    dp = DPSGDConfig(noise_multiplier=1.0, max_grad_norm=1.0)
    rngs = _Rngs.create(dp, 0)

    def dp_step() -> None:
        _dp_step(model, dp_opt, x, y, dp=dp, expected=float(size), rngs=rngs)

    # Both steps run in this one process, back to back, on the same batch and weights.
    return {"non_private": median_step(plain_step, steps=steps, warmup=warmup),
            "privml_dp": median_step(dp_step, steps=steps, warmup=warmup)}


def opacus_side(name: str, *, steps: int, warmup: int, size: int) -> dict[str, Any]:
    cmd = [str(PEER.python), str(HERE / "opacus_side.py"), "--model", name, "--steps", str(steps),
           "--warmup", str(warmup), "--batch", str(size)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=PEER.env(),
                          timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"opacus_side.py failed: {done.stderr.strip()[-800:]}")
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def summarize(name: str, ours: dict[str, Any], peer: dict[str, Any]) -> dict[str, Any]:
    ok = {m: r["median_s"] for m, r in peer["modes"].items() if "median_s" in r}
    best_mode = min(ok, key=ok.__getitem__) if ok else None
    dp_s, plain_s = ours["privml_dp"]["median_s"], ours["non_private"]["median_s"]
    best_s = ok[best_mode] if best_mode else None
    return {"model": name, "non_private_s": plain_s, "privml_dp_s": dp_s,
            "opacus_modes": peer["modes"], "opacus_best_mode": best_mode,
            "opacus_best_s": best_s, "ours_over_non_private": dp_s / plain_s,
            "ours_over_opacus_best": dp_s / best_s if best_s else None}


# --------------------------------------------------------------------------- report


def _ms(s: float | None) -> str:
    return "—" if s is None else f"{1000 * s:.1f} ms"


def markdown_section(result: dict[str, Any]) -> str:
    v = result["versions"]
    rows = []
    for r in result["models"]:
        modes = ", ".join(f"{m} {_ms(x.get('median_s'))}" if "median_s" in x
                          else f"{m} fails" for m, x in r["opacus_modes"].items())
        rows.append(f"| {LABELS[r['model']]} | {_ms(r['non_private_s'])} | "
                    f"{_ms(r['privml_dp_s'])} | {_ms(r['opacus_best_s'])} "
                    f"({r['opacus_best_mode']}) | {r['ours_over_non_private']:.2f}x | "
                    f"**{r['ours_over_opacus_best']:.2f}x** | {modes} |")
    faster = all((r["ours_over_opacus_best"] or 0) < 1 for r in result["models"])
    cheap = all(r["ours_over_non_private"] <= 1.5 for r in result["models"])
    worst_np = max(result["models"], key=lambda r: r["ours_over_non_private"])
    worst_op = max(result["models"], key=lambda r: r["ours_over_opacus_best"] or 0)
    against = "faster on every model" if faster else "not faster everywhere"
    verdict = (
        f"Aim (faster than Opacus's best mode on every model, and at most 1.5x a "
        f"non-private step): {'reached' if faster and cheap else 'not reached'}. "
        f"Against Opacus's best mode privml is {against}"
        f" (worst: {LABELS[worst_op['model']]}, {worst_op['ours_over_opacus_best']:.2f}x "
        f"Opacus's time); against a non-private step it costs at most "
        f"{worst_np['ours_over_non_private']:.2f}x ({LABELS[worst_np['model']]})"
        f"{'' if cheap else ', above the 1.5x aim'}.")
    return "\n".join([
        START,
        "## DP-SGD step: privml vs Opacus",
        "",
        f"`{COMMAND}` (results: `bench/results/dpsgd.json`, recorded {result['date']})",
        "",
        f"One DP-SGD step at batch {result['batch']} (per-sample clipping C=1, Gaussian "
        "noise z=1, SGD step; the batch fixed, sampling left out), median of "
        f"{result['steps']} steps after {result['warmup']} warm-up steps, one torch thread "
        f"on both sides; torch {v['torch']}, Opacus {v['opacus']} (own venv), "
        f"{v['machine']}. Ratios below 1 in the last ratio column mean privml is faster.",
        "",
        "| model | non-private | privml DP | Opacus best (mode) | privml / non-private "
        "| privml / Opacus best | Opacus per mode |",
        "|---|---:|---:|---:|---:|---:|---|",
        *rows,
        "",
        verdict,
        END,
    ])


def update_benchmarks_md(section: str) -> None:
    write_section(START, END, section)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--models", nargs="*", default=list(MODELS), choices=MODELS)
    args = ap.parse_args()
    torch.set_num_threads(1)
    peer = PEER.ensure()
    result: dict[str, Any] = {
        "date": dt.date.today().isoformat(), "batch": args.batch, "steps": args.steps,
        "warmup": args.warmup,
        "versions": {"torch": torch.__version__, "opacus": peer["opacus"],
                     "peer_torch": peer["torch"], "python": platform.python_version(),
                     "machine": f"{os.cpu_count()} cores, {platform.machine()}"},
        "models": []}
    for name in args.models:
        print(f"{name}: privml ...", file=sys.stderr)
        ours = privml_side(name, steps=args.steps, warmup=args.warmup, size=args.batch)
        print(f"{name}: opacus ...", file=sys.stderr)
        theirs = opacus_side(name, steps=args.steps, warmup=args.warmup, size=args.batch)
        row = summarize(name, ours, theirs)
        print(json.dumps(row), file=sys.stderr)
        result["models"].append(row)
    RESULTS.mkdir(exist_ok=True)
    full = args.models == list(MODELS) and args.steps >= 20
    out = RESULTS / ("dpsgd.json" if full else "dpsgd.quick.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    section = markdown_section(result)
    if full:
        update_benchmarks_md(section)
    print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
