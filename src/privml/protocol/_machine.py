"""The round state machine: events in, actions out.

Theory of operation. The machine is in one of four phases::

    WAITING ──(enough clients available)──► TRAINING ──(all answered / deadline)──┐
       ▲                                                     (evaluation due?)    │
       │                          EVALUATING ◄──────────────────── yes ───────────┤
       │                              │ (all answered / deadline)                 │ no
       └──── round += 1 (more rounds) ◄┴──────────────────────────────────────────┘
                                  └─(last round closed)──► FINISHED

An evaluation round (``RoundConfig.eval_every``) asks a sample of the available clients to
measure the new global model on their own held-out data: a real coordinator holds no test
set. Training waits for it, so every report is about the same model.

Which handler runs for an event in a phase is written down once, in ``_TABLE``; a pair that
is missing there is a protocol error. ``handle`` never mutates state before every check has
passed, so a refused event (late, duplicate, unknown client) leaves the machine exactly as it
was. Nothing here does I/O: the caller passes the clock (``now``) into each call and a
``numpy.random.Generator`` for client sampling, which makes every run reproducible.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from enum import Enum

import numpy as np

from privml._exceptions import (
    ConfigError,
    DuplicateUpdateError,
    LateUpdateError,
    ProtocolError,
    UnknownClientError,
)
from privml.protocol._events import (
    Action,
    Aggregate,
    ClientAvailable,
    ClientDropped,
    CloseEvaluation,
    CloseRound,
    EvaluationReceived,
    Event,
    Finished,
    Outcome,
    RoundConfig,
    SendEvaluation,
    SendTask,
    Tick,
    UpdateReceived,
)

__all__ = ["Phase", "RoundMachine"]


class Phase(Enum):
    WAITING = "waiting"
    TRAINING = "training"
    EVALUATING = "evaluating"
    FINISHED = "finished"


_Handler = Callable[["RoundMachine", Event, float], list[Action]]


class RoundMachine:
    """Runs ``config.num_rounds`` rounds of sampling, collecting and closing."""

    def __init__(self, config: RoundConfig, *, rng: np.random.Generator,
                 first_round: int = 1,
                 round_rng: Callable[[int], np.random.Generator] | None = None) -> None:
        """``first_round`` > 1 resumes a run whose earlier rounds are already closed.

        ``round_rng``, when given, makes the generator each round samples from (called with
        the round number) instead of ``rng``: a run resumed at round *r* then samples exactly
        what the uninterrupted run would have, since no round depends on earlier draws.
        """
        if not isinstance(rng, np.random.Generator):
            raise TypeError("rng must be a numpy.random.Generator")
        if isinstance(first_round, bool) or not isinstance(first_round, int) or \
                not 1 <= first_round <= config.num_rounds:
            raise ConfigError(f"first_round must be in [1, {config.num_rounds}], "
                              f"got {first_round!r}")
        self.config = config
        self._rng = rng
        self._round_rng = round_rng
        self.phase = Phase.WAITING
        self.round = first_round
        self.deadline = float("inf")
        self.completed = 0
        self.failed = 0
        self._available: dict[str, None] = {}  # insertion-ordered set
        self._sampled: tuple[str, ...] = ()
        self._accepted: dict[str, int] = {}  # client -> num_examples, in arrival order
        self._dropped: dict[str, None] = {}
        self._reported: dict[str, int] = {}  # evaluation round: client -> num_examples

    # ---- read-only views ----------------------------------------------------------------
    @property
    def available(self) -> tuple[str, ...]:
        return tuple(self._available)

    @property
    def sampled(self) -> tuple[str, ...]:
        return self._sampled

    @property
    def accepted(self) -> dict[str, int]:
        return dict(self._accepted)

    @property
    def reported(self) -> dict[str, int]:
        """The current evaluation round's reports (client -> num_examples)."""
        return dict(self._reported)

    @property
    def pending(self) -> tuple[str, ...]:
        """Sampled clients (of the training or evaluation round) yet to answer."""
        done = self._accepted.keys() | self._dropped.keys() | self._reported.keys()
        return tuple(c for c in self._sampled if c not in done)

    # ---- the one entry point ------------------------------------------------------------
    def handle(self, event: Event, now: float) -> list[Action]:
        """Feed one event at time ``now``; returns the actions the shell must perform.

        Raises a :class:`~privml.ProtocolError` subclass (state unchanged) when the event is
        not allowed now.
        """
        handler = _TABLE.get((self.phase, type(event)))
        if handler is None:
            raise ProtocolError(f"{type(event).__name__} is not allowed when {self.phase.value}")
        return handler(self, event, now)

    # ---- handlers -----------------------------------------------------------------------
    def _on_available(self, event: Event, now: float) -> list[Action]:
        assert isinstance(event, ClientAvailable)  # nosec B101  # narrowing: _TABLE dispatches on type(event)
        self._available[event.client_id] = None
        return self._maybe_start(now) if self.phase is Phase.WAITING else []

    def _on_dropped(self, event: Event, now: float) -> list[Action]:
        assert isinstance(event, ClientDropped)  # nosec B101  # narrowing: _TABLE dispatches on type(event)
        cid = event.client_id
        if cid not in self._available and cid not in self._sampled:
            raise UnknownClientError(f"client {cid!r} is not known")
        self._available.pop(cid, None)
        if self.phase in (Phase.TRAINING, Phase.EVALUATING) and cid in self.pending:
            self._dropped[cid] = None
            if not self.pending:
                return self._end(now, reason="every sampled client answered or dropped")
        return []

    def _on_update(self, event: Event, now: float) -> list[Action]:
        assert isinstance(event, UpdateReceived)  # nosec B101  # narrowing: _TABLE dispatches on type(event)
        self.check_update(event.client_id, event.round)
        self._accepted[event.client_id] = event.num_examples
        if not self.pending:
            return self._close(now, reason="every sampled client answered or dropped")
        return []

    def _on_update_outside_round(self, event: Event, now: float) -> list[Action]:
        assert isinstance(event, UpdateReceived)  # nosec B101  # narrowing: _TABLE dispatches on type(event)
        self.check_update(event.client_id, event.round)
        raise AssertionError("unreachable: check_update refuses every update outside a round")

    def _on_evaluation(self, event: Event, now: float) -> list[Action]:
        assert isinstance(event, EvaluationReceived)  # nosec B101  # narrowing: _TABLE dispatches on type(event)
        self.check_evaluation(event.client_id, event.round)
        self._reported[event.client_id] = event.num_examples
        if not self.pending:
            return self._close_evaluation(now, reason="every sampled client answered or "
                                          "dropped")
        return []

    def _on_evaluation_outside(self, event: Event, now: float) -> list[Action]:
        assert isinstance(event, EvaluationReceived)  # nosec B101  # narrowing: _TABLE dispatches on type(event)
        self.check_evaluation(event.client_id, event.round)
        raise AssertionError("unreachable: check_evaluation refuses outside an evaluation")

    def _on_tick(self, event: Event, now: float) -> list[Action]:
        if self.phase is Phase.WAITING:
            return self._maybe_start(now)
        if now >= self.deadline:
            return self._end(now, reason="round deadline reached")
        return []

    def _end(self, now: float, *, reason: str) -> list[Action]:
        if self.phase is Phase.EVALUATING:
            return self._close_evaluation(now, reason=reason)
        return self._close(now, reason=reason)

    def _ignore(self, event: Event, now: float) -> list[Action]:
        return []

    # ---- checks and transitions ---------------------------------------------------------
    def check_update(self, client_id: str, round_: int) -> None:
        """Raise unless an update from ``client_id`` for ``round_`` would be accepted now."""
        current = self.phase is Phase.TRAINING and round_ == self.round
        if round_ > self.round or (round_ == self.round and self.phase is Phase.WAITING):
            raise ProtocolError(f"round {round_} has not started (current round {self.round})")
        if not current:
            raise LateUpdateError(f"round {round_} is closed; update from {client_id!r} refused")
        if client_id not in self._sampled:
            raise UnknownClientError(f"client {client_id!r} was not sampled for round {round_}")
        if client_id in self._accepted:
            raise DuplicateUpdateError(
                f"client {client_id!r} already sent its update for round {round_}")
        if client_id in self._dropped:
            raise LateUpdateError(f"client {client_id!r} was dropped from round {round_}")

    def check_evaluation(self, client_id: str, round_: int) -> None:
        """Raise unless an evaluation from ``client_id`` for ``round_`` would be kept now."""
        if self.phase is not Phase.EVALUATING or round_ != self.round:
            raise LateUpdateError(f"no evaluation of round {round_} is open; evaluation "
                                  f"from {client_id!r} refused")
        if client_id not in self._sampled:
            raise UnknownClientError(f"client {client_id!r} was not sampled to evaluate "
                                     f"round {round_}")
        if client_id in self._reported:
            raise DuplicateUpdateError(
                f"client {client_id!r} already reported its evaluation of round {round_}")
        if client_id in self._dropped:
            raise LateUpdateError(f"client {client_id!r} was dropped from the evaluation")

    def _rng_for(self, round_: int) -> np.random.Generator:
        return self._rng if self._round_rng is None else self._round_rng(round_)

    def _maybe_start(self, now: float) -> list[Action]:
        # Sorted, not in enrolment order: the sample then depends only on who is available
        # and the round's generator, so a restarted coordinator (whose clients re-enrol in
        # any order) samples what the uninterrupted one would have.
        pool = tuple(sorted(self._available))
        q = self.config.poisson_rate
        k = self.config.sample_size(len(pool))
        if len(pool) < (self.config.min_clients if q is not None else
                        max(k, self.config.min_clients)):
            return []
        rng = self._rng_for(self.round)
        if q is not None:
            self._sampled = tuple(c for c, u in zip(pool, rng.random(len(pool)), strict=True)
                                  if u < q)
        else:
            picks = rng.choice(len(pool), size=k, replace=False)
            self._sampled = tuple(pool[i] for i in sorted(int(j) for j in picks))
        self._accepted = {}
        self._dropped = {}
        self.deadline = now + self.config.round_timeout
        self.phase = Phase.TRAINING
        if not self._sampled:  # (Poisson sampling drew nobody)
            return self._close(now, reason="no client was sampled")
        return [SendTask(cid, self.round, self.deadline) for cid in self._sampled]

    def restore_round(self, sampled: Sequence[str], accepted: Mapping[str, int],
                      now: float) -> list[Action]:
        """Reopen the current round, interrupted by a crash, with its persisted sample.

        Only a fresh machine (waiting, nothing sampled) can be restored. ``accepted`` (client
        -> num_examples, in arrival order) are the updates already kept; the round then needs
        only the rest of ``sampled`` and gets a fresh deadline from ``now``.
        """
        if self.phase is not Phase.WAITING or self._sampled:
            raise ProtocolError(f"cannot restore a round when {self.phase.value}")
        if not sampled or len(set(sampled)) != len(sampled) or \
                not set(accepted) <= set(sampled):
            raise ConfigError("restored sample must be distinct and contain every accepted id")
        self._sampled = tuple(sampled)
        self._accepted = dict(accepted)
        self._dropped = {}
        self.deadline = now + self.config.round_timeout
        self.phase = Phase.TRAINING
        if not self.pending:  # the crash fell between the last update and the close
            return self._close(now, reason="every sampled client answered or dropped")
        return [SendTask(cid, self.round, self.deadline) for cid in self.pending]

    def stop(self) -> list[Action]:
        """End the run now (an operator's decision): an open round is abandoned, not
        aggregated. Stopping a finished run does nothing."""
        if self.phase is Phase.FINISHED:
            return []
        self._sampled = ()
        self._accepted = {}
        self._dropped = {}
        self._reported = {}
        self.deadline = float("inf")
        self.phase = Phase.FINISHED
        return [Finished(self.round, self.completed, self.failed)]

    def _close(self, now: float, *, reason: str) -> list[Action]:
        accepted = tuple(self._accepted)
        dropped = tuple(self._dropped)
        timed_out = self.pending
        actions: list[Action] = []
        if len(accepted) >= self.config.min_updates:
            outcome = Outcome.COMPLETED
            self.completed += 1
            actions.append(Aggregate(self.round, accepted))
        else:
            outcome = Outcome.FAILED
            self.failed += 1
            reason = (f"{reason}; {len(accepted)} update(s) < min_updates "
                      f"{self.config.min_updates}")
        actions.append(CloseRound(self.round, outcome, accepted, dropped, timed_out, reason))
        self._sampled = ()
        self._accepted = {}
        self._dropped = {}
        self.deadline = float("inf")
        if self.config.evaluates_after(self.round):
            return actions + self._start_evaluation(now)
        return actions + self._next_round(now)

    def _next_round(self, now: float) -> list[Action]:
        if self.round >= self.config.num_rounds:
            self.phase = Phase.FINISHED
            return [Finished(self.round, self.completed, self.failed)]
        self.round += 1
        self.phase = Phase.WAITING
        return self._maybe_start(now)

    def _start_evaluation(self, now: float) -> list[Action]:
        """Sample evaluators among the clients available now (an empty pool skips it)."""
        pool = tuple(sorted(self._available))
        k = min(len(pool), self.config.eval_clients or self.config.sample_size(len(pool)))
        if k == 0:
            return [CloseEvaluation(self.round, (), reason="no client available"),
                    *self._next_round(now)]
        # A child of the round's generator: independent of the training sample's draws.
        picks = self._rng_for(self.round).spawn(1)[0].choice(len(pool), size=k, replace=False)
        self._sampled = tuple(pool[i] for i in sorted(int(j) for j in picks))
        self._reported = {}
        self._dropped = {}
        timeout = self.config.eval_timeout or self.config.round_timeout
        self.deadline = now + timeout
        self.phase = Phase.EVALUATING
        return [SendEvaluation(cid, self.round, self.deadline) for cid in self._sampled]

    def _close_evaluation(self, now: float, *, reason: str) -> list[Action]:
        close = CloseEvaluation(self.round, tuple(self._reported), tuple(self._dropped),
                                self.pending, reason)
        self._sampled = ()
        self._reported = {}
        self._dropped = {}
        self.deadline = float("inf")
        return [close, *self._next_round(now)]


_TABLE: dict[tuple[Phase, type], _Handler] = {
    (Phase.WAITING, ClientAvailable): RoundMachine._on_available,
    (Phase.WAITING, ClientDropped): RoundMachine._on_dropped,
    (Phase.WAITING, UpdateReceived): RoundMachine._on_update_outside_round,
    (Phase.WAITING, Tick): RoundMachine._on_tick,
    (Phase.WAITING, EvaluationReceived): RoundMachine._on_evaluation_outside,
    (Phase.TRAINING, ClientAvailable): RoundMachine._on_available,
    (Phase.TRAINING, ClientDropped): RoundMachine._on_dropped,
    (Phase.TRAINING, UpdateReceived): RoundMachine._on_update,
    (Phase.TRAINING, Tick): RoundMachine._on_tick,
    (Phase.TRAINING, EvaluationReceived): RoundMachine._on_evaluation_outside,
    (Phase.EVALUATING, ClientAvailable): RoundMachine._on_available,
    (Phase.EVALUATING, ClientDropped): RoundMachine._on_dropped,
    (Phase.EVALUATING, UpdateReceived): RoundMachine._on_update_outside_round,
    (Phase.EVALUATING, EvaluationReceived): RoundMachine._on_evaluation,
    (Phase.EVALUATING, Tick): RoundMachine._on_tick,
    (Phase.FINISHED, ClientAvailable): RoundMachine._ignore,
    (Phase.FINISHED, ClientDropped): RoundMachine._ignore,
    (Phase.FINISHED, UpdateReceived): RoundMachine._on_update_outside_round,
    (Phase.FINISHED, Tick): RoundMachine._ignore,
    (Phase.FINISHED, EvaluationReceived): RoundMachine._on_evaluation_outside,
}
