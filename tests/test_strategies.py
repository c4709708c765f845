from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from privml import ConfigError, ParamsError
from privml import params as pm
from privml.strategies import (
    STRATEGIES,
    ClientUpdate,
    FedAdam,
    FedAvg,
    FedProx,
    FedYogi,
    ServerState,
    make_strategy,
)

SHAPES = {"w": (3, 2), "b": (2,)}


def random_params(rng: np.random.Generator) -> pm.Params:
    return {k: rng.normal(size=s).astype(np.float32) for k, s in SHAPES.items()}


@given(st.integers(0, 2**32 - 1), st.lists(st.integers(1, 1000), min_size=1, max_size=8))
def test_fedavg_is_example_weighted_mean(seed: int, counts: list[int]) -> None:
    rng = np.random.default_rng(seed)
    w = random_params(rng)
    local = [random_params(rng) for _ in counts]
    updates = [ClientUpdate(pm.subtract(m, w), n) for m, n in zip(local, counts, strict=True)]
    new, state = FedAvg().aggregate(w, updates, ServerState())
    total = sum(counts)
    for name in SHAPES:
        expected = sum(m[name].astype(np.float64) * n for m, n in zip(local, counts, strict=True))
        np.testing.assert_allclose(new[name], expected / total, rtol=1e-5, atol=1e-5)
    assert state.step == 1


def test_fedprox_aggregates_like_fedavg_and_sets_mu() -> None:
    rng = np.random.default_rng(1)
    w = random_params(rng)
    ups = [ClientUpdate(random_params(rng), n) for n in (3, 5)]
    a, _ = FedAvg().aggregate(w, ups, ServerState())
    b, _ = FedProx(mu=0.5).aggregate(w, ups, ServerState())
    for name in SHAPES:
        np.testing.assert_array_equal(a[name], b[name])
    assert FedProx(mu=0.5).client_options() == {"prox_mu": 0.5}
    assert FedAvg().client_options() == {}


def test_fedadam_first_step_matches_reference() -> None:
    w = {"w": np.array([1.0, -1.0], np.float32)}
    d = {"w": np.array([0.5, -0.2], np.float32)}
    s = FedAdam(lr=0.1, beta1=0.9, beta2=0.99, tau=1e-3)
    new, state = s.aggregate(w, [ClientUpdate(d, 1)], ServerState())
    g = np.array([0.5, -0.2])
    m = 0.1 * g
    v = 0.99 * 1e-6 + 0.01 * g * g
    expected = np.array([1.0, -1.0]) + 0.1 * m / (np.sqrt(v) + 1e-3)
    np.testing.assert_allclose(new["w"], expected, rtol=1e-5)
    assert state.step == 1 and set(state.m) == {"w"}
    # The state carries over: a second identical step moves further in the same direction.
    new2, _ = s.aggregate(new, [ClientUpdate(d, 1)], state)
    assert np.all(np.sign(new2["w"] - new["w"]) == np.sign(d["w"]))


def test_fedyogi_second_moment_is_additive() -> None:
    w = {"w": np.zeros(1, np.float32)}
    d = {"w": np.array([2.0], np.float32)}
    s = FedYogi(lr=0.1, beta1=0.0, beta2=0.5, tau=1e-3)
    _, state = s.aggregate(w, [ClientUpdate(d, 1)], ServerState())
    # v0 = tau^2 < g^2 = 4, so v = v0 + (1 - beta2) * g^2
    np.testing.assert_allclose(state.v["w"], [1e-6 + 0.5 * 4.0], rtol=1e-5)


def test_make_strategy_names_and_errors() -> None:
    for name in STRATEGIES:
        assert make_strategy(name).name == name
    with pytest.raises(ConfigError, match=r"unknown strategy 'fedfoo'.*fedavg"):
        make_strategy("fedfoo")
    with pytest.raises(ConfigError):
        FedProx(mu=0.0)
    with pytest.raises(ConfigError):
        FedAdam(lr=-1)
    with pytest.raises(ConfigError):
        FedYogi(beta2=1.0)


def test_bad_updates_refused() -> None:
    w = {"w": np.zeros(2, np.float32)}
    with pytest.raises(ConfigError):
        FedAvg().aggregate(w, [], ServerState())
    with pytest.raises(ConfigError):
        ClientUpdate(w, 0)
    with pytest.raises(ParamsError):
        FedAvg().aggregate(w, [ClientUpdate({"w": np.zeros(3, np.float32)}, 1)], ServerState())
