"""The coordinator's run state: the round state machine plus everything a server must check.

This is the HTTPS server's core, kept free of sockets so it is tested directly: the server
turns each request into one call here (``enrol``, ``task``, ``submit``, ``tick``) and each
:class:`~privml.PeerError` raised into a 4xx answer. Every check runs before any state
changes, so a refused request leaves the run exactly as it was. The clock is an argument.

With a :class:`~privml.transport._store.CoordinatorStore` every state change is written
before it is answered (see that module), and :meth:`Coordinator.resume` rebuilds the run
after a crash: the model and server state of the last closed round, every update id seen,
and the interrupted round with its sample and the updates it had already accepted. Each
round samples from a generator seeded by ``(seed, round)``, so a resumed run samples the
clients the uninterrupted one would have. If a round-close write fails, the in-memory run
has moved past the disk, so the coordinator refuses everything after it: the operator
resumes from the store, which is consistent.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from privml import params as pm
from privml._exceptions import ConfigError, DataError, ParamsError, ProtocolError, ReplayError
from privml.params import Params
from privml.protocol import (
    Action,
    Aggregate,
    ClientAvailable,
    CloseRound,
    Finished,
    Outcome,
    Phase,
    RoundConfig,
    RoundMachine,
    SendTask,
    Tick,
    UpdateReceived,
)
from privml.strategies import ClientUpdate, ServerState, make_strategy
from privml.transport._store import ClosedRound, CoordinatorStore, StoredState, StoredUpdate

__all__ = ["Coordinator", "RunConfig", "UpdateMeta", "federated_evaluation"]

_UPDATE_ID = re.compile(r"[A-Za-z0-9_-]{8,64}")


@dataclass(frozen=True, slots=True)
class RunConfig:
    """What the coordinator runs and how strictly it checks updates."""

    rounds: int = 30
    clients_per_round: int = 8
    min_updates: int = 1
    round_timeout: float = 60.0
    strategy: str = "fedavg"
    mu: float = 0.01
    server_lr: float = 0.1
    epochs: int = 5
    batch_size: int = 16
    lr: float = 0.05
    momentum: float = 0.9
    norm_bound: float | None = None  # refuse updates whose L2 norm exceeds this
    max_update_bytes: int = 64 * 1024 * 1024
    seed: int = 0

    def __post_init__(self) -> None:
        if self.norm_bound is not None and not (math.isfinite(self.norm_bound)
                                                and self.norm_bound > 0):
            raise ConfigError(f"norm_bound must be > 0, got {self.norm_bound}")
        if self.max_update_bytes < 1024:
            raise ConfigError("max_update_bytes must be at least 1024")
        make_strategy(self.strategy, mu=self.mu, server_lr=self.server_lr)  # validates

    def train_options(self) -> dict[str, Any]:
        prox = make_strategy(self.strategy, mu=self.mu).client_options().get("prox_mu", 0.0)
        return {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr,
                "momentum": self.momentum, "prox_mu": prox}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class UpdateMeta:
    """What a client says about its update (from request headers)."""

    run: str
    round: int
    update_id: str
    num_examples: int
    metrics: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _UPDATE_ID.fullmatch(self.update_id):
            raise ProtocolError("update id must be 8-64 characters of [A-Za-z0-9_-]",
                                code="bad_update_id", status=400)
        if self.num_examples < 1 or self.round < 1:
            raise ProtocolError("round and num_examples must be >= 1", code="bad_metadata",
                                status=400)


@dataclass(slots=True)
class _Accepted:
    update_id: str
    sha256: str
    update: ClientUpdate
    metrics: dict[str, float]


RoundListener = Callable[[CloseRound, Params, dict[str, _Accepted]], None]


def federated_evaluation(accepted: Mapping[str, _Accepted]) -> dict[str, float]:
    """Example-weighted ``eval_loss`` / ``eval_accuracy`` that clients measured on their own
    held-out data, for the global model they received this round (a coordinator holds no
    test set). Empty when no client reported an evaluation."""
    rows = [a.metrics for a in accepted.values()
            if a.metrics.get("eval_examples", 0) > 0 and "eval_accuracy" in a.metrics]
    total = sum(m["eval_examples"] for m in rows)
    if not rows or total <= 0:
        return {}
    return {"eval_examples": total,
            "eval_loss": sum(m.get("eval_loss", 0.0) * m["eval_examples"] for m in rows) / total,
            "eval_accuracy": sum(m["eval_accuracy"] * m["eval_examples"] for m in rows) / total}


class Coordinator:
    """One federated run behind a server."""

    def __init__(self, config: RunConfig, *, run_id: str, model_spec_json: str,
                 initial: Params, first_round: int = 1,
                 on_round: RoundListener | None = None,
                 store: CoordinatorStore | None = None) -> None:
        self.config = config
        self.run_id = run_id
        self.model_spec_json = model_spec_json
        self.spec = pm.spec_of(initial)
        self.strategy = make_strategy(config.strategy, mu=config.mu, server_lr=config.server_lr)
        self.state = ServerState()
        self.machine = RoundMachine(
            RoundConfig(num_rounds=config.rounds, clients_per_round=config.clients_per_round,
                        min_updates=config.min_updates, round_timeout=config.round_timeout),
            rng=np.random.default_rng(np.random.SeedSequence([config.seed, first_round])),
            first_round=first_round, round_rng=self._round_rng)
        self.on_round = on_round
        self.history: list[CloseRound] = []
        self._tasks: dict[str, SendTask] = {}
        self._accepted: dict[str, _Accepted] = {}
        self._seen_ids: dict[str, tuple[str, str]] = {}  # update id -> (client, body sha256)
        self._set_params(initial)
        self._store = store
        self._recorded_round = 0  # the last round whose start (sample) is on disk
        self._restore: tuple[tuple[str, ...], dict[str, int]] | None = None
        self._broken: Exception | None = None
        if store is not None:
            store.create_run(run_id, config=config.to_dict(), model_spec_json=model_spec_json,
                             model=self.model_bytes, etag=self.etag)

    def _round_rng(self, round_: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence([self.config.seed, round_]))

    @classmethod
    def resume(cls, store: CoordinatorStore, run_id: str, *,
               on_round: RoundListener | None = None) -> Coordinator:
        """Rebuild run ``run_id`` from ``store`` after a crash; clients must re-enrol."""
        run = store.run(run_id)
        config = RunConfig(**run.config)
        rounds = store.rounds(run_id)
        closed = [r for r in rounds if r.outcome != "open"]
        last = closed[-1].round if closed else 0
        model_bytes, etag = store.model(run_id, last)
        c = cls(config, run_id=run_id, model_spec_json=run.model_spec_json,
                initial=pm.decode(model_bytes), first_round=min(last + 1, config.rounds),
                on_round=on_round)
        # The stored bytes, not a re-encoding: clients hold this etag, and the safetensors
        # header need not serialise identically twice.
        c.model_bytes, c.etag = model_bytes, etag
        c.state = _server_state(store.server_state(run_id, last))
        c.history = [CloseRound(r.round, Outcome(r.outcome), r.accepted, r.dropped,
                                r.timed_out, r.reason) for r in closed]
        c.machine.completed = sum(r.outcome == Outcome.COMPLETED.value for r in closed)
        c.machine.failed = len(closed) - c.machine.completed
        c._recorded_round = last
        updates = store.updates(run_id)
        c._seen_ids = {u.update_id: (u.client_id, u.body_sha256) for u in updates}
        if last >= config.rounds:
            c.machine.phase = Phase.FINISHED
        elif rounds and rounds[-1].outcome == "open":
            _reload_open_round(c, rounds[-1].round, rounds[-1].sampled,
                               [u for u in updates if u.round == rounds[-1].round])
        c._store = store
        return c

    # ---- the global model -------------------------------------------------------------
    def _set_params(self, params: Params) -> None:
        self.params = params
        self.model_bytes = pm.encode(params, metadata={"model_spec": self.model_spec_json,
                                                       "run": self.run_id})
        self.etag = hashlib.sha256(self.model_bytes).hexdigest()

    @property
    def store(self) -> CoordinatorStore | None:
        """Where this run is persisted, if anywhere."""
        return self._store

    @property
    def finished(self) -> bool:
        return self.machine.phase is Phase.FINISHED

    # ---- requests ---------------------------------------------------------------------
    def enrol(self, client_id: str, now: float) -> None:
        self._ready(now)
        if self._store is not None:
            self._store.record_enrolment(self.run_id, client_id)
        self._apply(self.machine.handle(ClientAvailable(client_id), now))

    def task(self, client_id: str, now: float) -> dict[str, Any]:
        """What ``client_id`` should do now: train, wait, stop, or enrol (again).

        "enrol" goes to a client the run does not count as available — after a coordinator
        restart (availability is not persisted) or after it was dropped — so it comes back.
        """
        self._ready(now)
        if self.finished:
            return {"action": "done", "run": self.run_id}
        task = self._tasks.get(client_id)
        if task is None and client_id not in self.machine.available:
            return {"action": "enrol", "run": self.run_id}
        if task is None or client_id in self._accepted:
            return {"action": "wait", "run": self.run_id, "retry_after": 0.2}
        return {"action": "train", "run": self.run_id, "round": task.round,
                "deadline_in": max(0.0, task.deadline - now), "model_etag": self.etag,
                "train": self.config.train_options()}

    def submit(self, client_id: str, meta: UpdateMeta, body: bytes,
               now: float) -> dict[str, Any]:
        """Check and accept one update; raises a PeerError (state unchanged) if refused.

        With a store, the update is written before anything changes here; a failed write
        raises :class:`~privml.DataError` and the update does not count.
        """
        self._ready(now)
        digest = hashlib.sha256(body).hexdigest()
        if meta.run != self.run_id:
            raise ProtocolError(f"run {meta.run!r} is not the current run", code="wrong_run")
        seen = self._seen_ids.get(meta.update_id)
        if seen is not None:
            if seen == (client_id, digest):  # a retry of an accepted request: idempotent
                return {"accepted": True, "duplicate": True, "round": meta.round}
            raise ReplayError(f"update id {meta.update_id!r} was already used")
        if len(body) > self.config.max_update_bytes:
            raise ParamsError(f"update of {len(body)} bytes exceeds the limit "
                              f"{self.config.max_update_bytes}", code="too_large", status=413)
        self.machine.check_update(client_id, meta.round)
        delta = pm.decode(body, self.spec)
        if self.config.norm_bound is not None:
            norm = pm.l2_norm(delta)
            if norm > self.config.norm_bound:
                raise ParamsError(f"update norm {norm:.4g} exceeds the bound "
                                  f"{self.config.norm_bound:.4g}", code="norm_exceeded")
        # Every check passed: the update is accepted once it is on disk.
        if self._store is not None:
            self._store.add_update(self.run_id, StoredUpdate(
                meta.round, client_id, meta.update_id, meta.num_examples, digest,
                dict(meta.metrics), body))
        self._seen_ids[meta.update_id] = (client_id, digest)
        self._accepted[client_id] = _Accepted(meta.update_id, digest,
                                              ClientUpdate(delta, meta.num_examples),
                                              dict(meta.metrics))
        self._apply(self.machine.handle(
            UpdateReceived(client_id, meta.round, meta.num_examples), now))
        return {"accepted": True, "duplicate": False, "round": meta.round}

    def tick(self, now: float) -> None:
        self._ready(now)
        self._apply(self.machine.handle(Tick(), now))

    def _ready(self, now: float) -> None:
        """Refuse work after a lost round-close write; reopen a restored round on first use."""
        if self._broken is not None:
            raise DataError(f"run {self.run_id!r} stopped after a failed write "
                            f"({self._broken}); resume it from the store")
        if self._restore is not None:
            sampled, accepted = self._restore
            self._restore = None  # the deadline counts from the first request after restart
            self._apply(self.machine.restore_round(sampled, accepted, now))

    def _apply(self, actions: list[Action]) -> None:
        closed: tuple[CloseRound, dict[str, _Accepted]] | None = None
        for action in actions:
            if isinstance(action, SendTask):
                self._tasks[action.client_id] = action
            elif isinstance(action, Aggregate):
                ups = [self._accepted[c].update for c in action.client_ids]
                new, self.state = self.strategy.aggregate(self.params, ups, self.state)
                self._set_params(new)
            elif isinstance(action, CloseRound):
                self.history.append(action)
                closed = (action, self._accepted)
                self._accepted = {}
                self._tasks = {t.client_id: t for t in self._tasks.values()
                               if t.round > action.round}
            elif isinstance(action, Finished):
                self._tasks = {}
        self._persist(actions, None if closed is None else closed[0])
        # Listeners hear of a round only once it is durable.
        if closed is not None and self.on_round is not None:
            self.on_round(closed[0], self.params, dict(closed[1]))

    def _persist(self, actions: list[Action], close: CloseRound | None) -> None:
        starts = [a.round for a in actions
                  if isinstance(a, SendTask) and a.round > self._recorded_round]
        if self._store is None or (close is None and not starts):
            return
        sample = self.machine.sampled if starts else None
        try:
            if close is not None:
                self._store.close_round(self.run_id, ClosedRound(
                    close.round, close.outcome.value, close.accepted, close.dropped,
                    close.timed_out, close.reason, self.model_bytes, self.etag,
                    _stored_state(self.state), self.finished, sample))
            elif sample is not None:
                self._store.start_round(self.run_id, starts[0], sample)
        except Exception as exc:
            # Memory is past the disk now; only a resume from the store is consistent.
            self._broken = exc
            raise
        if starts:
            self._recorded_round = starts[0]

    def status(self) -> dict[str, Any]:
        return {
            "run": self.run_id, "phase": self.machine.phase.value, "round": self.machine.round,
            "rounds": self.config.rounds, "completed": self.machine.completed,
            "failed": self.machine.failed, "available": len(self.machine.available),
            "sampled": len(self.machine.sampled), "accepted": len(self._accepted),
            "model_etag": self.etag,
        }


def _reload_open_round(c: Coordinator, round_: int, sampled: tuple[str, ...],
                       updates: list[StoredUpdate]) -> None:
    """Put the interrupted round's accepted updates back; it reopens on the first request."""
    if round_ != c.machine.round:
        raise DataError(f"run {c.run_id!r}: open round {round_} follows no closed round")
    for u in updates:
        if u.delta is None:
            raise DataError(f"run {c.run_id!r}: update {u.update_id!r} lost its delta")
        c._accepted[u.client_id] = _Accepted(
            u.update_id, u.body_sha256,
            ClientUpdate(pm.decode(u.delta, c.spec), u.num_examples), dict(u.metrics))
    c._restore = (sampled, {u.client_id: u.num_examples for u in updates})
    c._recorded_round = round_


def _stored_state(state: ServerState) -> StoredState:
    return StoredState(state.step, pm.encode(state.m) if state.m else None,
                       pm.encode(state.v) if state.v else None)


def _server_state(stored: StoredState) -> ServerState:
    return ServerState(stored.step,
                       pm.decode(stored.m) if stored.m is not None else {},
                       pm.decode(stored.v) if stored.v is not None else {})
