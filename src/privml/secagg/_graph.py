"""The neighbour graph of a SecAgg+ round: a random k-regular graph anyone can check.

Bell et al. 2020 replace Bonawitz et al.'s complete graph with a sparse random one. Here it
is a Harary graph on a random ring: the clients that advertised keys are put in a random
order, and each is joined to the k/2 nearest on either side (and, for odd k, to the one
opposite). The order comes from a seed that is a hash of the run, the round and the sorted
client ids, drawn with the same AES-CTR generator as the masks, so every client (a browser
too) recomputes its own neighbours and refuses a directory that differs. With k ≥ n - 1 it
is the complete graph.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from privml.secagg import hazmat
from privml.secagg._wire import Writer

__all__ = ["graph_seed", "neighbours"]


def graph_seed(run: str, round_: int, ids: Sequence[str]) -> bytes:
    """SHA-256 over the round's binding and the sorted ids (u16 length + UTF-8 each)."""
    out = Writer().raw(hazmat.binding(run=run, round_=round_, stage="graph", keys=()))
    ids = sorted(ids)
    out.u32(len(ids))
    for cid in ids:
        out.text(cid)
    return hashlib.sha256(out.getvalue()).digest()


def _permutation(n: int, seed: bytes) -> list[int]:
    """Fisher-Yates from the seed's keystream, with rejection sampling (no modulo bias)."""
    draws = hazmat.mask(seed, 4 * n + 64, bits=32)
    pos = 0
    order = list(range(n))
    for i in range(n - 1, 0, -1):
        bound = i + 1
        limit = (1 << 32) - (1 << 32) % bound
        while True:
            if pos == len(draws):  # the keystream's prefix is the same, so just extend it
                draws = hazmat.mask(seed, 2 * len(draws), bits=32)
            value = int(draws[pos])
            pos += 1
            if value < limit:
                break
        j = value % bound
        order[i], order[j] = order[j], order[i]
    return order


def neighbours(ids: Sequence[str], k: int, seed: bytes) -> dict[str, frozenset[str]]:
    """Each id's neighbours in the k-regular graph drawn from ``seed``."""
    ring = sorted(ids)
    n = len(ring)
    if len(set(ring)) != n:
        raise ValueError("client ids must be distinct")
    if k < 1 or (k % 2 and n % 2 and k < n - 1):
        raise ValueError(f"no {k}-regular graph on {n} nodes")
    if k >= n - 1:
        return {cid: frozenset(ring) - {cid} for cid in ring}
    order = [ring[i] for i in _permutation(n, seed)]
    offsets = list(range(1, k // 2 + 1))
    out: dict[str, frozenset[str]] = {}
    for pos, cid in enumerate(order):
        near = {order[(pos + d) % n] for d in offsets} | {order[(pos - d) % n] for d in offsets}
        if k % 2:
            near.add(order[(pos + n // 2) % n])
        out[cid] = frozenset(near)
    return out

