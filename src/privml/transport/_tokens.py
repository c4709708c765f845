"""Bearer tokens for the web port, kept in SQLite (``<federation dir>/tokens.db``).

A token is shown once, when it is created, and stored only as its SHA-256 hash: a copy of
the database lets nobody in. Tokens are 32 random bytes, so a plain hash is enough (there is
nothing to brute-force, unlike a password). The prefix says the kind — ``pmt_`` for browser /
client tokens, ``pma_`` for admin tokens — so a leaked token is recognisable in logs and by
secret scanners, and the server knows which kind to look up before touching the database.

Each call opens its own short connection: the server's event-loop thread and the
``privml tokens`` command share the file (WAL), and a revocation takes effect on the
server's next request without a restart.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import os
import re
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from privml._exceptions import ConfigError, DataError, RequestError
from privml._home import private_file

__all__ = ["DEFAULT_TTL", "TOKEN_PREFIX", "TokenInfo", "TokenKind", "TokenStore",
           "default_tokens_path", "kind_of"]

TokenKind = Literal["client", "admin"]
TOKEN_PREFIX: dict[TokenKind, str] = {"client": "pmt_", "admin": "pma_"}
# Browser tokens live an hour (they ride in page memory); admin tokens a week (an operator's).
DEFAULT_TTL: dict[TokenKind, int] = {"client": 3600, "admin": 7 * 24 * 3600}
MAX_TTL = 366 * 24 * 3600
_LABEL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
_TOKEN_RE = re.compile(r"pm[ta]_[A-Za-z0-9_-]{43}")

SCHEMA_VERSION = 1
_MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE tokens (
        hash TEXT PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('client', 'admin')),
        label TEXT NOT NULL UNIQUE,
        created REAL NOT NULL,
        expires REAL NOT NULL,
        revoked INTEGER NOT NULL DEFAULT 0
    );
    """,
}


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """What ``privml tokens list`` shows: never the token, never its hash."""

    label: str
    kind: TokenKind
    created: dt.datetime
    expires: dt.datetime
    revoked: bool

    def active(self, now: dt.datetime) -> bool:
        return not self.revoked and now < self.expires


def default_tokens_path(federation_dir: str | os.PathLike[str]) -> Path:
    return Path(federation_dir) / "tokens.db"


def kind_of(token: str) -> TokenKind | None:
    """The kind a token's prefix claims (unverified), or None."""
    for kind, prefix in TOKEN_PREFIX.items():
        if token.startswith(prefix):
            return kind
    return None


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _check_kind(kind: str) -> TokenKind:
    if kind == "client":
        return "client"
    if kind == "admin":
        return "admin"
    raise ConfigError(f"token kind must be 'client' or 'admin', got {kind!r}")


def _utc(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, dt.UTC)


class TokenStore:
    """Create, verify, list and revoke bearer tokens; ``clock`` is seconds since the epoch."""

    def __init__(self, path: str | os.PathLike[str], *,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.clock = clock
        if not self.path.parent.is_dir():
            raise ConfigError(f"folder {self.path.parent} does not exist")
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            self._migrate(db)
        os.chmod(self.path, 0o600)  # hashes only, but nobody else needs to read it

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            db = sqlite3.connect(private_file(self.path), timeout=5.0)
        except sqlite3.Error as exc:
            raise DataError(f"token database {self.path} cannot be opened: {exc}") from None
        try:
            with db:
                yield db
        except sqlite3.DatabaseError as exc:
            raise DataError(f"token database {self.path} is unreadable: {exc}") from None
        finally:
            db.close()

    def _migrate(self, db: sqlite3.Connection) -> None:
        (version,) = db.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            raise DataError(f"token database {self.path} has schema {version}, newer than "
                            f"this privml ({SCHEMA_VERSION}); upgrade privml")
        for target in range(version + 1, SCHEMA_VERSION + 1):
            db.executescript(_MIGRATIONS[target])
            db.execute(f"PRAGMA user_version = {target}")

    def create(self, kind: str, *, ttl_seconds: int | None = None,
               label: str | None = None) -> str:
        """A new token of ``kind``; the plaintext is returned here and never again."""
        k = _check_kind(kind)
        ttl = DEFAULT_TTL[k] if ttl_seconds is None else ttl_seconds
        if isinstance(ttl, bool) or not isinstance(ttl, int) or not 0 < ttl <= MAX_TTL:
            raise ConfigError(f"ttl must be 1..{MAX_TTL} seconds, got {ttl_seconds!r}")
        if label is None:
            label = f"{k}-{secrets.token_hex(4)}"
        if not _LABEL_RE.fullmatch(label):
            raise ConfigError(f"token label must match {_LABEL_RE.pattern}, got {label!r}")
        token = TOKEN_PREFIX[k] + secrets.token_urlsafe(32)
        now = self.clock()
        with self._connect() as db:
            try:
                db.execute("INSERT INTO tokens (hash, kind, label, created, expires)"
                           " VALUES (?,?,?,?,?)", (_hash(token), k, label, now, now + ttl))
            except sqlite3.IntegrityError:
                raise ConfigError(f"a token labelled {label!r} already exists") from None
        return token

    def verify(self, token: str, kind: str) -> str:
        """The label of a valid, unexpired, unrevoked ``token`` of ``kind``.

        One opaque 401 for every failure, so a caller learns nothing about which check failed.
        """
        k = _check_kind(kind)
        bad = RequestError("missing, unknown, expired or revoked token",
                           code="unauthorized", status=401)
        if not isinstance(token, str) or not _TOKEN_RE.fullmatch(token):
            raise bad
        digest = _hash(token)
        with self._connect() as db:
            row = db.execute("SELECT hash, kind, label, expires, revoked FROM tokens"
                             " WHERE hash = ?", (digest,)).fetchone()
        if row is None:
            raise bad
        stored, stored_kind, label, expires, revoked = row
        # The lookup already matched; compare again in constant time so correctness never
        # hangs on how the database compares strings.
        if not hmac.compare_digest(stored, digest) or stored_kind != k or revoked:
            raise bad
        if self.clock() >= expires:
            raise bad
        return str(label)

    def list_tokens(self) -> list[TokenInfo]:
        with self._connect() as db:
            rows = db.execute("SELECT label, kind, created, expires, revoked FROM tokens"
                              " ORDER BY created").fetchall()
        return [TokenInfo(label, _check_kind(kind), _utc(created), _utc(expires), bool(rev))
                for label, kind, created, expires, rev in rows]

    def revoke(self, label: str) -> None:
        """Revoke the token labelled ``label`` (ConfigError if there is none)."""
        with self._connect() as db:
            cur = db.execute("UPDATE tokens SET revoked = 1 WHERE label = ?", (label,))
        if cur.rowcount == 0:
            raise ConfigError(f"no token labelled {label!r} in {self.path}")
