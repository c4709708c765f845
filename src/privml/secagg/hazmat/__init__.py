"""Hazardous materials: secure-aggregation primitives, dangerous if misused; use
:mod:`privml.secagg`.

This layer is full of land mines (a reused key or nonce, one mask key used for two vectors,
a share sealed to the wrong party, fewer checks than the protocol needs). Only the machines
in :mod:`privml.secagg`, which combine these correctly, should call it.

- X25519 key agreement and HKDF-SHA256, with ``info`` (and every GCM AAD) built by
  :func:`binding` from the run, the round, the stage and the parties' public keys;
- AES-256-GCM sealing of Shamir shares (:func:`seal`, :func:`open_sealed`);
- Shamir t-of-n sharing over GF(2^521 - 1) (:func:`split`, :func:`combine`);
- the mask generator, an AES-256-CTR keystream read as little-endian uint32/uint64
  (:func:`mask`, :func:`add_mask`).

Every choice can be reproduced byte for byte with WebCrypto (X25519, HKDF, AES-GCM, AES-CTR)
and BigInt arithmetic in a browser; ``tests/vectors/`` holds vectors to check against.
"""

from privml.secagg.hazmat._aead import open_sealed, seal
from privml.secagg.hazmat._keys import (
    binding,
    derive_key,
    hkdf_sha256,
    keypair,
    public_key,
    shared_secret,
)
from privml.secagg.hazmat._prg import add_mask, mask
from privml.secagg.hazmat._shamir import (
    PRIME,
    SHARE_BYTES,
    combine,
    combine_int,
    split,
    split_int,
)

__all__ = [
    "PRIME",
    "SHARE_BYTES",
    "add_mask",
    "binding",
    "combine",
    "combine_int",
    "derive_key",
    "hkdf_sha256",
    "keypair",
    "mask",
    "open_sealed",
    "public_key",
    "seal",
    "shared_secret",
    "split",
    "split_int",
]
