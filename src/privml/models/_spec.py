"""The portable model spec: an input shape and a sequence of layers, as JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Any

from privml._exceptions import ConfigError
from privml.models._layers import LAYER_TYPES, Layer, Shape

__all__ = ["ModelSpec"]

_BY_NAME: dict[str, type[Layer]] = {t.__name__: t for t in LAYER_TYPES}
FORMAT = "privml.model_spec"


def _layer_from_dict(i: int, raw: object) -> Layer:
    if not isinstance(raw, dict):
        raise ConfigError(f"layer {i}: expected an object, got {type(raw).__name__}")
    kind = raw.get("type")
    cls = _BY_NAME.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ConfigError(f"layer {i}: unknown layer type {kind!r} "
                          f"(choose from {', '.join(_BY_NAME)})")
    allowed = {f.name for f in fields(cls)}
    extra = sorted(set(raw) - allowed - {"type"})
    if extra:
        raise ConfigError(f"layer {i} ({kind}): unknown field {extra[0]!r}")
    args = {k: v for k, v in raw.items() if k != "type"}
    try:
        return cls(**args)
    except TypeError as exc:
        raise ConfigError(f"layer {i} ({kind}): {exc}") from None


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A sequential model: channels-last ``input_shape`` ((H, W, C) or (F,)) and layers.

    The whole stack is checked on construction: every layer must accept its input's shape,
    layer names must be unique, and the output must be flat (one score per class).
    """

    input_shape: tuple[int, ...]
    layers: tuple[Layer, ...]

    def __post_init__(self) -> None:
        shape = tuple(self.input_shape)
        if not shape or len(shape) not in (1, 3) or any(
                isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape):
            raise ConfigError(f"input_shape must be (F,) or (H, W, C) of positive ints, "
                              f"got {self.input_shape!r}")
        object.__setattr__(self, "input_shape", shape)
        object.__setattr__(self, "layers", tuple(self.layers))
        if not self.layers:
            raise ConfigError("a model needs at least one layer")
        seen: set[str] = set()
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, LAYER_TYPES):
                raise ConfigError(f"layer {i}: not a layer: {layer!r}")
            name = getattr(layer, "name", None)
            if name is not None:
                if name in seen:
                    raise ConfigError(f"layer {i}: duplicate layer name {name!r}")
                seen.add(name)
        out = self.output_shape()
        if len(out) != 1:
            raise ConfigError(f"the model's output must be flat, got shape {out} "
                              "(end with Flatten and Dense)")

    def output_shape(self) -> Shape:
        """The output shape (without the batch axis); raises ConfigError naming the layer."""
        shape: Shape = tuple(self.input_shape)
        for i, layer in enumerate(self.layers):
            try:
                shape = layer.output_shape(shape)
            except ConfigError as exc:
                raise ConfigError(f"layer {i}: {exc}") from None
        return shape

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "version": 1, "input_shape": list(self.input_shape),
            "layers": [{"type": type(layer).__name__, **asdict(layer)} for layer in self.layers],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, raw: object) -> ModelSpec:
        if not isinstance(raw, dict):
            raise ConfigError("model spec must be a JSON object")
        if raw.get("format", FORMAT) != FORMAT or raw.get("version", 1) != 1:
            raise ConfigError(f"not a {FORMAT} version 1 document")
        shape, layers = raw.get("input_shape"), raw.get("layers")
        if not isinstance(shape, list) or not isinstance(layers, list):
            raise ConfigError("model spec needs 'input_shape' and 'layers' lists")
        return cls(tuple(shape), tuple(_layer_from_dict(i, x) for i, x in enumerate(layers)))

    @classmethod
    def from_json(cls, text: str) -> ModelSpec:
        try:
            raw = json.loads(text)
        # ValueError covers JSONDecodeError and UnicodeDecodeError; a spec can come out of a
        # file or off the wire, where absurdly deep nesting must not escape as RecursionError.
        except (ValueError, TypeError, RecursionError) as exc:
            raise ConfigError(f"model spec is not valid JSON: {exc}") from None
        return cls.from_dict(raw)
