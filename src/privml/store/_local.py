"""``LocalStore``: named, versioned values sealed at rest (envelope encryption).

A store is a folder: ``index.sqlite`` (WAL) lists every record version with its data key
wrapped by the store's key-encryption key, and ``objects/`` holds each version's sealed bytes
(:mod:`privml.store._seal`) in a side file, written once. Each version has its own random
256-bit data key; the associated data of both the wrapped key and the sealed value binds
the store id, the record name and the version, so bytes moved between stores, records or
versions do not open. Any such failure is one opaque :class:`~privml.IntegrityError`.

Atomicity and concurrency: ``put`` first reserves the next version in a short write
transaction (a *pending* row), then seals to a temporary file, fsyncs and renames it into
place, then marks the row complete. A process killed at any point leaves the previous
complete version readable; readers never see pending rows. SQLite's locking serialises the
reservations of several processes. ``rotate_key`` re-wraps every data key under a new
key-encryption key in one transaction; the sealed files are untouched.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import closing
from pathlib import Path
from typing import BinaryIO

from privml._exceptions import ConfigError, IntegrityError
from privml._home import private_file
from privml.store._keys import Kdf, key_from_env, unwrap, wrap
from privml.store._seal import open_stream, open_views, seal_stream

__all__ = ["LocalStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    name TEXT NOT NULL, version INTEGER NOT NULL, file TEXT NOT NULL,
    wrapped BLOB, size INTEGER, created REAL NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'complete')),
    PRIMARY KEY (name, version));
"""
_CHECK = b"privml store key check"
_FORMAT = 1


def _held(path: Path) -> bool:
    """Whether a live process holds ``path``'s write lock (False if there is no file)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


class LocalStore:
    """A sealed store in folder ``path``. ``key``: 32 bytes, or a passphrase (str); with
    neither, ``PRIVML_STORE_KEY``. ``create``: make the store if it does not exist.
    ``recover``: clean up after writers that died (:meth:`recover`) on opening."""

    def __init__(self, path: Path | str, *, key: bytes | str | None = None,
                 create: bool = True, recover: bool = True) -> None:
        self.path = Path(path)
        index = self.path / "index.sqlite"
        if not index.exists() and not create:
            raise ConfigError(f"no store at {self.path}")
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)  # a new store: owner only
        (self.path / "objects").mkdir(mode=0o700, exist_ok=True)
        self._db = sqlite3.connect(private_file(index), timeout=60, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._kek = self._open_or_init(key)
        if recover:
            self.recover()

    # ---- keys ----------------------------------------------------------------------------
    def _meta(self, k: str) -> bytes | None:
        row = self._db.execute("SELECT v FROM meta WHERE k=?", (k,)).fetchone()
        return None if row is None else bytes(row[0])

    def _kek_from(self, key: bytes | str | None, kdf: Kdf | None) -> bytes:
        if key is None:
            key = key_from_env()
            if key is None:
                raise ConfigError("no store key: give a passphrase, a key file or set "
                                  "PRIVML_STORE_KEY")
        if isinstance(key, str):
            if kdf is None:
                raise IntegrityError()  # a key store opened with a passphrase
            return kdf.derive(key)
        if not isinstance(key, bytes) or len(key) != 32:
            raise ConfigError("a store key is 32 bytes (or a passphrase string)")
        return key

    def _open_or_init(self, key: bytes | str | None) -> bytes:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            store_id = self._meta("store_id")
            if store_id is None:  # a new store
                store_id = secrets.token_bytes(16)
                kdf = Kdf.new() if isinstance(key, str) else None
                kek = self._kek_from(key, kdf)
                rows = [("store_id", store_id), ("format", str(_FORMAT).encode()),
                        ("check", wrap(kek, _CHECK.ljust(32, b"\0"), store_id))]
                if kdf is not None:
                    rows.append(("kdf", json.dumps(kdf.to_json()).encode()))
                self._db.executemany("INSERT INTO meta VALUES (?, ?)", rows)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self.store_id = store_id
        if self._meta("format") != str(_FORMAT).encode():
            raise IntegrityError()
        kdf_json = self._meta("kdf")
        kdf = Kdf.from_json(json.loads(kdf_json)) if kdf_json is not None else None
        kek = self._kek_from(key, kdf)
        self._verify(kek)
        return kek

    def _verify(self, kek: bytes) -> None:
        check = self._meta("check")
        if check is None or unwrap(kek, check, self.store_id) != _CHECK.ljust(32, b"\0"):
            raise IntegrityError()

    def _aad(self, name: str, version: int) -> bytes:
        return b"|".join([b"privml-store", self.store_id, name.encode(), str(version).encode()])

    # ---- records -------------------------------------------------------------------------
    @staticmethod
    def _check_name(name: str) -> str:
        if not isinstance(name, str) or not 0 < len(name) <= 256 or "\0" in name:
            raise ConfigError("a record name is 1-256 characters without NUL")
        return name

    def put(self, name: str, data: bytes | BinaryIO | Iterable[bytes]) -> int:
        """Seal ``data`` as the next version of ``name``; returns that version."""
        self._check_name(name)
        file = f"{secrets.token_hex(16)}.seal"
        final = self.path / "objects" / file
        tmp = final.with_suffix(".tmp")
        # the temporary file exists and is locked before its row does, and stays locked
        # (the lock follows the inode through the rename) until the row is complete:
        # recovery takes an unlockable pending row for a dead writer's
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as out:
            fcntl.flock(out.fileno(), fcntl.LOCK_EX)
            version = None
            try:
                version = self._reserve(name, file)
                aad = self._aad(name, version)
                data_key = secrets.token_bytes(32)
                size = seal_stream(data, out, key=data_key, aad=aad)
                out.flush()
                os.fsync(out.fileno())
                os.replace(tmp, final)
                self._fsync_dir()
                self._complete(name, version, wrap(self._kek, data_key, aad), size)
            except BaseException:
                self._abandon(name, version, (tmp, final))
                raise
        return version

    def _reserve(self, name: str, file: str) -> int:
        """The next version of ``name``, as a pending row (one short write transaction)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            (top,) = self._db.execute("SELECT COALESCE(MAX(version), 0) FROM records "
                                      "WHERE name=?", (name,)).fetchone()
            version = int(top) + 1
            self._db.execute("INSERT INTO records VALUES (?,?,?,NULL,NULL,?,'pending')",
                             (name, version, file, time.time()))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return version

    def _complete(self, name: str, version: int, wrapped: bytes, size: int) -> None:
        """Mark a written version complete, unless another process rotated the store's key
        meanwhile (the data key would be wrapped under the old one)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            try:
                self._verify(self._kek)
            except IntegrityError:
                raise ConfigError("the store's key was rotated by another process during "
                                  "this write; open the store with the new key") from None
            self._db.execute("UPDATE records SET wrapped=?, size=?, state='complete' "
                             "WHERE name=? AND version=?", (wrapped, size, name, version))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def _abandon(self, name: str, version: int | None, files: Iterable[Path]) -> None:
        """Undo a write that failed in this process: its pending row, then its files."""
        try:
            if version is not None:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                self._db.execute("DELETE FROM records WHERE name=? AND version=? AND "
                                 "state='pending'", (name, version))
        finally:
            for f in files:
                f.unlink(missing_ok=True)

    def recover(self, *, grace: float = 60.0) -> tuple[int, int]:
        """Clean up after writers that died: pending rows whose writer no longer holds its
        lock, and files under ``objects/`` that no row names (left by a crash between a
        file and its row), once unlocked and older than ``grace`` seconds. Safe while other
        processes use the store. Returns (rows, files) removed. Runs when a store opens."""
        objects = self.path / "objects"
        rows = 0
        pending = self._db.execute("SELECT name, version, file FROM records WHERE "
                                   "state='pending'").fetchall()
        for name, version, file in pending:
            final = objects / str(file)
            tmp = final.with_suffix(".tmp")
            if _held(tmp) or _held(final):  # tmp first: a live writer renames tmp -> final
                continue
            cur = self._db.execute("DELETE FROM records WHERE name=? AND version=? AND "
                                   "state='pending'", (name, version))
            if cur.rowcount:
                rows += 1
                tmp.unlink(missing_ok=True)
                final.unlink(missing_ok=True)
        named = {str(r[0]) for r in self._db.execute("SELECT file FROM records")}
        files, now = 0, time.time()
        for f in objects.iterdir():
            seal = f.with_suffix(".seal").name
            try:
                if seal in named or now - f.stat().st_mtime < grace or _held(f):
                    continue
            except FileNotFoundError:
                continue
            # unlocked means its writer finished or died; finished means a row names it now
            if self._db.execute("SELECT 1 FROM records WHERE file=?", (seal,)).fetchone():
                continue
            f.unlink(missing_ok=True)
            files += 1
        return rows, files

    def _fsync_dir(self) -> None:
        fd = os.open(self.path / "objects", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _row(self, name: str, version: int | None) -> tuple[int, str, bytes, int]:
        self._check_name(name)
        q = ("SELECT version, file, wrapped, size FROM records WHERE name=? AND state='complete'"  # noqa: S608  # nosec B608  # literal SQL; values are ? parameters
             + (" AND version=?" if version is not None else "")
             + " ORDER BY version DESC LIMIT 1")
        row = self._db.execute(q, (name,) if version is None else (name, version)).fetchone()
        if row is None:
            raise KeyError(name if version is None else f"{name} v{version}")
        return int(row[0]), str(row[1]), bytes(row[2]), int(row[3])

    def open(self, name: str, version: int | None = None, *,
             views: bool = False) -> Iterator[bytes]:
        """The plaintext of ``name`` (latest complete version, or ``version``), a segment at
        a time. KeyError if there is none; IntegrityError if it does not open. With
        ``views=True`` each piece is a memoryview of a reused buffer, valid only until the
        next piece is asked for (faster: no allocation per segment)."""
        v, file, wrapped, _ = self._row(name, version)
        aad = self._aad(name, v)
        data_key = unwrap(self._kek, wrapped, aad)
        try:
            fh = open(self.path / "objects" / file, "rb")  # noqa: SIM115
        except FileNotFoundError:
            raise IntegrityError() from None
        with fh:
            if hasattr(os, "posix_fadvise"):  # one pass, front to back: read ahead more
                os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
            if views:
                yield from open_views(fh, key=data_key, aad=aad)  # type: ignore[misc]
            else:
                yield from open_stream(fh, key=data_key, aad=aad)

    def get(self, name: str, version: int | None = None) -> bytes:
        v, file, _, size = self._row(name, version)
        try:
            if size > (self.path / "objects" / file).stat().st_size:
                raise IntegrityError()  # the index claims more than the file can hold
        except FileNotFoundError:
            raise IntegrityError() from None
        out, at = bytearray(size), 0
        for piece in self.open(name, v, views=True):
            if at + len(piece) > size:
                raise IntegrityError()  # the index and the sealed value disagree
            out[at:at + len(piece)] = piece
            at += len(piece)
        if at != size:
            raise IntegrityError()
        return bytes(out)

    def versions(self, name: str) -> list[int]:
        rows = self._db.execute("SELECT version FROM records WHERE name=? AND "
                                "state='complete' ORDER BY version", (name,)).fetchall()
        return [int(r[0]) for r in rows]

    def list(self) -> dict[str, int]:
        """Every record name with its latest complete version."""
        rows = self._db.execute("SELECT name, MAX(version) FROM records WHERE "
                                "state='complete' GROUP BY name ORDER BY name").fetchall()
        return {str(n): int(v) for n, v in rows}

    def delete(self, name: str) -> int:
        """Remove every version of ``name``; returns how many there were."""
        return self._drop(self._check_name(name), None)

    def prune(self, name: str, *, keep: int = 1) -> int:
        """Delete all but the newest ``keep`` complete versions of ``name``; returns how
        many went."""
        if keep < 1:
            raise ConfigError("keep must be >= 1")
        old = self.versions(name)[:-keep]
        return self._drop(name, old) if old else 0

    def _drop(self, name: str, versions: Sequence[int] | None) -> int:
        """Delete the rows (all of ``name``'s, or those ``versions``) in one transaction,
        then their files."""
        where = "name=?" if versions is None else \
            f"name=? AND version IN ({','.join('?' * len(versions))})"
        args = (name,) if versions is None else (name, *versions)
        self._db.execute("BEGIN IMMEDIATE")
        try:
            files = [r[0] for r in self._db.execute(
                f"SELECT file FROM records WHERE {where}", args).fetchall()]  # noqa: S608  # nosec B608  # where: literals and ? only
            self._db.execute(f"DELETE FROM records WHERE {where}", args)  # noqa: S608  # nosec B608  # where: literals and ? only
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        for f in files:
            (self.path / "objects" / f).unlink(missing_ok=True)
        return len(files)

    def rotate_key(self, new_key: bytes | str) -> None:
        """Re-wrap every data key (and the key check) under ``new_key``, in one transaction;
        the sealed values are not rewritten. A passphrase gets a fresh salt."""
        kdf = Kdf.new() if isinstance(new_key, str) else None
        kek = self._kek_from(new_key, kdf)
        self._db.execute("BEGIN IMMEDIATE")
        try:
            rows = self._db.execute("SELECT name, version, wrapped FROM records WHERE "
                                    "state='complete'").fetchall()
            for name, version, wrapped in rows:
                aad = self._aad(name, int(version))
                dk = unwrap(self._kek, bytes(wrapped), aad)
                self._db.execute("UPDATE records SET wrapped=? WHERE name=? AND version=?",
                                 (wrap(kek, dk, aad), name, version))
            self._db.execute("UPDATE meta SET v=? WHERE k='check'",
                             (wrap(kek, _CHECK.ljust(32, b"\0"), self.store_id),))
            self._db.execute("DELETE FROM meta WHERE k='kdf'")
            if kdf is not None:
                self._db.execute("INSERT INTO meta VALUES ('kdf', ?)",
                                 (json.dumps(kdf.to_json()).encode(),))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._kek = kek

    def close(self) -> None:
        with closing(self._db):
            pass

    def __enter__(self) -> LocalStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
