"""Events (what happened) and actions (what the shell must do) of the round protocol.

Both are frozen, slotted dataclasses that validate on construction, so a malformed event
never reaches the state machine. Events that carry what a remote peer said raise
:class:`~privml.ProtocolError` (a :class:`~privml.PeerError`) when malformed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

from privml._exceptions import ConfigError, ProtocolError

__all__ = [
    "Action",
    "Aggregate",
    "ClientAvailable",
    "ClientDropped",
    "CloseEvaluation",
    "CloseRound",
    "EvaluationReceived",
    "Event",
    "Finished",
    "Outcome",
    "RoundConfig",
    "SendEvaluation",
    "SendTask",
    "Tick",
    "UpdateReceived",
]


def _check_client_id(client_id: object) -> None:
    if not isinstance(client_id, str) or not client_id or len(client_id) > 256:
        raise ProtocolError(f"client id must be a non-empty string (<= 256 chars): {client_id!r}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class RoundConfig:
    """How rounds are run.

    Exactly one of ``clients_per_round`` (a fixed sample size), ``fraction`` (of the
    clients available when the round starts, at least ``min_clients``) and ``poisson_rate``
    is given. Poisson sampling includes each available client independently with that
    chance, with no minimum and no top-up (a rule that would break it, and with it the
    privacy amplification accounted for it); a round that samples nobody fails at once. A round
    starts once at least ``max(sample size, min_clients)`` clients are available; it closes
    when every sampled client has answered or dropped, or at ``round_timeout`` seconds after
    it started. It is *completed* (aggregated) if at least ``min_updates`` updates arrived,
    else *failed* (the global model is kept). Failed rounds count towards ``num_rounds``,
    so a run always ends.

    With ``eval_every`` = k > 0, every k-th round and the last one are followed by an
    *evaluation round* before the next training round: ``eval_clients`` available clients
    (default: the training sample size; fewer if fewer are there) evaluate the new global
    model on their own held-out data, until all have answered or ``eval_timeout`` (default
    ``round_timeout``) has passed.
    """

    num_rounds: int
    clients_per_round: int | None = None
    fraction: float | None = None
    poisson_rate: float | None = None  # each available client is sampled with this chance
    min_clients: int = 1
    min_updates: int = 1
    round_timeout: float = 600.0
    eval_every: int = 0
    eval_clients: int | None = None
    eval_timeout: float | None = None

    def __post_init__(self) -> None:
        if not _is_int(self.num_rounds) or self.num_rounds < 1:
            raise ConfigError(f"num_rounds must be an int >= 1, got {self.num_rounds!r}")
        given = [x is not None for x in (self.clients_per_round, self.fraction,
                                         self.poisson_rate)]
        if sum(given) != 1:
            raise ConfigError("give exactly one of clients_per_round, fraction and "
                              "poisson_rate")
        if self.poisson_rate is not None and not (0 < self.poisson_rate <= 1):
            raise ConfigError(f"poisson_rate must be in (0, 1], got {self.poisson_rate!r}")
        if self.clients_per_round is not None and (
            not _is_int(self.clients_per_round) or self.clients_per_round < 1
        ):
            raise ConfigError(f"clients_per_round must be >= 1, got {self.clients_per_round!r}")
        if self.fraction is not None and not (0 < self.fraction <= 1):
            raise ConfigError(f"fraction must be in (0, 1], got {self.fraction!r}")
        if not _is_int(self.min_clients) or self.min_clients < 1:
            raise ConfigError(f"min_clients must be >= 1, got {self.min_clients!r}")
        if not _is_int(self.min_updates) or self.min_updates < 1:
            raise ConfigError(f"min_updates must be >= 1, got {self.min_updates!r}")
        if self.clients_per_round is not None and self.min_updates > self.clients_per_round:
            raise ConfigError(
                f"min_updates ({self.min_updates}) exceeds clients_per_round "
                f"({self.clients_per_round}): no round could ever complete")
        if not (math.isfinite(self.round_timeout) and self.round_timeout > 0):
            raise ConfigError(f"round_timeout must be > 0 seconds, got {self.round_timeout!r}")
        if not _is_int(self.eval_every) or self.eval_every < 0:
            raise ConfigError(f"eval_every must be an int >= 0, got {self.eval_every!r}")
        if self.eval_clients is not None and (
                not _is_int(self.eval_clients) or self.eval_clients < 1):
            raise ConfigError(f"eval_clients must be >= 1, got {self.eval_clients!r}")
        if self.eval_timeout is not None and not (
                math.isfinite(self.eval_timeout) and self.eval_timeout > 0):
            raise ConfigError(f"eval_timeout must be > 0 seconds, got {self.eval_timeout!r}")

    def evaluates_after(self, round_: int) -> bool:
        """Whether an evaluation round follows training round ``round_``."""
        return self.eval_every > 0 and (round_ % self.eval_every == 0
                                        or round_ == self.num_rounds)

    def sample_size(self, available: int) -> int:
        """How many clients to sample when ``available`` are there (Poisson sampling: the
        expected number; the sample itself is drawn client by client)."""
        if self.clients_per_round is not None:
            return self.clients_per_round
        if self.poisson_rate is not None:
            return math.ceil(self.poisson_rate * available)
        assert self.fraction is not None  # nosec B101  # narrowing: __post_init__ requires exactly one of the three
        return max(self.min_clients, math.ceil(self.fraction * available))


# ---- events -------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ClientAvailable:
    """A client enrolled or came back and can be sampled."""

    client_id: str

    def __post_init__(self) -> None:
        _check_client_id(self.client_id)


@dataclass(frozen=True, slots=True)
class ClientDropped:
    """A client went away; if it was sampled and had not answered, it is dropped."""

    client_id: str

    def __post_init__(self) -> None:
        _check_client_id(self.client_id)


@dataclass(frozen=True, slots=True)
class UpdateReceived:
    """A client's update for ``round`` arrived (its payload is checked by the shell)."""

    client_id: str
    round: int
    num_examples: int

    def __post_init__(self) -> None:
        _check_client_id(self.client_id)
        if not _is_int(self.round) or self.round < 1:
            raise ProtocolError(f"round must be an int >= 1, got {self.round!r}")
        if not _is_int(self.num_examples) or self.num_examples < 1:
            raise ProtocolError(f"num_examples must be an int >= 1, got {self.num_examples!r}")


@dataclass(frozen=True, slots=True)
class EvaluationReceived:
    """A client's evaluation of the global model after training round ``round`` arrived."""

    client_id: str
    round: int
    num_examples: int

    def __post_init__(self) -> None:
        _check_client_id(self.client_id)
        if not _is_int(self.round) or self.round < 1:
            raise ProtocolError(f"round must be an int >= 1, got {self.round!r}")
        if not _is_int(self.num_examples) or self.num_examples < 0:
            raise ProtocolError(f"num_examples must be an int >= 0, got {self.num_examples!r}")


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passed; the clock value is the ``now`` argument of ``handle``."""


Event = ClientAvailable | ClientDropped | UpdateReceived | EvaluationReceived | Tick


# ---- actions ------------------------------------------------------------------------------

class Outcome(Enum):
    COMPLETED = "completed"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class SendTask:
    """Ask ``client_id`` to train on the current global model for ``round``."""

    client_id: str
    round: int
    deadline: float


@dataclass(frozen=True, slots=True)
class Aggregate:
    """Aggregate the updates of ``client_ids`` (in arrival order) into a new global model."""

    round: int
    client_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CloseRound:
    """The round is over; who answered, who dropped and who ran out of time."""

    round: int
    outcome: Outcome
    accepted: tuple[str, ...]
    dropped: tuple[str, ...] = ()
    timed_out: tuple[str, ...] = ()
    reason: str = ""


@dataclass(frozen=True, slots=True)
class SendEvaluation:
    """Ask ``client_id`` to evaluate the global model left by training round ``round``."""

    client_id: str
    round: int
    deadline: float


@dataclass(frozen=True, slots=True)
class CloseEvaluation:
    """The evaluation round after training round ``round`` is over."""

    round: int
    reported: tuple[str, ...]
    dropped: tuple[str, ...] = ()
    timed_out: tuple[str, ...] = ()
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Finished:
    """All rounds are done."""

    rounds: int
    completed: int
    failed: int


Action = SendTask | Aggregate | CloseRound | SendEvaluation | CloseEvaluation | Finished
