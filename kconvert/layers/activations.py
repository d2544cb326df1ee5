"""Activation functions by Keras name; `hard_sigmoid` follows the Keras version that wrote the model."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .. import ops
from .base import current_keras_major


def _hard_sigmoid_keras2(x):
    # Keras 2 (and tf.keras): clip(0.2 * x + 0.5, 0, 1)
    return np.clip(0.2 * x + 0.5, 0.0, 1.0).astype(x.dtype, copy=False)


def _hard_sigmoid_keras3(x):
    # Keras 3: relu6(x + 3) / 6, i.e. slope 1/6
    return (np.clip(x + 3.0, 0.0, 6.0) / 6.0).astype(x.dtype, copy=False)


def _exponential(x):
    return np.exp(x)


def _swish(x):
    return x * ops.sigmoid(x)


def _mish(x):
    return x * np.tanh(ops.softplus(x))


def _relu6(x):
    return ops.relu(x, max_value=6.0)


def _hard_silu(x):
    return x * _hard_sigmoid_keras3(x)


ACTIVATIONS: dict[str, Callable] = {
    "linear": lambda x: x,
    "relu": ops.relu,
    "relu6": _relu6,
    "sigmoid": ops.sigmoid,
    "tanh": np.tanh,
    "softmax": ops.softmax,
    "log_softmax": ops.log_softmax,
    "softplus": ops.softplus,
    "softsign": ops.softsign,
    "elu": ops.elu,
    "selu": ops.selu,
    "gelu": ops.gelu,
    "exponential": _exponential,
    "swish": _swish,
    "silu": _swish,
    "mish": _mish,
    "hard_silu": _hard_silu,
    "hard_swish": _hard_silu,
}


def get(identifier, keras_major: int | None = None) -> Callable:
    """The activation function for a name (or a callable, returned as is)."""
    if identifier is None:
        return ACTIVATIONS["linear"]
    if callable(identifier):
        return identifier
    if isinstance(identifier, dict):  # Keras 3 may serialize activations as objects
        identifier = identifier.get("config", {}).get("name") or identifier.get("class_name")
    name = str(identifier)
    if name == "hard_sigmoid":
        major = keras_major if keras_major is not None else current_keras_major()
        return _hard_sigmoid_keras3 if major >= 3 else _hard_sigmoid_keras2
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation function '{name}'")
    return ACTIVATIONS[name]


def serialize(identifier) -> str:
    if identifier is None:
        return "linear"
    if callable(identifier):
        return getattr(identifier, "__name__", "custom")
    return identifier
