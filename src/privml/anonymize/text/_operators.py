"""Operators: what is done to one PII value, and the key they share.

Every operator is a small frozen dataclass with ``apply(value, entity, key) -> str``:

=============  ==========================================================================
redact         the value is removed
replace        ``<TYPE>``, or a given string
mask           all but the last ``keep_last`` characters become ``char`` (separators kept)
hash           HMAC-SHA256 under a subkey, in hex (optionally truncated); no key, no hash
pseudonymize   a realistic surrogate picked by HMAC from per-type tables (:mod:`._surrogates`)
encrypt        AES-SIV, deterministic and reversible: ``⟦ENC:TYPE:base64url⟧`` in the text
=============  ==========================================================================

Keys: one 32-byte master key (a key file, or ``PRIVML_ANON_KEY`` in base64). Each keyed
operator uses its own subkey, HKDF-SHA256 of the master with a distinct ``info``, so a hash
reveals nothing about a pseudonym or a ciphertext. :class:`AnonKey` never shows its bytes
in ``repr`` and is never logged.

Encrypted token: ``⟦ENC:TYPE:payload⟧`` where ``payload`` is base64url (no padding) of
``version byte (1) | AES-SIV-512(subkey, value, ad = "privml/anonymize/enc/v1" 0 TYPE)``.
The type is authenticated, so a token moved to another type does not open. Equal values of
one type give equal tokens (the point of a deterministic cipher: joins still work).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import ClassVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from privml._exceptions import ConfigError, IntegrityError
from privml.anonymize.text._surrogates import surrogate

__all__ = [
    "ENV_KEY", "OPERATORS", "TOKEN_RE", "AnonKey", "Encrypt", "Hash", "Mask", "Operator",
    "Pseudonymize", "Redact", "Replace", "decrypt_token", "operator_from_spec",
]

ENV_KEY = "PRIVML_ANON_KEY"
ENTITY_RE = re.compile(r"[A-Z][A-Z0-9_]*")
TOKEN_RE = re.compile(r"⟦ENC:([A-Z][A-Z0-9_]*):([A-Za-z0-9_-]+)⟧")
_TOKEN_VERSION = 1
_ENC_AD = b"privml/anonymize/enc/v1\x00"
_NO_KEY = ("the {op} operator needs a key (a key file, or base64 of 32 random bytes in "
           f"{ENV_KEY}); {{why}}")


class AnonKey:
    """The anonymization master key (32 bytes) and the subkeys derived from it."""

    __slots__ = ("_enc", "_hash", "_master", "_pseudo")

    def __init__(self, master: bytes) -> None:
        if not isinstance(master, bytes) or len(master) != 32:
            raise ConfigError("an anonymization key must be 32 bytes")
        self._master = master
        self._hash = _subkey(master, b"hash", 32)
        self._pseudo = _subkey(master, b"pseudonymize", 32)
        self._enc = _subkey(master, b"encrypt", 64)  # AES-SIV-512: two AES-256 keys

    @classmethod
    def generate(cls) -> AnonKey:
        return cls(os.urandom(32))

    @classmethod
    def from_base64(cls, text: str | bytes, *, where: str = "the key") -> AnonKey:
        raw = text.encode() if isinstance(text, str) else text
        try:
            key = base64.b64decode(raw.strip(), validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if len(key) != 32:
            raise ConfigError(f"{where} must hold base64 of 32 random bytes")
        return cls(key)

    @classmethod
    def from_file(cls, path: Path | str) -> AnonKey:
        """A key file holds 32 raw bytes or their base64 (as the store's key files)."""
        from privml.store._keys import key_from_file

        return cls(key_from_file(path))

    @classmethod
    def from_env(cls) -> AnonKey | None:
        value = os.environ.get(ENV_KEY)
        return None if value is None else cls.from_base64(value, where=ENV_KEY)

    def to_base64(self) -> str:
        """The master key as base64, for writing a new key file; never log it."""
        return base64.b64encode(self._master).decode()

    def __repr__(self) -> str:
        return "AnonKey(<hidden>)"

    def __reduce__(self) -> tuple[type[AnonKey], tuple[bytes]]:
        # Only ever pickled to hand the key to this run's own worker processes.
        return (AnonKey, (self._master,))


def _subkey(master: bytes, purpose: bytes, length: int) -> bytes:
    info = b"privml/anonymize/v1/" + purpose
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(master)


def _need(key: AnonKey | None, op: str, why: str) -> AnonKey:
    if key is None:
        raise ConfigError(_NO_KEY.format(op=op, why=why))
    return key


# ---- operators ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Redact:
    """Remove the value: nothing of it is left in the output."""

    name: ClassVar[str] = "redact"
    needs_key: ClassVar[bool] = False

    def apply(self, value: str, entity: str, key: AnonKey | None) -> str:
        return ""


@dataclass(frozen=True, slots=True)
class Replace:
    """``<TYPE>``, or ``value`` when one is given."""

    value: str | None = None
    name: ClassVar[str] = "replace"
    needs_key: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if self.value is not None and not isinstance(self.value, str):
            raise ConfigError("replace: value must be a string")

    def apply(self, value: str, entity: str, key: AnonKey | None) -> str:
        return f"<{entity}>" if self.value is None else self.value


@dataclass(frozen=True, slots=True)
class Mask:
    """All but the last ``keep_last`` characters become ``char``. With ``keep_separators``
    only letters and digits are masked (and counted), so ``4111 1111 1111 1234`` becomes
    ``**** **** **** 1234``. Never more than half the characters (rounded up) are kept, so
    a short value is never shown whole."""

    keep_last: int = 4
    char: str = "*"
    keep_separators: bool = True
    name: ClassVar[str] = "mask"
    needs_key: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if isinstance(self.keep_last, bool) or not isinstance(self.keep_last, int) \
                or self.keep_last < 0:
            raise ConfigError(f"mask: keep_last must be an integer >= 0, got {self.keep_last!r}")
        if not isinstance(self.char, str) or len(self.char) != 1:
            raise ConfigError(f"mask: char must be one character, got {self.char!r}")
        if not isinstance(self.keep_separators, bool):
            raise ConfigError("mask: keep_separators must be true or false")

    def apply(self, value: str, entity: str, key: AnonKey | None) -> str:
        if self.keep_separators:
            counted = [i for i, ch in enumerate(value) if ch.isalnum()]
        else:
            counted = list(range(len(value)))
        keep = min(self.keep_last, (len(counted) + 1) // 2)
        hidden = set(counted[: len(counted) - keep])
        return "".join(self.char if i in hidden else ch for i, ch in enumerate(value))


@dataclass(frozen=True, slots=True)
class Hash:
    """HMAC-SHA256 of the value under the hash subkey, in hex, cut to ``length`` digits.
    There is no unkeyed variant: a plain hash of a phone number is reversed by trying them
    all."""

    length: int = 64
    name: ClassVar[str] = "hash"
    needs_key: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if isinstance(self.length, bool) or not isinstance(self.length, int) \
                or not 8 <= self.length <= 64:
            raise ConfigError(f"hash: length must be an integer in [8, 64], got {self.length!r}")

    def apply(self, value: str, entity: str, key: AnonKey | None) -> str:
        k = _need(key, "hash", "unsalted hashes are refused")
        return hmac.new(k._hash, value.encode(), hashlib.sha256).hexdigest()[: self.length]


@dataclass(frozen=True, slots=True)
class Pseudonymize:
    """A realistic surrogate of the same type; one value and one key always give the same
    surrogate, in every run and every file (two values may share one)."""

    name: ClassVar[str] = "pseudonymize"
    needs_key: ClassVar[bool] = True

    def apply(self, value: str, entity: str, key: AnonKey | None) -> str:
        k = _need(key, "pseudonymize", "surrogates are chosen by a keyed HMAC")
        return surrogate(entity, value, k._pseudo)


@dataclass(frozen=True, slots=True)
class Encrypt:
    """AES-SIV into a ``⟦ENC:TYPE:…⟧`` token that :func:`decrypt_token` reverses."""

    name: ClassVar[str] = "encrypt"
    needs_key: ClassVar[bool] = True

    def apply(self, value: str, entity: str, key: AnonKey | None) -> str:
        k = _need(key, "encrypt", "there is nothing to encrypt with")
        if not ENTITY_RE.fullmatch(entity):
            raise ConfigError(f"encrypt: entity names must match {ENTITY_RE.pattern}")
        sealed = AESSIV(k._enc).encrypt(value.encode(), [_ENC_AD + entity.encode()])
        payload = base64.urlsafe_b64encode(bytes([_TOKEN_VERSION]) + sealed).rstrip(b"=")
        return f"⟦ENC:{entity}:{payload.decode()}⟧"


def decrypt_token(entity: str, payload: str, key: AnonKey | None) -> str:
    """The value inside one token (its two parts as :data:`TOKEN_RE` captures them).
    Every failure (wrong key, edited token, wrong type) is one :class:`IntegrityError`."""
    k = _need(key, "decrypt", "tokens open only with the key that made them")
    try:
        blob = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        if not blob or blob[0] != _TOKEN_VERSION:
            raise IntegrityError()
        return AESSIV(k._enc).decrypt(blob[1:], [_ENC_AD + entity.encode()]).decode()
    except (InvalidTag, ValueError, binascii.Error):
        raise IntegrityError("an encrypted token failed to open (wrong key, or edited)") \
            from None


Operator = Redact | Replace | Mask | Hash | Pseudonymize | Encrypt

OPERATORS: Mapping[str, type[Operator]] = {
    cls.name: cls for cls in (Redact, Replace, Mask, Hash, Pseudonymize, Encrypt)
}


def operator_from_spec(spec: object, path: tuple[str, ...] = (),
                       where: Callable[[tuple[str, ...]], str] | None = None) -> Operator:
    """An operator from its policy form: a name (``mask``) or a mapping with ``type`` and
    the operator's parameters (``{type: mask, keep_last: 2}``). Errors name ``path``, or
    ``where(path)`` (which may add the YAML line)."""
    locate = where or (lambda p: ".".join(p) or "operator")
    if isinstance(spec, str):
        spec = {"type": spec}
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{locate(path)}: an operator is a name or a mapping with 'type'")
    name = spec.get("type")
    if not isinstance(name, str) or name not in OPERATORS:
        raise ConfigError(f"{locate((*path, 'type'))}: unknown operator {name!r} "
                          f"(known: {', '.join(OPERATORS)})")
    cls = OPERATORS[name]
    allowed = {f.name for f in fields(cls)}
    params = {}
    for k, v in spec.items():
        if k == "type":
            continue
        if k not in allowed:
            known = ", ".join(sorted(allowed)) or "none"
            raise ConfigError(f"{locate((*path, str(k)))}: unknown key {k!r} for the {name} "
                              f"operator (allowed: {known})")
        params[str(k)] = v
    try:
        return cls(**params)
    except ConfigError as exc:
        raise ConfigError(f"{locate(path)}: {exc}") from None


def operator_to_spec(op: Operator) -> dict[str, object]:
    return {"type": op.name, **{f.name: getattr(op, f.name) for f in fields(op)}}
