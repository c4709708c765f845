"""The client's side of a SecAgg+ round, as a sans-IO state machine.

A client takes part in four stages; each method takes what the server sent, checks all of
it before changing any state, and returns the message to send back::

    advertise()                     -> AdvertiseKeys   two fresh X25519 key pairs
    share_keys(KeyDirectory)        -> ShareKeys       Shamir shares of the mask key and the
                                                       self-mask seed, sealed per neighbour
    masked_input(ShareInbox, x)     -> MaskedInput     x + self mask ± pairwise masks
    unmask(UnmaskRequest)           -> UnmaskShares    seed shares of surviving neighbours,
                                                       mask-key shares of dropped ones

Keys are derived as HKDF-SHA256 over an X25519 secret with ``info`` binding the run, round,
stage and both public keys; shares are sealed with AES-256-GCM under the same binding as
AAD; masks are AES-256-CTR keystreams. A refused message raises
:class:`~privml.SecAggError` and leaves the machine as it was, so the round goes on when
the right message comes. The same request twice gets the same answer (a retry); a
*different* request for a stage already answered is refused (``replay``) — above all the
unmask request, since answering two survivor lists could reveal both secrets of a client.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from enum import Enum

import numpy as np

from privml._exceptions import ConfigError, SecAggError
from privml.secagg import hazmat
from privml.secagg._graph import graph_seed, neighbours
from privml.secagg._messages import (
    AdvertiseKeys,
    KeyDirectory,
    MaskedInput,
    ShareInbox,
    ShareKeys,
    UnmaskRequest,
    UnmaskShares,
)
from privml.secagg._wire import Reader, Writer

__all__ = ["ClientStage", "SecAggClient", "mask_key", "self_mask_key", "share_aad"]

Entropy = Callable[[int], bytes]


class ClientStage(Enum):
    ADVERTISE = "advertise"
    SHARE_KEYS = "share_keys"
    MASKED_INPUT = "masked_input"
    UNMASK = "unmask"
    DONE = "done"


def share_aad(run: str, round_: int, sender_key: bytes, recipient_key: bytes) -> bytes:
    """HKDF info and GCM AAD of the shares one client seals to another."""
    return hazmat.binding(run=run, round_=round_, stage="share-keys",
                          keys=(sender_key, recipient_key))


def mask_key(run: str, round_: int, private: bytes, own: tuple[str, bytes],
             other: tuple[str, bytes]) -> bytes:
    """The AES key of the pairwise mask of two clients (ids and mask public keys); the same
    from either side, since the keys are bound in id order."""
    lo, hi = sorted((own, other))
    secret = hazmat.shared_secret(private, other[1])
    info = hazmat.binding(run=run, round_=round_, stage="pairwise-mask", keys=(lo[1], hi[1]))
    return hazmat.derive_key(secret, info=info)


def self_mask_key(run: str, round_: int, seed: bytes, mask_public: bytes) -> bytes:
    info = hazmat.binding(run=run, round_=round_, stage="self-mask", keys=(mask_public,))
    return hazmat.derive_key(seed, info=info)


def _refuse(detail: str, code: str = "bad_message") -> SecAggError:
    return SecAggError(detail, code=code)


class SecAggClient:
    """One client's side of one round."""

    def __init__(self, *, run: str, round_: int, client_id: str,
                 entropy: Entropy = os.urandom) -> None:
        self.run, self.round, self.client_id = run, round_, client_id
        self._entropy = entropy
        self.stage = ClientStage.ADVERTISE
        self._enc_sk, self._enc_pk = hazmat.keypair(entropy)
        self._mask_sk, self._mask_pk = hazmat.keypair(entropy)
        self._seed = entropy(32)
        self._sent: dict[ClientStage, tuple[object, object]] = {}
        self._directory: KeyDirectory | None = None
        self._keys: dict[str, tuple[bytes, bytes]] = {}
        self._shares: dict[str, tuple[bytes, bytes]] = {}  # neighbour -> (mask key, seed)

    # ---- helpers ---------------------------------------------------------------------

    def _check(self, msg: KeyDirectory | ShareInbox | UnmaskRequest,
               stage: ClientStage) -> object | None:
        """Header checks; the earlier answer when ``msg`` repeats an answered request."""
        if (msg.run, msg.round) != (self.run, self.round):
            raise _refuse(f"message for run {msg.run} round {msg.round}; this is run "
                          f"{self.run} round {self.round}", "wrong_round")
        if msg.recipient != self.client_id:
            raise _refuse(f"message for {msg.recipient}, not {self.client_id}",
                          "wrong_sender")
        if stage in self._sent:
            request, answer = self._sent[stage]
            if request == msg:
                return answer
            raise _refuse(f"{stage.value} was already answered for another request",
                          "replay")
        if self.stage is not stage:
            raise _refuse(f"expected the {self.stage.value} stage, got {stage.value}",
                          "wrong_stage")
        return None

    def _answer(self, stage: ClientStage, request: object, answer: object,
                next_stage: ClientStage) -> None:
        self._sent[stage] = (request, answer)
        self.stage = next_stage

    # ---- stages ----------------------------------------------------------------------

    def advertise(self) -> AdvertiseKeys:
        msg = AdvertiseKeys(self.run, self.round, self.client_id, self._enc_pk, self._mask_pk)
        if self.stage is ClientStage.ADVERTISE:
            self.stage = ClientStage.SHARE_KEYS
        return msg

    def share_keys(self, directory: KeyDirectory) -> ShareKeys:
        if (done := self._check(directory, ClientStage.SHARE_KEYS)) is not None:
            assert isinstance(done, ShareKeys)  # nosec B101  # narrowing: _sent[stage] holds this stage's answer
            return done
        keys = self._check_directory(directory)
        params = directory.params
        order = {cid: i + 1 for i, cid in enumerate(directory.participants)}
        holders = sorted(keys)
        xs = [order[cid] for cid in holders]
        t = params.shamir_threshold
        key_shares = hazmat.split(self._mask_sk, threshold=t, xs=xs, entropy=self._entropy)
        seed_shares = hazmat.split(self._seed, threshold=t, xs=xs, entropy=self._entropy)
        sealed = []
        for cid, ks, ss in zip(holders, key_shares, seed_shares, strict=True):
            aad = share_aad(self.run, self.round, self._enc_pk, keys[cid][0])
            key = hazmat.derive_key(hazmat.shared_secret(self._enc_sk, keys[cid][0]), info=aad)
            body = Writer().text(self.client_id).text(cid).blob(ks).blob(ss).getvalue()
            sealed.append((cid, hazmat.seal(key, body, aad=aad, nonce=self._entropy(12))))
        out = ShareKeys(self.run, self.round, self.client_id, tuple(sealed))
        self._directory, self._keys = directory, keys
        self._answer(ClientStage.SHARE_KEYS, directory, out, ClientStage.MASKED_INPUT)
        return out

    def _check_directory(self, d: KeyDirectory) -> dict[str, tuple[bytes, bytes]]:
        if self.client_id not in d.participants:
            raise _refuse("the key directory does not list this client", "not_participant")
        p = d.params
        if len(d.participants) < p.min_survivors:
            raise _refuse(f"{len(d.participants)} participants, fewer than min_survivors = "
                          f"{p.min_survivors}")
        try:
            graph = neighbours(d.participants, p.neighbours,
                               graph_seed(self.run, self.round, d.participants))
        except ValueError as exc:
            raise _refuse(f"the round's graph is impossible: {exc}") from None
        keys = {cid: (enc, mask) for cid, enc, mask in d.keys}
        if set(keys) != graph[self.client_id]:
            raise _refuse("the directory's neighbours are not this client's neighbours in "
                          "the round's graph")
        if len(keys) < p.shamir_threshold:
            raise _refuse(f"{len(keys)} neighbours, fewer than shamir_threshold = "
                          f"{p.shamir_threshold}")
        seen = {self._enc_pk, self._mask_pk}
        for enc, mask in keys.values():
            if enc in seen or mask in seen or enc == mask:
                raise _refuse("a public key appears twice in the directory", "bad_key")
            seen |= {enc, mask}
        return keys

    def masked_input(self, inbox: ShareInbox, encoded: np.ndarray) -> MaskedInput:
        """``encoded``: this client's update encoded in Z_{2^bits} (see FixedPoint)."""
        if (done := self._check(inbox, ClientStage.MASKED_INPUT)) is not None:
            assert isinstance(done, MaskedInput)  # nosec B101  # narrowing: _sent[stage] holds this stage's answer
            return done
        assert self._directory is not None  # nosec B101  # narrowing: _check enforced the stage order; share_keys set it
        params = self._directory.params
        dtype = np.uint32 if params.bits == 32 else np.uint64
        if (not isinstance(encoded, np.ndarray) or encoded.dtype != dtype
                or encoded.shape != (params.length,)):
            raise ConfigError(f"the encoded update must be {params.length} values of "
                              f"{np.dtype(dtype).name}")
        shares = self._open_inbox(inbox)
        y = np.ascontiguousarray(encoded, dtype=dtype).copy()
        hazmat.add_mask(y, self_mask_key(self.run, self.round, self._seed, self._mask_pk))
        for cid in shares:
            key = mask_key(self.run, self.round, self._mask_sk,
                           (self.client_id, self._mask_pk), (cid, self._keys[cid][1]))
            hazmat.add_mask(y, key, subtract=self.client_id > cid)
        out = MaskedInput(self.run, self.round, self.client_id, y)
        self._shares = shares
        self._answer(ClientStage.MASKED_INPUT, inbox, out, ClientStage.UNMASK)
        return out

    def _open_inbox(self, inbox: ShareInbox) -> dict[str, tuple[bytes, bytes]]:
        shares: dict[str, tuple[bytes, bytes]] = {}
        for sender, blob in inbox.sealed:
            if sender not in self._keys:
                raise _refuse(f"shares from {sender}, who is not a neighbour",
                              "wrong_sender")
            aad = share_aad(self.run, self.round, self._keys[sender][0], self._enc_pk)
            key = hazmat.derive_key(hazmat.shared_secret(self._enc_sk, self._keys[sender][0]),
                                    info=aad)
            r = Reader(hazmat.open_sealed(key, blob, aad=aad))
            if (r.text(), r.text()) != (sender, self.client_id):
                raise _refuse(f"the shares from {sender} name other parties", "wrong_sender")
            shares[sender] = (r.blob(), r.blob())
            r.end()
        return shares

    def unmask(self, request: UnmaskRequest) -> UnmaskShares:
        if (done := self._check(request, ClientStage.UNMASK)) is not None:
            assert isinstance(done, UnmaskShares)  # nosec B101  # narrowing: _sent[stage] holds this stage's answer
            return done
        assert self._directory is not None  # nosec B101  # narrowing: _check enforced the stage order; share_keys set it
        survivors = set(request.survivors)
        if self.client_id not in survivors:
            raise _refuse("this client is not among the survivors", "not_participant")
        if not survivors <= set(self._directory.participants):
            raise _refuse("the survivor list names clients that never advertised keys")
        if len(survivors) < self._directory.params.min_survivors:
            raise _refuse(f"{len(survivors)} survivors, fewer than min_survivors = "
                          f"{self._directory.params.min_survivors}")
        seeds = tuple((c, s[1]) for c, s in sorted(self._shares.items()) if c in survivors)
        keys = tuple((c, s[0]) for c, s in sorted(self._shares.items()) if c not in survivors)
        out = UnmaskShares(self.run, self.round, self.client_id, seeds, keys)
        self._answer(ClientStage.UNMASK, request, out, ClientStage.DONE)
        return out
