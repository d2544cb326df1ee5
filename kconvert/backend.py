"""A small Keras-backend-compatible namespace over `kconvert.ops` (`from kconvert import backend as K`)."""

from __future__ import annotations

import numpy as np

from . import ops

_EPSILON = 1e-7
_FLOATX = "float32"
_IMAGE_DATA_FORMAT = "channels_last"


def epsilon() -> float:
    return _EPSILON


def set_epsilon(value: float) -> None:
    global _EPSILON
    _EPSILON = float(value)


def floatx() -> str:
    return _FLOATX


def image_data_format() -> str:
    return _IMAGE_DATA_FORMAT


_SESSION_RESET_HOOKS: list = []


def clear_session() -> None:
    """Reset default layer names (and any other per-session state), as Keras's `clear_session` does."""
    for hook in _SESSION_RESET_HOOKS:
        hook()


def backend() -> str:
    return "numpy"


def int_shape(x) -> tuple:
    return tuple(getattr(x, "shape", np.shape(x)))


def dot(a, b):
    return ops.matmul(a, b)


sigmoid = ops.sigmoid
softmax = ops.softmax
relu = ops.relu
tanh = ops.tanh
exp = ops.exp
log = ops.log
sqrt = ops.sqrt
square = ops.square
abs = ops.abs  # noqa: A001
l2_normalize = ops.l2_normalize
