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
clients the uninterrupted one would have, given the same clients available when each round
starts (the machine samples from their sorted ids, so the order in which clients re-enrol
does not matter; ``min_clients`` makes a round wait until enough of them are back). If a
round-close write fails, the in-memory run has moved past the disk, so the coordinator
refuses everything after it: the operator resumes from the store, which is consistent.

Evaluation rounds (``RunConfig.eval_every``) send sampled clients an ``evaluate`` task; their
reports (:class:`EvaluationReport`) are kept in the store and aggregated, weighted by
examples, when the evaluation closes. An evaluation interrupted by a crash is not redone on
resume: the model it measured is kept, and training goes on with the next round.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import numpy as np

from privml import params as pm
from privml._exceptions import (
    DataError,
    ParamsError,
    ProtocolError,
    ReplayError,
)
from privml.dp import ClientLevelDP
from privml.params import Params
from privml.protocol import (
    Action,
    Aggregate,
    ClientAvailable,
    ClientDropped,
    CloseEvaluation,
    CloseRound,
    EvaluationReceived,
    Finished,
    Outcome,
    Phase,
    RoundMachine,
    SendEvaluation,
    SendTask,
    Tick,
    UpdateReceived,
)
from privml.strategies import ClientUpdate, ServerState
from privml.transport._privacy import RunPrivacy
from privml.transport._restore import (
    Accepted,
    reload_open_round,
    server_state,
    stored_state,
)
from privml.transport._runconfig import (
    EvaluationReport,
    RunConfig,
    UpdateMeta,
    aggregate_evaluations,
)
from privml.transport._secure import DDGSum, SecureRound
from privml.transport._store import ClosedRound, CoordinatorStore, StoredUpdate

__all__ = ["Coordinator", "EvaluationReport", "RunConfig", "UpdateMeta",
           "aggregate_evaluations"]

RoundListener = Callable[[CloseRound, Params, dict[str, Accepted]], None]
EvaluationListener = Callable[[CloseEvaluation, dict[str, float]], None]


class Coordinator:
    """One federated run behind a server."""

    def __init__(self, config: RunConfig, *, run_id: str, model_spec_json: str,
                 initial: Params, first_round: int = 1,
                 on_round: RoundListener | None = None,
                 on_evaluation: EvaluationListener | None = None,
                 store: CoordinatorStore | None = None) -> None:
        self.config = config
        self.run_id = run_id
        self.model_spec_json = model_spec_json
        self.spec = pm.spec_of(initial)
        self.strategy = config.make_strategy()
        self.state = ServerState()
        self.machine = RoundMachine(
            config.round_config(),
            rng=np.random.default_rng(np.random.SeedSequence([config.seed, first_round])),
            first_round=first_round, round_rng=self._round_rng)
        self.on_round = on_round
        self.on_evaluation = on_evaluation
        self.history: list[CloseRound] = []
        self.evaluations: list[dict[str, float]] = []  # each with its "round"
        self._tasks: dict[str, SendTask] = {}
        self._eval_tasks: dict[str, SendEvaluation] = {}
        self._reports: dict[str, EvaluationReport] = {}
        self._accepted: dict[str, Accepted] = {}
        self._seen_ids: dict[str, tuple[str, str]] = {}  # update id -> (client, body sha256)
        self._set_params(initial)
        self._store = store
        self._recorded_round = 0  # the last round whose start (sample) is on disk
        self._restore: tuple[tuple[str, ...], dict[str, int]] | None = None
        self._broken: Exception | None = None
        self._secure: SecureRound | None = None
        self._secure_mean: Params | None = None
        # The modular sums secure aggregation revealed (the coordinator sees them anyway),
        # by round: (survivors, sum). Kept for audits and tests; the last few rounds only.
        self.secure_sums: dict[int, tuple[tuple[str, ...], np.ndarray]] = {}
        self.privacy = (RunPrivacy(config, dim=sum(v.size for v in initial.values()),
                                   run_id=run_id) if config.dp else None)
        if store is not None:
            store.create_run(run_id, config=config.to_dict(), model_spec_json=model_spec_json,
                             model=self.model_bytes, etag=self.etag)

    def _round_rng(self, round_: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence([self.config.seed, round_]))

    @classmethod
    def resume(cls, store: CoordinatorStore, run_id: str, *,
               on_round: RoundListener | None = None,
               on_evaluation: EvaluationListener | None = None) -> Coordinator:
        """Rebuild run ``run_id`` from ``store`` after a crash; clients must re-enrol."""
        run = store.run(run_id)
        config = RunConfig(**run.config)
        rounds = store.rounds(run_id)
        closed = [r for r in rounds if r.outcome != "open"]
        last = closed[-1].round if closed else 0
        model_bytes, etag = store.model(run_id, last)
        c = cls(config, run_id=run_id, model_spec_json=run.model_spec_json,
                initial=pm.decode(model_bytes), first_round=min(last + 1, config.rounds),
                on_round=on_round, on_evaluation=on_evaluation)
        # The stored bytes, not a re-encoding: clients hold this etag, and the safetensors
        # header need not serialise identically twice.
        c.model_bytes, c.etag = model_bytes, etag
        c.state = server_state(store.server_state(run_id, last))
        c.history = [CloseRound(r.round, Outcome(r.outcome), r.accepted, r.dropped,
                                r.timed_out, r.reason) for r in closed]
        c.evaluations = [e.summary() for e in store.evaluation_rounds(run_id)]
        if c.privacy is not None:  # the budget spent before the crash still counts
            c.privacy.restore(store, rounds[-1].round if rounds else 0)
        c.machine.completed = sum(r.outcome == Outcome.COMPLETED.value for r in closed)
        c.machine.failed = len(closed) - c.machine.completed
        c._recorded_round = last
        updates = store.updates(run_id)
        c._seen_ids = {u.update_id: (u.client_id, u.body_sha256) for u in updates}
        if last >= config.rounds:  # (a crash during the final evaluation round lands here)
            c.machine.phase = Phase.FINISHED
            if run.status == "running":
                store.set_run_status(run_id, "finished")
        elif rounds and rounds[-1].outcome == "open":
            reload_open_round(c, rounds[-1].round, rounds[-1].sampled,
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
        """What ``client_id`` should do now: train, evaluate, wait, stop, or enrol (again).

        "enrol" goes to a client the run does not count as available — after a coordinator
        restart (availability is not persisted) or after it was dropped — so it comes back.
        """
        self._ready(now)
        if self.finished:
            return {"action": "done", "run": self.run_id}
        ask = self._eval_tasks.get(client_id)
        if ask is not None and client_id not in self._reports:
            return {"action": "evaluate", "run": self.run_id, "round": ask.round,
                    "deadline_in": max(0.0, ask.deadline - now), "model_etag": self.etag}
        task = self._tasks.get(client_id)
        if task is None and client_id not in self.machine.available:
            return {"action": "enrol", "run": self.run_id}
        secure = self._secure
        if task is None or client_id in self._accepted or (
                secure is not None and secure.round == task.round
                and secure.joined(client_id)):
            return {"action": "wait", "run": self.run_id, "retry_after": 0.2}
        answer = {"action": "train", "run": self.run_id, "round": task.round,
                  "deadline_in": max(0.0, task.deadline - now), "model_etag": self.etag,
                  "train": self.config.train_options()
                  | ({} if self.privacy is None else self.privacy.train_options())}
        if secure is not None:
            answer["deadline_in"] = max(0.0, secure.deadline - now)
            answer["secagg"] = secure.settings()
        return answer

    def submit(self, client_id: str, meta: UpdateMeta, body: bytes,
               now: float) -> dict[str, Any]:
        """Check and accept one update; raises a PeerError (state unchanged) if refused.

        With a store, the update is written before anything changes here; a failed write
        raises :class:`~privml.DataError` and the update does not count.
        """
        self._ready(now)
        digest = hashlib.sha256(body).hexdigest()
        if self.config.secagg:
            raise ProtocolError("this run uses secure aggregation: updates travel masked, "
                                "through /v1/secagg/*", code="secagg_required")
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
        self._accepted[client_id] = Accepted(meta.update_id, digest,
                                              ClientUpdate(delta, meta.num_examples),
                                              dict(meta.metrics))
        self._apply(self.machine.handle(
            UpdateReceived(client_id, meta.round, meta.num_examples), now))
        return {"accepted": True, "duplicate": False, "round": meta.round}

    def evaluation(self, client_id: str, report: EvaluationReport,
                   now: float) -> dict[str, Any]:
        """Record a client's evaluation of the global model (see ``evaluate`` tasks)."""
        self._ready(now)
        if report.run != self.run_id:
            raise ProtocolError(f"run {report.run!r} is not the current run", code="wrong_run")
        if self._reports.get(client_id) == report and report.round == self.machine.round:
            return {"accepted": True, "duplicate": True, "round": report.round}
        self.machine.check_evaluation(client_id, report.round)
        if self._store is not None:
            self._store.add_evaluation(self.run_id, client_id, round_=report.round,
                                       num_examples=report.num_examples, loss=report.loss,
                                       accuracy=report.accuracy)
        self._reports[client_id] = report
        self._apply(self.machine.handle(
            EvaluationReceived(client_id, report.round, report.num_examples), now))
        return {"accepted": True, "duplicate": False, "round": report.round}

    def tick(self, now: float) -> None:
        self._ready(now)
        if self._secure is not None:
            self._secure.tick(now)
            self._settle(now)
        self._apply(self.machine.handle(Tick(), now))

    # ---- secure aggregation (see privml.transport._secure) ----------------------------
    def _open_secure(self) -> SecureRound:
        if self._secure is None or self.finished:
            raise ProtocolError("no secure aggregation is open", code="secagg_closed")
        return self._secure

    def secagg_post(self, client_id: str, step: str, body: bytes,
                    now: float) -> dict[str, Any]:
        """One client's SecAgg+ message for the current stage (SecAggError if refused)."""
        self._ready(now)
        answer = self._open_secure().post(client_id, step, body, now)
        self._settle(now)
        return answer

    def secagg_get(self, client_id: str, step: str, round_: int, now: float) -> bytes | None:
        """The coordinator's SecAgg+ message for ``client_id``; None while it is not ready."""
        self._ready(now)
        return self._open_secure().get(client_id, step, round_)

    def _settle(self, now: float) -> None:
        """Once the secure aggregation has ended, tell the round machine who took part."""
        secure = self._secure
        if secure is None or secure.outcome is None or secure.settled:
            return
        secure.settled = True
        if self.machine.phase is not Phase.TRAINING or self.machine.round != secure.round:
            return  # the round closed without it (its deadline passed first)
        out = secure.outcome
        if out.mean is not None:
            self._secure_mean = pm.unflatten(out.mean.astype(np.float32), self.spec)
            assert secure.server.total is not None  # nosec B101  # narrowing: a mean came out, so the sum is there
            self.secure_sums[secure.round] = (out.survivors, secure.server.total.copy())
            for old in sorted(self.secure_sums)[:-8]:
                del self.secure_sums[old]
        actions: list[Action] = []
        for cid in self.machine.sampled:
            if cid not in out.survivors:
                actions += self.machine.handle(ClientDropped(cid), now)
        for cid in out.survivors:
            actions += self.machine.handle(UpdateReceived(cid, secure.round, 1), now)
        self._apply(actions)

    def stop(self) -> None:
        """End the run now (an admin asked): the open round is abandoned, clients are told
        "done" and the store marks the run "stopped" (it is not resumed)."""
        if self.finished:
            return
        if self._store is not None:
            self._store.set_run_status(self.run_id, "stopped")
        self._restore = None
        self._apply(self.machine.stop())

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
        closed: tuple[CloseRound, dict[str, Accepted]] | None = None
        evaluated: tuple[CloseEvaluation, dict[str, float]] | None = None
        for action in actions:
            if isinstance(action, SendTask):
                if self.privacy is not None and not self.privacy.start(action.round):
                    continue  # refused before any task went out; the run stops below
                self._tasks[action.client_id] = action
                self._start_secure(action)
            elif isinstance(action, SendEvaluation):
                self._eval_tasks[action.client_id] = action
            elif isinstance(action, CloseEvaluation):
                summary = {"round": float(action.round), **aggregate_evaluations(
                    {c: self._reports[c] for c in action.reported})}
                evaluated = (action, summary)
                self._close_evaluation(action, summary)
            elif isinstance(action, Aggregate) and self.privacy is not None \
                    and not self.privacy.example_level:
                self._private_aggregate(action)
            elif isinstance(action, Aggregate):
                if self.config.secagg:
                    assert self._secure_mean is not None  # nosec B101  # narrowing: the secure round closed with a mean
                    new, self.state = self.strategy.apply(self.params, self._secure_mean,
                                                          self.state)
                    self._secure_mean = None
                else:
                    ups = [self._accepted[c].update for c in action.client_ids]
                    new, self.state = self.strategy.aggregate(self.params, ups, self.state)
                self._set_params(new)
            elif isinstance(action, CloseRound):
                self._charge_closed(action)
                self.history.append(action)
                closed = (action, self._accepted)
                self._accepted = {}
                self._tasks = {t.client_id: t for t in self._tasks.values()
                               if t.round > action.round}
            elif isinstance(action, Finished):
                self._tasks = {}
                self._eval_tasks = {}
        self._persist(actions, None if closed is None else closed[0])
        if self.budget_refused is not None and not self.finished:
            self._stop_for_budget()
        # Listeners hear of a round only once it is durable.
        if closed is not None and self.on_round is not None:
            self.on_round(closed[0], self.params, dict(closed[1]))
        if evaluated is not None and self.on_evaluation is not None:
            self.on_evaluation(*evaluated)

    @property
    def budget_refused(self) -> dict[str, float] | None:
        return None if self.privacy is None else self.privacy.budget_refused

    def _private_aggregate(self, action: Aggregate) -> None:
        """Client-level DP-FedAvg with central noise; a round past the budget is refused:
        nothing applied, the ledger unchanged, and the run stops after it."""
        assert self.privacy is not None and isinstance(self.privacy.dp, ClientLevelDP)  # nosec B101  # narrowing: tick() sends only client-level DP here
        if self.privacy.distributed:  # admitted at the start; the sum came noisy
            assert self._secure_mean is not None  # nosec B101  # narrowing: the secure round closed with a mean
            noisy, self._secure_mean = self._secure_mean, None
        elif not self.privacy.admit(action.round, len(action.client_ids)):
            return
        else:
            flat = {c: pm.flatten({k: self._accepted[c].update.delta[k] for k in self.spec})
                    for c in action.client_ids}
            noisy = pm.unflatten(self.privacy.dp.noisy_mean(
                flat, run=self.run_id, round_=action.round).astype(np.float32), self.spec)
        new, self.state = self.strategy.apply(self.params, noisy, self.state)
        self._set_params(new)
        self.privacy.record(action.round, len(action.client_ids), self._store)

    def _charge_closed(self, close: CloseRound) -> None:
        """Client unit: a failed round is charged as if it had run (dp/_fedavg). Example
        unit: every round whose tasks went out is charged when it closes."""
        p = self.privacy
        if p is None:
            return
        if p.example_level:
            if close.round <= p.started_round and p.budget_refused is None:
                p.record(close.round, len(close.accepted), self._store)
        elif not close.accepted and not p.distributed and p.admit(close.round, 0):
            p.record(close.round, 0, self._store)

    def _start_secure(self, task: SendTask) -> None:
        if not self.config.secagg or (self._secure is not None
                                      and self._secure.round == task.round):
            return
        cfg, p = self.config, self.privacy
        self._secure = SecureRound(
            run=self.run_id, round_=task.round, participants=self.machine.sampled,
            encoding=DDGSum(p.dp) if p is not None and isinstance(p.dp, ClientLevelDP)
            and p.distributed else cfg.encoding(), config=cfg.secagg_config(),
            length=sum(int(np.prod(s)) for s in self.spec.values()),
            first_deadline=task.deadline - (cfg.round_config().round_timeout
                                            - cfg.round_timeout),
            stage_timeout=cfg.secagg_stage_timeout)

    def _close_evaluation(self, close: CloseEvaluation, summary: dict[str, float]) -> None:
        self.evaluations.append(summary)
        self._eval_tasks = {}
        self._reports = {}
        if self._store is None:
            return
        try:
            self._store.close_evaluation(self.run_id, close.round, reported=close.reported,
                                         missing=close.dropped + close.timed_out,
                                         reason=close.reason, summary=summary)
            if self.machine.phase is Phase.FINISHED:
                self._store.set_run_status(self.run_id, "finished")
        except Exception as exc:
            self._broken = exc
            raise

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
                    stored_state(self.state), self.finished, sample))
            elif sample is not None:
                self._store.start_round(self.run_id, starts[0], sample)
        except Exception as exc:
            # Memory is past the disk now; only a resume from the store is consistent.
            self._broken = exc
            raise
        if starts:
            self._recorded_round = starts[0]

    def _stop_for_budget(self) -> None:
        if self._store is not None:
            self._store.set_run_status(self.run_id, "stopped")
        self._restore = None
        self._apply(self.machine.stop())

    def status(self) -> dict[str, Any]:
        return {
            "run": self.run_id, "phase": self.machine.phase.value, "round": self.machine.round,
            "rounds": self.config.rounds, "completed": self.machine.completed,
            "failed": self.machine.failed, "available": len(self.machine.available),
            "sampled": len(self.machine.sampled), "accepted": len(self._accepted),
            "reported": len(self._reports), "model_etag": self.etag,
            "last_evaluation": self.evaluations[-1] if self.evaluations else None,
            "secagg": None if self._secure is None else self._secure.status(),
            "privacy": None if self.privacy is None else self.privacy.status(),
        }
