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

__all__ = ["HEADER_SIZE", "MAGIC", "SEGMENT_SIZE", "TAG", "open_stream", "seal_stream"]

MAGIC = b"PMSEAL"
VERSION = 1
SEGMENT_SIZE = 1 << 20  # 1 MiB of plaintext per segment
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
    """Exactly ``size``-byte chunks (the last one shorter, possibly empty)."""
    if isinstance(data, bytes | bytearray | memoryview):
        view = memoryview(data)
        for at in range(0, len(view), size):
            yield bytes(view[at:at + size])
        return
    if hasattr(data, "read"):
        source: Iterable[bytes] = iter(lambda: data.read(size), b"")
    else:
        source = data
    buf = bytearray()
    for piece in source:
        buf += piece
        while len(buf) >= size:
            yield bytes(buf[:size])
            del buf[:size]
    if buf:
        yield bytes(buf)


@functools.cache
def _pool() -> ThreadPoolExecutor:
    """AES-GCM in ``cryptography`` releases the GIL: segments are sealed and opened on every
    core, a bounded window of them in flight, and written or yielded in order."""
    return ThreadPoolExecutor(max(1, os.cpu_count() or 1), thread_name_prefix="privml-seal")


_WINDOW = 8  # segments in flight: memory stays at a few segments whatever the value's size


def seal_stream(data: bytes | BinaryIO | Iterable[bytes], out: BinaryIO, *, key: bytes,
                aad: bytes, segment_size: int = SEGMENT_SIZE) -> int:
    """Seal ``data`` (bytes, a binary file or an iterable of byte strings) into ``out``;
    returns the plaintext length. Holds a few segments in memory at a time."""
    if not 1 <= segment_size < 1 << 31:
        raise ConfigError(f"segment_size must be in [1, 2^31), got {segment_size}")
    aead = _key(key)
    prefix = os.urandom(7)
    header = _HEAD.pack(MAGIC, VERSION, segment_size, prefix)
    out.write(header)
    bound = header + aad
    flight: deque[Future[bytes]] = deque()

    def submit(i: int, chunk: bytes, last: bool) -> None:
        flight.append(_pool().submit(aead.encrypt, _nonce(prefix, i, last), chunk, bound))
        while len(flight) > (_WINDOW if not last else 0):
            out.write(flight.popleft().result())

    total, i, pending = 0, 0, None
    for chunk in _chunks(data, segment_size):
        if pending is not None:  # a full segment with more to come
            submit(i, pending, False)
            i += 1
        pending = chunk
        total += len(chunk)
    submit(i, pending or b"", True)
    return total


def open_stream(src: BinaryIO, *, key: bytes, aad: bytes) -> Iterator[bytes]:
    """The plaintext of a sealed value, a segment at a time; :class:`IntegrityError` for a
    wrong key, wrong ``aad``, flipped byte, truncation, reordering or trailing bytes."""
    aead = _key(key)
    header = src.read(HEADER_SIZE)
    if len(header) != HEADER_SIZE:
        raise IntegrityError()
    magic, version, size, prefix = _HEAD.unpack(header)
    if magic != MAGIC or version != VERSION or not 1 <= size < 1 << 31:
        raise IntegrityError()
    bound = header + aad

    def decrypt(i: int, block: bytes, last: bool) -> bytes:
        if len(block) < TAG or (not last and len(block) != size + TAG):
            raise IntegrityError()
        try:
            return aead.decrypt(_nonce(prefix, i, last), block, bound)
        except InvalidTag:
            raise IntegrityError() from None

    flight: deque[Future[bytes]] = deque()
    i, block = 0, src.read(size + TAG)
    try:
        while True:
            nxt = src.read(size + TAG) if len(block) == size + TAG else b""
            last = not nxt
            flight.append(_pool().submit(decrypt, i, block, last))
            while flight and (len(flight) > _WINDOW or last):
                yield flight.popleft().result()
            if last:
                return
            block, i = nxt, i + 1
    finally:
        for f in flight:
            f.cancel()
