"""The messages of a SecAgg+ round, as frozen dataclasses with one byte encoding each.

Every message starts with ``b"PSA"``, a version byte, a type byte, the run, the round and
the party it is from (client messages) or for (server messages)::

    client -> server                       server -> client
    1 AdvertiseKeys  two public keys       2 KeyDirectory  round parameters, the clients
                                                           that advertised, my neighbours' keys
    3 ShareKeys      sealed shares,        4 ShareInbox    the sealed shares addressed to me
                     one per neighbour
    5 MaskedInput    the masked vector     6 UnmaskRequest who survived
    7 UnmaskShares   the shares asked for

:func:`decode` refuses anything malformed with :class:`~privml.SecAggError`: ``truncated``
when bytes are missing, ``bad_message`` otherwise (a wrong magic, version or type, trailing
bytes, a bad id, a wrong key length).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from privml._exceptions import ConfigError, SecAggError
from privml.secagg._params import RoundParams
from privml.secagg._wire import Reader, Writer, check_id

__all__ = [
    "AdvertiseKeys",
    "ClientMessage",
    "KeyDirectory",
    "MaskedInput",
    "Message",
    "ServerMessage",
    "ShareInbox",
    "ShareKeys",
    "UnmaskRequest",
    "UnmaskShares",
    "decode",
    "encode",
]

MAGIC = b"PSA"
VERSION = 1
KEY_BYTES = 32
MAX_CLIENTS = 1 << 16


def _check_key(key: object, what: str) -> None:
    if not isinstance(key, bytes) or len(key) != KEY_BYTES:
        raise SecAggError(f"{what} must be {KEY_BYTES} bytes", code="bad_key")


def _check_header(run: object, round_: object, party: object) -> None:
    check_id(run, what="run")
    if isinstance(round_, bool) or not isinstance(round_, int) or not 0 <= round_ < 2**32:
        raise SecAggError(f"round must be an integer in [0, 2**32): {round_!r}",
                          code="bad_message")
    check_id(party, what="client id")


def _unique(ids: tuple[str, ...], what: str) -> None:
    for cid in ids:
        check_id(cid)
    if len(set(ids)) != len(ids):
        raise SecAggError(f"{what} names a client twice", code="bad_message")


@dataclass(frozen=True, slots=True)
class AdvertiseKeys:
    TYPE: ClassVar[int] = 1
    run: str
    round: int
    sender: str
    enc_key: bytes  # X25519 public key that shares are encrypted to
    mask_key: bytes  # X25519 public key that pairwise masks are agreed with

    def __post_init__(self) -> None:
        _check_header(self.run, self.round, self.sender)
        _check_key(self.enc_key, "enc_key")
        _check_key(self.mask_key, "mask_key")
        if self.enc_key == self.mask_key:
            raise SecAggError("the two public keys must differ", code="bad_key")

    def _body(self, out: Writer) -> None:
        out.blob(self.enc_key).blob(self.mask_key)

    @classmethod
    def _read(cls, head: tuple[str, int, str], r: Reader) -> AdvertiseKeys:
        return cls(*head, r.blob(), r.blob())


@dataclass(frozen=True, slots=True)
class KeyDirectory:
    """To one client: the round's parameters, every client that advertised keys (sorted,
    to recompute the graph), and the public keys of the recipient's neighbours."""

    TYPE: ClassVar[int] = 2
    run: str
    round: int
    recipient: str
    params: RoundParams
    participants: tuple[str, ...]
    keys: tuple[tuple[str, bytes, bytes], ...]  # (neighbour, enc_key, mask_key)

    def __post_init__(self) -> None:
        _check_header(self.run, self.round, self.recipient)
        _unique(self.participants, "the participant list")
        if list(self.participants) != sorted(self.participants):
            raise SecAggError("the participant list must be sorted", code="bad_message")
        _unique(tuple(k[0] for k in self.keys), "the key directory")
        for cid, enc, mask in self.keys:
            _check_key(enc, f"{cid}'s enc_key")
            _check_key(mask, f"{cid}'s mask_key")

    def _body(self, out: Writer) -> None:
        p = self.params
        out.u16(p.neighbours).u16(p.shamir_threshold).u32(p.min_survivors).u8(p.bits)
        out.u32(p.length).raw(_id_list(self.participants))
        out.u32(len(self.keys))
        for cid, enc, mask in self.keys:
            out.text(cid).blob(enc).blob(mask)

    @classmethod
    def _read(cls, head: tuple[str, int, str], r: Reader) -> KeyDirectory:
        k, t, m, bits, length = r.u16(), r.u16(), r.u32(), r.u8(), r.u32()
        try:
            params = RoundParams(neighbours=k, shamir_threshold=t, min_survivors=m,
                                 bits=bits, length=length)
        except ConfigError as exc:
            raise SecAggError(f"round parameters refused: {exc}", code="bad_message") from None
        participants = tuple(r.text() for _ in range(_count(r)))
        keys = tuple((r.text(), r.blob(), r.blob()) for _ in range(_count(r)))
        return cls(*head, params, participants, keys)


@functools.lru_cache(maxsize=4)
def _id_list(ids: tuple[str, ...]) -> bytes:
    """A u32 count and the ids; the same list goes to every client of a stage, so it is
    encoded once."""
    out = Writer().u32(len(ids))
    for cid in ids:
        out.text(cid)
    return out.getvalue()


def _count(r: Reader) -> int:
    n = r.u32()
    if n > MAX_CLIENTS:
        raise SecAggError(f"{n} entries is more than {MAX_CLIENTS}", code="bad_message")
    return n


def _write_pairs(out: Writer, pairs: tuple[tuple[str, bytes], ...]) -> None:
    out.u32(len(pairs))
    for cid, blob in pairs:
        out.text(cid).blob(blob)


def _read_pairs(r: Reader) -> tuple[tuple[str, bytes], ...]:
    return tuple((r.text(), r.blob()) for _ in range(_count(r)))


def _check_pairs(pairs: tuple[tuple[str, bytes], ...], what: str) -> None:
    _unique(tuple(p[0] for p in pairs), what)
    for _, blob in pairs:
        if not isinstance(blob, bytes) or len(blob) > 4096:
            raise SecAggError(f"an entry of {what} is not bytes or too long",
                              code="bad_message")


@dataclass(frozen=True, slots=True)
class ShareKeys:
    """From one client: for each neighbour, its shares sealed to that neighbour."""

    TYPE: ClassVar[int] = 3
    run: str
    round: int
    sender: str
    sealed: tuple[tuple[str, bytes], ...]  # (recipient, sealed shares)

    def __post_init__(self) -> None:
        _check_header(self.run, self.round, self.sender)
        _check_pairs(self.sealed, "ShareKeys")

    def _body(self, out: Writer) -> None:
        _write_pairs(out, self.sealed)

    @classmethod
    def _read(cls, head: tuple[str, int, str], r: Reader) -> ShareKeys:
        return cls(*head, _read_pairs(r))


@dataclass(frozen=True, slots=True)
class ShareInbox:
    """To one client: the sealed shares its neighbours addressed to it."""

    TYPE: ClassVar[int] = 4
    run: str
    round: int
    recipient: str
    sealed: tuple[tuple[str, bytes], ...]  # (sender, sealed shares)

    def __post_init__(self) -> None:
        _check_header(self.run, self.round, self.recipient)
        _check_pairs(self.sealed, "ShareInbox")

    def _body(self, out: Writer) -> None:
        _write_pairs(out, self.sealed)

    @classmethod
    def _read(cls, head: tuple[str, int, str], r: Reader) -> ShareInbox:
        return cls(*head, _read_pairs(r))


@dataclass(frozen=True, slots=True, eq=False)
class MaskedInput:
    """From one client: its encoded update plus its masks, modulo 2^bits (read-only)."""

    TYPE: ClassVar[int] = 5
    run: str
    round: int
    sender: str
    vector: np.ndarray = field(repr=False)

    def __post_init__(self) -> None:
        _check_header(self.run, self.round, self.sender)
        v = self.vector
        if not isinstance(v, np.ndarray) or v.ndim != 1 or v.dtype not in (np.uint32,
                                                                            np.uint64):
            raise SecAggError("the masked vector must be 1-D uint32 or uint64",
                              code="bad_message")
        if v.flags.writeable:
            v = v.copy()
            v.flags.writeable = False
            object.__setattr__(self, "vector", v)

    @property
    def bits(self) -> int:
        return self.vector.dtype.itemsize * 8

    def _body(self, out: Writer) -> None:
        # Zero padding puts the values at a multiple of 8 bytes into the message, so the
        # receiver adds them in place without unaligned loads (or a copy).
        pad = -(out.tell() + 6) % 8
        out.u8(self.bits).u8(pad).raw(bytes(pad))
        out.big(self.vector.astype(self.vector.dtype.newbyteorder("<"), copy=False).tobytes())

    @classmethod
    def _read(cls, head: tuple[str, int, str], r: Reader) -> MaskedInput:
        bits, pad = r.u8(), r.u8()
        if bits not in (32, 64):
            raise SecAggError(f"bits must be 32 or 64, got {bits}", code="bad_message")
        if pad != -(r.tell() + 4) % 8 or any(r.take(pad)):
            raise SecAggError("the vector's padding is wrong", code="bad_message")
        raw = r.big()
        if len(raw) % (bits // 8):
            raise SecAggError("the vector's byte length is not a whole number of values",
                              code="bad_message")
        vector = np.frombuffer(raw, dtype=f"<u{bits // 8}").astype(f"=u{bits // 8}",
                                                                    copy=False)
        return cls(*head, vector)


@dataclass(frozen=True, slots=True)
class UnmaskRequest:
    """To one client: the clients whose masked inputs are in the sum."""

    TYPE: ClassVar[int] = 6
    run: str
    round: int
    recipient: str
    survivors: tuple[str, ...]

    def __post_init__(self) -> None:
        _check_header(self.run, self.round, self.recipient)
        _unique(self.survivors, "the survivor list")

    def _body(self, out: Writer) -> None:
        out.raw(_id_list(self.survivors))

    @classmethod
    def _read(cls, head: tuple[str, int, str], r: Reader) -> UnmaskRequest:
        return cls(*head, tuple(r.text() for _ in range(_count(r))))


@dataclass(frozen=True, slots=True)
class UnmaskShares:
    """From one client: a self-mask share for each surviving neighbour, a mask-key share
    for each neighbour that dropped after sharing; never both for one neighbour."""

    TYPE: ClassVar[int] = 7
    run: str
    round: int
    sender: str
    self_mask_shares: tuple[tuple[str, bytes], ...]  # (survivor, share of its seed)
    mask_key_shares: tuple[tuple[str, bytes], ...]  # (dropped, share of its mask key)

    def __post_init__(self) -> None:
        _check_header(self.run, self.round, self.sender)
        _check_pairs(self.self_mask_shares, "self_mask_shares")
        _check_pairs(self.mask_key_shares, "mask_key_shares")
        both = {c for c, _ in self.self_mask_shares} & {c for c, _ in self.mask_key_shares}
        if both:
            raise SecAggError(f"both secrets of {sorted(both)} asked for", code="bad_message")

    def _body(self, out: Writer) -> None:
        _write_pairs(out, self.self_mask_shares)
        _write_pairs(out, self.mask_key_shares)

    @classmethod
    def _read(cls, head: tuple[str, int, str], r: Reader) -> UnmaskShares:
        return cls(*head, _read_pairs(r), _read_pairs(r))


Message = (AdvertiseKeys | KeyDirectory | ShareKeys | ShareInbox | MaskedInput
           | UnmaskRequest | UnmaskShares)
ClientMessage = AdvertiseKeys | ShareKeys | MaskedInput | UnmaskShares
ServerMessage = KeyDirectory | ShareInbox | UnmaskRequest
_TYPES: dict[int, type[Message]] = {c.TYPE: c for c in (
    AdvertiseKeys, KeyDirectory, ShareKeys, ShareInbox, MaskedInput, UnmaskRequest,
    UnmaskShares)}


def encode(msg: Message) -> bytes:
    """The message's bytes."""
    party = msg.sender if isinstance(msg, ClientMessage) else msg.recipient
    out = Writer().raw(MAGIC).u8(VERSION).u8(msg.TYPE).text(msg.run).u32(msg.round)
    out.text(party)
    msg._body(out)
    return out.getvalue()


def decode(data: bytes, *, expect: type[Message] | None = None) -> Message:
    """The message in ``data``; with ``expect``, anything else is refused (``wrong_stage``)."""
    r = Reader(data)
    if bytes(r.take(3)) != MAGIC:
        raise SecAggError("not a privml SecAgg message (bad magic)", code="bad_message")
    if (version := r.u8()) != VERSION:
        raise SecAggError(f"SecAgg message version {version}; this build speaks {VERSION}",
                          code="bad_message")
    kind = _TYPES.get(r.u8())
    if kind is None:
        raise SecAggError("unknown SecAgg message type", code="bad_message")
    if expect is not None and kind is not expect:
        raise SecAggError(f"expected {expect.__name__}, got {kind.__name__}",
                          code="wrong_stage")
    head = (r.text(what="run"), r.u32(), r.text())
    msg = kind._read(head, r)
    r.end()
    return msg
