"""The mask generator: an AES-256-CTR keystream read as little-endian unsigned integers.

The key is an HKDF-SHA256 output; the initial counter block is 16 zero bytes and the whole
128-bit block is the big-endian counter (WebCrypto's AES-CTR with ``counter`` = 16 zero bytes
and ``length`` = 128 gives the same bytes, so a browser reproduces every mask). numpy's
RandomState/Generator, or any other non-cryptographic generator, is never used for masks:
their output reveals their state, and with it every other mask.
"""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from privml._exceptions import ConfigError

__all__ = ["add_mask", "mask"]

_CHUNK = 1 << 24  # keystream bytes per step: bounds the extra memory for huge vectors
_zeros = bytes(_CHUNK)  # read-only input for update_into (CTR: keystream = E(0) xor 0)


def _keystream(key: bytes, nbytes: int, counter_block: bytes = bytes(16)) -> bytes:
    if not isinstance(key, bytes) or len(key) != 32:
        raise ConfigError("a mask key is 32 bytes")
    enc = Cipher(algorithms.AES(key), modes.CTR(counter_block)).encryptor()
    return enc.update(bytes(nbytes)) + enc.finalize()


def _dtype(bits: int) -> np.dtype[np.unsignedinteger]:
    if bits == 32:
        return np.dtype("<u4")
    if bits == 64:
        return np.dtype("<u8")
    raise ConfigError(f"bits must be 32 or 64, got {bits!r}")


def mask(key: bytes, length: int, *, bits: int = 32) -> np.ndarray:
    """``length`` values of the keystream of ``key``."""
    dtype = _dtype(bits)
    if length < 0:
        raise ConfigError("length must be >= 0")
    return np.frombuffer(_keystream(key, length * dtype.itemsize), dtype=dtype).astype(
        dtype.newbyteorder("="))


def add_mask(acc: np.ndarray, key: bytes, *, subtract: bool = False) -> None:
    """``acc += mask(key)`` (or ``-=``) modulo 2^bits, in place.

    The keystream is written straight into one uninitialised buffer (``update_into``,
    which runs without the GIL, so threads on other cores can build other masks meanwhile)
    and added with numpy; vectors above 16 MiB go in 16 MiB steps.
    """
    if not isinstance(acc, np.ndarray) or acc.dtype not in (np.uint32, np.uint64) or \
            acc.ndim != 1 or not acc.flags.c_contiguous or not acc.flags.writeable:
        raise ConfigError("the accumulator must be a writable 1-D C-contiguous uint32/uint64")
    if not isinstance(key, bytes) or len(key) != 32:
        raise ConfigError("a mask key is 32 bytes")
    enc = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
    dtype = np.dtype(acc.dtype).newbyteorder("<")
    op = np.subtract if subtract else np.add
    step = _CHUNK // dtype.itemsize
    buf = np.empty(min(acc.size * dtype.itemsize, _CHUNK) + 15, dtype=np.uint8)
    for start in range(0, acc.size, step):
        part = acc[start:start + step]
        nbytes = part.size * dtype.itemsize
        enc.update_into(memoryview(_zeros)[:nbytes], buf.data)
        op(part, buf[:nbytes].view(dtype), out=part)
