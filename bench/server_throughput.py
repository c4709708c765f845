"""Accepted updates per second: the privml coordinator vs a bare uvicorn endpoint.

32 concurrent clients, each with its own certificate, send 1 MB updates over mutual TLS 1.3
on loopback. privml's side is the real device port (protocol header, certificate identity,
revocation check, size limit, safetensors decode against the model spec, finiteness, round
and replay checks, aggregation at the end of each round). The bare side is uvicorn with the
same TLS context and an ASGI app that only reads the body. Both run in this process, one
after the other, with the same client code; the figure is the ratio of the two rates.

    .venv/bin/python bench/server_throughput.py [--rounds 5] [--clients 32] [--mb 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import secrets
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

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

HDR = {"X-Privml-Protocol": "1"}
RESULTS = Path(__file__).parent / "results" / "server_throughput.json"


async def bare_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    size, more = 0, True
    while more:
        msg = await receive()
        size += len(msg.get("body", b""))
        more = msg.get("more_body", False)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b'{"accepted": true}'})


async def privml_client(url: str, ctx: Any, body: bytes, rounds: int, times: list[float]) -> None:
    async with httpx.AsyncClient(base_url=url, verify=ctx, timeout=120) as h:
        (await h.post("/v1/enrol", headers=HDR)).raise_for_status()
        done: set[int] = set()
        while True:
            task = (await h.get("/v1/task", headers=HDR, params={"wait": 10})).json()
            if task["action"] == "done":
                return
            if task["action"] == "wait" or task["round"] in done:
                continue  # the server long-polls: ask again at once
            headers = {**HDR, "X-Privml-Run": task["run"], "X-Privml-Round": str(task["round"]),
                       "X-Privml-Update-Id": secrets.token_urlsafe(12),
                       "X-Privml-Examples": "1", "Content-Type": "application/octet-stream"}
            t = time.perf_counter()
            r = await h.post("/v1/update", content=body, headers=headers)
            times.append(time.perf_counter() - t)
            r.raise_for_status()
            done.add(task["round"])


async def bare_client(url: str, ctx: Any, body: bytes, rounds: int, times: list[float]) -> None:
    async with httpx.AsyncClient(base_url=url, verify=ctx, timeout=120) as h:
        for _ in range(rounds):
            t = time.perf_counter()
            r = await h.post("/update", content=body, headers=HDR)
            times.append(time.perf_counter() - t)
            r.raise_for_status()


def run_side(name: str, app: Any, paths: Any, ctxs: list[Any], body: bytes,
             rounds: int) -> dict[str, float]:
    times: list[float] = []
    client = privml_client if name == "privml" else bare_client
    with ServerThread(app, ssl_context=server_ssl_context(paths, require_client_cert=True)) as s:
        async def main() -> None:
            await asyncio.gather(*(client(s.url, c, body, rounds, times) for c in ctxs))

        t0 = time.perf_counter()
        asyncio.run(main())
        wall = time.perf_counter() - t0
    n = len(ctxs) * rounds
    assert len(times) == n, (name, len(times), n)
    return {"updates": n, "seconds": wall, "updates_per_second": n / wall,
            "median_request_seconds": statistics.median(times)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--mb", type=float, default=1.0)
    args = ap.parse_args()
    n_floats = int(args.mb * 1024 * 1024 / 4)
    with tempfile.TemporaryDirectory() as tmp:
        paths = init_federation(Path(tmp) / "fed")
        pairs = [issue_client(paths.dir, f"c{i:02d}") for i in range(args.clients)]
        ctxs = [client_ssl_context(paths.ca_cert, cert=c, key=k) for c, k in pairs]
        body = pm.encode({"w": np.full(n_floats, 1e-3, np.float32)})
        coord = Coordinator(
            RunConfig(rounds=args.rounds, clients_per_round=args.clients, round_timeout=600,
                      max_update_bytes=len(body) + 4096),
            run_id="bench", model_spec_json="{}", initial={"w": np.zeros(n_floats, np.float32)})
        state = ServerState(coord, Revocations(paths.revoked).is_revoked,
                            max_body=len(body) + 4096, tick_seconds=0.05)
        print(f"{args.clients} clients x {args.rounds} rounds of {len(body) / 1e6:.2f} MB")
        bare = run_side("bare", bare_app, paths, ctxs, body, args.rounds)
        print(f"bare uvicorn: {bare['updates_per_second']:.1f} updates/s")
        ours = run_side("privml", create_device_app(state), paths, ctxs, body, args.rounds)
        print(f"privml:       {ours['updates_per_second']:.1f} updates/s")
    ratio = ours["updates_per_second"] / bare["updates_per_second"]
    print(f"ratio privml / bare = {ratio:.2f} (aim >= 0.5: {'met' if ratio >= 0.5 else 'NOT met'})")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=False).stdout.strip()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "clients": args.clients, "rounds": args.rounds, "update_bytes": len(body),
        "privml": ours, "bare_uvicorn": bare, "ratio": ratio, "commit": commit,
        "machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count()},
        "recorded": time.strftime("%Y-%m-%d"),
    }, indent=2) + "\n")


if __name__ == "__main__":
    main()
