"""Client-level DP in the simulator: the ledger names the sampler that ran, the budget is
enforced before a round is applied, and the summary reports (epsilon, delta, accountant)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from privml import ConfigError
from privml import params as pm
from privml.data import load_dataset
from privml.dp import PrivacyAccountant, event_from_json, poisson
from privml.sim import SimConfig, run_simulation

BASE = {"model": "logreg", "clients": 12, "per_round": 6, "rounds": 3, "epochs": 1,
        "alpha": None}


@pytest.fixture(scope="module")
def digits():  # type: ignore[no-untyped-def]
    return load_dataset("digits", seed=0)


def test_poisson_sampler_is_what_the_ledger_accounts(digits) -> None:  # type: ignore[no-untyped-def]
    res = run_simulation(SimConfig(**BASE, noise_multiplier=1.0, insecure_dp_seed=1),
                         dataset=digits)
    s = res.summary()
    ledger = s["ledger"]
    assert len(ledger) == 3 and all(e["unit"] == "client" for e in ledger)
    for entry in ledger:
        ev = entry["event"]
        assert ev["type"] == "poisson" and ev["q"] == pytest.approx(0.5)
        assert entry["placement"] == "central" and entry["sampling"] == "poisson"
    # Poisson sampling: the number of updates per round varies around q * N = 6.
    assert {r.updates for r in res.history} != {6} or len(res.history) < 3
    acct = PrivacyAccountant(kind="rdp")
    acct.compose(poisson(q=0.5, noise_multiplier=1.0), count=3)
    assert s["epsilon"] == pytest.approx(acct.epsilon(delta=1e-5))
    assert s["delta"] == 1e-5 and s["accountant"] == "rdp" and s["dp_unit"] == "client"


def test_the_ledger_is_kept_in_the_run_database(digits, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from privml.sim import RunStore

    res = run_simulation(SimConfig(**BASE, noise_multiplier=1.0), dataset=digits)
    with RunStore(tmp_path / "runs.db") as store:
        run_id = store.add(res)
        rows = store.ledger(run_id)
    assert [r["event"] for r in rows] == [e["event"] for e in res.summary()["ledger"]]
    assert {r["unit"] for r in rows} == {"client"} and rows[-1]["epsilon"] > rows[0]["epsilon"]


def test_fixed_size_sampler_is_what_the_ledger_accounts(digits) -> None:  # type: ignore[no-untyped-def]
    res = run_simulation(SimConfig(**BASE, noise_multiplier=1.0, dp_sampling="fixed",
                                   insecure_dp_seed=1), dataset=digits)
    assert [r.updates for r in res.history] == [6, 6, 6]  # without replacement, fixed size
    for entry in res.summary()["ledger"]:
        ev = entry["event"]
        assert ev["type"] == "fixed_size"
        assert (ev["sample_size"], ev["population"]) == (6, 12)
        event_from_json(ev)  # (a valid event)


def test_a_round_past_the_budget_is_refused_and_nothing_is_applied(digits) -> None:  # type: ignore[no-untyped-def]
    acct = PrivacyAccountant(kind="rdp")
    acct.compose(poisson(q=0.5, noise_multiplier=0.8), count=2)
    two = acct.epsilon(delta=1e-5)
    acct.compose(poisson(q=0.5, noise_multiplier=0.8))
    three = acct.epsilon(delta=1e-5)
    target = (two + three) / 2  # round 3 would pass it
    common = {**BASE, "rounds": 5, "noise_multiplier": 0.8, "insecure_dp_seed": 3}
    stopped = run_simulation(SimConfig(**common, target_epsilon=target), dataset=digits)
    s = stopped.summary()
    assert s["budget_refused"]["round"] == 3
    assert s["budget_refused"]["epsilon_would_be"] == pytest.approx(three)
    assert len(s["ledger"]) == 2 and s["epsilon"] == pytest.approx(two) and two <= target
    assert len(stopped.history) == 2
    reference = run_simulation(SimConfig(**{**common, "rounds": 2}), dataset=digits)
    np.testing.assert_array_equal(pm.flatten(stopped.params), pm.flatten(reference.params))


def test_target_epsilon_calibrates_the_noise_and_is_kept(digits) -> None:  # type: ignore[no-untyped-def]
    res = run_simulation(SimConfig(**BASE, target_epsilon=4.0), dataset=digits)
    s = res.summary()
    assert 4.0 - 1e-3 <= s["epsilon"] <= 4.0 and s["budget_refused"] is None
    assert s["noise_multiplier"] > 0.5


def test_distributed_noise_with_secure_aggregation(digits) -> None:  # type: ignore[no-untyped-def]
    cfg = SimConfig(**{**BASE, "clients": 6, "per_round": 6}, secagg=True,
                    target_epsilon=8.0, insecure_dp_seed=2)
    s = run_simulation(cfg, dataset=digits).summary()
    assert s["dp_placement"] == "distributed" and s["epsilon"] <= 8.0
    for entry in s["ledger"]:
        assert entry["event"]["type"] == "zcdp" and entry["survivors"] == 6


@pytest.mark.parametrize(("kw", "match"), [
    ({"target_epsilon": -1.0}, "target_epsilon"),
    ({"noise_multiplier": 1.0, "delta": 0.0}, "delta"),
    ({"noise_multiplier": 1.0, "clip_norm": 0.0}, "clip_norm"),
    ({"noise_multiplier": 1.0, "dp_sampling": "sometimes"}, "dp_sampling"),
    ({"noise_multiplier": 1.0, "dp_sampling": "fixed", "accountant": "pld"}, "RDP"),
    ({"noise_multiplier": 1.0, "dropout": 0.2}, "dropout"),
    ({"noise_multiplier": 1.0, "clip_quantile": 1.5}, "clip_quantile"),
    ({"noise_multiplier": 1.0, "clip_quantile": 0.5, "secagg": True}, "adaptive clipping"),
])
def test_bad_dp_settings_are_refused(kw: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        SimConfig(**{**BASE, **kw})  # type: ignore[arg-type]


ADAPTIVE = {**BASE, "clients": 100, "per_round": 50, "rounds": 4}


@pytest.mark.parametrize(("start", "direction"), [(1e-3, 1), (1e3, -1)])
def test_adaptive_clipping_moves_the_bound_towards_the_quantile(
        digits, start: float, direction: int) -> None:  # type: ignore[no-untyped-def]
    """A bound far below every update norm grows each round, one far above shrinks (Andrew
    et al.'s geometric rule); the ledger records the bound each round used, and epsilon is
    that of multiplier z: the bit query's share of the noise is taken from the update's."""
    res = run_simulation(SimConfig(**ADAPTIVE, noise_multiplier=1.0, clip_norm=start,
                                   clip_quantile=0.5), dataset=digits)
    bounds = [e["clip_norm"] for e in res.summary()["ledger"]]
    assert bounds[0] == start and len(bounds) == 4
    assert all(direction * (b - a) > 0 for a, b in itertools.pairwise(bounds))
    acct = PrivacyAccountant(kind="rdp")
    acct.compose(poisson(q=0.5, noise_multiplier=1.0), count=4)
    assert res.summary()["epsilon"] == pytest.approx(acct.epsilon(delta=1e-5))


def test_adaptive_clipping_noise_is_z_delta_times_the_bound() -> None:
    from privml.dp import ClientLevelDP, adaptive_noise_multiplier

    cfg = SimConfig(**ADAPTIVE, noise_multiplier=1.0, clip_norm=2.0, clip_quantile=0.5,
                    insecure_dp_seed=3)
    dp = ClientLevelDP(cfg, 20_000)
    z_delta = adaptive_noise_multiplier(noise_multiplier=1.0, bit_noise_std=50 / 20)
    assert dp.z == 1.0 and dp.z_update == pytest.approx(z_delta) and z_delta > 1.0
    out = dp.noisy_mean({"a": np.zeros(20_000, np.float32)}, run="r", round_=1)
    # the mean over the expected 50 clients of N(0, (z_delta C)^2): std z_delta*C/50, to 2 %
    assert out.std() == pytest.approx(z_delta * 2.0 / 50, rel=0.02)


def test_adaptive_clipping_needs_enough_bit_noise() -> None:
    with pytest.raises(ConfigError, match="bit_noise_std"):
        run_simulation(SimConfig(**BASE, noise_multiplier=1.0, clip_quantile=0.5))


@pytest.mark.parametrize("secagg", [False, True])
def test_client_level_dp_needs_epsilon_or_noise(secagg: bool) -> None:
    # An explicit check, not an assert: it holds under `python -O` too (make security).
    from privml.dp import ClientLevelDP

    with pytest.raises(ConfigError, match="target_epsilon or noise_multiplier"):
        ClientLevelDP(SimConfig(**BASE, secagg=secagg), 100)
