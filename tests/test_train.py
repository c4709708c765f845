from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from privml import ConfigError, DataError, ParamsError
from privml import params as pm
from privml.data import ClientData, load_dataset
from privml.models import Dense as DenseL
from privml.models import Dropout, ModelSpec, build_torch, zoo
from privml.models import Flatten as FlattenL
from privml.models import ReLU as ReLUL
from privml.train import (
    TrainConfig,
    TrainFn,
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
        out: torch.Tensor = self.out(torch.relu(self.bn(self.fc(self.flat(x)))))
        return out


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


# --- failures leave the model as it was; inputs of other dtypes; modes -----------------------


class ArrayData:
    """A minimal ClientDataLike over plain arrays (any dtype), to check the Protocol."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def take(self, positions: np.ndarray | slice) -> tuple[np.ndarray, np.ndarray]:
        return self.x[positions], self.y[positions]


def _separable(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    centres = np.array([[5.0, 0, 0, 0], [0, 5.0, 0, 0], [0, 0, 5.0, 0]])
    return centres[y] + rng.normal(size=(n, 4)), y


def test_synthetic_problem_with_other_dtypes_and_read_only_data() -> None:
    x, y = _separable()  # float64 features, int64 labels
    x.flags.writeable = False  # a shared dataset may be read-only
    net = build_torch(ModelSpec((4,), (DenseL(3, name="d"),)))
    before = evaluate(net, x, y.astype(np.int32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "non-writable array" warning from torch
        res = train_local(net, ArrayData(x, y.astype(np.int32)), TrainConfig(epochs=3), 1)
        after = evaluate(net, x, y)
    assert res.steps == 3 * 10 and res.num_examples == 300
    assert after.loss < before.loss and after.accuracy > 0.95


def test_failure_restores_params_and_mode(digits_client) -> None:  # type: ignore[no-untyped-def]
    data, x_test, y_test = digits_client
    net = _mlp()
    net.eval()
    start = get_params(net)
    with pytest.raises(ConfigError, match="diverged: loss is nan"):
        train_local(net, data, TrainConfig(epochs=3, lr=1e30), 0)
    np.testing.assert_array_equal(pm.flatten(get_params(net)), pm.flatten(start))
    assert not net.training
    bad_labels = ClientData(data.x, data.y + 10, data.indices)
    with pytest.raises(DataError, match="label out of range"):
        train_local(net, bad_labels, TrainConfig(), 0)
    np.testing.assert_array_equal(pm.flatten(get_params(net)), pm.flatten(start))
    with pytest.raises(DataError, match="label out of range"):
        evaluate(net, x_test, y_test + 10)
    train_local(net, data, TrainConfig(), 0)
    assert not net.training  # the caller's mode is kept
    net.train()
    evaluate(net, x_test, y_test)
    predict_proba(net, x_test)
    assert net.training


def test_fedprox_refuses_global_params_that_do_not_fit(digits_client) -> None:  # type: ignore[no-untyped-def]
    data, _, _ = digits_client
    net = _mlp()
    g = get_params(net)
    cfg = TrainConfig(prox_mu=1.0)
    # (1,) would broadcast silently into the penalty if it were not checked.
    with pytest.raises(ParamsError, match=r"o\.bias"):
        train_local(net, data, cfg, 0, {**g, "o.bias": np.zeros(1, np.float32)})
    with pytest.raises(ParamsError, match=r"h\.bias"):
        train_local(net, data, cfg, 0, {**g, "h.bias": np.full(32, np.inf, np.float32)})
    np.testing.assert_array_equal(pm.flatten(get_params(net)), pm.flatten(g))
    train_local(net, data, TrainConfig(prox_mu=0.0), 0, {"junk": np.zeros(1, np.float32)})


@pytest.mark.parametrize("seed", [-1, 2**63, 0.5, "1"])
def test_bad_seed(digits_client, seed: object) -> None:  # type: ignore[no-untyped-def]
    data, _, _ = digits_client
    with pytest.raises(ConfigError, match="seed"):
        train_local(_mlp(), data, TrainConfig(), seed)  # type: ignore[arg-type]


def test_numpy_integer_seed_is_the_same_seed(digits_client) -> None:  # type: ignore[no-untyped-def]
    data, _, _ = digits_client
    a, b = _mlp(), _mlp()
    train_local(a, data, TrainConfig(), 7)
    train_local(b, data, TrainConfig(), np.uint32(7))  # type: ignore[arg-type]
    np.testing.assert_array_equal(pm.flatten(get_params(a)), pm.flatten(get_params(b)))


@pytest.mark.parametrize("kw", [{"lr": "0.1"}, {"lr": float("inf")}, {"lr": -1.0},
                                {"weight_decay": -0.1}, {"prox_mu": float("nan")},
                                {"momentum": float("nan")}, {"batch_size": 2.0},
                                {"momentum": None}])
def test_more_bad_train_configs(kw: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        TrainConfig(**kw)  # type: ignore[arg-type]


def test_set_params_refuses_non_arrays_and_wrong_dtype() -> None:
    net = _mlp()
    p = get_params(net)
    with pytest.raises(ParamsError, match=r"o\.bias.*not a numpy array"):
        set_params(net, {**p, "o.bias": [0.0] * 10})  # type: ignore[dict-item]
    with pytest.raises(ParamsError, match="float32"):
        set_params(net, {**p, "o.bias": np.zeros(10, np.float64)})
    with pytest.raises(ParamsError, match="not in the model"):
        set_params(net, {**p, "extra": np.zeros(1, np.float32)})
    with pytest.raises(ParamsError):
        set_params(net, [("o.bias", np.zeros(10, np.float32))])  # type: ignore[arg-type]


def test_get_params_returns_copies() -> None:
    net = _mlp()
    p = get_params(net)
    p["o.bias"][:] = 42.0
    assert not np.any(get_params(net)["o.bias"] == 42.0)


def test_no_trainable_parameters_and_empty_predictions(digits_client) -> None:  # type: ignore[no-untyped-def]
    data, x_test, _ = digits_client

    class Fixed(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.reshape(len(x), -1)[:, :10]

    with pytest.raises(ConfigError, match="no trainable parameters"):
        train_local(Fixed(), data, TrainConfig(), 0)
    assert predict_proba(_mlp(), x_test[:0]).shape == (0, 10)
    with pytest.raises(ConfigError, match="batch_size"):
        predict_proba(_mlp(), x_test, batch_size=0)
    with pytest.raises(ConfigError, match="non-empty"):
        evaluate(_mlp(), x_test[:0], np.zeros(0, np.int64))


def test_train_fn_signature_is_satisfied_by_train_local() -> None:
    fn: TrainFn = train_local  # checked by mypy on the tests; here: it runs positionally
    x, y = _separable(64)
    res = fn(build_torch(ModelSpec((4,), (DenseL(3, name="d"),))), ArrayData(x, y),
             TrainConfig(batch_size=64), 3, None)
    assert res.steps == 1
