"""Model files: the parameters as privml safetensors, with the spec in the header."""

from __future__ import annotations

import os
from pathlib import Path

from privml import params as pm
from privml._exceptions import ConfigError, DataError, ParamsError
from privml.models._spec import ModelSpec
from privml.models._torch import build_torch
from privml.params import Params

__all__ = ["load_model", "param_spec_of", "save_model"]


def param_spec_of(spec: ModelSpec) -> pm.Spec:
    """The parameter names and shapes a spec's torch module has."""
    module = build_torch(spec)
    return {name: tuple(t.shape) for name, t in module.state_dict().items()}


def save_model(path: str | Path, spec: ModelSpec, params: Params) -> None:
    """Write ``params`` (checked against ``spec``) and the spec, atomically."""
    checked = pm.validate(params, param_spec_of(spec))
    data = pm.encode(checked, metadata={"model_spec": spec.to_json()})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def load_model(path: str | Path) -> tuple[ModelSpec, Params]:
    """Read a model file; never runs code (safetensors, no pickle).

    Raises :class:`~privml.DataError` for a missing file, and :class:`~privml.ParamsError`
    for a corrupt one, a missing or bad spec, or parameters that do not fit the spec.
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
