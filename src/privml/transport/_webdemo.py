"""Demo partitions for browser pages (``privml server --web-demo N``): each client token gets
one of N IID parts of the server's dataset's training split as a CSV, so someone trying the
client page without data of their own can still take part. Public data only: never point
this at anything private (every token holder gets a part).
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable

import numpy as np

from privml._exceptions import ConfigError

__all__ = ["demo_partitions"]


def demo_partitions(dataset: str, parts: int, *, seed: int = 0) -> Callable[[str], bytes]:
    """client id -> the CSV of its part (a stable choice: a hash of the id)."""
    from privml.data import load_dataset

    if not 1 <= parts <= 10_000:
        raise ConfigError(f"--web-demo takes 1..10000 parts, got {parts}")
    data = load_dataset(dataset)
    x = data.x_train.reshape(len(data.x_train), -1)
    order = np.random.default_rng(seed).permutation(len(x))
    chunks = np.array_split(order, parts)
    header = ",".join([*(f"f{i}" for i in range(x.shape[1])), "label"])
    cache: dict[int, bytes] = {}

    def csv_of(client_id: str) -> bytes:
        k = int.from_bytes(hashlib.sha256(client_id.encode()).digest()[:8], "big") % parts
        if k not in cache:
            out = io.StringIO()
            out.write(header + "\n")
            for i in chunks[k]:
                out.write(",".join(f"{v:.6g}" for v in x[i]) + f",{int(data.y_train[i])}\n")
            cache[k] = out.getvalue().encode()
        return cache[k]

    return csv_of
