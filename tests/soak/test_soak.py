"""The fault soak (issue 12): a coordinator on loopback and 100 clients, each with its own
certificate, in 8 processes; clients disconnect, go away, send garbage and replay old
updates, and the coordinator is SIGKILLed at random moments and resumed with ``--resume``.

It runs for ``PRIVML_SOAK_SECONDS`` (600 under ``make soak``), ends the run with an admin's
stop, and then checks: every accepted update counted exactly once and matching the client
logs one to one; rounds consecutive, each closed with an outcome; every stored model (and
the final one) equal to a replay of the accepted updates; no unhandled exception or 5xx;
memory flat. Its figures go to ``bench/results/soak.json``.

Without secure aggregation or DP: the replay is then exact. With ``--secagg`` the store
would hold no update bodies (only the masked sum is ever seen), so the replay would check
each round's model against the revealed sums instead, and a kill mid-round would abort the
secure round (SecAgg state is not persisted) rather than resume it.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from privml.models import load_model
from privml.transport._store import CoordinatorStore
from privml.transport._tokens import TokenStore, default_tokens_path
from privml.transport.tls import client_ssl_context, init_federation, issue_client
from tests.soak import _checks
from tests.soak._procs import ClientProcs, Coordinator

DURATION = float(os.environ.get("PRIVML_SOAK_SECONDS", "600"))
SEED = int(os.environ.get("PRIVML_SOAK_SEED", "12"))
CLIENTS, PROCESSES = 100, 8
SERVER_FLAGS = ["--rounds", "100000", "--clients-per-round", "10", "--min-updates", "2",
                "--round-timeout", "8", "--epochs", "1", "--eval-every", "0",
                "--model", "logreg", "--seed", str(SEED), "--exit-when-done"]
RESULTS = Path(os.environ.get("PRIVML_SOAK_RESULTS", Path(__file__).resolve().parents[2]
                              / "bench" / "results" / "soak.json"))
SAMPLE_EVERY = 5.0
# Memory counts as flat when the last incarnation's server, and every client process, grew
# by less than this between its early sample (after warm-up) and the end.
MAX_GROWTH_MIB = 64.0
WARMUP = 30.0


def kill_times(rng: random.Random) -> list[float]:
    """SIGKILLs spread over the first 70 % of the run (so the last coordinator lives long
    enough to show whether its memory is flat), at least 15 s apart."""
    n = max(1, round(DURATION / 75))
    while True:
        times = sorted(rng.uniform(0.1 * DURATION, 0.7 * DURATION) for _ in range(n))
        if all(b - a >= 15 for a, b in itertools.pairwise(times)):
            return times


def admin_stop(fed: Path, port: int) -> None:
    token = TokenStore(default_tokens_path(fed)).create("admin", label="soak")
    with httpx.Client(verify=client_ssl_context(fed / "ca.pem"), timeout=30) as h:
        r = h.post(f"https://127.0.0.1:{port}/v1/admin/stop",
                   headers={"Authorization": f"Bearer {token}", "X-Privml-Protocol": "1"})
    assert r.status_code == 200, r.text


def early_and_late(samples: list[tuple[float, dict[str, int]]], start: float,
                   warmup: float = WARMUP) -> dict[str, Any]:
    """The first sample after warm-up and the last one (RSS and PSS, MiB)."""
    usable = [(t, m) for t, m in samples if m and t - start >= warmup] or \
        [(t, m) for t, m in samples if m]
    (t0, a), (t1, b) = usable[0], usable[-1]

    def mib(m: dict[str, int]) -> dict[str, float]:
        return {k.removesuffix("_kib"): round(v / 1024, 1) for k, v in m.items()}

    every = [round(m["rss_kib"] / 1024, 1) for t, m in samples[::6] if m]  # ~every 30 s
    return {"early_at_s": round(t0 - start, 1), "late_at_s": round(t1 - start, 1),
            "early_mib": mib(a), "late_mib": mib(b),
            "rss_growth_mib": round((b["rss_kib"] - a["rss_kib"]) / 1024, 1),
            "rss_mib_every_30s": every}


def drive(coord: Coordinator, clients: ClientProcs, rng: random.Random) -> dict[str, Any]:
    """Run the soak's clock: SIGKILL and resume the coordinator on schedule, sample memory."""
    t0 = time.monotonic()
    kills = kill_times(rng)
    next_sample, pending = t0, list(kills)
    restarts = []
    while (now := time.monotonic()) - t0 < DURATION:
        if pending and now - t0 >= pending[0]:
            pending.pop(0)
            coord.sample_memory(now)
            coord.kill()
            began = time.monotonic()
            time.sleep(rng.uniform(0, 5))  # down a while: clients meet a closed port
            coord.start(resume=True)
            coord.wait_for("resuming run", timeout=60)
            restarts.append(round(time.monotonic() - began, 2))
        if now >= next_sample:
            coord.sample_memory(now)
            clients.sample_memory(now)
            next_sample = now + SAMPLE_EVERY
        for p in clients.procs:
            assert p.poll() is None, f"a client process exited early ({p.returncode})"
        time.sleep(0.2)
    coord.sample_memory(time.monotonic())
    clients.sample_memory(time.monotonic())
    return {"kills": len(kills), "down_seconds": restarts}


@pytest.mark.soak
@pytest.mark.timeout(int(DURATION) + 900)
def test_fault_soak(tmp_path: Path) -> None:
    fed, logs = tmp_path / "fed", tmp_path / "logs"
    logs.mkdir()
    init_federation(fed)
    names = [f"c{i:03d}" for i in range(CLIENTS)]
    for name in names:
        issue_client(fed, name)
    coord = Coordinator(fed, logs, SERVER_FLAGS)
    clients = ClientProcs(f"https://127.0.0.1:{coord.ports[0]}", fed, logs,
                          tmp_path / "stop", SEED)
    coord.start(resume=False)
    started = time.monotonic()
    try:
        clients.start(names, PROCESSES)
        timing = drive(coord, clients, random.Random(SEED))
        admin_stop(fed, coord.ports[1])
        server_rc = coord.current.proc.wait(120)
        coord.current.ended = f"exited {server_rc}"
        client_rcs = clients.stop()
    finally:
        for p in (*(life.proc for life in coord.lives), *clients.procs):
            if p.poll() is None:
                p.kill()
    elapsed = time.monotonic() - started
    figures, problems = report(tmp_path, coord, clients, timing, elapsed)
    figures.update(server_exit_code=server_rc, client_exit_codes=client_rcs)
    if server_rc != 0:
        problems.append(f"the last coordinator exited with {server_rc}")
    if any(rc != 0 for rc in client_rcs):
        problems.append(f"client processes exited with {client_rcs}")
    figures["problems"] = problems
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
    print(summary(figures))
    assert not problems, "\n".join(problems)


def report(tmp: Path, coord: Coordinator, clients: ClientProcs, timing: dict[str, Any],
           elapsed: float) -> tuple[dict[str, Any], list[str]]:
    problems: list[str] = []
    events = _checks.read_client_logs(tmp / "logs")
    with CoordinatorStore(tmp / "fed" / "server.db") as store:
        (run_id,) = store.run_ids()
        models = list((tmp / "fed" / "runs").glob("*/model.safetensors"))
        final = load_model(models[0])[1] if models else None
        if final is None:
            problems.append("the server wrote no final model")
        figures: dict[str, Any] = {
            "duration_s": round(elapsed, 1), "clients": CLIENTS, "client_processes":
            PROCESSES, "server_flags": SERVER_FLAGS, "seed": SEED,
            **_checks.check_rounds(store, run_id, problems),
            **_checks.check_counts(store, run_id, events, problems),
            **_checks.check_replay(store, run_id, events, final, problems),
            "server_kills": timing["kills"], "server_restarts": len(coord.lives) - 1,
            "down_seconds": timing["down_seconds"],
            **_checks.check_faults(events, problems),
            **_checks.check_server_logs(tmp / "logs", problems),
            "refusals_by_code_server_log": store_refusals(store),
        }
    if figures["rounds"] < max(5, DURATION / 30):
        problems.append(f"the run advanced only {figures['rounds']} rounds")
    figures["memory"] = memory_figures(coord, clients, problems)
    return figures, problems


def store_refusals(store: CoordinatorStore) -> dict[str, int]:
    counts: dict[str, int] = {}
    for e in store.security_events(limit=10**7):
        counts[e["code"]] = counts.get(e["code"], 0) + 1
    return dict(sorted(counts.items()))


def memory_figures(coord: Coordinator, clients: ClientProcs,
                   problems: list[str]) -> dict[str, Any]:
    lives = []
    for life in coord.lives:
        samples = [(t, m) for t, _, m in life.memory]
        if samples:
            lives.append({"incarnation": life.number, "ended": life.ended,
                          "lived_s": round(samples[-1][0] - life.started, 1),
                          **early_and_late(samples, life.started)})
    last = lives[-1]
    if last["rss_growth_mib"] > MAX_GROWTH_MIB:
        problems.append(f"the last coordinator's RSS grew {last['rss_growth_mib']} MiB")
    procs = []
    start = clients.memory[0][0] if clients.memory else 0.0
    for i in range(len(clients.procs)):
        samples = [(t, ms[i]) for t, ms in clients.memory]
        # A client process warms up for minutes: each of its threads trains for the first
        # time only when sampled (torch's per-thread state, malloc's per-thread arenas).
        procs.append(early_and_late(samples, start, max(60.0, 0.25 * DURATION)))
        if procs[-1]["rss_growth_mib"] > MAX_GROWTH_MIB:
            problems.append(f"client process {i}'s RSS grew {procs[-1]['rss_growth_mib']} MiB")
    return {"bound_mib": MAX_GROWTH_MIB, "server": lives, "client_processes": procs}


def summary(f: dict[str, Any]) -> str:
    last = f["memory"]["server"][-1]
    return "\n".join([
        f"soak: {f['duration_s']} s, {f['rounds']} rounds ({f['rounds_completed']} completed,"
        f" {f['rounds_failed']} failed, {f['rounds_open_at_stop']} open at the stop), "
        f"{f['updates_accepted']} updates accepted",
        f"  server: {f['server_kills']} SIGKILLs, {f['server_restarts']} resumes "
        f"(down {f['down_seconds']} s)",
        f"  faults: {sum(f['faults_injected'].values())} injected {f['faults_injected']}",
        f"  refusals (server log): {f['refusals_by_code_server_log']}",
        f"  replay: {f['replayed_rounds']} rounds, max |diff| "
        f"{f.get('replay_max_abs_diff_per_round')} per round, "
        f"{f.get('replay_final_max_abs_diff')} for the final model",
        f"  memory: last coordinator RSS {last['early_mib']} -> {last['late_mib']} MiB "
        f"over {last['late_at_s'] - last['early_at_s']:.0f} s",
        "  memory: client processes RSS growth (MiB) "
        f"{[p['rss_growth_mib'] for p in f['memory']['client_processes']]}",
        f"  problems: {f['problems'] or 'none'}",
    ])
