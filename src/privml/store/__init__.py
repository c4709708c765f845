"""Sealed storage at rest: :class:`LocalStore` (named, versioned values, envelope
encryption with AES-256-GCM, a STREAM-style segmented format for values of any size) and
the key sources it takes (passphrase, OS keyring, key file, ``PRIVML_STORE_KEY``)."""

from privml.store._keys import ENV_KEY, key_from_env, key_from_file, key_from_keyring
from privml.store._local import LocalStore
from privml.store._url import load, save

__all__ = ["ENV_KEY", "LocalStore", "key_from_env", "key_from_file", "key_from_keyring", "load",
           "save"]
