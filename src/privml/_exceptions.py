"""The exception tree of privml.

Every error privml raises on purpose derives from :class:`PrivmlError`. Errors caused by
something a *remote peer* sent (a client's update, bytes off the wire) are kept apart from
*local misuse* (a bad argument, an unknown name, a corrupt file on this machine), so that a
server can answer the first with a 4xx and treat the second as its own bug or config error::

    PrivmlError
    ├── ConfigError            local misuse: unknown name, out-of-range argument (also ValueError)
    ├── DataError              a dataset file is missing, truncated, corrupt or malformed
    ├── IntegrityError         sealed bytes do not open: wrong key, tampered, truncated,
    │                          reordered or moved (one opaque error, whatever the cause)
    └── PeerError              something a remote peer sent was refused
        ├── ParamsError        parameter bytes fail to decode or to match the expected spec
        ├── RequestError       a malformed request: bad header, too large, bad credentials
        └── ProtocolError      a protocol event that the current state does not allow
            ├── LateUpdateError       an update for a round that is closed or not current
            ├── DuplicateUpdateError  a second update from the same client in one round
            ├── ReplayError           an update id that was seen before
            ├── UnknownClientError    an update from a client not sampled for the round
            └── SecAggError           a secure-aggregation message refused (its code says why:
                                      truncated, bad_message, bad_tag, bad_key, wrong_sender,
                                      wrong_round, wrong_stage, replay, not_participant)
    RoundAbortedError      a secure-aggregation round cannot finish safely (too few
                           survivors or shares); nothing about any input is revealed
    BudgetExceededError    applying a DP event would take epsilon past its target; the
                           accountant is unchanged (checked before the round runs)
    UnreachableError       the coordinator could not be reached within a client's retry
                           budget (connection refused, reset, timed out)

Every :class:`PeerError` carries a short machine-readable ``code`` and the HTTP status a
server answers it with, so the wire error body is ``{"error": code, "detail": str(exc)}``.

Checks raise; they never return a bool to be forgotten.
"""

from __future__ import annotations

__all__ = [
    "BudgetExceededError",
    "ConfigError",
    "DataError",
    "DuplicateUpdateError",
    "IntegrityError",
    "LateUpdateError",
    "ParamsError",
    "PeerError",
    "PrivmlError",
    "ProtocolError",
    "ReplayError",
    "RequestError",
    "RoundAbortedError",
    "SecAggError",
    "UnknownClientError",
    "UnreachableError",
]


class PrivmlError(Exception):
    """Root of every error privml raises on purpose."""


class ConfigError(PrivmlError, ValueError):
    """Local misuse: an unknown name or an argument outside its allowed range."""


class DataError(PrivmlError):
    """A dataset file is missing, truncated, corrupt or malformed."""


class IntegrityError(PrivmlError):
    """Sealed bytes failed to open. Deliberately says nothing of why (wrong key, wrong store
    or record, a flipped byte, truncation, reordering): the cause is not the reader's to
    learn, and no partial plaintext is ever returned."""

    def __init__(self, message: str = "sealed data failed its integrity check") -> None:
        super().__init__(message)


class PeerError(PrivmlError):
    """Something a remote peer sent was refused; the local state is unchanged."""

    code: str = "bad_request"
    status: int = 400

    def __init__(self, detail: str, *, code: str | None = None, status: int | None = None):
        super().__init__(detail)
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status


class ParamsError(PeerError):
    """Parameter bytes failed to decode, or do not match the expected spec."""

    code = "invalid_params"
    status = 422


class RequestError(PeerError):
    """A malformed request: a bad header, a body too large, missing or bad credentials."""


class ProtocolError(PeerError):
    """A protocol event that the current state does not allow."""

    code = "protocol_error"
    status = 409


class LateUpdateError(ProtocolError):
    """An update for a round that is already closed, or not the current one."""

    code = "late_update"


class DuplicateUpdateError(ProtocolError):
    """A second update from the same client within one round."""

    code = "duplicate_update"


class ReplayError(ProtocolError):
    """An update id that was already seen (a replayed request)."""

    code = "replay"


class UnknownClientError(ProtocolError):
    """An update or event from a client that is not known or not sampled for this round."""

    code = "not_sampled"
    status = 403


class SecAggError(ProtocolError):
    """A secure-aggregation message was refused; the receiving machine's state is unchanged.

    ``code`` tells the reason apart: ``truncated`` / ``bad_message`` (it does not decode),
    ``bad_tag`` (an encrypted share failed authentication), ``bad_key`` (a malformed or
    low-order public key), ``wrong_sender``, ``wrong_round``, ``wrong_stage``, ``replay``
    (the same sender's message for this stage again), ``not_participant``.
    """

    code = "secagg_refused"
    status = 409


class RoundAbortedError(PrivmlError):
    """A secure-aggregation round cannot finish safely: fewer survivors than
    ``min_survivors``, or fewer than ``shamir_threshold`` shares for a client. The round
    reveals nothing; the caller starts another."""


class BudgetExceededError(PrivmlError):
    """Composing a DP event would take epsilon past the target. Raised *before* the event
    is composed, so the accountant (and any ledger built from it) is unchanged and the
    round can be refused without having run."""

    def __init__(self, detail: str, *, epsilon: float, target: float, delta: float):
        super().__init__(detail)
        self.epsilon = epsilon
        self.target = target
        self.delta = delta


class UnreachableError(PrivmlError):
    """The coordinator could not be reached (connection refused or reset, TLS handshake
    cut, timeout) for the whole of a client's retry budget."""
