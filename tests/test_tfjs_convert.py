"""The TF.js LayersModel converter: round trips, Keras semantics, JSON structure, bad weights.

The forward pass here is written from the Keras layer semantics and reads only what a
browser reads (model.json + weights.bin), so it pins the topology independently of
privml's own converter code before the headless-browser test runs the real TF.js.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from privml import DataError, ParamsError
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
    from_tfjs_weights,
    param_spec_of,
    read_tfjs,
    tfjs_weight_spec,
    to_tfjs,
    write_tfjs,
    zoo,
)
from privml.params import Params
from privml.train import set_params

SHAPE = (8, 8, 1)

# Beyond the zoo: valid padding, stride 2, odd sizes, Dropout, a trailing Softmax, and a
# user layer name that a generated name could have collided with.
ODD = ModelSpec((9, 7, 2), (
    Conv2D(4, 3, name="c1", padding="valid", stride=2), ReLU(),
    Conv2D(5, 2, name="relu_1", padding="same", stride=2), MaxPool2D(2), Dropout(0.25),
    Flatten(), Dense(6, name="d1"), ReLU(), Dense(3, name="out"), Softmax(),
))
FLAT = ModelSpec((12,), (Dense(5, name="a"), ReLU(), Dense(3, name="b"), Softmax()))


def _specs() -> dict[str, ModelSpec]:
    out = {name: zoo(name, input_shape=SHAPE, num_classes=10) for name in ZOO}
    return {**out, "odd": ODD, "flat": FLAT}


SPECS = _specs()


def _random_params(spec: ModelSpec, seed: int = 0) -> Params:
    # Scaled like torch's init (std ~ 1/sqrt(fan_in)) so outputs stay O(1) and 1e-5 is a
    # fair float32 tolerance; weight and bias scales differ so a swap would show.
    rng = np.random.default_rng(seed)
    out: Params = {}
    for name, shape in param_spec_of(spec).items():
        fan_in = math.prod(shape[1:]) if len(shape) > 1 else 4
        out[name] = rng.normal(0, 1 / math.sqrt(fan_in), size=shape).astype(np.float32)
    return out


def _manifest(model_json: dict[str, Any]) -> list[dict[str, Any]]:
    weights: list[dict[str, Any]] = model_json["weightsManifest"][0]["weights"]
    return weights


# ---------------------------------------------------------------------------------------
# An independent Keras-semantics forward pass over model.json + weights.bin


def _load_weights(folder: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    model_json = json.loads((folder / "model.json").read_text())
    weights: dict[str, np.ndarray] = {}
    for group in model_json["weightsManifest"]:
        data = b"".join((folder / p).read_bytes() for p in group["paths"])
        offset = 0
        for w in group["weights"]:
            assert w["dtype"] == "float32"
            n = math.prod(w["shape"])
            weights[w["name"]] = np.frombuffer(data, "<f4", n, offset).reshape(w["shape"])
            offset += 4 * n
        assert offset == len(data)
    return model_json, weights


def _pad_same(x: np.ndarray, k: int, s: int) -> np.ndarray:
    pads = []
    for size in x.shape[1:3]:
        out = -(-size // s)
        total = max((out - 1) * s + k - size, 0)
        pads.append((total // 2, total - total // 2))  # TF puts the odd pixel after
    return np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))


def _conv(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray, cfg: dict[str, Any]) -> np.ndarray:
    kh, kw = cfg["kernel_size"]
    sh, sw = cfg["strides"]
    assert kh == kw and sh == sw and cfg["data_format"] == "channels_last"
    if cfg["padding"] == "same":
        x = _pad_same(x, kh, sh)
    n, h, w, _ = x.shape
    oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
    out = np.zeros((n, oh, ow, kernel.shape[3]), np.float64)
    for i in range(kh):
        for j in range(kw):
            patch = x[:, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw, :]
            out += np.einsum("nhwc,co->nhwo", patch, kernel[i, j])
    return out + bias


def _maxpool(x: np.ndarray, cfg: dict[str, Any]) -> np.ndarray:
    (ph, pw), (sh, sw) = cfg["pool_size"], cfg["strides"]
    assert cfg["padding"] == "valid"
    n, h, w, c = x.shape
    oh, ow = (h - ph) // sh + 1, (w - pw) // sw + 1
    out = np.full((n, oh, ow, c), -np.inf)
    for i in range(ph):
        for j in range(pw):
            out = np.maximum(out, x[:, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw])
    return out


def _activation(x: np.ndarray, name: str) -> np.ndarray:
    if name == "linear":
        return x
    if name == "relu":
        return np.maximum(x, 0)
    assert name == "softmax"
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _keras_forward(folder: Path, x: np.ndarray) -> np.ndarray:
    model_json, weights = _load_weights(folder)
    topology = model_json["modelTopology"]
    assert topology["class_name"] == "Sequential"
    layers = topology["config"]["layers"]
    assert list(x.shape[1:]) == layers[0]["config"]["batch_input_shape"][1:]
    h = x.astype(np.float64)
    for layer in layers:
        cls, cfg = layer["class_name"], layer["config"]
        if cls == "Dense":
            h = h @ weights[f"{cfg['name']}/kernel"] + weights[f"{cfg['name']}/bias"]
            h = _activation(h, cfg["activation"])
        elif cls == "Conv2D":
            k, b = weights[f"{cfg['name']}/kernel"], weights[f"{cfg['name']}/bias"]
            h = _activation(_conv(h, k, b, cfg), cfg["activation"])
        elif cls == "MaxPooling2D":
            h = _maxpool(h, cfg)
        elif cls == "Flatten":
            h = h.reshape(h.shape[0], -1)  # NHWC order
        elif cls == "Activation":
            h = _activation(h, cfg["activation"])
        elif cls == "Dropout":
            pass  # identity at inference
        else:
            raise AssertionError(f"unexpected layer class {cls}")
    return h


@pytest.mark.parametrize("name", sorted(SPECS))
def test_round_trip_is_exact(name: str) -> None:
    spec = SPECS[name]
    params = _random_params(spec)
    model_json, data = to_tfjs(spec, params)
    back = from_tfjs_weights(spec, _manifest(model_json), data)
    assert list(back) == list(params)
    for key, arr in params.items():
        assert back[key].dtype == np.float32 and back[key].flags.c_contiguous
        np.testing.assert_array_equal(back[key], arr)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_keras_semantics_match_torch(name: str, tmp_path: Path) -> None:
    spec = SPECS[name]
    params = _random_params(spec, seed=1)
    write_tfjs(tmp_path, spec, params)
    x = np.random.default_rng(2).normal(size=(7, *spec.input_shape)).astype(np.float32)
    net = build_torch(spec)
    set_params(net, params)
    net.eval()
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    got = _keras_forward(tmp_path, x)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_folder_round_trip(name: str, tmp_path: Path) -> None:
    spec = SPECS[name]
    params = _random_params(spec, seed=3)
    path = write_tfjs(tmp_path / "m", spec, params)
    assert path == tmp_path / "m" / "model.json"
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.json", "weights.bin"]
    back = read_tfjs(path.parent, spec)
    for key, arr in params.items():
        np.testing.assert_array_equal(back[key], arr)


# ---------------------------------------------------------------------------------------
# The JSON as TF.js needs it


def test_mlp_model_json_structure() -> None:
    spec = SPECS["mlp"]
    params = _random_params(spec)
    model_json, data = to_tfjs(spec, params)
    json.dumps(model_json, allow_nan=False)  # plain JSON, nothing numpy in it
    assert model_json["format"] == "layers-model"
    assert {"generatedBy", "convertedBy"} <= set(model_json)
    topo = model_json["modelTopology"]
    assert topo["class_name"] == "Sequential" and topo["backend"] == "tensor_flow.js"
    layers = topo["config"]["layers"]
    assert [lay["class_name"] for lay in layers] == ["Flatten", "Dense", "Activation", "Dense"]
    assert layers[0]["config"]["batch_input_shape"] == [None, 8, 8, 1]
    assert all("batch_input_shape" not in lay["config"] for lay in layers[1:])
    assert layers[1]["config"] | {"units": 128} == layers[1]["config"]
    assert layers[1]["config"]["name"] == "dense1"
    assert layers[1]["config"]["activation"] == "linear"
    assert layers[1]["config"]["use_bias"] is True
    assert layers[2]["config"]["activation"] == "relu"
    names = [lay["config"]["name"] for lay in layers]
    assert len(set(names)) == len(names)
    assert model_json["weightsManifest"][0]["paths"] == ["weights.bin"]
    manifest = _manifest(model_json)
    assert [(w["name"], w["shape"], w["dtype"]) for w in manifest] == [
        ("dense1/kernel", [64, 128], "float32"), ("dense1/bias", [128], "float32"),
        ("dense2/kernel", [128, 10], "float32"), ("dense2/bias", [10], "float32")]
    # Manifest order is byte order: dense1's kernel (in, out) comes first, row-major.
    assert len(data) == 4 * (64 * 128 + 128 + 128 * 10 + 10)
    first = np.frombuffer(data, "<f4", 64 * 128).reshape(64, 128)
    np.testing.assert_array_equal(first, params["dense1.weight"].T)
    last = np.frombuffer(data, "<f4", 10, len(data) - 40)
    np.testing.assert_array_equal(last, params["dense2.bias"])


def test_cnn_and_odd_layer_configs() -> None:
    layers = to_tfjs(ODD, _random_params(ODD))[0]["modelTopology"]["config"]["layers"]
    conv = layers[0]["config"]
    assert layers[0]["class_name"] == "Conv2D"
    assert conv["batch_input_shape"] == [None, 9, 7, 2]
    assert (conv["name"], conv["filters"], conv["kernel_size"], conv["strides"],
            conv["padding"], conv["data_format"], conv["activation"], conv["use_bias"]) == (
        "c1", 4, [3, 3], [2, 2], "valid", "channels_last", "linear", True)
    assert layers[2]["config"]["padding"] == "same"
    pool = layers[3]
    assert pool["class_name"] == "MaxPooling2D"
    assert (pool["config"]["pool_size"], pool["config"]["strides"],
            pool["config"]["padding"]) == ([2, 2], [2, 2], "valid")
    assert layers[4]["class_name"] == "Dropout" and layers[4]["config"]["rate"] == 0.25
    assert layers[-1]["class_name"] == "Activation"
    assert layers[-1]["config"]["activation"] == "softmax"
    names = [lay["config"]["name"] for lay in layers]
    assert len(set(names)) == len(names)  # the generated ReLU name dodges "relu_1"
    assert names[2] == "relu_1"
    manifest_names = [w["name"] for w in _manifest(to_tfjs(ODD, _random_params(ODD))[0])]
    assert manifest_names == ["c1/kernel", "c1/bias", "relu_1/kernel", "relu_1/bias",
                              "d1/kernel", "d1/bias", "out/kernel", "out/bias"]
    assert tfjs_weight_spec(SPECS["cnn"])["conv2/kernel"] == (3, 3, 16, 32)


def test_layer_names_are_stable() -> None:
    spec = SPECS["cnn"]
    a = to_tfjs(spec, _random_params(spec, 0))[0]["modelTopology"]
    b = to_tfjs(spec, _random_params(spec, 1))[0]["modelTopology"]
    assert a == b


def test_to_tfjs_refuses_params_that_do_not_fit() -> None:
    spec = SPECS["mlp"]
    params = _random_params(spec)
    del params["dense2.bias"]
    with pytest.raises(ParamsError, match=r"dense2\.bias"):
        to_tfjs(spec, params)


# ---------------------------------------------------------------------------------------
# Bad browser weights are refused, naming the weight


def _browser(name: str = "cnn") -> tuple[ModelSpec, list[dict[str, Any]], bytes]:
    spec = SPECS[name]
    model_json, data = to_tfjs(spec, _random_params(spec))
    return spec, _manifest(model_json), data


def test_weights_in_another_order_are_accepted() -> None:
    spec, manifest, data = _browser("mlp")
    params = from_tfjs_weights(spec, manifest, data)
    # Put dense2 first, bytes and manifest alike.
    sizes = [4 * math.prod(w["shape"]) for w in manifest]
    cut = sizes[0] + sizes[1]
    swapped = from_tfjs_weights(spec, manifest[2:] + manifest[:2], data[cut:] + data[:cut])
    for key, arr in params.items():
        np.testing.assert_array_equal(swapped[key], arr)
    assert list(swapped) == list(params)


def _refused(spec: ModelSpec, manifest: Any, data: bytes, match: str) -> None:
    with pytest.raises(ParamsError, match=match):
        from_tfjs_weights(spec, manifest, data)


def test_missing_weight() -> None:
    spec, manifest, data = _browser()
    _refused(spec, manifest[:-1], data[:-4 * 10], "'dense2/bias': missing")


def test_extra_weight() -> None:
    spec, manifest, data = _browser()
    extra = [*manifest, {"name": "dense3/kernel", "shape": [2], "dtype": "float32"}]
    _refused(spec, extra, data + b"\0" * 8, "'dense3/kernel': not in the model")


def test_optimizer_weights_are_extra() -> None:
    spec, manifest, data = _browser()
    extra = [*manifest, {"name": "iter", "shape": [], "dtype": "float32"}]
    _refused(spec, extra, data + b"\0" * 4, "'iter': not in the model")


def test_duplicate_weight() -> None:
    spec, manifest, data = _browser()
    dup = [*manifest, manifest[1]]
    _refused(spec, dup, data + data[4 * 144:4 * 160], "'conv1/bias': appears more than once")


def test_wrong_shape() -> None:
    spec, manifest, data = _browser()
    bad = [dict(w) for w in manifest]
    bad[0]["shape"] = [16, 1, 3, 3]  # torch layout, same size: bytes would still fit
    _refused(spec, bad, data, r"'conv1/kernel': shape \(16, 1, 3, 3\) != expected \(3, 3, 1, 16\)")


@pytest.mark.parametrize("shape", [[3, 3, 1, -16], [3, 3, 1, 16.0], "3,3,1,16", None,
                                   [3, 3, 1, True]])
def test_malformed_shape(shape: object) -> None:
    spec, manifest, data = _browser()
    bad = [dict(w) for w in manifest]
    bad[0]["shape"] = shape
    _refused(spec, bad, data, "'conv1/kernel': shape must be")


@pytest.mark.parametrize("dtype", ["int32", "float16", "bool", None])
def test_wrong_dtype(dtype: object) -> None:
    spec, manifest, data = _browser()
    bad = [dict(w) for w in manifest]
    bad[3]["dtype"] = dtype
    _refused(spec, bad, data, "'conv2/bias': dtype .* is not float32")


def test_quantized_weights_are_refused() -> None:
    spec, manifest, data = _browser()
    bad = [dict(w) for w in manifest]
    bad[0]["quantization"] = {"dtype": "uint8", "scale": 1.0, "min": 0.0}
    _refused(spec, bad, data, "'conv1/kernel': unsupported field 'quantization'")


@pytest.mark.parametrize("delta", [-4, -1, 1, 4])
def test_wrong_byte_length(delta: int) -> None:
    spec, manifest, data = _browser()
    data = data[:delta] if delta < 0 else data + b"\0" * delta
    _refused(spec, manifest, data, r"weight data: \d+ bytes, .*need exactly")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite(bad: float) -> None:
    spec, manifest, data = _browser()
    arr = np.frombuffer(data, "<f4").copy()
    offset = sum(math.prod(w["shape"]) for w in manifest[:4])  # first value of dense1/kernel
    arr[offset + 5] = bad
    _refused(spec, manifest, arr.tobytes(), "'dense1/kernel': contains NaN or Inf")


@pytest.mark.parametrize("manifest", [None, "weights", {"name": "x"}, [1], [{"shape": [1]}]])
def test_malformed_manifest(manifest: object) -> None:
    spec, _, data = _browser()
    with pytest.raises(ParamsError):
        from_tfjs_weights(spec, manifest, data)


def test_data_must_be_bytes() -> None:
    spec, manifest, data = _browser()
    _refused(spec, manifest, list(data), "must be bytes")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------
# Folders from elsewhere


def _written(tmp_path: Path) -> tuple[ModelSpec, Path, dict[str, Any]]:
    spec = SPECS["mlp"]
    path = write_tfjs(tmp_path, spec, _random_params(spec))
    return spec, path, json.loads(path.read_text())


def test_read_missing_files(tmp_path: Path) -> None:
    spec, _, _ = _written(tmp_path)
    (tmp_path / "weights.bin").unlink()
    with pytest.raises(DataError, match=r"weights\.bin"):
        read_tfjs(tmp_path, spec)
    with pytest.raises(DataError, match=r"model\.json"):
        read_tfjs(tmp_path / "nowhere", spec)


def test_read_refuses_paths_outside_the_folder(tmp_path: Path) -> None:
    spec, path, model_json = _written(tmp_path / "m")
    (tmp_path / "secret.bin").write_bytes((tmp_path / "m" / "weights.bin").read_bytes())
    for bad in (["../secret.bin"], [str(tmp_path / "secret.bin")], [""], "weights.bin"):
        model_json["weightsManifest"][0]["paths"] = bad
        path.write_text(json.dumps(model_json))
        with pytest.raises(ParamsError, match="plain file names"):
            read_tfjs(tmp_path / "m", spec)


def test_read_refuses_garbage_model_json(tmp_path: Path) -> None:
    spec, path, model_json = _written(tmp_path)
    for text in ("{", "[]", json.dumps({**model_json, "format": "graph-model"}),
                 json.dumps({**model_json, "weightsManifest": None})):
        path.write_text(text)
        with pytest.raises(ParamsError, match=re.escape(str(tmp_path))):
            read_tfjs(tmp_path, spec)


def test_read_refuses_wrong_weights(tmp_path: Path) -> None:
    spec, _, _ = _written(tmp_path)
    with pytest.raises(ParamsError, match="'dense1/kernel': shape"):
        read_tfjs(tmp_path, zoo("mlp", input_shape=(4, 4, 1), num_classes=10))
    weights = tmp_path / "weights.bin"
    weights.write_bytes(weights.read_bytes()[:-4])
    with pytest.raises(ParamsError, match="bytes"):
        read_tfjs(tmp_path, spec)


def test_read_accepts_sharded_weights(tmp_path: Path) -> None:
    # The TF.js converter splits big models into several files and groups.
    spec, path, model_json = _written(tmp_path)
    want = read_tfjs(tmp_path, spec)
    data = (tmp_path / "weights.bin").read_bytes()
    manifest = model_json["weightsManifest"][0]["weights"]
    cut = 4 * (64 * 128 + 128)
    (tmp_path / "g1a.bin").write_bytes(data[:100])
    (tmp_path / "g1b.bin").write_bytes(data[100:cut])
    (tmp_path / "g2.bin").write_bytes(data[cut:])
    model_json["weightsManifest"] = [
        {"paths": ["g1a.bin", "g1b.bin"], "weights": manifest[:2]},
        {"paths": ["g2.bin"], "weights": manifest[2:]}]
    path.write_text(json.dumps(model_json))
    (tmp_path / "weights.bin").unlink()
    got = read_tfjs(tmp_path, spec)
    for key, arr in want.items():
        np.testing.assert_array_equal(got[key], arr)


def test_no_pickle_or_tensorflow() -> None:
    import privml.models._tfjs as mod

    source = Path(mod.__file__).read_text()
    assert "pickle" not in source and "tensorflow" not in source.replace("tensor_flow", "")
    assert "import torch" not in source


def test_write_replaces_atomically(tmp_path: Path) -> None:
    spec = SPECS["logreg"]
    write_tfjs(tmp_path, spec, _random_params(spec, 0))
    new = _random_params(spec, 1)
    write_tfjs(tmp_path, spec, new)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "weights.bin"]
    np.testing.assert_array_equal(read_tfjs(tmp_path, spec)["dense1.weight"],
                                  new["dense1.weight"])
