"""The coordinator core behind the HTTPS server: every refusal has its code and changes nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from privml import params as pm
from privml._exceptions import (
    DuplicateUpdateError,
    LateUpdateError,
    ParamsError,
    PeerError,
    ProtocolError,
    ReplayError,
    UnknownClientError,
)
from privml.protocol import Phase
from privml.transport._coordinator import Coordinator, EvaluationReport, RunConfig, UpdateMeta
from privml.transport._store import CoordinatorStore

SPEC = {"w": (3, 2), "b": (2,)}


def initial() -> pm.Params:
    return {k: np.zeros(s, np.float32) for k, s in SPEC.items()}


def delta(value: float) -> pm.Params:
    return {k: np.full(s, value, np.float32) for k, s in SPEC.items()}


def make(*, store: CoordinatorStore | None = None, **kw: object) -> Coordinator:
    cfg = RunConfig(**{"rounds": 2, "clients_per_round": 2, "round_timeout": 10.0, **kw})
    c = Coordinator(cfg, run_id="run-1", model_spec_json="{}", initial=initial(), store=store)
    for name in ("alice", "bob", "carol"):
        c.enrol(name, 0.0)
    return c


def sampled(c: Coordinator) -> list[str]:
    return [n for n in ("alice", "bob", "carol") if c.task(n, 0.0)["action"] == "train"]


def meta(round_: int = 1, uid: str = "update-0001", n: int = 10, run: str = "run-1") -> UpdateMeta:
    return UpdateMeta(run=run, round=round_, update_id=uid, num_examples=n)


def snapshot(c: Coordinator) -> tuple[object, ...]:
    return (c.etag, list(c._accepted), dict(c._seen_ids), c.machine.round,
            c.machine.accepted, c.machine.phase)


def test_round_aggregates_example_weighted() -> None:
    c = make()
    a, b = sampled(c)
    etag0 = c.etag
    c.submit(a, meta(uid="aaaaaaaa1", n=10), pm.encode(delta(1.0)), 1.0)
    c.submit(b, meta(uid="bbbbbbbb1", n=30), pm.encode(delta(2.0)), 1.0)
    assert c.etag != etag0
    np.testing.assert_allclose(c.params["w"], 1.75)
    assert c.history[-1].accepted == (a, b)
    assert c.task(a, 2.0)["action"] in ("train", "wait")


def test_retry_with_same_id_and_body_is_idempotent() -> None:
    c = make()
    a, _ = sampled(c)
    body = pm.encode(delta(1.0))
    first = c.submit(a, meta(uid="retry-0001"), body, 1.0)
    again = c.submit(a, meta(uid="retry-0001"), body, 1.1)
    assert first["duplicate"] is False and again["duplicate"] is True
    assert list(c._accepted) == [a]


BAD = [
    ("wrong shape", lambda a: (a, meta(), pm.encode({"w": np.zeros((2, 3), np.float32),
                                                     "b": np.zeros(2, np.float32)})),
     ParamsError, "invalid_params"),
    ("missing tensor", lambda a: (a, meta(), pm.encode({"w": np.zeros((3, 2), np.float32)})),
     ParamsError, "invalid_params"),
    ("garbage", lambda a: (a, meta(), b"\x00" * 100), ParamsError, "invalid_params"),
    ("wrong run", lambda a: (a, meta(run="other"), pm.encode(delta(1))), ProtocolError,
     "wrong_run"),
    ("future round", lambda a: (a, meta(round_=2), pm.encode(delta(1))), ProtocolError,
     "protocol_error"),
    ("not sampled", None, UnknownClientError, "not_sampled"),
]


@pytest.mark.parametrize("label, make_req, exc, code", BAD, ids=[b[0] for b in BAD])
def test_bad_updates_refused_and_change_nothing(label, make_req, exc, code) -> None:  # type: ignore[no-untyped-def]
    c = make()
    a, b = sampled(c)
    if make_req is None:
        outsider = next(n for n in ("alice", "bob", "carol") if n not in (a, b))
        req = (outsider, meta(), pm.encode(delta(1)))
    else:
        req = make_req(a)
    before = snapshot(c)
    with pytest.raises(exc) as info:
        c.submit(*req, 1.0)
    assert info.value.code == code and isinstance(info.value, PeerError)
    assert snapshot(c) == before
    # and the round still aggregates exactly as it would have without the bad request
    c.submit(a, meta(uid="good-a-0001"), pm.encode(delta(1.0)), 2.0)
    c.submit(b, meta(uid="good-b-0001"), pm.encode(delta(3.0)), 2.0)
    np.testing.assert_allclose(c.params["b"], 2.0)


def test_nan_too_large_norm_duplicate_replay_late() -> None:
    c = make(norm_bound=1.0, max_update_bytes=2048)
    a, b = sampled(c)
    nan = delta(0.1)
    nan["w"][0, 0] = np.nan
    from safetensors.numpy import save

    raw = save(nan, metadata={"format": "privml.params", "version": "1",
                              "order": '["w", "b"]'})
    with pytest.raises(ParamsError, match="NaN"):
        c.submit(a, meta(), raw, 1.0)
    with pytest.raises(ParamsError) as big:
        c.submit(a, meta(), b"x" * 4096, 1.0)
    assert big.value.code == "too_large" and big.value.status == 413
    with pytest.raises(ParamsError) as norm:
        c.submit(a, meta(), pm.encode(delta(5.0)), 1.0)
    assert norm.value.code == "norm_exceeded"
    c.submit(a, meta(uid="first-0001"), pm.encode(delta(0.1)), 1.0)
    with pytest.raises(DuplicateUpdateError):
        c.submit(a, meta(uid="second-0001"), pm.encode(delta(0.1)), 1.0)
    with pytest.raises(ReplayError):
        c.submit(b, meta(uid="first-0001"), pm.encode(delta(0.2)), 1.0)
    c.tick(11.0)  # deadline: round 1 closes with alice only
    assert c.history[-1].accepted == (a,)
    with pytest.raises(LateUpdateError):
        c.submit(b, meta(uid="late-0001"), pm.encode(delta(0.1)), 12.0)


def test_bad_metadata_refused() -> None:
    with pytest.raises(ProtocolError):
        UpdateMeta(run="r", round=1, update_id="short", num_examples=1)
    with pytest.raises(ProtocolError):
        UpdateMeta(run="r", round=1, update_id="long-enough-id", num_examples=0)


def test_finishes() -> None:
    c = make(rounds=1)
    a, b = sampled(c)
    c.submit(a, meta(uid="aaaaaaaa1"), pm.encode(delta(1.0)), 1.0)
    c.submit(b, meta(uid="bbbbbbbb1"), pm.encode(delta(1.0)), 1.0)
    assert c.finished and c.task(a, 2.0)["action"] == "done"


def _evaluators(c: Coordinator) -> list[str]:
    return [cid for cid in ("alice", "bob", "carol", "dave")
            if c.task(cid, 1.0)["action"] == "evaluate"]


def _report(round_: int = 1, n: int = 10, acc: float = 0.5, run: str = "run-1",
            loss: float = 1.0) -> EvaluationReport:
    return EvaluationReport(run=run, round=round_, num_examples=n, loss=loss, accuracy=acc)


def test_evaluation_round_is_example_weighted_and_stored(tmp_path: Path) -> None:
    store = CoordinatorStore(tmp_path / "c.db")
    c = make(rounds=2, eval_every=1, eval_clients=2, store=store)
    seen: list[dict[str, float]] = []
    c.on_evaluation = lambda close, summary: seen.append(summary)
    a, b = sampled(c)
    c.submit(a, meta(uid="aaaaaaaa1"), pm.encode(delta(1.0)), 1.0)
    assert c.task(b, 1.0)["action"] == "train"
    c.submit(b, meta(uid="bbbbbbbb1"), pm.encode(delta(1.0)), 1.0)
    assert c.machine.phase is Phase.EVALUATING
    e1, e2 = _evaluators(c)
    task = c.task(e1, 1.0)
    assert task["round"] == 1 and task["model_etag"] == c.etag
    assert c.evaluation(e1, _report(acc=0.5, n=10), 1.0)["duplicate"] is False
    assert c.evaluation(e1, _report(acc=0.5, n=10), 1.0)["duplicate"] is True  # a retry
    with pytest.raises(DuplicateUpdateError):  # a different second answer
        c.evaluation(e1, _report(acc=0.9, n=10), 1.0)
    with pytest.raises(ProtocolError, match="not the current run"):
        c.evaluation(e2, _report(run="other"), 1.0)
    c.evaluation(e2, _report(acc=1.0, n=30, loss=3.0), 1.0)
    assert seen == [{"round": 1.0, "examples": 40.0, "evaluators": 2.0, "loss": 2.5,
                     "accuracy": 0.875}]
    assert c.machine.phase is Phase.TRAINING and c.machine.round == 2
    (rec,) = store.evaluation_rounds("run-1")
    assert rec.summary() == seen[0] and set(rec.reported) == {e1, e2}
    assert c.status()["last_evaluation"] == seen[0]


def test_evaluation_refusals_change_nothing() -> None:
    c = make(rounds=1, eval_every=1, eval_clients=1)
    a, b = sampled(c)
    with pytest.raises(LateUpdateError):  # training, not evaluating
        c.evaluation(a, _report(), 1.0)
    for name, uid in ((a, "aaaaaaaa1"), (b, "bbbbbbbb1")):
        c.submit(name, meta(uid=uid), pm.encode(delta(1.0)), 1.0)
    (e,) = _evaluators(c)
    other = next(x for x in (a, b) if x != e)
    before = c.status()
    with pytest.raises(UnknownClientError):
        c.evaluation(other, _report(), 1.0)
    with pytest.raises(LateUpdateError):
        c.evaluation(e, _report(round_=2), 1.0)
    assert c.status() == before
    c.evaluation(e, _report(n=0), 1.0)  # holds no held-out data: weighs nothing
    assert c.finished and c.evaluations == [{"round": 1.0, "examples": 0.0,
                                              "evaluators": 1.0}]


def test_evaluation_report_validation() -> None:
    from pydantic import ValidationError

    for bad in ({"accuracy": 1.5}, {"loss": float("nan")}, {"num_examples": -1},
                {"round": 0}, {"extra": 1}):
        with pytest.raises(ValidationError):
            EvaluationReport(**{"run": "r", "round": 1, "num_examples": 1, "loss": 0.1,
                                "accuracy": 0.5, **bad})
