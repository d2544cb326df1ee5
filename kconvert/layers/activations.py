"""Activation functions by Keras name; `hard_sigmoid` follows the Keras version that wrote the model.

Every name tf_keras 2.x accepts is here (its `keras.activations` module plus the `tf.nn` functions it
resolves by name: `relu6`, `leaky_relu`, `log_softmax`), and so are the functions Keras 3 added
(`celu`, `glu`, `hard_silu`, `sparsemax`, ...), so that files written by either version load.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .. import ops
from ..custom_objects import get_custom_object
from .base import current_keras_major


def _hard_sigmoid_keras2(x):
    # Keras 2 (and tf.keras): clip(0.2 * x + 0.5, 0, 1)
    return np.clip(0.2 * x + 0.5, 0.0, 1.0).astype(x.dtype, copy=False)


def _hard_sigmoid_keras3(x):
    # Keras 3: relu6(x + 3) / 6, i.e. slope 1/6
    return (np.clip(x + 3.0, 0.0, 6.0) / 6.0).astype(x.dtype, copy=False)


def linear(x):
    return x


def exponential(x):
    return np.exp(x)


def swish(x):
    return x * ops.sigmoid(x)


def mish(x):
    return (x * np.tanh(ops.softplus(x))).astype(x.dtype, copy=False)


def relu6(x):
    return ops.relu(x, max_value=6.0)


def leaky_relu(x, negative_slope=0.2):
    # tf.nn.leaky_relu (tf_keras resolves the name to it) and Keras 3's leaky_relu: slope 0.2
    return ops.relu(x, negative_slope=negative_slope)


def hard_silu(x):
    return (x * _hard_sigmoid_keras3(x)).astype(x.dtype, copy=False)


def celu(x, alpha=1.0):
    return (np.maximum(x, 0) + alpha * np.expm1(np.minimum(x, 0) / alpha)).astype(x.dtype, copy=False)


def glu(x, axis=-1):
    a, b = np.split(x, 2, axis=axis)
    return a * ops.sigmoid(b)


def log_sigmoid(x):
    return -ops.softplus(-x)


def hard_tanh(x):
    return np.clip(x, -1.0, 1.0).astype(x.dtype, copy=False)


def hard_shrink(x, threshold=0.5):
    return np.where(np.abs(x) > threshold, x, 0).astype(x.dtype, copy=False)


def soft_shrink(x, threshold=0.5):
    return np.where(x > threshold, x - threshold, np.where(x < -threshold, x + threshold, 0)).astype(x.dtype,
                                                                                                     copy=False)


def tanh_shrink(x):
    return x - np.tanh(x)


def sparse_plus(x):
    return np.where(x <= -1, 0, np.where(x >= 1, x, 0.25 * np.square(x + 1))).astype(x.dtype, copy=False)


def sparse_sigmoid(x):
    return np.where(x <= -1, 0, np.where(x >= 1, 1, 0.5 * (x + 1))).astype(x.dtype, copy=False)


def squareplus(x, b=4):
    return (0.5 * (x + np.sqrt(np.square(x) + b))).astype(x.dtype, copy=False)


def sparsemax(x, axis=-1):
    """Keras 3's sparsemax, as every Keras 3 backend computes it.

    Note: Keras 3 takes tau = (sum of the cumulative sums over the support - 1) / k, not the textbook
    (cumsum at k - 1) / k, so its outputs need not sum to 1; models written by Keras 3 compute this.
    """
    x = np.asarray(x)
    zs = -np.sort(-x, axis=axis)
    cum = np.cumsum(zs, axis=axis)
    r_shape = [1] * x.ndim
    r_shape[axis] = -1
    r = np.arange(1, x.shape[axis] + 1, dtype=x.dtype).reshape(r_shape)
    support = zs - (cum - 1) / r > 0
    k = np.sum(support, axis=axis, keepdims=True).astype(x.dtype)
    tau = (np.sum(np.where(support, cum, 0), axis=axis, keepdims=True) - 1) / k
    return np.maximum(x - tau, 0).astype(x.dtype, copy=False)


ACTIVATIONS: dict[str, Callable] = {
    "linear": linear,
    "relu": ops.relu,
    "relu6": relu6,
    "leaky_relu": leaky_relu,
    "sigmoid": ops.sigmoid,
    "tanh": np.tanh,
    "softmax": ops.softmax,
    "log_softmax": ops.log_softmax,
    "log_softmax_v2": ops.log_softmax,  # tf.nn.log_softmax's name, as tf_keras's `.keras` writer records it
    "softplus": ops.softplus,
    "softsign": ops.softsign,
    "elu": ops.elu,
    "selu": ops.selu,
    "gelu": ops.gelu,
    "exponential": exponential,
    "swish": swish,
    "silu": swish,
    "mish": mish,
    "hard_silu": hard_silu,
    "hard_swish": hard_silu,
    # Keras 3 only
    "celu": celu,
    "glu": glu,
    "log_sigmoid": log_sigmoid,
    "hard_tanh": hard_tanh,
    "hard_shrink": hard_shrink,
    "soft_shrink": soft_shrink,
    "tanh_shrink": tanh_shrink,
    "sparse_plus": sparse_plus,
    "sparse_sigmoid": sparse_sigmoid,
    "squareplus": squareplus,
    "sparsemax": sparsemax,
    # Keras 2's hard_sigmoid as kconvert writes it into Keras 3 recurrent layers (kconvert/keras_objects.py)
    "kconvert>HardSigmoidKeras2": _hard_sigmoid_keras2,
}

# names each Keras writes for a function that has two (tf_keras writes "swish" for silu; Keras 3 "silu")
_KERAS2_NAMES = {"silu": "swish"}
_KERAS3_NAMES = {"swish": "silu", "hard_swish": "hard_silu"}
_NAME_OF = {id(fn): name for name, fn in reversed(ACTIVATIONS.items())}
_NAME_OF.update({id(_hard_sigmoid_keras2): "hard_sigmoid", id(_hard_sigmoid_keras3): "hard_sigmoid"})


def _name(identifier) -> str:
    if isinstance(identifier, dict):
        # Keras 3 may serialize activations as objects: {"class_name": "function", "config": "relu", ...}
        config = identifier.get("config")
        if isinstance(config, str):
            return config
        if isinstance(config, dict) and config.get("name"):
            return str(config["name"])
        return str(identifier.get("registered_name") or identifier.get("class_name"))
    return str(identifier)


def get(identifier, keras_major: int | None = None) -> Callable:
    """The activation function for a name (a custom object of that name first), or a callable as is."""
    if identifier is None:
        return ACTIVATIONS["linear"]
    if callable(identifier):
        return identifier
    name = _name(identifier)
    custom = get_custom_object(name)  # custom objects come first, as in Keras
    if callable(custom) and not isinstance(custom, type):
        return custom
    if name == "hard_sigmoid":
        major = keras_major if keras_major is not None else current_keras_major()
        return _hard_sigmoid_keras3 if major >= 3 else _hard_sigmoid_keras2
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation function '{name}'; if it is a custom function, pass it as "
                         f"custom_objects={{'{name}': fn}}")
    return ACTIVATIONS[name]


def serialize(identifier, keras_major: int | None = None):
    """The name the Keras version in effect writes for an activation (tf_keras by default)."""
    if identifier is None:
        return "linear"
    if callable(identifier):
        name = _NAME_OF.get(id(identifier)) or getattr(identifier, "__name__", "custom")
    elif isinstance(identifier, dict):
        return identifier
    else:
        name = str(identifier)
    major = keras_major if keras_major is not None else current_keras_major()
    return (_KERAS3_NAMES if major >= 3 else _KERAS2_NAMES).get(name, name)
