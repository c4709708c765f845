"""``privml audit deployment``: a running coordinator probed from the outside, live.

Theory of operation: every check is a real connection to the ports given — nothing is read
from the server's own configuration — so what is reported is what an attacker would see.
The web port (``--url``) and, when given, the device port (``--device-url``) are probed for:

    id            severity  finding
    PMA-TLS-001   high      a TLS 1.2 (or older) handshake succeeds
    PMA-TLS-002   medium    the negotiated cipher is not an AEAD suite of TLS 1.3
    PMA-TLS-003   high      the certificate chain does not verify (with --ca, else the system)
    PMA-TLS-004   high/med  the certificate has expired / expires within 30 days
    PMA-TLS-005   high      the server key is weak (RSA < 2048 bits, EC < 256 bits)
    PMA-TLS-006   high      the certificate's SANs do not name the host
    PMA-TLS-007   high      no TLS handshake at all (the port is not TLS)
    PMA-HTTP-001  high      plain HTTP gets an HTTP answer
    PMA-AUTH-001  critical  the device port serves a connection without a client certificate
    PMA-AUTH-002  high      an endpoint of the OpenAPI schema answers without credentials
    PMA-AUTH-003  high      an admin endpoint answers a client token (--token)
    PMA-AUTH-004  low       a check needing a credential could not run (give --token)
    PMA-HDR-001   medium    a web page lacks HSTS
    PMA-HDR-002   medium    a web page lacks a CSP, or its CSP allows inline script or eval
    PMA-HDR-003   high      CORS allows any origin (or echoes a foreign one)
    PMA-SIZE-001  high      a request body far over any sane limit is not refused (413)
    PMA-API-001   medium    a probe made the server fail (5xx)
    PMA-API-002   medium    the OpenAPI schema could not be read (so endpoints went unprobed)

Probes use a request with the protocol header and no credentials, so a refusal is for the
missing credential, not a missing header. Bodies sent to probe the size limit are declared
huge but only a few bytes are sent: a server that checks the declared length answers 413 at
once; one that does not waits for the rest, and the probe's timeout reports it.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from privml._exceptions import ConfigError
from privml.audit._findings import AuditReport, Finding, Severity

__all__ = ["audit_deployment"]

_HDR = "X-Privml-Protocol: 1\r\n"
_HUGE = 8 * 1024**3  # a declared body size no coordinator should ever wait for
_TIMEOUT = 10.0


def _split(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise ConfigError(f"give the coordinator as https://HOST:PORT, got {url!r}")
    return parts.hostname, parts.port or 443


def _context(ca: Path | None, *, verify: bool = True,
             maximum: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca) if ca else None)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if maximum is not None:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2  # (1.0/1.1: refused by OpenSSL 3 anyway)
        ctx.maximum_version = maximum
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # let an old handshake happen, to see it
    return ctx


class _Port:
    def __init__(self, url: str, ca: Path | None, report: AuditReport,
                 timeout: float = _TIMEOUT) -> None:
        self.timeout = timeout
        self.url = url.rstrip("/")
        self.host, self.port = _split(url)
        self.ca = ca
        self.report = report

    def finding(self, id_: str, severity: Severity, title: str, evidence: str,
                fix: str) -> None:
        self.report.add(Finding(id_, severity, title, evidence, fix, target=self.url))

    def connect(self, ctx: ssl.SSLContext) -> ssl.SSLSocket:
        raw = socket.create_connection((self.host, self.port), timeout=self.timeout)
        try:
            return ctx.wrap_socket(raw, server_hostname=self.host)
        except BaseException:
            raw.close()
            raise

    def request(self, method: str, path: str, *, headers: str = _HDR, body: bytes = b"",
                ctx: ssl.SSLContext | None = None) -> tuple[int, dict[str, str], bytes]:
        """One HTTP/1.1 request over a fresh TLS connection: (status, headers, body)."""
        sock = self.connect(ctx or _context(self.ca, verify=False))
        with sock:
            head = (f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\nConnection: close\r\n"
                    f"{headers}")
            if body or method in ("POST", "PUT"):
                head += f"Content-Length: {len(body)}\r\n" if "Content-Length" not in \
                    headers else ""
            sock.sendall(head.encode() + b"\r\n" + body)
            return _parse(_read_all(sock))


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except (TimeoutError, ssl.SSLError, ConnectionError):
        if not chunks:
            raise
    return b"".join(chunks)


def _parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if not lines or not lines[0].startswith("HTTP/"):
        raise ConnectionError("no HTTP answer")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def _check_tls(p: _Port) -> bool:
    """Handshake checks; False when there is no TLS at all (nothing else can run)."""
    try:
        sock = p.connect(_context(p.ca))
        verified = True
    except ssl.SSLCertVerificationError as exc:
        p.finding("PMA-TLS-003", Severity.HIGH, "the certificate chain does not verify",
                  str(exc.verify_message or exc), "serve a certificate issued by the "
                  "federation CA (privml certs init) and pass that CA with --ca")
        verified = False
        try:
            sock = p.connect(_context(p.ca, verify=False))
        except (OSError, ssl.SSLError) as exc2:
            p.finding("PMA-TLS-007", Severity.HIGH, "no TLS handshake", str(exc2),
                      "serve TLS 1.3 only on this port")
            return False
    except (OSError, ssl.SSLError) as exc:
        p.finding("PMA-TLS-007", Severity.HIGH, "no TLS handshake", f"{type(exc).__name__}: "
                  f"{exc}", "serve TLS 1.3 only on this port")
        return False
    with sock:
        version, cipher = sock.version(), sock.cipher()
        der = sock.getpeercert(binary_form=True)
    if verified:
        p.report.ok(f"{p.url}: certificate chain verifies")
    if version != "TLSv1.3" or cipher is None or not cipher[0].startswith("TLS_"):
        p.finding("PMA-TLS-002", Severity.MEDIUM, "not a TLS 1.3 AEAD cipher suite",
                  f"{version} {cipher}", "allow TLS 1.3 only")
    else:
        p.report.ok(f"{p.url}: {version} {cipher[0]}")
    if der:
        _check_certificate(p, der)
    try:
        old = p.connect(_context(p.ca, verify=False, maximum=ssl.TLSVersion.TLSv1_2))
    except (OSError, ssl.SSLError):
        p.report.ok(f"{p.url}: TLS 1.2 and older refused")
    else:
        with old:
            got = old.version()
        p.finding("PMA-TLS-001", Severity.HIGH, "an old TLS version is accepted",
                  f"a handshake capped at TLS 1.2 succeeded ({got})",
                  "set minimum_version = TLSv1_3 on the port's SSLContext")
    return True


def _check_certificate(p: _Port, der: bytes) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    cert = x509.load_der_x509_certificate(der)
    left = cert.not_valid_after_utc - dt.datetime.now(dt.UTC)
    if left.total_seconds() <= 0:
        p.finding("PMA-TLS-004", Severity.HIGH, "the certificate has expired",
                  f"not valid after {cert.not_valid_after_utc:%Y-%m-%d}", "renew it")
    elif left.days < 30:
        p.finding("PMA-TLS-004", Severity.MEDIUM, "the certificate expires soon",
                  f"{left.days} days left", "renew it")
    else:
        p.report.ok(f"{p.url}: certificate valid for {left.days} more days")
    key = cert.public_key()
    weak = ((isinstance(key, rsa.RSAPublicKey) and key.key_size < 2048)
            or (isinstance(key, ec.EllipticCurvePublicKey) and key.curve.key_size < 256))
    if weak:
        p.finding("PMA-TLS-005", Severity.HIGH, "weak server key",
                  f"{type(key).__name__} of {getattr(key, 'key_size', '?')} bits",
                  "use EC P-256 or better, or RSA >= 3072")
    else:
        p.report.ok(f"{p.url}: server key strength")
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [*san.get_values_for_type(x509.DNSName),
                 *(str(a) for a in san.get_values_for_type(x509.IPAddress))]
    except x509.ExtensionNotFound:
        names = []
    if not _host_matches(p.host, names):
        p.finding("PMA-TLS-006", Severity.HIGH, "the certificate does not name this host",
                  f"host {p.host}; SANs {names}", "issue it with the host in its SANs")
    else:
        p.report.ok(f"{p.url}: SANs name the host")


def _host_matches(host: str, names: list[str]) -> bool:
    try:
        ip = ipaddress.ip_address(host)
        return any(n == str(ip) for n in names)
    except ValueError:
        return any(n.lower() == host.lower() or (n.startswith("*.") and host.lower().endswith(
            n[1:].lower()) and host.count(".") == n.count(".")) for n in names)


def _check_plaintext(p: _Port) -> None:
    try:
        with socket.create_connection((p.host, p.port), timeout=p.timeout) as raw:
            raw.sendall(f"GET / HTTP/1.1\r\nHost: {p.host}\r\n\r\n".encode())
            answer = raw.recv(64)
    except OSError:
        answer = b""
    if answer.startswith(b"HTTP/"):
        p.finding("PMA-HTTP-001", Severity.HIGH, "plain HTTP is answered",
                  answer.split(b"\r\n", 1)[0].decode("latin-1"), "serve TLS only")
    else:
        p.report.ok(f"{p.url}: plain HTTP gets no answer")


def _check_device(p: _Port) -> None:
    try:
        status, _, _ = p.request("GET", "/v1/status")
    except (OSError, ssl.SSLError, ConnectionError):
        p.report.ok(f"{p.url}: connections without a client certificate are refused")
        return
    p.finding("PMA-AUTH-001", Severity.CRITICAL, "the device port serves connections "
              "without a client certificate", f"GET /v1/status without a certificate: "
              f"{status}", "require client certificates (CERT_REQUIRED) with the "
              "federation CA on the device port")


def _schema(p: _Port) -> dict[str, Any] | None:
    import json

    try:
        status, _, body = p.request("GET", "/openapi.json")
        if status == 200:
            schema: dict[str, Any] = json.loads(body)
            return schema
        evidence = f"GET /openapi.json: {status}"
    except (OSError, ssl.SSLError, ConnectionError, ValueError) as exc:
        evidence = f"GET /openapi.json: {exc}"
    p.finding("PMA-API-002", Severity.MEDIUM, "the OpenAPI schema could not be read",
              evidence, "serve /openapi.json so every endpoint can be probed")
    return None


def _fill(path: str) -> str:
    import re

    return re.sub(r"\{[^}]+\}", "probe", path)


def _check_endpoints(p: _Port, schema: dict[str, Any], token: str | None) -> None:
    open_ = []
    for path, ops in sorted(schema.get("paths", {}).items()):
        for method in sorted(m.upper() for m in ops if m in ("get", "post", "put", "delete",
                                                             "patch")):
            if path == "/openapi.json":
                continue
            url = _fill(path) + ("?round=1" if "secagg" in path else "")
            try:
                status, _, _ = p.request(method, url)
            except (OSError, ssl.SSLError, ConnectionError) as exc:
                status = -1
                p.report.ok(f"{p.url}: {method} {path} closed without credentials ({exc})")
            if 200 <= status < 400:
                open_.append(f"{method} {path}: {status}")
            elif status >= 500:
                p.finding("PMA-API-001", Severity.MEDIUM, "a probe made the server fail",
                          f"{method} {path} without credentials: {status}",
                          "refuse unauthenticated requests before any work")
            if token and path.startswith("/v1/admin/"):
                status, _, _ = p.request(method, url, headers=_HDR + f"Authorization: "
                                         f"Bearer {token}\r\n")
                if 200 <= status < 400:
                    p.finding("PMA-AUTH-003", Severity.HIGH, "an admin endpoint answers a "
                              "client token", f"{method} {path}: {status}",
                              "check the token's kind on every admin endpoint")
    if open_:
        p.finding("PMA-AUTH-002", Severity.HIGH, "endpoints answer without credentials",
                  "; ".join(open_), "require a token (web) or client certificate (device) "
                  "on every endpoint")
    else:
        p.report.ok(f"{p.url}: every endpoint in the schema refuses requests without "
                    "credentials")
    if not token:
        p.finding("PMA-AUTH-004", Severity.LOW, "admin endpoints and the size limit were "
                  "not checked with a client token", "no --token given",
                  "pass a client token (privml tokens create) with --token")


def _check_headers(p: _Port) -> None:
    for path in ("/client", "/"):
        try:
            status, headers, _ = p.request(
                "GET", path, headers=_HDR + "Origin: https://audit.invalid\r\n")
        except (OSError, ssl.SSLError, ConnectionError):
            continue
        if status >= 400 and path == "/client":
            continue
        what = f"GET {path}: {status}"
        if "strict-transport-security" not in headers:
            p.finding("PMA-HDR-001", Severity.MEDIUM, "no HSTS header", what,
                      "send Strict-Transport-Security on every answer")
        csp = headers.get("content-security-policy", "")
        unsafe = "unsafe-inline" in csp or "'unsafe-eval'" in csp
        if not csp or unsafe:
            p.finding("PMA-HDR-002", Severity.MEDIUM, "missing or permissive CSP",
                      f"{what}: {csp or 'no CSP'}", "script-src 'self' (plus "
                      "'wasm-unsafe-eval' for TF.js wasm) and nothing wider")
        acao = headers.get("access-control-allow-origin")
        if acao in ("*", "https://audit.invalid"):
            p.finding("PMA-HDR-003", Severity.HIGH, "CORS allows foreign origins",
                      f"{what}: Access-Control-Allow-Origin: {acao}",
                      "send no CORS headers: the pages are same-origin")
        if "strict-transport-security" in headers and csp and not unsafe and not acao:
            p.report.ok(f"{p.url}: security headers on {path}")
        return


def _check_size(p: _Port, schema: dict[str, Any] | None, token: str | None,
                device: bool) -> None:
    paths = [path for path, ops in (schema or {}).get("paths", {}).items() if "post" in ops]
    path = "/v1/update" if "/v1/update" in paths or not paths else sorted(paths)[0]
    auth = f"Authorization: Bearer {token}\r\n" if token and not device else ""
    headers = _HDR + auth + f"Content-Length: {_HUGE}\r\nContent-Type: " \
        "application/octet-stream\r\n"
    try:
        status, _, _ = p.request("POST", path, headers=headers, body=b"\0" * 1024)
    except (TimeoutError, ConnectionError, OSError, ssl.SSLError) as exc:
        p.finding("PMA-SIZE-001", Severity.HIGH, "no request-size limit",
                  f"POST {path} declaring {_HUGE} bytes: no refusal ({type(exc).__name__})",
                  "refuse bodies over a limit (413) from the declared length")
        return
    if status == 413:
        p.report.ok(f"{p.url}: request-size limit enforced (413)")
    elif status in (401, 403, 426):
        if not token:
            return  # refused for want of a credential: PMA-AUTH-004 already says so
        p.finding("PMA-AUTH-004", Severity.LOW, "the size limit could not be checked",
                  f"POST {path} with the token: {status}", "pass a valid client token")
    else:
        p.finding("PMA-SIZE-001", Severity.HIGH, "no request-size limit",
                  f"POST {path} declaring {_HUGE} bytes answered {status}, not 413",
                  "refuse bodies over a limit (413) from the declared length")


def audit_deployment(url: str, *, device_url: str | None = None, ca: Path | None = None,
                     token: str | None = None, timeout: float = _TIMEOUT) -> AuditReport:
    """Probe the web port at ``url`` (and the device port at ``device_url``); ``timeout``:
    seconds each probe waits for an answer."""
    if ca is not None and not Path(ca).is_file():
        raise ConfigError(f"CA file {ca} does not exist")
    report = AuditReport("deployment", url)
    web = _Port(url, ca, report, timeout)
    if _check_tls(web):
        _check_plaintext(web)
        schema = _schema(web)
        if schema is not None:
            _check_endpoints(web, schema, token)
        _check_headers(web)
        _check_size(web, schema, token, device=False)
    if device_url is not None:
        device = _Port(device_url, ca, report, timeout)
        if _check_tls(device):
            _check_plaintext(device)
            _check_device(device)
    return report
