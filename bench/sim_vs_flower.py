"""privml's simulator and Flower's simulation, side by side, on one federated task.

    .venv/bin/python bench/sim_vs_flower.py              # the recorded figure (30 rounds)
    .venv/bin/python bench/sim_vs_flower.py --rounds 3 --repeats 1   # a quick check

The task is privml's embedded demo (``SimConfig()`` defaults): scikit-learn digits, 20
clients over a Dirichlet(0.5) label split, 10 clients a round, FedAvg weighted by examples,
zoo ``mlp``, 5 local epochs of SGD (batch 16, lr 0.05, momentum 0.9). Flower gets the very
same rows per client, the same initial parameters and the same local loop: this script writes
them to ``task.npz`` / ``task.json`` and ``bench/flower_side.py`` runs ``flwr.simulation`` on
them in its own virtual environment (``bench/.venvs/flwr``, made here on first use: flwr pins
fastapi/uvicorn/typer/ray versions privml does not use, and privml never enters it).

Each side's federation runs R times, each in a fresh process (``bench/privml_side.py`` in
privml's venv, ``bench/flower_side.py`` in the peer's), the sides alternating, and is timed
from the call that starts it to its return, imports and venv set-up excluded: privml's
``privml.sim.run_simulation`` and Flower's ``flwr.simulation.run_simulation`` (Ray start,
actor pool, rounds, shutdown). The medians' ratio flower_seconds / privml_seconds is the
figure; steady-state rounds and whole cold processes are compared too. Results go to
``bench/results/sim_vs_flower.json`` and a section of ``BENCHMARKS.md``
(``sim_vs_flower_report.py`` writes both).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from _venv import PeerVenv
from sim_vs_flower_report import (
    BENCHMARKS_MD,
    CAVEATS,
    COMMAND,
    markdown_section,
    report_table,
    summarize,
    update_benchmarks_md,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
# torch first and pinned: pip then takes the CPU build from local disk (unpinned, it would
# pull gigabytes of CUDA wheels); flwr unpinned, and the version it resolved is recorded.
PEER_REQUIREMENTS = (("torch==2.13.0",), ("flwr[simulation]>=1.42,<1.43", "numpy"))
SIDE_TIMEOUT_S = 600
BUSY_WARN = 0.25  # CPU busy fraction before a run above which its timing is suspect

console = Console(stderr=True)


# --------------------------------------------------------------------------- peer venv

# No usage stats or update checks: the machine may have no network beyond package mirrors.
PEER = PeerVenv(
    "flwr", PEER_REQUIREMENTS,
    "import json, flwr, ray, torch, numpy, platform; print(json.dumps({"
    "'flwr': flwr.__version__, 'ray': ray.__version__, 'torch': torch.__version__, "
    "'numpy': numpy.__version__, 'python': platform.python_version()}))",
    extra_env={"RAY_USAGE_STATS_ENABLED": "0", "RAY_DEDUP_LOGS": "0",
               "FLWR_DISABLE_UPDATE_CHECK": "1", "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0"},
    say=lambda line: console.print(escape(line)))


def ensure_peer_venv() -> dict[str, str]:
    """Make ``bench/.venvs/flwr`` if it is missing or incomplete; return its versions."""
    return PEER.ensure()


def peer_env() -> dict[str, str]:
    return PEER.env()


# --------------------------------------------------------------------------- the task


def partition_rng(seed: int) -> np.random.Generator:
    """The generator privml's simulator partitions with (``sim/_engine.py``)."""
    return np.random.default_rng(np.random.SeedSequence(seed).spawn(3)[0])


def write_task(cfg: Any, workdir: Path) -> tuple[Path, dict[str, Any]]:
    """Write the digits arrays, client rows and privml's initial parameters for Flower."""
    from privml.data import load_dataset, partition
    from privml.models import build_torch, zoo
    from privml.train import TrainConfig, get_params, train_local

    if (cfg.model, cfg.strategy, cfg.optimizer) != ("mlp", "fedavg", "sgd"):
        raise SystemExit("flower_side.py implements the mlp / FedAvg / SGD task only")

    ds = load_dataset(cfg.dataset, seed=cfg.seed)
    part = partition(ds.y_train, cfg.clients, alpha=cfg.alpha, rng=partition_rng(cfg.seed))
    spec = zoo(cfg.model, input_shape=ds.input_shape, num_classes=ds.num_classes)
    model = build_torch(spec, seed=cfg.seed)
    params = get_params(model)
    names = list(params)
    # privml's local step on one client, for flower_side.py to reproduce (a sameness check).
    ref_client, ref_seed = 0, 12345
    train_local(model, part.clients(ds.x_train, ds.y_train)[ref_client],
                TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                            optimizer=cfg.optimizer, momentum=cfg.momentum), ref_seed)
    ref = get_params(model)
    arrays: dict[str, np.ndarray] = {
        "x_train": ds.x_train, "y_train": ds.y_train, "x_test": ds.x_test, "y_test": ds.y_test}
    arrays.update({f"part_{k}": ix for k, ix in enumerate(part.indices)})
    arrays.update({f"param_{k}": np.asarray(params[n]) for k, n in enumerate(names)})
    arrays.update({f"ref_{k}": np.asarray(ref[n]) for k, n in enumerate(names)})
    npz = workdir / "task.npz"
    np.savez(npz, **arrays)
    hidden = [np.asarray(params[n]).shape for n in names]
    meta = {
        "npz": str(npz), "seed": cfg.seed, "clients": cfg.clients, "per_round": cfg.per_round,
        "rounds": cfg.rounds, "epochs": cfg.epochs, "batch_size": cfg.batch_size,
        "lr": cfg.lr, "momentum": cfg.momentum, "input_shape": list(ds.input_shape),
        "num_classes": ds.num_classes, "hidden": int(hidden[0][0]), "param_names": names,
        "param_shapes": [list(s) for s in hidden], "model_spec": json.loads(spec.to_json()),
        "reference": {"client": ref_client, "seed": ref_seed},
    }
    task_json = workdir / "task.json"
    task_json.write_text(json.dumps(meta, indent=2))
    meta["partition_sizes"] = part.sizes().tolist()
    return task_json, meta


# --------------------------------------------------------------------------- the two sides


def run_side(cmd: list[str], out: Path, env: dict[str, str], log: Path,
             on_round: Callable[[int, float], None]) -> dict[str, Any]:
    """Run one side's federation in a fresh process, following its ``@@round`` lines."""
    t0 = time.perf_counter()
    timed_out = threading.Event()
    with log.open("a") as err:
        err.write(f"\n$ {' '.join(cmd)}\n")
        err.flush()
        # A session of its own, so that a timeout ends the child and all it started (Ray).
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env,
                                cwd=ROOT, start_new_session=True)

        def kill() -> None:
            timed_out.set()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

        watchdog = threading.Timer(SIDE_TIMEOUT_S, kill)
        watchdog.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.startswith("@@round "):
                    _, n, acc, _secs = line.split()
                    on_round(int(n), float(acc))
            proc.wait()
        finally:
            watchdog.cancel()
            if proc.poll() is None:  # interrupted: take the child (and its Ray) down too
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    if timed_out.is_set():
        return {"ok": False, "error": f"{Path(cmd[1]).name} did not finish in "
                                      f"{SIDE_TIMEOUT_S} s and was killed",
                "log_tail": _tail(log)}
    process_s = time.perf_counter() - t0
    if not out.exists():
        return {"ok": False, "error": f"{Path(cmd[1]).name} exited {proc.returncode} without "
                                      "a result", "log_tail": _tail(log)}
    result = dict(json.loads(out.read_text()))
    result["process_s"] = process_s
    if not result.get("ok"):
        result["log_tail"] = _tail(log)
    return result


def run_privml(task_json: Path, rep: int, log: Path,
               on_round: Callable[[int, float], None]) -> dict[str, Any]:
    out = task_json.parent / f"privml-{rep}.json"
    cmd = [sys.executable, str(HERE / "privml_side.py"), "--task", str(task_json),
           "--out", str(out), *(["--check-rows"] if rep == 0 else [])]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return run_side(cmd, out, env, log, on_round)


def run_flower(task_json: Path, rep: int, client_cpus: float, log: Path,
               on_round: Callable[[int, float], None]) -> dict[str, Any]:
    out = task_json.parent / f"flower-{rep}.json"
    cmd = [str(PEER.python), str(HERE / "flower_side.py"), "--task", str(task_json), "--out",
           str(out), "--seed", str(rep), "--client-cpus", str(client_cpus)]
    return run_side(cmd, out, peer_env(), log, on_round)


def root_cause(log_tail: str) -> str | None:
    """The first ``SomethingError: message`` line of a log: in a chained traceback, the root.

    Flower's own exception is generic ("An error was encountered. Ending simulation."); the
    reason (an empty actor pool, Ray failing to start) is in what it logged before."""
    for line in log_tail.splitlines():
        match = re.match(r"\s*([A-Za-z_.]*(?:Error|Exception)): (.+)", line)
        if match:
            return f"{match.group(1)}: {match.group(2).strip()}"
    return None


def _tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# --------------------------------------------------------------------------- report


def cpu_busy(seconds: float = 1.0) -> float | None:
    """Fraction of the machine's CPU time spent busy over ``seconds`` (from /proc/stat):
    other work on the machine (a test suite, a build) slows whichever side it overlaps."""
    def sample() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return idle, sum(fields)

    try:
        idle0, total0 = sample()
        time.sleep(seconds)
        idle1, total1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    return 1.0 - (idle1 - idle0) / max(total1 - total0, 1)


def wait_quiet(patience_s: float) -> float | None:
    """Wait up to ``patience_s`` for the machine to be quiet; the last busy fraction seen."""
    deadline = time.monotonic() + patience_s
    busy = cpu_busy()
    while busy is not None and busy > BUSY_WARN and time.monotonic() < deadline:
        busy = cpu_busy(2.0)
    return busy


def machine() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": cpu, "platform": platform.platform(),
            "python": platform.python_version()}


def git_commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                              capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], cwd=ROOT,
                               text=True, capture_output=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}{'+dirty' if dirty else ''}"


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None, default_rounds: int) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=default_rounds,
                    help=f"rounds per federation (the recorded figure uses {default_rounds})")
    ap.add_argument("--repeats", type=int, default=3, help="runs per side; the median is kept")
    ap.add_argument("--client-cpus", type=float, default=1.0,
                    help="Flower's client_resources num_cpus (Ray actors = cores / this)")
    ap.add_argument("--wait-quiet", type=float, default=120.0, metavar="SECONDS",
                    help="before each run, wait up to this long for other work on the "
                         "machine to stop (then run anyway, with a warning)")
    ap.add_argument("--out", type=Path, default=None,
                    help="JSON result (default bench/results/sim_vs_flower.json; quick "
                         "checks with fewer rounds go to sim_vs_flower.quick.json)")
    args = ap.parse_args(argv)
    if args.rounds < 1 or args.repeats < 1:
        ap.error("--rounds and --repeats must be >= 1")
    if not 0 < args.client_cpus <= (os.cpu_count() or 1):
        # Flower's Ray backend would build an empty actor pool and stop.
        ap.error(f"--client-cpus must be in (0, {os.cpu_count()}], the cores Ray is given")
    return args


class Runs:
    """Each side's runs so far, and why a side stopped (if it did)."""

    def __init__(self, flower_error: str | None) -> None:
        self.privml: list[dict[str, Any]] = []
        self.flower: list[dict[str, Any]] = []
        self.errors: dict[str, str | None] = {"privml": None, "Flower": flower_error}

    def add(self, name: str, run: dict[str, Any]) -> None:
        (self.privml if name == "privml" else self.flower).append(run)
        if not run.get("ok"):
            why = f"{name}'s federation failed: {run.get('error')}"
            cause = root_cause(run.get("log_tail", ""))
            if cause and cause not in why:
                why += f" (first error in its log: {cause})"
            console.print(f"[red]{escape(why)}[/]\n[dim]{escape(run.get('log_tail', ''))}[/]")
            self.errors[name] = why
        elif run.get("warning"):
            console.print(f"[bold red]warning:[/] {escape(run['warning'])}")


def run_repeats(args: argparse.Namespace, task_json: Path, runs: Runs) -> None:
    """Both sides, ``--repeats`` times, alternating so that a drift in the machine's speed
    hits both alike; a side that fails is not run again."""
    log = RESULTS / "sim_vs_flower.log.tmp"
    log.unlink(missing_ok=True)
    starts: dict[str, Callable[[int, Callable[[int, float], None]], dict[str, Any]]] = {
        "privml": lambda rep, cb: run_privml(task_json, rep, log, cb),
        "Flower": lambda rep, cb: run_flower(task_json, rep, args.client_cpus, log, cb),
    }
    bar = Progress(TextColumn("{task.description:<18}"), MofNCompleteColumn(), BarColumn(),
                   TextColumn("acc {task.fields[acc]:.3f}"), TimeElapsedColumn(),
                   console=console)
    with bar:
        for rep in range(args.repeats):
            for name, start in starts.items():
                if runs.errors["privml"] is not None or runs.errors[name] is not None:
                    continue
                busy = wait_quiet(args.wait_quiet)
                if busy is not None and busy > BUSY_WARN:
                    console.print(f"[yellow]the machine is {busy:.0%} busy before {name} "
                                  f"run {rep + 1}: its timing will suffer[/]")
                t = bar.add_task(f"{name:<6}  run {rep + 1}/{args.repeats}",
                                 total=args.rounds, acc=0.0)
                run = start(rep, lambda n, acc, t=t: bar.update(t, completed=n, acc=acc))
                bar.stop_task(t)
                run["cpu_busy_before"] = busy
                runs.add(name, run)


def header(args: argparse.Namespace, cfg: Any, recorded: bool) -> dict[str, Any]:
    import torch

    import privml

    return {
        "benchmark": "sim_vs_flower",
        "command": COMMAND + ("" if recorded else f" --rounds {args.rounds}"),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d"), "privml_commit": git_commit(),
        "rounds": args.rounds, "repeats": args.repeats, "config": cfg.to_dict(),
        "machine": machine(),
        "versions": {"privml": privml.__version__, "torch": torch.__version__,
                     "numpy": np.__version__},
        "privml_torch_threads": torch.get_num_threads(), "flower_client_cpus": args.client_cpus,
        "caveats": CAVEATS,
    }


def main(argv: list[str] | None = None) -> int:
    from privml.sim import SimConfig

    default_rounds = SimConfig().rounds
    args = parse_args(argv, default_rounds)
    # `timeout`, a CI runner or kill send SIGTERM: unwind, so the children are ended too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    recorded = args.rounds == default_rounds
    out = args.out or RESULTS / ("sim_vs_flower.json" if recorded else
                                 "sim_vs_flower.quick.json")
    RESULTS.mkdir(parents=True, exist_ok=True)
    cfg = SimConfig(rounds=args.rounds)
    result = header(args, cfg, recorded)
    flower_error: str | None = None
    try:
        peer = ensure_peer_venv()
        result["versions"].update({"flwr": peer["flwr"], "ray": peer["ray"]})
        result["versions"].update({f"peer_{k}": v for k, v in peer.items()})
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        flower_error = f"could not set up Flower's venv: {exc}"
        console.print(f"[red]{escape(flower_error)}[/]")

    runs = Runs(flower_error)
    with tempfile.TemporaryDirectory(prefix="sim_vs_flower-") as tmp:
        task_json, meta = write_task(cfg, Path(tmp))
        result["partition_sizes"] = meta["partition_sizes"]
        result["model"] = {"spec": meta["model_spec"], "param_names": meta["param_names"],
                           "param_shapes": meta["param_shapes"]}
        run_repeats(args, task_json, runs)
    result.update(privml_runs=runs.privml, flower_runs=runs.flower,
                  flower_error=runs.errors["Flower"])
    if runs.errors["privml"] is not None:
        result["error"] = runs.errors["privml"]
        out.write_text(json.dumps(result, indent=2, default=_jsonable) + "\n")
        console.print(f"[red]no figure: {escape(result['error'])}[/] (details in {out})")
        return 1
    result["summary"] = summarize(runs.privml, runs.flower, args.rounds)
    result["warnings"] = sorted({r["warning"] for r in runs.privml + runs.flower
                                 if r.get("warning")})
    busiest = max((r.get("cpu_busy_before") or 0.0 for r in runs.privml + runs.flower),
                  default=0.0)
    if busiest > BUSY_WARN:
        result["warnings"].append(f"the machine was up to {busiest:.0%} busy with other work "
                                  "just before a run; rerun on a quiet machine")
    out.write_text(json.dumps(result, indent=2, default=_jsonable) + "\n")
    console.print(report_table(result))
    console.print(f"results: {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    if recorded:
        update_benchmarks_md(markdown_section(result))
        console.print(f"updated {BENCHMARKS_MD.relative_to(ROOT)}")
    else:
        console.print(f"[yellow]{args.rounds} rounds: a quick check, BENCHMARKS.md left as it "
                      f"is (the recorded figure uses {default_rounds})[/]")
    return 0 if runs.errors["Flower"] is None else 1


def _jsonable(obj: object) -> object:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")


if __name__ == "__main__":
    sys.exit(main())
