"""Runs started by an admin (``POST /v1/admin/runs``) on a server that starts idle, one run
after another, over real TLS 1.3 on loopback with real tokens, coordinators and store; and
``privml server`` doing the same in a subprocess."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from privml.cli._server import _one_run, _run_factory
from privml.data import ClientData, load_dataset, partition
from privml.transport._serve import ServerThread
from privml.transport._store import CoordinatorStore
from privml.transport._tokens import TokenStore, default_tokens_path
from privml.transport._webapp import create_web_app
from privml.transport.client import ClientReport, FederatedClient
from privml.transport.server import ServerState, create_device_app
from privml.transport.tls import (
    FederationPaths,
    Revocations,
    client_ssl_context,
    init_federation,
    issue_client,
    server_ssl_context,
)
from tests.test_server_cli import Proc

HDR = {"X-Privml-Protocol": "1"}
RUN = {"rounds": 2, "clients_per_round": 2, "epochs": 1, "model": "logreg",
       "round_timeout": 10.0}


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> FederationPaths:
    paths = init_federation(tmp_path_factory.mktemp("admin-runs") / "federation")
    for name in ("alice", "bob"):
        issue_client(paths.dir, name)
    return paths


@pytest.fixture(scope="module")
def client_data() -> list[ClientData]:
    ds = load_dataset("digits", seed=0)
    parts = partition(ds.y_train, 2, alpha=None, rng=np.random.default_rng(0))
    return parts.clients(ds.x_train, ds.y_train)


@dataclass
class Server:
    paths: FederationPaths
    device: ServerThread
    web: ServerThread
    state: ServerState
    store: CoordinatorStore
    admin: str
    client_token: str

    def web_client(self) -> httpx.Client:
        return httpx.Client(base_url=self.web.url, timeout=30,
                            verify=client_ssl_context(self.paths.ca_cert))

    def device_client(self, name: str = "alice") -> httpx.Client:
        cert, key = self.paths.client(name)
        return httpx.Client(base_url=self.device.url, timeout=30, headers=HDR,
                            verify=client_ssl_context(self.paths.ca_cert, cert=cert, key=key))

    def start_run(self, **settings: Any) -> httpx.Response:
        return _start_run(self.web.url, self.paths.ca_cert, self.admin, **settings)


def _bearer(token: str) -> dict[str, str]:
    return {**HDR, "Authorization": f"Bearer {token}"}


def _start_run(web: str, ca: Path, admin: str, **settings: Any) -> httpx.Response:
    with httpx.Client(timeout=30, verify=client_ssl_context(ca)) as h:
        return h.post(f"{web}/v1/admin/runs", json={**RUN, **settings}, headers=_bearer(admin))


def _serve(paths: FederationPaths, tmp_path: Path, *, one_shot: bool = False) -> Iterator[Server]:
    store = CoordinatorStore(tmp_path / "server.db")
    factory = _run_factory(model="mlp", dataset="digits", seed=0, store=store,
                           defaults={"min_updates": 1, "round_timeout": 60.0,
                                     "strategy": "fedavg", "epochs": 5})
    state = ServerState(None, Revocations(paths.revoked).is_revoked, tick_seconds=0.05,
                        store=store, new_run=factory)
    if one_shot:
        state.new_run = _one_run(state, factory)
    tokens = TokenStore(tmp_path / "tokens.db")
    device = ServerThread(create_device_app(state),
                          ssl_context=server_ssl_context(paths, require_client_cert=True))
    web = ServerThread(create_web_app(state, tokens),
                       ssl_context=server_ssl_context(paths, require_client_cert=False))
    with store, device, web:
        yield Server(paths, device, web, state, store, tokens.create("admin", label="ops"),
                     tokens.create("client"))


@pytest.fixture()
def server(federation: FederationPaths, tmp_path: Path) -> Iterator[Server]:
    yield from _serve(federation, tmp_path)


class Clients:
    """Real Python clients (alice and bob), each running in a thread."""

    def __init__(self, device: str, paths: FederationPaths, data: list[ClientData]) -> None:
        self.clients: dict[str, FederatedClient] = {}
        for i, name in enumerate(("alice", "bob")):
            cert, key = paths.client(name)
            self.clients[name] = FederatedClient(device, ca=paths.ca_cert, cert=cert, key=key,
                                                 data=data[i], long_poll=2.0)
        self.reports: dict[str, ClientReport] = {}
        self.errors: dict[str, BaseException] = {}
        self.threads = [threading.Thread(target=self._run, args=(name,))
                        for name in self.clients]
        for t in self.threads:
            t.start()

    def _run(self, name: str) -> None:
        try:
            with self.clients[name] as c:
                self.reports[name] = c.run(max_seconds=30)
        except BaseException as exc:
            self.errors[name] = exc

    def enrolled(self) -> bool:
        return all(c.report.client_id for c in self.clients.values())

    def join(self) -> dict[str, ClientReport]:
        for t in self.threads:
            t.join(40)
        assert not self.errors, self.errors
        assert set(self.reports) == {"alice", "bob"}
        return self.reports


def _wait_until(predicate: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


# ---- an idle server -------------------------------------------------------------------------

def test_idle_server_answers_every_endpoint(server: Server) -> None:
    with server.device_client() as h:
        r = h.post("/v1/enrol")
        assert r.status_code == 200 and r.json() == {"client_id": "alice", "run": None}
        assert h.get("/v1/task").json() == {"action": "wait", "run": None, "retry_after": 1.0}
        t0 = time.monotonic()
        assert h.get("/v1/task", params={"wait": 0.3}).json()["action"] == "wait"
        assert time.monotonic() - t0 >= 0.3  # the long poll is honoured while idle
        r = h.get("/v1/model")
        assert r.status_code == 404 and r.json()["error"] == "no_run"
        r = h.post("/v1/update", content=b"x" * 64, headers={
            "X-Privml-Run": "r", "X-Privml-Round": "1", "X-Privml-Update-Id": "abcdefgh12",
            "X-Privml-Examples": "3", "Content-Type": "application/octet-stream"})
        assert r.status_code == 409 and r.json()["error"] == "no_run"
        report = {"run": "r", "round": 1, "num_examples": 3, "loss": 0.5, "accuracy": 0.5}
        r = h.post("/v1/evaluation", json=report)
        assert r.status_code == 409 and r.json()["error"] == "no_run"
        r = h.post("/v1/evaluation", json={**report, "accuracy": 2.0})
        assert r.status_code == 422 and r.json()["error"] == "bad_request"
        status = h.get("/v1/status").json()
    assert status["run"] is None and status["phase"] == "idle"
    with server.web_client() as h:
        assert h.get("/v1/status", headers=_bearer(server.client_token)).json() == status
        admin = h.get("/v1/admin/status", headers=_bearer(server.admin)).json()
        assert admin["run"] is None and admin["phase"] == "idle" and admin["config"] is None
        r = h.post("/v1/admin/stop", headers=_bearer(server.admin))  # nothing to stop
        assert r.status_code == 200
    # Refusals while idle still reach the security log, in memory and on disk.
    assert [e.code for e in server.state.security_log] == ["no_run"] * 3 + ["bad_request"]
    stored = server.store.security_events()
    assert len(stored) == 4 and {e["run_id"] for e in stored} == {None}
    assert server.state.current is None


# ---- runs one after another -----------------------------------------------------------------

def test_two_runs_one_after_another(server: Server, client_data: list[ClientData]) -> None:
    # The clients start while the server is idle: they enrol into nothing and wait.
    clients = Clients(server.device.url, server.paths, client_data)
    _wait_until(clients.enrolled)
    r = server.start_run()
    assert r.status_code == 201, r.text
    first = r.json()["run"]
    assert r.json()["config"]["rounds"] == 2 and r.json()["config"]["epochs"] == 1
    assert r.json()["config"]["eval_every"] == 0
    again = server.start_run()  # the first run is still going
    assert again.status_code == 409 and again.json()["error"] == "run_active"
    reports = clients.join()  # told "enrol" by the new run, they re-enrolled and trained
    assert {rep.run for rep in reports.values()} == {None}  # (what their first enrol said)
    coord = server.state.coordinator
    assert coord.run_id == first and coord.finished and len(coord.history) == 2
    assert sum(len(rep.rounds_trained) for rep in reports.values()) == 4

    r = server.start_run(seed=7)
    assert r.status_code == 201, r.text
    second = r.json()["run"]
    assert second != first and r.json()["config"]["seed"] == 7
    reports = Clients(server.device.url, server.paths, client_data).join()
    assert {rep.run for rep in reports.values()} == {second}
    assert server.state.coordinator.finished
    assert server.store.run_ids() == [first, second]
    assert [server.store.run(i).status for i in (first, second)] == ["finished", "finished"]
    assert [e.code for e in server.state.security_log] == ["run_active"]


def test_admin_stop_ends_the_run_and_clients_exit(server: Server,
                                                  client_data: list[ClientData]) -> None:
    r = server.start_run(rounds=50)
    assert r.status_code == 201, r.text
    run_id = r.json()["run"]
    clients = Clients(server.device.url, server.paths, client_data)
    _wait_until(lambda: len(server.state.coordinator.history) >= 1)
    with server.web_client() as h:
        r = h.post("/v1/admin/stop", headers=_bearer(server.admin))
        assert r.status_code == 200 and r.json() == {"stopping": True}
        reports = clients.join()  # told "done": they return, no errors
        assert all(rep.run == run_id for rep in reports.values())
        status = h.get("/v1/admin/status", headers=_bearer(server.admin)).json()
    assert server.store.run(run_id).status == "stopped"
    # Idle, but still showing the stopped run, until the next one starts.
    assert status["run"] == run_id and status["phase"] == "finished"
    assert status["finished"] is True and status["stop_requested"] is True
    assert len(server.state.coordinator.history) < 50
    r = server.start_run()
    assert r.status_code == 201 and r.json()["run"] != run_id
    assert not server.state.stop_requested.is_set()


def test_concurrent_starts_make_one_run(server: Server) -> None:
    answers: list[httpx.Response] = []
    threads = [threading.Thread(target=lambda: answers.append(server.start_run()))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(r.status_code for r in answers) == [201, 409, 409]
    assert {r.json()["error"] for r in answers if r.status_code == 409} == {"run_active"}
    assert len(server.store.run_ids()) == 1


@pytest.mark.parametrize("body, code, needle", [
    ({**RUN, "strategy": "nope"}, "invalid_config", "nope"),
    ({**RUN, "min_updates": 3}, "invalid_config", "min_updates"),
    ({**RUN, "rounds": 0}, "invalid_config", "rounds"),
    ({**RUN, "model": "resnet"}, "invalid_config", "resnet"),
    ({**RUN, "eval_every": -1}, "bad_request", "eval_every"),
    ({**RUN, "rounds": "2"}, "bad_request", "rounds"),
    ({**RUN, "epochs": 0}, "bad_request", "epochs"),
    ({**RUN, "learning_rate": 1.0}, "bad_request", "learning_rate"),
    ({"rounds": 2}, "bad_request", "clients_per_round"),
    ("not json", "bad_request", "malformed"),
])
def test_bad_run_settings_are_422(server: Server, body: Any, code: str, needle: str) -> None:
    with server.web_client() as h:
        kw: dict[str, Any] = {"content": body} if isinstance(body, str) else {"json": body}
        r = h.post("/v1/admin/runs", headers=_bearer(server.admin), **kw)
    assert r.status_code == 422, r.text
    assert r.json()["error"] == code and needle in r.json()["detail"]
    assert server.state.current is None and server.store.run_ids() == []
    assert server.state.security_log[-1].code == code
    assert server.store.security_events()[0]["code"] == code


def test_run_start_needs_an_admin_token(server: Server) -> None:
    with server.web_client() as h:
        r = h.post("/v1/admin/runs", json=RUN, headers=_bearer(server.client_token))
        assert r.status_code == 403 and r.json()["error"] == "forbidden"
        r = h.post("/v1/admin/runs", json=RUN, headers=HDR)
        assert r.status_code == 401 and r.json()["error"] == "unauthorized"
    with server.device_client() as h:  # a device certificate is no admin either
        r = h.post("/v1/admin/runs", json=RUN)
        assert r.status_code == 404
    assert server.state.current is None and server.store.run_ids() == []
    assert [e.code for e in server.state.security_log] == ["forbidden", "unauthorized"]


def test_one_shot_server_takes_one_run(federation: FederationPaths, tmp_path: Path) -> None:
    for server in _serve(federation, tmp_path, one_shot=True):
        assert server.start_run(model="bogus").status_code == 422  # a refusal uses nothing
        assert server.start_run().status_code == 201
        server.state.coordinator.stop()
        r = server.start_run()
        assert r.status_code == 409 and r.json()["error"] == "no_new_runs"


# ---- privml server in a subprocess ----------------------------------------------------------

def test_idle_cli_server_serves_runs_until_sigterm(tmp_path: Path,
                                                   client_data: list[ClientData]) -> None:
    paths = init_federation(tmp_path / "fed")
    for name in ("alice", "bob"):
        issue_client(paths.dir, name)
    admin = TokenStore(default_tokens_path(paths.dir)).create("admin")
    server = Proc(["server", "--federation", str(paths.dir), "--device-port", "0",
                   "--web-port", "0", "--model", "mlp"], log=tmp_path / "server.log")
    try:
        _serve_two_runs(server, paths, admin, client_data)
    finally:
        server.close()


def _serve_two_runs(server: Proc, paths: FederationPaths, admin: str,
                    client_data: list[ClientData]) -> None:
    device = server.wait_for(r"device port \(mTLS\): (https://\S+)", timeout=60).group(1)
    web = server.wait_for(r"web port \(tokens\): (https://\S+)").group(1)
    server.wait_for(r"^idle: ")
    with httpx.Client(verify=client_ssl_context(paths.ca_cert), timeout=10) as h:
        status = h.get(f"{web}/v1/admin/status", headers=_bearer(admin)).json()
        assert status["run"] is None and status["phase"] == "idle"
    r = _start_run(web, paths.ca_cert, admin)  # model logreg: overrides the server's --model
    assert r.status_code == 201, r.text
    first = r.json()["run"]
    assert server.wait_for(r"^run ([0-9a-f]{32})$").group(1) == first
    Clients(device, paths, client_data).join()
    server.wait_for(r"^round 2/2: completed, 2 updates$")
    model = server.wait_for(r"^finished after 2 rounds; model: (\S+)$").group(1)
    assert Path(model) == paths.dir / "runs" / first / "model.safetensors"
    from privml.models import load_model

    spec, _ = load_model(Path(model))
    assert spec.to_json() and server.p.poll() is None  # still serving

    second = _start_run(web, paths.ca_cert, admin, rounds=50).json()["run"]
    assert server.wait_for(r"^run ([0-9a-f]{32})$").group(1) == second
    with httpx.Client(verify=client_ssl_context(paths.ca_cert), timeout=10) as h:
        assert h.post(f"{web}/v1/admin/stop", headers=_bearer(admin)).status_code == 200
    server.wait_for(r"^stopped by an admin after 0 rounds; model: ")
    time.sleep(0.3)
    assert server.p.poll() is None  # idle again, not gone
    with CoordinatorStore(paths.dir / "server.db") as store:
        assert [store.run(i).status for i in (first, second)] == ["finished", "stopped"]
    server.p.terminate()  # SIGTERM while idle: a clean exit, nothing lost
    server.wait_for(r"^stopped serving")
    assert server.p.wait(30) == 0
