"""Bad update requests the soak's clients send: each must be refused with a 4xx, and none
may ever count. Every maker takes the client's genuine body (privml safetensors bytes of its
delta), its genuine headers and a seeded ``random.Random``; it returns the request to send
(body, headers) and the status class expected."""

from __future__ import annotations

import json
import random
import secrets
from collections.abc import Callable, Iterator

import numpy as np

from privml import params as pm

Headers = dict[str, str]
Body = bytes | Callable[[], Iterator[bytes]]  # a callable: streamed (chunked) body
Maker = Callable[[bytes, Headers, random.Random], tuple[Body, Headers]]

OVERSIZE = 64 * 1024 * 1024 + 64 * 1024  # just past the server's 64 MiB body limit


def _fresh(headers: Headers, **over: str) -> Headers:
    """The genuine headers under a new update id (so the id check never masks the body's)."""
    return {**headers, "X-Privml-Update-Id": secrets.token_urlsafe(16), **over}


def random_bytes(body: bytes, headers: Headers, rng: random.Random) -> tuple[Body, Headers]:
    return rng.randbytes(rng.randint(1, 4096)), _fresh(headers)


def truncated(body: bytes, headers: Headers, rng: random.Random) -> tuple[Body, Headers]:
    return body[:rng.randint(0, len(body) - 1)], _fresh(headers)


def _tweak(body: bytes, rng: random.Random,
           change: Callable[[dict[str, np.ndarray], str], None]) -> bytes:
    params = {k: v.copy() for k, v in pm.decode(body).items()}
    change(params, rng.choice(sorted(params)))
    tensors = {k: np.ascontiguousarray(v) for k, v in params.items()}
    # Encoded by safetensors directly: privml's encoder (rightly) refuses these.
    from safetensors.numpy import save

    meta = pm.metadata(body)
    meta["order"] = json.dumps(list(tensors))
    return bytes(save(tensors, metadata=meta))


def wrong_shape(body: bytes, headers: Headers, rng: random.Random) -> tuple[Body, Headers]:
    def change(p: dict[str, np.ndarray], k: str) -> None:
        p[k] = np.zeros((*p[k].shape[:-1], p[k].shape[-1] + 1), dtype=np.float32)
    return _tweak(body, rng, change), _fresh(headers)


def nan(body: bytes, headers: Headers, rng: random.Random) -> tuple[Body, Headers]:
    def change(p: dict[str, np.ndarray], k: str) -> None:
        p[k].flat[rng.randrange(p[k].size)] = rng.choice([np.nan, np.inf, -np.inf])
    return _tweak(body, rng, change), _fresh(headers)


def float64(body: bytes, headers: Headers, rng: random.Random) -> tuple[Body, Headers]:
    def change(p: dict[str, np.ndarray], k: str) -> None:
        p[k] = p[k].astype(np.float64)
    return _tweak(body, rng, change), _fresh(headers)


def missing_tensor(body: bytes, headers: Headers, rng: random.Random) -> tuple[Body, Headers]:
    def change(p: dict[str, np.ndarray], k: str) -> None:
        del p[k]
    return _tweak(body, rng, change), _fresh(headers)


def extra_tensor(body: bytes, headers: Headers, rng: random.Random) -> tuple[Body, Headers]:
    def change(p: dict[str, np.ndarray], k: str) -> None:
        p["extra.weight"] = np.ones(3, dtype=np.float32)
    return _tweak(body, rng, change), _fresh(headers)


def deep_header(body: bytes, headers: Headers, rng: random.Random) -> tuple[Body, Headers]:
    """A safetensors header nested deeper than a recursive JSON parser goes."""
    header = b"[" * rng.randint(2000, 20000)
    return len(header).to_bytes(8, "little") + header, _fresh(headers)


def oversized(body: bytes, headers: Headers, rng: random.Random) -> tuple[Body, Headers]:
    def stream() -> Iterator[bytes]:  # chunked: the server must stop at its limit
        chunk = bytes(1024 * 1024)
        for _ in range(OVERSIZE // len(chunk)):
            yield chunk
        yield bytes(OVERSIZE % len(chunk))
    return stream, _fresh(headers)


def bad_metadata(body: bytes, headers: Headers, rng: random.Random) -> tuple[Body, Headers]:
    h = _fresh(headers)
    which = rng.choice(["examples", "round", "update_id", "missing", "metrics", "deep_metrics"])
    if which == "examples":
        h["X-Privml-Examples"] = rng.choice(["0", "-3", "many", ""])
    elif which == "round":
        h["X-Privml-Round"] = rng.choice(["0", "-1", "x", "1e3"])
    elif which == "update_id":
        bad = rng.choice(["short", "has space in it", "x" * 65, "é" * 9])
        h["X-Privml-Update-Id"] = bad.encode()  # type: ignore[assignment]  # raw UTF-8
    elif which == "missing":
        del h[rng.choice(["X-Privml-Run", "X-Privml-Round", "X-Privml-Examples"])]
    elif which == "metrics":
        h["X-Privml-Metrics"] = rng.choice(['{"a": "text"}', "[1, 2]", "{not json", '"x"'])
    else:  # nesting deep enough to exhaust a recursive JSON parser
        h["X-Privml-Metrics"] = "[" * rng.randint(2000, 6000)
    return body, h


def wrong_run(body: bytes, headers: Headers, rng: random.Random) -> tuple[Body, Headers]:
    return body, _fresh(headers, **{"X-Privml-Run": secrets.token_hex(16)})


def future_round(body: bytes, headers: Headers, rng: random.Random) -> tuple[Body, Headers]:
    later = str(int(headers["X-Privml-Round"]) + rng.randint(1, 1000))
    return body, _fresh(headers, **{"X-Privml-Round": later})


MAKERS: dict[str, Maker] = {
    "random_bytes": random_bytes, "truncated": truncated, "wrong_shape": wrong_shape,
    "nan": nan, "float64": float64, "missing_tensor": missing_tensor,
    "extra_tensor": extra_tensor, "bad_metadata": bad_metadata, "wrong_run": wrong_run,
    "future_round": future_round, "deep_header": deep_header,
}
# Relative odds; an oversized body (64 MiB over loopback TLS) is kept rare.
WEIGHTS = {name: 1.0 for name in MAKERS}
OVERSIZED_ODDS = 0.01
