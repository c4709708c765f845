"""The web port over real TLS 1.3 on loopback: bearer tokens only, and each port refuses the
other's credentials. Also the token store on its own (hashes only, expiry, revocation)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from privml._exceptions import ConfigError, RequestError
from privml.models import build_torch, zoo
from privml.train import get_params
from privml.transport._coordinator import Coordinator, RunConfig
from privml.transport._serve import ServerThread
from privml.transport._tokens import TokenStore, default_tokens_path
from privml.transport._webapp import create_web_app
from privml.transport.server import ServerState, create_device_app
from privml.transport.tls import (
    FederationPaths,
    Revocations,
    client_ssl_context,
    init_federation,
    issue_client,
    server_ssl_context,
)

HDR = {"X-Privml-Protocol": "1"}


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Ports:
    paths: FederationPaths
    device: ServerThread
    web: ServerThread
    state: ServerState
    tokens: TokenStore
    clock: Clock

    def web_client(self, *, cert: bool = False) -> httpx.Client:
        pair = self.paths.client("alice") if cert else (None, None)
        ctx = client_ssl_context(self.paths.ca_cert, cert=pair[0], key=pair[1])
        return httpx.Client(base_url=self.web.url, timeout=30, verify=ctx)

    def device_client(self) -> httpx.Client:
        cert, key = self.paths.client("alice")
        return httpx.Client(base_url=self.device.url, timeout=30,
                            verify=client_ssl_context(self.paths.ca_cert, cert=cert, key=key))


@pytest.fixture(scope="module")
def ports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ports]:
    paths = init_federation(tmp_path_factory.mktemp("web") / "federation")
    issue_client(paths.dir, "alice")
    spec = zoo("logreg", input_shape=(64,), num_classes=10)
    coord = Coordinator(RunConfig(rounds=2, clients_per_round=2, epochs=1),
                        run_id="run-web", model_spec_json=spec.to_json(),
                        initial=get_params(build_torch(spec)))
    state = ServerState(coord, Revocations(paths.revoked).is_revoked, tick_seconds=0.05)
    clock = Clock()
    tokens = TokenStore(default_tokens_path(paths.dir), clock=clock)
    device = ServerThread(create_device_app(state),
                          ssl_context=server_ssl_context(paths, require_client_cert=True))
    web = ServerThread(create_web_app(state, tokens),
                       ssl_context=server_ssl_context(paths, require_client_cert=False))
    with device, web:
        yield Ports(paths, device, web, state, tokens, clock)


def _bearer(token: str) -> dict[str, str]:
    return {**HDR, "Authorization": f"Bearer {token}"}


def _assert_unauthorized(r: httpx.Response) -> None:
    assert r.status_code == 401, r.text
    assert r.json()["error"] == "unauthorized"


def test_client_token_reads_status(ports: Ports) -> None:
    token = ports.tokens.create("client", label="browser-1")
    assert token.startswith("pmt_")
    with ports.web_client() as h:
        r = h.get("/v1/status", headers=_bearer(token))
    assert r.status_code == 200 and r.json()["run"] == "run-web"


def test_no_token_is_401_and_logged(ports: Ports) -> None:
    with ports.web_client() as h:
        _assert_unauthorized(h.get("/v1/status", headers=HDR))
        for bad in ("Bearer", "Basic dXNlcjpwYXNz", "Token pmt_x", "Bearer -"):
            _assert_unauthorized(h.get("/v1/status", headers={**HDR, "Authorization": bad}))
    event = ports.state.security_log[-1]
    assert event.code == "unauthorized" and event.path == "/v1/status"
    assert event.client.startswith("web ")


def test_protocol_header_checked_first(ports: Ports) -> None:
    token = ports.tokens.create("client")
    with ports.web_client() as h:
        r = h.get("/v1/status", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 426 and r.json()["error"] == "protocol_version"


def test_wrong_expired_and_revoked_tokens_are_401(ports: Ports) -> None:
    good = ports.tokens.create("client", label="soon-gone", ttl_seconds=60)
    expiring = ports.tokens.create("client", label="short", ttl_seconds=10)
    forged = "pmt_" + "A" * 43
    tampered = good[:-1] + ("B" if good[-1] != "B" else "C")
    with ports.web_client() as h:
        for token in (forged, tampered, "pma_" + good[4:], good + "x", "x" * 300):
            _assert_unauthorized(h.get("/v1/status", headers=_bearer(token)))
        assert h.get("/v1/status", headers=_bearer(expiring)).status_code == 200
        ports.clock.now += 10
        _assert_unauthorized(h.get("/v1/status", headers=_bearer(expiring)))
        assert h.get("/v1/status", headers=_bearer(good)).status_code == 200
        ports.tokens.revoke("soon-gone")  # takes effect on the next request, no restart
        _assert_unauthorized(h.get("/v1/status", headers=_bearer(good)))
    ports.clock.now -= 10


def test_two_authorization_headers_are_refused(ports: Ports) -> None:
    token = ports.tokens.create("client")
    headers = [("X-Privml-Protocol", "1"), ("Authorization", f"Bearer {token}"),
               ("Authorization", f"Bearer {token}")]
    with ports.web_client() as h:
        _assert_unauthorized(h.get("/v1/status", headers=headers))


def test_token_in_query_string_is_not_a_credential(ports: Ports) -> None:
    token = ports.tokens.create("admin")
    with ports.web_client() as h:
        for name in ("token", "access_token", "authorization"):
            _assert_unauthorized(h.get("/v1/status", params={name: token}, headers=HDR))
            _assert_unauthorized(h.get("/v1/admin/status", params={name: token}, headers=HDR))
    assert not ports.state.stop_requested.is_set()


def test_client_token_cannot_use_admin_endpoints(ports: Ports) -> None:
    token = ports.tokens.create("client")
    with ports.web_client() as h:
        for method, path in (("GET", "/v1/admin/status"), ("POST", "/v1/admin/stop")):
            r = h.request(method, path, headers=_bearer(token))
            assert r.status_code == 403 and r.json()["error"] == "forbidden"
    assert not ports.state.stop_requested.is_set()
    assert ports.state.security_log[-1].code == "forbidden"


def test_admin_token_status_and_stop(ports: Ports) -> None:
    token = ports.tokens.create("admin", label="ops")
    assert token.startswith("pma_")
    with ports.web_client() as h:
        r = h.get("/v1/admin/status", headers=_bearer(token))
        assert r.status_code == 200
        body = r.json()
        assert body["run"] == "run-web" and body["config"]["rounds"] == 2
        assert body["stop_requested"] is False
        assert h.get("/v1/status", headers=_bearer(token)).status_code == 200
        r = h.post("/v1/admin/stop", headers=_bearer(token))
        assert r.status_code == 200 and r.json() == {"stopping": True}
        body = h.get("/v1/admin/status", headers=_bearer(token)).json()
    assert ports.state.stop_requested.is_set()
    # The stop ends the run itself (clients are told "done"), not only the server.
    assert ports.state.coordinator.finished
    assert body["phase"] == "finished" and body["stop_requested"] is True
    ports.state.stop_requested.clear()


def test_device_certificate_does_not_authenticate_on_web_port(ports: Ports) -> None:
    """The web port asks for no certificate: presenting one gives nothing without a token."""
    with ports.web_client(cert=True) as h:
        _assert_unauthorized(h.get("/v1/status", headers=HDR))
        _assert_unauthorized(h.get("/v1/admin/status", headers=HDR))


def test_device_port_refuses_bearer_tokens(ports: Ports) -> None:
    token = ports.tokens.create("admin")
    with ports.device_client() as h:
        for auth in (f"Bearer {token}", "Basic dXNlcjpwYXNz"):
            r = h.get("/v1/status", headers={**HDR, "Authorization": auth})
            assert r.status_code == 400 and r.json()["error"] == "wrong_port"
        assert h.get("/v1/status", headers=HDR).status_code == 200
    assert ports.state.security_log[-1].code == "wrong_port"


def test_openapi_on_both_ports_without_credentials(ports: Ports) -> None:
    with ports.web_client() as h:
        r = h.get("/openapi.json")
        assert r.status_code == 200
        schema = r.json()
        assert "/v1/admin/stop" in schema["paths"]
        assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
        assert h.get("/docs", headers=HDR).status_code == 401  # no CDN-backed page here
    with ports.device_client() as h:
        assert "/v1/update" in h.get("/openapi.json").json()["paths"]


# ---- the store on its own -------------------------------------------------------------------

def test_tokens_are_stored_only_as_hashes(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens.db")
    plain = [store.create("client", label="c"), store.create("admin", label="a")]
    secrets_ = [t[4:] for t in plain]
    with sqlite3.connect(tmp_path / "tokens.db") as db:
        dump = "\n".join(db.iterdump())
    for token, secret in zip(plain, secrets_, strict=True):
        assert token not in dump and secret not in dump
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert not any(s.encode() in raw for s in secrets_)
    assert (tmp_path / "tokens.db").stat().st_mode & 0o077 == 0


def test_store_checks_kind_ttl_labels_and_schema(tmp_path: Path) -> None:
    clock = Clock()
    store = TokenStore(tmp_path / "tokens.db", clock=clock)
    admin = store.create("admin", label="ops")
    client = store.create("client", label="web")
    assert store.verify(admin, "admin") == "ops" and store.verify(client, "client") == "web"
    for token, kind in ((admin, "client"), (client, "admin")):
        with pytest.raises(RequestError) as info:
            store.verify(token, kind)
        assert info.value.code == "unauthorized" and info.value.status == 401
    clock.now += 3600  # the client default is one hour; admin tokens outlive it
    with pytest.raises(RequestError):
        store.verify(client, "client")
    assert store.verify(admin, "admin") == "ops"
    infos = {t.label: t for t in store.list_tokens()}
    assert infos["web"].kind == "client" and not infos["web"].revoked
    for bad in ({"kind": "root"}, {"kind": "client", "ttl_seconds": 0},
                {"kind": "client", "label": "ops"}, {"kind": "client", "label": "bad label"}):
        with pytest.raises(ConfigError):
            store.create(**bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        store.revoke("nobody")
    with sqlite3.connect(tmp_path / "tokens.db") as db:
        db.execute("PRAGMA user_version = 99")
    from privml._exceptions import DataError

    with pytest.raises(DataError, match="newer"):
        TokenStore(tmp_path / "tokens.db")


def test_current_model_as_tfjs_per_version(ports: Ports) -> None:
    """The browser's model: model.json and weights.bin at a URL naming the model version;
    they decode back to the coordinator's parameters; another version is 404 stale_model."""
    import numpy as np

    from privml import params as pm
    from privml.models import ModelSpec, from_tfjs_weights

    token = ports.tokens.create("client")
    auth = {**HDR, "Authorization": f"Bearer {token}"}
    coord = ports.state.current
    assert coord is not None
    with ports.web_client() as h:
        base = f"/v1/tfjs/{coord.etag}"
        assert h.get(f"{base}/model.json", headers=HDR).status_code == 401
        model_json = h.get(f"{base}/model.json", headers=auth)
        weights = h.get(f"{base}/weights.bin", headers=auth)
        stale = h.get(f"/v1/tfjs/{'0' * 64}/model.json", headers=auth)
    assert model_json.status_code == 200 and weights.status_code == 200
    assert "immutable" in model_json.headers["cache-control"]
    manifest = model_json.json()["weightsManifest"][0]
    assert manifest["paths"] == ["weights.bin"]
    got = from_tfjs_weights(ModelSpec.from_json(coord.model_spec_json), manifest["weights"],
                            weights.content)
    want = pm.decode(coord.model_bytes)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])
    assert stale.status_code == 404 and stale.json()["error"] == "stale_model"
