"""50 concurrent clients, each with its own certificate, for 3 rounds over mutual TLS.

The clients are async tasks in this one process (a process importing torch costs ~150 MB);
each sends a delta whose value encodes (client, round), so the aggregate tells exactly which
updates were counted, and how many times.
"""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import httpx
import numpy as np
import pytest

from privml import params as pm
from privml.transport._coordinator import Coordinator, RunConfig
from privml.transport._serve import ServerThread
from privml.transport.server import ServerState, create_device_app
from privml.transport.tls import (
    Revocations,
    client_ssl_context,
    init_federation,
    issue_client,
    server_ssl_context,
)

N = 50
ROUNDS = 3
SPEC = {"w": (4,)}
HDR = {"X-Privml-Protocol": "1"}


def value(client: int, round_: int) -> float:
    return float(client + 1) + 1000.0 * round_


async def one_client(url: str, ctx: object, index: int, accepted: list[tuple[int, int]]) -> None:
    async with httpx.AsyncClient(base_url=url, verify=ctx, timeout=60) as h:  # type: ignore[arg-type]
        (await h.post("/v1/enrol", headers=HDR)).raise_for_status()
        done_rounds: set[int] = set()
        while True:
            task = (await h.get("/v1/task", headers=HDR)).json()
            if task["action"] == "done":
                return
            if task["action"] == "wait" or task["round"] in done_rounds:
                await asyncio.sleep(0.05)
                continue
            body = pm.encode({"w": np.full(4, value(index, task["round"]), np.float32)})
            headers = {**HDR, "X-Privml-Run": task["run"], "X-Privml-Round": str(task["round"]),
                       "X-Privml-Update-Id": secrets.token_urlsafe(12),
                       "X-Privml-Examples": "1"}
            r = await h.post("/v1/update", content=body, headers=headers)
            done_rounds.add(task["round"])
            if r.status_code == 200 and not r.json()["duplicate"]:
                accepted.append((index, task["round"]))


def test_fifty_concurrent_clients_counted_once(tmp_path: Path) -> None:
    paths = init_federation(tmp_path / "fed")
    pairs = [issue_client(paths.dir, f"c{i:02d}") for i in range(N)]
    coord = Coordinator(RunConfig(rounds=ROUNDS, clients_per_round=N, round_timeout=120.0),
                        run_id="run-50", model_spec_json="{}",
                        initial={"w": np.zeros(4, np.float32)})
    sums: list[float] = []
    coord.on_round = lambda close, params, acc: sums.append(float(params["w"][0]))
    state = ServerState(coord, Revocations(paths.revoked).is_revoked, tick_seconds=0.05)
    accepted: list[tuple[int, int]] = []
    ctxs = [client_ssl_context(paths.ca_cert, cert=c, key=k) for c, k in pairs]

    async def main(url: str) -> None:
        await asyncio.gather(*(one_client(url, ctxs[i], i, accepted) for i in range(N)))

    with ServerThread(create_device_app(state),
                      ssl_context=server_ssl_context(paths, require_client_cert=True)) as srv:
        asyncio.run(asyncio.wait_for(main(srv.url), 240))
    assert coord.finished and len(coord.history) == ROUNDS
    assert len(accepted) == len(set(accepted)) == N * ROUNDS
    assert all(len(c.accepted) == N for c in coord.history)
    # FedAvg of equal-weight deltas: w grows each round by the mean of that round's values.
    expected = 0.0
    for r, got in zip(range(1, ROUNDS + 1), sums, strict=True):
        expected += np.mean([value(i, r) for i in range(N)])
        assert got == pytest.approx(expected, rel=1e-6)
