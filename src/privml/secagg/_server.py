"""The server's side of a SecAgg+ round, as a sans-IO state machine.

The shell feeds it each client's message with the sender it authenticated
(:meth:`SecAggServer.receive`), and calls :meth:`SecAggServer.advance` when every expected
client has answered (:attr:`SecAggServer.waiting` is empty) or the stage's deadline, which the
shell keeps, has passed. ``advance`` closes the stage: the clients that answered are the
stage's survivors, and it returns the message for each of them for the next stage::

    stage          waits for       advance() returns           survivors
    ADVERTISE      AdvertiseKeys   KeyDirectory per client     U1
    SHARE_KEYS     ShareKeys       ShareInbox per client       U2 ⊆ U1
    MASKED_INPUT   MaskedInput     UnmaskRequest per client    U3 ⊆ U2
    UNMASK         UnmaskShares    {} and :attr:`total` is set

Masked inputs are added into one accumulator as they arrive (memory O(d), not O(n·d)).
At the end the server rebuilds, from ``shamir_threshold`` shares each, the self-mask seed of
every survivor in U3 and the mask key of every client in U2 \\ U3 (it sent shares, then
dropped), removes those masks, and keeps the sum of U3's encoded inputs. Below
``min_survivors`` at any stage, or short of shares for a client, the round aborts with
:class:`~privml.RoundAbortedError` and reveals nothing.

A refused message raises :class:`~privml.SecAggError` with a distinct code and changes
nothing, so one bad client does not break the round for the others.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from enum import Enum
from typing import Any

import numpy as np

from privml._exceptions import ConfigError, RoundAbortedError, SecAggError
from privml.secagg import hazmat
from privml.secagg._client import mask_key, self_mask_key
from privml.secagg._graph import graph_seed, neighbours
from privml.secagg._messages import (
    AdvertiseKeys,
    ClientMessage,
    KeyDirectory,
    MaskedInput,
    ServerMessage,
    ShareInbox,
    ShareKeys,
    UnmaskRequest,
    UnmaskShares,
)
from privml.secagg._params import RoundParams, SecAggConfig
from privml.secagg._wire import check_id

__all__ = ["SecAggServer", "ServerStage"]

MapFn = Callable[[Callable[[Any], Any], Iterable[Any]], Iterable[Any]]


class ServerStage(Enum):
    ADVERTISE = "advertise"
    SHARE_KEYS = "share_keys"
    MASKED_INPUT = "masked_input"
    UNMASK = "unmask"
    DONE = "done"
    ABORTED = "aborted"


_EXPECT: dict[ServerStage, type[ClientMessage]] = {
    ServerStage.ADVERTISE: AdvertiseKeys,
    ServerStage.SHARE_KEYS: ShareKeys,
    ServerStage.MASKED_INPUT: MaskedInput,
    ServerStage.UNMASK: UnmaskShares,
}


class SecAggServer:
    """The coordinator's side of one round over ``participants`` (the sampled clients)."""

    def __init__(self, *, run: str, round_: int, participants: Sequence[str], length: int,
                 bits: int = 32, config: SecAggConfig | None = None,
                 map_fn: MapFn | None = None, lanes: int = 1) -> None:
        """``map_fn`` / ``lanes``: the masks removed at the end are built in ``lanes``
        groups mapped with ``map_fn`` (e.g. a thread pool's ``map``: the keystream is made
        without the GIL); the default, builtin ``map`` with one lane, stays in this thread."""
        check_id(run, what="run")
        for cid in participants:
            check_id(cid)
        if len(set(participants)) != len(participants):
            raise ConfigError("participants must be distinct")
        if bits not in (32, 64) or length < 1:
            raise ConfigError("bits must be 32 or 64 and length >= 1")
        self.run, self.round, self.length, self.bits = run, round_, length, bits
        self.config = config or SecAggConfig()
        self.participants = frozenset(participants)
        self.stage = ServerStage.ADVERTISE
        self.params: RoundParams | None = None
        self.graph: dict[str, frozenset[str]] = {}
        self.survivors: dict[ServerStage, frozenset[str]] = {}
        self.total: np.ndarray | None = None
        self._keys: dict[str, tuple[bytes, bytes]] = {}
        self._sealed: dict[str, dict[str, bytes]] = {}  # recipient -> sender -> blob
        self._senders: set[str] = set()
        self._acc = np.zeros(length, dtype=np.uint32 if bits == 32 else np.uint64)
        self._unmask: dict[str, UnmaskShares] = {}
        self._map: MapFn = map_fn or map
        self._lanes = max(1, lanes)

    @property
    def expected(self) -> frozenset[str]:
        """Who the current stage waits for."""
        order = list(ServerStage)
        i = order.index(self.stage)
        if self.stage in (ServerStage.DONE, ServerStage.ABORTED):
            return frozenset()
        return self.survivors[order[i - 1]] if i else self.participants

    @property
    def waiting(self) -> frozenset[str]:
        return self.expected - self._senders

    # ---- receiving -------------------------------------------------------------------

    def receive(self, msg: ClientMessage, *, sender: str) -> None:
        """Take one client's message for the current stage (``sender``: who the transport
        authenticated); SecAggError, with no state changed, if it is refused."""
        if msg.sender != sender:
            raise SecAggError(f"{sender} sent a message signed as {msg.sender}",
                              code="wrong_sender")
        if (msg.run, msg.round) != (self.run, self.round):
            raise SecAggError(f"message for run {msg.run} round {msg.round}; the round is "
                              f"{self.run} round {self.round}", code="wrong_round")
        if sender not in self.participants:
            raise SecAggError(f"{sender} is not in this round", code="not_participant")
        expect = _EXPECT.get(self.stage)
        if expect is None or not isinstance(msg, expect):
            raise SecAggError(f"{type(msg).__name__} in the {self.stage.value} stage",
                              code="wrong_stage")
        if sender in self._senders:
            raise SecAggError(f"{sender} already sent its {expect.__name__}", code="replay")
        if sender not in self.expected:
            raise SecAggError(f"{sender} dropped out of this round at an earlier stage",
                              code="not_participant")
        self._take(msg)
        self._senders.add(sender)

    def _take(self, msg: ClientMessage) -> None:
        if isinstance(msg, AdvertiseKeys):
            taken = {k for pair in self._keys.values() for k in pair}
            if msg.enc_key in taken or msg.mask_key in taken:
                raise SecAggError("a public key another client already advertised",
                                  code="bad_key")
            self._keys[msg.sender] = (msg.enc_key, msg.mask_key)
        elif isinstance(msg, ShareKeys):
            recipients = {cid for cid, _ in msg.sealed}
            if recipients != self.graph[msg.sender]:
                raise SecAggError("shares must go to exactly the sender's neighbours",
                                  code="bad_message")
            for cid, blob in msg.sealed:
                self._sealed.setdefault(cid, {})[msg.sender] = blob
        elif isinstance(msg, MaskedInput):
            if msg.vector.shape != self._acc.shape or msg.vector.dtype != self._acc.dtype:
                raise SecAggError(f"the masked vector must be {self.length} values of "
                                  f"{self.bits} bits", code="bad_message")
            np.add(self._acc, msg.vector, out=self._acc)
        else:
            self._check_unmask(msg)
            self._unmask[msg.sender] = msg

    def _check_unmask(self, msg: UnmaskShares) -> None:
        u2, u3 = self.survivors[ServerStage.SHARE_KEYS], self.survivors[ServerStage.MASKED_INPUT]
        near = self.graph[msg.sender] & u2
        seeds = {c for c, _ in msg.self_mask_shares}
        keys = {c for c, _ in msg.mask_key_shares}
        if seeds != near & u3 or keys != near - u3:
            raise SecAggError("unmask shares must be seed shares of the surviving neighbours "
                              "and key shares of the dropped ones", code="bad_message")
        for _, share in (*msg.self_mask_shares, *msg.mask_key_shares):
            if len(share) != hazmat.SHARE_BYTES:
                raise SecAggError("a share has the wrong length", code="bad_message")

    # ---- closing stages --------------------------------------------------------------

    def advance(self) -> dict[str, ServerMessage]:
        """Close the current stage; the messages for the next one (empty when done)."""
        closing = self.stage
        if closing not in _EXPECT:
            raise ConfigError(f"the round is {closing.value}")
        survivors = frozenset(self._senders)
        try:
            if closing is ServerStage.ADVERTISE:
                out = self._directories(survivors)
            else:
                if closing is not ServerStage.UNMASK:  # (there, only shares count)
                    self._need(len(survivors), closing)
                out = self._next(closing, survivors)
        except RoundAbortedError:
            self.stage = ServerStage.ABORTED
            raise
        self.survivors[closing] = survivors
        self._senders = set()
        order = list(ServerStage)
        self.stage = order[order.index(closing) + 1]
        return out

    def _need(self, n: int, stage: ServerStage) -> None:
        assert self.params is not None  # nosec B101  # narrowing: set when ADVERTISE closed; stages run in order
        if n < self.params.min_survivors:
            raise RoundAbortedError(f"{n} clients answered the {stage.value} stage, fewer "
                                    f"than min_survivors = {self.params.min_survivors}")

    def _directories(self, u1: frozenset[str]) -> dict[str, ServerMessage]:
        params = self.config.resolve(len(u1), bits=self.bits, length=self.length)
        ids = tuple(sorted(u1))
        self.params = params
        self.graph = neighbours(ids, params.neighbours, graph_seed(self.run, self.round, ids))
        return {cid: KeyDirectory(self.run, self.round, cid, params, ids, tuple(
            (n, *self._keys[n]) for n in sorted(self.graph[cid]))) for cid in ids}

    def _next(self, closing: ServerStage, survivors: frozenset[str]
              ) -> dict[str, ServerMessage]:
        if closing is ServerStage.SHARE_KEYS:
            return {cid: ShareInbox(self.run, self.round, cid, tuple(
                sorted((s, b) for s, b in self._sealed.get(cid, {}).items() if s in survivors)))
                for cid in sorted(survivors)}
        if closing is ServerStage.MASKED_INPUT:
            self._check_recoverable(survivors)
            ids = tuple(sorted(survivors))
            return {cid: UnmaskRequest(self.run, self.round, cid, ids) for cid in ids}
        self.total = self._unmasked()
        return {}

    def _check_recoverable(self, u3: frozenset[str]) -> None:
        """Before asking for shares: every secret to rebuild has enough holders in U3."""
        assert self.params is not None  # nosec B101  # narrowing: set when ADVERTISE closed; stages run in order
        u2, t = self.survivors[ServerStage.SHARE_KEYS], self.params.shamir_threshold
        for cid in sorted(u2):
            holders = len(self.graph[cid] & u2 & u3)
            if holders < t:
                raise RoundAbortedError(f"{cid}'s secret has {holders} surviving holders, "
                                        f"fewer than shamir_threshold = {t}")

    def _unmasked(self) -> np.ndarray:
        assert self.params is not None  # nosec B101  # narrowing: set when ADVERTISE closed; stages run in order
        t = self.params.shamir_threshold
        order = {cid: i + 1 for i, cid in enumerate(sorted(self.survivors[ServerStage.ADVERTISE]))}
        seeds: dict[str, list[tuple[int, bytes]]] = {}
        keys: dict[str, list[tuple[int, bytes]]] = {}
        for holder, msg in self._unmask.items():
            for owner, share in msg.self_mask_shares:
                seeds.setdefault(owner, []).append((order[holder], share))
            for owner, share in msg.mask_key_shares:
                keys.setdefault(owner, []).append((order[holder], share))
        u3 = self.survivors[ServerStage.MASKED_INPUT]
        dropped = self.survivors[ServerStage.SHARE_KEYS] - u3
        jobs: list[tuple[bytes, bool]] = []  # (mask key, subtract it)
        for owner in sorted(u3):
            seed = self._rebuild(owner, seeds.get(owner, []), t)
            jobs.append((self_mask_key(self.run, self.round, seed, self._keys[owner][1]), True))
        for owner in sorted(dropped):
            private = self._rebuild(owner, keys.get(owner, []), t)
            if hazmat.public_key(private) != self._keys[owner][1]:
                raise RoundAbortedError(f"the shares of {owner}'s mask key do not rebuild the "
                                        "key it advertised")
            for peer in sorted(self.graph[owner] & u3):
                key = mask_key(self.run, self.round, private, (owner, self._keys[owner][1]),
                               (peer, self._keys[peer][1]))
                # The peer added +mask if its id sorts first, else -mask: undo that.
                jobs.append((key, peer < owner))
        return self._remove_masks(self._acc, jobs)

    def _remove_masks(self, acc: np.ndarray, jobs: list[tuple[bytes, bool]]) -> np.ndarray:
        if self._lanes == 1:
            for key, subtract in jobs:
                hazmat.add_mask(acc, key, subtract=subtract)
            return acc

        def lane(group: list[tuple[bytes, bool]]) -> np.ndarray:
            part = np.zeros_like(acc)
            for key, subtract in group:
                hazmat.add_mask(part, key, subtract=subtract)
            return part

        for part in self._map(lane, [jobs[i::self._lanes] for i in range(self._lanes)]):
            np.add(acc, part, out=acc)  # (the sum mod 2^m does not depend on the order)
        return acc

    def _rebuild(self, owner: str, shares: list[tuple[int, bytes]], t: int) -> bytes:
        if len(shares) < t:
            raise RoundAbortedError(f"{len(shares)} shares of {owner}'s secret arrived, "
                                    f"fewer than shamir_threshold = {t}")
        return hazmat.combine(shares, threshold=t)
