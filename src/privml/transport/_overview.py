"""What the dashboard and the runs page read: the current run's overview, and past runs.

Everything here is a pure function of the coordinator's memory or of its store, called by
:mod:`._dashboard` with ``state.lock`` held (the store's one SQLite connection is shared by
the coordinator's threads, which write under that lock). Per round a run shows: the
clients sampled, those that reported (updates accepted), dropped and out of time; the
clients enrolled when the round began where the live feed saw it; the federated
evaluation (example-weighted accuracy and loss on the clients' own held-out data, on
evaluation rounds only); and ε spent after the round (the privacy ledger) against the
target.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from privml.protocol import CloseRound
from privml.transport._coordinator import Coordinator
from privml.transport._store import CoordinatorStore, EvaluationRecord, RoundRecord
from privml.transport.server import SecurityEvent, ServerState

__all__ = ["overview", "run_detail", "run_summaries"]

RECENT_EVENTS = 20
_CONFIG_SHOWN = ("rounds", "clients_per_round", "min_updates", "strategy", "epochs", "lr",
                 "secagg", "dp_unit", "target_epsilon", "delta", "noise_multiplier",
                 "clip_norm", "eval_every", "seed", "round_timeout")


def _round_row(round_: int, outcome: str, *, sampled: Iterable[str] = (),
               accepted: tuple[str, ...], dropped: tuple[str, ...],
               timed_out: tuple[str, ...], enrolled: int | None) -> dict[str, Any]:
    names = set(sampled) | set(accepted) | set(dropped) | set(timed_out)
    return {"round": round_, "outcome": outcome, "enrolled": enrolled,
            "sampled": len(names), "reported": len(accepted), "dropped": len(dropped),
            "timed_out": len(timed_out)}


def _closed_row(close: CloseRound, enrolled: int | None) -> dict[str, Any]:
    return _round_row(close.round, close.outcome.value, accepted=close.accepted,
                      dropped=close.dropped, timed_out=close.timed_out, enrolled=enrolled)


def _evaluation_rows(evaluations: Iterable[Mapping[str, float]]) -> list[dict[str, Any]]:
    return [{"round": int(e["round"]), "accuracy": e.get("accuracy"), "loss": e.get("loss"),
             "examples": int(e.get("examples", 0)), "evaluators": int(e.get("evaluators", 0))}
            for e in evaluations]


def _privacy_rows(ledger: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [{"round": int(e["round"]), "epsilon": float(e["epsilon"])} for e in ledger]


def _security(events: Iterable[SecurityEvent], total: int) -> dict[str, Any]:
    items = list(events)
    recent = [{"at": e.at, "client": e.client, "path": e.path, "code": e.code,
               "detail": e.detail[:200]} for e in items[-RECENT_EVENTS:]][::-1]
    return {"total": total, "by_code": dict(Counter(e.code for e in items).most_common()),
            "recent": recent}


def _config(config: Mapping[str, Any]) -> dict[str, Any]:
    return {k: config[k] for k in _CONFIG_SHOWN if k in config}


def overview(state: ServerState, enrolled_at: Mapping[int, int]) -> dict[str, Any]:
    """The current run as the dashboard draws it (``state.lock`` held)."""
    security = _security(state.security_log, state.refusals)
    coord = state.current
    if coord is None:
        return {"run": None, "phase": "idle", "security": security, "rounds_table": [],
                "evaluations": [], "privacy": None, "config": None, "secagg": None}
    m = coord.machine
    rows = [_closed_row(c, enrolled_at.get(c.round)) for c in coord.history]
    secure = getattr(coord, "_secure", None)  # see _feed._secagg: no epsilon recomputed here
    return {
        "run": coord.run_id, "phase": m.phase.value, "round": m.round,
        "rounds": coord.config.rounds, "completed": m.completed, "failed": m.failed,
        "finished": coord.finished, "config": _config(coord.config.to_dict()),
        "current": {"enrolled": len(m.available), "sampled": len(m.sampled),
                    "accepted": len(m.accepted), "reported": len(m.reported),
                    "pending": len(m.pending)},
        "secagg": None if secure is None else dict(secure.status()),
        "rounds_table": rows,
        "evaluations": _evaluation_rows(coord.evaluations),
        "privacy": _privacy(coord),
        "security": security,
    }


def _privacy(coord: Coordinator) -> dict[str, Any] | None:
    if coord.privacy is None:
        return None
    ledger = coord.privacy.dp.ledger
    return {"target_epsilon": coord.config.target_epsilon, "delta": coord.config.delta,
            "dp_unit": coord.config.dp_unit, "per_round": _privacy_rows(ledger),
            "epsilon": float(ledger[-1]["epsilon"]) if ledger else 0.0,
            "budget_refused": coord.privacy.budget_refused}


def _final(rounds: list[RoundRecord], evaluations: list[EvaluationRecord],
           ledger: list[dict[str, Any]]) -> dict[str, Any]:
    closed = [r for r in rounds if r.outcome != "open"]
    scored = [e for e in evaluations if e.accuracy is not None]
    return {"rounds_closed": len(closed),
            "rounds_completed": sum(r.outcome == "completed" for r in closed),
            "accuracy": scored[-1].accuracy if scored else None,
            "loss": scored[-1].loss if scored else None,
            "epsilon": float(ledger[-1]["epsilon"]) if ledger else None}


def run_summaries(store: CoordinatorStore | None,
                  current: Coordinator | None) -> list[dict[str, Any]]:
    """Every run of ``store``, newest first, with its configuration and final figures."""
    out: list[dict[str, Any]] = []
    ids = store.run_ids() if store is not None else []
    for run_id in ids:
        assert store is not None  # nosec B101  # narrowing: ids is empty without a store
        run = store.run(run_id)
        out.append({"run": run_id, "created_at": run.created_at, "status": run.status,
                    "config": _config(run.config),
                    "clients": len(store.clients(run_id)),
                    **_final(store.rounds(run_id), store.evaluation_rounds(run_id),
                             store.ledger(run_id))})
    if current is not None and current.run_id not in ids:  # a run without a store
        out.append(_memory_summary(current))
    return out[::-1]


def _memory_summary(coord: Coordinator) -> dict[str, Any]:
    scored = [e for e in coord.evaluations if "accuracy" in e]
    ledger = coord.privacy.dp.ledger if coord.privacy is not None else []
    return {"run": coord.run_id, "created_at": None,
            "status": "finished" if coord.finished else "running",
            "config": _config(coord.config.to_dict()), "clients": None,
            "rounds_closed": len(coord.history),
            "rounds_completed": coord.machine.completed,
            "accuracy": scored[-1]["accuracy"] if scored else None,
            "loss": scored[-1]["loss"] if scored else None,
            "epsilon": float(ledger[-1]["epsilon"]) if ledger else None}


def run_detail(store: CoordinatorStore | None, current: Coordinator | None,
               run_id: str, enrolled_at: Mapping[int, int]) -> dict[str, Any] | None:
    """One run's configuration, final figures and per-round curves; None if unknown."""
    if store is not None and run_id in store.run_ids():
        run = store.run(run_id)
        rounds, evaluations = store.rounds(run_id), store.evaluation_rounds(run_id)
        ledger = store.ledger(run_id)
        live = current is not None and current.run_id == run_id
        rows = [_round_row(r.round, r.outcome, sampled=r.sampled, accepted=r.accepted,
                           dropped=r.dropped, timed_out=r.timed_out,
                           enrolled=enrolled_at.get(r.round) if live else None)
                for r in rounds if r.outcome != "open"]
        return {"run": run_id, "created_at": run.created_at, "status": run.status,
                "config": _config(run.config), "full_config": run.config,
                "clients": len(store.clients(run_id)),
                "final": _final(rounds, evaluations, ledger), "rounds_table": rows,
                "evaluations": _evaluation_rows(e.summary() for e in evaluations),
                "privacy": _privacy_rows(ledger),
                "target_epsilon": run.config.get("target_epsilon")}
    if current is not None and current.run_id == run_id:
        summary = _memory_summary(current)
        return {"run": run_id, "created_at": None, "status": summary["status"],
                "config": summary["config"], "full_config": current.config.to_dict(),
                "clients": None, "final": {k: summary[k] for k in (
                    "rounds_closed", "rounds_completed", "accuracy", "loss", "epsilon")},
                "rounds_table": [_closed_row(c, enrolled_at.get(c.round))
                                 for c in current.history],
                "evaluations": _evaluation_rows(current.evaluations),
                "privacy": _privacy_rows(current.privacy.dp.ledger
                                         if current.privacy is not None else []),
                "target_epsilon": current.config.target_epsilon}
    return None
