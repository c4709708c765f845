"""The HTTPS coordinator: FastAPI behind uvicorn, TLS 1.3 only, mutual TLS on the device port.

Each request is turned into one call on the :class:`Coordinator` (which owns every check and
every state change) and every refusal into ``{"error": code, "detail": ...}`` with a 4xx
status, recorded in the security log. The client's identity is the CN of the certificate
the TLS layer verified (passed up by :mod:`privml.transport._uvicorn_tls`); a revoked
certificate is refused with 403 ``cert_revoked`` before anything else is looked at.

The web port (:mod:`privml.transport._webapp`) shares this :class:`ServerState` from its own
uvicorn thread, so every call on the coordinator holds ``state.lock``. Each port refuses the
other's credentials: a bearer token sent here is answered ``wrong_port`` (a token must never
be mistaken for, or leaked alongside, a device's certificate).

A server may be idle (no run yet) and an admin may replace a finished run with a new one
(``POST /v1/admin/runs`` on the web port), so every request reads the run afresh from the
state; while idle, clients are told to wait and run-bound endpoints answer ``no_run``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import re
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect

from privml._exceptions import ConfigError, DataError, PeerError, ProtocolError, RequestError
from privml.transport._coordinator import Coordinator, EvaluationReport, UpdateMeta
from privml.transport._store import CoordinatorStore

__all__ = [
    "PROTOCOL_VERSION",
    "SecurityEvent",
    "ServerState",
    "client_routes",
    "create_device_app",
    "idle_status",
    "install_error_handlers",
    "read_body",
    "refuse",
    "submit_update",
    "update_meta",
]

PROTOCOL_VERSION = 1
# The update's metadata travels in headers and its parameters as the raw body; both are read
# and checked by hand (to answer with privml's error codes), so they are declared here for
# the OpenAPI schema, which clients and fuzzers read.
_DATA_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_HEADER = {"in": "header", "required": True, "schema": {"type": "string"}}
UPDATE_OPENAPI: dict[str, Any] = {
    "parameters": [
        {**_HEADER, "name": "X-Privml-Run", "description": "run id from the task"},
        {**_HEADER, "name": "X-Privml-Round", "schema": {"type": "integer", "minimum": 1}},
        {**_HEADER, "name": "X-Privml-Update-Id", "description": "8-64 of [A-Za-z0-9_-]; a "
         "retry reuses it"},
        {**_HEADER, "name": "X-Privml-Examples", "schema": {"type": "integer", "minimum": 1}},
        {"in": "header", "name": "X-Privml-Metrics", "required": False,
         "schema": {"type": "string"}, "description": "JSON object of numbers"},
    ],
    "requestBody": {"required": True, "content": {"application/octet-stream": {
        "schema": {"type": "string", "format": "binary",
                   "description": "the update (local - global) as privml safetensors"}}}},
}
MAX_WAIT = 30.0  # longest long-poll of /v1/task, seconds
LONG_POLL_STEP = 0.01
SUPPORTED = {"min": 1, "max": 1}
# What a client hears while the server has no run: ask again (long polls return early when
# a run starts, and its coordinator then tells the client to enrol).
_IDLE_TASK: dict[str, Any] = {"action": "wait", "run": None, "retry_after": 1.0}
HEADER_PROTOCOL = "x-privml-protocol"
log = logging.getLogger("privml.server")


@dataclass(frozen=True, slots=True)
class SecurityEvent:
    at: float
    client: str
    path: str
    code: str
    detail: str


RunFactory = Callable[[dict[str, Any]], Coordinator]


@dataclass(slots=True)
class ServerState:
    """What the apps share between requests.

    The device and web apps run in two uvicorn threads: ``lock`` serialises calls on the
    coordinator (each is short and synchronous). ``stop_requested`` is a threading.Event,
    not an asyncio one, because the web thread sets it and the runner's thread waits on it.

    ``current`` is the run being served, ``None`` while the server is idle; it is only ever
    replaced (under ``lock``), never reset to ``None``. ``new_run`` builds the next run from
    an admin's settings (``None``: this server takes no new runs); ``starting`` keeps two
    admins from starting runs at once without holding ``lock`` while a model is built.
    ``store`` keeps the security log of an idle server (a run brings its own store).
    ``changes`` goes up by one (under ``lock``) at every change a dashboard shows: the
    only work the request paths do for dashboards (see :mod:`._feed`).
    """

    current: Coordinator | None
    is_revoked: Callable[[str], bool]
    max_body: int = 64 * 1024 * 1024
    tick_seconds: float = 0.2
    # Bounded: the web port is open to anyone, and a flood of refused requests must not
    # grow memory without limit. ``refusals`` keeps the true count.
    security_log: deque[SecurityEvent] = field(default_factory=lambda: deque(maxlen=10_000))
    refusals: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop_requested: threading.Event = field(default_factory=threading.Event)
    store: CoordinatorStore | None = None
    new_run: RunFactory | None = None
    starting: threading.Lock = field(default_factory=threading.Lock)
    shared: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # name: (etag, body)
    demo_data: Callable[[str], bytes] | None = None  # client id -> CSV (--web-demo)
    changes: int = 0

    def share(self, name: str, body: bytes) -> None:
        """Serve ``body`` (typed value bytes) at ``/v1/data/NAME`` with its sha256 ETag."""
        if not _DATA_NAME.fullmatch(name):
            raise ConfigError(f"a shared dataset name is 1-64 of [A-Za-z0-9._-], got {name!r}")
        self.shared[name] = (hashlib.sha256(body).hexdigest(), body)

    @property
    def coordinator(self) -> Coordinator:
        """The current run; while idle, a 409 ``no_run`` refusal (so an endpoint that needs
        a run refuses without a check of its own). Code that must tell idle apart reads
        ``current``."""
        if self.current is None:
            raise no_run(409)
        return self.current


def no_run(status: int) -> ProtocolError:
    return ProtocolError("no run is being served; an admin starts one with "
                         "POST /v1/admin/runs", code="no_run", status=status)


def idle_status() -> dict[str, Any]:
    """``/v1/status`` of a server without a run (the keys of ``Coordinator.status``)."""
    return {"run": None, "phase": "idle", "round": 0, "rounds": None, "completed": 0,
            "failed": 0, "available": 0, "sampled": 0, "accepted": 0, "reported": 0,
            "model_etag": None, "last_evaluation": None, "secagg": None, "privacy": None}


def install_error_handlers(app: FastAPI, state: ServerState) -> None:
    """Both ports' answers to a failed store and to FastAPI's own validation errors."""

    @app.exception_handler(DataError)
    async def storage_failed(request: Request, exc: DataError) -> JSONResponse:
        # The coordinator's store failed: what was being written did not count (or the run
        # stopped and must be resumed from disk). Not the client's fault, so not a 4xx.
        log.error("%s %s: storage failed: %s", request.method, request.url.path, exc)
        return _error(503, "storage_unavailable", "the coordinator could not store its "
                      "state; retry later")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own 422 body differs from ours; every refusal has one shape.
        err = RequestError(f"malformed request: {exc.errors()[:3]}", code="bad_request",
                           status=422)
        return refuse(state, request, getattr(request.state, "client", "?"), err)


def _error(status: int, code: str, detail: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail, **extra}, status_code=status)


class SecAggPost(StrEnum):
    ADVERTISE_KEYS = "advertise-keys"
    SHARE_KEYS = "share-keys"
    MASKED_INPUT = "masked-input"
    UNMASK_SHARES = "unmask-shares"


class SecAggGet(StrEnum):
    KEY_DIRECTORY = "key-directory"
    SHARE_INBOX = "share-inbox"
    UNMASK_REQUEST = "unmask-request"


SECAGG_OPENAPI: dict[str, Any] = {
    "requestBody": {"required": True, "content": {"application/octet-stream": {
        "schema": {"type": "string", "format": "binary",
                   "description": "a privml.secagg message in its byte encoding"}}}},
}


def _peer_identity(request: Request) -> tuple[str, str]:
    """(client id, certificate fingerprint) of the verified client certificate."""
    from privml.transport.tls import cert_fingerprint, client_id_of

    tls = request.scope.get("extensions", {}).get("tls", {})
    der = tls.get("client_cert_der")
    if not der:
        raise RequestError("no verified client certificate", code="no_client_cert", status=401)
    return client_id_of(der), cert_fingerprint(der)


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise RequestError(f"body of {declared} bytes exceeds the limit {limit}",
                           code="too_large", status=413)
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise RequestError(f"body exceeds the limit {limit}", code="too_large",
                                   status=413)
            chunks.append(chunk)
    except ClientDisconnect:
        # The client went away mid-body: nothing arrived to count, and nobody is left to
        # answer (the refusal is for the security log; uvicorn drops the response).
        raise RequestError("the client disconnected before its body was complete",
                           code="client_disconnected", status=400) from None
    return b"".join(chunks)


def update_meta(request: Request) -> UpdateMeta:
    h = request.headers
    try:
        metrics = json.loads(h.get("x-privml-metrics", "{}"))
        if not isinstance(metrics, dict) or not all(
                isinstance(v, int | float) and math.isfinite(v) for v in metrics.values()):
            raise ValueError("metrics must be an object of finite numbers")
        return UpdateMeta(run=h["x-privml-run"], round=int(h["x-privml-round"]),
                          update_id=h["x-privml-update-id"],
                          num_examples=int(h["x-privml-examples"]),
                          metrics={str(k): float(v) for k, v in metrics.items()})
    except KeyError as exc:
        raise RequestError(f"missing header {exc.args[0]}", code="bad_metadata") from None
    # (deeply nested JSON: RecursionError; an integer too large for a float: OverflowError)
    except (ValueError, OverflowError, RecursionError) as exc:
        raise RequestError(f"bad update metadata: {exc}", code="bad_metadata") from None


def _ticking(
        state: ServerState) -> Callable[[FastAPI], contextlib.AbstractAsyncContextManager[None]]:
    """The device app's lifespan: it ticks the current run (round deadlines) while it serves."""

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        ticker = asyncio.create_task(_tick_forever(state))
        try:
            yield
        finally:
            ticker.cancel()

    return lifespan


def _data_route(app: FastAPI, state: ServerState) -> None:
    @app.get("/v1/data/{name}")
    async def data(name: str, request: Request) -> Response:
        """A dataset the coordinator shares with its clients (``privml server --share``)."""
        if name not in state.shared:
            raise ProtocolError(f"no shared dataset {name!r}", code="no_such_data",
                                status=404)
        digest, body = state.shared[name]
        etag = f'"{digest}"'
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers={"ETag": etag})
        return Response(body, media_type="application/octet-stream", headers={"ETag": etag})


def create_device_app(state: ServerState) -> FastAPI:
    """The device-port application (mutual TLS; Python clients)."""
    app = FastAPI(title="privml coordinator (device port)", version=str(PROTOCOL_VERSION),
                  lifespan=_ticking(state))

    install_error_handlers(app, state)

    @app.middleware("http")
    async def guard(request: Request,
                    call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        client = "?"
        try:
            if request.url.path in ("/openapi.json", "/docs"):
                return await call_next(request)
            version = request.headers.get(HEADER_PROTOCOL)
            if version != str(PROTOCOL_VERSION):
                raise RequestError(f"protocol version {version!r} not supported",
                                   code="protocol_version", status=426)
            if "authorization" in request.headers:
                raise RequestError("the device port authenticates by client certificate; "
                                   "bearer tokens belong on the web port",
                                   code="wrong_port", status=400)
            client, fingerprint = _peer_identity(request)
            if state.is_revoked(fingerprint):
                raise RequestError(f"certificate of {client!r} is revoked",
                                   code="cert_revoked", status=403)
            request.state.client = client
            return await call_next(request)
        except PeerError as exc:
            return refuse(state, request, client, exc)

    client_routes(app, state)

    @app.get("/v1/model")
    async def model(request: Request) -> Response:
        with state.lock:  # the etag and the bytes must come from the same model
            coord = state.current
            if coord is None:
                raise no_run(404)
            etag, body = f'"{coord.etag}"', coord.model_bytes
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers={"ETag": etag})
        return Response(body, media_type="application/octet-stream",
                        headers={"ETag": etag})

    _data_route(app, state)

    @app.post("/v1/update", openapi_extra=UPDATE_OPENAPI)
    async def update(request: Request) -> Response:
        return await submit_update(state, request)

    @app.get("/v1/status")
    async def status() -> dict[str, Any]:
        with state.lock:
            coord = state.current
            return idle_status() if coord is None else coord.status()

    return app


def client_routes(app: FastAPI, state: ServerState) -> None:
    """What every client asks, on either port: enrol, task, evaluation and the SecAgg+
    stages. The caller's identity is ``request.state.client``, set by the port's guard
    (a certificate's CN on the device port, ``web-<token label>`` on the web port)."""

    @app.post("/v1/enrol")
    async def enrol(request: Request) -> dict[str, Any]:
        with state.lock:
            coord = state.current
            if coord is not None:
                coord.enrol(request.state.client, time.monotonic())
                state.changes += 1
        # Idle: nothing to join yet; the first run tells the client to enrol again.
        return {"client_id": request.state.client,
                "run": None if coord is None else coord.run_id}

    @app.get("/v1/task")
    async def task(request: Request, wait: float = 0.0) -> dict[str, Any]:
        """What to do now. ``wait`` (seconds, at most 30) long-polls: the answer comes as
        soon as there is something other than "wait", so clients need not poll."""
        until = time.monotonic() + min(max(wait, 0.0), MAX_WAIT)
        while True:
            with state.lock:
                coord = state.current
                answer = (dict(_IDLE_TASK) if coord is None
                          else coord.task(request.state.client, time.monotonic()))
            if answer["action"] != "wait" or time.monotonic() >= until:
                return answer
            # Server-side polling of in-memory state: cheap, and the two ports run in
            # separate event loops, so a cross-loop notification would cost more than it saves.
            await asyncio.sleep(LONG_POLL_STEP)

    @app.post("/v1/evaluation")
    async def evaluation(request: Request, report: EvaluationReport) -> dict[str, Any]:
        """The metrics a client measured for the global model on its own held-out data,
        answering an ``evaluate`` task."""
        with state.lock:
            answer = state.coordinator.evaluation(request.state.client, report,
                                                  time.monotonic())
            state.changes += 1
            return answer

    _secagg_routes(app, state)


def _secagg_routes(app: FastAPI, state: ServerState) -> None:
    """The SecAgg+ stages (see :mod:`privml.transport._secure`)."""

    @app.post("/v1/secagg/{step}", openapi_extra=SECAGG_OPENAPI)
    async def secagg_post(request: Request, step: SecAggPost) -> Response:
        """One SecAgg+ message (its byte encoding) for the round's current stage."""
        client = request.state.client
        try:
            body = await read_body(request, state.max_body)
            with state.lock:
                result = state.coordinator.secagg_post(client, step.value, body,
                                                       time.monotonic())
                state.changes += 1
        except PeerError as exc:
            return refuse(state, request, client, exc)
        return JSONResponse(result)

    @app.get("/v1/secagg/{step}", responses={200: {"content": {
        "application/octet-stream": {}}}, 202: {"description": "not ready: ask again"}})
    async def secagg_get(request: Request, step: SecAggGet, round: int,
                         wait: float = 0.0) -> Response:
        """The coordinator's SecAgg+ message for this client once the stage before it has
        closed; 202 until then (``wait`` long-polls, at most 30 s)."""
        until = time.monotonic() + min(max(wait, 0.0), MAX_WAIT)
        while True:
            with state.lock:
                data = state.coordinator.secagg_get(request.state.client, step.value, round,
                                                    time.monotonic())
            if data is not None:
                return Response(data, media_type="application/octet-stream")
            if time.monotonic() >= until:
                return JSONResponse({"ready": False, "retry_after": 0.2}, status_code=202)
            await asyncio.sleep(LONG_POLL_STEP)


async def submit_update(state: ServerState, request: Request,
                        convert: Callable[[Coordinator, bytes], bytes] | None = None
                        ) -> Response:
    """Check and hand one update to the run. ``convert`` turns the body into privml
    safetensors bytes first (the web port's browsers send TF.js-layout weights)."""
    client = request.state.client
    try:
        body = await read_body(request, state.max_body)
        meta = update_meta(request)
        with state.lock:
            coord = state.coordinator
            if convert is not None:
                body = convert(coord, body)
            result = coord.submit(client, meta, body, time.monotonic())
            state.changes += 1
    except PeerError as exc:
        return refuse(state, request, client, exc)
    return JSONResponse(result)


def refuse(state: ServerState, request: Request, client: str, exc: PeerError) -> JSONResponse:
    """Answer a refusal with its code and status, and record it in the security log."""
    event = SecurityEvent(time.time(), client, request.url.path, exc.code, str(exc))
    with state.lock:  # both ports' threads log here
        state.security_log.append(event)
        state.refusals += 1
        state.changes += 1
        coord = state.current
        store = state.store if coord is None or coord.store is None else coord.store
        if store is not None:  # the persistent security log
            store.record_refusal(client, request.url.path, exc.code, str(exc),
                                 run_id=None if coord is None else coord.run_id)
    log.warning("refused %s %s from %s: %s", request.method, request.url.path, client, exc.code)
    extra = {"supported": SUPPORTED} if exc.code == "protocol_version" else {}
    status = exc.status if isinstance(exc, PeerError) else ProtocolError.status
    return _error(status, exc.code, str(exc), **extra)


def _pulse(coord: Coordinator) -> tuple[object, ...]:
    m = coord.machine
    return (m.phase, m.round, len(m.sampled), len(m.pending), len(coord.history),
            len(coord.evaluations), len(coord.secure_sums))


async def _tick_forever(state: ServerState) -> None:
    broken: Coordinator | None = None
    while True:
        await asyncio.sleep(state.tick_seconds)
        coord = state.current
        try:
            with state.lock:
                coord = state.current
                if coord is not None and coord is not broken:
                    before = _pulse(coord)
                    coord.tick(time.monotonic())
                    if _pulse(coord) != before:  # a deadline closed a round or a stage
                        state.changes += 1
        except DataError as exc:
            # The store failed mid-close: the run must be resumed from disk; stop serving it
            # (and stop ticking it, but not a run that may follow it).
            log.error("coordinator stopped: %s", exc)
            broken = coord
            state.stop_requested.set()
