"""Model parameters: an ordered mapping name -> float32 array, and its safetensors bytes.

Parameters are what travels between clients and the coordinator, and what lies on disk, so
decoding is a trust boundary: :func:`decode` checks the bytes against an expected
:data:`Spec` and raises :class:`~privml.ParamsError` naming the offending tensor for a missing
or extra name, a wrong shape or dtype, a NaN/Inf, or bytes that are truncated or not
safetensors at all. No pickle is involved anywhere: safetensors is a JSON header and raw
little-endian buffers, so loading never runs code.

Every encoding carries the metadata ``{"format": "privml.params", "version": "1"}`` in the
safetensors header (STYLE rule 7: formats start with a magic and a version).
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import numpy.typing as npt
from safetensors import SafetensorError
from safetensors.numpy import load as _st_load
from safetensors.numpy import save as _st_save

from privml._exceptions import ConfigError, ParamsError

__all__ = [
    "FORMAT",
    "VERSION",
    "Params",
    "Spec",
    "add",
    "decode",
    "encode",
    "flatten",
    "l2_norm",
    "metadata",
    "scale",
    "spec_of",
    "subtract",
    "unflatten",
    "validate",
    "weighted_sum",
    "zeros_like",
]

FORMAT = "privml.params"
VERSION = "1"

Array = npt.NDArray[np.float32]
#: An ordered mapping from tensor name to float32 array. Plain dicts keep insertion order.
Params = dict[str, Array]
#: The expected names (in order) and shapes of a model's parameters.
Spec = dict[str, tuple[int, ...]]

_HEADER_LIMIT = 100 * 1024 * 1024  # safetensors' own header bound


def spec_of(params: Mapping[str, npt.NDArray[np.generic]]) -> Spec:
    """The names and shapes of ``params``, in order."""
    return {name: tuple(int(d) for d in arr.shape) for name, arr in params.items()}


def _check_tensor(name: str, arr: npt.NDArray[np.generic], shape: tuple[int, ...] | None) -> None:
    if arr.dtype != np.float32:
        raise ParamsError(f"tensor {name!r}: dtype {arr.dtype} is not float32")
    if shape is not None and tuple(arr.shape) != tuple(shape):
        raise ParamsError(f"tensor {name!r}: shape {tuple(arr.shape)} != expected {tuple(shape)}")
    if not np.isfinite(arr).all():
        raise ParamsError(f"tensor {name!r}: contains NaN or Inf")


def validate(params: Mapping[str, npt.NDArray[np.generic]], spec: Mapping[str, Sequence[int]]
             | None = None) -> Params:
    """Check ``params`` against ``spec`` and return them in the spec's order.

    Raises :class:`ParamsError` naming the first tensor that is missing, extra, of the wrong
    shape or dtype, or not finite.
    """
    if spec is None:
        for name, arr in params.items():
            _check_tensor(name, arr, None)
        return {name: params[name] for name in params}  # type: ignore[misc]
    missing = [n for n in spec if n not in params]
    if missing:
        raise ParamsError(f"tensor {missing[0]!r}: missing ({len(missing)} missing in all)")
    extra = [n for n in params if n not in spec]
    if extra:
        raise ParamsError(f"tensor {extra[0]!r}: not in the model ({len(extra)} extra in all)")
    out: Params = {}
    for name, shape in spec.items():
        arr = params[name]
        _check_tensor(name, arr, tuple(shape))
        out[name] = arr  # type: ignore[assignment]
    return out


def encode(params: Mapping[str, npt.NDArray[np.generic]], *,
           metadata: Mapping[str, str] | None = None) -> bytes:
    """Encode finite float32 ``params`` to safetensors bytes (order is kept in the header).

    ``metadata`` adds string entries to the header (a model file keeps its spec there); the
    keys ``format``, ``version`` and ``order`` are reserved.
    """
    checked = validate(params)
    extra = dict(metadata or {})
    reserved = {"format", "version", "order"} & set(extra)
    if reserved:
        raise ConfigError(f"metadata keys {sorted(reserved)} are reserved")
    meta = {**extra, "format": FORMAT, "version": VERSION, "order": json.dumps(list(checked))}
    tensors = {name: np.ascontiguousarray(arr) for name, arr in checked.items()}
    return bytes(_st_save(tensors, metadata=meta))


def _header(data: bytes) -> dict[str, object]:
    if len(data) < 8:
        raise ParamsError(f"parameter bytes truncated: {len(data)} bytes, no safetensors header")
    (n,) = struct.unpack("<Q", data[:8])
    if n > _HEADER_LIMIT or 8 + n > len(data):
        raise ParamsError("parameter bytes truncated or garbage: header length out of range")
    try:
        header = json.loads(data[8 : 8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        # (RecursionError: JSON nested deeper than the parser recurses, e.g. "[[[[...")
        raise ParamsError("parameter bytes are not safetensors: header is not JSON") from exc
    if not isinstance(header, dict):
        raise ParamsError("parameter bytes are not safetensors: header is not an object")
    return header


def metadata(data: bytes) -> dict[str, str]:
    """The header metadata of privml parameter bytes, after checking format and version."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ParamsError(f"parameter bytes expected, got {type(data).__name__}")
    header = _header(bytes(data))
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ParamsError(f"parameter bytes are not {FORMAT} (no format tag in the header)")
    if meta.get("version") != VERSION:
        raise ParamsError(f"unsupported {FORMAT} version {meta.get('version')!r}")
    return {str(k): str(v) for k, v in meta.items()}


def decode(data: bytes, spec: Mapping[str, Sequence[int]] | None = None) -> Params:
    """Decode safetensors bytes, checked against ``spec`` when given.

    Raises :class:`ParamsError` for truncated or garbage bytes, a foreign format or version,
    and every mismatch :func:`validate` finds.
    """
    meta = metadata(data)
    data = bytes(data)
    try:
        raw = _st_load(data)
    except (SafetensorError, ValueError, TypeError) as exc:
        raise ParamsError(f"parameter bytes truncated or corrupt: {exc}") from exc
    try:
        order = json.loads(str(meta.get("order", "[]")))
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ParamsError("parameter bytes: order metadata is not JSON") from exc
    # (names checked as strings first: sorting a list of mixed types raises TypeError)
    if (not isinstance(order, list) or not all(isinstance(n, str) for n in order)
            or sorted(order) != sorted(raw)):
        raise ParamsError("parameter bytes: order metadata does not match the tensors")
    params = {str(name): raw[name] for name in order}
    return validate(params, spec)


def flatten(params: Mapping[str, Array]) -> Array:
    """Concatenate all tensors, in order, into one float32 vector."""
    if not params:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate([np.asarray(a, dtype=np.float32).ravel() for a in params.values()])


def unflatten(vector: npt.NDArray[np.floating], spec: Mapping[str, Sequence[int]]) -> Params:
    """Split ``vector`` back into tensors of the spec's names and shapes."""
    sizes = [math.prod(shape) for shape in spec.values()]
    if vector.ndim != 1 or vector.size != sum(sizes):
        raise ParamsError(f"vector of shape {vector.shape} does not hold {sum(sizes)} values")
    out: Params = {}
    offset = 0
    for (name, shape), size in zip(spec.items(), sizes, strict=True):
        out[name] = vector[offset : offset + size].astype(np.float32).reshape(tuple(shape))
        offset += size
    return out


def l2_norm(params: Mapping[str, Array]) -> float:
    """The L2 norm of all tensors taken as one vector (accumulated in float64)."""
    return math.sqrt(sum(float(np.sum(np.square(a, dtype=np.float64))) for a in params.values()))


def _same_spec(items: Sequence[Mapping[str, Array]]) -> Spec:
    spec = spec_of(items[0])
    for other in items[1:]:
        if spec_of(other) != spec:
            raise ParamsError("parameter sets have different names or shapes")
    return spec


def weighted_sum(items: Sequence[Mapping[str, Array]], weights: Iterable[float]) -> Params:
    """sum_i w_i * items[i], accumulated in float64, returned as float32."""
    ws = [float(w) for w in weights]
    if not items or len(ws) != len(items):
        raise ConfigError("weighted_sum needs as many weights as parameter sets (at least one)")
    spec = _same_spec(items)
    out: Params = {}
    for name in spec:
        acc = np.zeros(spec[name], dtype=np.float64)
        for p, w in zip(items, ws, strict=True):
            acc += w * p[name].astype(np.float64)
        out[name] = acc.astype(np.float32)
    return out


def add(a: Mapping[str, Array], b: Mapping[str, Array]) -> Params:
    """a + b, tensor by tensor."""
    return weighted_sum([a, b], [1.0, 1.0])


def subtract(a: Mapping[str, Array], b: Mapping[str, Array]) -> Params:
    """a - b, tensor by tensor."""
    return weighted_sum([a, b], [1.0, -1.0])


def scale(a: Mapping[str, Array], factor: float) -> Params:
    """factor * a, tensor by tensor."""
    return weighted_sum([a], [factor])


def zeros_like(a: Mapping[str, Array]) -> Params:
    """A parameter set of zeros with a's names and shapes."""
    return {name: np.zeros_like(arr, dtype=np.float32) for name, arr in a.items()}
