"""A Keras-backend-compatible namespace on numpy (`from kconvert import backend as K`).

The functions Lambda layers and custom layers typically call, with `tf_keras.backend`'s signatures,
defaults, dtypes and semantics (Keras 2's `hard_sigmoid`, `sqrt` clipping at 0, `clip` with a max below
the min, `switch` broadcasting, `batch_dot` axes), computed on numpy arrays with `kconvert.ops`.
Graph-only functions (placeholders, `function`, `gradients`, sessions) have no numpy meaning and are absent.
Sits at the ops level of the import flow: it must not import `kconvert.layers`.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Sequence

import numpy as np

from . import ops
from .ops.array_module import const

_EPSILON = 1e-7
_FLOATX = "float32"
_IMAGE_DATA_FORMAT = "channels_last"

# ---------------------------------------------------------------------------------------------- config


def epsilon() -> float:
    return _EPSILON


def set_epsilon(value: float) -> None:
    global _EPSILON
    _EPSILON = float(value)


def floatx() -> str:
    return _FLOATX


def set_floatx(value: str) -> None:
    global _FLOATX
    if value not in ("float16", "float32", "float64", "bfloat16"):
        raise ValueError(f"unknown floatx type: {value!r}")
    _FLOATX = str(value)


def image_data_format() -> str:
    return _IMAGE_DATA_FORMAT


def set_image_data_format(data_format: str) -> None:
    global _IMAGE_DATA_FORMAT
    if data_format not in ("channels_last", "channels_first"):
        raise ValueError(f"unknown data_format: {data_format!r}")
    _IMAGE_DATA_FORMAT = str(data_format)


_SESSION_RESET_HOOKS: list[Callable[[], None]] = []


def clear_session() -> None:
    """Reset default layer names (and any other per-session state), as Keras's `clear_session` does."""
    for hook in _SESSION_RESET_HOOKS:
        hook()


def backend() -> str:
    return "numpy"


def learning_phase() -> int:
    """Always 0: kconvert's backend functions compute inference."""
    return 0


def in_train_phase(x, alt, training=None):
    """`x` when training, else `alt` (a callable is called); the learning phase is 0 (inference)."""
    chosen = x if (learning_phase() if training is None else training) else alt
    return chosen() if callable(chosen) else chosen


def in_test_phase(x, alt, training=None):
    return in_train_phase(alt, x, training=training)


# ---------------------------------------------------------------------------------------------- tensors


def _a(x) -> np.ndarray:
    return np.asarray(x)


def variable(value, dtype: str | None = None, name: str | None = None, constraint=None) -> np.ndarray:
    """An array copy of `value` in `dtype` (floatx by default); variables are plain arrays here."""
    return np.array(value, dtype=dtype or floatx())


def constant(value, dtype: str | None = None, shape: Sequence[int] | None = None, name: str | None = None):
    """tf.constant: `value` in `dtype` (floatx by default), a scalar filled or a list reshaped to `shape`."""
    a = np.array(value, dtype=dtype or floatx())
    if shape is None:
        return a
    shape = tuple(int(s) for s in shape)
    return np.full(shape, a.reshape(()), a.dtype) if a.size == 1 else a.reshape(shape)


def get_value(x) -> np.ndarray:
    return np.array(x)


def batch_get_value(tensors: Sequence) -> list[np.ndarray]:
    return [get_value(t) for t in tensors]


eval = get_value  # noqa: A001 - mirrors keras.backend.eval


def is_tensor(x) -> bool:
    return isinstance(x, np.ndarray)


def int_shape(x) -> tuple:
    return tuple(int(s) for s in np.shape(x))


def shape(x) -> np.ndarray:
    """The shape as an int32 array (tf.shape)."""
    return np.asarray(np.shape(x), dtype=np.int32)


def ndim(x) -> int:
    return int(np.ndim(x))


def dtype(x) -> str:
    return _a(x).dtype.name


def count_params(x) -> int:
    return int(np.size(x))


def zeros(shape, dtype: str | None = None, name=None) -> np.ndarray:
    return np.zeros(shape, dtype or floatx())


def ones(shape, dtype: str | None = None, name=None) -> np.ndarray:
    return np.ones(shape, dtype or floatx())


def eye(size: int, dtype: str | None = None, name=None) -> np.ndarray:
    return np.eye(size, dtype=dtype or floatx())


def zeros_like(x, dtype: str | None = None, name=None) -> np.ndarray:
    return np.zeros_like(_a(x), dtype=dtype)


def ones_like(x, dtype: str | None = None, name=None) -> np.ndarray:
    return np.ones_like(_a(x), dtype=dtype)


def arange(start, stop=None, step=1, dtype: str = "int32") -> np.ndarray:
    """tf.range: `arange(n)` counts from 0 (an empty range for n < 0)."""
    if stop is None:
        start, stop = 0, builtins.max(start, 0)
    return np.arange(start, stop, step).astype(dtype)


def cast(x, dtype: str) -> np.ndarray:
    return ops.cast(x, dtype)


# ---------------------------------------------------------------------------------------------- elementwise


def abs(x):  # noqa: A001 - mirrors keras.backend.abs
    return ops.abs(_a(x))


def square(x):
    return ops.square(_a(x))


def sqrt(x):
    """Square root of max(x, 0), as tf_keras clips negative inputs to 0."""
    x = _a(x)
    return ops.sqrt(np.maximum(x, np.zeros((), x.dtype)))


def exp(x):
    return ops.exp(_a(x))


def log(x):
    return ops.log(_a(x))


def round(x):  # noqa: A001 - mirrors keras.backend.round (half to even, as tf.round)
    return np.round(_a(x))


def sign(x):
    return ops.sign(_a(x))


def pow(x, a):  # noqa: A001 - mirrors keras.backend.pow
    x = _a(x)
    return ops.power(x, const(a, x.dtype) if np.ndim(a) == 0 else a)


def cos(x):
    return np.cos(_a(x))


def sin(x):
    return np.sin(_a(x))


def clip(x, min_value, max_value):
    """Clip to [min_value, max_value]; None means unbounded, a max below the min becomes the min."""
    if isinstance(min_value, (int, float)) and isinstance(max_value, (int, float)) and max_value < min_value:
        max_value = min_value
    x = _a(x)
    lo = -np.inf if min_value is None else min_value
    hi = np.inf if max_value is None else max_value
    return ops.clip(x, lo, hi).astype(x.dtype, copy=False)


def maximum(x, y):
    return ops.maximum(_a(x), y)


def minimum(x, y):
    return ops.minimum(_a(x), y)


def equal(x, y):
    return np.equal(x, y)


def not_equal(x, y):
    return ops.not_equal(x, y)


def greater(x, y):
    return ops.greater(x, y)


def greater_equal(x, y):
    return np.greater_equal(x, y)


def less(x, y):
    return np.less(x, y)


def less_equal(x, y):
    return np.less_equal(x, y)


def switch(condition, then_expression, else_expression):
    """tf_keras's switch: a scalar condition picks one branch (callables allowed); otherwise elementwise,
    a condition of lower rank applying to the leading axes of the branches."""
    condition = _a(condition).astype(bool, copy=False)
    if condition.ndim == 0:
        chosen = then_expression if builtins.bool(condition) else else_expression
        return chosen() if callable(chosen) else chosen
    then_expression = _a(then_expression() if callable(then_expression) else then_expression)
    else_expression = _a(else_expression() if callable(else_expression) else else_expression)
    if condition.ndim > then_expression.ndim:
        raise ValueError(f"rank of condition ({condition.ndim}) must not exceed the rank of then_expression "
                         f"({then_expression.ndim})")
    if condition.ndim > 1:
        condition = condition.reshape(condition.shape + (1,) * (then_expression.ndim - condition.ndim))
    return ops.where(condition, then_expression, else_expression)


# ---------------------------------------------------------------------------------------------- reductions


def _floatish(x) -> np.ndarray:
    x = _a(x)
    return x.astype(floatx()) if x.dtype == bool else x


def sum(x, axis=None, keepdims: bool = False):  # noqa: A001 - mirrors keras.backend.sum
    return ops.reduce_sum(_a(x), axis, keepdims)


def prod(x, axis=None, keepdims: bool = False):
    x = _a(x)
    return np.prod(x, axis=_axis(axis), keepdims=keepdims).astype(x.dtype, copy=False)


def max(x, axis=None, keepdims: bool = False):  # noqa: A001 - mirrors keras.backend.max
    return ops.reduce_max(_a(x), axis, keepdims)


def min(x, axis=None, keepdims: bool = False):  # noqa: A001 - mirrors keras.backend.min
    return ops.reduce_min(_a(x), axis, keepdims)


def mean(x, axis=None, keepdims: bool = False):
    return ops.reduce_mean(_floatish(x), axis, keepdims)


def var(x, axis=None, keepdims: bool = False):
    x = _floatish(x)
    return np.var(x, axis=_axis(axis), keepdims=keepdims).astype(x.dtype, copy=False)


def std(x, axis=None, keepdims: bool = False):
    x = _floatish(x)
    return np.std(x, axis=_axis(axis), keepdims=keepdims).astype(x.dtype, copy=False)


def any(x, axis=None, keepdims: bool = False):  # noqa: A001 - mirrors keras.backend.any
    return ops.reduce_any(_a(x).astype(bool, copy=False), axis, keepdims)


def all(x, axis=None, keepdims: bool = False):  # noqa: A001 - mirrors keras.backend.all
    return ops.reduce_all(_a(x).astype(bool, copy=False), axis, keepdims)


def argmax(x, axis: int = -1):
    return np.argmax(_a(x), axis=axis).astype(np.int64)


def argmin(x, axis: int = -1):
    return np.argmin(_a(x), axis=axis).astype(np.int64)


def cumsum(x, axis: int = 0):
    x = _a(x)
    return np.cumsum(x, axis=axis).astype(x.dtype, copy=False)


def cumprod(x, axis: int = 0):
    x = _a(x)
    return np.cumprod(x, axis=axis).astype(x.dtype, copy=False)


def _axis(axis):
    return tuple(axis) if isinstance(axis, (list, tuple)) else axis


# ---------------------------------------------------------------------------------------------- shapes


def concatenate(tensors: Sequence, axis: int = -1):
    return ops.concatenate([_a(t) for t in tensors], axis=axis)


def stack(x: Sequence, axis: int = 0):
    return np.stack([_a(t) for t in x], axis=axis)


def expand_dims(x, axis: int = -1):
    return ops.expand_dims(_a(x), axis)


def squeeze(x, axis: int):
    return np.squeeze(_a(x), axis=axis)


def reshape(x, shape):
    """tf.reshape: -1 is inferred (0 is a zero-size dimension, not 'keep')."""
    return np.reshape(_a(x), tuple(int(s) for s in np.asarray(shape).reshape(-1)))


def permute_dimensions(x, pattern: Sequence[int]):
    return ops.transpose(_a(x), tuple(pattern))


def transpose(x):
    x = _a(x)
    return ops.transpose(x, tuple(reversed(range(x.ndim))))


def reverse(x, axes):
    return np.flip(_a(x), axis=_axis(axes))


def repeat_elements(x, rep: int, axis: int):
    return ops.repeat(_a(x), rep, axis)


def repeat(x, n: int):
    """(batch, dim) -> (batch, n, dim)."""
    x = _a(x)
    if x.ndim != 2:
        raise ValueError(f"repeat expects a 2-D input, got shape {x.shape}")
    return ops.tile(x[:, None, :], (1, int(n), 1))


def tile(x, n):
    x = _a(x)
    reps = [n] if isinstance(n, int) else [int(r) for r in n]
    if len(reps) != x.ndim:
        raise ValueError(f"tile needs one multiple per axis ({x.ndim}), got {reps}")
    return ops.tile(x, reps)


def flatten(x):
    return _a(x).reshape(-1)


def batch_flatten(x):
    x = _a(x)
    return x.reshape(x.shape[0], -1)


def temporal_padding(x, padding=(1, 1)):
    return ops.pad(_a(x), [(0, 0), tuple(padding), (0, 0)])


def spatial_2d_padding(x, padding=((1, 1), (1, 1)), data_format: str | None = None):
    pads = [tuple(p) for p in padding]
    if (data_format or image_data_format()) == "channels_first":
        return ops.pad(_a(x), [(0, 0), (0, 0), *pads])
    return ops.pad(_a(x), [(0, 0), *pads, (0, 0)])


def resize_images(x, height_factor: int, width_factor: int, data_format: str,
                  interpolation: str = "nearest"):
    """Upsample rows and columns by integer factors as tf.image.resize does ('nearest' or 'bilinear')."""
    if data_format not in ("channels_last", "channels_first"):
        raise ValueError(f"Invalid `data_format` argument: {data_format}")
    if interpolation not in ("nearest", "bilinear"):
        raise ValueError(f"resize_images: interpolation '{interpolation}' is not supported "
                         f"(kconvert supports 'nearest' and 'bilinear')")
    return ops.upsample(_a(x), (height_factor, width_factor), interpolation, "half_pixel",
                        data_format == "channels_last")


def resize_volumes(x, depth_factor: int, height_factor: int, width_factor: int, data_format: str):
    if data_format not in ("channels_last", "channels_first"):
        raise ValueError(f"Invalid `data_format` argument: {data_format}")
    return ops.upsample(_a(x), (depth_factor, height_factor, width_factor), "nearest", "half_pixel",
                        data_format == "channels_last")


# ---------------------------------------------------------------------------------------------- linear algebra


def dot(x, y):
    """tf_keras's dot: the last axis of x against the second-to-last axis of y (np.dot for N-d inputs)."""
    x, y = _a(x), _a(y)
    if x.ndim <= 2 and y.ndim <= 2:
        return ops.matmul(x, y)
    return ops.tensordot(x, y, axes=([-1], [-2]))


def batch_dot(x, y, axes=None):
    """Per-sample dot product; `axes` defaults as in tf_keras (last of x with y's last or second-to-last)."""
    x, y = _a(x), _a(y)
    if axes is None:
        axes = [x.ndim - 1, y.ndim - 1] if y.ndim == 2 else [x.ndim - 1, y.ndim - 2]
    elif isinstance(axes, int):
        axes = [axes, axes]
    return ops.batch_dot(x, y, tuple(axes))


def gather(reference, indices):
    return ops.gather(_a(reference), indices)


def one_hot(indices, num_classes: int):
    """float32 one-hot vectors on a new last axis; out-of-range indices give all zeros (tf.one_hot)."""
    return (_a(indices).astype(np.int64)[..., None] == np.arange(int(num_classes))).astype(np.float32)


def l2_normalize(x, axis=None):
    return ops.l2_normalize(_a(x), axis=_axis(axis))


def bias_add(x, bias, data_format: str | None = None):
    """x + bias on the channel axis (the last, or axis 1 for channels_first), as tf_keras adds it."""
    x, bias = _a(x), _a(bias)
    if (data_format or image_data_format()) == "channels_first" and x.ndim > 2:
        # tf_keras reshapes (not transposes) an N-d bias to channels-first
        bias = bias.reshape((-1,) + (1,) * (x.ndim - 2)) if bias.ndim == 1 else \
            bias.reshape(bias.shape[-1:] + bias.shape[:-1])
    return ops.add(x, bias)


# ---------------------------------------------------------------------------------------------- activations


def softmax(x, axis: int = -1):
    x = _a(x)
    if x.ndim <= 1:
        raise ValueError(f"Cannot apply softmax to a tensor that is 1D. Received shape {x.shape}")
    return ops.softmax(x, axis=axis)


def sigmoid(x):
    return ops.sigmoid(_a(x))


def hard_sigmoid(x):
    """Keras 2's hard sigmoid: clip(0.2 * x + 0.5, 0, 1)."""
    x = _a(x)
    return np.clip(x * const(0.2, x.dtype) + const(0.5, x.dtype), 0, 1).astype(x.dtype, copy=False)


def tanh(x):
    return ops.tanh(_a(x))


def relu(x, alpha: float = 0.0, max_value: float | None = None, threshold: float = 0.0):
    return ops.relu(_a(x), negative_slope=alpha, max_value=max_value, threshold=threshold)


def elu(x, alpha: float = 1.0):
    return ops.elu(_a(x), alpha)


def softplus(x):
    return ops.softplus(_a(x))


def softsign(x):
    return ops.softsign(_a(x))

