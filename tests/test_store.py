"""The coordinator's SQLite store: schema versions, refusals, and all-or-nothing writes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from privml._exceptions import ConfigError, DataError
from privml.transport import _store
from privml.transport._store import (
    ClosedRound,
    CoordinatorStore,
    StoredState,
    StoredUpdate,
)

RUN = "run-1"
TABLES = {"runs", "rounds", "models", "updates", "clients", "security_events", "server_state"}


def fresh(path: Path) -> CoordinatorStore:
    s = CoordinatorStore(path, wallclock=lambda: "2026-01-01T00:00:00.000+00:00")
    s.create_run(RUN, config={"rounds": 2}, model_spec_json='{"m": 1}', model=b"model-0",
                 etag="etag-0")
    return s


def update(client: str = "alice", round_: int = 1, uid: str = "update-0001") -> StoredUpdate:
    return StoredUpdate(round_, client, uid, 10, "ab" * 32, {"loss": 0.5}, b"delta")


def closed(round_: int = 1, *, finished: bool = False,
           next_sample: tuple[str, ...] | None = None) -> ClosedRound:
    return ClosedRound(round_, "completed", ("alice",), (), ("bob",), "deadline",
                       f"model-{round_}".encode(), f"etag-{round_}",
                       StoredState(round_, b"m", None), finished, next_sample)


def version(path: Path) -> int:
    con = sqlite3.connect(path)
    try:
        return int(con.execute("PRAGMA user_version").fetchone()[0])
    finally:
        con.close()


def test_schema_created_at_current_version(tmp_path: Path) -> None:
    with fresh(tmp_path / "c.db") as s:
        names = {r[0] for r in s._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert names >= TABLES
        assert s._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert s._db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        run = s.run(RUN)
        assert (run.config, run.model_spec_json, run.status) == ({"rounds": 2}, '{"m": 1}',
                                                                 "running")
        assert s.model(RUN, 0) == (b"model-0", "etag-0")
        assert s.server_state(RUN, 0) == StoredState()
    assert version(tmp_path / "c.db") == _store.SCHEMA_VERSION


def test_round_trip(tmp_path: Path) -> None:
    with fresh(tmp_path / "c.db") as s:
        s.start_round(RUN, 1, ("alice", "bob"))
        s.record_enrolment(RUN, "carol")
        s.add_update(RUN, update())
        assert s.updates(RUN, round_=1) == [update()]
        s.close_round(RUN, closed(1, next_sample=("bob", "carol")))
        r1, r2 = s.rounds(RUN)
        assert (r1.outcome, r1.sampled, r1.accepted, r1.timed_out, r1.model_etag) == (
            "completed", ("alice", "bob"), ("alice",), ("bob",), "etag-1")
        assert (r2.round, r2.outcome, r2.sampled) == (2, "open", ("bob", "carol"))
        assert s.updates(RUN)[0].delta is None  # a closed round's deltas are dropped
        assert s.model(RUN, 1) == (b"model-1", "etag-1")
        assert s.server_state(RUN, 1) == StoredState(1, b"m", None)
        assert [c for c, _, _ in s.clients(RUN)] == ["alice", "carol"]
        s.record_refusal("mallory", "/v1/update", "replay", "update id reused", run_id=RUN)
        assert s.security_events()[0]["code"] == "replay"
        s.close_round(RUN, closed(2, finished=True))
        assert s.run(RUN).status == "finished"


def test_duplicate_run_update_id_and_client_refused(tmp_path: Path) -> None:
    with fresh(tmp_path / "c.db") as s:
        with pytest.raises(ConfigError):
            s.create_run(RUN, config={}, model_spec_json="{}", model=b"x", etag="x")
        s.start_round(RUN, 1, ("alice", "bob"))
        s.add_update(RUN, update())
        with pytest.raises(DataError):
            s.add_update(RUN, update(client="bob"))  # same update id
        with pytest.raises(DataError):
            s.add_update(RUN, update(uid="update-0002"))  # same client, same round
        with pytest.raises(DataError):
            s.close_round(RUN, closed(2))  # round 2 is not open
        assert len(s.updates(RUN)) == 1
        with pytest.raises(ConfigError):
            s.run("nope")


def test_update_is_one_transaction(tmp_path: Path) -> None:
    """A failure after the update row is written (on the client row) leaves neither."""
    with fresh(tmp_path / "c.db") as s:
        s.start_round(RUN, 1, ("alice",))
        s._db.execute("CREATE TRIGGER boom BEFORE INSERT ON clients "
                      "BEGIN SELECT RAISE(ABORT, 'disk full'); END")
        with pytest.raises(DataError, match="disk full"):
            s.add_update(RUN, update())
        assert s.updates(RUN) == [] and s.clients(RUN) == []
        s._db.execute("DROP TRIGGER boom")
        s.add_update(RUN, update())
        assert len(s.updates(RUN)) == 1


def test_close_round_is_one_transaction(tmp_path: Path) -> None:
    """A failure on the last statement (the next round's start) undoes the whole close."""
    with fresh(tmp_path / "c.db") as s:
        s.start_round(RUN, 1, ("alice",))
        s.add_update(RUN, update())
        s._db.execute("CREATE TRIGGER boom BEFORE INSERT ON rounds WHEN NEW.round = 2 "
                      "BEGIN SELECT RAISE(ABORT, 'disk full'); END")
        with pytest.raises(DataError):
            s.close_round(RUN, closed(1, next_sample=("alice",)))
        assert [r.outcome for r in s.rounds(RUN)] == ["open"]
        assert s.updates(RUN)[0].delta == b"delta"
        with pytest.raises(DataError):
            s.model(RUN, 1)
        with pytest.raises(DataError):
            s.server_state(RUN, 1)


def test_reopened_store_sees_everything(tmp_path: Path) -> None:
    s = fresh(tmp_path / "c.db")
    s.start_round(RUN, 1, ("alice",))
    s.add_update(RUN, update())
    # no close(): the process "dies" with the connection open
    with CoordinatorStore(tmp_path / "c.db") as again:
        assert again.run_ids() == [RUN] and again.updates(RUN) == [update()]
    s.close()


def test_newer_schema_refused(tmp_path: Path) -> None:
    fresh(tmp_path / "c.db").close()
    con = sqlite3.connect(tmp_path / "c.db")
    con.execute(f"PRAGMA user_version = {_store.SCHEMA_VERSION + 1}")
    con.commit()
    con.close()
    with pytest.raises(DataError, match="newer"):
        CoordinatorStore(tmp_path / "c.db")


def test_garbage_file_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    path.write_bytes(b"this is not a database at all " * 200)
    with pytest.raises(DataError, match="unreadable"):
        CoordinatorStore(path)


def test_migrations_run_forward_in_order(tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    fresh(tmp_path / "c.db").close()
    nxt = _store.SCHEMA_VERSION + 1
    monkeypatch.setitem(_store._MIGRATIONS, nxt, "ALTER TABLE runs ADD COLUMN note TEXT;"
                        "UPDATE runs SET note = 'migrated'")
    monkeypatch.setattr(_store, "SCHEMA_VERSION", nxt)
    with CoordinatorStore(tmp_path / "c.db") as s:
        assert s._db.execute("SELECT note FROM runs").fetchone() == ("migrated",)
        assert s.model(RUN, 0) == (b"model-0", "etag-0")  # data kept
    assert version(tmp_path / "c.db") == nxt


def test_a_version_1_database_is_migrated_to_the_current_schema(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as m:  # a database written by the first release
        m.setattr(_store, "SCHEMA_VERSION", 1)
        fresh(tmp_path / "c.db").close()
    assert version(tmp_path / "c.db") == 1
    with CoordinatorStore(tmp_path / "c.db") as s:
        assert s.model(RUN, 0) == (b"model-0", "etag-0")
        s.add_evaluation(RUN, "alice", round_=1, num_examples=10, loss=0.5, accuracy=0.9)
        s.close_evaluation(RUN, 1, reported=["alice"], missing=["bob"], reason="deadline",
                           summary={"examples": 10, "loss": 0.5, "accuracy": 0.9})
        (rec,) = s.evaluation_rounds(RUN)
        assert rec.summary() == {"round": 1.0, "examples": 10.0, "evaluators": 1.0,
                                 "loss": 0.5, "accuracy": 0.9}
        assert rec.missing == ("bob",)
    assert version(tmp_path / "c.db") == _store.SCHEMA_VERSION


def test_failed_migration_leaves_old_version(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    fresh(tmp_path / "c.db").close()
    current = _store.SCHEMA_VERSION
    monkeypatch.setitem(_store._MIGRATIONS, current + 1, "ALTER TABLE runs ADD COLUMN note "
                        "TEXT;SELECT no_such_function()")
    monkeypatch.setattr(_store, "SCHEMA_VERSION", current + 1)
    with pytest.raises(DataError):
        CoordinatorStore(tmp_path / "c.db")
    assert version(tmp_path / "c.db") == current
    monkeypatch.setattr(_store, "SCHEMA_VERSION", current)
    with CoordinatorStore(tmp_path / "c.db") as s:
        cols = [r[1] for r in s._db.execute("PRAGMA table_info(runs)")]
        assert "note" not in cols
