"""The sealed-value format: a STREAM-style chunked AEAD (Hoang, Reyhanitabar, Rogaway &
Vizár 2015) over AES-256-GCM, so that a value of any size is sealed and opened a segment at a
time, in bounded memory, and truncation, reordering or splicing is detected.

Layout (all integers big-endian)::

    header  = MAGIC (6) | VERSION (1) | segment size S (4) | nonce prefix P (7)
    segment = AES-256-GCM(key, nonce = P | i (4) | last (1), chunk_i, aad = header | aad)

Every segment but the last holds exactly S plaintext bytes (the last holds 0..S, and is the
only one with last = 1), so a cut at a segment boundary leaves no final segment, a cut
inside one fails its tag, and a moved segment fails under the nonce of its new position.
The caller's ``aad`` (the store binds its id, the record name and version) is authenticated
with every segment: a sealed value moved to another record does not open. Any failure is
one opaque :class:`IntegrityError`; no plaintext of a segment that failed is ever returned.
A reader that stops early has seen only authenticated bytes, but must not trust the value
until the iterator is exhausted (only then is the final flag checked).
"""

from __future__ import annotations

import functools
import os
import struct
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from privml._exceptions import ConfigError, IntegrityError

__all__ = ["HEADER_SIZE", "MAGIC", "SEGMENT_SIZE", "TAG", "open_stream", "open_views",
           "seal_stream"]

MAGIC = b"PMSEAL"
VERSION = 1
SEGMENT_SIZE = 1 << 20  # 1 MiB of plaintext per segment
MAX_SEGMENT = 1 << 26  # a header claiming more is refused before anything is allocated
TAG = 16
_HEAD = struct.Struct(">6sBI7s")
HEADER_SIZE = _HEAD.size


def _key(key: bytes) -> AESGCM:
    if not isinstance(key, bytes) or len(key) != 32:
        raise ConfigError("a data key is 32 bytes")
    return AESGCM(key)


def _nonce(prefix: bytes, i: int, last: bool) -> bytes:
    if i >= 1 << 32:
        raise ConfigError("a sealed value holds at most 2^32 segments")
    return prefix + i.to_bytes(4, "big") + (b"\x01" if last else b"\x00")


def _chunks(data: bytes | BinaryIO | Iterable[bytes], size: int) -> Iterator[bytes]:
    """Exactly ``size``-byte chunks (the last one shorter, possibly empty); pieces that
    already have the right size are passed on without a copy."""
    if isinstance(data, bytes | bytearray | memoryview):
        view = memoryview(data)
        for at in range(0, len(view), size):
            yield view[at:at + size]  # type: ignore[misc]
        return
    if hasattr(data, "read"):
        source: Iterable[bytes] = iter(lambda: data.read(size), b"")
    else:
        source = data
    buf = bytearray()
    for piece in source:
        if not buf and len(piece) == size:
            yield piece
            continue
        buf += piece
        while len(buf) >= size:
            yield bytes(buf[:size])
            del buf[:size]
    if buf:
        yield bytes(buf)


@functools.cache
def _pool() -> ThreadPoolExecutor:
    """AES-GCM in ``cryptography`` releases the GIL: segments are sealed and opened on other
    threads while this one reads and writes, a bounded window of them in flight, and
    written or yielded in order."""
    return ThreadPoolExecutor(max(2, os.cpu_count() or 1), thread_name_prefix="privml-seal")


_WINDOW = 8  # segments in flight: memory stays at a few segments whatever the value's size


def seal_stream(data: bytes | BinaryIO | Iterable[bytes], out: BinaryIO, *, key: bytes,
                aad: bytes, segment_size: int = SEGMENT_SIZE) -> int:
    """Seal ``data`` (bytes, a binary file or an iterable of byte strings) into ``out``;
    returns the plaintext length. Holds a few segments in memory at a time: each is
    encrypted into one of ``_WINDOW`` reused buffers on a worker thread while this thread
    writes the ones before it."""
    if not 1 <= segment_size <= MAX_SEGMENT:
        raise ConfigError(f"segment_size must be in [1, {MAX_SEGMENT}], got {segment_size}")
    aead = _key(key)
    prefix = os.urandom(7)
    header = _HEAD.pack(MAGIC, VERSION, segment_size, prefix)
    out.write(header)
    bound = header + aad
    slots: list[bytearray] = []  # made as needed: a small value never allocates a segment
    flight: deque[tuple[Future[int], bytearray, int]] = deque()

    def encrypt(nonce: bytes, chunk: bytes, slot: bytearray) -> int:
        return aead.encrypt_into(nonce, chunk, bound, memoryview(slot)[:len(chunk) + TAG])

    def drain(keep: int) -> None:
        while len(flight) > keep:
            fut, slot, n = flight.popleft()
            fut.result()
            out.write(memoryview(slot)[:n])
            slots.append(slot)

    def submit(i: int, chunk: bytes, last: bool) -> None:
        drain(_WINDOW - 1)
        slot = slots.pop() if slots and len(slots[-1]) >= len(chunk) + TAG else \
            bytearray(len(chunk) + TAG)
        flight.append((_pool().submit(encrypt, _nonce(prefix, i, last), chunk, slot), slot,
                       len(chunk) + TAG))

    total, i, pending = 0, 0, None
    try:
        for chunk in _chunks(data, segment_size):
            if pending is not None:  # a full segment with more to come
                submit(i, pending, False)
                i += 1
            pending = chunk
            total += len(chunk)
        submit(i, pending if pending is not None else b"", True)
        drain(0)
    finally:
        for fut, _, _ in flight:
            fut.cancel()
        for fut, _, _ in flight:  # never leave a worker writing into a dropped slot
            if not fut.cancelled():
                fut.exception()
    return total


def open_stream(src: BinaryIO, *, key: bytes, aad: bytes) -> Iterator[bytes]:
    """The plaintext of a sealed value, a segment at a time (each piece its own bytes);
    :class:`IntegrityError` for a wrong key, wrong ``aad``, flipped byte, truncation,
    reordering or trailing bytes."""
    for view in open_views(src, key=key, aad=aad):
        yield bytes(view)


def open_views(src: BinaryIO, *, key: bytes, aad: bytes) -> Iterator[memoryview]:
    """Like :func:`open_stream`, without an allocation per segment: each piece is a view of
    a reused buffer, **valid only until the next one is asked for** (copy it to keep it).
    Ciphertext is read into reused buffers and decrypted into others on worker threads
    while this one reads ahead; nothing is yielded before its tag is checked."""
    aead = _key(key)
    header = src.read(HEADER_SIZE)
    if len(header) != HEADER_SIZE:
        raise IntegrityError()
    magic, version, size, prefix = _HEAD.unpack(header)
    if magic != MAGIC or version != VERSION or not 1 <= size <= MAX_SEGMENT:
        raise IntegrityError()
    bound = header + aad
    sealed: list[bytearray] = []  # free buffers, made as needed
    plain: list[bytearray] = []

    def decrypt(i: int, block: memoryview, last: bool, into: bytearray) -> memoryview:
        if len(block) < TAG or (not last and len(block) != size + TAG):
            raise IntegrityError()
        out = memoryview(into)[:len(block) - TAG]
        try:
            aead.decrypt_into(_nonce(prefix, i, last), block, bound, out)
        except InvalidTag:
            raise IntegrityError() from None
        return out

    def read() -> tuple[bytearray, memoryview]:
        slot = sealed.pop() if sealed else bytearray(size + TAG)
        view, n = memoryview(slot), 0
        while n < len(view) and (got := src.readinto(view[n:])):  # type: ignore[attr-defined]
            n += got
        return slot, view[:n]

    flight: deque[tuple[Future[memoryview], bytearray, bytearray]] = deque()
    i, (slot, block) = 0, read()
    try:
        while True:
            if len(block) == size + TAG:
                nxt_slot, nxt = read()
            else:
                nxt_slot, nxt = slot, memoryview(b"")
            last = len(nxt) == 0
            into = plain.pop() if plain else bytearray(size)
            flight.append((_pool().submit(decrypt, i, block, last, into), slot, into))
            while flight and (len(flight) > _WINDOW or last):
                fut, done, out = flight.popleft()
                view = fut.result()
                sealed.append(done)
                yield view
                plain.append(out)  # the caller has asked for the next piece
            if last:
                return
            slot, block, i = nxt_slot, nxt, i + 1
    finally:
        for fut, _, _ in flight:
            fut.cancel()
        for fut, _, _ in flight:  # never leave a worker using a dropped buffer
            if not fut.cancelled():
                fut.exception()
