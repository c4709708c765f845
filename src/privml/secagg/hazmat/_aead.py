"""AES-256-GCM for sealed Shamir shares: ``b"PSE" || 0x01 || nonce (12) || ciphertext || tag``."""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from privml._exceptions import ConfigError, SecAggError

__all__ = ["open_sealed", "seal"]

MAGIC = b"PSE\x01"
NONCE = 12
TAG = 16


def seal(key: bytes, plaintext: bytes, *, aad: bytes, nonce: bytes | None = None) -> bytes:
    if not isinstance(key, bytes) or len(key) != 32:
        raise ConfigError("an AES-256-GCM key is 32 bytes")
    nonce = os.urandom(NONCE) if nonce is None else nonce
    if len(nonce) != NONCE:
        raise ConfigError("a GCM nonce is 12 bytes")
    return MAGIC + nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def open_sealed(key: bytes, blob: bytes, *, aad: bytes) -> bytes:
    """The plaintext, or SecAggError: ``truncated``, ``bad_message`` (not this format) or
    ``bad_tag`` (wrong key, wrong AAD or any flipped bit)."""
    if not isinstance(key, bytes) or len(key) != 32:
        raise ConfigError("an AES-256-GCM key is 32 bytes")
    if len(blob) < len(MAGIC) + NONCE + TAG:
        raise SecAggError("sealed shares truncated", code="truncated")
    if blob[: len(MAGIC)] != MAGIC:
        raise SecAggError("not sealed shares of this version", code="bad_message")
    nonce = blob[len(MAGIC): len(MAGIC) + NONCE]
    try:
        return AESGCM(key).decrypt(nonce, blob[len(MAGIC) + NONCE:], aad)
    except InvalidTag:
        raise SecAggError("sealed shares failed authentication", code="bad_tag") from None
