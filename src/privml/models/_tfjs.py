"""TensorFlow.js LayersModel files for a :class:`ModelSpec`, in pure numpy (no TensorFlow).

Theory of operation. The torch module takes channels-last input and flattens images in NHWC
order, so the browser model is a plain Keras ``Sequential`` whose layers map one to one onto
the spec's; only the kernels change layout (Dense (out, in) -> (in, out); Conv2D
(out, in, kh, kw) -> (kh, kw, in, out)). Dense and Conv2D keep the spec's names, so their
weights are ``<layer>/kernel`` and ``<layer>/bias``, the names ``tf.loadLayersModel`` insists
on; the other layers get stable generated names that cannot collide with them.

Weights coming back from a browser (``model.save`` through ``tf.io.withSaveHandler``: a
list of weight specs and one byte buffer) are untrusted: :func:`from_tfjs_weights` checks
every name, shape, dtype and the byte length against the spec before it reads a float, and
refuses NaN/Inf, raising :class:`~privml.ParamsError` naming the weight.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from privml import params as pm
from privml._exceptions import ConfigError, DataError, ParamsError
from privml.models._io import _write_atomically, param_spec_of
from privml.models._layers import Conv2D, Dense, Dropout, Flatten, Layer, MaxPool2D, ReLU, Softmax
from privml.models._spec import ModelSpec
from privml.params import Params

__all__ = [
    "from_tfjs_weights",
    "read_tfjs",
    "tfjs_layout",
    "tfjs_topology",
    "tfjs_weight_spec",
    "to_tfjs",
    "write_tfjs",
]

MODEL_JSON = "model.json"
WEIGHTS_BIN = "weights.bin"
_KERAS_VERSION = "tfjs-layers 4.22.0"  # what TF.js's own model.save writes; informational
_GENERATED_BY = "privml"
_CONVERTED_BY = "privml.models.to_tfjs"
_MODEL_JSON_LIMIT = 16 * 1024 * 1024  # a topology is a few kB; refuse absurd files unread
_FLOAT32_LE = np.dtype("<f4")


def _torch_to_tfjs_name(name: str) -> str:
    layer, kind = name.rsplit(".", 1)
    return f"{layer}/{'kernel' if kind == 'weight' else 'bias'}"


def _tfjs_shape(torch_shape: tuple[int, ...]) -> tuple[int, ...]:
    if len(torch_shape) == 2:  # Dense (out, in) -> (in, out)
        return (torch_shape[1], torch_shape[0])
    if len(torch_shape) == 4:  # Conv2D (out, in, kh, kw) -> (kh, kw, in, out)
        out, cin, kh, kw = torch_shape
        return (kh, kw, cin, out)
    return torch_shape


def tfjs_weight_spec(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    """The TF.js weight names and shapes of ``spec``'s model, in layer order."""
    return {_torch_to_tfjs_name(n): _tfjs_shape(s) for n, s in param_spec_of(spec).items()}


def tfjs_layout(spec: ModelSpec) -> list[dict[str, Any]]:
    """How a browser lays its weights out as privml parameters, in the spec's parameter
    order (the order of the flat vector secure aggregation sums): for each parameter its
    name, the TF.js weight it comes from, that weight's shape, and ``perm``, the axes
    permutation (``tf.transpose``) from the TF.js layout to torch's."""
    perms = {1: [0], 2: [1, 0], 4: [3, 2, 0, 1]}
    out = []
    for name, shape in param_spec_of(spec).items():
        out.append({"param": name, "weight": _torch_to_tfjs_name(name),
                    "shape": list(_tfjs_shape(shape)), "perm": perms[len(shape)]})
    return out


def _to_tfjs_array(arr: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    if arr.ndim == 2:
        return arr.T
    if arr.ndim == 4:
        return arr.transpose(2, 3, 1, 0)
    return arr


def _to_torch_array(arr: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    if arr.ndim == 2:
        return np.ascontiguousarray(arr.T)
    if arr.ndim == 4:  # (kh, kw, in, out) -> (out, in, kh, kw)
        return np.ascontiguousarray(arr.transpose(3, 2, 0, 1))
    return arr


# ---------------------------------------------------------------------------------------
# Topology


def _layer_names(spec: ModelSpec) -> list[str]:
    taken = {getattr(layer, "name", None) for layer in spec.layers} - {None}
    names: list[str] = []
    for i, layer in enumerate(spec.layers):
        name = getattr(layer, "name", None)
        if name is None:
            name = f"{type(layer).__name__.lower()}_{i}"
            while name in taken:  # a user may have named a Dense "flatten_0"
                name += "_"
            taken.add(name)
        names.append(name)
    return names


def _layer_config(layer: Layer) -> tuple[str, dict[str, Any]]:
    if isinstance(layer, Dense):
        return "Dense", {"units": layer.units, "activation": "linear", "use_bias": True}
    if isinstance(layer, Conv2D):
        k, s = layer.kernel_size, layer.stride
        return "Conv2D", {
            "filters": layer.filters, "kernel_size": [k, k], "strides": [s, s],
            "padding": layer.padding, "data_format": "channels_last", "dilation_rate": [1, 1],
            "activation": "linear", "use_bias": True,
        }
    if isinstance(layer, MaxPool2D):
        p = layer.pool_size
        return "MaxPooling2D", {"pool_size": [p, p], "strides": [p, p], "padding": "valid",
                                "data_format": "channels_last"}
    if isinstance(layer, Flatten):
        return "Flatten", {"data_format": "channels_last"}
    if isinstance(layer, ReLU):
        return "Activation", {"activation": "relu"}
    if isinstance(layer, Softmax):
        return "Activation", {"activation": "softmax"}
    if isinstance(layer, Dropout):
        return "Dropout", {"rate": layer.rate}
    raise ConfigError(f"no TF.js layer for {layer!r}")  # unreachable for a valid spec


def tfjs_topology(spec: ModelSpec) -> dict[str, Any]:
    """The Keras ``Sequential`` config (``modelTopology``) TF.js rebuilds the model from."""
    layers: list[dict[str, Any]] = []
    for i, (layer, name) in enumerate(zip(spec.layers, _layer_names(spec), strict=True)):
        class_name, config = _layer_config(layer)
        head: dict[str, Any] = {"name": name, "trainable": True, "dtype": "float32"}
        if i == 0:
            head["batch_input_shape"] = [None, *spec.input_shape]
        layers.append({"class_name": class_name, "config": {**head, **config}})
    return {
        "class_name": "Sequential",
        "config": {"name": "privml_sequential", "layers": layers},
        "keras_version": _KERAS_VERSION,
        "backend": "tensor_flow.js",
    }


def to_tfjs(spec: ModelSpec, params: Mapping[str, npt.NDArray[np.float32]]
            ) -> tuple[dict[str, Any], bytes]:
    """``(model.json object, weights.bin bytes)`` of a TF.js LayersModel for ``spec``.

    ``params`` are privml parameters in torch layout, checked against the spec first
    (:class:`~privml.ParamsError` if they do not fit). The bytes are little-endian float32
    weights concatenated in manifest order; the manifest names one file, ``weights.bin``.
    """
    if not isinstance(spec, ModelSpec):
        raise ConfigError(f"to_tfjs needs a ModelSpec, got {type(spec).__name__}")
    checked = pm.validate(params, param_spec_of(spec))
    manifest: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for name, arr in checked.items():
        out = _to_tfjs_array(arr)
        manifest.append({"name": _torch_to_tfjs_name(name), "shape": list(out.shape),
                         "dtype": "float32"})
        chunks.append(np.ascontiguousarray(out, dtype=_FLOAT32_LE).tobytes())
    model_json = {
        "format": "layers-model",
        "generatedBy": _GENERATED_BY,
        "convertedBy": _CONVERTED_BY,
        "modelTopology": tfjs_topology(spec),
        "weightsManifest": [{"paths": [WEIGHTS_BIN], "weights": manifest}],
        # TF.js keeps this as the model's getUserDefinedMetadata(); pages read the layout
        # of the parameter vector from it.
        "userDefinedMetadata": {"privml": {"layout": tfjs_layout(spec),
                                           "input_shape": list(spec.input_shape)}},
    }
    return model_json, b"".join(chunks)


# ---------------------------------------------------------------------------------------
# Weights back from a browser (untrusted)


@dataclass(frozen=True, slots=True)
class _Entry:
    name: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * 4


def _parse_entry(i: int, raw: object) -> _Entry:
    if not isinstance(raw, Mapping):
        raise ParamsError(f"weight entry {i}: expected an object, got {type(raw).__name__}")
    name = raw.get("name")
    if not isinstance(name, str):
        raise ParamsError(f"weight entry {i}: 'name' must be a string, got {name!r}")
    where = f"weight {name[:80]!r}"
    extra = sorted(set(raw) - {"name", "shape", "dtype", "group"})
    if extra:  # "quantization" and friends change the byte layout: refuse, never guess
        raise ParamsError(f"{where}: unsupported field {str(extra[0])[:40]!r}")
    if raw.get("dtype") != "float32":
        raise ParamsError(f"{where}: dtype {str(raw.get('dtype'))[:40]!r} is not float32")
    shape = raw.get("shape")
    if not isinstance(shape, list | tuple) or len(shape) > 8 or any(
            isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in shape):
        raise ParamsError(f"{where}: shape must be a list of non-negative ints, got "
                          f"{str(shape)[:80]}")
    return _Entry(name, tuple(shape))


def _parse_entries(manifest_weights: object) -> list[_Entry]:
    if not isinstance(manifest_weights, Sequence) or isinstance(manifest_weights, str | bytes):
        raise ParamsError("weight manifest must be a list of weight entries")
    return [_parse_entry(i, raw) for i, raw in enumerate(manifest_weights)]


def _check_entries(entries: Sequence[_Entry], expected: Mapping[str, tuple[int, ...]]) -> None:
    seen: set[str] = set()
    for e in entries:
        if e.name in seen:
            raise ParamsError(f"weight {e.name!r}: appears more than once")
        seen.add(e.name)
        if e.name not in expected:
            raise ParamsError(f"weight {e.name[:80]!r}: not in the model")
        if e.shape != expected[e.name]:
            raise ParamsError(f"weight {e.name!r}: shape {e.shape} != expected "
                              f"{expected[e.name]}")
    missing = [n for n in expected if n not in seen]
    if missing:
        raise ParamsError(f"weight {missing[0]!r}: missing ({len(missing)} missing in all)")


def _slice(entries: Sequence[_Entry], data: bytes, where: str) -> dict[str, Any]:
    want = sum(e.nbytes for e in entries)
    if len(data) != want:
        raise ParamsError(f"{where}: {len(data)} bytes, but the weights "
                          f"{', '.join(repr(e.name) for e in entries[:3])}"
                          f"{', ...' if len(entries) > 3 else ''} need exactly {want}")
    out: dict[str, Any] = {}
    offset = 0
    for e in entries:
        arr = np.frombuffer(data, dtype=_FLOAT32_LE, count=math.prod(e.shape), offset=offset)
        offset += e.nbytes
        if not np.isfinite(arr).all():
            raise ParamsError(f"weight {e.name!r}: contains NaN or Inf")
        out[e.name] = arr.astype(np.float32).reshape(e.shape)  # native-endian, own copy
    return out


def _to_params(spec: ModelSpec, tfjs: Mapping[str, Any]) -> Params:
    return {name: _to_torch_array(tfjs[_torch_to_tfjs_name(name)])
            for name in param_spec_of(spec)}


def from_tfjs_weights(spec: ModelSpec, manifest_weights: object, data: bytes) -> Params:
    """privml parameters (torch layout, spec order) from TF.js weight specs and bytes.

    ``manifest_weights`` is the ``weights`` list of a manifest group (or TF.js's
    ``artifacts.weightSpecs``) and ``data`` its bytes (``artifacts.weightData``). Every
    weight of the model must appear exactly once (in any order), with its exact shape and
    dtype float32, the bytes must be exactly as long as the weights, and every value finite;
    otherwise :class:`~privml.ParamsError` naming the weight.
    """
    if not isinstance(spec, ModelSpec):
        raise ConfigError(f"from_tfjs_weights needs a ModelSpec, got {type(spec).__name__}")
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ParamsError(f"weight data must be bytes, got {type(data).__name__}")
    entries = _parse_entries(manifest_weights)
    _check_entries(entries, tfjs_weight_spec(spec))
    return _to_params(spec, _slice(entries, bytes(data), "weight data"))


# ---------------------------------------------------------------------------------------
# Folders


def write_tfjs(folder: str | os.PathLike[str], spec: ModelSpec,
               params: Mapping[str, npt.NDArray[np.float32]]) -> Path:
    """Write ``model.json`` and ``weights.bin`` into ``folder``; returns model.json's path.

    Each file is replaced atomically, weights first: a reader that sees the new model.json
    also sees the new weights. (A reader still holding the old model.json may read the new
    weights; they have the same layout when the spec is unchanged.)
    """
    model_json, data = to_tfjs(spec, params)
    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    _write_atomically(target / WEIGHTS_BIN, data)
    path = target / MODEL_JSON
    _write_atomically(path, json.dumps(model_json, indent=1).encode())
    return path


def _read(path: Path, limit: int | None = None) -> bytes:
    try:
        if limit is not None and path.stat().st_size > limit:
            raise ParamsError(f"{path}: larger than {limit} bytes")
        return path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _groups(model_json: object) -> list[tuple[list[str], list[_Entry]]]:
    if not isinstance(model_json, dict):
        raise ParamsError("model.json is not a JSON object")
    if model_json.get("format", "layers-model") != "layers-model":
        raise ParamsError(f"model.json format {str(model_json.get('format'))[:40]!r} is not "
                          "'layers-model'")
    manifest = model_json.get("weightsManifest")
    if not isinstance(manifest, list):
        raise ParamsError("model.json has no 'weightsManifest' list")
    groups: list[tuple[list[str], list[_Entry]]] = []
    for i, group in enumerate(manifest):
        paths = group.get("paths") if isinstance(group, dict) else None
        # Plain file names only: a manifest must not read files outside its folder.
        if not isinstance(paths, list) or not all(
                isinstance(p, str) and p and p == os.path.basename(p) and p not in (".", "..")
                and "\\" not in p for p in paths):
            raise ParamsError(f"weightsManifest group {i}: 'paths' must be plain file names")
        groups.append((paths, _parse_entries(group.get("weights"))))
    return groups


def read_tfjs(folder: str | os.PathLike[str], spec: ModelSpec) -> Params:
    """privml parameters from a TF.js LayersModel folder (``model.json`` + weight files).

    The weights are checked as :func:`from_tfjs_weights` checks them, group by group;
    :class:`~privml.DataError` if a file cannot be read, :class:`~privml.ParamsError` (naming
    the folder) for a malformed model.json or weights that do not fit ``spec``.
    """
    if not isinstance(spec, ModelSpec):
        raise ConfigError(f"read_tfjs needs a ModelSpec, got {type(spec).__name__}")
    base = Path(folder)
    try:
        try:
            model_json = json.loads(_read(base / MODEL_JSON, _MODEL_JSON_LIMIT))
        except (ValueError, RecursionError) as exc:
            raise ParamsError(f"model.json is not valid JSON: {exc}") from None
        groups = _groups(model_json)
        _check_entries([e for _, entries in groups for e in entries], tfjs_weight_spec(spec))
        tfjs: dict[str, Any] = {}
        for paths, entries in groups:
            want = sum(e.nbytes for e in entries)  # no file bigger than its group is read
            data = b"".join(_read(base / p, want) for p in paths)
            tfjs.update(_slice(entries, data, f"weight files {paths}"))
        return _to_params(spec, tfjs)
    except ParamsError as exc:
        raise ParamsError(f"TF.js model {base}: {exc}") from None
