"""Where a store's key-encryption key (KEK) comes from, and how data keys are wrapped.

- a **passphrase**: scrypt (n = 2^15, r = 8, p = 1) with a random 16-byte salt; the
  parameters and salt are kept in the store, the key never is. It protects against anyone
  who takes the disk, as long as the passphrase is not on it.
- the **OS keyring** (macOS Keychain, Windows Credential Locker, the Secret Service on
  Linux), through the ``keyring`` package: a random 32-byte key under ("privml", NAME). It
  is as safe as the user's login: a thief with the disk but not the login gets nothing.
  A backend that keeps secrets in a plain file (``keyrings.alt``'s PlaintextKeyring, priority
  below 1) is refused unless ``PRIVML_KEYRING_INSECURE_OK=1``: it is no better than a key
  file.
- a **key file** (32 raw bytes, or their base64) or the environment variable
  ``PRIVML_STORE_KEY`` (base64 of 32 random bytes): kept on the same disk, they stop someone
  who copies the store alone, not a thief who takes both. Keep such keys elsewhere (the OS
  keyring, or a passphrase).

Restoring an old copy of the *whole* store (index and files together) cannot be detected
without state kept somewhere else; each record is bound to its name and version, so a single
record cannot be swapped for an older one of its own or another's.

A wrapped data key is ``WRAP_MAGIC | version | nonce (12) | AES-256-GCM(kek, dk, aad)``.
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from privml._exceptions import ConfigError, IntegrityError

__all__ = ["ENV_KEY", "Kdf", "key_from_env", "key_from_file", "key_from_keyring", "unwrap",
           "wrap"]

ENV_KEY = "PRIVML_STORE_KEY"
KEYRING_SERVICE = "privml"
INSECURE_KEYRING_OK = "PRIVML_KEYRING_INSECURE_OK"
WRAP_MAGIC = b"PMWK"
WRAP_VERSION = 1


@dataclass(frozen=True)
class Kdf:
    """scrypt parameters and salt, stored with the store (not secret)."""

    salt: bytes
    n: int = 1 << 15
    r: int = 8
    p: int = 1

    @classmethod
    def new(cls) -> Kdf:
        return cls(os.urandom(16))

    def derive(self, passphrase: str) -> bytes:
        if not isinstance(passphrase, str) or not passphrase:
            raise ConfigError("a passphrase must be a non-empty string")
        return Scrypt(salt=self.salt, length=32, n=self.n, r=self.r, p=self.p).derive(
            passphrase.encode())

    def to_json(self) -> dict[str, object]:
        return {"kdf": "scrypt", "salt": self.salt.hex(), "n": self.n, "r": self.r,
                "p": self.p}

    @classmethod
    def from_json(cls, obj: dict[str, object]) -> Kdf:
        try:
            return cls(bytes.fromhex(str(obj["salt"])), int(obj["n"]),  # type: ignore[call-overload]
                       int(obj["r"]), int(obj["p"]))  # type: ignore[call-overload]
        except (KeyError, ValueError, TypeError):
            raise IntegrityError() from None


def _key_bytes(raw: bytes, where: str) -> bytes:
    if len(raw) == 32:  # raw key bytes (any of which may look like whitespace)
        return raw
    try:
        key = base64.b64decode(raw.strip(), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 32:
        raise ConfigError(f"{where} must hold 32 bytes (raw, or base64 of 32 random bytes)")
    return key


def key_from_file(path: Path | str) -> bytes:
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the key file {path}: {exc.strerror}") from None
    return _key_bytes(raw, f"the key file {path}")


def key_from_env() -> bytes | None:
    value = os.environ.get(ENV_KEY)
    return None if value is None else _key_bytes(value.encode(), ENV_KEY)


_NO_KEYRING = ("no OS keyring is available here: use a passphrase, or a key file kept off "
               "this disk")


def key_from_keyring(name: str, *, create: bool = False) -> bytes:
    """The store key kept in the OS keyring under ("privml", ``name``); with ``create``, a
    new random key is made and kept there if there is none yet."""
    import keyring
    from keyring.errors import KeyringError, NoKeyringError

    if not isinstance(name, str) or not name:
        raise ConfigError("a keyring entry needs a name")
    backend = keyring.get_keyring()
    if type(backend).__module__ == "keyring.backends.fail":
        raise ConfigError(_NO_KEYRING)
    if getattr(backend, "priority", 0) < 1 and os.environ.get(INSECURE_KEYRING_OK) != "1":
        raise ConfigError(
            f"the keyring backend {type(backend).__module__}.{type(backend).__name__} is "
            "not an OS keyring (it keeps secrets no better than a key file); use a "
            f"passphrase, or set {INSECURE_KEYRING_OK}=1 to accept it")
    try:
        value = keyring.get_password(KEYRING_SERVICE, name)
        if value is None:
            if not create:
                raise ConfigError(f"no key {name!r} in the OS keyring (`privml store init "
                                  f"--keyring {name}` makes one)")
            value = base64.b64encode(os.urandom(32)).decode()
            keyring.set_password(KEYRING_SERVICE, name, value)
    except NoKeyringError:
        raise ConfigError(_NO_KEYRING) from None
    except KeyringError as exc:
        raise ConfigError(f"the OS keyring refused: {exc}") from None
    return _key_bytes(value.encode(), f"the keyring entry {name!r}")


def wrap(kek: bytes, data_key: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(12)
    return (WRAP_MAGIC + bytes([WRAP_VERSION]) + nonce
            + AESGCM(kek).encrypt(nonce, data_key, aad))


def unwrap(kek: bytes, blob: bytes, aad: bytes) -> bytes:
    head = len(WRAP_MAGIC) + 1
    if len(blob) != head + 12 + 32 + 16 or blob[:head] != WRAP_MAGIC + bytes([WRAP_VERSION]):
        raise IntegrityError()
    try:
        return AESGCM(kek).decrypt(blob[head:head + 12], blob[head + 12:], aad)
    except InvalidTag:
        raise IntegrityError() from None
