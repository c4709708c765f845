"""Portable models: a JSON layer spec that builds a torch module and a TF.js LayersModel.

Layers: Dense, Conv2D, MaxPool2D, Flatten, ReLU, Softmax, Dropout, with Keras semantics and
channels-last inputs. Parameter names are ``<layer>.weight`` / ``<layer>.bias`` in torch's
layouts (Dense (out, in); Conv2D (out, in, kh, kw)); TF.js's ``<layer>/kernel`` is the
transpose ((in, out); (kh, kw, in, out)). The zoo (:func:`zoo`) has ``logreg``, ``mlp`` and
``cnn``, each for 8x8 or 28x28 images, emitting logits. :func:`to_tfjs` / :func:`write_tfjs`
make the browser's ``model.json`` + ``weights.bin``; :func:`from_tfjs_weights` /
:func:`read_tfjs` check weights coming back and return them in torch layout.
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
from privml.models._tfjs import (
    from_tfjs_weights,
    read_tfjs,
    tfjs_layout,
    tfjs_topology,
    tfjs_weight_spec,
    to_tfjs,
    write_tfjs,
)
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
    "from_tfjs_weights",
    "load_model",
    "param_spec_of",
    "read_tfjs",
    "save_model",
    "tfjs_layout",
    "tfjs_topology",
    "tfjs_weight_spec",
    "to_tfjs",
    "write_tfjs",
    "zoo",
]
