"""Robust strategies on their own (hypothesis), in the simulator, and refused under SecAgg/DP."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privml import ConfigError
from privml import params as pm
from privml.data import load_dataset
from privml.sim import SimConfig, run_simulation
from privml.strategies import (
    ClientUpdate,
    Krum,
    Median,
    MultiKrum,
    NormBound,
    ServerState,
    TrimmedMean,
    make_strategy,
)
from privml.transport._runconfig import RunConfig

ZERO = {"w": np.zeros(3, dtype=np.float32)}
finite = st.floats(-1e6, 1e6, allow_nan=False, width=32)


def _updates(rows: list[list[float]]) -> list[ClientUpdate]:
    return [ClientUpdate({"w": np.asarray(r, dtype=np.float32)}, 10) for r in rows]


def _delta(strategy: object, rows: list[list[float]]) -> np.ndarray:
    new, _ = strategy.aggregate(ZERO, _updates(rows), ServerState())  # type: ignore[attr-defined]
    return pm.flatten(new)


honest_rows = st.lists(st.lists(st.floats(-1, 1, width=32), min_size=3, max_size=3),
                       min_size=5, max_size=12)
bad_rows = st.lists(st.lists(finite, min_size=3, max_size=3), min_size=0, max_size=11)


@settings(deadline=None)
@given(honest=honest_rows, bad=bad_rows)
def test_median_ignores_any_minority(honest: list[list[float]], bad: list[list[float]]) -> None:
    bad = bad[:len(honest) - 1]  # strictly fewer arbitrary updates than honest ones
    out = _delta(Median(), honest + bad)
    h = np.asarray(honest, dtype=np.float32)
    assert (out >= h.min(axis=0) - 1e-6).all() and (out <= h.max(axis=0) + 1e-6).all()


@settings(deadline=None)
@given(honest=honest_rows, bad=bad_rows, trim=st.sampled_from([0.1, 0.2, 0.3, 0.4]))
def test_trimmed_mean_ignores_its_fraction(honest: list[list[float]], bad: list[list[float]],
                                           trim: float) -> None:
    n_max = len(honest) + len(bad)
    # keep only as many arbitrary updates as the trim removes at each end
    while bad and len(bad) > math.floor(trim * (len(honest) + len(bad))):
        bad = bad[:-1]
    assert len(honest) + len(bad) <= n_max
    out = _delta(TrimmedMean(trim=trim), honest + bad)
    h = np.asarray(honest, dtype=np.float32)
    assert (out >= h.min(axis=0) - 1e-5).all() and (out <= h.max(axis=0) + 1e-5).all()


@settings(deadline=None)
@given(honest=st.lists(st.lists(st.floats(-1, 1, width=32), min_size=3, max_size=3),
                       min_size=8, max_size=12),
       far=st.floats(50, 1e5), f_frac=st.sampled_from([0.1, 0.2, 0.3]))
def test_krum_picks_an_honest_update(honest: list[list[float]], far: float,
                                     f_frac: float) -> None:
    n_bad = 0
    while n_bad + 1 <= math.floor(f_frac * (len(honest) + n_bad + 1)):
        n_bad += 1
    # the attackers collude: one point far away (fewer than Krum's bound f)
    rows = honest + [[far, -far, far]] * n_bad
    chosen = Krum(byzantine=f_frac).selected(_updates(rows))
    assert chosen and all(i < len(honest) for i in chosen)
    multi = MultiKrum(byzantine=f_frac).selected(_updates(rows))
    assert all(i < len(honest) for i in multi) and len(multi) == len(rows) - math.floor(
        f_frac * len(rows))


def test_normbound_clips_a_boosted_update() -> None:
    rows = [[1.0, 0.0, 0.0]] * 4 + [[1000.0, 0.0, 0.0]]
    out = _delta(NormBound(), rows)
    assert out[0] == pytest.approx(1.0)  # the boosted one counts as a typical norm
    assert _delta(make_strategy("fedavg"), rows)[0] > 100


def test_robust_strategies_refuse_a_sum_and_bad_settings() -> None:
    with pytest.raises(ConfigError, match="individual updates"):
        Median().apply(ZERO, ZERO, ServerState())
    with pytest.raises(ConfigError, match="trim"):
        TrimmedMean(trim=0.5)
    with pytest.raises(ConfigError, match="n >= 2f"):
        Krum(byzantine=0.4).selected(_updates([[0.0, 0, 0]] * 4))
    with pytest.raises(ConfigError, match="unknown strategy"):
        make_strategy("bulyan")


@pytest.mark.parametrize("bad", [{"secagg": True}, {"noise_multiplier": 1.0}])
def test_robust_with_secagg_or_client_dp_is_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match="needs each client's update"):
        SimConfig(strategy="median", **bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="needs each client's update"):
        RunConfig(rounds=2, clients_per_round=2, strategy="krum",
                  **({"secagg": True} if "secagg" in bad else
                     {"noise_multiplier": 1.0, "dp_unit": "client"}))  # type: ignore[arg-type]


@pytest.mark.parametrize("strategy", ["median", "trimmed_mean", "multikrum", "normbound"])
def test_robust_strategies_train_in_the_simulator(strategy: str) -> None:
    digits = load_dataset("digits", seed=0)
    cfg = {"clients": 20, "per_round": 10, "rounds": 6, "epochs": 2, "model": "logreg",
           "strategy": strategy}
    inline = run_simulation(SimConfig(**cfg), dataset=digits)  # type: ignore[arg-type]
    pooled = run_simulation(SimConfig(**cfg, backend="local", workers=2),  # type: ignore[arg-type]
                            dataset=digits)
    assert inline.final_accuracy > 0.5  # (chance: 0.1; robust rules learn slower non-IID)
    np.testing.assert_allclose(pm.flatten(pooled.params), pm.flatten(inline.params), atol=1e-5)


def test_the_coordinator_aggregates_with_a_robust_rule_and_its_settings() -> None:
    """On the coordinator too: a trimmed mean (trim 1/3 of 3 updates: one cut at each end)
    ignores an attacker's 1000x update; the settings reach the strategy and are checked."""
    from privml.transport._coordinator import Coordinator, UpdateMeta

    cfg = RunConfig(rounds=1, clients_per_round=3, round_timeout=10.0,
                    strategy="trimmed_mean", trim=0.34)
    c = Coordinator(cfg, run_id="run-1", model_spec_json="{}",
                    initial={"w": np.zeros(4, np.float32)})
    for name in ("alice", "bob", "mallory"):
        c.enrol(name, 0.0)
    for name in ("alice", "bob", "mallory"):
        assert c.task(name, 0.0)["action"] == "train"
    for k, (name, value) in enumerate((("alice", 1.0), ("bob", 2.0), ("mallory", 1000.0))):
        c.submit(name, UpdateMeta(run="run-1", round=1, update_id=f"update-000{k}",
                                  num_examples=10),
                 pm.encode({"w": np.full(4, value, np.float32)}), 1.0)
    np.testing.assert_allclose(c.params["w"], 2.0)  # the median of 3, here: 1000 ignored
    assert RunConfig(rounds=1, clients_per_round=3, strategy="multikrum",
                     byzantine=0.1).make_strategy() == MultiKrum(byzantine=0.1)
    with pytest.raises(ConfigError, match="trim"):
        RunConfig(rounds=1, clients_per_round=3, strategy="trimmed_mean", trim=0.6)
