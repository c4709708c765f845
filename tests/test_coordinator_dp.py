"""Client-level DP at the coordinator: central noise, a ledger in the store, and a round past
the budget refused with the model and the ledger unchanged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from privml import params as pm
from privml.dp import PrivacyAccountant, fixed_size
from privml.transport._coordinator import Coordinator, RunConfig, UpdateMeta
from privml.transport._store import CoordinatorStore

SPEC = {"w": (3, 2), "b": (2,)}
NAMES = ("alice", "bob")


def _initial() -> pm.Params:
    return {k: np.zeros(s, np.float32) for k, s in SPEC.items()}


def _eps(rounds: int, z: float) -> float:
    acct = PrivacyAccountant(kind="rdp", relation="replace_one")
    acct.compose(fixed_size(sample_size=2, population=2, noise_multiplier=z), count=rounds)
    return acct.epsilon(delta=1e-5)


def _coordinator(store: CoordinatorStore | None = None, **kw: object) -> Coordinator:
    cfg = RunConfig(**{"rounds": 4, "clients_per_round": 2, "noise_multiplier": 2.0,
                       "clip_norm": 0.5, **kw})
    c = Coordinator(cfg, run_id="run-dp", model_spec_json="{}", initial=_initial(),
                    store=store)
    for name in NAMES:
        c.enrol(name, 0.0)
    return c


def _round(c: Coordinator, value: float) -> None:
    r = c.machine.round
    for i, name in enumerate(NAMES):
        body = pm.encode({k: np.full(s, value, np.float32) for k, s in SPEC.items()})
        c.submit(name, UpdateMeta("run-dp", r, f"upd-{r}-{i}-xxxxxxxx", 10), body, 1.0)


def test_central_noise_is_added_and_every_round_is_in_the_ledger(tmp_path: Path) -> None:
    with CoordinatorStore(tmp_path / "s.db") as store:
        c = _coordinator(store)
        _round(c, 3.0)  # norm 3*sqrt(8) >> C = 0.5: clipped
        ledger = store.ledger("run-dp")
        assert len(ledger) == 1 and ledger[0]["unit"] == "client"
        assert ledger[0]["event"]["type"] == "fixed_size"
        mean = pm.flatten(c.params)
        # Without noise the step would be exactly the clipped mean; with z*C = 1 noise on
        # the sum over 2 clients it is not.
        clipped = np.full(8, 3.0) * (0.5 / np.linalg.norm(np.full(8, 3.0)))
        assert not np.allclose(mean, clipped, atol=1e-3)
        status = c.status()["privacy"]
        assert status["epsilon"] == pytest.approx(_eps(1, 2.0))
        assert status["dp_unit"] == "client" and status["dp_placement"] == "central"


def test_the_round_past_the_budget_is_refused_model_and_ledger_unchanged(
        tmp_path: Path) -> None:
    target = (_eps(2, 2.0) + _eps(3, 2.0)) / 2
    with CoordinatorStore(tmp_path / "s.db") as store:
        c = _coordinator(store, target_epsilon=target)
        _round(c, 0.1)
        _round(c, 0.2)
        before = pm.flatten(c.params).copy()
        _round(c, 0.3)  # round 3 would pass the budget
        np.testing.assert_array_equal(pm.flatten(c.params), before)
        assert len(store.ledger("run-dp")) == 2
        assert c.finished and c.budget_refused is not None
        assert c.budget_refused["round"] == 3
        assert c.budget_refused["epsilon_would_be"] == pytest.approx(_eps(3, 2.0))
        assert store.run("run-dp").status == "stopped"


def test_a_resumed_coordinator_keeps_the_budget_already_spent(tmp_path: Path) -> None:
    with CoordinatorStore(tmp_path / "s.db") as store:
        c = _coordinator(store)
        _round(c, 0.1)
        _round(c, 0.1)
    with CoordinatorStore(tmp_path / "s.db") as store:
        again = Coordinator.resume(store, "run-dp")
        assert again.privacy is not None
        assert again.privacy.dp.accountant.epsilon(delta=1e-5) == pytest.approx(_eps(2, 2.0))
        assert len(again.privacy.dp.ledger) == 2


def test_dp_settings_are_checked() -> None:
    # with secure aggregation the noise is distributed, calibrated for the fewest survivors
    assert RunConfig(noise_multiplier=1.0, secagg=True, clients_per_round=8).noisers() == 4
    with pytest.raises(ValueError, match="clip_norm"):
        RunConfig(noise_multiplier=1.0, clip_norm=-1.0)


# ---- example-level DP: DP-SGD on every client, the coordinator keeps the ledger ------------

def _example_eps(rounds: int, z: float, q: float = 0.25, epochs: int = 1) -> float:
    from privml.dp import dpsgd_steps, poisson

    acct = PrivacyAccountant(kind="rdp", relation="add_or_remove")
    acct.compose(poisson(q=q, noise_multiplier=z), count=rounds * dpsgd_steps(epochs, q))
    return acct.epsilon(delta=1e-5)


def _example(store: CoordinatorStore | None = None, **kw: object) -> Coordinator:
    return _coordinator(store, **{"dp_unit": "example", "dp_sample_rate": 0.25, "epochs": 1,
                                  "noise_multiplier": 1.5, **kw})


def test_example_level_tasks_carry_the_dp_sgd_settings_and_each_round_is_charged(
        tmp_path: Path) -> None:
    with CoordinatorStore(tmp_path / "s.db") as store:
        c = _example(store)
        task = c.task("alice", 0.5)
        assert task["action"] == "train"
        assert task["train"]["dp"] == {"noise_multiplier": 1.5, "max_grad_norm": 0.5,
                                       "sample_rate": 0.25, "steps": 4}
        _round(c, 0.1)
        _round(c, 0.1)
        ledger = store.ledger("run-dp")
        assert [e["round"] for e in ledger] == [1, 2]
        assert {e["unit"] for e in ledger} == {"example"}
        assert ledger[0]["event"] == {"type": "repeated", "count": 4, "event": {
            "type": "poisson", "q": 0.25,
            "event": {"type": "gaussian", "noise_multiplier": 1.5}}}
        status = c.status()["privacy"]
        assert status["dp_unit"] == "example" and status["steps_per_round"] == 4
        assert status["epsilon"] == pytest.approx(_example_eps(2, 1.5))
        # No central noise: the aggregate is the plain weighted mean of the updates.
        np.testing.assert_allclose(pm.flatten(c.params), np.full(8, 0.2), rtol=1e-5)


def test_example_level_calibration_spends_the_target_over_the_run() -> None:
    c = _example(noise_multiplier=None, target_epsilon=3.0, rounds=4)
    assert c.privacy is not None
    z = c.privacy.dp.z
    assert 3.0 - 1e-2 <= _example_eps(4, z) <= 3.0


def test_example_level_round_past_the_budget_gets_no_task(tmp_path: Path) -> None:
    target = (_example_eps(2, 1.5) + _example_eps(3, 1.5)) / 2
    with CoordinatorStore(tmp_path / "s.db") as store:
        c = _example(store, target_epsilon=target)
        _round(c, 0.1)
        _round(c, 0.1)
        before = pm.flatten(c.params).copy()
        # Round 3 is refused before any task goes out: nobody trains for it.
        assert c.finished and c.budget_refused is not None
        assert c.budget_refused["round"] == 3
        assert c.budget_refused["epsilon_would_be"] == pytest.approx(_example_eps(3, 1.5))
        assert c.task("alice", 2.0)["action"] == "done"
        np.testing.assert_array_equal(pm.flatten(c.params), before)
        assert len(store.ledger("run-dp")) == 2
        assert store.run("run-dp").status == "stopped"


def test_example_level_resume_keeps_the_spent_budget(tmp_path: Path) -> None:
    with CoordinatorStore(tmp_path / "s.db") as store:
        c = _example(store)
        _round(c, 0.1)
    with CoordinatorStore(tmp_path / "s.db") as store:
        again = Coordinator.resume(store, "run-dp")
        assert again.privacy is not None and again.privacy.example_level
        assert again.privacy.dp.accountant.epsilon(delta=1e-5) == pytest.approx(
            _example_eps(1, 1.5))
        for name in NAMES:
            again.enrol(name, 0.0)
        _round(again, 0.1)  # the interrupted round 2 is charged once, when it closes
        assert [e["round"] for e in store.ledger("run-dp")] == [1, 2]


def test_example_level_settings_are_checked() -> None:
    RunConfig(noise_multiplier=1.0, dp_unit="example", secagg=True)  # combines with secagg
    with pytest.raises(ValueError, match="dp_unit"):
        RunConfig(noise_multiplier=1.0, dp_unit="record")
    with pytest.raises(ValueError, match="dp_sample_rate"):
        RunConfig(noise_multiplier=1.0, dp_unit="example", dp_sample_rate=1.5)
    with pytest.raises(ValueError, match="FedProx"):
        RunConfig(noise_multiplier=1.0, dp_unit="example", strategy="fedprox")


def test_the_coordinators_step_count_is_the_one_dp_sgd_runs() -> None:
    from privml.dp import dpsgd_steps
    from privml.train._dpsgd import steps_per_epoch

    for q in (0.001, 0.07, 0.15, 0.3, 0.5, 0.51, 1.0):
        for epochs in (1, 3):
            assert dpsgd_steps(epochs, q) == epochs * steps_per_epoch(q)


def test_adaptive_clipping_at_the_coordinator(tmp_path: Path) -> None:
    """Updates far above the starting bound: it grows round by round, each ledger entry
    names the bound it used."""
    with CoordinatorStore(tmp_path / "s.db") as store:
        c = _coordinator(store, noise_multiplier=0.1, clip_norm=0.01, clip_quantile=0.5)
        for value in (1.0, 1.0, 1.0):
            _round(c, value)
        bounds = [e["clip_norm"] for e in store.ledger("run-dp")]
        assert bounds[0] == 0.01 and bounds[0] < bounds[1] < bounds[2]
    with pytest.raises(ValueError, match="clip_quantile"):
        RunConfig(noise_multiplier=1.0, dp_unit="example", clip_quantile=0.5)
