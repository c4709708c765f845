"""Ready-made specs: ``logreg``, ``mlp`` and ``cnn`` for 8x8 and 28x28 images (or features)."""

from __future__ import annotations

from privml._exceptions import ConfigError
from privml.models._layers import Conv2D, Dense, Flatten, Layer, MaxPool2D, ReLU
from privml.models._spec import ModelSpec

__all__ = ["ZOO", "zoo"]

ZOO: tuple[str, ...] = ("logreg", "mlp", "cnn")


def zoo(name: str, *, input_shape: tuple[int, ...], num_classes: int) -> ModelSpec:
    """The zoo model ``name`` for this input shape; outputs logits (no trailing Softmax)."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ConfigError(f"num_classes must be an int >= 2, got {num_classes!r}")
    head: list[Layer] = [Flatten()] if len(input_shape) != 1 else []
    layers: list[Layer]
    match name:
        case "logreg":
            layers = [*head, Dense(num_classes, name="dense1")]
        case "mlp":
            layers = [*head, Dense(128, name="dense1"), ReLU(), Dense(num_classes, name="dense2")]
        case "cnn":
            if len(input_shape) != 3:
                raise ConfigError(f"model 'cnn' needs image input (H, W, C), got {input_shape}")
            layers = [Conv2D(16, 3, name="conv1"), ReLU(), MaxPool2D(2),
                      Conv2D(32, 3, name="conv2"), ReLU(), MaxPool2D(2),
                      Flatten(), Dense(64, name="dense1"), ReLU(),
                      Dense(num_classes, name="dense2")]
        case _:
            raise ConfigError(f"unknown model {name!r} (choose from {', '.join(ZOO)})")
    return ModelSpec(tuple(input_shape), tuple(layers))
