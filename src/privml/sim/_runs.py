"""Run history in an embedded SQLite database (``$PRIVML_HOME/runs.db`` by default).

The schema version lives in ``PRAGMA user_version``; opening a database written by a newer
privml is refused rather than guessed at, and older ones are migrated forward in order.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from privml._exceptions import DataError
from privml._home import private_file, privml_home
from privml.sim._config import SimResult

__all__ = ["RunRow", "RunStore", "default_db"]

SCHEMA_VERSION = 3
_MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        started_at TEXT NOT NULL,
        kind TEXT NOT NULL,
        dataset TEXT NOT NULL, model TEXT NOT NULL, strategy TEXT NOT NULL,
        clients INTEGER NOT NULL, rounds INTEGER NOT NULL,
        final_accuracy REAL, final_loss REAL,
        seconds_total REAL NOT NULL, seconds_per_round REAL NOT NULL,
        config TEXT NOT NULL
    );
    CREATE TABLE rounds (
        run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        round INTEGER NOT NULL, outcome TEXT NOT NULL,
        updates INTEGER NOT NULL, dropped INTEGER NOT NULL,
        train_loss REAL, test_loss REAL, test_accuracy REAL, seconds REAL NOT NULL,
        PRIMARY KEY (run_id, round)
    );
    """,
    # The privacy ledger: every DP mechanism event a run composed, in order, with the
    # run's DP unit, so reports and audits name what was protected and how.
    2: """
    CREATE TABLE privacy_ledger (
        run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        round INTEGER NOT NULL,
        unit TEXT NOT NULL CHECK (unit IN ('client', 'example')),
        placement TEXT NOT NULL,
        sampling TEXT NOT NULL,
        event TEXT NOT NULL,
        epsilon REAL NOT NULL, delta REAL NOT NULL, accountant TEXT NOT NULL,
        PRIMARY KEY (run_id, seq)
    );
    """,
    # Audits of a run (`privml audit ... --run ID`): the report's JSON (findings, checks
    # passed, figures), so that `privml report` shows what was found and when.
    3: """
    CREATE TABLE audits (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        audited_at TEXT NOT NULL,
        kind TEXT NOT NULL,
        report TEXT NOT NULL
    );
    CREATE INDEX audits_run ON audits(run_id);
    """,
}


def default_db() -> Path:
    return privml_home() / "runs.db"


@dataclass(frozen=True, slots=True)
class RunRow:
    id: int
    started_at: str
    kind: str
    dataset: str
    model: str
    strategy: str
    clients: int
    rounds: int
    final_accuracy: float | None
    final_loss: float | None
    seconds_total: float
    seconds_per_round: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class RunStore:
    """Past runs and their per-round figures."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_db()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(private_file(self.path))
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise DataError(f"run database {self.path} is unreadable: {exc}") from exc

    def _migrate(self) -> None:
        (version,) = self._db.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            raise DataError(f"run database {self.path} has schema {version}, newer than "
                            f"this privml ({SCHEMA_VERSION}); upgrade privml")
        for target in range(version + 1, SCHEMA_VERSION + 1):
            with self._db:
                self._db.executescript(_MIGRATIONS[target])
                self._db.execute(f"PRAGMA user_version = {target}")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, result: SimResult, *, kind: str = "sim") -> int:
        """Record a finished simulation; returns its id."""
        return self.add_summary(result.summary(), kind=kind)

    def add_summary(self, s: Mapping[str, Any], *, kind: str) -> int:
        """Record a finished run from its JSON summary (``privml sim``/``demo --json``)."""
        with self._db:
            cur = self._db.execute(
                "INSERT INTO runs (started_at, kind, dataset, model, strategy, clients, rounds,"
                " final_accuracy, final_loss, seconds_total, seconds_per_round, config)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (datetime.now(UTC).isoformat(timespec="seconds"), kind, s["dataset"],
                 s["model"], s["strategy"], s["clients"], s["rounds"], s["final_accuracy"],
                 s["final_loss"], s["seconds_total"], s["seconds_per_round"],
                 json.dumps(s.get("config", {}))))
            run_id = int(cur.lastrowid or 0)
            self._db.executemany(
                "INSERT INTO rounds VALUES (?,?,?,?,?,?,?,?,?)",
                [(run_id, r["round"], r["outcome"], r["updates"], r["dropped"],
                  r["train_loss"], r["test_loss"], r["test_accuracy"], r["seconds"])
                 for r in s.get("history", [])])
            self._db.executemany(
                "INSERT INTO privacy_ledger VALUES (?,?,?,?,?,?,?,?,?,?)",
                [(run_id, i, e["round"], e["unit"], e["placement"], e["sampling"],
                  json.dumps(e["event"]), e["epsilon"], e["delta"], e["accountant"])
                 for i, e in enumerate(s.get("ledger", []))])
        return run_id

    def run(self, run_id: int) -> tuple[RunRow, dict[str, Any]]:
        """One run's row and its configuration; DataError if there is no such run."""
        row = self._db.execute(
            "SELECT id, started_at, kind, dataset, model, strategy, clients, rounds,"
            " final_accuracy, final_loss, seconds_total, seconds_per_round, config"
            " FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise DataError(f"no run {run_id} in {self.path}")
        return RunRow(*row[:-1]), json.loads(row[-1])

    def ledger(self, run_id: int) -> list[dict[str, Any]]:
        """The run's privacy ledger, in the order the events were composed."""
        cur = self._db.execute(
            "SELECT round, unit, placement, sampling, event, epsilon, delta, accountant"
            " FROM privacy_ledger WHERE run_id = ? ORDER BY seq", (run_id,))
        names = [d[0] for d in cur.description]
        rows = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
        for row in rows:
            row["event"] = json.loads(row["event"])
        return rows

    def add_audit(self, run_id: int, report: Mapping[str, Any], *, kind: str) -> int:
        """Record an audit of run ``run_id`` (``AuditReport.to_dict()``); returns its id.
        DataError if there is no such run: an audit is never filed under nothing."""
        self.run(run_id)
        text = json.dumps(dict(report), default=str)  # metrics may hold tuples, paths
        with self._db:
            cur = self._db.execute(
                "INSERT INTO audits (run_id, audited_at, kind, report) VALUES (?,?,?,?)",
                (run_id, datetime.now(UTC).isoformat(timespec="seconds"), kind, text))
        return int(cur.lastrowid or 0)

    def audits(self, run_id: int) -> list[dict[str, Any]]:
        """The run's recorded audits, oldest first: ``id``, ``audited_at``, ``kind`` and
        ``report`` (the JSON the audit wrote)."""
        rows = self._db.execute(
            "SELECT id, audited_at, kind, report FROM audits WHERE run_id = ? ORDER BY id",
            (run_id,)).fetchall()
        return [{"id": i, "audited_at": at, "kind": kind, "report": json.loads(text)}
                for i, at, kind, text in rows]

    def latest(self) -> int:
        """The id of the newest run; DataError if there is none."""
        rows = self.runs(limit=1)
        if not rows:
            raise DataError(f"no runs in {self.path} yet: try `privml demo`")
        return rows[0].id

    def runs(self, *, limit: int = 20) -> list[RunRow]:
        """The most recent runs, newest first."""
        rows = self._db.execute(
            "SELECT id, started_at, kind, dataset, model, strategy, clients, rounds,"
            " final_accuracy, final_loss, seconds_total, seconds_per_round"
            " FROM runs ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [RunRow(*row) for row in rows]

    def rounds(self, run_id: int) -> list[dict[str, Any]]:
        cur = self._db.execute(
            "SELECT round, outcome, updates, dropped, train_loss, test_loss, test_accuracy,"
            " seconds FROM rounds WHERE run_id = ? ORDER BY round", (run_id,))
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
