"""Federation certificates and TLS 1.3 contexts, checked over real TLS on 127.0.0.1.

The end-to-end tests run a real uvicorn server (with privml's TLS-aware h11 protocol) in a
background thread; handshake-level refusals are checked with raw ``ssl`` sockets, and the
reason a handshake fails is checked with an in-memory pair of ``SSLObject``s.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from privml import ConfigError, DataError
from privml.transport import (
    FederationPaths,
    Revocations,
    cert_fingerprint,
    client_id_of,
    client_ssl_context,
    init_federation,
    issue_client,
    list_clients,
    make_uvicorn_config,
    revoke_client,
    server_ssl_context,
)


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _der(path: Path) -> bytes:
    return _cert(path).public_bytes(serialization.Encoding.DER)


def _ext(cert: x509.Certificate, cls: type[Any]) -> x509.Extension[Any]:
    return cert.extensions.get_extension_for_class(cls)


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> FederationPaths:
    paths = init_federation(tmp_path_factory.mktemp("fed") / "federation",
                            hosts=["fl.example.org", "10.1.2.3", "fl.example.org"])
    for name in ("alice", "bob"):
        issue_client(paths.dir, name)
    return paths


@pytest.fixture(scope="module")
def other(tmp_path_factory: pytest.TempPathFactory) -> FederationPaths:
    """A second federation: its CA must mean nothing to the first one."""
    paths = init_federation(tmp_path_factory.mktemp("other") / "federation")
    issue_client(paths.dir, "alice")  # same name, different CA
    return paths


# ---- files and certificates ------------------------------------------------------------------

def test_init_writes_private_keys_and_proper_certificates(fed: FederationPaths) -> None:
    for key in (fed.ca_key, fed.server_key, fed.client("alice")[1]):
        assert key.stat().st_mode & 0o777 == 0o600, key
        assert b"PRIVATE KEY" in key.read_bytes()
    assert fed.dir.stat().st_mode & 0o077 == 0
    assert not list(fed.dir.rglob("*.tmp"))

    ca, server, alice = _cert(fed.ca_cert), _cert(fed.server_cert), _cert(fed.client("alice")[0])
    assert _ext(ca, x509.BasicConstraints).value == x509.BasicConstraints(ca=True, path_length=0)
    assert _ext(ca, x509.BasicConstraints).critical
    assert _ext(ca, x509.KeyUsage).value.key_cert_sign
    ca_years = (ca.not_valid_after_utc - ca.not_valid_before_utc).days / 365
    assert 4.9 < ca_years < 5.1

    ca_ski = _ext(ca, x509.SubjectKeyIdentifier).value.digest
    for leaf, purpose in ((server, ExtendedKeyUsageOID.SERVER_AUTH),
                          (alice, ExtendedKeyUsageOID.CLIENT_AUTH)):
        assert leaf.issuer == ca.subject
        assert _ext(leaf, x509.BasicConstraints).value.ca is False
        ku = _ext(leaf, x509.KeyUsage).value
        assert ku.digital_signature and not ku.key_cert_sign
        assert list(_ext(leaf, x509.ExtendedKeyUsage).value) == [purpose]
        assert _ext(leaf, x509.AuthorityKeyIdentifier).value.key_identifier == ca_ski
        assert _ext(leaf, x509.SubjectKeyIdentifier).value.digest != ca_ski
        assert 364 <= (leaf.not_valid_after_utc - leaf.not_valid_before_utc).days <= 366
        leaf.verify_directly_issued_by(ca)

    sans = _ext(server, x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost", "fl.example.org"]
    assert sans.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"),
        ipaddress.ip_address("10.1.2.3")]
    assert alice.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "alice"
    assert client_id_of(alice.public_bytes(serialization.Encoding.DER)) == "alice"
    assert json.loads(fed.revoked.read_text()) == {
        "format": "privml.revoked", "version": 1, "revoked": {}}


def test_init_refuses_an_existing_ca_unless_forced(tmp_path: Path) -> None:
    paths = init_federation(tmp_path / "f", days=30)
    issue_client(paths.dir, "carol")
    before = paths.ca_cert.read_bytes(), paths.ca_key.read_bytes()
    with pytest.raises(ConfigError, match="already holds a federation CA"):
        init_federation(paths.dir)
    assert (paths.ca_cert.read_bytes(), paths.ca_key.read_bytes()) == before
    assert 29 <= (_cert(paths.server_cert).not_valid_after_utc
                  - dt.datetime.now(dt.UTC)).days <= 30

    init_federation(paths.dir, force=True)
    assert paths.ca_cert.read_bytes() != before[0]
    assert list_clients(paths.dir) == []  # the old CA's clients went with it


@pytest.mark.parametrize("kwargs", [{"hosts": ["bad host"]}, {"hosts": ["-x.org"]},
                                    {"hosts": [""]}, {"days": 0}, {"days": -5}])
def test_init_rejects_bad_arguments_before_writing(tmp_path: Path, kwargs: Any) -> None:
    with pytest.raises(ConfigError):
        init_federation(tmp_path / "f", **kwargs)
    assert not (tmp_path / "f").exists()


@pytest.mark.parametrize("name", ["", "-lead", ".hidden", "a b", "../x", "x/y", "a" * 65,
                                  "é", "a\n"])
def test_client_names_are_validated(fed: FederationPaths, name: str) -> None:
    with pytest.raises(ConfigError, match="client name"):
        issue_client(fed.dir, name)
    with pytest.raises(ConfigError, match="client name"):
        revoke_client(fed.dir, name)


def test_issue_needs_a_ca_and_refuses_to_overwrite(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no federation CA"):
        issue_client(tmp_path / "nothing", "alice")
    paths = init_federation(tmp_path / "f")
    old_cert, _ = issue_client(paths.dir, "dave")
    old = _der(old_cert)
    with pytest.raises(ConfigError, match="already exists"):
        issue_client(paths.dir, "dave")
    assert _der(old_cert) == old

    issue_client(paths.dir, "dave", force=True)  # replacing revokes the old certificate
    assert _der(old_cert) != old
    assert Revocations(paths.revoked).is_revoked(cert_fingerprint(old))
    assert not Revocations(paths.revoked).is_revoked(cert_fingerprint(_der(old_cert)))


def test_revoke_and_list(tmp_path: Path) -> None:
    paths = init_federation(tmp_path / "f")
    for name in ("zed", "amy"):
        issue_client(paths.dir, name, days=10)
    listed = list_clients(paths.dir)
    assert [c.name for c in listed] == ["amy", "zed"] and not any(c.revoked for c in listed)
    assert listed[0].fingerprint == cert_fingerprint(_der(paths.client("amy")[0]))
    assert 9 <= (listed[0].not_after - dt.datetime.now(dt.UTC)).days <= 10

    fp = revoke_client(paths.dir, "amy")
    assert fp == listed[0].fingerprint
    assert revoke_client(paths.dir, "amy") == fp  # idempotent
    assert [(c.name, c.revoked) for c in list_clients(paths.dir)] == [("amy", True),
                                                                      ("zed", False)]
    entry = json.loads(paths.revoked.read_text())["revoked"][fp]
    assert entry["name"] == "amy" and dt.datetime.fromisoformat(entry["at"])
    with pytest.raises(ConfigError, match="no client 'nobody'"):
        revoke_client(paths.dir, "nobody")


def test_revocations_follow_the_file_without_restart(tmp_path: Path) -> None:
    paths = init_federation(tmp_path / "f")
    issue_client(paths.dir, "eve")
    fp = cert_fingerprint(_der(paths.client("eve")[0]))
    revs = Revocations(paths.revoked)
    assert not revs.is_revoked(fp)
    revoke_client(paths.dir, "eve")
    assert revs.is_revoked(fp) and revs.is_revoked(fp.upper())

    paths.revoked.unlink()  # a missing list revokes nothing
    assert not revs.is_revoked(fp)
    paths.revoked.write_text('{"format": "privml.revoked", "version": 2, "revoked": {}}')
    with pytest.raises(DataError):  # fail closed: a corrupt list is never read as empty
        revs.is_revoked(fp)
    paths.revoked.write_text("not json")
    with pytest.raises(DataError):
        Revocations(paths.revoked).is_revoked(fp)
    with pytest.raises(DataError):
        revoke_client(paths.dir, "eve")


def test_corrupt_files_are_data_errors(tmp_path: Path) -> None:
    paths = init_federation(tmp_path / "f")
    paths.ca_key.write_bytes(b"-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n")
    with pytest.raises(DataError, match="private key"):
        issue_client(paths.dir, "x")
    paths.server_key.write_bytes(b"garbage")
    with pytest.raises(DataError):
        server_ssl_context(paths, require_client_cert=False)
    paths.ca_cert.write_bytes(b"garbage")
    with pytest.raises(DataError):
        client_ssl_context(paths.ca_cert)
    with pytest.raises(DataError):
        client_id_of(b"garbage")


def test_context_misuse_is_a_config_error(fed: FederationPaths, tmp_path: Path) -> None:
    cert, _ = fed.client("alice")
    with pytest.raises(ConfigError, match="both"):
        client_ssl_context(fed.ca_cert, cert=cert)
    with pytest.raises(ConfigError):
        client_ssl_context(tmp_path / "missing.pem")
    with pytest.raises(ConfigError):
        server_ssl_context(FederationPaths.at(tmp_path), require_client_cert=True)
    lax = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)  # would accept TLS 1.2
    with pytest.raises(ConfigError, match=r"TLS 1\.3"):
        make_uvicorn_config(lambda: None, host="127.0.0.1", port=1, ssl_context=lax)
    strict = server_ssl_context(fed, require_client_cert=True)
    assert strict.minimum_version is strict.maximum_version is ssl.TLSVersion.TLSv1_3
    assert strict.verify_mode is ssl.CERT_REQUIRED
    assert server_ssl_context(fed, require_client_cert=False).verify_mode is ssl.CERT_NONE


# ---- handshakes in memory: why a connection is refused ---------------------------------------

def _handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> None:
    """Run a TLS handshake plus one byte each way between two in-memory SSLObjects."""
    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="127.0.0.1")
    done: set[str] = set()
    for _ in range(20):
        for name, obj, out, peer_in in (("c", client, c_out, s_in), ("s", server, s_out, c_in)):
            if name not in done:
                try:
                    obj.do_handshake()
                    obj.write(b"!")
                    done.add(name)
                except ssl.SSLWantReadError:
                    pass
                finally:
                    peer_in.write(out.read())
            else:
                try:  # TLS 1.3 reports a refused client certificate after the handshake
                    obj.read(1)
                except ssl.SSLWantReadError:
                    pass
                finally:
                    peer_in.write(out.read())
        if done == {"c", "s"} and not s_in.pending and not c_in.pending:
            return
    raise AssertionError("handshake did not settle")


def test_handshake_reasons(fed: FederationPaths, other: FederationPaths) -> None:
    device = server_ssl_context(fed, require_client_cert=True)
    cert, key = fed.client("alice")
    _handshake(device, client_ssl_context(fed.ca_cert, cert=cert, key=key))

    old = client_ssl_context(fed.ca_cert, cert=cert, key=key)
    old.minimum_version = ssl.TLSVersion.TLSv1_2
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError, match="UNSUPPORTED_PROTOCOL"):
        _handshake(device, old)
    with pytest.raises(ssl.SSLError, match="PEER_DID_NOT_RETURN_A_CERTIFICATE"):
        _handshake(device, client_ssl_context(fed.ca_cert))
    o_cert, o_key = other.client("alice")
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
        _handshake(device, client_ssl_context(fed.ca_cert, cert=o_cert, key=o_key))
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(device, client_ssl_context(other.ca_cert, cert=cert, key=key))
    # The web port asks for no certificate, but is just as strict about the version.
    web = server_ssl_context(fed, require_client_cert=False)
    _handshake(web, client_ssl_context(fed.ca_cert))
    with pytest.raises(ssl.SSLError, match="UNSUPPORTED_PROTOCOL"):
        _handshake(web, old)


# ---- a real uvicorn server on loopback --------------------------------------------------------

@dataclass
class Live:
    device: int  # mTLS port
    web: int  # no client certificate


@contextmanager
def _serve(app: Any, ctx: ssl.SSLContext) -> Iterator[int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))  # port 0: the OS picks a free one, no race with other tests
    port = int(sock.getsockname()[1])
    config = make_uvicorn_config(app, host="127.0.0.1", port=port, ssl_context=ctx,
                                 log_config=None, log_level="critical", lifespan="off")
    server = uvicorn.Server(config)  # signal handlers are only installed in the main thread
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
        assert not thread.is_alive()


def _echo_app(revocations: Revocations) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        tls = scope["extensions"]["tls"]
        der = tls["client_cert_der"]
        status, body = 200, {
            "cn": client_id_of(der) if der else None,
            "pem": tls["client_cert_chain"], "name": tls["client_cert_name"],
            "error": tls["client_cert_error"], "tls_version": tls["tls_version"],
            "cipher_suite": tls["cipher_suite"]}
        if der and revocations.is_revoked(cert_fingerprint(der)):
            status, body = 403, {"error": "cert_revoked"}
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": json.dumps(body).encode()})

    return app


@pytest.fixture(scope="module")
def live(fed: FederationPaths) -> Iterator[Live]:
    app = _echo_app(Revocations(fed.revoked))
    with (_serve(app, server_ssl_context(fed, require_client_cert=True)) as device,
          _serve(app, server_ssl_context(fed, require_client_cert=False)) as web):
        yield Live(device, web)


def _get(port: int, ctx: ssl.SSLContext, host: str = "127.0.0.1") -> httpx.Response:
    with httpx.Client(verify=ctx, timeout=5) as client:
        return client.get(f"https://{host}:{port}/")


def _connect(port: int, ctx: ssl.SSLContext, server_hostname: str = "127.0.0.1") -> None:
    """Handshake only, then close."""
    with (socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
          ctx.wrap_socket(raw, server_hostname=server_hostname)):
        pass


def _refused(port: int, ctx: ssl.SSLContext) -> None:
    """The server must not answer: a failed handshake, a reset or a bare close."""
    try:
        with (socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
              ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls):
            tls.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := tls.recv(65536):
                answer += chunk
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
        return
    assert answer == b"", answer[:80]


def test_mtls_client_gets_its_own_id_back(live: Live, fed: FederationPaths) -> None:
    cert, key = fed.client("alice")
    r = _get(live.device, client_ssl_context(fed.ca_cert, cert=cert, key=key))
    assert r.status_code == 200
    body = r.json()
    assert body["cn"] == "alice" and body["name"] == "CN=alice" and body["error"] is None
    assert [ssl.PEM_cert_to_DER_cert(p) for p in body["pem"]] == [_der(cert)]
    assert body["tls_version"] == 0x0304
    assert body["cipher_suite"] in {0x1301, 0x1302, 0x1303}


def test_web_port_serves_without_client_certificate(live: Live, fed: FederationPaths) -> None:
    body = _get(live.web, client_ssl_context(fed.ca_cert)).json()
    assert body["cn"] is None and body["pem"] == [] and body["tls_version"] == 0x0304


def test_revocation_takes_effect_without_restart(live: Live, fed: FederationPaths) -> None:
    cert, key = fed.client("bob")
    ctx = client_ssl_context(fed.ca_cert, cert=cert, key=key)
    with httpx.Client(verify=ctx, timeout=5) as client:
        assert client.get(f"https://127.0.0.1:{live.device}/").json()["cn"] == "bob"
        revoke_client(fed.dir, "bob")
        r = client.get(f"https://127.0.0.1:{live.device}/")  # same keep-alive connection
    assert r.status_code == 403 and r.json() == {"error": "cert_revoked"}


def test_client_without_certificate_is_refused(live: Live, fed: FederationPaths) -> None:
    _refused(live.device, client_ssl_context(fed.ca_cert))
    with pytest.raises(httpx.TransportError):
        _get(live.device, client_ssl_context(fed.ca_cert))


def test_client_certificate_from_another_ca_is_refused(live: Live, fed: FederationPaths,
                                                       other: FederationPaths) -> None:
    cert, key = other.client("alice")  # same CN, wrong CA
    _refused(live.device, client_ssl_context(fed.ca_cert, cert=cert, key=key))
    with pytest.raises(httpx.TransportError):
        _get(live.device, client_ssl_context(fed.ca_cert, cert=cert, key=key))


def test_client_not_trusting_the_federation_ca_fails(live: Live, fed: FederationPaths,
                                                     other: FederationPaths) -> None:
    cert, key = fed.client("alice")
    for port in (live.device, live.web):
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            _get(port, client_ssl_context(other.ca_cert, cert=cert, key=key))
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):  # names must match
        _connect(live.web, client_ssl_context(fed.ca_cert), server_hostname="evil.example")


@pytest.mark.parametrize("port_name", ["device", "web"])
def test_tls_1_2_is_refused(live: Live, fed: FederationPaths, port_name: str) -> None:
    cert, key = fed.client("alice")
    ctx = client_ssl_context(fed.ca_cert, cert=cert, key=key)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    port = getattr(live, port_name)
    with pytest.raises(ssl.SSLError):
        _connect(port, ctx)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3  # the same client, allowed 1.3, gets in
    assert _get(port, ctx).status_code == 200
