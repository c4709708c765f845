"""The web-port application: TLS 1.3 without client certificates, bearer tokens only.

Every request (bar ``/openapi.json``) needs the protocol header and exactly one
``Authorization: Bearer <token>`` header. Tokens are read from that header and nowhere else —
a token in a URL ends up in proxy logs and browser history — so a query-string token is
simply not a credential. The token's prefix names its kind; the store verifies it (hash,
kind, expiry, revocation) and any failure is one opaque 401 ``unauthorized``. A valid client
token on an admin endpoint is 403 ``forbidden``. Admin tokens may also read the client
endpoints. Refusals go to the same security log as the device port's.

This port requests no client certificate at all, so a device's certificate can never stand
in for a token here; the device port in turn refuses any ``Authorization`` header.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Depends, FastAPI, Request, Response
from fastapi.security import HTTPBearer

from privml._exceptions import PeerError, RequestError
from privml.transport._tokens import TokenStore, kind_of
from privml.transport.server import HEADER_PROTOCOL, PROTOCOL_VERSION, ServerState, refuse

__all__ = ["create_web_app"]

log = logging.getLogger("privml.server")
_ADMIN_PREFIX = "/v1/admin/"
_UNAUTHENTICATED = frozenset({"/openapi.json"})


def _bearer(request: Request) -> str:
    values = request.headers.getlist("authorization")
    if len(values) != 1:
        raise RequestError("send exactly one 'Authorization: Bearer <token>' header",
                           code="unauthorized", status=401)
    scheme, _, token = values[0].partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise RequestError("the Authorization header must be 'Bearer <token>'",
                           code="unauthorized", status=401)
    return token.strip()


def _authenticate(request: Request, tokens: TokenStore) -> tuple[str, str]:
    """(kind, label) of the request's valid token; RequestError otherwise."""
    token = _bearer(request)
    kind = kind_of(token)
    if kind is None:
        raise RequestError("missing, unknown, expired or revoked token",
                           code="unauthorized", status=401)
    label = tokens.verify(token, kind)
    if request.url.path.startswith(_ADMIN_PREFIX) and kind != "admin":
        raise RequestError("this endpoint needs an admin token", code="forbidden", status=403)
    return kind, label


def _who(request: Request) -> str:
    peer = request.client.host if request.client else "?"
    return f"web {peer}"


def create_web_app(state: ServerState, tokens: TokenStore) -> FastAPI:
    """The web-port application (no client certificates; bearer tokens)."""
    # No /docs page: it would pull scripts from a CDN onto a port meant for browsers.
    app = FastAPI(title="privml coordinator (web port)", version=str(PROTOCOL_VERSION),
                  docs_url=None, redoc_url=None,
                  # Documents the scheme in the OpenAPI schema; the middleware enforces it.
                  dependencies=[Depends(HTTPBearer(auto_error=False))])
    coord = state.coordinator

    @app.middleware("http")
    async def guard(request: Request,
                    call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        who = _who(request)
        try:
            if request.url.path in _UNAUTHENTICATED:
                return await call_next(request)
            version = request.headers.get(HEADER_PROTOCOL)
            if version != str(PROTOCOL_VERSION):
                raise RequestError(f"protocol version {version!r} not supported",
                                   code="protocol_version", status=426)
            kind, label = _authenticate(request, tokens)
            request.state.token = (kind, label)
            return await call_next(request)
        except PeerError as exc:
            return refuse(state, request, who, exc)

    @app.get("/v1/status")
    async def status() -> dict[str, Any]:
        with state.lock:
            return coord.status()

    @app.get("/v1/admin/status")
    async def admin_status() -> dict[str, Any]:
        with state.lock:
            body = coord.status()
            body.update(config=coord.config.to_dict(), finished=coord.finished)
        body.update(stop_requested=state.stop_requested.is_set(),
                    security_events=state.refusals)
        return body

    @app.post("/v1/admin/stop")
    async def admin_stop(request: Request) -> dict[str, Any]:
        _, label = request.state.token
        state.stop_requested.set()
        log.warning("stop requested by admin token %r", label)
        return {"stopping": True}

    return app
