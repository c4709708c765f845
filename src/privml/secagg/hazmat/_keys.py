"""X25519 key agreement, HKDF-SHA256, and the binding bytes used as HKDF info and GCM AAD."""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Sequence

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from privml._exceptions import ConfigError, SecAggError

__all__ = ["binding", "derive_key", "hkdf_sha256", "keypair", "public_key", "shared_secret"]

BINDING_MAGIC = b"PSAG"
BINDING_VERSION = 1


def _raw_public(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def keypair(entropy: Callable[[int], bytes] = os.urandom) -> tuple[bytes, bytes]:
    """A fresh X25519 key pair: (private, public), 32 raw bytes each.

    The private key is ``entropy(32)`` as is (X25519 clamps it when used), so a test can pass
    a deterministic ``entropy``; in production leave the default, ``os.urandom``.
    """
    raw = entropy(32)
    if not isinstance(raw, bytes) or len(raw) != 32:
        raise ConfigError("entropy(32) must return 32 bytes")
    key = X25519PrivateKey.from_private_bytes(raw)
    return key.private_bytes_raw(), _raw_public(key)


def public_key(private: bytes) -> bytes:
    if not isinstance(private, bytes) or len(private) != 32:
        raise ConfigError("an X25519 private key is 32 bytes")
    return _raw_public(X25519PrivateKey.from_private_bytes(private))


def shared_secret(private: bytes, peer_public: bytes) -> bytes:
    """Raw X25519; a malformed or low-order peer key is refused (``bad_key``)."""
    if not isinstance(peer_public, bytes) or len(peer_public) != 32:
        raise SecAggError("an X25519 public key is 32 bytes", code="bad_key")
    if not isinstance(private, bytes) or len(private) != 32:
        raise ConfigError("an X25519 private key is 32 bytes")
    try:
        out = X25519PrivateKey.from_private_bytes(private).exchange(
            X25519PublicKey.from_public_bytes(peer_public))
    except ValueError:  # cryptography refuses an all-zero result (a low-order point)
        raise SecAggError("the peer's public key is of low order", code="bad_key") from None
    if out == bytes(32):
        raise SecAggError("the peer's public key is of low order", code="bad_key")
    return out


def binding(*, run: str, round_: int, stage: str, keys: Sequence[bytes]) -> bytes:
    """Canonical bytes binding a value to its context, reproducible in a browser::

        b"PSAG" || 0x01 || u16 len(run) || run (UTF-8) || u32 round
            || u8 len(stage) || stage (ASCII) || u8 count || (u16 len(key) || key)*

    Integers are big-endian.
    """
    raw_run = run.encode("utf-8") if isinstance(run, str) else b""
    if not raw_run or len(raw_run) > 200:
        raise ConfigError("run must be a non-empty string of at most 200 UTF-8 bytes")
    if isinstance(round_, bool) or not isinstance(round_, int) or not 0 <= round_ < 2**32:
        raise ConfigError(f"round must be in [0, 2**32), got {round_!r}")
    if not isinstance(stage, str) or not stage.isascii() or not 1 <= len(stage) <= 64:
        raise ConfigError("stage must be 1-64 ASCII characters")
    if len(keys) > 255 or any(not isinstance(k, bytes) or len(k) > 1024 for k in keys):
        raise ConfigError("at most 255 keys of at most 1024 bytes each")
    parts = [BINDING_MAGIC, bytes([BINDING_VERSION]), struct.pack(">H", len(raw_run)), raw_run,
             struct.pack(">I", round_), bytes([len(stage)]), stage.encode("ascii"),
             bytes([len(keys)])]
    for k in keys:
        parts += [struct.pack(">H", len(k)), k]
    return b"".join(parts)


def hkdf_sha256(ikm: bytes, *, info: bytes, length: int = 32, salt: bytes | None = None) -> bytes:
    """HKDF (RFC 5869) with SHA-256; ``salt=None`` is the RFC's default (32 zero bytes)."""
    if isinstance(length, bool) or not isinstance(length, int) or not 1 <= length <= 255 * 32:
        raise ConfigError(f"HKDF-SHA256 length must be in [1, 8160], got {length!r}")
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def derive_key(shared: bytes, *, info: bytes) -> bytes:
    """A 32-byte key from a shared secret, bound to ``info`` (see :func:`binding`)."""
    return hkdf_sha256(shared, info=info, length=32)
