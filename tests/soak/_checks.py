"""What the soak checks at the end, against the coordinator's store and the client logs.

Each check returns its figures and appends what failed to ``problems`` (the test asserts
it is empty), so one run reports every broken property, not just the first.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from privml import params as pm
from privml.strategies import ClientUpdate, ServerState, make_strategy
from privml.transport._store import CoordinatorStore

Params = dict[str, np.ndarray]
# What an unhandled exception or a server error leaves in the coordinator's output.
_BAD_LOG = re.compile(r"Traceback|Exception in ASGI|Error in ASGI|Internal Server Error"
                      r"|Task exception was never retrieved|storage failed")


def read_client_logs(logs: Path) -> list[dict[str, Any]]:
    events = []
    for f in sorted(logs.glob("clients-*.jsonl")):
        events += [json.loads(line) for line in f.read_text().splitlines() if line]
    return events


def check_counts(store: CoordinatorStore, run_id: str, events: list[dict[str, Any]],
                 problems: list[str]) -> dict[str, Any]:
    """Every accepted update counted exactly once, matching the client logs one to one."""
    told = [e for e in events if e["ev"] == "accepted"]
    told_ids = Counter(e["update_id"] for e in told)
    twice = [u for u, n in told_ids.items() if n > 1]
    if twice:
        problems.append(f"update ids told accepted more than once: {twice[:5]}")
    stored = store.updates(run_id)
    ids = Counter(u.update_id for u in stored)
    if any(n > 1 for n in ids.values()):
        problems.append("an update id is stored twice")
    per_round = Counter((u.round, u.client_id) for u in stored)
    if any(n > 1 for n in per_round.values()):
        problems.append("a client has two updates stored for one round")
    unknown = {e["update_id"] for e in events if e["ev"] == "update_unknown"}
    by_id = {e["update_id"]: e for e in told}
    missing = set(by_id) - set(ids)
    if missing:
        problems.append(f"{len(missing)} updates told accepted are not in the store: "
                        f"{sorted(missing)[:5]}")
    unlogged = set(ids) - set(by_id) - unknown
    if unlogged:
        problems.append(f"{len(unlogged)} stored updates no client was told were accepted: "
                        f"{sorted(unlogged)[:5]}")
    for u in stored:
        e = by_id.get(u.update_id)
        if e is not None and (e["sha256"], e["round"], e["client"], e["examples"]) != (
                u.body_sha256, u.round, u.client_id, u.num_examples):
            problems.append(f"stored update {u.update_id} differs from the client's log")
    # No body a client sent as a fault may ever have been counted.
    genuine = {e["sha256"] for e in told}
    fault_shas = {e["sha256"] for e in events if e["ev"] == "fault" and e.get("sha256")
                  and e["kind"] not in ("replay_same_update", "replay_old_update",
                                        "second_update_same_round",
                                        "replay_old_round_new_id")} - genuine
    counted = fault_shas & {u.body_sha256 for u in stored}
    if counted:
        problems.append(f"{len(counted)} garbage bodies were counted")
    return {"updates_accepted": len(stored), "updates_told_accepted": len(told),
            "told_accepted_on_a_resend_after_a_lost_answer": sum(
                1 for e in told if e["duplicate"]),
            "updates_unresolved": len(unknown)}


def check_rounds(store: CoordinatorStore, run_id: str,
                 problems: list[str]) -> dict[str, Any]:
    """Rounds numbered 1..N without a gap, each closed with an outcome (the last one may
    be open: the soak ends with an admin's stop, which abandons it), and each round's
    accepted clients exactly the ones whose updates the store holds for it."""
    rounds = store.rounds(run_id)
    numbers = [r.round for r in rounds]
    if numbers != list(range(1, len(rounds) + 1)):
        problems.append(f"round numbers are not consecutive from 1: {numbers[:20]}...")
    open_ = [r.round for r in rounds if r.outcome == "open"]
    if open_ and open_ != [numbers[-1]]:
        problems.append(f"rounds left open before the last: {open_}")
    updates: dict[int, set[str]] = {}
    for u in store.updates(run_id):
        updates.setdefault(u.round, set()).add(u.client_id)
    for r in rounds:
        got = updates.get(r.round, set())
        if not got <= set(r.sampled):
            problems.append(f"round {r.round}: updates from clients it did not sample")
        if r.outcome != "open" and set(r.accepted) != got:
            problems.append(f"round {r.round}: closed with {sorted(r.accepted)}, the store "
                            f"holds updates from {sorted(got)}")
    outcomes = Counter(r.outcome for r in rounds)
    return {"rounds": len(rounds), "rounds_completed": outcomes.get("completed", 0),
            "rounds_failed": outcomes.get("failed", 0),
            "rounds_open_at_stop": outcomes.get("open", 0),
            "run_status": store.run(run_id).status}


def check_replay(store: CoordinatorStore, run_id: str, events: list[dict[str, Any]],
                 final_model: Params | None, problems: list[str]) -> dict[str, Any]:
    """Replay the accepted updates (bodies from the client logs, order and weights from the
    store) through the run's strategy from the initial model; every round's stored model,
    and the final one the server wrote, must equal the replay's."""
    run = store.run(run_id)
    strategy = make_strategy(run.config["strategy"], mu=run.config["mu"],
                             server_lr=run.config["server_lr"])
    bodies = {e["update_id"]: base64.b64decode(e["body"]) for e in events
              if e["ev"] == "accepted"}
    params = pm.decode(store.model(run_id, 0)[0])
    state, worst, replayed = ServerState(), 0.0, 0
    pure, pure_state = params, ServerState()  # never reset to the stored models
    for r in store.rounds(run_id):
        if r.outcome == "open":
            break
        if r.outcome == "completed":
            ups = []
            for u in store.updates(run_id, round_=r.round):
                body = bodies.get(u.update_id)
                if body is None or hashlib.sha256(body).hexdigest() != u.body_sha256:
                    problems.append(f"round {r.round}: no body for update {u.update_id}")
                    return {"replayed_rounds": replayed}
                ups.append(ClientUpdate(pm.decode(body), u.num_examples))
            params, state = strategy.aggregate(params, ups, state)
            pure, pure_state = strategy.aggregate(pure, ups, pure_state)
        stored = pm.decode(store.model(run_id, r.round)[0])
        diff = float(np.max(np.abs(pm.flatten(stored) - pm.flatten(params))))
        worst = max(worst, diff)
        if diff > 1e-5:
            problems.append(f"round {r.round}: stored model differs from the replay by {diff}")
            return {"replayed_rounds": replayed}
        params = stored  # the next round starts from exactly what the server held
        replayed += 1
    # The whole run replayed in one go, from the initial model: the final model must match.
    end = float(np.max(np.abs(pm.flatten(pure) - pm.flatten(params))))
    if final_model is not None:
        end = max(end, float(np.max(np.abs(pm.flatten(final_model) - pm.flatten(pure)))))
    else:
        problems.append("no final model to compare with the replay")
    if end > 1e-4:
        problems.append(f"the final model differs from a replay of the whole run by {end}")
    return {"replayed_rounds": replayed, "replay_max_abs_diff_per_round": worst,
            "replay_final_max_abs_diff": end}


def check_server_logs(logs: Path, problems: list[str]) -> dict[str, Any]:
    bad = []
    for f in sorted(logs.glob("server-*.log")):
        for n, line in enumerate(f.read_text(errors="replace").splitlines(), 1):
            if _BAD_LOG.search(line):
                bad.append(f"{f.name}:{n}: {line[:200]}")
    if bad:
        problems.append(f"{len(bad)} error lines in the server logs, first: {bad[:5]}")
    return {"server_log_error_lines": len(bad)}


def check_faults(events: list[dict[str, Any]], problems: list[str]) -> dict[str, Any]:
    faults = [e for e in events if e["ev"] == "fault"]
    wrong = [e for e in faults if not e["ok"]]
    if wrong:
        sample = [{k: e.get(k) for k in ("kind", "status", "code")} for e in wrong[:5]]
        problems.append(f"{len(wrong)} faults got the wrong answer: {sample}")
    errors = [e for e in events if e["ev"] == "server_error"]
    if errors:
        problems.append(f"{len(errors)} 5xx answers seen by clients: {errors[:3]}")
    return {
        "faults_injected": dict(sorted(Counter(e["kind"] for e in faults).items())),
        "faults_answered_wrongly": len(wrong),
        "fault_refusals_by_code": dict(sorted(Counter(
            f"{e['status']} {e['code']}" for e in faults
            if e["status"] is not None and e["status"] >= 400).items())),
        "faults_unanswered_server_down": sum(1 for e in faults if e["status"] is None
                                             and e.get("error") not in (None, "sent")
                                             and e["kind"].startswith(("garbage", "replay",
                                                                       "second"))),
        "genuine_updates_refused": dict(Counter(
            e["code"] for e in events if e["ev"] == "update_refused")),
        "client_restarts": sum(1 for e in events if e["ev"] == "client_restart"),
        "client_5xx": len(errors),
    }
