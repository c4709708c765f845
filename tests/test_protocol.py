from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from privml import (
    ConfigError,
    DuplicateUpdateError,
    LateUpdateError,
    ProtocolError,
    UnknownClientError,
)
from privml.protocol import (
    Aggregate,
    ClientAvailable,
    ClientDropped,
    CloseEvaluation,
    CloseRound,
    EvaluationReceived,
    Finished,
    Outcome,
    Phase,
    RoundConfig,
    RoundMachine,
    SendEvaluation,
    SendTask,
    Tick,
    UpdateReceived,
)


def snapshot(m: RoundMachine) -> dict[str, object]:
    """Everything the machine holds, the RNG's position included."""
    state = {k: copy.deepcopy(v) for k, v in m.__dict__.items() if k != "_rng"}
    state["rng"] = m._rng.bit_generator.state
    return state


def machine(n_clients: int = 5, **kw: object) -> tuple[RoundMachine, list[SendTask]]:
    cfg = RoundConfig(**{"num_rounds": 3, "clients_per_round": 3, "round_timeout": 10.0, **kw})
    m = RoundMachine(cfg, rng=np.random.default_rng(0))
    tasks: list[SendTask] = []
    for i in range(n_clients):
        tasks += [a for a in m.handle(ClientAvailable(f"c{i}"), 0.0) if isinstance(a, SendTask)]
    return m, tasks


def test_waits_for_enough_clients_then_samples() -> None:
    m = RoundMachine(RoundConfig(num_rounds=1, clients_per_round=3), rng=np.random.default_rng(0))
    assert m.handle(ClientAvailable("a"), 0.0) == []
    assert m.handle(ClientAvailable("b"), 0.0) == []
    assert m.phase is Phase.WAITING
    actions = m.handle(ClientAvailable("c"), 1.0)
    assert [type(a) for a in actions] == [SendTask] * 3
    assert {a.client_id for a in actions if isinstance(a, SendTask)} == {"a", "b", "c"}
    assert all(a.deadline == 601.0 and a.round == 1 for a in actions if isinstance(a, SendTask))
    assert m.phase is Phase.TRAINING


def test_round_completes_when_all_answer_and_next_round_starts() -> None:
    m, tasks = machine()
    assert len(tasks) == 3
    out: list[object] = []
    for t in tasks:
        out = m.handle(UpdateReceived(t.client_id, 1, 10), 2.0)
    agg, close = out[0], out[1]
    assert isinstance(agg, Aggregate) and agg.round == 1
    assert agg.client_ids == tuple(t.client_id for t in tasks)
    assert isinstance(close, CloseRound) and close.outcome is Outcome.COMPLETED
    nxt = [a for a in out if isinstance(a, SendTask)]
    assert len(nxt) == 3 and all(a.round == 2 for a in nxt)
    assert m.round == 2 and m.phase is Phase.TRAINING


def test_sampling_is_seeded() -> None:
    _, a = machine(n_clients=20)
    _, b = machine(n_clients=20)
    assert [t.client_id for t in a] == [t.client_id for t in b]
    m = RoundMachine(RoundConfig(num_rounds=1, clients_per_round=3),
                     rng=np.random.default_rng(1))
    tasks = [x for i in range(20) for x in m.handle(ClientAvailable(f"c{i}"), 0.0)]
    assert tasks  # a different seed may pick others; it must still pick 3
    assert len(tasks) == 3


def test_fraction_sampling() -> None:
    cfg = RoundConfig(num_rounds=1, fraction=0.5, min_clients=4)
    assert cfg.sample_size(10) == 5 and cfg.sample_size(2) == 4
    m = RoundMachine(cfg, rng=np.random.default_rng(0))
    out = [a for i in range(4) for a in m.handle(ClientAvailable(f"c{i}"), 0.0)]
    assert len(out) == 4  # starts as soon as min_clients are there


def test_poisson_sampling_draws_each_client_independently() -> None:
    """No fixed size, no minimum, no top-up: what the privacy accounting assumes."""
    q, n, rounds = 0.3, 40, 200
    cfg = RoundConfig(num_rounds=rounds, poisson_rate=q, min_clients=n, round_timeout=1.0)
    m = RoundMachine(cfg, rng=np.random.default_rng(0))
    sizes: list[int] = []
    out = [a for i in range(n) for a in m.handle(ClientAvailable(f"c{i:02d}"), 0.0)]
    counts = dict.fromkeys((f"c{i:02d}" for i in range(n)), 0)
    now = 0.0
    while m.phase is not Phase.FINISHED:
        tasks = [a for a in out if isinstance(a, SendTask)]
        sizes.append(len(tasks))
        for t in tasks:
            counts[t.client_id] += 1
        now += 2.0  # nobody answers: each round closes at its deadline
        out = m.handle(Tick(), now)
    mean = np.mean(sizes)
    # Binomial(40, 0.3) per round: mean 12, sd 2.9; over 200 rounds the mean's sd is 0.2.
    assert abs(mean - q * n) < 1.0 and 1.5 < np.std(sizes) < 4.5
    assert min(sizes) < q * n < max(sizes)  # the size varies: no fixed-size draw
    assert all(abs(c / rounds - q) < 0.15 for c in counts.values())


def test_poisson_round_that_samples_nobody_fails_at_once() -> None:
    cfg = RoundConfig(num_rounds=2, poisson_rate=1e-9, round_timeout=5.0)
    m = RoundMachine(cfg, rng=np.random.default_rng(0))
    out = m.handle(ClientAvailable("a"), 0.0)
    closes = [a for a in out if isinstance(a, CloseRound)]
    assert closes and closes[0].outcome is Outcome.FAILED
    assert "no client was sampled" in closes[0].reason
    assert isinstance(out[-1], Finished)
    with pytest.raises(ValueError, match="exactly one"):
        RoundConfig(num_rounds=1, clients_per_round=2, poisson_rate=0.5)
    with pytest.raises(ValueError, match="poisson_rate"):
        RoundConfig(num_rounds=1, poisson_rate=1.5)


def test_deadline_expiry_closes_with_answers_so_far() -> None:
    m, tasks = machine(min_updates=1)
    m.handle(UpdateReceived(tasks[0].client_id, 1, 5), 1.0)
    assert m.handle(Tick(), 9.9) == []
    out = m.handle(Tick(), 10.0)
    close = next(a for a in out if isinstance(a, CloseRound))
    assert close.outcome is Outcome.COMPLETED
    assert close.accepted == (tasks[0].client_id,)
    assert set(close.timed_out) == {tasks[1].client_id, tasks[2].client_id}
    assert any(isinstance(a, Aggregate) for a in out)


def test_deadline_without_enough_updates_fails_round() -> None:
    m, tasks = machine(min_updates=2)
    m.handle(UpdateReceived(tasks[0].client_id, 1, 5), 1.0)
    out = m.handle(Tick(), 11.0)
    close = next(a for a in out if isinstance(a, CloseRound))
    assert close.outcome is Outcome.FAILED and "min_updates" in close.reason
    assert not any(isinstance(a, Aggregate) for a in out)
    assert m.round == 2 and m.failed == 1


def test_drops_close_round_early_and_leave_pool() -> None:
    m, tasks = machine()
    m.handle(UpdateReceived(tasks[0].client_id, 1, 5), 1.0)
    m.handle(ClientDropped(tasks[1].client_id), 1.0)
    out = m.handle(ClientDropped(tasks[2].client_id), 2.0)
    close = next(a for a in out if isinstance(a, CloseRound))
    assert close.dropped == (tasks[1].client_id, tasks[2].client_id)
    assert close.outcome is Outcome.COMPLETED
    assert tasks[1].client_id not in m.available
    # only 3 clients remain available: round 2 samples exactly them
    assert m.phase is Phase.TRAINING and len(m.available) == 3


def test_late_update_refused_with_distinct_error_and_no_state_change() -> None:
    m, tasks = machine(min_updates=1)
    m.handle(UpdateReceived(tasks[0].client_id, 1, 5), 1.0)
    m.handle(Tick(), 10.0)  # round 1 closes; tasks[1] timed out
    before = snapshot(m)
    with pytest.raises(LateUpdateError, match="round 1 is closed"):
        m.handle(UpdateReceived(tasks[1].client_id, 1, 5), 11.0)
    assert snapshot(m) == before


def test_dropped_client_update_is_late() -> None:
    m, tasks = machine()
    m.handle(ClientDropped(tasks[0].client_id), 1.0)
    with pytest.raises(LateUpdateError, match="dropped"):
        m.handle(UpdateReceived(tasks[0].client_id, 1, 5), 1.5)


def test_duplicate_update_refused() -> None:
    m, tasks = machine()
    m.handle(UpdateReceived(tasks[0].client_id, 1, 5), 1.0)
    before = m.accepted
    with pytest.raises(DuplicateUpdateError):
        m.handle(UpdateReceived(tasks[0].client_id, 1, 5), 1.1)
    assert m.accepted == before


def test_unsampled_and_unknown_clients_refused() -> None:
    m, tasks = machine()
    outsider = next(c for c in m.available if c not in {t.client_id for t in tasks})
    with pytest.raises(UnknownClientError):
        m.handle(UpdateReceived(outsider, 1, 5), 1.0)
    with pytest.raises(UnknownClientError):
        m.handle(ClientDropped("nobody"), 1.0)


def test_future_round_refused() -> None:
    m, tasks = machine()
    with pytest.raises(ProtocolError, match="has not started"):
        m.handle(UpdateReceived(tasks[0].client_id, 2, 5), 1.0)


def test_finishes_after_num_rounds_and_refuses_more() -> None:
    m, tasks = machine()
    finished = None
    for r in (1, 2, 3):
        ids = [t.client_id for t in tasks]
        out: list[object] = []
        for cid in ids:
            out = m.handle(UpdateReceived(cid, r, 1), float(r))
        tasks = [a for a in out if isinstance(a, SendTask)]
        finished = next((a for a in out if isinstance(a, Finished)), None)
    assert finished == Finished(rounds=3, completed=3, failed=0)
    assert m.phase is Phase.FINISHED
    with pytest.raises(LateUpdateError):
        m.handle(UpdateReceived("c0", 3, 1), 9.0)
    assert m.handle(Tick(), 100.0) == []


@pytest.mark.parametrize("kw", [
    {"num_rounds": 0, "clients_per_round": 1},
    {"num_rounds": 1},
    {"num_rounds": 1, "clients_per_round": 2, "fraction": 0.5},
    {"num_rounds": 1, "fraction": 0.0},
    {"num_rounds": 1, "fraction": 1.5},
    {"num_rounds": 1, "clients_per_round": 0},
    {"num_rounds": 1, "clients_per_round": 2, "min_updates": 3},
    {"num_rounds": 1, "clients_per_round": 2, "round_timeout": 0.0},
    {"num_rounds": 1, "clients_per_round": 2, "round_timeout": float("nan")},
    {"num_rounds": 1, "clients_per_round": 2, "eval_every": -1},
    {"num_rounds": 1, "clients_per_round": 2, "eval_every": 1, "eval_clients": 0},
    {"num_rounds": 1, "clients_per_round": 2, "eval_every": 1, "eval_timeout": 0.0},
])
def test_bad_config(kw: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        RoundConfig(**kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("make", [
    lambda: UpdateReceived("", 1, 1),
    lambda: UpdateReceived("a", 0, 1),
    lambda: UpdateReceived("a", 1, 0),
    lambda: UpdateReceived("a", True, 1),
    lambda: ClientAvailable(None),
    lambda: EvaluationReceived("a", 1, -1),
    lambda: EvaluationReceived("a", 0, 3),
])
def test_malformed_events_refused(make: object) -> None:
    with pytest.raises(ProtocolError):
        make()  # type: ignore[operator]


events = st.one_of(
    st.builds(ClientAvailable, st.sampled_from([f"c{i}" for i in range(6)])),
    st.builds(ClientDropped, st.sampled_from([f"c{i}" for i in range(6)])),
    st.builds(UpdateReceived, st.sampled_from([f"c{i}" for i in range(6)]),
              st.integers(1, 4), st.integers(1, 50)),
    st.builds(EvaluationReceived, st.sampled_from([f"c{i}" for i in range(6)]),
              st.integers(1, 4), st.integers(0, 50)),
    st.just(Tick()),
)


@given(st.lists(st.tuples(events, st.floats(0, 5)), max_size=60), st.integers(0, 3))
def test_invariants_under_any_event_sequence(seq: list[tuple[object, float]],
                                             eval_every: int) -> None:
    m = RoundMachine(RoundConfig(num_rounds=4, clients_per_round=2, round_timeout=3.0,
                                 eval_every=eval_every, eval_timeout=1.0),
                     rng=np.random.default_rng(0))
    now = 0.0
    aggregated: list[int] = []
    evaluated: list[int] = []
    for event, dt in seq:
        now += dt
        before = snapshot(m)
        try:
            actions = m.handle(event, now)  # type: ignore[arg-type]
        except ProtocolError:
            assert snapshot(m) == before  # a refused event changes nothing
            continue
        for a in actions:
            if isinstance(a, Aggregate):
                assert a.client_ids and len(set(a.client_ids)) == len(a.client_ids)
                aggregated.append(a.round)
            if isinstance(a, CloseEvaluation):
                assert m.config.evaluates_after(a.round)
                assert set(a.reported).isdisjoint(a.dropped + a.timed_out)
                evaluated.append(a.round)
        assert set(m.accepted) <= set(m.sampled)
        assert set(m.reported) <= set(m.sampled)
        assert not (m.accepted and m.reported)  # a round trains or evaluates, never both
        assert m.round <= 4
    assert aggregated == sorted(set(aggregated))  # each round aggregated at most once, in order
    assert evaluated == sorted(set(evaluated))


def _run(m: RoundMachine, clients: list[str], *, now: float = 0.0) -> list[object]:
    """Drive ``m`` to the end with every sampled client answering at once."""
    log: list[object] = []
    pending = [a for c in clients for a in m.handle(ClientAvailable(c), now)]
    while pending:
        a = pending.pop(0)
        log.append(a)
        if isinstance(a, SendTask):
            pending += m.handle(UpdateReceived(a.client_id, a.round, 10), now)
        elif isinstance(a, SendEvaluation):
            pending += m.handle(EvaluationReceived(a.client_id, a.round, 5), now)
    return log


def test_evaluation_rounds_follow_every_kth_round_and_the_last() -> None:
    m = RoundMachine(RoundConfig(num_rounds=5, clients_per_round=2, eval_every=2,
                                 eval_clients=3), rng=np.random.default_rng(0))
    log = _run(m, ["a", "b", "c", "d"])
    kinds = [(type(a).__name__, getattr(a, "round", None)) for a in log
             if isinstance(a, CloseRound | CloseEvaluation)]
    assert kinds == [("CloseRound", 1), ("CloseRound", 2), ("CloseEvaluation", 2),
                     ("CloseRound", 3), ("CloseRound", 4), ("CloseEvaluation", 4),
                     ("CloseRound", 5), ("CloseEvaluation", 5)]
    evals = [a for a in log if isinstance(a, CloseEvaluation)]
    assert all(len(e.reported) == 3 for e in evals)
    # Training waits for the evaluation: no task of round 3 before round 2's evaluation closes.
    i_eval = log.index(evals[0])
    assert all(not (isinstance(a, SendTask) and a.round == 3) for a in log[:i_eval])
    assert isinstance(log[-1], Finished) and m.phase is Phase.FINISHED


def test_evaluation_round_refusals_and_deadline() -> None:
    m = RoundMachine(RoundConfig(num_rounds=2, clients_per_round=2, eval_every=1,
                                 round_timeout=10.0, eval_timeout=2.0),
                     rng=np.random.default_rng(0))
    for c in ("a", "b", "c"):
        m.handle(ClientAvailable(c), 0.0)
    with pytest.raises(LateUpdateError):  # training, not evaluating
        m.handle(EvaluationReceived("a", 1, 3), 0.0)
    for c in m.sampled:
        m.handle(UpdateReceived(c, 1, 10), 0.5)
    assert m.phase is Phase.EVALUATING and len(m.sampled) == 2
    outsider = next(c for c in ("a", "b", "c") if c not in m.sampled)
    first, second = m.sampled
    with pytest.raises(UnknownClientError):
        m.handle(EvaluationReceived(outsider, 1, 3), 1.0)
    with pytest.raises(LateUpdateError):  # training updates are closed for round 1
        m.handle(UpdateReceived(first, 1, 3), 1.0)
    with pytest.raises(LateUpdateError):  # wrong round
        m.handle(EvaluationReceived(first, 2, 3), 1.0)
    assert m.handle(EvaluationReceived(first, 1, 0), 1.0) == []  # zero examples: allowed
    with pytest.raises(DuplicateUpdateError):
        m.handle(EvaluationReceived(first, 1, 3), 1.0)
    out = m.handle(Tick(), 2.6)  # the evaluation deadline (2 s) passed; round 2 starts
    close = next(a for a in out if isinstance(a, CloseEvaluation))
    assert close.reported == (first,) and close.timed_out == (second,)
    assert m.phase is Phase.TRAINING and m.round == 2


def test_evaluation_sample_is_independent_of_enrolment_order() -> None:
    def evaluators(order: list[str]) -> tuple[str, ...]:
        m = RoundMachine(RoundConfig(num_rounds=1, clients_per_round=6, eval_every=1,
                                     eval_clients=2),
                         rng=np.random.default_rng(0),
                         round_rng=lambda r: np.random.default_rng([7, r]))
        log = [a for c in order for a in m.handle(ClientAvailable(c), 0.0)]
        for c in m.sampled:
            log += m.handle(UpdateReceived(c, 1, 1), 0.0)
        return tuple(a.client_id for a in log if isinstance(a, SendEvaluation))

    names = [f"c{i}" for i in range(6)]
    assert evaluators(names) == evaluators(names[::-1])
    assert len(evaluators(names)) == 2


def test_stop_abandons_the_open_round() -> None:
    m = RoundMachine(RoundConfig(num_rounds=3, clients_per_round=1),
                     rng=np.random.default_rng(0))
    m.handle(ClientAvailable("a"), 0.0)
    assert m.phase is Phase.TRAINING
    out = m.stop()
    assert out == [Finished(1, 0, 0)] and m.phase is Phase.FINISHED and not m.sampled
    assert m.stop() == []
    with pytest.raises(LateUpdateError):
        m.handle(UpdateReceived("a", 1, 3), 0.0)


def test_resume_from_a_later_round() -> None:
    cfg = RoundConfig(num_rounds=5, clients_per_round=2)
    m = RoundMachine(cfg, rng=np.random.default_rng(0), first_round=4)
    out = [a for c in ("a", "b") for a in m.handle(ClientAvailable(c), 0.0)]
    assert {a.round for a in out if isinstance(a, SendTask)} == {4}
    with pytest.raises(ConfigError):
        RoundMachine(cfg, rng=np.random.default_rng(0), first_round=6)
