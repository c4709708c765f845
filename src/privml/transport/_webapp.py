"""The web-port application: TLS 1.3 without client certificates, bearer tokens only.

It serves browsers: the public pages and their scripts (:mod:`._webpages`: ``/client``,
``/predict``, ``/web/``, ``/vendor/``, all with strict security headers), and the API. A
client token (``pmt_``) makes a browser a client of the run named ``web-<token label>``: it
enrols, asks for tasks, sends updates (TF.js-layout weights, converted and checked here into
privml parameters), reports evaluations and walks the SecAgg+ stages exactly as a Python
client does on the device port, through the same coordinator calls.

Every API request (bar ``/openapi.json``) needs the protocol header and exactly one
``Authorization: Bearer <token>`` header — or, on the admin endpoints only, the dashboard's
session cookie (and, to change anything, its CSRF token): see :mod:`._dashboard`. Tokens
are read from that header and nowhere else — a token in a URL ends up in proxy logs and
browser history — so a query-string token is simply not a credential. The token's prefix
names its kind; the store verifies it (hash, kind, expiry, revocation) and any failure is
one opaque 401 ``unauthorized``. A valid client token on an admin endpoint is 403
``forbidden``. Admin tokens may also read the client endpoints. Refusals go to the same
security log as the device port's.

This port requests no client certificate at all, so a device's certificate can never stand
in for a token here; the device port in turn refuses any ``Authorization`` header.

``POST /v1/admin/runs`` starts a new run once the current one (if any) has finished or was
stopped: the server's run factory builds its coordinator (persisted in the same store), and
it replaces the old one for both ports at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import Depends, FastAPI, Request, Response
from fastapi.security import HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from privml._exceptions import ConfigError, PeerError, ProtocolError, RequestError
from privml.transport._coordinator import Coordinator
from privml.transport._dashboard import EVENTS_PATH, Dashboard, dashboard_routes
from privml.transport._sessions import SessionTable
from privml.transport._tokens import TokenStore, kind_of
from privml.transport._webpages import SECURITY_HEADERS, is_public, page_routes
from privml.transport.server import (
    HEADER_PROTOCOL,
    PROTOCOL_VERSION,
    UPDATE_OPENAPI,
    ServerState,
    client_routes,
    idle_status,
    install_error_handlers,
    refuse,
    submit_update,
)

__all__ = ["create_web_app"]

log = logging.getLogger("privml.server")
_ADMIN_PREFIX = "/v1/admin/"
_UNAUTHENTICATED = frozenset({"/openapi.json"})
# A browser client's calls: they need a client token (an admin is not a client), and the
# caller is ``web-<token label>`` to the run.
_CLIENT_PATHS = ("/v1/enrol", "/v1/task", "/v1/update", "/v1/evaluation", "/v1/secagg/",
                 "/v1/demo-data")
WEB_CLIENT_PREFIX = "web-"


class RunRequest(BaseModel):
    """An admin's settings for a new run; what is left out comes from the server's own
    flags. Ranges are checked by ``RunConfig`` (a refusal there is ``invalid_config``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    rounds: int
    clients_per_round: int
    min_updates: int | None = None
    min_clients: int | None = None
    round_timeout: float | None = None
    strategy: str | None = Field(default=None, max_length=32)
    trim: float | None = Field(default=None, ge=0, lt=0.5)
    byzantine: float | None = Field(default=None, ge=0, lt=0.5)
    bound_factor: float | None = Field(default=None, gt=0)
    epochs: int | None = Field(default=None, ge=1)
    seed: int | None = Field(default=None, ge=0, lt=2**63)
    model: str | None = Field(default=None, max_length=32,
                              description="zoo model (logreg, mlp, cnn); default: the "
                              "server's --model")
    eval_every: int | None = Field(default=None, ge=0)
    secagg: bool | None = None
    secagg_clip: float | None = Field(default=None, gt=0)
    secagg_bits: int | None = None
    target_epsilon: float | None = Field(default=None, gt=0)
    delta: float | None = Field(default=None, gt=0, lt=1)
    noise_multiplier: float | None = Field(default=None, gt=0)
    clip_norm: float | None = Field(default=None, gt=0)
    min_survivors: int | None = Field(default=None, ge=2)
    shamir_threshold: int | None = Field(default=None, ge=1)


TFJS_UPDATE_OPENAPI: dict[str, Any] = {
    **UPDATE_OPENAPI,
    "requestBody": {"required": True, "content": {"application/octet-stream": {
        "schema": {"type": "string", "format": "binary",
                   "description": "the update (local - global) as TF.js weights: float32 "
                   "little-endian, in the model.json manifest's order and shapes"}}}},
}


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
    path = request.url.path
    if path.startswith(_ADMIN_PREFIX) and kind != "admin":
        raise RequestError("this endpoint needs an admin token", code="forbidden", status=403)
    if path.startswith(_CLIENT_PATHS) and kind != "client":
        raise RequestError("this endpoint needs a client token (an admin token does not "
                           "join runs)", code="forbidden", status=403)
    return kind, label


def _who(request: Request) -> str:
    peer = request.client.host if request.client else "?"
    return f"web {peer}"


def create_web_app(state: ServerState, tokens: TokenStore, *,
                   sessions: SessionTable | None = None) -> FastAPI:
    """The web-port application (no client certificates; bearer tokens, and dashboard
    sessions: see :mod:`._dashboard`)."""
    dash = Dashboard(state, tokens, sessions=sessions)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        dash.feed.ensure_started()  # notes each round's enrolled clients from the start
        try:
            yield
        finally:
            await dash.feed.stop()

    # No /docs page: it would pull scripts from a CDN onto a port meant for browsers.
    app = FastAPI(title="privml coordinator (web port)", version=str(PROTOCOL_VERSION),
                  docs_url=None, redoc_url=None, lifespan=lifespan,
                  # Documents the scheme in the OpenAPI schema; the middleware enforces it.
                  dependencies=[Depends(HTTPBearer(auto_error=False))])

    @app.middleware("http")
    async def guard(request: Request,
                    call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        who = _who(request)
        try:
            if request.url.path in _UNAUTHENTICATED or is_public(request.method,
                                                                 request.url.path):
                return _secured(await call_next(request))
            version = request.headers.get(HEADER_PROTOCOL)
            # (EventSource cannot send headers: the live stream goes without this one.)
            if version != str(PROTOCOL_VERSION) and not (
                    version is None and request.url.path == EVENTS_PATH):
                raise RequestError(f"protocol version {version!r} not supported",
                                   code="protocol_version", status=426)
            request.state.client = who  # how the shared error handlers name the caller
            request.state.session = None
            if dash.uses_session(request):
                kind, label = dash.authenticate(request)
            else:
                kind, label = _authenticate(request, tokens)
            request.state.token = (kind, label)
            if kind == "client":
                request.state.client = WEB_CLIENT_PREFIX + label
            return _secured(await call_next(request))
        except PeerError as exc:
            return _secured(refuse(state, request, who, exc))

    install_error_handlers(app, state)
    page_routes(app)
    client_routes(app, state)
    dashboard_routes(app, dash)

    _browser_routes(app, state)

    @app.get("/v1/status")
    async def status() -> dict[str, Any]:
        with state.lock:
            coord = state.current
            return idle_status() if coord is None else coord.status()

    _tfjs_routes(app, state)
    _admin_routes(app, state)
    return app


def _admin_routes(app: FastAPI, state: ServerState) -> None:
    @app.get("/v1/admin/status")
    async def admin_status() -> dict[str, Any]:
        with state.lock:
            coord = state.current
            if coord is None:
                body = {**idle_status(), "config": None, "finished": None}
            else:
                body = coord.status()
                body.update(config=coord.config.to_dict(), finished=coord.finished)
        body.update(stop_requested=state.stop_requested.is_set(),
                    security_events=state.refusals)
        return body

    @app.post("/v1/admin/stop")
    async def admin_stop(request: Request) -> dict[str, Any]:
        """End the current run now (its open round is abandoned, clients are told "done");
        a server that serves one run then exits, one that keeps serving waits idle."""
        _, label = request.state.token
        with state.lock:
            if state.current is not None:
                state.current.stop()
            state.stop_requested.set()
            state.changes += 1
        log.warning("stop requested by admin token %r", label)
        return {"stopping": True}

    @app.post("/v1/admin/runs", status_code=201)
    async def admin_runs(request: Request, settings: RunRequest) -> dict[str, Any]:
        """Start a new run once the current one (if any) has finished or was stopped."""
        _, label = request.state.token
        coord = await _start_run(state, settings)
        log.warning("run %s started by admin token %r", coord.run_id, label)
        return {"run": coord.run_id, "config": coord.config.to_dict()}


def _browser_routes(app: FastAPI, state: ServerState) -> None:
    @app.post("/v1/update", openapi_extra=TFJS_UPDATE_OPENAPI)
    async def update(request: Request) -> Response:
        """A browser's update: local - global weights in TF.js layout (the model.json
        manifest's order and shapes, float32 little-endian), checked and converted here."""
        return await submit_update(state, request, _from_tfjs)

    @app.get("/v1/demo-data")
    async def demo_data(request: Request) -> Response:
        """This client's demo partition as CSV, when the server offers one (--web-demo)."""
        if state.demo_data is None:
            raise ProtocolError("this coordinator offers no demo data; pick a file of your "
                                "own", code="no_demo_data", status=404)
        body = await asyncio.to_thread(state.demo_data, request.state.client)
        return Response(body, media_type="text/csv")


def _secured(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def _from_tfjs(coord: Coordinator, body: bytes) -> bytes:
    from privml import params as pm
    from privml.models import ModelSpec, from_tfjs_weights, tfjs_weight_spec

    spec = ModelSpec.from_json(coord.model_spec_json)
    manifest = [{"name": n, "shape": list(s), "dtype": "float32"}
                for n, s in tfjs_weight_spec(spec).items()]
    return pm.encode(from_tfjs_weights(spec, manifest, body))


def _tfjs_routes(app: FastAPI, state: ServerState) -> None:
    """The current model as a TensorFlow.js LayersModel, at a URL naming its version (the
    sha256 ETag tasks carry): ``/v1/tfjs/<etag>/model.json`` and its ``weights.bin`` (the
    manifest's relative path). A version that is no longer current is 404 ``stale_model``,
    so a page never trains on a model mixed from two versions. Browsers load it with
    ``tf.loadLayersModel(url, {requestInit: {headers}})``, the token in a header."""
    cache: dict[str, tuple[bytes, bytes]] = {}  # the current version only

    def converted(version: str) -> tuple[bytes, bytes]:
        import json

        from privml import params as pm
        from privml.models import ModelSpec, to_tfjs

        with state.lock:  # the version, its spec and its bytes from one model
            coord = state.current
            current = None if coord is None else coord.etag
            if coord is None or current != version:
                raise ProtocolError(f"model version {version[:16]!r} is not the current one"
                                    + ("" if current is None else f" ({current[:16]}...)"),
                                    code="stale_model", status=404)
            spec_json, model_bytes = coord.model_spec_json, coord.model_bytes
        if version not in cache:  # converted outside the lock: rounds go on meanwhile
            model_json, weights = to_tfjs(ModelSpec.from_json(spec_json),
                                          pm.decode(model_bytes))
            cache.clear()
            cache[version] = (json.dumps(model_json).encode(), weights)
        return cache[version]

    headers = {"Cache-Control": "private, max-age=31536000, immutable"}

    @app.get("/v1/tfjs/{version}/model.json")
    async def tfjs_model(version: str) -> Response:
        body, _ = converted(version)
        return Response(body, media_type="application/json",
                        headers={**headers, "ETag": f'"{version}"'})

    @app.get("/v1/tfjs/{version}/weights.bin")
    async def tfjs_weights(version: str) -> Response:
        _, body = converted(version)
        return Response(body, media_type="application/octet-stream",
                        headers={**headers, "ETag": f'"{version}"'})


async def _start_run(state: ServerState, settings: RunRequest) -> Coordinator:
    # One start at a time, and never blocking this event loop (the start in progress
    # finishes on it): a second start meanwhile is refused like one during a run.
    if not state.starting.acquire(blocking=False):
        raise ProtocolError("another run is being started", code="run_active", status=409)
    try:
        with state.lock:
            _check_can_start(state)
            factory = state.new_run
        assert factory is not None  # nosec B101  # narrowing: checked above
        try:
            # Builds a model and writes to the store: off the event loop, and without
            # state.lock, so requests and ticks go on meanwhile.
            coord = await asyncio.to_thread(factory, settings.model_dump(exclude_none=True))
        except ConfigError as exc:
            raise RequestError(str(exc), code="invalid_config", status=422) from None
        with state.lock:
            state.current = coord
            state.stop_requested.clear()  # a stop was for the run before
            state.changes += 1
        return coord
    finally:
        state.starting.release()


def _check_can_start(state: ServerState) -> None:
    if state.current is not None and not state.current.finished:
        raise ProtocolError(f"run {state.current.run_id} is still running; stop it first "
                            "(POST /v1/admin/stop) or wait for it to finish",
                            code="run_active", status=409)
    if state.new_run is None:
        raise ProtocolError("this server serves a single run and exits when it ends; start "
                            "it with --keep-serving to run more", code="no_new_runs",
                            status=409)
