"""Crash and resume: a run resumed from its store ends exactly where the uninterrupted one does.

Clients "train" deterministically: the delta is a function of (client, round, global model),
so two runs that sample the same clients and aggregate the same updates end with the same
model, and any lost, doubled or resampled update shows up as a different one.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from privml import params as pm
from privml._exceptions import ConfigError, DataError, ProtocolError
from privml.protocol import (
    Aggregate,
    ClientAvailable,
    Phase,
    RoundConfig,
    RoundMachine,
    SendTask,
    Tick,
)
from privml.transport._coordinator import Coordinator, EvaluationReport, RunConfig, UpdateMeta
from privml.transport._store import CoordinatorStore

SPEC = {"w": (3, 2), "b": (2,)}
CLIENTS = ("alice", "bob", "carol")
RUN = "run-resume"
MODELS: dict[tuple[str, int], pm.Params] = {}  # the reference run's model after each round
ROOT = Path(__file__).resolve().parents[1]


def initial() -> pm.Params:
    return {k: np.full(s, 0.5, np.float32) for k, s in SPEC.items()}


def train(client: str, round_: int, params: pm.Params) -> pm.Params:
    """A fake local training step whose result depends on who, when and from what model."""
    k = CLIENTS.index(client) + 1
    return {n: (0.1 * k * round_ - 0.05 * a).astype(np.float32) for n, a in params.items()}


def config(strategy: str = "fedadam") -> RunConfig:
    return RunConfig(rounds=3, clients_per_round=2, round_timeout=100.0, strategy=strategy,
                     seed=7)


def new(store: CoordinatorStore | None = None, strategy: str = "fedadam") -> Coordinator:
    return Coordinator(config(strategy), run_id=RUN, model_spec_json="{}", initial=initial(),
                       store=store)


def enrol_all(c: Coordinator, now: float = 0.0, *, reverse: bool = False) -> None:
    for name in reversed(CLIENTS) if reverse else CLIENTS:
        c.enrol(name, now)


def uid(client: str, round_: int) -> str:
    return f"{client}-round-{round_}"


def submit(c: Coordinator, client: str, now: float = 1.0,
           sent: dict[str, bytes] | None = None) -> dict[str, object]:
    task = c.task(client, now)
    assert task["action"] == "train", task
    r = int(task["round"])
    body = pm.encode(train(client, r, c.params))
    if sent is not None:  # a retry resends these very bytes (encodings need not repeat)
        sent[uid(client, r)] = body
    return c.submit(client, UpdateMeta(run=RUN, round=r, update_id=uid(client, r),
                                       num_examples=10 * (CLIENTS.index(client) + 1)),
                    body, now)


def drive(c: Coordinator, *, max_updates: int = 100, now: float = 1.0,
          sent: dict[str, bytes] | None = None) -> int:
    """Let every client with a task submit until the run ends or ``max_updates`` are sent."""
    count = 0
    while not c.finished and count < max_updates:
        ready = [n for n in CLIENTS if c.task(n, now)["action"] == "train"]
        assert ready, c.status()
        submit(c, ready[0], now, sent)
        count += 1
    return count


def reference(strategy: str = "fedadam") -> Coordinator:
    a = new(strategy=strategy)
    a.on_round = lambda close, params, _: MODELS.__setitem__((strategy, close.round), params)
    enrol_all(a)
    drive(a)
    assert a.finished and len(a.history) == 3
    return a


def assert_same_run(a: Coordinator, b: Coordinator) -> None:
    assert b.finished
    assert [h.accepted for h in b.history] == [h.accepted for h in a.history]
    for name in SPEC:
        np.testing.assert_allclose(b.params[name], a.params[name], rtol=1e-6, atol=1e-7)
    assert b.state.step == a.state.step


def assert_counted_once(store: CoordinatorStore, a: Coordinator) -> None:
    rows = store.updates(RUN)
    assert sorted((u.round, u.client_id) for u in rows) == sorted(
        (h.round, c) for h in a.history for c in h.accepted)
    assert all(u.update_id == uid(u.client_id, u.round) for u in rows)
    assert all(u.delta is None for u in rows)  # every round closed: deltas dropped


@pytest.mark.parametrize(("strategy", "reverse"), [("fedavg", False), ("fedadam", False),
                                                   ("fedadam", True)])
def test_crash_mid_round_resumes_to_the_same_model(tmp_path: Path, strategy: str,
                                                   reverse: bool) -> None:
    """2 of 3 clients a round; after the crash the clients re-enrol (``reverse``: in the
    opposite order), and the later rounds still sample what the reference run sampled."""
    a = reference(strategy)
    db = tmp_path / "coord.db"
    first = CoordinatorStore(db)
    b = new(first, strategy)
    enrol_all(b)
    sent: dict[str, bytes] = {}
    drive(b, max_updates=3, sent=sent)  # round 1, and one update of round 2
    pre_crash = next(n for n in CLIENTS if n in b._accepted)
    pre_body = sent[uid(pre_crash, 2)]
    del b  # the crash: nothing of the process survives but the file

    store = CoordinatorStore(db)
    b = Coordinator.resume(store, RUN)
    assert b.machine.round == 2 and len(b.history) == 1
    enrol_all(b, 50.0, reverse=reverse)  # clients come back and re-enrol
    assert b.task(pre_crash, 50.0)["action"] == "wait"  # its update still counts
    again = b.submit(pre_crash, UpdateMeta(run=RUN, round=2, update_id=uid(pre_crash, 2),
                                           num_examples=10 * (CLIENTS.index(pre_crash) + 1)),
                     pre_body, 50.0)
    assert again["duplicate"] is True
    assert drive(b, now=50.0) == 3  # only the missing client of round 2, then round 3
    assert_same_run(a, b)
    assert_counted_once(store, a)
    assert {c for c, _, _ in store.clients(RUN)} == set(CLIENTS)
    assert store.run(RUN).status == "finished"
    first.close()
    store.close()


def test_crash_during_an_evaluation_round(tmp_path: Path) -> None:
    """The evaluation is not redone; training continues and ends with the same model."""
    # min_clients: after the restart, round 2 waits for all three clients, as it had them.
    cfg = RunConfig(**{**config().to_dict(), "eval_every": 1, "eval_clients": 2,
                       "min_clients": 3})
    a = Coordinator(RunConfig(**{**cfg.to_dict(), "eval_every": 0}), run_id=RUN,
                    model_spec_json="{}", initial=initial())  # the same run, no evaluation
    enrol_all(a)
    drive(a)
    with CoordinatorStore(tmp_path / "c.db") as s1:
        b = Coordinator(cfg, run_id=RUN, model_spec_json="{}", initial=initial(), store=s1)
        enrol_all(b)
        drive(b, max_updates=2)  # round 1 closes; its evaluation opens
        assert b.machine.phase is Phase.EVALUATING
    with CoordinatorStore(tmp_path / "c.db") as store:
        b = Coordinator.resume(store, RUN)
        assert b.machine.round == 2 and b.machine.phase is Phase.WAITING
        enrol_all(b, 50.0, reverse=True)
        while not b.finished:  # train when asked; answer evaluations when asked
            for name in CLIENTS:
                task = b.task(name, 50.0)
                if task["action"] == "train":
                    submit(b, name, 50.0)
                elif task["action"] == "evaluate":
                    b.evaluation(name, EvaluationReport(
                        run=RUN, round=task["round"], num_examples=5, loss=1.0,
                        accuracy=0.5), 50.0)
        assert_same_run(a, b)
        assert [e.round for e in store.evaluation_rounds(RUN)] == [2, 3]
        assert store.run(RUN).status == "finished"


def test_resume_before_any_round_started(tmp_path: Path) -> None:
    a = reference()
    with CoordinatorStore(tmp_path / "c.db") as s1:
        b = new(s1)
        b.enrol("alice", 0.0)  # one client is not enough to start a round
    with CoordinatorStore(tmp_path / "c.db") as store:
        b = Coordinator.resume(store, RUN)
        assert b.machine.phase is Phase.WAITING and b.machine.round == 1
        enrol_all(b)
        drive(b)
        assert_same_run(a, b)


def test_resume_finished_run(tmp_path: Path) -> None:
    with CoordinatorStore(tmp_path / "c.db") as s1:
        b = new(s1)
        enrol_all(b)
        drive(b)
        etag = b.etag
    with CoordinatorStore(tmp_path / "c.db") as store:
        r = Coordinator.resume(store, RUN)
        assert r.finished and r.task("alice", 0.0)["action"] == "done"
        assert r.etag == etag and r.machine.completed == 3
        with pytest.raises(ConfigError):  # an existing run is resumed, never overwritten
            new(store)


def _fail_inserts_into(db: Path, table: str) -> sqlite3.Connection:
    con = sqlite3.connect(db)
    con.execute(f"CREATE TRIGGER fail_{table} BEFORE INSERT ON {table} "
                "BEGIN SELECT RAISE(ABORT, 'disk full'); END")
    con.commit()
    return con


def test_failed_update_write_does_not_count(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    with CoordinatorStore(db) as store:
        c = new(store)
        enrol_all(c)
        who = next(n for n in CLIENTS if c.task(n, 0.0)["action"] == "train")
        con = _fail_inserts_into(db, "updates")
        before = (c.etag, dict(c._accepted), dict(c._seen_ids), c.machine.accepted)
        with pytest.raises(DataError, match="disk full"):
            submit(c, who)
        assert (c.etag, dict(c._accepted), dict(c._seen_ids), c.machine.accepted) == before
        assert store.updates(RUN) == []
        con.execute("DROP TRIGGER fail_updates")
        con.commit()
        con.close()
        assert submit(c, who)["duplicate"] is False  # the retry is accepted
        assert len(store.updates(RUN)) == 1


def test_failed_close_write_stops_the_run_and_resume_recovers(tmp_path: Path) -> None:
    a = reference()
    db = tmp_path / "c.db"
    s1 = CoordinatorStore(db)
    b = new(s1)
    enrol_all(b)
    drive(b, max_updates=3)
    con = _fail_inserts_into(db, "server_state")
    with pytest.raises(DataError):
        drive(b, max_updates=1)  # the last update of round 2 is kept, the close is not
    with pytest.raises(DataError, match="resume"):
        b.tick(2.0)
    con.execute("DROP TRIGGER fail_server_state")
    con.commit()
    con.close()
    with CoordinatorStore(db) as store:
        r = Coordinator.resume(store, RUN)
        assert r.machine.round == 2
        r.enrol("alice", 10.0)  # the restored round has every update: it closes at once
        assert len(r.history) == 2 and r.history[1].accepted == a.history[1].accepted
        after_2 = pm.decode(store.model(RUN, 2)[0])
        for name in SPEC:
            np.testing.assert_allclose(after_2[name], MODELS["fedadam", 2][name], rtol=1e-6)
        # Round 3 samples from whoever is back when it starts (here: fewer than in run A),
        # so only the rounds before the restart are compared.
        enrol_all(r, 10.0)
        drive(r, now=10.0)
        assert r.finished
        assert_counted_once(store, r)
    s1.close()


_CHILD = """
import os, signal, sys
sys.path.insert(0, {root!r})
from tests import test_resume as t
from privml.transport._store import CoordinatorStore
c = t.new(CoordinatorStore({db!r}))
t.enrol_all(c)
t.drive(c, max_updates=3)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_sigkill_mid_round(tmp_path: Path) -> None:
    a = reference()
    db = tmp_path / "c.db"
    child = subprocess.run([sys.executable, "-c", _CHILD.format(root=str(ROOT), db=str(db))],
                           check=False, capture_output=True, text=True, timeout=120)
    assert child.returncode == -signal.SIGKILL, child.stderr
    with CoordinatorStore(db) as store:
        assert [u.round for u in store.updates(RUN)] == [1, 1, 2]
        b = Coordinator.resume(store, RUN)
        enrol_all(b, 5.0)
        assert drive(b, now=5.0) == 3
        assert_same_run(a, b)
        assert_counted_once(store, a)


# ---- the RoundMachine hooks resume relies on ------------------------------------------------
def _per_round(round_: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([3, round_]))


def _run_rounds(m: RoundMachine, now: float = 0.0) -> list[tuple[str, ...]]:
    samples = []
    for name in "abcdef":
        m.handle(ClientAvailable(name), now)
    while m.phase is Phase.TRAINING:
        samples.append(m.sampled)
        m.handle(Tick(), m.deadline)
    return samples


def test_round_rng_makes_a_resumed_machine_sample_the_same() -> None:
    cfg = RoundConfig(num_rounds=4, clients_per_round=2, round_timeout=1.0)
    whole = _run_rounds(RoundMachine(cfg, rng=np.random.default_rng(0), round_rng=_per_round))
    later = _run_rounds(RoundMachine(cfg, rng=np.random.default_rng(99), round_rng=_per_round,
                                     first_round=3))
    assert len(whole) == 4 and later == whole[2:]


def test_restore_round() -> None:
    cfg = RoundConfig(num_rounds=2, clients_per_round=3, round_timeout=5.0)
    m = RoundMachine(cfg, rng=np.random.default_rng(0))
    with pytest.raises(ConfigError):
        m.restore_round(("a", "b"), {"c": 1}, 0.0)
    actions = m.restore_round(("a", "b", "c"), {"b": 4}, 10.0)
    assert actions == [SendTask("a", 1, 15.0), SendTask("c", 1, 15.0)]
    assert m.phase is Phase.TRAINING and m.pending == ("a", "c")
    with pytest.raises(ProtocolError):
        m.restore_round(("a",), {}, 0.0)
    done = RoundMachine(cfg, rng=np.random.default_rng(0))
    closing = done.restore_round(("a", "b"), {"a": 1, "b": 2}, 0.0)
    assert isinstance(closing[0], Aggregate) and closing[0].client_ids == ("a", "b")
    assert done.round == 2 and done.phase is Phase.WAITING
