"""The coordinator's run state: the round state machine plus everything a server must check.

This is the HTTPS server's core, kept free of sockets so it is tested directly: the server
turns each request into one call here (``enrol``, ``task``, ``submit``, ``tick``) and each
:class:`~privml.PeerError` raised into a 4xx answer. Every check runs before any state
changes, so a refused request leaves the run exactly as it was. The clock is an argument.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from privml import params as pm
from privml._exceptions import ConfigError, ParamsError, ProtocolError, ReplayError
from privml.params import Params
from privml.protocol import (
    Action,
    Aggregate,
    ClientAvailable,
    CloseRound,
    Finished,
    Phase,
    RoundConfig,
    RoundMachine,
    SendTask,
    Tick,
    UpdateReceived,
)
from privml.strategies import ClientUpdate, ServerState, make_strategy

__all__ = ["Coordinator", "RunConfig", "UpdateMeta"]

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


class Coordinator:
    """One federated run behind a server."""

    def __init__(self, config: RunConfig, *, run_id: str, model_spec_json: str,
                 initial: Params, first_round: int = 1,
                 on_round: RoundListener | None = None) -> None:
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
            first_round=first_round)
        self.on_round = on_round
        self.history: list[CloseRound] = []
        self._tasks: dict[str, SendTask] = {}
        self._accepted: dict[str, _Accepted] = {}
        self._seen_ids: dict[str, tuple[str, str]] = {}  # update id -> (client, body sha256)
        self._set_params(initial)

    # ---- the global model -------------------------------------------------------------
    def _set_params(self, params: Params) -> None:
        self.params = params
        self.model_bytes = pm.encode(params, metadata={"model_spec": self.model_spec_json,
                                                       "run": self.run_id})
        self.etag = hashlib.sha256(self.model_bytes).hexdigest()

    @property
    def finished(self) -> bool:
        return self.machine.phase is Phase.FINISHED

    # ---- requests ---------------------------------------------------------------------
    def enrol(self, client_id: str, now: float) -> None:
        self._apply(self.machine.handle(ClientAvailable(client_id), now))

    def task(self, client_id: str, now: float) -> dict[str, Any]:
        """What ``client_id`` should do now: train, wait or stop."""
        if self.finished:
            return {"action": "done", "run": self.run_id}
        task = self._tasks.get(client_id)
        if task is None or client_id in self._accepted:
            return {"action": "wait", "run": self.run_id, "retry_after": 0.2}
        return {"action": "train", "run": self.run_id, "round": task.round,
                "deadline_in": max(0.0, task.deadline - now), "model_etag": self.etag,
                "train": self.config.train_options()}

    def submit(self, client_id: str, meta: UpdateMeta, body: bytes,
               now: float) -> dict[str, Any]:
        """Check and accept one update; raises a PeerError (state unchanged) if refused."""
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
        # Every check passed: from here on the update is accepted.
        self._seen_ids[meta.update_id] = (client_id, digest)
        self._accepted[client_id] = _Accepted(meta.update_id, digest,
                                              ClientUpdate(delta, meta.num_examples),
                                              dict(meta.metrics))
        self._apply(self.machine.handle(
            UpdateReceived(client_id, meta.round, meta.num_examples), now))
        return {"accepted": True, "duplicate": False, "round": meta.round}

    def tick(self, now: float) -> None:
        self._apply(self.machine.handle(Tick(), now))

    def _apply(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, SendTask):
                self._tasks[action.client_id] = action
            elif isinstance(action, Aggregate):
                ups = [self._accepted[c].update for c in action.client_ids]
                new, self.state = self.strategy.aggregate(self.params, ups, self.state)
                self._set_params(new)
            elif isinstance(action, CloseRound):
                self.history.append(action)
                if self.on_round is not None:
                    self.on_round(action, self.params, dict(self._accepted))
                self._accepted = {}
                self._tasks = {t.client_id: t for t in self._tasks.values()
                               if t.round > action.round}
            elif isinstance(action, Finished):
                self._tasks = {}

    def status(self) -> dict[str, Any]:
        return {
            "run": self.run_id, "phase": self.machine.phase.value, "round": self.machine.round,
            "rounds": self.config.rounds, "completed": self.machine.completed,
            "failed": self.machine.failed, "available": len(self.machine.available),
            "sampled": len(self.machine.sampled), "accepted": len(self._accepted),
            "model_etag": self.etag,
        }
