"""Utilities classic Keras code imports from `keras.utils`: `Sequence`, `to_categorical`, `normalize`,
`plot_model`, `model_to_dot`."""

from __future__ import annotations

import numpy as np

from .plot import model_to_dot, plot_model
from .runtime.data_adapter import Sequence, unpack_x_y_sample_weight


def to_categorical(y, num_classes: int | None = None, dtype: str = "float32") -> np.ndarray:
    """Class ids to one-hot rows (a trailing axis of 1 is dropped first), as `keras.utils.to_categorical`."""
    y = np.array(y, dtype="int")
    input_shape = y.shape
    if input_shape and input_shape[-1] == 1 and len(input_shape) > 1:
        input_shape = tuple(input_shape[:-1])
    y = y.reshape(-1)
    if not num_classes:
        num_classes = int(np.max(y)) + 1
    n = y.shape[0]
    categorical = np.zeros((n, num_classes), dtype=dtype)
    categorical[np.arange(n), y] = 1
    return np.reshape(categorical, input_shape + (num_classes,))


def normalize(x, axis: int = -1, order: int = 2) -> np.ndarray:
    """`x` divided by its `order`-norm along `axis` (zero norms left as 1), as `keras.utils.normalize`."""
    norm = np.atleast_1d(np.linalg.norm(x, order, axis))
    norm[norm == 0] = 1
    return x / np.expand_dims(norm, axis)


__all__ = ["Sequence", "to_categorical", "normalize", "unpack_x_y_sample_weight", "plot_model", "model_to_dot"]
