from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from privml import ConfigError, DataError, ParamsError
from privml import params as pm
from privml.models import (
    ZOO,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    MaxPool2D,
    ModelSpec,
    ReLU,
    Softmax,
    build_torch,
    load_model,
    save_model,
    zoo,
)
from privml.train import get_params, set_params

EXPECTED = {
    ("logreg", (8, 8, 1)): {"dense1.weight": (10, 64), "dense1.bias": (10,)},
    ("logreg", (28, 28, 1)): {"dense1.weight": (10, 784), "dense1.bias": (10,)},
    ("mlp", (8, 8, 1)): {"dense1.weight": (128, 64), "dense1.bias": (128,),
                         "dense2.weight": (10, 128), "dense2.bias": (10,)},
    ("mlp", (28, 28, 1)): {"dense1.weight": (128, 784), "dense1.bias": (128,),
                           "dense2.weight": (10, 128), "dense2.bias": (10,)},
    ("cnn", (8, 8, 1)): {"conv1.weight": (16, 1, 3, 3), "conv1.bias": (16,),
                         "conv2.weight": (32, 16, 3, 3), "conv2.bias": (32,),
                         "dense1.weight": (64, 2 * 2 * 32), "dense1.bias": (64,),
                         "dense2.weight": (10, 64), "dense2.bias": (10,)},
    ("cnn", (28, 28, 1)): {"conv1.weight": (16, 1, 3, 3), "conv1.bias": (16,),
                           "conv2.weight": (32, 16, 3, 3), "conv2.bias": (32,),
                           "dense1.weight": (64, 7 * 7 * 32), "dense1.bias": (64,),
                           "dense2.weight": (10, 64), "dense2.bias": (10,)},
}


@pytest.mark.parametrize("name, shape", sorted(EXPECTED))
def test_zoo_shapes_and_names(name: str, shape: tuple[int, ...]) -> None:
    spec = zoo(name, input_shape=shape, num_classes=10)
    net = build_torch(spec, seed=0)
    assert pm.spec_of(get_params(net)) == EXPECTED[(name, shape)]
    out = net(torch.zeros((5, *shape)))
    assert out.shape == (5, 10)
    assert spec.output_shape() == (10,)


@pytest.mark.parametrize("name", ZOO)
def test_json_round_trip_same_init(name: str) -> None:
    spec = zoo(name, input_shape=(8, 8, 1), num_classes=10)
    again = ModelSpec.from_json(spec.to_json())
    assert again == spec
    a, b = get_params(build_torch(spec, seed=3)), get_params(build_torch(again, seed=3))
    np.testing.assert_array_equal(pm.flatten(a), pm.flatten(b))
    c = get_params(build_torch(spec, seed=4))
    assert not np.array_equal(pm.flatten(a), pm.flatten(c))


def test_build_leaves_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_torch(zoo("cnn", input_shape=(8, 8, 1), num_classes=10), seed=9)
    np.testing.assert_array_equal(torch.rand(3).numpy(), expected.numpy())


def test_channels_last_conv_matches_nchw_reference() -> None:
    spec = ModelSpec((6, 5, 2), (Conv2D(3, 3, name="c", padding="same"), ReLU(), MaxPool2D(2),
                                 Flatten(), Dense(4, name="d"), Softmax()))
    net = build_torch(spec, seed=1)
    rng = np.random.default_rng(0)
    x_nhwc = rng.normal(size=(2, 6, 5, 2)).astype(np.float32)
    got = net(torch.from_numpy(x_nhwc)).detach().numpy()
    p = {k: torch.from_numpy(v) for k, v in get_params(net).items()}
    x = torch.from_numpy(x_nhwc).permute(0, 3, 1, 2)
    h = F.relu(F.conv2d(F.pad(x, (1, 1, 1, 1)), p["c.weight"], p["c.bias"]))
    h = F.max_pool2d(h, 2)  # (2, 3, 3, 2)
    flat = h.permute(0, 2, 3, 1).reshape(2, -1)  # Keras/TF.js flatten order: H, W, C
    ref = F.softmax(flat @ p["d.weight"].T + p["d.bias"], dim=1).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-5)
    logits = net.logits(torch.from_numpy(x_nhwc)).detach().numpy()
    np.testing.assert_allclose(F.softmax(torch.from_numpy(logits), 1).numpy(), ref, atol=1e-5)


def test_same_padding_with_stride_and_even_kernel() -> None:
    spec = ModelSpec((7, 7, 1), (Conv2D(2, 4, name="c", stride=2), Flatten(),
                                 Dense(3, name="d")))
    assert build_torch(spec)(torch.zeros(1, 7, 7, 1)).shape == (1, 3)
    assert spec.layers[0].output_shape((7, 7, 1)) == (4, 4, 2)


@pytest.mark.parametrize("make, match", [
    (lambda: ModelSpec((8, 8, 1), (Dense(3, name="d"),)), "flat input"),
    (lambda: ModelSpec((64,), (Conv2D(3, 3, name="c"),)), "image input"),
    (lambda: Dense(0, name="d"), "units"),
    (lambda: Conv2D(0, 3, name="c"), "filters"),
    (lambda: Conv2D(2, -1, name="c"), "kernel_size"),
    (lambda: ModelSpec((1, 1, 1), (MaxPool2D(2), Flatten(), Dense(2, name="d"))), "nothing"),
    (lambda: Dropout(1.0), "rate"),
    (lambda: Dropout(float("nan")), "rate"),
    (lambda: ModelSpec((4,), (Dense(3, name="d"), Dense(2, name="d"))), "duplicate"),
    (lambda: Dense(3, name=""), "name"),
    (lambda: Dense(3, name="a.b"), "name"),
    (lambda: ModelSpec((4,), ()), "at least one layer"),
    (lambda: ModelSpec((0,), (Dense(2, name="d"),)), "input_shape"),
    (lambda: ModelSpec((8, 8, 1), (Conv2D(2, 3, name="c"),)), "flat"),
    (lambda: ModelSpec.from_json("{not json"), "not valid JSON"),
    (lambda: ModelSpec.from_json(json.dumps({"input_shape": [4], "layers": [{"type": "LSTM"}]})),
     "unknown layer type 'LSTM'"),
    (lambda: ModelSpec.from_json(json.dumps(
        {"input_shape": [4], "layers": [{"type": "Dense", "units": 2, "name": "d", "x": 1}]})),
     "unknown field 'x'"),
    (lambda: zoo("resnet", input_shape=(8, 8, 1), num_classes=10), "unknown model 'resnet'"),
    (lambda: zoo("cnn", input_shape=(64,), num_classes=10), "image input"),
])
def test_spec_errors(make: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        make()  # type: ignore[operator]


def test_save_load_round_trip(tmp_path: Path) -> None:
    spec = zoo("cnn", input_shape=(8, 8, 1), num_classes=10)
    params = get_params(build_torch(spec, seed=2))
    path = tmp_path / "m.safetensors"
    save_model(path, spec, params)
    spec2, params2 = load_model(path)
    assert spec2 == spec
    np.testing.assert_array_equal(pm.flatten(params), pm.flatten(params2))
    net = build_torch(spec2)
    set_params(net, params2)
    assert not list(tmp_path.glob("*.tmp"))


def test_load_model_refuses_bad_files(tmp_path: Path) -> None:
    spec = zoo("logreg", input_shape=(8, 8, 1), num_classes=10)
    params = get_params(build_torch(spec))
    good = tmp_path / "m.safetensors"
    save_model(good, spec, params)
    data = good.read_bytes()
    with pytest.raises(DataError, match="cannot read"):
        load_model(tmp_path / "missing.safetensors")
    for i, bad in enumerate([data[:50], data[:-4], b"\x80\x04pickle", b""]):
        p = tmp_path / f"bad{i}"
        p.write_bytes(bad)
        with pytest.raises(ParamsError, match=str(p)):
            load_model(p)
    plain = tmp_path / "plain"
    plain.write_bytes(pm.encode(params))
    with pytest.raises(ParamsError, match="no model spec"):
        load_model(plain)
    other = zoo("mlp", input_shape=(8, 8, 1), num_classes=10)
    mixed = tmp_path / "mixed"
    mixed.write_bytes(pm.encode(params, metadata={"model_spec": other.to_json()}))
    with pytest.raises(ParamsError, match="dense2"):
        load_model(mixed)
    with pytest.raises(ParamsError):
        save_model(tmp_path / "x", other, params)
