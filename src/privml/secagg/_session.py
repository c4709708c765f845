"""One SecAgg+ round with every party in this process: for the simulator, tests and benches.

The same client and server machines as over HTTPS, with every message passed through its
byte encoding; ``drop_at`` makes a client fall silent from a stage on, as a lost device does.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from privml.secagg._client import ClientStage, SecAggClient
from privml.secagg._messages import ClientMessage, ServerMessage, decode, encode
from privml.secagg._params import SecAggConfig
from privml.secagg._server import MapFn, SecAggServer, ServerStage

__all__ = ["RoundResult", "run_round"]

_ORDER = [ClientStage.ADVERTISE, ClientStage.SHARE_KEYS, ClientStage.MASKED_INPUT,
          ClientStage.UNMASK]


@dataclass(frozen=True, slots=True)
class RoundResult:
    """The unmasked sum of the survivors' encoded inputs, who they were, and the time
    spent by the server and by each client (seconds, encoding and decoding included)."""

    total: np.ndarray = field(repr=False)
    survivors: tuple[str, ...]
    server_seconds: float
    client_seconds: Mapping[str, float]
    bytes_up: int
    bytes_down: int


def run_round(inputs: Mapping[str, np.ndarray], *, run: str, round_: int, bits: int = 32,
              config: SecAggConfig | None = None,
              drop_at: Mapping[str, ClientStage] | None = None,
              entropy: Callable[[int], bytes] = os.urandom,
              map_fn: MapFn | None = None, lanes: int = 1) -> RoundResult:
    """Aggregate ``inputs`` (client id -> encoded vector, all the same length and dtype).
    RoundAbortedError when too many drop for the round to finish safely."""
    drop_at = dict(drop_at or {})
    length = len(next(iter(inputs.values())))
    clock = {cid: 0.0 for cid in inputs}
    traffic = [0, 0]
    server_time = 0.0
    server = SecAggServer(run=run, round_=round_, participants=sorted(inputs), length=length,
                          bits=bits, config=config, map_fn=map_fn, lanes=lanes)
    clients = {cid: SecAggClient(run=run, round_=round_, client_id=cid, entropy=entropy)
               for cid in inputs}

    def active(stage: ClientStage) -> list[str]:
        return [c for c in sorted(inputs)
                if c not in drop_at or _ORDER.index(drop_at[c]) > _ORDER.index(stage)]

    def send(cid: str, make: Callable[[], ClientMessage]) -> None:
        nonlocal server_time
        start = time.perf_counter()
        data = encode(make())
        clock[cid] += time.perf_counter() - start
        traffic[0] += len(data)
        start = time.perf_counter()
        server.receive(decode(data), sender=cid)  # type: ignore[arg-type]
        server_time += time.perf_counter() - start

    def close() -> dict[str, ServerMessage]:
        nonlocal server_time
        start = time.perf_counter()
        out = {cid: encode(m) for cid, m in server.advance().items()}
        server_time += time.perf_counter() - start
        traffic[1] += sum(len(b) for b in out.values())
        return {cid: decode(b) for cid, b in out.items()}  # type: ignore[misc]

    for cid in active(ClientStage.ADVERTISE):
        send(cid, clients[cid].advertise)
    inbox = close()
    steps: list[tuple[ClientStage, Callable[[SecAggClient, ServerMessage], ClientMessage]]] = [
        (ClientStage.SHARE_KEYS, lambda c, m: c.share_keys(m)),  # type: ignore[arg-type]
        (ClientStage.MASKED_INPUT,
         lambda c, m: c.masked_input(m, inputs[c.client_id])),  # type: ignore[arg-type]
        (ClientStage.UNMASK, lambda c, m: c.unmask(m)),  # type: ignore[arg-type]
    ]
    for stage, step in steps:
        for cid in active(stage):
            if cid in inbox:
                client, msg = clients[cid], inbox[cid]
                send(cid, partial(step, client, msg))
        inbox = close()
    assert server.total is not None  # nosec B101  # narrowing: set when the last stage closed (else RoundAbortedError)
    return RoundResult(server.total, tuple(sorted(server.survivors[ServerStage.MASKED_INPUT])),
                       server_time, clock, traffic[0], traffic[1])
