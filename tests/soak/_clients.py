"""One client process of the fault soak: its share of the federation's clients, one thread
each, every one a real :class:`FederatedClient` over mutual TLS with its own certificate.

Run as ``python tests/soak/_clients.py --server URL --federation DIR --names c000,c001,...
--log FILE --seed N --stop FILE``. Each client trains when asked and, at random (a seeded
``random.Random`` per client), misbehaves: garbage bodies before its genuine update, the
same update twice, a conflicting body under an accepted id, a second update in one round,
an old round's update replayed, a POST cut off mid-body, long polls abandoned, connections
dropped, raw TCP/TLS connections cut, and going away for a while mid-round.

The log (JSON lines) is the client-side truth the soak checks the server against: every
update the server said it accepted (``accepted``, once per update id, with its body), every
genuine update refused or left unresolved, every fault injected and the answer it got,
and every 5xx answer seen on any request.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import os
import random
import secrets
import socket
import ssl
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _garbage

from privml.data import load_dataset, partition
from privml.train import train_local
from privml.transport.client import (
    PROTOCOL_HEADERS,
    FederatedClient,
    ServerRefusedError,
    _refusal,
)
from privml.transport.tls import client_ssl_context

NUM_CLIENTS = 100
RESOLVE_SECONDS = 240.0  # how long a genuine update is retried before it counts as unknown


class SoakOverError(Exception):
    """The soak is over: leave whatever this client was doing."""


class Log:
    """This process's JSON-lines log; one line per event, flushed at once."""

    def __init__(self, path: Path) -> None:
        self._f = path.open("a", encoding="utf-8")
        self._lock = threading.Lock()

    def __call__(self, ev: str, **fields: Any) -> None:
        line = json.dumps({"ev": ev, "t": time.time(), **fields})
        with self._lock:
            self._f.write(line + "\n")
            self._f.flush()


class SoakClient(FederatedClient):
    """A FederatedClient whose update submission is watched (and misbehaves at random)."""

    def __init__(self, name: str, *, server: str, fed: Path, data: Any, rng: random.Random,
                 log: Log, stop: threading.Event, train_lock: threading.Lock) -> None:
        self.name, self.rng, self.log, self.stop_event = name, rng, log, stop
        self._tls = (fed / "ca.pem", fed / "clients" / f"{name}.pem",
                     fed / "clients" / f"{name}.key")

        def train(*args: Any) -> Any:  # torch's global RNG: one trainer at a time
            with train_lock:
                return train_local(*args)

        super().__init__(server, ca=self._tls[0], cert=self._tls[1], key=self._tls[2],
                         data=data, train_fn=train, sleep=self._sleep, long_poll=10.0,
                         timeout=30.0)
        self.server_url = server
        self._hook()
        self.history: list[tuple[bytes, dict[str, str]]] = []  # accepted (body, headers)

    # ---- plumbing -----------------------------------------------------------------------
    def _hook(self) -> None:
        def on_response(resp: httpx.Response) -> None:
            if resp.status_code >= 500:
                self.log("server_error", client=self.name, path=resp.request.url.path,
                         status=resp.status_code)
        self.http.event_hooks["response"] = [on_response]

    def _sleep(self, seconds: float) -> None:
        if self.stop_event.wait(seconds):
            raise SoakOverError

    def _reconnect(self) -> None:
        """Drop every connection this client holds and come back with a fresh pool."""
        self.http.close()
        self.http = httpx.Client(base_url=self.server_url, headers=PROTOCOL_HEADERS,
                                 verify=client_ssl_context(self._tls[0], cert=self._tls[1],
                                                           key=self._tls[2]), timeout=30.0)
        self._hook()

    def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        if self.stop_event.is_set():
            raise SoakOverError
        if method == "POST" and path == "/v1/update":
            return self._submit(kw["content"], dict(kw["headers"]))
        return super()._request(method, path, **kw)

    # ---- the update, watched ------------------------------------------------------------
    def _submit(self, body: bytes, headers: dict[str, str]) -> httpx.Response:
        rnd = int(headers["X-Privml-Round"])
        if self.rng.random() < 0.25:
            for _ in range(self.rng.randint(1, 2)):
                self._garbage(body, headers)
        if self.rng.random() < 0.05:
            self._cut_off(body, headers)
        if self.rng.random() < 0.03 and self.history:
            self._stale_body(headers)
        resp = self._resolve(body, headers)
        if resp.status_code >= 400:
            exc = _refusal(resp)
            self.log("update_refused", client=self.name, round=rnd, status=resp.status_code,
                     code=exc.code, update_id=headers["X-Privml-Update-Id"])
            raise exc
        self.history = [*self.history[-4:], (body, headers)]
        self._after_accepted(body, headers)
        return resp

    def _resolve(self, body: bytes, headers: dict[str, str]) -> httpx.Response:
        """Send the genuine update until the server gives a definite answer: it keeps the
        update id, so a resend after a lost answer (or a killed server) counts once."""
        uid, rnd = headers["X-Privml-Update-Id"], int(headers["X-Privml-Round"])
        deadline, attempt = time.monotonic() + RESOLVE_SECONDS, 0
        while True:
            attempt += 1
            try:
                resp = self.http.post("/v1/update", content=body, headers=headers)
                if resp.status_code < 500:
                    break
            except httpx.TransportError as exc:
                last = type(exc).__name__
            else:
                last = f"status {resp.status_code}"
            if time.monotonic() > deadline:
                self.log("update_unknown", client=self.name, round=rnd, update_id=uid,
                         last=last, sha256=hashlib.sha256(body).hexdigest())
                raise SoakOverError
            self.report.retries += 1
            self._sleep(min(2.0, 0.1 * 2 ** min(attempt, 5)) * self.rng.uniform(0.5, 1.0))
        if resp.status_code == 200:
            self.log("accepted", client=self.name, run=headers["X-Privml-Run"], round=rnd,
                     update_id=uid, sha256=hashlib.sha256(body).hexdigest(),
                     examples=int(headers["X-Privml-Examples"]),
                     duplicate=bool(resp.json().get("duplicate")), attempts=attempt,
                     body=base64.b64encode(body).decode())
        return resp

    def _send_fault(self, kind: str, body: _garbage.Body, headers: dict[str, str],
                    expect: str, **extra: Any) -> httpx.Response | None:
        """Send one bad request and log it with the answer (``expect``: "4xx" or "dup")."""
        content = body() if callable(body) else body
        try:
            resp = self.http.post("/v1/update", content=content, headers=headers)
        except httpx.TransportError as exc:
            # A server killed meanwhile: the fault went unanswered (it cannot have counted:
            # its body is never a genuine update, or its id was accepted already).
            self.log("fault", kind=kind, client=self.name, status=None,
                     error=type(exc).__name__, ok=True, **extra)
            return None
        code = ""
        if resp.status_code >= 400:
            code = _refusal(resp).code
        ok = (400 <= resp.status_code < 500 if expect == "4xx" else
              resp.status_code == 200 and resp.json().get("duplicate") is True)
        sha = hashlib.sha256(content).hexdigest() if isinstance(content, bytes) else None
        self.log("fault", kind=kind, client=self.name, status=resp.status_code, code=code,
                 ok=ok, sha256=sha, update_id=str(headers.get("X-Privml-Update-Id")), **extra)
        return resp

    def _garbage(self, body: bytes, headers: dict[str, str]) -> None:
        if self.rng.random() < _garbage.OVERSIZED_ODDS:
            kind, maker = "oversized", _garbage.oversized
        else:
            kind = self.rng.choice(sorted(_garbage.MAKERS))
            maker = _garbage.MAKERS[kind]
        bad, bad_headers = maker(body, headers, self.rng)
        self._send_fault(f"garbage_{kind}", bad, bad_headers, "4xx")

    def _cut_off(self, body: bytes, headers: dict[str, str]) -> None:
        """The genuine update's POST, dropped mid-body (the same id is then sent whole)."""
        cut = self.rng.randint(1, len(body) - 1)

        def stream() -> Any:
            yield body[:cut]
            raise ConnectionAbortedError("the soak cuts this request off")

        try:
            self.http.post("/v1/update", content=stream(), headers=headers)
            status: int | None = None
        except (httpx.TransportError, ConnectionAbortedError) as exc:
            status = None
            err = type(exc).__name__
        else:
            err = "answered"
        self._reconnect()
        self.log("fault", kind="disconnect_mid_body", client=self.name, status=status,
                 error=err, ok=True, update_id=headers["X-Privml-Update-Id"])

    def _stale_body(self, headers: dict[str, str]) -> None:
        """An old round's body under a new id and its old round number: refused as late."""
        old_body, old_headers = self.rng.choice(self.history)
        h = {**old_headers, "X-Privml-Update-Id": secrets.token_urlsafe(16)}
        self._send_fault("replay_old_round_new_id", old_body, h, "4xx",
                         round=int(old_headers["X-Privml-Round"]))

    def _after_accepted(self, body: bytes, headers: dict[str, str]) -> None:
        r = self.rng.random()
        if r < 0.10:  # the same update again: idempotent, counted once
            self._send_fault("replay_same_update", body, headers, "dup")
        elif r < 0.14:  # an accepted id with another body: a replay, refused
            other, _ = _garbage.nan(body, headers, self.rng)
            self._send_fault("replay_id_other_body", other, headers, "4xx")
        elif r < 0.18:  # a second genuine-looking update in the same round
            self._send_fault("second_update_same_round", body,
                             {**headers, "X-Privml-Update-Id": secrets.token_urlsafe(16)},
                             "4xx")
        elif r < 0.26 and len(self.history) > 1:  # an earlier round's update, id and all
            old_body, old_headers = self.rng.choice(self.history[:-1])
            self._send_fault("replay_old_update", old_body, old_headers, "dup",
                             round=int(old_headers["X-Privml-Round"]))

    # ---- faults between tasks -----------------------------------------------------------
    def between_tasks(self) -> None:
        r = self.rng.random()
        if r < 0.004:
            self._raw_fault()
        elif r < 0.012:  # a long poll abandoned mid-request
            try:
                self.http.get("/v1/task", params={"wait": 10},
                              timeout=self.rng.uniform(0.05, 1.0))
                err = "answered"
            except httpx.TransportError as exc:
                err = type(exc).__name__
            self._reconnect()
            self.log("fault", kind="abandoned_long_poll", client=self.name, status=None,
                     error=err, ok=True)
        elif r < 0.016:
            self._reconnect()
            self.log("fault", kind="dropped_connections", client=self.name, status=None,
                     ok=True)

    def _raw_fault(self) -> None:
        """A connection cut at the TCP or TLS level, before any HTTP request completes."""
        url = httpx.URL(self.server_url)
        kind = self.rng.choice(["tcp_connect_close", "tcp_garbage", "tls_partial_request"])
        try:
            with socket.create_connection((url.host, url.port), timeout=5) as sock:
                if kind == "tcp_garbage":
                    sock.sendall(self.rng.randbytes(self.rng.randint(1, 2048)))
                elif kind == "tls_partial_request":
                    ctx = client_ssl_context(self._tls[0], cert=self._tls[1], key=self._tls[2])
                    with ctx.wrap_socket(sock, server_hostname=url.host) as tls:
                        tls.sendall(b"POST /v1/update HTTP/1.1\r\nHost: x\r\n"
                                    b"X-Privml-Protocol: 1\r\n"
                                    b"Content-Length: 5000\r\n\r\npartial")
            err = "sent"
        except (OSError, ssl.SSLError) as exc:
            err = type(exc).__name__
        self.log("fault", kind=kind, client=self.name, status=None, error=err, ok=True)

    def go_away(self, task: dict[str, Any]) -> None:
        """Sampled, but gone for a while without a word (connections dropped), then back."""
        away = self.rng.uniform(2.0, 20.0)
        self.http.close()
        self.log("fault", kind="away_mid_round", client=self.name, round=task.get("round"),
                 seconds=round(away, 2), status=None, ok=True)
        self._sleep(away)
        self._reconnect()

    # ---- the loop -----------------------------------------------------------------------
    def soak(self) -> str:
        info = self._request("POST", "/v1/enrol").json()
        self.report.client_id, self.report.run = info["client_id"], info["run"]
        while True:
            self.between_tasks()
            task = self._request("GET", "/v1/task", params={"wait": self.long_poll}).json()
            action = task["action"]
            if action == "done":
                return "done"
            if action == "train" and self.rng.random() < 0.02:
                self.go_away(task)
            elif action == "train":
                # A refusal is logged; the round closed without us (e.g. while we were away).
                with contextlib.suppress(ServerRefusedError):
                    self._train(task)
            elif action == "enrol":
                self._request("POST", "/v1/enrol")
            else:
                self._sleep(float(task.get("retry_after", 0.5)))


def run_client(c: SoakClient, log: Log) -> None:
    while not c.stop_event.is_set():
        try:
            outcome = c.soak()
            log("client_done", client=c.name, outcome=outcome, retries=c.report.retries)
            return
        except SoakOverError:
            return
        except Exception as exc:  # retries exhausted while the server was down: start over
            log("client_restart", client=c.name, error=f"{type(exc).__name__}: {exc}"[:300])
            if c.stop_event.wait(1.0):
                return
            c._reconnect()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True)
    ap.add_argument("--federation", type=Path, required=True)
    ap.add_argument("--names", required=True)
    ap.add_argument("--log", type=Path, required=True)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--stop", type=Path, required=True)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    ds = load_dataset("digits", seed=0)
    parts = partition(ds.y_train, NUM_CLIENTS, alpha=None, rng=np.random.default_rng(0))
    datas = parts.clients(ds.x_train, ds.y_train)
    log, stop, train_lock = Log(args.log), threading.Event(), threading.Lock()
    threads = []
    for name in args.names.split(","):
        index = int(name.lstrip("c"))
        client = SoakClient(name, server=args.server, fed=args.federation, data=datas[index],
                            rng=random.Random(args.seed * 1000 + index), log=log, stop=stop,
                            train_lock=train_lock)
        t = threading.Thread(target=run_client, args=(client, log), name=name, daemon=True)
        t.start()
        threads.append(t)
    log("process_started", pid=os.getpid(), clients=len(threads))
    while any(t.is_alive() for t in threads):
        if args.stop.exists():
            stop.set()
        time.sleep(0.2)
    log("process_done")


if __name__ == "__main__":
    main()
