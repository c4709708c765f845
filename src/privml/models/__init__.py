"""Portable models: a JSON layer spec that builds a torch module (and later a TF.js model).

Layers: Dense, Conv2D, MaxPool2D, Flatten, ReLU, Softmax, Dropout, with Keras semantics and
channels-last inputs. Parameter names are ``<layer>.weight`` / ``<layer>.bias`` in torch's
layouts (Dense (out, in); Conv2D (out, in, kh, kw)); TF.js's ``<layer>/kernel`` is the
transpose ((in, out); (kh, kw, in, out)). The zoo (:func:`zoo`) has ``logreg``, ``mlp`` and
``cnn``, each for 8x8 or 28x28 images, emitting logits.
"""

from privml.models._io import load_model, param_spec_of, save_model
from privml.models._layers import (
    LAYER_TYPES,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    Layer,
    MaxPool2D,
    ReLU,
    Softmax,
)
from privml.models._spec import ModelSpec
from privml.models._torch import SpecModule, build_torch
from privml.models._zoo import ZOO, zoo

__all__ = [
    "LAYER_TYPES",
    "ZOO",
    "Conv2D",
    "Dense",
    "Dropout",
    "Flatten",
    "Layer",
    "MaxPool2D",
    "ModelSpec",
    "ReLU",
    "Softmax",
    "SpecModule",
    "build_torch",
    "load_model",
    "param_spec_of",
    "save_model",
    "zoo",
]
