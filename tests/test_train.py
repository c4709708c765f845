from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from privml import ConfigError, ParamsError
from privml import params as pm
from privml.data import ClientData, load_dataset
from privml.models import Dense as DenseL
from privml.models import Dropout, ModelSpec, build_torch, zoo
from privml.models import Flatten as FlattenL
from privml.models import ReLU as ReLUL
from privml.train import (
    TrainConfig,
    evaluate,
    get_params,
    predict_proba,
    set_params,
    train_local,
)


@pytest.fixture(scope="module")
def digits_client() -> tuple[ClientData, np.ndarray, np.ndarray]:
    ds = load_dataset("digits", seed=0)
    idx = np.arange(400, dtype=np.int64)
    return ClientData(ds.x_train, ds.y_train, idx), ds.x_test, ds.y_test


def _mlp(seed: int = 0) -> nn.Module:
    spec = ModelSpec((8, 8, 1), (FlattenL(), DenseL(32, name="h"), ReLUL(), Dropout(0.2),
                                 DenseL(10, name="o")))
    return build_torch(spec, seed=seed)


def test_training_is_deterministic(digits_client) -> None:  # type: ignore[no-untyped-def]
    data, _, _ = digits_client
    cfg = TrainConfig(epochs=1, batch_size=32, lr=0.1)
    a, b, c = _mlp(), _mlp(), _mlp()
    train_local(a, data, cfg, 7)
    train_local(b, data, cfg, 7)
    train_local(c, data, cfg, 8)
    np.testing.assert_array_equal(pm.flatten(get_params(a)), pm.flatten(get_params(b)))
    assert not np.array_equal(pm.flatten(get_params(a)), pm.flatten(get_params(c)))


def test_training_learns_and_leaves_rng(digits_client) -> None:  # type: ignore[no-untyped-def]
    data, x_test, y_test = digits_client
    net = build_torch(zoo("mlp", input_shape=(8, 8, 1), num_classes=10))
    before = evaluate(net, x_test, y_test)
    torch.manual_seed(5)
    expected = torch.rand(2)
    torch.manual_seed(5)
    res = train_local(net, data, TrainConfig(epochs=5, batch_size=16, lr=0.05, momentum=0.9), 0)
    np.testing.assert_array_equal(torch.rand(2).numpy(), expected.numpy())
    after = evaluate(net, x_test, y_test)
    assert res.num_examples == 400 and res.steps == 5 * 25
    assert after.loss < before.loss and after.accuracy > 0.85
    proba = predict_proba(net, x_test)
    assert proba.shape == (len(x_test), 10) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    assert float(np.mean(proba.argmax(1) == y_test)) == pytest.approx(after.accuracy)


def test_adam_learns(digits_client) -> None:  # type: ignore[no-untyped-def]
    data, x_test, y_test = digits_client
    net = _mlp()
    train_local(net, data, TrainConfig(epochs=3, lr=0.01, optimizer="adam"), 0)
    assert evaluate(net, x_test, y_test).accuracy > 0.8


def test_fedprox_keeps_params_near_global(digits_client) -> None:  # type: ignore[no-untyped-def]
    data, _, _ = digits_client
    free, prox = _mlp(), _mlp()
    start = get_params(free)
    train_local(free, data, TrainConfig(epochs=2, lr=0.1), 0)
    train_local(prox, data, TrainConfig(epochs=2, lr=0.1, prox_mu=5.0), 0, start)
    d_free = pm.l2_norm(pm.subtract(get_params(free), start))
    d_prox = pm.l2_norm(pm.subtract(get_params(prox), start))
    assert d_prox < 0.5 * d_free
    with pytest.raises(ConfigError, match="global parameters"):
        train_local(_mlp(), data, TrainConfig(prox_mu=1.0), 0)


def test_get_set_round_trip_and_rejections() -> None:
    a, b = _mlp(0), _mlp(1)
    set_params(b, get_params(a))
    np.testing.assert_array_equal(pm.flatten(get_params(a)), pm.flatten(get_params(b)))
    p = get_params(a)
    bad_shape = {**p, "h.weight": np.zeros((3, 3), np.float32)}
    with pytest.raises(ParamsError, match=r"h\.weight"):
        set_params(b, bad_shape)
    missing = {k: v for k, v in p.items() if k != "o.bias"}
    with pytest.raises(ParamsError, match=r"o\.bias"):
        set_params(b, missing)
    nan = {**p, "o.bias": np.full(10, np.nan, np.float32)}
    with pytest.raises(ParamsError, match="NaN"):
        set_params(b, nan)
    # nothing was half-applied by the refused calls
    np.testing.assert_array_equal(pm.flatten(get_params(a)), pm.flatten(get_params(b)))


@pytest.mark.parametrize("kw", [{"epochs": 0}, {"batch_size": 0}, {"lr": 0.0},
                                {"lr": float("nan")}, {"optimizer": "lbfgs"},
                                {"momentum": 1.0}, {"prox_mu": -1.0}, {"epochs": True}])
def test_bad_train_config(kw: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        TrainConfig(**kw)  # type: ignore[arg-type]


def test_divergence_and_empty_data_are_clear(digits_client) -> None:  # type: ignore[no-untyped-def]
    data, _, _ = digits_client
    with pytest.raises(ConfigError, match="diverged"):
        train_local(_mlp(), data, TrainConfig(epochs=3, lr=1e30), 0)
    empty = ClientData(data.x, data.y, np.zeros(0, np.int64))
    with pytest.raises(ConfigError, match="no examples"):
        train_local(_mlp(), empty, TrainConfig(), 0)


class WithBatchNorm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.flat = nn.Flatten()
        self.fc = nn.Linear(64, 16)
        self.bn = nn.BatchNorm1d(16)
        self.out = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.bn(self.fc(self.flat(x)))))


def test_custom_module_with_buffers(digits_client) -> None:  # type: ignore[no-untyped-def]
    data, x_test, y_test = digits_client
    net = WithBatchNorm()
    names = list(get_params(net))
    assert "bn.running_mean" in names and "bn.num_batches_tracked" not in names
    train_local(net, data, TrainConfig(epochs=5, lr=0.05, momentum=0.9), 0)
    assert evaluate(net, x_test, y_test).accuracy > 0.8
    other = WithBatchNorm()
    set_params(other, get_params(net))
    np.testing.assert_allclose(predict_proba(other, x_test), predict_proba(net, x_test))
