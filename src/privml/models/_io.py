"""Model files: the parameters as privml safetensors, with the spec in the header.

A model file is ordinary privml parameter bytes (:mod:`privml.params`: safetensors with the
``privml.params`` format tag and version) whose header also holds ``model_spec``, the spec's
JSON. Loading reads a JSON header and raw float32 buffers, so it never runs code.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import numpy.typing as npt

from privml import params as pm
from privml._exceptions import ConfigError, DataError, ParamsError
from privml.models._layers import Conv2D, Dense
from privml.models._spec import ModelSpec
from privml.params import Params

__all__ = ["load_model", "param_spec_of", "save_model"]


def param_spec_of(spec: ModelSpec) -> pm.Spec:
    """The parameter names and shapes (in ``state_dict`` order) a spec's torch module has.

    Worked out from the spec alone, without building the module: a spec read from a file or
    a peer is checked before anything of its size is allocated.
    """
    out: pm.Spec = {}
    shape = spec.input_shape
    for layer in spec.layers:
        if isinstance(layer, Dense):
            out[f"{layer.name}.weight"] = (layer.units, shape[0])
            out[f"{layer.name}.bias"] = (layer.units,)
        elif isinstance(layer, Conv2D):
            k = layer.kernel_size
            out[f"{layer.name}.weight"] = (layer.filters, shape[2], k, k)
            out[f"{layer.name}.bias"] = (layer.filters,)
        shape = layer.output_shape(shape)
    return out


def _write_atomically(path: Path, data: bytes) -> None:
    # A unique temporary file in the same directory, synced, then renamed over the target:
    # readers see the old file or the new one, never half of one, and two writers do not
    # share a temporary name. mkstemp makes it owner-only (0600), which suits a model
    # trained on private data.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    # Make the rename itself durable; not every platform can open a directory.
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def save_model(path: str | os.PathLike[str], spec: ModelSpec,
               params: Mapping[str, npt.NDArray[np.float32]]) -> None:
    """Write ``params`` (checked against ``spec``: :class:`~privml.ParamsError` if they do
    not fit) and the spec to ``path``, atomically. OSError if the place is not writable."""
    if not isinstance(spec, ModelSpec):
        raise ConfigError(f"save_model needs a ModelSpec, got {type(spec).__name__}")
    checked = pm.validate(params, param_spec_of(spec))
    data = pm.encode(checked, metadata={"model_spec": spec.to_json()})
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically(target, data)


def load_model(path: str | os.PathLike[str]) -> tuple[ModelSpec, Params]:
    """Read a model file; never runs code (safetensors, no pickle).

    Raises :class:`~privml.DataError` for a file that cannot be read, and
    :class:`~privml.ParamsError` (naming the file) for a corrupt or truncated one, one
    without a spec or with a bad spec, and parameters that do not fit the spec.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise DataError(f"model file {path}: cannot read ({exc.strerror or exc})") from None
    try:
        meta = pm.metadata(data)
        if "model_spec" not in meta:
            raise ParamsError("no model spec in the header (not a privml model file)")
        try:
            spec = ModelSpec.from_json(meta["model_spec"])
        except ConfigError as exc:
            raise ParamsError(f"bad model spec: {exc}") from None
        return spec, pm.decode(data, param_spec_of(spec))
    except ParamsError as exc:
        raise ParamsError(f"model file {path}: {exc}") from None
