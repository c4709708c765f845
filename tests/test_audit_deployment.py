"""``privml audit deployment`` against real servers on loopback: the default ``privml
server`` has no high finding; a deliberately misconfigured one (TLS 1.2 allowed, client
certificates optional, an endpoint without auth, no size limit) is reported by id."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi import FastAPI, Request

from privml.audit import Severity
from privml.audit._deployment import audit_deployment
from privml.models import build_torch, zoo
from privml.train import get_params
from privml.transport._coordinator import Coordinator, RunConfig
from privml.transport._serve import ServerThread
from privml.transport._tokens import TokenStore, default_tokens_path
from privml.transport.server import ServerState, create_device_app
from privml.transport.tls import Revocations, init_federation, server_ssl_context
from tests.test_server_cli import Proc


@pytest.fixture()
def procs() -> list[Proc]:
    started: list[Proc] = []
    yield started
    for p in started:
        p.close()


def test_the_default_server_has_no_high_finding(tmp_path: Path, procs: list[Proc]) -> None:
    paths = init_federation(tmp_path / "fed")
    token = TokenStore(default_tokens_path(paths.dir)).create("client", label="auditor")
    server = Proc(["server", "--federation", str(paths.dir), "--device-port", "0",
                   "--web-port", "0", "--rounds", "1", "--clients-per-round", "1",
                   "--model", "logreg"], log=tmp_path / "server.log")
    procs.append(server)
    device = server.wait_for(r"device port \(mTLS\): (https://\S+)", timeout=60).group(1)
    web = server.wait_for(r"web port \(tokens\): (https://\S+)").group(1)
    report = audit_deployment(web, device_url=device, ca=paths.ca_cert, token=token)
    assert not report.failing(Severity.HIGH), report.to_dict()["findings"]
    assert not report.findings, report.to_dict()["findings"]  # not even a low one
    passed = " ".join(report.passed)
    for check in ("TLS 1.2 and older refused", "TLSv1.3", "certificate chain verifies",
                  "without a client certificate are refused", "refuses requests without "
                  "credentials", "security headers", "request-size limit enforced",
                  "plain HTTP gets no answer", "SANs name the host"):
        assert check in passed, check
    # The CLI: the same audit, its JSON and SARIF, exit code 0.
    done = subprocess.run(
        [sys.executable, "-m", "privml", "audit", "deployment", "--url", web, "--device-url",
         device, "--ca", str(paths.ca_cert), "--json", str(tmp_path / "a.json"), "--sarif",
         str(tmp_path / "a.sarif"), "--fail-on", "low"], capture_output=True, text=True,
        env={"PRIVML_AUDIT_TOKEN": token, "PATH": "/usr/bin:/bin", "COLUMNS": "200"},
        timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads((tmp_path / "a.json").read_text())["findings"] == []
    sarif = json.loads((tmp_path / "a.sarif").read_text())
    assert sarif["version"] == "2.1.0" and sarif["runs"][0]["results"] == []


def _misconfigured_web() -> FastAPI:
    app = FastAPI()

    @app.get("/v1/status")
    async def status() -> dict[str, str]:  # no authentication at all
        return {"phase": "training"}

    @app.post("/v1/update")
    async def update(request: Request) -> dict[str, int]:  # reads any body, no limit
        return {"size": len(await request.body())}

    return app


def test_a_misconfigured_server_is_reported_by_id(tmp_path: Path) -> None:
    paths = init_federation(tmp_path / "fed")
    old_tls = server_ssl_context(paths, require_client_cert=False)
    optional = server_ssl_context(paths, require_client_cert=True)
    spec = zoo("logreg", input_shape=(64,), num_classes=10)
    coord = Coordinator(RunConfig(rounds=1, clients_per_round=1), run_id="bad",
                        model_spec_json=spec.to_json(), initial=get_params(build_torch(spec)))
    state = ServerState(coord, Revocations(paths.revoked).is_revoked)
    web = ServerThread(_misconfigured_web(), ssl_context=old_tls)
    device = ServerThread(create_device_app(state), ssl_context=optional)
    # privml's server refuses such contexts when it is built; forced here, after the check.
    old_tls.minimum_version = ssl.TLSVersion.TLSv1_2  # TLS 1.2 allowed
    optional.verify_mode = ssl.CERT_OPTIONAL  # client certificates optional
    with web, device:
        report = audit_deployment(web.url, device_url=device.url, ca=paths.ca_cert,
                                  timeout=3.0)
    ids = {f.id: f for f in report.findings}
    assert ids["PMA-TLS-001"].severity is Severity.HIGH and "TLSv1.2" in \
        ids["PMA-TLS-001"].evidence
    assert ids["PMA-AUTH-001"].severity is Severity.CRITICAL
    assert ids["PMA-AUTH-001"].target == device.url
    assert "GET /v1/status: 200" in ids["PMA-AUTH-002"].evidence
    assert ids["PMA-SIZE-001"].severity is Severity.HIGH
    assert {"PMA-HDR-001", "PMA-HDR-002"} <= set(ids)  # no HSTS, no CSP either
    assert "PMA-TLS-003" not in ids  # its certificate is fine: only what is wrong is reported
    from privml.audit._output import to_html, to_sarif

    sarif = json.loads(to_sarif(report))
    rules = {r["id"] for r in sarif["runs"][0]["tool"]["driver"]["rules"]}
    assert {"PMA-TLS-001", "PMA-AUTH-001", "PMA-AUTH-002", "PMA-SIZE-001"} <= rules
    assert {r["level"] for r in sarif["runs"][0]["results"]} >= {"error", "warning"}
    page = to_html(report)
    assert "PMA-AUTH-001" in page and "http://" not in page and "<script" not in page


def test_plaintext_port_is_reported(tmp_path: Path) -> None:
    import http.server
    import threading

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        report = audit_deployment(f"https://127.0.0.1:{server.server_address[1]}",
                                  timeout=3.0)
    finally:
        server.shutdown()
        server.server_close()
    assert [f.id for f in report.findings] == ["PMA-TLS-007"]
