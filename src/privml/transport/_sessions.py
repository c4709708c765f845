"""Dashboard sessions of the web port: an admin signs in once, the browser holds a cookie.

Theory of operation. ``EventSource`` cannot send headers, and a token in a URL ends up in
logs, so the dashboard cannot authenticate its live stream with the bearer token. Instead an
admin posts the admin token once (``POST /v1/admin/session``, the token in the
``Authorization`` header as on every other call) and gets:

- a cookie ``__Host-privml_session``: a random 256-bit id, ``HttpOnly`` (no script reads
  it), ``Secure``, ``SameSite=Strict`` (no other site's page sends it), ``Path=/`` and no
  ``Domain`` (the ``__Host-`` prefix makes the browser insist on all three);
- a CSRF token (another random 256 bits) in the JSON answer. A request authenticated by the
  cookie that changes anything must carry it in ``X-CSRF-Token``; it is compared in constant
  time. ``SameSite=Strict`` already keeps other sites' requests from carrying the cookie;
  the token is the second, independent wall.

The table lives in memory only: a restarted coordinator forgets every session (admins sign
in again). A session ends at the first of: its absolute lifetime (12 h), its idle timeout
(30 min without a request; an open live stream counts as use), sign-out, or its admin token
being revoked or expiring (the token is re-verified at most every ``recheck`` seconds, so it
stays in this process's memory, never on disk and never in a log). The table is bounded:
past ``max_sessions`` the least recently used session is dropped.

Only the SHA-256 of a session id is kept as the table's key, so a memory dump of the table
does not hand out live cookies. The clock and the random source are arguments.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from privml._exceptions import RequestError

__all__ = ["COOKIE", "Session", "SessionTable", "check_csrf"]

COOKIE = "__Host-privml_session"
_ID_BYTES = 32  # 256 bits


def _key(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


@dataclass(slots=True)
class Session:
    label: str  # the admin token's label: who is signed in
    csrf: str
    created: float
    last_used: float
    expires: float
    token: str = field(repr=False)  # re-verified now and then (revocation, expiry)
    verified: float = 0.0


def unauthorized(detail: str) -> RequestError:
    return RequestError(detail, code="unauthorized", status=401)


class SessionTable:
    """The signed-in dashboards; ``clock`` is seconds (monotonic), ``random_token(n)`` a
    CSPRNG giving n random bytes as URL-safe text. Used from the web port's event loop only
    (one thread), so it needs no lock."""

    def __init__(self, *, lifetime: float = 12 * 3600.0, idle: float = 30 * 60.0,
                 recheck: float = 60.0, max_sessions: int = 256,
                 clock: Callable[[], float] = time.monotonic,
                 random_token: Callable[[int], str] = secrets.token_urlsafe) -> None:
        self.lifetime, self.idle, self.recheck = lifetime, idle, recheck
        self.max_sessions = max_sessions
        self.clock = clock
        self._random = random_token
        self._sessions: dict[str, Session] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def create(self, label: str, token: str) -> tuple[str, Session]:
        """A new session for a verified admin token: (cookie value, session)."""
        now = self.clock()
        self._expire(now)
        while len(self._sessions) >= self.max_sessions:
            oldest = min(self._sessions, key=lambda k: self._sessions[k].last_used)
            del self._sessions[oldest]
        session_id = self._random(_ID_BYTES)
        session = Session(label=label, csrf=self._random(_ID_BYTES), created=now,
                          last_used=now, expires=now + self.lifetime, token=token,
                          verified=now)
        self._sessions[_key(session_id)] = session
        return session_id, session

    def get(self, session_id: str | None, *,
            reverify: Callable[[str], object] | None = None) -> Session:
        """The live session of a cookie value (and it counts as used); 401 otherwise.

        ``reverify(token)`` raises if the admin token is no longer valid; it runs when the
        last check is older than ``recheck`` seconds, and a failure ends the session.
        """
        if not session_id:
            raise unauthorized("no dashboard session: sign in with an admin token")
        now = self.clock()
        key = _key(session_id)
        session = self._sessions.get(key)
        if session is None or now >= session.expires or now - session.last_used >= self.idle:
            self._sessions.pop(key, None)
            raise unauthorized("the dashboard session is unknown, signed out or expired: "
                               "sign in again")
        if reverify is not None and now - session.verified >= self.recheck:
            try:
                reverify(session.token)
            except Exception:
                del self._sessions[key]
                raise unauthorized("the admin token of this session was revoked or has "
                                   "expired: sign in again") from None
            session.verified = now
        session.last_used = now
        return session

    def alive(self, session_id: str) -> bool:
        """Whether the session is still there and in time (without counting as a use)."""
        session = self._sessions.get(_key(session_id))
        now = self.clock()
        return session is not None and now < session.expires and \
            now - session.last_used < self.idle

    def expires_in(self, session_id: str) -> float:
        """Seconds until the session's absolute end (0 if it is gone)."""
        session = self._sessions.get(_key(session_id))
        return 0.0 if session is None else max(0.0, session.expires - self.clock())

    def touch(self, session_id: str) -> None:
        """An open live stream keeps its session from going idle."""
        session = self._sessions.get(_key(session_id))
        if session is not None:
            session.last_used = self.clock()

    def end(self, session_id: str) -> None:
        self._sessions.pop(_key(session_id), None)

    def _expire(self, now: float) -> None:
        for key in [k for k, s in self._sessions.items()
                    if now >= s.expires or now - s.last_used >= self.idle]:
            del self._sessions[key]


def check_csrf(session: Session, sent: str | None) -> None:
    """403 ``csrf`` unless ``sent`` is this session's CSRF token (constant-time compare)."""
    if not sent or not hmac.compare_digest(sent.encode(), session.csrf.encode()):
        raise RequestError("a change made with a dashboard session needs the session's "
                           "X-CSRF-Token header", code="csrf", status=403)
