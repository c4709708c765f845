"""Secure aggregation at the coordinator: one SecAgg+ round per training round.

The coordinator never receives a client's update with secure aggregation on. After local
training, each sampled client walks the four SecAgg+ stages over the device port::

    POST /v1/secagg/advertise-keys   then GET /v1/secagg/key-directory
    POST /v1/secagg/share-keys       then GET /v1/secagg/share-inbox
    POST /v1/secagg/masked-input     then GET /v1/secagg/unmask-request
    POST /v1/secagg/unmask-shares

each POST body and each GET answer being one message of :mod:`privml.secagg` in its byte
encoding. A stage closes when every client it waits for has posted, or at its deadline (the
first stage's is the round's training deadline; each later one ``stage_timeout`` after the
stage before closed). The GETs answer "wait" until then. What the stage closes with is kept,
so a client retrying a GET gets the same bytes.

When the last stage closes the coordinator has the sum of the survivors' fixed-point
updates, decodes it into the example-weighted mean delta, and the round machine hears of
an update from each survivor and a drop of everyone else. An aborted round (too few
survivors or shares) reveals nothing: every sampled client is dropped and the round fails.
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from privml._exceptions import ConfigError, ParamsError, ProtocolError, RoundAbortedError
from privml.dp import ClientLevelDP
from privml.secagg import (
    AdvertiseKeys,
    ClientMessage,
    FixedPoint,
    MaskedInput,
    SecAggConfig,
    SecAggServer,
    ServerStage,
    ShareKeys,
    UnmaskShares,
    decode,
    encode,
)

__all__ = ["GET_STEPS", "POST_STEPS", "DDGSum", "SecureRound"]

# URL step -> the message it takes (posted in another stage: ``wrong_stage``)
POST_STEPS: dict[str, type[ClientMessage]] = {
    "advertise-keys": AdvertiseKeys,
    "share-keys": ShareKeys,
    "masked-input": MaskedInput,
    "unmask-shares": UnmaskShares,
}
# URL step -> the stage whose closing produces it
GET_STEPS: dict[str, ServerStage] = {
    "key-directory": ServerStage.ADVERTISE,
    "share-inbox": ServerStage.SHARE_KEYS,
    "unmask-request": ServerStage.MASKED_INPUT,
}


@functools.cache
def _pool(workers: int) -> ThreadPoolExecutor:
    """Threads that build the masks removed at the end of a round (AES-CTR without the GIL)."""
    return ThreadPoolExecutor(workers, thread_name_prefix="privml-secagg")


class DDGSum:
    """The encoding of a round under client-level distributed DP: each client sends its
    update clipped, rounded and noised by the distributed discrete Gaussian (no weight lane:
    DP-FedAvg weighs clients equally), and the decoded sum is divided by the expected count."""

    def __init__(self, dp: ClientLevelDP) -> None:
        if dp.ddg is None:
            raise ConfigError("DDGSum needs client-level DP with distributed noise")
        self.dp, self.ddg, self.bits = dp, dp.ddg, dp.ddg.bits

    def describe(self) -> dict[str, Any]:
        return self.ddg.describe()

    def decode(self, total: np.ndarray) -> tuple[np.ndarray, int]:
        return self.dp.mean_of_sum(total), 0


@dataclass(slots=True)
class _Outcome:
    survivors: tuple[str, ...]
    mean: np.ndarray | None  # None: aborted
    total_weight: int
    reason: str


class SecureRound:
    """The secure aggregation of one training round."""

    def __init__(self, *, run: str, round_: int, participants: tuple[str, ...],
                 encoding: FixedPoint | DDGSum, config: SecAggConfig, length: int,
                 first_deadline: float, stage_timeout: float) -> None:
        self.round = round_
        self.encoding = encoding
        lanes = os.cpu_count() or 1
        weight_lane = 1 if isinstance(encoding, FixedPoint) else 0
        self.server = SecAggServer(run=run, round_=round_, participants=participants,
                                   length=length + weight_lane, bits=encoding.bits,
                                   config=config,
                                   map_fn=_pool(lanes).map, lanes=lanes)
        self.deadline = first_deadline
        self.stage_timeout = stage_timeout
        self.replies: dict[ServerStage, dict[str, bytes]] = {}
        self.outcome: _Outcome | None = None
        self.settled = False  # the coordinator has acted on the outcome

    def joined(self, client_id: str) -> bool:
        """Whether the client has advertised keys (its training is over)."""
        return (self.server.stage is not ServerStage.ADVERTISE
                or client_id not in self.server.waiting)

    def settings(self) -> dict[str, Any]:
        """What a client needs to encode its update (sent with its ``train`` task)."""
        return {**self.encoding.describe(), "stage_timeout": self.stage_timeout}

    def post(self, client_id: str, step: str, body: bytes, now: float) -> dict[str, Any]:
        if step not in POST_STEPS:
            raise ProtocolError(f"no SecAgg step {step!r}", code="not_found", status=404)
        msg = decode(body, expect=POST_STEPS[step])
        if msg.round != self.round:  # (the server checks it too; this names the cause)
            raise ProtocolError(f"SecAgg message for round {msg.round}, the round is "
                                f"{self.round}", code="wrong_round", status=409)
        assert isinstance(msg, POST_STEPS[step])  # nosec B101  # narrowing: decode(expect=) refused any other type
        self.server.receive(msg, sender=client_id)
        if not self.server.waiting:
            self._advance(now, reason="every client answered")
        return {"accepted": True, "round": self.round, "stage": self.server.stage.value}

    def get(self, client_id: str, step: str, round_: int) -> bytes | None:
        """The server's message for ``step`` to ``client_id``; None while the stage is open."""
        if step not in GET_STEPS:
            raise ProtocolError(f"no SecAgg step {step!r}", code="not_found", status=404)
        if round_ != self.round:
            raise ProtocolError(f"round {round_} is not the current SecAgg round "
                                f"{self.round}", code="wrong_round", status=409)
        replies = self.replies.get(GET_STEPS[step])
        if replies is None:
            if self.outcome is not None:  # aborted before this stage closed
                raise ProtocolError(f"the secure aggregation of round {self.round} was "
                                    f"aborted: {self.outcome.reason}", code="secagg_aborted")
            return None
        if client_id not in replies:
            raise ProtocolError(f"{client_id} is no longer part of round {self.round}'s "
                                "secure aggregation", code="secagg_dropped")
        return replies[client_id]

    def tick(self, now: float) -> None:
        if self.outcome is None and now >= self.deadline:
            self._advance(now, reason="stage deadline reached")

    def _advance(self, now: float, *, reason: str) -> None:
        closing = self.server.stage
        try:
            out = self.server.advance()
        except RoundAbortedError as exc:
            self.outcome = _Outcome((), None, 0, str(exc))
            return
        self.replies[closing] = {cid: encode(m) for cid, m in out.items()}
        self.deadline = now + self.stage_timeout
        if self.server.stage is ServerStage.DONE:
            assert self.server.total is not None  # nosec B101  # narrowing: the server is DONE, so the sum is there
            try:
                mean, weight = self.encoding.decode(self.server.total)
            except ParamsError as exc:  # an input was not clipped: nothing is applied
                self.outcome = _Outcome((), None, 0, f"aggregate refused: {exc}")
                return
            survivors = tuple(sorted(self.server.survivors[ServerStage.MASKED_INPUT]))
            self.outcome = _Outcome(survivors, mean, weight, reason)

    def status(self) -> dict[str, Any]:
        return {"round": self.round, "stage": self.server.stage.value,
                "waiting": len(self.server.waiting),
                "aborted": None if self.outcome is None or self.outcome.mean is not None
                else self.outcome.reason}
