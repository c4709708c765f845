"""Build a torch module from a :class:`ModelSpec`.

The module takes **channels-last** input, exactly like TensorFlow.js: images (N, H, W, C),
features (N, F). Convolutions and pooling run in torch's NCHW internally, and a Flatten of an
image first returns to NHWC, so flattened features come in Keras order and a converter to
TF.js only transposes kernels. Parameter names and layouts (torch's own):

- ``Dense``  ``<name>.weight`` (out, in), ``<name>.bias`` (out,)   — TF.js kernel is (in, out)
- ``Conv2D`` ``<name>.weight`` (out, in, kh, kw), ``<name>.bias`` (out,) — TF.js (kh, kw, in, out)
"""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F  # noqa: N812  (torch's own convention)
from torch import Tensor, nn

from privml._exceptions import ConfigError
from privml.models._layers import (
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    MaxPool2D,
    ReLU,
    Softmax,
    same_padding,
)
from privml.models._spec import ModelSpec

__all__ = ["SpecModule", "build_torch"]


class SpecModule(nn.Module):
    """A torch module that runs a :class:`ModelSpec` on channels-last input."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        if not isinstance(spec, ModelSpec):
            raise ConfigError(f"SpecModule needs a ModelSpec, got {type(spec).__name__}")
        self.spec = spec
        shape = spec.input_shape
        for i, layer in enumerate(spec.layers):
            name = getattr(layer, "name", None)
            # Submodules live directly under the layer name (for "<name>.weight"), so a name
            # like "forward" or "spec" would shadow the module's own attributes.
            if name is not None and hasattr(self, name):
                raise ConfigError(f"layer {i} ({type(layer).__name__} {name!r}): the name is "
                                  "taken by torch.nn.Module; rename the layer")
            if isinstance(layer, Dense):
                self.add_module(layer.name, nn.Linear(shape[0], layer.units))
            elif isinstance(layer, Conv2D):
                self.add_module(layer.name, nn.Conv2d(shape[2], layer.filters,
                                                      layer.kernel_size, stride=layer.stride))
            shape = layer.output_shape(shape)
        self._logit_layers = len(spec.layers) - (isinstance(spec.layers[-1], Softmax))

    def _run(self, x: Tensor, count: int) -> Tensor:
        nchw = False  # the layout x is in now; inputs arrive channels-last
        for layer in self.spec.layers[:count]:
            if isinstance(layer, Conv2D | MaxPool2D) and not nchw:
                x, nchw = x.permute(0, 3, 1, 2), True
            if isinstance(layer, Dense):
                x = self.get_submodule(layer.name)(x)
            elif isinstance(layer, Conv2D):
                if layer.padding == "same":
                    top, bottom = same_padding(x.shape[2], layer.kernel_size, layer.stride)
                    left, right = same_padding(x.shape[3], layer.kernel_size, layer.stride)
                    x = F.pad(x, (left, right, top, bottom))
                x = self.get_submodule(layer.name)(x)
            elif isinstance(layer, MaxPool2D):
                x = F.max_pool2d(x, layer.pool_size, layer.pool_size)
            elif isinstance(layer, Flatten):
                if nchw:
                    x, nchw = x.permute(0, 2, 3, 1), False
                x = x.flatten(1)  # unlike reshape(n, -1), fine for an empty batch
            elif isinstance(layer, ReLU):
                x = F.relu(x)
            elif isinstance(layer, Dropout):
                x = F.dropout(x, layer.rate, self.training)
            elif isinstance(layer, Softmax):
                x = F.softmax(x, dim=1 if nchw else -1)
        return x

    def _check_input(self, x: Tensor) -> None:
        # An NCHW batch would flatten in the wrong order without any error: refuse it.
        want = self.spec.input_shape
        if x.dim() != len(want) + 1 or tuple(x.shape[1:]) != want:
            raise ConfigError(f"input of shape {tuple(x.shape)} does not fit the model's "
                              f"channels-last input (N, {', '.join(map(str, want))})")

    def forward(self, x: Tensor) -> Tensor:
        """The whole stack, a trailing Softmax included."""
        self._check_input(x)
        return self._run(x, len(self.spec.layers))

    def logits(self, x: Tensor) -> Tensor:
        """Every layer but a trailing Softmax: what a cross-entropy loss wants."""
        self._check_input(x)
        return self._run(x, self._logit_layers)

    def extra_repr(self) -> str:
        return f"input_shape={self.spec.input_shape}, layers={len(self.spec.layers)}"


def build_torch(spec: ModelSpec, *, seed: int = 0) -> SpecModule:
    """A freshly initialised module (torch's default init, seeded; global RNG untouched)."""
    try:
        seed = operator.index(seed)
    except TypeError:
        raise ConfigError(f"seed must be an integer, got {seed!r}") from None
    if not 0 <= seed < 2**63:
        raise ConfigError(f"seed must be in [0, 2**63), got {seed}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return SpecModule(spec)
