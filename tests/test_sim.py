from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from privml import ConfigError, DataError
from privml import params as pm
from privml.data import load_dataset
from privml.sim import RunStore, SimConfig, plot_history, run_simulation
from privml.train import TrainConfig, TrainResult

SMALL = {"clients": 6, "per_round": 3, "rounds": 6, "epochs": 2, "model": "logreg"}


@pytest.fixture(scope="module")
def digits():  # type: ignore[no-untyped-def]
    return load_dataset("digits", seed=0)


def test_small_federation_learns(digits) -> None:  # type: ignore[no-untyped-def]
    result = run_simulation(SimConfig(**SMALL), dataset=digits)
    accs = [r.test_accuracy for r in result.history]
    assert len(accs) == 6 and all(r.outcome == "completed" for r in result.history)
    assert accs[-1] > 0.8 > accs[0] - 0.3
    assert accs[-1] > accs[0]
    s = result.summary()
    for key in ("final_accuracy", "rounds", "clients", "seconds_total", "seconds_per_round"):
        assert key in s
    assert s["rounds"] == 6 and s["clients"] == 6
    assert result.model_spec_json is not None


def test_simulation_is_deterministic(digits) -> None:  # type: ignore[no-untyped-def]
    a = run_simulation(SimConfig(**{**SMALL, "rounds": 2}), dataset=digits)
    b = run_simulation(SimConfig(**{**SMALL, "rounds": 2}), dataset=digits)
    np.testing.assert_array_equal(pm.flatten(a.params), pm.flatten(b.params))
    c = run_simulation(SimConfig(**{**SMALL, "rounds": 2, "seed": 1}), dataset=digits)
    assert not np.array_equal(pm.flatten(a.params), pm.flatten(c.params))


@pytest.mark.parametrize("strategy", ["fedprox", "fedadam", "fedyogi"])
def test_other_strategies_learn(digits, strategy: str) -> None:  # type: ignore[no-untyped-def]
    cfg = SimConfig(**{**SMALL, "strategy": strategy, "server_lr": 0.1})
    result = run_simulation(cfg, dataset=digits)
    assert result.final_accuracy > 0.7


def test_secure_aggregation_gives_the_plain_model_up_to_quantization(  # type: ignore[no-untyped-def]
        digits) -> None:
    """The same federation with SecAgg+ (every message through its bytes, all parties in
    this process): only the clip and the fixed-point rounding can differ."""
    plain = run_simulation(SimConfig(**{**SMALL, "rounds": 3}), dataset=digits)
    secure = run_simulation(SimConfig(**{**SMALL, "rounds": 3, "secagg": True}),
                            dataset=digits)
    assert all(r.outcome == "completed" for r in secure.history)
    np.testing.assert_allclose(pm.flatten(secure.params), pm.flatten(plain.params),
                               atol=1e-4)
    assert secure.final_accuracy == pytest.approx(plain.final_accuracy, abs=0.01)


def test_secure_aggregation_settings_that_could_wrap_are_refused() -> None:
    with pytest.raises(ConfigError, match="wrap"):
        SimConfig(secagg=True, secagg_clip=1e9)


def test_stragglers_close_rounds_at_deadline(digits) -> None:  # type: ignore[no-untyped-def]
    cfg = SimConfig(**{**SMALL, "rounds": 4, "dropout": 0.5, "min_updates": 2})
    result = run_simulation(cfg, dataset=digits)
    assert len(result.history) == 4
    assert sum(r.dropped for r in result.history) > 0
    for r in result.history:
        assert r.updates + r.dropped == 3
        assert (r.outcome == "completed") == (r.updates >= 2)


class TinyNet(nn.Module):
    """A user's own module: not built from a portable spec."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def test_bring_your_own_model_and_loop(digits) -> None:  # type: ignore[no-untyped-def]
    calls: list[int] = []

    def my_train(model: nn.Module, data, config: TrainConfig, seed: int,  # type: ignore[no-untyped-def]
                 global_params) -> TrainResult:
        calls.append(seed)
        opt = torch.optim.Adam(model.parameters(), lr=0.01)
        x, y = data.take(slice(None))
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        loss = torch.zeros(())
        for _ in range(20):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(xt), yt)
            loss.backward()
            opt.step()
        return TrainResult(num_examples=len(data), loss=float(loss.detach()), steps=20)

    result = run_simulation(SimConfig(**{**SMALL, "rounds": 5}), dataset=digits,
                            model_fn=TinyNet, train_fn=my_train)
    assert len(calls) == 5 * 3
    assert result.model_spec_json is None
    assert set(result.params) == {"body.1.weight", "body.1.bias", "body.3.weight", "body.3.bias"}
    assert result.final_accuracy > 0.8


@pytest.mark.parametrize("kw, match", [
    ({"per_round": 30}, r"more clients per round \(30\) than clients \(20\)"),
    ({"alpha": 0.0}, "alpha must be > 0"),
    ({"alpha": -1.0}, "alpha must be > 0"),
    ({"clients": 0}, "clients"),
    ({"dropout": 1.0}, "dropout"),
    ({"min_updates": 11}, "min_updates"),
])
def test_bad_config(kw: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        SimConfig(**kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("kw", [{"dataset": "imagenet"}, {"model": "resnet"},
                                {"strategy": "fedfoo"}])
def test_unknown_names(kw: dict[str, str], digits) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="unknown"):
        run_simulation(SimConfig(**{**SMALL, **kw}),
                       dataset=None if "dataset" in kw else digits)


def test_run_store_and_plot(tmp_path: Path, digits) -> None:  # type: ignore[no-untyped-def]
    result = run_simulation(SimConfig(**{**SMALL, "rounds": 2}), dataset=digits)
    db = tmp_path / "runs.db"
    with RunStore(db) as store:
        first = store.add(result)
        second = store.add(result, kind="demo")
        rows = store.runs()
        assert [r.id for r in rows] == [second, first]
        assert rows[0].kind == "demo" and rows[0].final_accuracy == result.final_accuracy
        assert [r["round"] for r in store.rounds(first)] == [1, 2]
    png = plot_history(result.history, tmp_path / "plots" / "acc.png", title="t")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_run_store_refuses_newer_schema_and_garbage(tmp_path: Path) -> None:
    db = tmp_path / "new.db"
    con = sqlite3.connect(db)
    con.execute("PRAGMA user_version = 99")
    con.close()
    with pytest.raises(DataError, match="newer"):
        RunStore(db)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(DataError, match="unreadable"):
        RunStore(junk)
