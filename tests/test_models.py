from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from hypothesis import given
from hypothesis import strategies as st
from safetensors.numpy import save as st_save

from privml import ConfigError, DataError, ParamsError, PrivmlError
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
    param_spec_of,
    save_model,
    zoo,
)
from privml.train import get_params, set_params

EXPECTED: dict[tuple[str, tuple[int, ...]], pm.Spec] = {
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


# --- pure param spec, TF semantics, bad inputs, files --------------------------------------

ODD_SPECS = [
    ModelSpec((7, 9, 3), (Conv2D(4, 2, name="a", stride=2), ReLU(), Conv2D(5, 3, name="b",
              padding="valid"), MaxPool2D(2), Dropout(0.5), Flatten(), Dense(6, name="d"),
              Softmax())),
    ModelSpec((12,), (Dense(5, name="x"), ReLU(), Dense(3, name="y"))),
]


@pytest.mark.parametrize("spec", [zoo(n, input_shape=s, num_classes=10) for n, s in EXPECTED]
                         + ODD_SPECS)
def test_param_spec_of_matches_the_built_module(spec: ModelSpec) -> None:
    # param_spec_of works from the spec alone; it must agree with torch name for name, in order.
    assert list(param_spec_of(spec).items()) == list(pm.spec_of(get_params(build_torch(spec)))
                                                     .items())


def _tf_conv_same(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray, stride: int) -> np.ndarray:
    """TF's Conv2D(padding="same") on NHWC input with a (kh, kw, in, out) kernel, by loops."""
    n, h, w, _ = x.shape
    k = kernel.shape[0]
    oh, ow = -(-h // stride), -(-w // stride)
    ph = max((oh - 1) * stride + k - h, 0)
    pw = max((ow - 1) * stride + k - w, 0)
    xp = np.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
    out = np.zeros((n, oh, ow, kernel.shape[3]), np.float64)
    for i in range(oh):
        for j in range(ow):
            patch = xp[:, i * stride:i * stride + k, j * stride:j * stride + k, :]
            out[:, i, j, :] = np.einsum("nabc,abcd->nd", patch, kernel)
    return np.asarray(out + bias)


@pytest.mark.parametrize("kernel, stride", [(3, 1), (4, 1), (4, 2), (3, 2), (2, 3)])
def test_conv_same_padding_matches_tf_formula(kernel: int, stride: int) -> None:
    # Also checks the documented TF.js kernel layout: (kh, kw, in, out) = torch's
    # (out, in, kh, kw) transposed, and the output coming back channels-last.
    # and the Flatten after it taking channels-last (H, W, C) order, as Keras does.
    spec = ModelSpec((7, 6, 2), (Conv2D(3, kernel, name="c", stride=stride), Flatten()))
    net = build_torch(spec, seed=5)
    p = get_params(net)
    x = np.random.default_rng(1).normal(size=(2, 7, 6, 2)).astype(np.float32)
    got = net(torch.from_numpy(x)).detach().numpy()
    ref = _tf_conv_same(x, p["c.weight"].transpose(2, 3, 1, 0), p["c.bias"], stride)
    assert ref.shape[1:] == spec.layers[0].output_shape((7, 6, 2))
    np.testing.assert_allclose(got, ref.reshape(2, -1), atol=1e-5)


def test_channels_first_input_is_refused() -> None:
    net = build_torch(zoo("logreg", input_shape=(8, 8, 1), num_classes=10))
    # Same element count: without the check it would silently flatten in the wrong order.
    with pytest.raises(ConfigError, match=r"channels-last input \(N, 8, 8, 1\)"):
        net(torch.zeros(2, 1, 8, 8))
    with pytest.raises(ConfigError, match="channels-last"):
        net.logits(torch.zeros(2, 64))
    assert net(torch.zeros(0, 8, 8, 1)).shape == (0, 10)


@pytest.mark.parametrize("name", ["forward", "spec", "training", "logits", "to"])
def test_layer_names_that_shadow_module_attributes(name: str) -> None:
    spec = ModelSpec((4,), (Dense(3, name=name),))
    with pytest.raises(ConfigError, match=f"'{name}'.*rename"):
        build_torch(spec)


@pytest.mark.parametrize("seed", [-1, 2**63, 1.5, "0"])
def test_bad_seed(seed: object) -> None:
    with pytest.raises(ConfigError, match="seed"):
        build_torch(zoo("logreg", input_shape=(4,), num_classes=2), seed=seed)  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["[" * 100_000, "", "null", "[]", '{"input_shape": [4]}',
                                  '{"input_shape": [4], "layers": [{"type": "Dense"}]}',
                                  '{"input_shape": [4], "layers": [{"type": "Dense", '
                                  '"units": 2.0, "name": "d"}]}',
                                  '{"input_shape": [4.5], "layers": []}'])
def test_from_json_garbage_is_config_error(text: str) -> None:
    with pytest.raises(ConfigError):
        ModelSpec.from_json(text)


_dense = st.builds(lambda u, i: Dense(u, name=f"d{i}"), st.integers(1, 8), st.integers(0, 99))
_plain = st.one_of(st.just(ReLU()), st.builds(Dropout, st.floats(0, 0.99)), _dense)


@given(flat=st.integers(1, 10), body=st.lists(_plain, max_size=6), units=st.integers(2, 5))
def test_json_round_trip_property(flat: int, body: list, units: int) -> None:  # type: ignore[type-arg]
    names = [getattr(layer, "name", None) for layer in body]
    body = [layer for k, layer in enumerate(body)
            if names[k] is None or names[k] not in names[:k]]
    spec = ModelSpec((flat,), (*body, Dense(units, name="head")))
    again = ModelSpec.from_json(spec.to_json())
    assert again == spec and again.to_json() == spec.to_json()
    assert again.output_shape() == (units,)


_UNPICKLED: list[str] = []


def _mark() -> str:
    _UNPICKLED.append("ran")
    return "ran"


class _Payload:
    def __reduce__(self) -> tuple[object, tuple[()]]:
        return (_mark, ())


def test_load_model_never_unpickles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("load_model reached pickle")

    for fn in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, fn, refuse)
    evil = tmp_path / "evil.safetensors"
    evil.write_bytes(pickle.dumps({"dense1.weight": _Payload()}))
    torch_file = tmp_path / "torch.pt"
    torch.save(build_torch(zoo("logreg", input_shape=(4,), num_classes=2)).state_dict(),
               torch_file)
    for path in (evil, torch_file):
        with pytest.raises(PrivmlError):
            load_model(path)
    assert _UNPICKLED == []


def test_corrupted_header_and_nan_are_refused(tmp_path: Path) -> None:
    spec = zoo("mlp", input_shape=(8, 8, 1), num_classes=10)
    params = get_params(build_torch(spec))
    path = tmp_path / "m.safetensors"
    save_model(path, spec, params)
    data = bytearray(path.read_bytes())
    broken = bytearray(data)
    broken[20] ^= 0xFF  # inside the JSON header
    path.write_bytes(bytes(broken))
    with pytest.raises(ParamsError):
        load_model(path)
    # pm.encode refuses NaN, so write the safetensors by hand, privml header and all.
    nan = {**params, "dense2.bias": np.full(10, np.nan, np.float32)}
    meta = {"format": pm.FORMAT, "version": pm.VERSION, "order": json.dumps(list(nan)),
            "model_spec": spec.to_json()}
    path.write_bytes(st_save(nan, metadata=meta))
    with pytest.raises(ParamsError, match=r"dense2\.bias.*NaN"):
        load_model(path)
    bad_spec = tmp_path / "bad_spec"
    bad_spec.write_bytes(pm.encode(params, metadata={"model_spec": "[" * 100_000}))
    with pytest.raises(ParamsError, match="bad model spec"):
        load_model(bad_spec)


def test_failed_save_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = zoo("logreg", input_shape=(8, 8, 1), num_classes=10)
    path = tmp_path / "m.safetensors"
    save_model(path, spec, get_params(build_torch(spec, seed=1)))
    old = path.read_bytes()

    def crash(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        save_model(path, spec, get_params(build_torch(spec, seed=2)))
    assert path.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]
