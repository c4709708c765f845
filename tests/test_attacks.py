"""Poisoning attacks (privml.sim.attacks): who attacks, what they change, and that the robust
strategies hold where FedAvg falls."""

from __future__ import annotations

import numpy as np
import pytest

from privml import ConfigError
from privml import params as pm
from privml.data import load_dataset, partition
from privml.models import ModelSpec, build_torch
from privml.sim import SimConfig, run_simulation
from privml.sim._parallel import csr
from privml.sim.attacks import Attack, backdoor_success, stamp
from privml.train import get_params, set_params, train_local


@pytest.fixture(scope="module")
def digits():  # type: ignore[no-untyped-def]
    return load_dataset("digits", seed=0)


def test_attackers_are_a_seeded_fraction_of_the_clients() -> None:
    a = Attack.draw("sign_flip", fraction=0.2, num_clients=50, seed=3)
    assert len(a.clients) == 10 and a.clients <= set(range(50)) and a.scale == 4.0
    assert a == Attack.draw("sign_flip", fraction=0.2, num_clients=50, seed=3)
    assert a.clients != Attack.draw("sign_flip", fraction=0.2, num_clients=50, seed=4).clients
    assert not Attack.draw("none", fraction=0.2, num_clients=50, seed=3).active
    assert Attack.draw("scale", fraction=0.2, num_clients=50, seed=3).scale == 10.0
    k = min(a.clients)
    assert a.factor(k) == -4.0 and a.factor(next(i for i in range(50) if i not in a.clients)) \
        == 1.0
    assert a.alters_updates
    assert not Attack.draw("backdoor", fraction=0.2, num_clients=50, seed=3).alters_updates
    assert Attack.draw("backdoor", fraction=0.2, num_clients=50, seed=3,
                       scale=5).alters_updates  # a boosted backdoor


@pytest.mark.parametrize(("settings", "match"), [
    ({"attack": "poison"}, "unknown attack"),
    ({"attack": "scale", "attackers": 1.0}, r"fraction in \[0, 1\)"),
    ({"attack": "scale", "attackers": float("nan")}, "fraction"),
    ({"attack": "scale", "attack_scale": float("nan")}, "finite number > 0"),
    ({"attack": "scale", "attack_scale": -2.0}, "finite number > 0"),
    ({"attack": "backdoor", "backdoor_target": -1}, "class index"),
])
def test_bad_attack_settings_are_refused(settings: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        SimConfig(**settings)  # type: ignore[arg-type]


def test_a_backdoor_target_outside_the_classes_is_refused(digits) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="not a class"):
        run_simulation(SimConfig(clients=10, per_round=5, rounds=1, attack="backdoor",
                                 backdoor_target=10), dataset=digits)


def _split(ds, clients: int = 10):  # type: ignore[no-untyped-def]
    return csr(partition(ds.y_train, clients, alpha=0.5, rng=np.random.default_rng(0)))


def test_label_flip_changes_the_attackers_labels_only(digits) -> None:  # type: ignore[no-untyped-def]
    order, offsets = _split(digits)
    a = Attack.draw("label_flip", fraction=0.3, num_clients=10, seed=0)
    before = digits.y_train.copy()
    poisoned = a.poison(digits, order, offsets, seed=0)
    assert np.array_equal(digits.y_train, before)  # the caller's dataset is untouched
    rows = np.concatenate([order[offsets[k]:offsets[k + 1]] for k in a.clients])
    others = np.setdiff1d(np.arange(before.size), rows)
    assert np.array_equal(poisoned.y_train[rows], 9 - before[rows])
    assert np.array_equal(poisoned.y_train[others], before[others])
    assert poisoned.x_train is digits.x_train  # features shared, not copied


def test_backdoor_stamps_half_the_attackers_rows(digits) -> None:  # type: ignore[no-untyped-def]
    order, offsets = _split(digits)
    a = Attack.draw("backdoor", fraction=0.3, num_clients=10, seed=0, target=7)
    poisoned = a.poison(digits, order, offsets, seed=0)
    rows = np.concatenate([order[offsets[k]:offsets[k + 1]] for k in a.clients])
    n = digits.y_train.size
    changed = np.flatnonzero((poisoned.x_train != digits.x_train).reshape(n, -1).any(axis=1))
    assert set(changed) <= set(rows) and 0.35 < changed.size / rows.size < 0.65
    assert np.all(poisoned.y_train[changed] == 7)
    img = poisoned.x_train[changed[0]].reshape(digits.input_shape)
    assert np.all(img[-3:, -3:] == digits.x_train.max())  # the trigger, bottom right
    assert np.array_equal(stamp(poisoned.x_train[changed], digits), poisoned.x_train[changed])
    others = np.setdiff1d(np.arange(digits.y_train.size), changed)
    assert np.array_equal(poisoned.x_train[others], digits.x_train[others])
    assert np.array_equal(poisoned.y_train[others], digits.y_train[others])


def test_update_attacks_send_a_multiple_of_the_honest_update(digits) -> None:  # type: ignore[no-untyped-def]
    """One FedAvg round with every client sampled: the new model is the weighted mean of
    the honest updates with the attackers' multiplied by -4 (sign flip)."""
    from privml.sim._engine import _Federation

    cfg = SimConfig(clients=6, per_round=6, rounds=1, attack="sign_flip", attackers=0.5,
                    alpha=None, epochs=1)
    fed = _Federation(cfg, digits, build_torch(ModelSpec.from_json(_spec_json()), seed=0),
                      train_local)
    rows = {tuple(fed.order[fed.offsets[k]:fed.offsets[k + 1]]): k for k in range(6)}
    trained: list[tuple[int, dict[str, np.ndarray], int]] = []
    start: dict[str, np.ndarray] = {}

    def recording(model, data, tcfg, seed, global_params):  # type: ignore[no-untyped-def]
        start.update(global_params)
        result = train_local(model, data, tcfg, seed, global_params)
        trained.append((rows[tuple(data.indices)],
                        pm.subtract(get_params(model), global_params), result.num_examples))
        return result

    result = run_simulation(cfg, dataset=digits, train_fn=recording)
    attack = Attack.draw("sign_flip", fraction=0.5, num_clients=6, seed=0)
    assert len(attack.clients) == 3 and len(trained) == 6
    total = sum(n for _, _, n in trained)
    expect = pm.weighted_sum([d for _, d, _ in trained],
                             [attack.factor(k) * n / total for k, _, n in trained])
    honest = pm.weighted_sum([d for _, d, _ in trained], [n / total for _, _, n in trained])
    got = pm.subtract(result.params, start)
    np.testing.assert_allclose(pm.flatten(got), pm.flatten(expect), atol=2e-6)
    assert not np.allclose(pm.flatten(got), pm.flatten(honest), atol=1e-4)


def _spec_json() -> str:
    from privml.models import zoo

    return zoo("mlp", input_shape=(8, 8, 1), num_classes=10).to_json()


def _run(digits, **kw: object):  # type: ignore[no-untyped-def]
    cfg = SimConfig(clients=50, per_round=20, rounds=8, **kw)  # type: ignore[arg-type]
    return run_simulation(cfg, dataset=digits)


def test_sign_flip_breaks_fedavg_and_the_median_holds(digits) -> None:  # type: ignore[no-untyped-def]
    fedavg = _run(digits, attack="sign_flip")
    median = _run(digits, attack="sign_flip", strategy="median")
    assert fedavg.final_accuracy < 0.5 < 0.75 < median.final_accuracy
    assert fedavg.extra["attack"] == {"kind": "sign_flip", "fraction": 0.2, "attackers": 10,
                                      "scale": 4.0}


def test_a_backdoor_is_planted_in_fedavg_and_measured(digits) -> None:  # type: ignore[no-untyped-def]
    clean = _run(digits)
    planted = _run(digits, attack="backdoor")
    model = build_torch(ModelSpec.from_json(_spec_json()), seed=0)
    set_params(model, clean.params)
    assert backdoor_success(model, digits, 0) < 0.1  # the trigger means nothing to it
    assert planted.extra["attack"]["backdoor_success"] > 0.5
    assert planted.final_accuracy > 0.8  # while the main task still looks fine


def test_pool_and_inline_agree_under_an_update_attack(digits) -> None:  # type: ignore[no-untyped-def]
    kw = {"clients": 12, "per_round": 6, "rounds": 2, "epochs": 1, "attack": "scale",
          "attackers": 0.25}
    inline = run_simulation(SimConfig(**kw), dataset=digits)  # type: ignore[arg-type]
    pooled = run_simulation(SimConfig(backend="local", workers=2, vectorize="off", **kw),  # type: ignore[arg-type]
                            dataset=digits)
    np.testing.assert_allclose(pm.flatten(pooled.params), pm.flatten(inline.params),
                               atol=2e-6)


def test_the_cli_runs_an_attack_and_reports_the_backdoor(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    from typer.testing import CliRunner

    from privml.cli import app

    out = tmp_path / "s.json"
    res = CliRunner().invoke(app, [
        "sim", "--clients", "20", "--per-round", "10", "--rounds", "3", "--epochs", "1",
        "--attack", "backdoor", "--attackers", "0.25", "--backdoor-target", "3",
        "--strategy", "trimmed_mean", "--trim", "0.3", "--no-progress",
        "--db", str(tmp_path / "runs.db"), "--json", str(out)])
    assert res.exit_code == 0, res.output
    summary = json.loads(out.read_text())
    assert summary["attack"]["attackers"] == 5 and summary["attack"]["target"] == 3
    assert summary["config"]["trim"] == 0.3 and summary["config"]["attack"] == "backdoor"
    assert f"backdoor success {summary['attack']['backdoor_success']:.3f}" in res.stdout
