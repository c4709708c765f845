"""The coordinator's dashboard API on the web port: sessions, the overview, the live stream
and the run history.

Endpoints (all under ``/v1/admin/``, so an admin's bearer token works on each as well):

- ``POST session``        sign in: the admin token in ``Authorization: Bearer`` (as on every
                          API call; never a body field or a URL). Answers the CSRF token and
                          sets the session cookie (see :mod:`._sessions`).
- ``GET session``         who is signed in, and the CSRF token again (after a page reload).
- ``POST session/logout`` sign out (with a cookie, the CSRF token is required).
- ``GET overview``        the current run: round, phase, SecAgg+ stage, clients, per-round
                          figures, evaluations, ε per round, recent refusals by code.
- ``GET events``          server-sent events (``text/event-stream``): a ``status`` event with
                          the live snapshot each time the run changes (coalesced, see
                          :mod:`._feed`), a comment every 10 s, ``retry`` 1 s. A stream lasts
                          at most 20 s and the browser reconnects (so a server shutting down
                          never waits long on it); it ends early when its session does.
- ``GET runs/history``    every run of the store with its configuration and final figures.
- ``GET runs/history/ID`` one run's per-round curves (404 ``no_such_run``).

A session cookie authenticates these and the other admin endpoints, but only reads go
without more: a request that changes state (any method but GET and HEAD) must carry the
session's ``X-CSRF-Token`` and must not come from another site (``Sec-Fetch-Site``), else
403 ``csrf``. A missing, unknown or expired session is the usual 401 ``unauthorized``.
``EventSource`` sends no headers, so the stream alone is exempt from the protocol header.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from privml._exceptions import ProtocolError, RequestError
from privml.transport._feed import LiveFeed
from privml.transport._overview import overview, run_detail, run_summaries
from privml.transport._sessions import COOKIE, Session, SessionTable, check_csrf
from privml.transport._tokens import TokenStore
from privml.transport.server import ServerState

__all__ = ["EVENTS_PATH", "SESSION_PATH", "Dashboard", "dashboard_routes"]

SESSION_PATH = "/v1/admin/session"
EVENTS_PATH = "/v1/admin/events"
HEARTBEAT = 10.0
# A server shutting down waits for open responses: a stream ends after this long and the
# browser reconnects (EventSource does so by itself), so none holds a shutdown up for long.
STREAM_SECONDS = 20.0
_NO_STORE = {"Cache-Control": "no-store"}
_SAFE = ("GET", "HEAD")


class Dashboard:
    """What the dashboard endpoints share: the session table and the live feed."""

    def __init__(self, state: ServerState, tokens: TokenStore, *,
                 sessions: SessionTable | None = None, feed: LiveFeed | None = None) -> None:
        self.state = state
        self.tokens = tokens
        self.sessions = SessionTable() if sessions is None else sessions
        self.feed = LiveFeed(state) if feed is None else feed
        self._overview: tuple[int, bytes] | None = None  # (state.changes, body)

    def uses_session(self, request: Request) -> bool:
        """Whether this request is to be authenticated by its session cookie: an admin
        path, no Authorization header (a bearer token always wins), and not the sign-in."""
        path = request.url.path
        return (path.startswith("/v1/admin/")
                and not (path == SESSION_PATH and request.method == "POST")
                and "authorization" not in request.headers and COOKIE in request.cookies)

    def authenticate(self, request: Request) -> tuple[str, str]:
        """("admin", label) of the request's live session; 401 / 403 otherwise."""
        session_id = request.cookies.get(COOKIE)
        session = self.sessions.get(session_id, reverify=self._reverify)
        if request.method not in _SAFE:
            site = request.headers.get("sec-fetch-site")
            if site is not None and site not in ("same-origin", "none"):
                raise RequestError(f"a change made with a dashboard session must come from "
                                   f"this site's pages (Sec-Fetch-Site: {site})",
                                   code="csrf", status=403)
            check_csrf(session, request.headers.get("x-csrf-token"))
        request.state.session = (session_id, session)
        return "admin", session.label

    def _reverify(self, token: str) -> None:
        self.tokens.verify(token, "admin")

    def overview_body(self) -> bytes:
        """The overview, built once per change of the coordinator and shared."""
        changes = self.state.changes
        cached = self._overview
        if cached is not None and cached[0] == changes:
            return cached[1]
        with self.state.lock:
            changes = self.state.changes
            body = overview(self.state, dict(self.feed.enrolled_at))
        encoded = json.dumps(body, separators=(",", ":")).encode()
        self._overview = (changes, encoded)
        return encoded


def _session_of(request: Request) -> tuple[str, Session] | None:
    value: tuple[str, Session] | None = getattr(request.state, "session", None)
    return value


def dashboard_routes(app: FastAPI, dash: Dashboard) -> None:
    state, sessions = dash.state, dash.sessions

    @app.post(SESSION_PATH)
    async def sign_in(request: Request) -> Response:
        """Sign in with the admin token (Authorization header): the session cookie, and the
        CSRF token for changes made with it."""
        _, label = request.state.token
        token = request.headers["authorization"].partition(" ")[2].strip()
        session_id, session = sessions.create(label, token)
        response = JSONResponse(
            {"label": label, "csrf": session.csrf, "expires_in": sessions.lifetime,
             "idle_timeout": sessions.idle}, headers=_NO_STORE)
        response.set_cookie(COOKIE, session_id, max_age=int(sessions.lifetime), path="/",
                            secure=True, httponly=True, samesite="strict")
        return response

    @app.get(SESSION_PATH)
    async def whoami(request: Request) -> Response:
        """The signed-in admin and the session's CSRF token (the page forgets it on reload).
        Answered only to the session itself: no other site can read it."""
        found = _session_of(request)
        _, label = request.state.token
        if found is None:
            return JSONResponse({"label": label, "session": False, "csrf": None},
                                headers=_NO_STORE)
        _, session = found
        now = sessions.clock()
        return JSONResponse({"label": label, "session": True, "csrf": session.csrf,
                             "expires_in": max(0.0, session.expires - now),
                             "idle_timeout": sessions.idle}, headers=_NO_STORE)

    @app.post(SESSION_PATH + "/logout")
    async def sign_out(request: Request) -> Response:
        """End the session (its cookie is cleared); open live streams end with it."""
        session_id = request.cookies.get(COOKIE)
        if session_id:
            sessions.end(session_id)
        dash.feed.kick()
        response = JSONResponse({"signed_out": True}, headers=_NO_STORE)
        response.delete_cookie(COOKIE, path="/", secure=True, httponly=True,
                               samesite="strict")
        return response

    @app.get("/v1/admin/overview")
    async def admin_overview() -> Response:
        dash.feed.ensure_started()
        return Response(dash.overview_body(), media_type="application/json",
                        headers=_NO_STORE)

    @app.get(EVENTS_PATH, response_class=StreamingResponse,
             responses={200: {"content": {"text/event-stream": {}}}})
    async def events(request: Request) -> StreamingResponse:
        """Server-sent events: ``status`` at each change of the run (see the module doc)."""
        feed = dash.feed
        feed.ensure_started()
        feed.poll()  # the first message is the state as it is now
        found = _session_of(request)
        return StreamingResponse(_stream(dash, request, None if found is None else found[0]),
                                 media_type="text/event-stream",
                                 headers={**_NO_STORE, "X-Accel-Buffering": "no"})

    @app.get("/v1/admin/runs/history")
    async def history() -> Response:
        with state.lock:
            coord = state.current
            store = state.store if coord is None or coord.store is None else coord.store
            runs = run_summaries(store, coord)
        return JSONResponse({"runs": runs}, headers=_NO_STORE)

    @app.get("/v1/admin/runs/history/{run_id}")
    async def history_run(run_id: str) -> Response:
        with state.lock:
            coord = state.current
            store = state.store if coord is None or coord.store is None else coord.store
            found = run_detail(store, coord, run_id, dict(dash.feed.enrolled_at))
        if found is None:
            raise ProtocolError(f"no run {run_id[:64]!r} in the coordinator's store",
                                code="no_such_run", status=404)
        return JSONResponse(found, headers=_NO_STORE)


async def _gone(request: Request) -> None:
    """Returns once the browser has gone (the connection closed)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _stream(dash: Dashboard, request: Request,
                  session_id: str | None) -> AsyncIterator[bytes]:
    feed, sessions = dash.feed, dash.sessions
    loop = asyncio.get_running_loop()
    ends = loop.time() + STREAM_SECONDS
    feed.streams += 1
    # A stream notices a closed connection at once, not at its next write.
    gone = asyncio.ensure_future(_gone(request))
    try:
        yield b"retry: 1000\n\n"
        sent = -1
        while True:
            if session_id is not None and not sessions.alive(session_id):
                yield b'event: session\ndata: {"ended":true}\n\n'
                return
            if feed.version != sent:
                sent = feed.version
                yield feed.message
            left = ends - loop.time()
            if left <= 0:
                return
            wait = min(HEARTBEAT, left)
            if session_id is not None:  # wake up in time to say the session ended
                wait = min(wait, sessions.expires_in(session_id) + 0.05)
            woken = asyncio.ensure_future(feed.wait(sent, wait))
            await asyncio.wait((woken, gone), return_when=asyncio.FIRST_COMPLETED)
            if gone.done():
                woken.cancel()
                return
            if feed.version == sent:  # a quiet spell (or a kick): keep the line open
                yield b": keep-alive\n\n"
            if session_id is not None:
                sessions.touch(session_id)
    finally:
        gone.cancel()
        feed.streams -= 1
