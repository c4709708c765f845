"""A federation's own small PKI, and the TLS 1.3 contexts built from it.

Theory of operation: a federation folder is a certificate authority plus what it issued::

    DIR/ca.pem  ca.key             ECDSA P-256 CA (path length 0: it signs leaves only)
    DIR/server.pem  server.key     the coordinator (serverAuth; localhost, 127.0.0.1, ::1, hosts)
    DIR/clients/NAME.pem NAME.key  one per Python client (clientAuth; CN = NAME = client id)
    DIR/revoked.json               fingerprints the coordinator refuses

The device port verifies client certificates against ``ca.pem`` during the handshake; the
application then maps the verified certificate to a client id (its CN) and refuses revoked
fingerprints. Python's ``ssl`` has no CRL-less revocation hook, so revocation is an application
check (:class:`Revocations`) that re-reads ``revoked.json`` when it changes: effective without a
restart. Private keys are created 0600 from the first byte and land by atomic rename, so a crash
or a concurrent reader never sees a half-written or world-readable key.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import json
import os
import re
import secrets
import ssl
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from privml._exceptions import ConfigError, DataError

__all__ = ["ClientInfo", "FederationPaths", "Revocations", "cert_fingerprint", "client_id_of",
           "client_ssl_context", "init_federation", "issue_client", "list_clients",
           "revoke_client", "server_ssl_context"]

CA_DAYS = 5 * 365
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_LABEL_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_REVOKED_FORMAT, _REVOKED_VERSION = "privml.revoked", 1
# Certificates start a little in the past so a peer whose clock lags slightly accepts them.
_BACKDATE = dt.timedelta(minutes=5)
_DEFAULT_SANS: tuple[x509.GeneralName, ...] = (
    x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    x509.IPAddress(ipaddress.ip_address("::1")))


@dataclass(frozen=True, slots=True)
class FederationPaths:
    """Where each file of a federation folder lives; :meth:`at` builds it from the folder."""

    dir: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    revoked: Path

    @classmethod
    def at(cls, dir: str | os.PathLike[str]) -> FederationPaths:
        d = Path(dir)
        return cls(d, d / "ca.pem", d / "ca.key", d / "server.pem", d / "server.key",
                   d / "revoked.json")

    @property
    def clients_dir(self) -> Path:
        return self.dir / "clients"

    def client(self, name: str) -> tuple[Path, Path]:
        """``(cert, key)`` of client ``name``; ConfigError if the name is not a valid id."""
        _check_name(name)
        return self.clients_dir / f"{name}.pem", self.clients_dir / f"{name}.key"


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """One issued client certificate, as ``privml certs list`` shows it."""

    name: str
    fingerprint: str
    not_after: dt.datetime
    revoked: bool


# ---- files ---------------------------------------------------------------------------------

def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ConfigError(f"client name must match [A-Za-z0-9][A-Za-z0-9_.-]{{0,63}}, "
                          f"got {name!r}")


def _check_days(days: int) -> None:
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise ConfigError(f"days must be a whole number >= 1, got {days!r}")


def _mkdir_private(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{path} exists and is not a folder")
    path.mkdir(mode=0o700, parents=True, exist_ok=True)


def _atomic_write(path: Path, data: bytes, mode: int) -> None:
    # O_EXCL on a fresh random name: the file is born with `mode`, never wider, and an
    # attacker cannot pre-plant a link at the temporary name.
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _read_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except FileNotFoundError:
        raise ConfigError(f"certificate {path} does not exist") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read certificate {path}: {exc}") from None


def _read_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise ConfigError(f"key {path} does not exist") from None
    except (OSError, ValueError, TypeError, UnsupportedAlgorithm):
        # Never echo the exception: it could quote key material.
        raise DataError(f"cannot read private key {path}: not an unencrypted PEM key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise DataError(f"private key {path} is not an ECDSA key")
    return key


def _write_pair(cert_path: Path, key_path: Path, cert: x509.Certificate,
                key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    _atomic_write(key_path, pem, 0o600)
    _atomic_write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def _read_revoked(path: Path) -> dict[str, dict[str, str]]:
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read revocation list {path}: {exc}") from None
    if (not isinstance(doc, dict) or doc.get("format") != _REVOKED_FORMAT
            or doc.get("version") != _REVOKED_VERSION or not isinstance(doc.get("revoked"), dict)):
        raise DataError(f"{path} is not a {_REVOKED_FORMAT} version {_REVOKED_VERSION} file")
    revoked: dict[str, Any] = doc["revoked"]
    if not all(isinstance(k, str) and isinstance(v, dict) for k, v in revoked.items()):
        raise DataError(f"{path}: malformed revocation entries")
    return {k.lower(): v for k, v in revoked.items()}


def _write_revoked(path: Path, entries: dict[str, dict[str, str]]) -> None:
    doc = {"format": _REVOKED_FORMAT, "version": _REVOKED_VERSION, "revoked": entries}
    _atomic_write(path, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode(), 0o644)


# ---- certificates --------------------------------------------------------------------------

def _server_sans(hosts: Sequence[str]) -> list[x509.GeneralName]:
    sans = list(_DEFAULT_SANS)
    for raw in hosts:
        host = raw.strip() if isinstance(raw, str) else ""
        san: x509.GeneralName
        try:
            san = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            name = host.lower().rstrip(".")
            if not (name.isascii() and len(name) <= 253
                    and all(_LABEL_RE.fullmatch(label) for label in name.split("."))):
                raise ConfigError(f"host must be an IP address or a DNS name, got {raw!r}"
                                  ) from None
            san = x509.DNSName(name)
        if san not in sans:
            sans.append(san)
    return sans


def _sign(kind: Literal["ca", "server", "client"], cn: str, key: ec.EllipticCurvePrivateKey,
          not_after: dt.datetime, *, issuer: x509.Certificate | None = None,
          issuer_key: ec.EllipticCurvePrivateKey | None = None,
          sans: Sequence[x509.GeneralName] = ()) -> x509.Certificate:
    pub, signer = key.public_key(), issuer_key if issuer_key is not None else key
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    is_ca = kind == "ca"
    b = (x509.CertificateBuilder()
         .subject_name(name)
         .issuer_name(issuer.subject if issuer is not None else name)
         .public_key(pub)
         .serial_number(x509.random_serial_number())
         .not_valid_before(dt.datetime.now(dt.UTC) - _BACKDATE)
         .not_valid_after(not_after)
         .add_extension(x509.BasicConstraints(ca=is_ca, path_length=0 if is_ca else None),
                        critical=True)
         .add_extension(x509.KeyUsage(
             digital_signature=not is_ca, content_commitment=False, key_encipherment=False,
             data_encipherment=False, key_agreement=False, key_cert_sign=is_ca, crl_sign=is_ca,
             encipher_only=False, decipher_only=False), critical=True)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
             x509.SubjectKeyIdentifier.from_public_key(signer.public_key())), critical=False))
    if not is_ca:
        eku = (ExtendedKeyUsageOID.SERVER_AUTH if kind == "server"
               else ExtendedKeyUsageOID.CLIENT_AUTH)
        b = b.add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return b.sign(signer, hashes.SHA256())


def _leaf_expiry(days: int, ca: x509.Certificate) -> dt.datetime:
    # A leaf cannot usefully outlive its CA: cap it rather than issue a cert that lies.
    return min(dt.datetime.now(dt.UTC) + dt.timedelta(days=days), ca.not_valid_after_utc)


def _require_ca(paths: FederationPaths, *, key: bool) -> None:
    if not (paths.ca_cert.is_file() and (paths.ca_key.is_file() or not key)):
        raise ConfigError(f"no federation CA in {paths.dir}: run `privml certs init "
                          f"{paths.dir}` first")


def _load_ca(paths: FederationPaths) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    _require_ca(paths, key=True)
    return _read_cert(paths.ca_cert), _read_key(paths.ca_key)


def init_federation(dir: str | os.PathLike[str], *, hosts: Sequence[str] = (), days: int = 365,
                    force: bool = False) -> FederationPaths:
    """Create a CA, a server certificate and an empty revocation list in ``dir``.

    ``force=True`` replaces an existing CA; every client certificate of the old CA is deleted,
    since the new CA would refuse them anyway.
    """
    paths = FederationPaths.at(dir)
    _check_days(days)
    sans = _server_sans(hosts)  # validate everything before touching the disk
    if not force and (paths.ca_cert.exists() or paths.ca_key.exists()):
        raise ConfigError(f"{paths.dir} already holds a federation CA; use --force to replace "
                          "it (every certificate it issued stops working)")
    _mkdir_private(paths.dir)
    _mkdir_private(paths.clients_dir)
    if force:
        for old in [*paths.clients_dir.glob("*.pem"), *paths.clients_dir.glob("*.key")]:
            old.unlink()
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cn = f"privml federation CA {secrets.token_hex(4)}"  # tells two federations apart
    ca = _sign("ca", ca_cn, ca_key, dt.datetime.now(dt.UTC) + dt.timedelta(days=CA_DAYS))
    _write_pair(paths.ca_cert, paths.ca_key, ca, ca_key)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _sign("server", "privml server", server_key, _leaf_expiry(days, ca), issuer=ca,
                   issuer_key=ca_key, sans=sans)
    _write_pair(paths.server_cert, paths.server_key, server, server_key)
    _write_revoked(paths.revoked, {})
    return paths


def issue_client(dir: str | os.PathLike[str], name: str, *, days: int = 365,
                 force: bool = False) -> tuple[Path, Path]:
    """Issue a client certificate with CN ``name``; returns ``(cert, key)``.

    Refuses an existing client unless ``force=True``, which first revokes the old certificate:
    a replaced certificate must not keep working.
    """
    paths = FederationPaths.at(dir)
    cert_path, key_path = paths.client(name)
    _check_days(days)
    ca, ca_key = _load_ca(paths)
    if cert_path.exists() or key_path.exists():
        if not force:
            raise ConfigError(f"client {name!r} already exists in {paths.clients_dir}; "
                              "revoke it and use --force to issue a new one")
        if cert_path.exists():
            _revoke(paths, name, cert_path)
    _mkdir_private(paths.clients_dir)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _sign("client", name, key, _leaf_expiry(days, ca), issuer=ca, issuer_key=ca_key)
    _write_pair(cert_path, key_path, cert, key)
    return cert_path, key_path


def _revoke(paths: FederationPaths, name: str, cert_path: Path) -> str:
    fingerprint = cert_fingerprint(_read_cert(cert_path).public_bytes(serialization.Encoding.DER))
    entries = _read_revoked(paths.revoked)
    if fingerprint not in entries:  # revoking twice keeps the first date
        entries[fingerprint] = {"name": name,
                                "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
        _write_revoked(paths.revoked, entries)
    return fingerprint


def revoke_client(dir: str | os.PathLike[str], name: str) -> str:
    """Add client ``name``'s certificate to ``revoked.json``; returns its fingerprint."""
    paths = FederationPaths.at(dir)
    cert_path, _ = paths.client(name)
    if not cert_path.is_file():
        raise ConfigError(f"no client {name!r} in {paths.clients_dir}")
    return _revoke(paths, name, cert_path)


def list_clients(dir: str | os.PathLike[str]) -> list[ClientInfo]:
    """Every issued client certificate, sorted by name, with its revocation status."""
    paths = FederationPaths.at(dir)
    _require_ca(paths, key=False)
    revoked = _read_revoked(paths.revoked)
    infos = []
    for pem in sorted(paths.clients_dir.glob("*.pem")):
        cert = _read_cert(pem)
        fp = cert_fingerprint(cert.public_bytes(serialization.Encoding.DER))
        infos.append(ClientInfo(pem.stem, fp, cert.not_valid_after_utc, fp in revoked))
    return infos


def cert_fingerprint(der: bytes) -> str:
    """SHA-256 of a DER certificate, lowercase hex: the key of ``revoked.json``."""
    return hashlib.sha256(der).hexdigest()


def client_id_of(der: bytes) -> str:
    """The client id (the single CN) of a DER certificate; DataError if it has none."""
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        raise DataError("not a DER X.509 certificate") from None
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = cns[0].value if len(cns) == 1 else None
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value):
        raise DataError(f"certificate subject {cert.subject.rfc4514_string()!r} has no valid "
                        "client id")
    return value


class Revocations:
    """The fingerprints in ``revoked.json``, re-read whenever the file changes.

    A missing file means nothing is revoked; a corrupt one raises DataError on every check, so
    a server fails closed rather than silently forgetting revocations.
    """

    _NEVER: tuple[int, int, int] = (-1, -1, -1)

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = self._NEVER
        self._revoked: frozenset[str] = frozenset()

    def is_revoked(self, fingerprint: str) -> bool:
        return fingerprint.lower() in self._current()

    def _current(self) -> frozenset[str]:
        try:
            st = os.stat(self._path)
            # The inode changes on every atomic replace, which catches two writes within one
            # mtime tick of the same size.
            stamp: tuple[int, int, int] | None = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            stamp = None
        with self._lock:
            if stamp != self._stamp:
                self._revoked = frozenset(_read_revoked(self._path)) if stamp else frozenset()
                self._stamp = stamp
            return self._revoked


# ---- TLS contexts --------------------------------------------------------------------------

def _tls13_only(ctx: ssl.SSLContext) -> None:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    # Python 3.13 turns strict X.509 checks on by default; turn them on here too so the
    # certificates we issue are held to that standard on every Python we support.
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT


def _load_trust(ctx: ssl.SSLContext, ca_cert: Path) -> None:
    if not ca_cert.is_file():
        raise ConfigError(f"CA certificate {ca_cert} does not exist")
    try:
        ctx.load_verify_locations(cafile=ca_cert)
    except (ssl.SSLError, ValueError) as exc:
        raise DataError(f"cannot load CA certificate {ca_cert}: {exc}") from None


def _load_pair(ctx: ssl.SSLContext, cert: Path, key: Path) -> None:
    missing = [str(p) for p in (cert, key) if not p.is_file()]
    if missing:
        raise ConfigError(f"missing TLS file(s): {', '.join(missing)}")
    try:
        ctx.load_cert_chain(cert, key)
    except ssl.SSLError:
        raise DataError(f"cannot load certificate {cert} with key {key}") from None


def server_ssl_context(paths: FederationPaths, *, require_client_cert: bool) -> ssl.SSLContext:
    """TLS 1.3 server context: mTLS against the federation CA (device port) or none (web port)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _tls13_only(ctx)
    _load_pair(ctx, paths.server_cert, paths.server_key)
    if require_client_cert:
        ctx.verify_mode = ssl.CERT_REQUIRED
        _load_trust(ctx, paths.ca_cert)
    else:
        ctx.verify_mode = ssl.CERT_NONE  # browsers authenticate with tokens instead
    return ctx


def client_ssl_context(ca_cert: Path, *, cert: Path | None = None,
                       key: Path | None = None) -> ssl.SSLContext:
    """TLS 1.3 client context trusting only ``ca_cert``, with hostname checks, optional mTLS."""
    if (cert is None) != (key is None):
        raise ConfigError("give both a client certificate and its key, or neither")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED + check_hostname by default
    _tls13_only(ctx)
    _load_trust(ctx, Path(ca_cert))
    if cert is not None and key is not None:
        _load_pair(ctx, Path(cert), Path(key))
    return ctx
