"""The coordinator over real TLS 1.3 on loopback: mutual TLS, refusals, a federation."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from privml import params as pm
from privml.data import ClientData, load_dataset, partition
from privml.models import build_torch, zoo
from privml.train import get_params
from privml.transport._coordinator import Coordinator, RunConfig
from privml.transport._serve import ServerThread
from privml.transport.client import FederatedClient
from privml.transport.server import ServerState, create_device_app
from privml.transport.tls import (
    FederationPaths,
    Revocations,
    client_ssl_context,
    init_federation,
    issue_client,
    revoke_client,
    server_ssl_context,
)

HDR = {"X-Privml-Protocol": "1"}


@dataclass
class Fed:
    paths: FederationPaths
    server: ServerThread
    state: ServerState

    def http(self, name: str) -> httpx.Client:
        cert, key = self.paths.client(name)
        return httpx.Client(base_url=self.server.url, timeout=30,
                            verify=client_ssl_context(self.paths.ca_cert, cert=cert, key=key))


@pytest.fixture(scope="module")
def federation_dir(tmp_path_factory: pytest.TempPathFactory) -> FederationPaths:
    paths = init_federation(tmp_path_factory.mktemp("fed") / "federation")
    for name in ("alice", "bob", "carol", "mallory"):
        issue_client(paths.dir, name)
    return paths


def _serve(paths: FederationPaths, **run: object) -> Iterator[Fed]:
    ds = load_dataset("digits", seed=0)
    spec = zoo("logreg", input_shape=ds.input_shape, num_classes=10)
    coord = Coordinator(RunConfig(**{"rounds": 2, "clients_per_round": 2, "epochs": 1,
                                     "round_timeout": 3.0, **run}),
                        run_id="run-test", model_spec_json=spec.to_json(),
                        initial=get_params(build_torch(spec)))
    state = ServerState(coord, Revocations(paths.revoked).is_revoked, max_body=64 * 1024,
                        tick_seconds=0.05)
    server = ServerThread(create_device_app(state),
                          ssl_context=server_ssl_context(paths, require_client_cert=True))
    with server:
        yield Fed(paths, server, state)


@pytest.fixture()
def fed(federation_dir: FederationPaths) -> Iterator[Fed]:
    yield from _serve(federation_dir)


def test_enrol_identifies_client_by_certificate(fed: Fed) -> None:
    with fed.http("alice") as h:
        r = h.post("/v1/enrol", headers=HDR)
        assert r.status_code == 200 and r.json() == {"client_id": "alice", "run": "run-test"}
        assert h.get("/v1/status", headers=HDR).json()["available"] == 1


def test_protocol_version_mismatch_is_426(fed: Fed) -> None:
    with fed.http("alice") as h:
        for headers in ({}, {"X-Privml-Protocol": "2"}):
            r = h.post("/v1/enrol", headers=headers)
            assert r.status_code == 426
            assert r.json()["error"] == "protocol_version"
            assert r.json()["supported"] == {"min": 1, "max": 1}


def test_model_etag_and_304(fed: Fed) -> None:
    with fed.http("bob") as h:
        r = h.get("/v1/model", headers=HDR)
        assert r.status_code == 200
        assert r.headers["etag"] == f'"{fed.state.coordinator.etag}"'
        assert pm.metadata(r.content)["run"] == "run-test"
        again = h.get("/v1/model", headers={**HDR, "If-None-Match": r.headers["etag"]})
        assert again.status_code == 304


def test_revocation_takes_effect_without_restart(federation_dir: FederationPaths) -> None:
    paths = init_federation(federation_dir.dir.parent / "fed2")
    issue_client(paths.dir, "eve")
    for f in _serve(paths):
        with f.http("eve") as h:
            assert h.post("/v1/enrol", headers=HDR).status_code == 200
            revoke_client(paths.dir, "eve")
        with f.http("eve") as h:  # a new connection: the certificate is now refused
            r = h.post("/v1/enrol", headers=HDR)
            assert r.status_code == 403 and r.json()["error"] == "cert_revoked"
        assert f.state.security_log[-1].code == "cert_revoked"


def _sampled_pair(fed: Fed) -> list[str]:
    for name in ("alice", "bob"):
        with fed.http(name) as h:
            h.post("/v1/enrol", headers=HDR)
    return list(fed.state.coordinator.machine.sampled)


def _update_headers(round_: int = 1, uid: str = "update-0001") -> dict[str, str]:
    return {**HDR, "X-Privml-Run": "run-test", "X-Privml-Round": str(round_),
            "X-Privml-Update-Id": uid, "X-Privml-Examples": "10"}


@pytest.mark.parametrize("body, headers, status, code", [
    (b"garbage" * 10, {}, 422, "invalid_params"),
    (b"x" * (65 * 1024), {}, 413, "too_large"),
    (None, {"X-Privml-Round": "2"}, 409, "protocol_error"),
    (None, {"X-Privml-Run": "other"}, 409, "wrong_run"),
    (None, {"X-Privml-Update-Id": "bad id!"}, 400, "bad_update_id"),
    (None, {"X-Privml-Examples": "many"}, 400, "bad_metadata"),
    (None, {"X-Privml-Metrics": "[1,2]"}, 400, "bad_metadata"),
])
def test_bad_updates_get_codes_and_change_nothing(fed: Fed, body: bytes | None,
                                                  headers: dict[str, str], status: int,
                                                  code: str) -> None:
    sampled = _sampled_pair(fed)
    coord = fed.state.coordinator
    zero = pm.encode(pm.zeros_like(coord.params))
    before = (coord.etag, coord.machine.accepted, len(coord._seen_ids))
    with fed.http(sampled[0]) as h:
        r = h.post("/v1/update", content=zero if body is None else body,
                   headers={**_update_headers(), **headers})
    assert r.status_code == status, r.text
    assert r.json()["error"] == code and r.json()["detail"]
    assert (coord.etag, coord.machine.accepted, len(coord._seen_ids)) == before
    assert fed.state.security_log[-1].code == code


def test_unsampled_client_refused(fed: Fed) -> None:
    sampled = _sampled_pair(fed)
    with fed.http("carol") as h:
        h.post("/v1/enrol", headers=HDR)
        r = h.post("/v1/update", content=b"", headers=_update_headers())
    assert "carol" not in sampled
    assert r.status_code == 403 and r.json()["error"] == "not_sampled"


def _client_data(index: int) -> ClientData:
    ds = load_dataset("digits", seed=0)
    parts = partition(ds.y_train, 3, alpha=None, rng=np.random.default_rng(0))
    return parts.clients(ds.x_train, ds.y_train)[index]


def test_federation_over_mtls_and_a_silent_client(fed: Fed) -> None:
    """Two real clients train; a third enrols and goes silent: rounds close at the deadline."""
    reports = {}

    def run(name: str, index: int) -> None:
        cert, key = fed.paths.client(name)
        with FederatedClient(fed.server.url, ca=fed.paths.ca_cert, cert=cert, key=key,
                             data=_client_data(index)) as c:
            reports[name] = c.run(max_seconds=120)

    with fed.http("carol") as h:  # carol enrols, may be sampled, never answers
        h.post("/v1/enrol", headers=HDR)
    threads = [threading.Thread(target=run, args=(n, i)) for i, n in enumerate(("alice", "bob"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    coord = fed.state.coordinator
    assert coord.finished and len(coord.history) == 2
    assert set(reports) == {"alice", "bob"}
    assert all(r.run == "run-test" for r in reports.values())
    trained = sum(len(r.rounds_trained) for r in reports.values())
    assert trained == sum(len(c.accepted) for c in coord.history)
    timed_out = [c for c in coord.history if c.timed_out]
    assert timed_out  # carol enrolled first, so round 1 sampled her
    for close in timed_out:
        assert close.timed_out == ("carol",)


@pytest.mark.parametrize("request_bytes", [
    b"GET /v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Privml-Protocol: 1\r\n\r\n",
    b"POST /v1/update HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nabcd",
])
def test_plain_http_gets_no_application_data(fed: Fed, request_bytes: bytes) -> None:
    """Plaintext to the TLS port: the answer, if any, is a TLS alert, never HTTP or JSON."""
    import socket

    with socket.create_connection(("127.0.0.1", fed.server.port), timeout=10) as s:
        s.sendall(request_bytes)
        received = b""
        try:
            while chunk := s.recv(4096):
                received += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    assert b"HTTP/" not in received and b"{" not in received
    assert received == b"" or received[0] == 0x15  # nothing, or a TLS alert record
    assert fed.state.coordinator.status()["available"] == 0


def test_storage_failure_is_503_and_counts_nothing(federation_dir: FederationPaths,
                                                  tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from privml._exceptions import DataError
    from privml.transport._store import CoordinatorStore

    ds = load_dataset("digits", seed=0)
    spec = zoo("logreg", input_shape=ds.input_shape, num_classes=10)
    store = CoordinatorStore(tmp_path / "server.db")
    coord = Coordinator(RunConfig(rounds=1, clients_per_round=1), run_id="run-store",
                        model_spec_json=spec.to_json(), initial=get_params(build_torch(spec)),
                        store=store)
    state = ServerState(coord, Revocations(federation_dir.revoked).is_revoked)
    with ServerThread(create_device_app(state), ssl_context=server_ssl_context(
            federation_dir, require_client_cert=True)) as srv:
        f = Fed(federation_dir, srv, state)

        def disk_full(*args: object, **kw: object) -> None:
            raise DataError("disk full")

        monkeypatch.setattr(store, "add_update", disk_full)
        with f.http("alice") as h:
            assert h.post("/v1/enrol", headers=HDR).status_code == 200
            r = h.post("/v1/update", content=pm.encode(pm.zeros_like(coord.params)),
                       headers={**_update_headers(), "X-Privml-Run": "run-store"})
            assert r.status_code == 503 and r.json()["error"] == "storage_unavailable"
            assert coord.machine.accepted == {} and not coord.history  # nothing counted
            coord._broken = DataError("test")  # a lost round-close write: all calls 503
            r = h.get("/v1/task", headers=HDR)
            assert r.status_code == 503 and r.json()["error"] == "storage_unavailable"
    store.close()


def _run_clients(fed: Fed, names: tuple[str, ...]) -> dict[str, object]:
    reports: dict[str, object] = {}

    def run(name: str, index: int) -> None:
        cert, key = fed.paths.client(name)
        with FederatedClient(fed.server.url, ca=fed.paths.ca_cert, cert=cert, key=key,
                             data=_client_data(index)) as c:
            reports[name] = c.run(max_seconds=120)

    threads = [threading.Thread(target=run, args=(n, i)) for i, n in enumerate(names)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    return reports


def test_example_level_dp_over_mtls(federation_dir: FederationPaths,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Clients run DP-SGD as the task says and send no (non-private) training loss; the
    coordinator charges each round to the ledger."""
    seen: list[dict[str, float]] = []
    from privml.transport import _coordinator

    real = _coordinator.Coordinator.submit

    def spy(self: Coordinator, client_id: str, meta: object, body: bytes,
            now: float) -> object:
        seen.append(dict(meta.metrics))  # type: ignore[attr-defined]
        return real(self, client_id, meta, body, now)  # type: ignore[arg-type]

    monkeypatch.setattr(_coordinator.Coordinator, "submit", spy)
    for f in _serve(federation_dir, noise_multiplier=1.0, dp_unit="example",
                    dp_sample_rate=0.1, clip_norm=1.0, round_timeout=20.0):
        reports = _run_clients(f, ("alice", "bob"))
        coord = f.state.coordinator
        assert coord.finished and all(c.accepted for c in coord.history)
        assert all(len(r.rounds_trained) == 2 for r in reports.values())  # type: ignore[attr-defined]
        assert seen and all("train_loss" not in m for m in seen)
        assert coord.privacy is not None and len(coord.privacy.dp.ledger) == 2
        assert coord.status()["privacy"]["steps_per_round"] == 10


def test_a_client_withholds_an_update_whose_dp_steps_differ_from_the_accounted(
        federation_dir: FederationPaths, monkeypatch: pytest.MonkeyPatch) -> None:
    from privml.transport._privacy import RunPrivacy

    real = RunPrivacy.train_options

    def lying(self: RunPrivacy) -> dict[str, object]:
        opts = real(self)
        opts["dp"]["steps"] -= 1  # type: ignore[index, operator]
        return opts

    monkeypatch.setattr(RunPrivacy, "train_options", lying)
    for f in _serve(federation_dir, noise_multiplier=1.0, dp_unit="example",
                    dp_sample_rate=0.5, clip_norm=1.0, round_timeout=2.0, rounds=1):
        reports = _run_clients(f, ("alice", "bob"))
        coord = f.state.coordinator
        assert coord.finished and not any(c.accepted for c in coord.history)
        for r in reports.values():
            assert r.refused == ["dp_steps_mismatch"]  # type: ignore[attr-defined]
