"""Write privml's own SecAgg+ vectors (mask generator, Shamir, binding and key derivation).

    .venv/bin/python tests/vectors/make_secagg_vectors.py

Inputs are fixed below; the outputs were computed once with privml's implementation (whose
building blocks are themselves checked against RFC 7748, RFC 5869 and NIST SP 800-38A) and
are kept so that any other implementation — the browser client's WebCrypto code above all —
can check itself byte for byte. Rerunning must not change the files.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from privml.secagg import hazmat
from privml.secagg.hazmat._shamir import _eval_poly

HERE = Path(__file__).parent
MASK_KEY = bytes(range(32))
SHARED = bytes.fromhex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")


def mask_vectors() -> dict[str, object]:
    out: dict[str, object] = {"key": MASK_KEY.hex(),
                              "construction": "AES-256-CTR, initial counter block 16 zero "
                              "bytes (128-bit big-endian counter), keystream read as "
                              "little-endian unsigned integers"}
    for bits in (32, 64):
        values = hazmat.mask(MASK_KEY, 1000, bits=bits)
        out[f"first16_u{bits}"] = [int(v) for v in values[:16]]
        out[f"sha256_1000_u{bits}_le"] = hashlib.sha256(
            values.astype(f"<u{bits // 8}").tobytes()).hexdigest()
    return out


def shamir_vectors() -> dict[str, object]:
    secret = int.from_bytes(hashlib.sha256(b"privml shamir vector").digest(), "big")
    coeffs = [secret] + [int.from_bytes(hashlib.sha512(b"coefficient %d" % i).digest(), "big")
                         % hazmat.PRIME for i in (1, 2)]
    xs = [1, 2, 3, 4, 5]
    return {"prime": "2**521 - 1", "secret": hex(secret), "threshold": 3,
            "coefficients": [hex(c) for c in coeffs], "xs": xs,
            "shares": [hex(_eval_poly(coeffs, x, hazmat.PRIME)) for x in xs],
            "share_bytes": hazmat.SHARE_BYTES}


def binding_vectors() -> dict[str, object]:
    keys = (bytes(range(32)), bytes(range(32, 64)))
    info = hazmat.binding(run="run-1", round_=7, stage="share-keys", keys=keys)
    return {"run": "run-1", "round": 7, "stage": "share-keys",
            "keys": [k.hex() for k in keys], "binding": info.hex(),
            "shared_secret": SHARED.hex(),
            "derive_key": hazmat.derive_key(SHARED, info=info).hex()}


def main() -> None:
    for name, data in (("secagg_mask.json", mask_vectors()),
                       ("secagg_shamir.json", shamir_vectors()),
                       ("secagg_binding.json", binding_vectors())):
        (HERE / name).write_text(json.dumps(data, indent=2) + "\n")


if __name__ == "__main__":
    main()
