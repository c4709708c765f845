"""The coordinator's durable state in SQLite, so a server killed mid-run resumes exactly.

Theory of operation. The database, not the process, is the truth about a run: the
coordinator writes before it answers, so whatever a client was told (an update accepted, a
round closed, a task for a sampled round) is on disk first. The writes are few and each is
one transaction, so a crash (SIGKILL included) leaves either all of a write or none of it:

- ``create_run``    the run, its config and the initial model (round 0);
- ``start_round``   the clients sampled for a round (a resumed round keeps its sample);
- ``add_update``    one accepted update with its delta and the client's ``last_seen``;
- ``close_round``   the outcome, the new model, the strategy's server state, the deltas of
                    the closed round dropped (only the open round's are needed to resume),
                    and the next round's sample when it starts at once;
- ``add_evaluation`` / ``close_evaluation``  one client's evaluation report, and the
                    example-weighted result of an evaluation round.

The store holds bytes and JSON only; encoding parameters is the coordinator's job. The
schema version lives in ``PRAGMA user_version`` (as in :mod:`privml.sim._runs`): a database
from a newer privml is refused, older ones are migrated forward in order.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from privml._exceptions import ConfigError, DataError
from privml._home import private_file

__all__ = ["SCHEMA_VERSION", "ClosedRound", "CoordinatorStore", "EvaluationRecord",
           "RoundRecord", "RunRecord", "StoredState", "StoredUpdate"]

SCHEMA_VERSION = 3
_MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE runs (
        id TEXT PRIMARY KEY, created_at TEXT NOT NULL, config TEXT NOT NULL,
        model_spec TEXT NOT NULL, status TEXT NOT NULL
    );
    CREATE TABLE rounds (
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        round INTEGER NOT NULL, outcome TEXT NOT NULL, sampled TEXT NOT NULL,
        accepted TEXT NOT NULL, dropped TEXT NOT NULL, timed_out TEXT NOT NULL,
        reason TEXT NOT NULL, started_at TEXT NOT NULL, closed_at TEXT, model_etag TEXT,
        PRIMARY KEY (run_id, round)
    );
    CREATE TABLE models (
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        round INTEGER NOT NULL, etag TEXT NOT NULL, params BLOB NOT NULL,
        PRIMARY KEY (run_id, round)
    );
    CREATE TABLE updates (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        round INTEGER NOT NULL, client_id TEXT NOT NULL, update_id TEXT NOT NULL,
        num_examples INTEGER NOT NULL, body_sha256 TEXT NOT NULL, metrics TEXT NOT NULL,
        delta BLOB, accepted_at TEXT NOT NULL,
        UNIQUE (run_id, update_id), UNIQUE (run_id, round, client_id)
    );
    CREATE TABLE clients (
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        client_id TEXT NOT NULL, first_seen TEXT NOT NULL, last_seen TEXT NOT NULL,
        PRIMARY KEY (run_id, client_id)
    );
    CREATE TABLE security_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, run_id TEXT,
        client TEXT NOT NULL, path TEXT NOT NULL, code TEXT NOT NULL, detail TEXT NOT NULL
    );
    CREATE TABLE server_state (
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        round INTEGER NOT NULL, step INTEGER NOT NULL, m BLOB, v BLOB,
        PRIMARY KEY (run_id, round)
    );
    """,
    2: """
    CREATE TABLE evaluations (
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        round INTEGER NOT NULL, client_id TEXT NOT NULL, num_examples INTEGER NOT NULL,
        loss REAL NOT NULL, accuracy REAL NOT NULL, reported_at TEXT NOT NULL,
        PRIMARY KEY (run_id, round, client_id)
    );
    CREATE TABLE evaluation_rounds (
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        round INTEGER NOT NULL, reported TEXT NOT NULL, missing TEXT NOT NULL,
        reason TEXT NOT NULL, examples INTEGER NOT NULL, loss REAL, accuracy REAL,
        closed_at TEXT NOT NULL,
        PRIMARY KEY (run_id, round)
    );
    """,
    # The privacy ledger: every DP event a run composed (JSON, in order), so a restarted
    # coordinator rebuilds its accountant and reports name what was protected.
    3: """
    CREATE TABLE privacy_ledger (
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        seq INTEGER NOT NULL, round INTEGER NOT NULL, entry TEXT NOT NULL,
        PRIMARY KEY (run_id, seq)
    );
    """,
}


def _names(column: str) -> tuple[str, ...]:
    return tuple(str(x) for x in json.loads(column))


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True, slots=True)
class RunRecord:
    id: str
    created_at: str
    config: dict[str, Any]
    model_spec_json: str
    status: str  # "running", "finished" or "stopped"


@dataclass(frozen=True, slots=True)
class RoundRecord:
    round: int
    outcome: str  # "open" until closed, then the machine's Outcome value
    sampled: tuple[str, ...]
    accepted: tuple[str, ...]
    dropped: tuple[str, ...]
    timed_out: tuple[str, ...]
    reason: str
    model_etag: str | None


@dataclass(frozen=True, slots=True)
class StoredUpdate:
    round: int
    client_id: str
    update_id: str
    num_examples: int
    body_sha256: str
    metrics: dict[str, float]
    delta: bytes | None  # None once its round is closed


@dataclass(frozen=True, slots=True)
class StoredState:
    """The strategy's server state after a round; ``m``/``v`` are params bytes or None."""

    step: int = 0
    m: bytes | None = None
    v: bytes | None = None


@dataclass(frozen=True, slots=True)
class ClosedRound:
    """Everything one round close writes, in one transaction."""

    round: int
    outcome: str
    accepted: tuple[str, ...]
    dropped: tuple[str, ...]
    timed_out: tuple[str, ...]
    reason: str
    model: bytes
    etag: str
    state: StoredState
    finished: bool
    next_sample: tuple[str, ...] | None = None  # the next round, when it starts at once


@dataclass(frozen=True, slots=True)
class EvaluationRecord:
    """A closed evaluation round: who reported, and the example-weighted result."""

    round: int
    reported: tuple[str, ...]
    missing: tuple[str, ...]  # sampled, but dropped or out of time
    reason: str
    examples: int
    loss: float | None  # None when no example was measured
    accuracy: float | None

    def summary(self) -> dict[str, float]:
        out = {"round": float(self.round), "examples": float(self.examples),
               "evaluators": float(len(self.reported))}
        if self.loss is not None and self.accuracy is not None:
            out.update(loss=self.loss, accuracy=self.accuracy)
        return out


class CoordinatorStore:
    """Runs, rounds, models, updates, clients and refusals of the HTTPS coordinator."""

    def __init__(self, path: str | Path, *,
                 wallclock: Callable[[], str] = _utc_now) -> None:
        self.path = Path(path)
        self._now = wallclock  # timestamps are for people; nothing is computed from them
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # isolation_level=None: transactions are opened explicitly in ``_tx``.
            self._db = sqlite3.connect(private_file(self.path), isolation_level=None,
                                       check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise DataError(f"coordinator database {self.path} is unreadable: {exc}") from exc
        except DataError:
            self._db.close()
            raise

    def _migrate(self) -> None:
        (version,) = self._db.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            raise DataError(f"coordinator database {self.path} has schema {version}, newer "
                            f"than this privml ({SCHEMA_VERSION}); upgrade privml")
        for target in range(version + 1, SCHEMA_VERSION + 1):
            with self._tx() as db:
                # One statement at a time: executescript() would commit mid-migration.
                # (So migrations must not contain ';' inside a statement, e.g. triggers.)
                for statement in _MIGRATIONS[target].split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version = {target}")

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One transaction: all of it commits, or (any error) none of it."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise DataError(f"coordinator database {self.path}: {exc}") from exc
        try:
            yield self._db
            self._db.execute("COMMIT")
        except BaseException as exc:
            if self._db.in_transaction:  # SQLite may have rolled back already (e.g. I/O error)
                self._db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise DataError(f"coordinator database {self.path}: write failed: {exc}") \
                    from exc
            raise

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> CoordinatorStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- writes -------------------------------------------------------------------------
    def create_run(self, run_id: str, *, config: Mapping[str, Any], model_spec_json: str,
                   model: bytes, etag: str) -> None:
        """Record a new run with its initial model as round 0."""
        if self._db.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone():
            raise ConfigError(f"run {run_id!r} already exists in {self.path}; resume it")
        with self._tx() as db:
            db.execute("INSERT INTO runs VALUES (?,?,?,?,?)",
                       (run_id, self._now(), json.dumps(dict(config)), model_spec_json,
                        "running"))
            db.execute("INSERT INTO models VALUES (?,?,?,?)", (run_id, 0, etag, model))
            db.execute("INSERT INTO server_state VALUES (?,?,?,?,?)",
                       (run_id, 0, 0, None, None))

    def record_enrolment(self, run_id: str, client_id: str) -> None:
        with self._tx() as db:
            self._seen(db, run_id, client_id)

    def _seen(self, db: sqlite3.Connection, run_id: str, client_id: str) -> None:
        now = self._now()
        db.execute("INSERT INTO clients VALUES (?,?,?,?) ON CONFLICT (run_id, client_id)"
                   " DO UPDATE SET last_seen = excluded.last_seen",
                   (run_id, client_id, now, now))

    def start_round(self, run_id: str, round_: int, sampled: Sequence[str]) -> None:
        with self._tx() as db:
            self._start(db, run_id, round_, sampled)

    def _start(self, db: sqlite3.Connection, run_id: str, round_: int,
               sampled: Sequence[str]) -> None:
        db.execute("INSERT INTO rounds VALUES (?,?,'open',?,'[]','[]','[]','',?,NULL,NULL)",
                   (run_id, round_, json.dumps(list(sampled)), self._now()))

    def add_update(self, run_id: str, update: StoredUpdate) -> None:
        """Keep one accepted update (with its delta) and mark its client seen."""
        if update.delta is None:
            raise ConfigError("an accepted update must be stored with its delta")
        with self._tx() as db:
            db.execute(
                "INSERT INTO updates (run_id, round, client_id, update_id, num_examples,"
                " body_sha256, metrics, delta, accepted_at) VALUES (?,?,?,?,?,?,?,?,?)",
                (run_id, update.round, update.client_id, update.update_id,
                 update.num_examples, update.body_sha256, json.dumps(update.metrics),
                 update.delta, self._now()))
            self._seen(db, run_id, update.client_id)

    def add_ledger_entry(self, run_id: str, entry: Mapping[str, Any]) -> None:
        """One DP event of the run (see privml.dp.ClientLevelDP.record), appended."""
        with self._tx() as db:
            (seq,) = db.execute("SELECT COUNT(*) FROM privacy_ledger WHERE run_id=?",
                                (run_id,)).fetchone()
            db.execute("INSERT INTO privacy_ledger VALUES (?,?,?,?)",
                       (run_id, seq, int(entry["round"]), json.dumps(dict(entry))))

    def ledger(self, run_id: str) -> list[dict[str, Any]]:
        rows = self._db.execute("SELECT entry FROM privacy_ledger WHERE run_id=? ORDER BY seq",
                                (run_id,)).fetchall()
        return [json.loads(r[0]) for r in rows]

    def close_round(self, run_id: str, closed: ClosedRound) -> None:
        r = closed.round
        with self._tx() as db:
            cur = db.execute(
                "UPDATE rounds SET outcome=?, accepted=?, dropped=?, timed_out=?, reason=?,"
                " closed_at=?, model_etag=? WHERE run_id=? AND round=? AND outcome='open'",
                (closed.outcome, json.dumps(closed.accepted), json.dumps(closed.dropped),
                 json.dumps(closed.timed_out), closed.reason, self._now(), closed.etag,
                 run_id, r))
            if cur.rowcount != 1:
                raise DataError(f"run {run_id!r} round {r} is not open in {self.path}")
            db.execute("INSERT INTO models VALUES (?,?,?,?)", (run_id, r, closed.etag,
                                                              closed.model))
            s = closed.state
            db.execute("INSERT INTO server_state VALUES (?,?,?,?,?)",
                       (run_id, r, s.step, s.m, s.v))
            # The round's model now holds these deltas; only ids and hashes stay (replays).
            db.execute("UPDATE updates SET delta = NULL WHERE run_id=? AND round=?",
                       (run_id, r))
            if closed.finished:
                db.execute("UPDATE runs SET status='finished' WHERE id=?", (run_id,))
            if closed.next_sample is not None:
                self._start(db, run_id, r + 1, closed.next_sample)

    def add_evaluation(self, run_id: str, client_id: str, *, round_: int, num_examples: int,
                       loss: float, accuracy: float) -> None:
        """One client's evaluation of the model after ``round_`` (and it was seen)."""
        with self._tx() as db:
            db.execute("INSERT INTO evaluations VALUES (?,?,?,?,?,?,?)",
                       (run_id, round_, client_id, num_examples, loss, accuracy, self._now()))
            self._seen(db, run_id, client_id)

    def close_evaluation(self, run_id: str, round_: int, *, reported: Sequence[str],
                         missing: Sequence[str], reason: str,
                         summary: Mapping[str, float]) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO evaluation_rounds VALUES (?,?,?,?,?,?,?,?,?)",
                       (run_id, round_, json.dumps(list(reported)), json.dumps(list(missing)),
                        reason, int(summary.get("examples", 0)), summary.get("loss"),
                        summary.get("accuracy"), self._now()))

    def evaluation_rounds(self, run_id: str) -> list[EvaluationRecord]:
        rows = self._db.execute(
            "SELECT round, reported, missing, reason, examples, loss, accuracy"
            " FROM evaluation_rounds WHERE run_id = ? ORDER BY round", (run_id,)).fetchall()
        return [EvaluationRecord(r[0], _names(r[1]), _names(r[2]), r[3], r[4], r[5], r[6])
                for r in rows]

    def set_run_status(self, run_id: str, status: str) -> None:
        """Mark a run "running", "finished" or "stopped" (an admin ended it early)."""
        if status not in ("running", "finished", "stopped"):
            raise ConfigError(f"unknown run status {status!r}")
        with self._tx() as db:
            if db.execute("UPDATE runs SET status=? WHERE id=?", (status, run_id)).rowcount != 1:
                raise ConfigError(f"no run {run_id!r} in {self.path}")

    def record_refusal(self, client: str, path: str, code: str, detail: str, *,
                       run_id: str | None = None) -> None:
        """A refused request (the server's security log), kept across restarts."""
        with self._tx() as db:
            db.execute("INSERT INTO security_events (at, run_id, client, path, code, detail)"
                       " VALUES (?,?,?,?,?,?)", (self._now(), run_id, client, path, code,
                                                 detail))

    # ---- reads --------------------------------------------------------------------------
    def run_ids(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT id FROM runs ORDER BY created_at")]

    def run(self, run_id: str) -> RunRecord:
        row = self._db.execute("SELECT id, created_at, config, model_spec, status FROM runs"
                               " WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise ConfigError(f"no run {run_id!r} in {self.path}")
        return RunRecord(row[0], row[1], json.loads(row[2]), row[3], row[4])

    def rounds(self, run_id: str) -> list[RoundRecord]:
        rows = self._db.execute(
            "SELECT round, outcome, sampled, accepted, dropped, timed_out, reason, model_etag"
            " FROM rounds WHERE run_id = ? ORDER BY round", (run_id,)).fetchall()
        return [RoundRecord(r[0], r[1], _names(r[2]), _names(r[3]), _names(r[4]),
                            _names(r[5]), r[6], r[7]) for r in rows]

    def updates(self, run_id: str, *, round_: int | None = None) -> list[StoredUpdate]:
        """Accepted updates in arrival order (of one round if ``round_`` is given)."""
        sql = ("SELECT round, client_id, update_id, num_examples, body_sha256, metrics, delta"
               " FROM updates WHERE run_id = ?")
        args: tuple[object, ...] = (run_id,)
        if round_ is not None:
            sql, args = sql + " AND round = ?", (run_id, round_)
        rows = self._db.execute(sql + " ORDER BY seq", args).fetchall()
        return [StoredUpdate(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), r[6])
                for r in rows]

    def model(self, run_id: str, round_: int) -> tuple[bytes, str]:
        """The params bytes and etag of the model after ``round_`` (0: the initial one)."""
        row = self._db.execute("SELECT params, etag FROM models WHERE run_id=? AND round=?",
                               (run_id, round_)).fetchone()
        if row is None:
            raise DataError(f"no model for run {run_id!r} round {round_} in {self.path}")
        return bytes(row[0]), str(row[1])

    def server_state(self, run_id: str, round_: int) -> StoredState:
        row = self._db.execute("SELECT step, m, v FROM server_state WHERE run_id=? AND round=?",
                               (run_id, round_)).fetchone()
        if row is None:
            raise DataError(f"no server state for run {run_id!r} round {round_}")
        return StoredState(int(row[0]), *(None if b is None else bytes(b) for b in row[1:]))

    def clients(self, run_id: str) -> list[tuple[str, str, str]]:
        """(client_id, first_seen, last_seen) of every client that enrolled or submitted."""
        return [tuple(r) for r in self._db.execute(
            "SELECT client_id, first_seen, last_seen FROM clients WHERE run_id = ?"
            " ORDER BY first_seen, client_id", (run_id,))]

    def security_events(self, *, limit: int = 100) -> list[dict[str, Any]]:
        cur = self._db.execute("SELECT at, run_id, client, path, code, detail"
                               " FROM security_events ORDER BY id DESC LIMIT ?", (limit,))
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
