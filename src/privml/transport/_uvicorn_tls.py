"""uvicorn's h11 protocol, taught to hand the verified client certificate to the application.

uvicorn (checked against 0.54) terminates TLS but tells the ASGI application nothing about it.
asyncio calls ``connection_made`` only once the TLS handshake has finished — so with
``CERT_REQUIRED`` the peer certificate has already been verified against the CA — and
uvicorn's ``H11Protocol`` runs each request as ``self.app(scope, receive, send)``. This subclass
reads the connection's TLS state in ``connection_made`` and wraps ``self.app`` so every HTTP
request on the connection gets ``scope["extensions"]["tls"]`` as the ASGI TLS extension
(https://asgi.readthedocs.io/en/latest/specs/tls.html) describes, plus ``client_cert_der``
(the peer certificate's DER bytes, or None) for privml's fingerprint and client-id checks.

The prebuilt ``ssl.SSLContext`` reaches uvicorn through ``Config(ssl_context_factory=...)``
(uvicorn >= 0.47), so each port's TLS 1.3-only context is exactly the one privml built.
WebSocket upgrades are handed to a different protocol class and do not get the extension.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import uvicorn
from cryptography import x509
from uvicorn.protocols.http.h11_impl import H11Protocol

from privml._exceptions import ConfigError

if TYPE_CHECKING:
    from uvicorn._types import ASGI3Application, ASGIReceiveCallable, ASGISendCallable, Scope
    from uvicorn.server import ServerState

__all__ = ["TLSH11Protocol", "make_uvicorn_config"]

_TLS_VERSIONS = {"TLSv1.3": 0x0304, "TLSv1.2": 0x0303, "TLSv1.1": 0x0302, "TLSv1": 0x0301}


@functools.lru_cache(maxsize=64)
def _cipher_id(context: ssl.SSLContext, name: str) -> int | None:
    # OpenSSL's cipher id is 0x0300nnnn where nnnn is the IANA number the ASGI spec wants.
    for cipher in context.get_ciphers():
        if cipher["name"] == name:
            return int(cipher["id"]) & 0xFFFF
    return None


def _tls_extension(ssl_object: ssl.SSLObject) -> dict[str, object]:
    """The ASGI ``tls`` extension dict for one established TLS connection."""
    der = ssl_object.getpeercert(binary_form=True)
    name: str | None = None
    if der:
        try:
            name = x509.load_der_x509_certificate(der).subject.rfc4514_string()
        except ValueError:  # OpenSSL accepted what cryptography cannot parse: leave it to the app
            name = None
    cipher = ssl_object.cipher()
    return {
        "server_cert": None,  # Python's ssl does not expose our own certificate's PEM
        # Python < 3.13 exposes only the leaf; verification already walked the chain.
        "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)] if der else [],
        "client_cert_name": name,
        "client_cert_error": None,  # a failed verification never reaches the application
        "tls_version": _TLS_VERSIONS.get(ssl_object.version() or ""),
        "cipher_suite": _cipher_id(ssl_object.context, cipher[0]) if cipher else None,
        "client_cert_der": der or None,
    }


class TLSH11Protocol(H11Protocol):
    """``H11Protocol`` that puts the connection's TLS state into each request's scope."""

    def __init__(self, config: uvicorn.Config, server_state: ServerState,
                 app_state: dict[str, Any], _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._privml_inner_app: ASGI3Application = self.app
        self._privml_tls: dict[str, object] | None = None
        self.app = self._app_with_tls

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        self._privml_tls = _tls_extension(ssl_object) if ssl_object is not None else None

    async def _app_with_tls(self, scope: Scope, receive: ASGIReceiveCallable,
                            send: ASGISendCallable) -> None:
        if self._privml_tls is not None and scope["type"] == "http":
            extensions: dict[str, Any] = scope.setdefault("extensions", {})
            extensions["tls"] = dict(self._privml_tls)  # a copy: apps may mutate their scope
        await self._privml_inner_app(scope, receive, send)


def make_uvicorn_config(app: Any, *, host: str, port: int, ssl_context: ssl.SSLContext,
                        **kw: Any) -> uvicorn.Config:
    """A ``uvicorn.Config`` serving ``app`` over ``ssl_context`` with :class:`TLSH11Protocol`.

    Refuses a context that is not a TLS 1.3-only server context: plaintext or older TLS never
    slips in through a config.
    """
    taken = sorted(set(kw) & {"http", "http2", "ssl_certfile", "ssl_keyfile",
                              "ssl_context_factory"})
    if taken:
        raise ConfigError(f"make_uvicorn_config sets {', '.join(taken)} itself")
    if (ssl_context.protocol is not ssl.PROTOCOL_TLS_SERVER
            or ssl_context.minimum_version is not ssl.TLSVersion.TLSv1_3):
        raise ConfigError("ssl_context must be a TLS 1.3-only server context "
                          "(see privml.transport.server_ssl_context)")

    def factory(_config: uvicorn.Config, _default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        return ssl_context

    return uvicorn.Config(app, host=host, port=port, http=TLSH11Protocol,
                          ssl_context_factory=factory, **kw)
