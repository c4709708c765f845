"""privml's simulator (local pool, Ray, inline), Flower's simulation and a plain Python loop,
side by side, on one federated task.

    .venv/bin/python bench/sim_vs_flower.py                          # the recorded figure
    .venv/bin/python bench/sim_vs_flower.py --rounds 5 --repeats 1   # a quick check

The task (issue 10): scikit-learn digits, 100 clients over a Dirichlet(0.5) label split, 10
clients a round, 20 rounds of FedAvg weighted by examples, zoo ``mlp``, 1 local epoch of SGD
(batch 32, lr 0.05, momentum 0.9; ``SimConfig`` defaults apart from those fields).

Five sides, each run in a fresh process, ``--repeats`` times, the order rotated every repeat:

- ``privml local``: ``run_simulation(backend="local", workers=2)`` (forked workers, vmap);
- ``privml ray``: ``backend="ray", workers=2`` (a local Ray with 2 CPUs);
- ``privml inline``: every client in the calling process, one after another;
- ``Flower``: flwr 1.42's ``flwr.simulation.run_simulation`` (Ray backend) with a torch
  client doing the same training, in its own venv (``bench/.venvs/flwr``, made here on first
  use: flwr pins older fastapi/uvicorn/typer/ray, and privml never enters it);
- ``plain loop``: the floor, a bare Python loop in privml's venv (``privml_side.py --engine
  plain``).

Sameness: this script writes the digits arrays, every client's rows, privml's initial
parameters and privml's local step on one client (a reference) to ``task.npz`` /
``task.json``, then runs privml inline once with a recording ``train_fn`` to record which
clients privml samples each round (and checks it trained on exactly the rows written). Flower
and the plain loop train that schedule, with privml's per-client seeds, so every side runs the
same federation and their accuracies may be compared point for point.

Per run: seconds of each round (evaluation on the test set included), start-up (from the
call to the first round: privml's ``extra["startup_s"]``; Flower's until its first client
starts training), the cold start (from this script spawning the process to its first round:
interpreter, imports, start-up), the federation's and the whole process's wall time, the
peak PSS of the side's whole process tree (sampled from here; Ray's daemons and workers are
checked to be inside that tree, see :class:`SideWatch`) and the final test accuracy.
Results go to ``bench/results/sim_vs_flower.json``, a PNG and a section of ``BENCHMARKS.md``
(``sim_vs_flower_report.py`` writes them, and rewrites them from a JSON alone).
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
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from _venv import PeerVenv
from privml.sim._memory import PeakSampler, process_tree, tree_pss
from sim_vs_flower_report import (
    BENCHMARKS_MD,
    CAVEATS,
    COMMAND,
    SIDES,
    markdown_section,
    plot,
    report_table,
    summarize,
    update_benchmarks_md,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
# The task's fields (issue 10); every other SimConfig field keeps its default.
TASK = {"dataset": "digits", "model": "mlp", "clients": 100, "alpha": 0.5, "per_round": 10,
        "epochs": 1, "batch_size": 32, "rounds": 20}
WORKERS = 2  # privml's local and Ray pools
# torch first and pinned: pip then takes the CPU build from local disk (unpinned, it would
# pull gigabytes of CUDA wheels); flwr pinned to the 1.42 series the issue names.
PEER_REQUIREMENTS = (("torch==2.13.0",), ("flwr[simulation]>=1.42,<1.43", "numpy"))
SIDE_TIMEOUT_S = 600
BUSY_WARN = 0.25  # CPU busy fraction before a run above which its timing is suspect
TAG_VAR = "SIM_VS_FLOWER_SIDE"  # in every side's environment: finds its processes anywhere

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


def client_seed(seed: int, round_: int, index: int) -> int:
    """privml's per-client training seed (``sim/_engine.py``)."""
    return int(np.random.SeedSequence([seed, round_, index]).generate_state(1)[0])


def write_task(cfg: Any, workdir: Path) -> tuple[Path, dict[str, Any]]:
    """Write the digits arrays, client rows, privml's initial parameters and the schedule
    privml samples, for the other sides; returns task.json and what the driver keeps."""
    from privml.data import load_dataset, partition
    from privml.models import build_torch, zoo
    from privml.train import TrainConfig, get_params, train_local

    if (cfg.model, cfg.strategy, cfg.optimizer) != ("mlp", "fedavg", "sgd"):
        raise SystemExit("the Flower and plain-loop sides implement mlp / FedAvg / SGD only")

    ds = load_dataset(cfg.dataset, seed=cfg.seed)
    part = partition(ds.y_train, cfg.clients, alpha=cfg.alpha, rng=partition_rng(cfg.seed))
    spec = zoo(cfg.model, input_shape=ds.input_shape, num_classes=ds.num_classes)
    model = build_torch(spec, seed=cfg.seed)
    params = get_params(model)
    names = list(params)
    # privml's local step on one client, for the other sides to reproduce (a sameness check).
    ref_client, ref_seed = int(np.argmax(part.sizes())), 12345  # the largest: several steps
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
    shapes = [np.asarray(params[n]).shape for n in names]
    recording = record_schedule(cfg, part.indices)
    meta = {
        "npz": str(npz), "seed": cfg.seed, "clients": cfg.clients, "per_round": cfg.per_round,
        "rounds": cfg.rounds, "epochs": cfg.epochs, "batch_size": cfg.batch_size,
        "lr": cfg.lr, "momentum": cfg.momentum, "input_shape": list(ds.input_shape),
        "num_classes": ds.num_classes, "hidden": int(shapes[0][0]), "param_names": names,
        "param_shapes": [list(s) for s in shapes], "model_spec": json.loads(spec.to_json()),
        "reference": {"client": ref_client, "seed": ref_seed},
        "sim_config": {**TASK, "rounds": cfg.rounds, "seed": cfg.seed},
        "schedule": recording["schedule"],
    }
    task_json = workdir / "task.json"
    task_json.write_text(json.dumps(meta, indent=2))
    keep = {"partition_sizes": part.sizes().tolist(), "model_spec": meta["model_spec"],
            "param_names": names, "param_shapes": meta["param_shapes"], "recording": recording}
    return task_json, keep


def record_schedule(cfg: Any, parts: list[np.ndarray]) -> dict[str, Any]:
    """Run privml inline once with a recording ``train_fn``: which clients it trains each
    round (found from their seeds) and whether on exactly the rows written for the others."""
    from privml.sim import run_simulation
    from privml.train import train_local

    by_seed = {client_seed(cfg.seed, r, k): (r, k)
               for r in range(cfg.rounds + 2) for k in range(cfg.clients)}
    if len(by_seed) != (cfg.rounds + 2) * cfg.clients:
        raise SystemExit("two clients share a training seed: the schedule cannot be read")
    trained: dict[int, list[int]] = {}
    rows_match = True

    def recording_train(model: Any, client: Any, config: Any, seed: int, *rest: Any) -> Any:
        nonlocal rows_match
        round_, k = by_seed[int(seed)]
        trained.setdefault(round_, []).append(k)
        rows_match &= bool(np.array_equal(np.asarray(client.indices), parts[k]))
        return train_local(model, client, config, seed, *rest)

    t0 = time.perf_counter()
    result = run_simulation(cfg, train_fn=recording_train)
    rounds = sorted(trained)
    if rounds != list(range(1, cfg.rounds + 1)):
        raise SystemExit(f"privml trained clients in rounds {rounds}, expected 1..{cfg.rounds}")
    return {"schedule": [trained[r] for r in rounds], "same_rows_as_written": rows_match,
            "final_accuracy": result.final_accuracy, "seconds": time.perf_counter() - t0}


# --------------------------------------------------------------------------- watching a side


def _stat(pid: int) -> tuple[str, str, int, int] | None:
    """(name, state, parent pid, session id) of a process, from /proc/<pid>/stat."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name = text[text.index("(") + 1:text.rindex(")")]
    fields = text[text.rindex(")") + 2:].split()
    return name, fields[0], int(fields[1]), int(fields[3])


def _tagged(tag: str) -> list[int]:
    """Every process whose environment carries this side's tag (a daemon that left the
    process tree, or even the session, keeps the environment it was started with)."""
    needle = f"{TAG_VAR}={tag}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in env.split(b"\0"):
            found.append(int(entry.name))
    return found


class SideWatch(PeakSampler):
    """:class:`PeakSampler` over a side's process tree, with a CPU budget and a census.

    Reading a process's PSS is not free (``smaps_rollup`` walks its page tables: several ms
    for a process with torch loaded, tens of ms for a Ray tree), and the sampler shares the
    machine with the side it measures. So the pause between samples grows to keep the
    sampler under ``budget`` of one core, and the driver asks for a sample of its own
    (:meth:`sample`) at chosen rounds, when every worker is up.

    About once a second it also lists the processes that carry the side's tag in their
    environment and sorts them into those inside the side's process tree (children,
    grandchildren: Ray's gcs_server, raylet and workers unless Ray daemonizes them) and
    those outside it. Processes found outside are added to every later sample, so the peak
    counts them too, and are reported by name with the phase they were found in
    (``startup``, ``rounds``, ``shutdown``: Ray ending its raylet before its workers orphans
    them for a moment).
    """

    def __init__(self, pid: int, tag: str, interval: float, budget: float = 0.05,
                 census_s: float = 1.0) -> None:
        super().__init__(pid=pid, interval=interval)
        self.tag, self.budget, self.census_s = tag, budget, census_s
        self.phase = "startup"  # set by the driver as the side's @@round lines arrive
        self.seen: dict[int, dict[str, Any]] = {}  # pid -> name, in_tree, session
        self.outside: dict[int, str] = {}  # pid -> the phase it was found in
        self.peak_tree: int | None = None  # the tree alone
        self.max_processes = 0
        self.cpu_s = 0.0  # CPU time the sampling took (it competes with the side)
        self.last_cost = 0.0
        self.next_census = 0.0
        self.lock = threading.Lock()

    def _loop(self) -> None:
        while not self._stop.wait(max(self.interval, self.last_cost / self.budget)):
            self.sample()

    def sample(self, census: bool = False) -> None:
        with self.lock:
            t0 = time.thread_time()
            try:
                self._sample(census)
            finally:
                self.last_cost = time.thread_time() - t0
                self.cpu_s += self.last_cost

    def _sample(self, census: bool) -> None:
        if census or time.monotonic() >= self.next_census:
            self.census()
            self.next_census = time.monotonic() + self.census_s
        in_tree = tree_pss(self.pid)
        if in_tree is None:
            return
        extra = sum(tree_pss(p) or 0 for p in self.outside if not self._descends(p))
        self.peak_tree = in_tree if self.peak_tree is None else max(self.peak_tree, in_tree)
        value = in_tree + extra
        self.peak = value if self.peak is None else max(self.peak, value)
        self.samples += 1

    def census(self) -> None:
        root = _stat(self.pid)
        if root is None or root[1] in "ZX":
            # The side has exited: its children are orphans now, outside any tree; those
            # that outlive it are end_leftovers()'s business, not the run's memory.
            return
        self.max_processes = max(self.max_processes, len(process_tree(self.pid)))
        for pid in _tagged(self.tag):
            stat = _stat(pid)
            if stat is None:
                continue
            inside = self._descends(pid)
            entry = self.seen.setdefault(pid, {"name": stat[0], "in_tree": inside,
                                               "session": stat[3]})
            entry["name"] = stat[0]  # a worker renames itself (ray::IDLE -> ray::_Actor)
            if not inside and pid not in self.outside:
                entry["in_tree"] = False
                self.outside[pid] = self.phase

    def _descends(self, pid: int) -> bool:
        """Whether ``pid`` is the side's process or one of its descendants (followed up
        the parent links, so a process born during the census is not taken for a stray)."""
        for _ in range(64):
            if pid == self.pid:
                return True
            stat = _stat(pid)
            if stat is None or stat[2] <= 1:
                return False
            pid = stat[2]
        return False

    def report(self) -> dict[str, Any]:
        names: dict[str, int] = {}
        for entry in self.seen.values():
            names[entry["name"]] = names.get(entry["name"], 0) + 1
        outside: dict[str, list[str]] = {}
        for pid, phase in self.outside.items():
            outside.setdefault(phase, []).append(self.seen[pid]["name"])
        return {"peak_pss_bytes": self.peak, "peak_pss_tree_only_bytes": self.peak_tree,
                "pss_samples": self.samples, "pss_min_interval_s": self.interval,
                "pss_cpu_budget": self.budget, "sampler_cpu_s": self.cpu_s,
                "max_processes_in_tree": self.max_processes,
                "processes_seen": dict(sorted(names.items())),
                "outside_tree": {k: sorted(set(v)) for k, v in sorted(outside.items())}}


def end_leftovers(tag: str, grace_s: float = 10.0) -> list[str]:
    """Processes of a finished side still alive (a Ray daemon that outlived its driver):
    wait ``grace_s`` for them, then end them, each by its id; their names are returned."""
    deadline = time.monotonic() + grace_s
    left = _tagged(tag)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = _tagged(tag)
    names = []
    for pid in left:
        stat = _stat(pid)
        names.append(stat[0] if stat else str(pid))
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return names


# --------------------------------------------------------------------------- running a side


def run_side(cmd: list[str], out: Path, env: dict[str, str], log: Path, *, rounds: int,
             mem_interval: float, on_round: Callable[[int, float], None]) -> dict[str, Any]:
    """Run one side's federation in a fresh process, following its ``@@round`` lines and
    sampling the memory of all its processes."""
    tag = uuid.uuid4().hex
    timed_out = threading.Event()
    with log.open("a") as err:
        err.write(f"\n$ {' '.join(cmd)}\n")
        err.flush()
        t_spawn = time.perf_counter()
        # A session of its own, so that a timeout ends the child and all it started (Ray).
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True,
                                env={**env, TAG_VAR: tag}, cwd=ROOT, start_new_session=True)

        def kill() -> None:
            timed_out.set()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

        watchdog = threading.Timer(SIDE_TIMEOUT_S, kill)
        watchdog.start()
        watch = SideWatch(proc.pid, tag, mem_interval)
        # Rounds after which the driver samples at once (all workers up, mid-run and late).
        probes = {max(1, rounds // 2), max(1, rounds - 1)}
        try:
            with watch:
                assert proc.stdout is not None
                for line in proc.stdout:
                    if line.startswith("@@round "):
                        _, n, acc, _secs = line.split()
                        watch.phase = "rounds" if int(n) < rounds else "shutdown"
                        if int(n) in probes:
                            watch.sample(census=True)
                        on_round(int(n), float(acc))
                proc.wait()
                t_exit = time.perf_counter()
        finally:
            watchdog.cancel()
            if proc.poll() is None:  # interrupted: take the child (and its Ray) down too
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    process_s = t_exit - t_spawn
    leftovers = end_leftovers(tag)
    name = Path(cmd[1]).name
    if timed_out.is_set():
        return {"ok": False, "error": f"{name} did not finish in {SIDE_TIMEOUT_S} s and was "
                                      "killed", "log_tail": _tail(log)}
    if not out.exists():
        return {"ok": False, "error": f"{name} exited {proc.returncode} without a result",
                "log_tail": _tail(log)}
    result = dict(json.loads(out.read_text()))
    result.update(process_s=process_s, **watch.report(), leftover_processes=leftovers)
    if result.get("ok"):
        result.update(derived(result, t_spawn))
    else:
        result["log_tail"] = _tail(log)
    return result


def derived(run: dict[str, Any], t_spawn: float) -> dict[str, Any]:
    """One run's figures: steady round (median of rounds 2..N), first round, cold start."""
    secs = [r["seconds"] for r in run["history"]]
    steady = secs[1:] if len(secs) > 1 else secs
    return {"steady_round_s": float(np.median(steady)), "first_round_s": secs[0],
            "cold_start_s": run["t_first_round"] - t_spawn,
            "rounds_s": float(sum(secs))}


def side_command(side: str, task_json: Path, rep: int, args: argparse.Namespace
                 ) -> tuple[list[str], Path, dict[str, str]]:
    out = task_json.parent / f"{side}-{rep}.json"
    if side == "flower":
        cmd = [str(PEER.python), str(HERE / "flower_side.py"), "--task", str(task_json),
               "--out", str(out), "--client-cpus", str(args.client_cpus)]
        return cmd, out, peer_env()
    cmd = [sys.executable, str(HERE / "privml_side.py"), "--engine", side, "--task",
           str(task_json), "--out", str(out), "--workers", str(WORKERS)]
    return cmd, out, {**os.environ, "PYTHONUNBUFFERED": "1"}


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


# --------------------------------------------------------------------------- the machine


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


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


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


def src_digest() -> str:
    """A digest of privml's source: a run whose source changed midway is flagged."""
    import hashlib

    h = hashlib.sha256()
    for path in sorted((ROOT / "src" / "privml").rglob("*.py")):
        h.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                              capture_output=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=TASK["rounds"],
                    help=f"rounds per federation (the recorded figure uses {TASK['rounds']})")
    ap.add_argument("--repeats", type=int, default=5,
                    help="runs per side, order rotated each time; medians are kept")
    ap.add_argument("--sides", default=",".join(SIDES),
                    help=f"comma-separated subset of {','.join(SIDES)}")
    ap.add_argument("--client-cpus", type=float, default=1.0,
                    help="Flower's client_resources num_cpus (Ray actors = cores / this)")
    ap.add_argument("--mem-interval", type=float, default=0.05, metavar="SECONDS",
                    help="the shortest pause between two samples of a side's memory (it "
                         "grows to keep the sampler under 5%% of a core)")
    ap.add_argument("--wait-quiet", type=float, default=60.0, metavar="SECONDS",
                    help="before each run, wait up to this long for other work on the "
                         "machine to stop (then run anyway, with a warning)")
    ap.add_argument("--out", type=Path, default=None,
                    help="JSON result (default bench/results/sim_vs_flower.json; quick "
                         "checks with fewer rounds go to sim_vs_flower.quick.json)")
    args = ap.parse_args(argv)
    if args.rounds < 1 or args.repeats < 1:
        ap.error("--rounds and --repeats must be >= 1")
    args.sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    if not args.sides or set(args.sides) - set(SIDES):
        ap.error(f"--sides must name some of {', '.join(SIDES)}")
    if not 0 < args.client_cpus <= (os.cpu_count() or 1):
        # Flower's Ray backend would build an empty actor pool and stop.
        ap.error(f"--client-cpus must be in (0, {os.cpu_count()}], the cores Ray is given")
    return args


class Runs:
    """Each side's runs so far, and why a side stopped (if it did)."""

    def __init__(self, sides: list[str]) -> None:
        self.runs: dict[str, list[dict[str, Any]]] = {s: [] for s in sides}
        self.errors: dict[str, str | None] = dict.fromkeys(sides)

    def add(self, side: str, run: dict[str, Any]) -> None:
        self.runs[side].append(run)
        if not run.get("ok"):
            why = f"{SIDES[side]} failed: {run.get('error')}"
            cause = root_cause(run.get("log_tail", ""))
            if cause and cause not in why:
                why += f" (first error in its log: {cause})"
            console.print(f"[red]{escape(why)}[/]\n[dim]{escape(run.get('log_tail', ''))}[/]")
            self.errors[side] = why
        elif run.get("warning"):
            console.print(f"[bold red]warning:[/] {escape(run['warning'])}")
        if run.get("outside_tree", {}).get("rounds"):
            console.print(f"[yellow]{SIDES[side]}: processes outside its tree during the "
                          f"rounds (counted through their environment tag): "
                          f"{run['outside_tree']['rounds']}[/]")


def run_repeats(args: argparse.Namespace, task_json: Path, runs: Runs) -> None:
    """Every side, ``--repeats`` times, the order rotated each repeat so that a drift in
    the machine's speed hits all alike; a side that fails is not run again."""
    log = RESULTS / "sim_vs_flower.log.tmp"
    log.unlink(missing_ok=True)
    bar = Progress(TextColumn("{task.description:<26}"), MofNCompleteColumn(), BarColumn(),
                   TextColumn("acc {task.fields[acc]:.3f}"), TimeElapsedColumn(),
                   console=console)
    order = [s for s in SIDES if s in runs.runs]
    with bar:
        for rep in range(args.repeats):
            for side in order[rep % len(order):] + order[:rep % len(order)]:
                if runs.errors[side] is not None:
                    continue
                busy = wait_quiet(args.wait_quiet)
                if busy is not None and busy > BUSY_WARN:
                    console.print(f"[yellow]the machine is {busy:.0%} busy before "
                                  f"{SIDES[side]} run {rep + 1}: its timing will suffer[/]")
                t = bar.add_task(f"{SIDES[side]:<14} run {rep + 1}/{args.repeats}",
                                 total=args.rounds, acc=0.0)
                cmd, out, env = side_command(side, task_json, rep, args)
                run = run_side(cmd, out, env, log, rounds=args.rounds,
                               mem_interval=args.mem_interval,
                               on_round=lambda n, acc, t=t: bar.update(t, completed=n,
                                                                       acc=acc))
                bar.stop_task(t)
                run["cpu_busy_before"] = busy
                runs.add(side, run)


def header(args: argparse.Namespace, cfg: Any, recorded: bool) -> dict[str, Any]:
    import ray
    import torch

    import privml

    quick = "" if recorded else f" --rounds {args.rounds}"
    return {
        "benchmark": "sim_vs_flower",
        "command": COMMAND + quick + (f" --repeats {args.repeats}" if args.repeats != 5
                                      else ""),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d"), "privml_commit": git_commit(),
        "privml_src_digest": src_digest(),
        "rounds": args.rounds, "repeats": args.repeats, "sides": args.sides,
        "config": cfg.to_dict(), "workers": WORKERS, "machine": machine(),
        "load_average_at_start": load_average(),
        "versions": {"privml": privml.__version__, "torch": torch.__version__,
                     "numpy": np.__version__, "ray": ray.__version__},
        "flower_client_cpus": args.client_cpus, "caveats": CAVEATS,
    }


def main(argv: list[str] | None = None) -> int:
    from privml.sim import SimConfig

    args = parse_args(argv)
    # `timeout`, a CI runner or kill send SIGTERM: unwind, so the children are ended too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    recorded = args.rounds == TASK["rounds"] and args.sides == list(SIDES)
    out = args.out or RESULTS / ("sim_vs_flower.json" if recorded else
                                 "sim_vs_flower.quick.json")
    RESULTS.mkdir(parents=True, exist_ok=True)
    cfg = SimConfig(**{**TASK, "rounds": args.rounds})
    result = header(args, cfg, recorded)
    runs = Runs(args.sides)
    if "flower" in args.sides:
        try:
            peer = ensure_peer_venv()
            result["versions"].update({f"peer_{k}": v for k, v in peer.items()})
            if not peer["flwr"].startswith("1.42."):
                console.print(f"[yellow]flwr {peer['flwr']} in the peer venv, not 1.42[/]")
        except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
            runs.errors["flower"] = f"could not set up Flower's venv: {exc}"
            console.print(f"[red]{escape(runs.errors['flower'])}[/]")

    with tempfile.TemporaryDirectory(prefix="sim_vs_flower-") as tmp:
        console.print("writing the task and recording privml's client schedule ...")
        task_json, keep = write_task(cfg, Path(tmp))
        result.update(keep)
        run_repeats(args, task_json, runs)
    result.update(runs=runs.runs, errors=runs.errors)
    result["summary"] = summarize(result)
    result["privml_src_digest_at_end"] = src_digest()
    result["warnings"] = warnings(result, runs)
    result["load_average_at_end"] = load_average()
    out.write_text(json.dumps(result, indent=2, default=_jsonable) + "\n")
    png = plot(result, out.with_suffix(".png"))
    console.print(report_table(result))
    console.print(f"results: {_rel(out)}, {_rel(png) if png else 'no plot'}")
    if recorded:
        update_benchmarks_md(markdown_section(result))
        console.print(f"updated {_rel(BENCHMARKS_MD)}")
    else:
        console.print(f"[yellow]{args.rounds} rounds or a subset of sides: a quick check, "
                      f"BENCHMARKS.md left as it is (the recorded figure uses "
                      f"{TASK['rounds']} rounds, every side)[/]")
    return 0 if all(e is None for e in runs.errors.values()) else 1


def warnings(result: dict[str, Any], runs: Runs) -> list[str]:
    every = [r for rs in runs.runs.values() for r in rs]
    found = sorted({r["warning"] for r in every if r.get("warning")})
    busiest = max((r.get("cpu_busy_before") or 0.0 for r in every), default=0.0)
    if busiest > BUSY_WARN:
        found.append(f"the machine was up to {busiest:.0%} busy with other work just before "
                     "a run; rerun on a quiet machine")
    left = sorted({n for r in every for n in r.get("leftover_processes", [])})
    if left:
        found.append(f"processes outlived their side and were ended: {', '.join(left)}")
    if result["privml_src_digest"] != result["privml_src_digest_at_end"]:
        found.append("privml's source (src/privml) changed while the benchmark ran: its "
                     "runs may mix two versions")
    if not result["recording"]["same_rows_as_written"]:
        found.append("privml trained on other rows than those written for the other sides")
    return found


def _rel(path: Path) -> Path:
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def _jsonable(obj: object) -> object:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")


if __name__ == "__main__":
    sys.exit(main())
