"""Shamir t-of-n secret sharing over the prime field GF(2^521 - 1).

A secret s is the constant term of a random polynomial of degree t - 1 whose other
coefficients are uniform in the field (drawn from a CSPRNG by rejection sampling); share i is
the polynomial at x_i. Any t shares give s by Lagrange interpolation at 0; fewer are
consistent with every secret equally (tested exhaustively over a small field), so a missing
share never "fails" loudly — the protocol layer counts shares before combining.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from privml._exceptions import ConfigError, SecAggError

__all__ = ["PRIME", "SHARE_BYTES", "combine", "combine_int", "split", "split_int"]

PRIME = 2**521 - 1  # a Mersenne prime, so every 32- or 64-byte secret is a field element
SHARE_BYTES = 66  # ceil(521 / 8): a field element, big-endian


def _uniform(prime: int, entropy: Callable[[int], bytes]) -> int:
    bits = prime.bit_length()
    nbytes = (bits + 7) // 8
    mask = (1 << bits) - 1
    while True:  # rejection sampling: uniform, with fewer than 2 draws expected
        raw = entropy(nbytes)
        if len(raw) != nbytes:
            raise ConfigError(f"entropy({nbytes}) returned {len(raw)} bytes")
        value = int.from_bytes(raw, "big") & mask
        if value < prime:
            return value


def _eval_poly(coeffs: Sequence[int], x: int, prime: int) -> int:
    """Horner's rule; ``coeffs[0]`` is the constant term."""
    acc = 0
    for c in reversed(coeffs):
        acc = (acc * x + c) % prime
    return acc


def split_int(secret: int, *, threshold: int, xs: Sequence[int], prime: int = PRIME,
              entropy: Callable[[int], bytes] = os.urandom) -> list[int]:
    """The values at each x in ``xs`` (same order) of a random polynomial of degree
    ``threshold - 1`` with constant term ``secret``; coefficients come from ``entropy``."""
    if not 0 <= secret < prime:
        raise ConfigError("the secret must be a field element")
    if not 1 <= threshold <= len(xs):
        raise ConfigError(f"threshold must be in [1, {len(xs)}], got {threshold}")
    if len(set(xs)) != len(xs) or any(not 1 <= x < prime for x in xs):
        raise ConfigError("share points must be distinct and in [1, prime)")
    coeffs = [secret] + [_uniform(prime, entropy) for _ in range(threshold - 1)]
    return [_eval_poly(coeffs, x, prime) for x in xs]


def combine_int(points: Sequence[tuple[int, int]], *, threshold: int,
                prime: int = PRIME) -> int:
    """Lagrange interpolation at 0 over the first ``threshold`` points (by x)."""
    if len(points) < threshold or threshold < 1:
        raise ConfigError(f"{len(points)} shares, {threshold} needed")
    pts = sorted(points)[:threshold]
    xs = [x for x, _ in pts]
    if len(set(x for x, _ in points)) != len(points) or any(
            not 1 <= x < prime or not 0 <= y < prime for x, y in points):
        raise ConfigError("shares must have distinct points and field values")
    secret = 0
    for i, (xi, yi) in enumerate(pts):
        num, den = 1, 1
        for j, xj in enumerate(xs):
            if j != i:
                num = num * xj % prime
                den = den * (xj - xi) % prime
        secret = (secret + yi * num * pow(den, -1, prime)) % prime
    return secret


def split(secret: bytes, *, threshold: int, xs: Sequence[int],
          entropy: Callable[[int], bytes] = os.urandom) -> list[bytes]:
    """Shares of a byte string (a big-endian integer, at most 64 bytes)."""
    if len(secret) > 64:
        raise ConfigError("a secret is at most 64 bytes")
    values = split_int(int.from_bytes(secret, "big"), threshold=threshold, xs=xs,
                       entropy=entropy)
    return [v.to_bytes(SHARE_BYTES, "big") for v in values]


def combine(shares: Sequence[tuple[int, bytes]], *, threshold: int, length: int = 32) -> bytes:
    """The secret of ``length`` bytes behind ``threshold`` shares ``(x, share bytes)``.

    Share bytes come from peers: a wrong length, a value outside the field, or a result
    that does not fit ``length`` bytes is ``SecAggError("bad_message")``. The x's and the
    counts are the caller's (``ConfigError``, as in :func:`combine_int`).
    """
    if isinstance(length, bool) or not isinstance(length, int) or not 1 <= length <= 64:
        raise ConfigError(f"length must be in [1, 64], got {length!r}")
    if any(len(s) != SHARE_BYTES for _, s in shares):
        raise SecAggError(f"a share is {SHARE_BYTES} bytes", code="bad_message")
    points = [(x, int.from_bytes(s, "big")) for x, s in shares]
    if any(y >= PRIME for _, y in points):
        raise SecAggError("a share is not a field element", code="bad_message")
    value = combine_int(points, threshold=threshold)
    if value >= 1 << (8 * length):
        raise SecAggError("the shares do not rebuild a secret of the expected size",
                          code="bad_message")
    return value.to_bytes(length, "big")
