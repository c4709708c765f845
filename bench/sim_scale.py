"""The simulator at scale: 10,000 Fashion-MNIST clients, and 100,000 synthetic ones.

    .venv/bin/python bench/sim_scale.py            # the recorded figures (~4 min on 2 idle cores)
    .venv/bin/python bench/sim_scale.py --quick    # a few rounds of each (-> *.quick.json/png)
    .venv/bin/python bench/sim_scale.py --only synthetic      # one part, the rest kept
    .venv/bin/python bench/sim_scale.py --report-only         # redraw from the JSON

Three parts, every measurement a fresh process (``bench/sim_scale_child.py``), backend
``local`` with ``--workers`` (2) worker processes:

- ``fashion``: Fashion-MNIST split over 10,000 clients by a Dirichlet(0.3) label draw,
  100 a round, zoo ``mlp``, 1 local epoch of SGD, batch 32: seconds per round (median of
  the rounds after ``--warmup``), start-up, peak memory, final accuracy, the engine picked.
- ``scaling``: the same federation with 10 .. 1,000 clients a round; seconds per round
  against the examples trained per round (clients x examples each), beside the ideal
  proportional growth; the inline backend at a few sizes for reference, and vectorize
  forced on and off at ``--engine-sizes``; a plot.
- ``synthetic``: 1,000,000 synthetic rows (``privml.data.make_synthetic``), logistic
  regression, IID over 1,000 / 10,000 / 100,000 clients, 100 a round: peak memory against
  the clients' index lists (8 bytes per row of the concatenated index, 8 per client offset).

Memory is PSS (proportional set size) of the child's whole process tree, coordinator and
workers, sampled every ``--sample-interval`` seconds from this process with
``privml.sim._memory.PeakSampler(pid=child.pid)``; the child adds each process's exact peak
RSS (VmHWM) and a PSS breakdown after its last round. Results: ``bench/results/sim_scale.json``,
the plot ``bench/results/sim_scale.png`` and a section of ``BENCHMARKS.md``, made from the
JSON by ``sim_scale_report.py`` (tables), ``sim_scale_notes.py`` (verdicts, findings,
caveats), ``sim_scale_plot.py`` and ``sim_scale_figures.py`` (the figures they share).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from sim_scale_report import render

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
CHILD = HERE / "sim_scale_child.py"
COMMAND = ".venv/bin/python bench/sim_scale.py"
PARTS = ("fashion", "scaling", "synthetic")

console = Console(stderr=True)


# ----------------------------------------------------------------------------- settings

def fashion_spec(args: argparse.Namespace, per_round: int, rounds: int,
                 backend: str = "local", vectorize: str = "auto") -> dict[str, Any]:
    return {"dataset": "fashion-mnist", "model": args.model, "clients": 10_000,
            "per_round": per_round, "rounds": rounds, "alpha": 0.3, "epochs": 1,
            "batch_size": 32, "lr": args.lr, "momentum": 0.9, "seed": 0, "backend": backend,
            "workers": args.workers if backend != "inline" else None,
            "vectorize": vectorize}


def synthetic_spec(args: argparse.Namespace, clients: int) -> dict[str, Any]:
    return {"dataset": f"synthetic:{args.synthetic_rows}", "model": "logreg",
            "clients": clients, "per_round": 100, "rounds": args.synthetic_rounds,
            "alpha": None, "epochs": 1, "batch_size": 32, "lr": args.synthetic_lr,
            "momentum": 0.9, "seed": 0, "backend": "local", "workers": args.workers,
            "vectorize": "auto"}


def plan(args: argparse.Namespace) -> list[tuple[str, str, dict[str, Any]]]:
    """(part, label, SimConfig fields) of every measurement, in the order they run."""
    todo: list[tuple[str, str, dict[str, Any]]] = []
    if "fashion" in args.only:
        todo.append(("fashion", "fashion-mnist 10k clients, 100/round",
                     fashion_spec(args, 100, args.rounds)))
    if "scaling" in args.only:
        for k in args.sizes:
            todo.append(("scaling", f"scaling local {k}/round",
                         fashion_spec(args, k, args.scale_rounds)))
        for k in args.inline_sizes:
            todo.append(("scaling", f"scaling inline {k}/round",
                         fashion_spec(args, k, args.inline_rounds, backend="inline")))
        for k in args.engine_sizes:
            for v in ("on", "off"):
                todo.append(("scaling", f"scaling local {k}/round vectorize={v}",
                             fashion_spec(args, k, args.scale_rounds, vectorize=v)))
    if "synthetic" in args.only:
        # Repeats interleaved (1k, 10k, 100k, 1k, ...): a drift of the machine's state
        # then spreads over every client count instead of landing on one.
        for rep in range(args.synthetic_repeats):
            for c in args.synthetic_clients:
                todo.append(("synthetic", f"synthetic {args.synthetic_rows:,} rows, {c:,} "
                             f"clients #{rep + 1}", synthetic_spec(args, c)))
    return todo


# ------------------------------------------------------------------------- one child run

def _reader(proc: subprocess.Popen[str], events: list[dict[str, Any]], progress: Progress,
            task: Any) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        events.append(event)
        if event.get("event") == "round":
            progress.update(task, completed=event["round"],
                            info=f"{event['seconds']:.3f} s  acc {event['accuracy']:.3f}")
        elif event.get("event") == "loaded":
            progress.update(task, info=f"data loaded ({event['load_s']:.1f} s)")


def cpu_busy(seconds: float = 1.0) -> float | None:
    """The fraction of the machine's CPU time spent busy over ``seconds``, read from
    /proc/stat while nothing of this benchmark runs: how much others are using it."""
    def ticks() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields[:8]), idle

    try:
        total0, idle0 = ticks()
        time.sleep(seconds)
        total1, idle1 = ticks()
    except (OSError, ValueError, IndexError):
        return None
    return 1.0 - (idle1 - idle0) / max(1, total1 - total0)


def _kill(proc: subprocess.Popen[str]) -> None:
    """SIGTERM the child's group (the child then closes its pool, and with it any temporary
    files the pool made), and SIGKILL whatever is left after 10 s."""
    for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, None)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def run_child(spec: dict[str, Any], label: str, progress: Progress, *, interval: float,
              timeout: float, log: Path) -> dict[str, Any]:
    """One measurement in a fresh process; its tree's peak PSS sampled from here."""
    from privml.sim._memory import PeakSampler

    task = progress.add_task(label, total=spec["rounds"], info="checking the CPUs are idle")
    busy = cpu_busy()
    load_before = os.getloadavg()
    events: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    with log.open("a") as err:
        err.write(f"\n=== {label} {json.dumps(spec)}\n")
        err.flush()
        # Its own session: a timeout kills the child's whole group (its workers too).
        proc = subprocess.Popen([sys.executable, str(CHILD), json.dumps(spec)], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=err, text=True,
                                start_new_session=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        with PeakSampler(pid=proc.pid, interval=interval) as sampler:
            reader = threading.Thread(target=_reader, args=(proc, events, progress, task),
                                      daemon=True)
            reader.start()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill(proc)
            except BaseException:  # Ctrl-C reaches only this group: take the child's down
                _kill(proc)
                raise
            reader.join(10)
    wall = time.perf_counter() - t0
    progress.update(task, completed=spec["rounds"], info=f"done in {wall:.0f} s")
    done = next((e for e in events if e.get("event") == "done"), None)
    out: dict[str, Any] = {"label": label, "spec": spec, "process_s": wall,
                           "peak_pss": sampler.peak, "pss_samples": sampler.samples,
                           "cpu_busy_before": busy, "loadavg_before": load_before,
                           "loadavg_after": os.getloadavg(),
                           "returncode": proc.returncode}
    if done is None:
        error = next((e for e in events if e.get("event") == "error"), None)
        out["error"] = (error or {}).get("error") or \
            f"no result (exit code {proc.returncode}; see {log.relative_to(ROOT)})"
        console.print(f"[red]{escape(label)}: {escape(out['error'])}")
        return out
    out.update(done["result"])
    return out


# ---------------------------------------------------------------------------- summaries

def steady(run: dict[str, Any], warmup: int) -> dict[str, Any]:
    """Medians over the rounds after ``warmup`` (all of them if there are no more)."""
    hist = run["history"]
    keep = list(range(warmup, len(hist))) or list(range(len(hist)))
    secs = [hist[i]["seconds"] for i in keep]
    epochs = run["spec"]["epochs"]
    examples = run.get("examples_per_round") or []
    ex = [epochs * examples[i] for i in keep if i < len(examples)]
    # Without counts (the hook found no Parallel.round), the expectation: per_round clients
    # of rows / clients examples each.
    expected = epochs * run["spec"]["per_round"] * run["rows"] / run["spec"]["clients"]
    return {"rounds_used": [hist[i]["round"] for i in keep],
            "seconds_per_round": statistics.median(secs),
            "seconds_min": min(secs), "seconds_max": max(secs),
            "examples_per_round": statistics.mean(ex) if ex else expected,
            "examples_counted": bool(ex),
            "train_s_per_round": statistics.median(secs) - run["eval_s"]}


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem = next(int(line.split()[1]) * 1024 for line in
                   Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
    except (OSError, StopIteration):
        mem = 0
    return {"cpu": cpu, "cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
            "memory_bytes": mem, "python": platform.python_version(),
            "platform": platform.platform()}


def commit() -> str | None:
    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True, check=False, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None


# --------------------------------------------------------------------------------- main

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    def ints(text: str) -> list[int]:
        return [int(v) for v in text.replace("_", "").split(",") if v.strip()]

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="a few rounds of each, written to sim_scale.quick.json/png "
                        "(BENCHMARKS.md untouched unless --markdown)")
    p.add_argument("--only", type=lambda s: [v for v in s.split(",") if v],
                   default=list(PARTS), help=f"comma-separated parts: {', '.join(PARTS)}")
    p.add_argument("--report-only", action="store_true",
                   help="redraw the plot and BENCHMARKS.md from the JSON; run nothing")
    p.add_argument("--markdown", action=argparse.BooleanOptionalAction, default=None,
                   help="refresh the BENCHMARKS.md section (default: yes, unless --quick)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--model", default="mlp", help="Fashion-MNIST model (mlp or logreg)")
    p.add_argument("--lr", type=float, default=0.1, help="Fashion-MNIST local SGD step")
    p.add_argument("--rounds", type=int, default=25, help="rounds of the 10,000-client run")
    p.add_argument("--sizes", type=ints, default=[10, 30, 100, 300, 1000],
                   help="clients per round of the scaling runs")
    p.add_argument("--scale-rounds", type=int, default=7)
    p.add_argument("--inline-sizes", type=ints, default=[10, 100, 1000],
                   help="inline-backend reference sizes ('' for none)")
    p.add_argument("--inline-rounds", type=int, default=5)
    p.add_argument("--engine-sizes", type=ints, default=[100, 1000],
                   help="sizes also run with vectorize on and off ('' for none)")
    p.add_argument("--synthetic-rows", type=int, default=1_000_000)
    p.add_argument("--synthetic-clients", type=ints, default=[1000, 10_000, 100_000])
    p.add_argument("--synthetic-rounds", type=int, default=8)
    p.add_argument("--synthetic-lr", type=float, default=0.5)
    p.add_argument("--synthetic-repeats", type=int, default=3,
                   help="fresh processes per client count (medians are reported)")
    p.add_argument("--warmup", type=int, default=2,
                   help="first rounds left out of the medians (vmap tracing, engine choice)")
    p.add_argument("--sample-interval", type=float, default=0.1,
                   help="seconds between PSS samples (one sample of a 3-process torch tree "
                        "costs ~20 ms of a core)")
    p.add_argument("--timeout", type=float, default=1200, help="per measurement, seconds")
    args = p.parse_args(argv)
    bad = [v for v in args.only if v not in PARTS]
    if bad:
        p.error(f"unknown part(s) {bad}; choose from {', '.join(PARTS)}")
    if args.quick:
        args.rounds, args.scale_rounds, args.inline_rounds = 5, 4, 3
        args.synthetic_rounds, args.synthetic_repeats = 3, 1
        args.sizes = [s for s in args.sizes if s in (10, 100, 1000)] or args.sizes
        args.inline_sizes = args.inline_sizes[:1]
        args.engine_sizes = args.engine_sizes[-1:]
        args.warmup = 1
    if args.markdown is None:
        args.markdown = not args.quick
    return args


def collect(args: argparse.Namespace, previous: dict[str, Any]) -> dict[str, Any]:
    todo = plan(args)
    log = RESULTS / "sim_scale.log.tmp"
    log.unlink(missing_ok=True)
    runs: dict[str, list[dict[str, Any]]] = {part: [] for part in args.only}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[info]}"), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        overall = progress.add_task("[bold]measurements", total=len(todo), info="")
        for part, label, spec in todo:
            runs[part].append(run_child(spec, label, progress, interval=args.sample_interval,
                                        timeout=args.timeout, log=log))
            progress.advance(overall)
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    results = dict(previous)
    results.update({"benchmark": "sim_scale", "command": " ".join([COMMAND, *sys.argv[1:]]),
                    "date": now, "commit": commit(), "machine": machine(),
                    "quick": args.quick, "sample_interval_s": args.sample_interval,
                    "warmup_rounds": args.warmup})
    for part in args.only:
        for run in runs[part]:
            if "history" in run:
                run["steady"] = steady(run, args.warmup)
        results[part] = {"recorded": now, "commit": results["commit"], "runs": runs[part]}
    return results


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through run_child, which kills the child's group


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    RESULTS.mkdir(exist_ok=True)
    stem = "sim_scale.quick" if args.quick else "sim_scale"
    json_path, png_path = RESULTS / f"{stem}.json", RESULTS / f"{stem}.png"
    previous = json.loads(json_path.read_text()) if json_path.exists() else {}
    if args.report_only:
        if not previous:
            raise SystemExit(f"{json_path} does not exist: run the benchmark first")
        results = {**previous, "json": json_path.name, "png": png_path.name}
    else:
        load = os.getloadavg()
        console.print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on "
                      f"{os.cpu_count()} cores" + ("  [yellow](busy: timings will be noisy)"
                                                   if load[0] > 1 else ""))
        results = collect(args, previous if set(args.only) != set(PARTS) else {})
        results.update(json=json_path.name, png=png_path.name)
        json_path.write_text(json.dumps(results, indent=1) + "\n")
        console.print(f"wrote {json_path.relative_to(ROOT)}")
    table = render(results, png_path=png_path, markdown=args.markdown)
    console.print(table)
    console.print(f"plot: {png_path.relative_to(ROOT)}"
                  + ("; BENCHMARKS.md section refreshed" if args.markdown else ""))
    failed = [r["label"] for part in PARTS for r in results.get(part, {}).get("runs", [])
              if "error" in r]
    if failed:
        console.print(f"[red]failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
