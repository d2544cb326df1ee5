"""Caffe's LRN and standalone Scale layers, which no Keras layer computes exactly.

LRN (BVLC `src/caffe/layers/lrn_layer.cpp`), `n = local_size` (odd):

- ACROSS_CHANNELS: `y = x * (k + alpha / n * S) ** -beta`, S the sum of x**2 over the n channels centred on
  each channel (zero padded at the ends);
- WITHIN_CHANNEL: `y = x * (1 + alpha / n**2 * S) ** -beta`, S the sum of x**2 over the n x n zero-padded
  spatial window centred on each position (Caffe's AVE pooling with pad (n-1)/2 and stride 1, whose divisor
  is n**2 everywhere); `k` is not used.

Scale (BVLC `src/caffe/layers/scale_layer.cpp`): `y = x * gamma (+ beta)`. With one input, gamma has the shape
of the input's Caffe (NCHW-numbered) axes `axis .. axis + num_axes` (`num_axes=-1`: to the last axis, 0: a
scalar) and broadcasts over the others; `beta` (when `bias_term`) has gamma's shape. Called on `[x, s]`, the
scale is the second input, whose axes are x's first ones (`axis` must be 0: every tensor here has a batch
axis); no weights then (a bias tied to the batch size is refused).

Caffe axis numbers refer to NCHW. With `data_format="channels_last"` an input of rank >= 3 is held
(N, spatial..., C): Caffe axis 1 is the last axis and Caffe axis a >= 2 is axis a - 1; gamma is stored in
Caffe's axis order (as the caffemodel holds it) and laid out against the input when applied.
"""

from __future__ import annotations

import numpy as np

from .. import ops
from ..errors import ConfigError
from ..ops.array_module import const
from .base import Layer, is_shape_list, register_layer
from .caffe_pooling import kconvert_only_keras3
from .pooling import check_rank, normalize_data_format, spatial_layout

_REGIONS = ("across_channels", "within_channel")


def model_axis(caffe_axis: int, ndim: int, data_format: str) -> int:
    """The axis holding Caffe (NCHW-numbered) axis `caffe_axis` of a rank-`ndim` tensor in `data_format`."""
    if data_format == "channels_first" or ndim < 3 or caffe_axis == 0:
        return caffe_axis
    return ndim - 1 if caffe_axis == 1 else caffe_axis - 1


def caffe_shape(shape, data_format: str) -> tuple:
    """A tensor shape in Caffe's axis order."""
    return tuple(shape[model_axis(a, len(shape), data_format)] for a in range(len(shape)))


def broadcast_param(value: np.ndarray, caffe_axes: list[int], ndim: int, data_format: str) -> np.ndarray:
    """A parameter over the Caffe axes `caffe_axes` (in that order), shaped to broadcast against the tensor."""
    axes = [model_axis(a, ndim, data_format) for a in caffe_axes]
    order = np.argsort(axes)
    shape = [1] * ndim
    for i in order:
        shape[axes[i]] = value.shape[i]
    return np.transpose(value, order).reshape(shape)


# ---------------------------------------------------------------------------------------------- LRN


@register_layer()
class LRN(Layer):
    """Caffe's local response normalization (ACROSS_CHANNELS or WITHIN_CHANNEL) of a 4-D input. No weights."""

    rank = 2
    registered_name = "LRN"  # as tf_keras records a custom class; Keras 3: kconvert_only_keras3

    def __init__(self, local_size: int = 5, alpha: float = 1.0, beta: float = 0.75, k: float = 1.0,
                 norm_region: str = "across_channels", data_format: str | None = None, **kwargs):
        super().__init__(**kwargs)
        kconvert_only_keras3(self)
        self.local_size = int(local_size)
        if self.local_size < 1 or self.local_size % 2 == 0:
            raise ConfigError(f"local_size must be odd and positive, got {local_size!r} (as Caffe requires)",
                              layer=self.name)
        self.alpha, self.beta, self.k = float(alpha), float(beta), float(k)
        self.norm_region = str(norm_region).lower()
        if self.norm_region not in _REGIONS:
            raise ConfigError(f"norm_region must be one of {_REGIONS}, got {norm_region!r}", layer=self.name)
        self.data_format = normalize_data_format(data_format, layer=self.name)

    def build(self, input_shape):
        check_rank(self, input_shape, 4)

    def call(self, inputs):
        x = inputs
        n, half = self.local_size, self.local_size // 2
        channels_last = self.data_format == "channels_last"
        sq = ops.square(x)
        if self.norm_region == "within_channel":
            mean = ops.avg_pool(sq, (n, n), (1, 1), ((half, half), (half, half)), count_include_pad=True,
                                channels_last=channels_last)
            scale = ops.add(ops.multiply(mean, const(self.alpha, x.dtype)), const(1.0, x.dtype))
        else:
            axis = x.ndim - 1 if channels_last else 1
            padded = ops.pad(sq, {axis: (half, half)})
            c = x.shape[axis]
            total = None
            for i in range(n):
                index = [slice(None)] * x.ndim
                index[axis] = slice(i, i + c)
                part = padded[tuple(index)]
                total = part if total is None else ops.add(total, part)
            scale = ops.add(ops.multiply(total, const(self.alpha / n, x.dtype)), const(self.k, x.dtype))
        return ops.multiply(x, ops.power(scale, const(-self.beta, x.dtype)))

    def compute_output_layout(self, input_layouts, output_shape):
        return spatial_layout(2, self.data_format)

    def get_config(self):
        return {**super().get_config(), "local_size": self.local_size, "alpha": self.alpha, "beta": self.beta,
                "k": self.k, "norm_region": self.norm_region, "data_format": self.data_format}


# ---------------------------------------------------------------------------------------------- Scale


@register_layer()
class CaffeScale(Layer):
    """Caffe's Scale layer: `x * gamma (+ beta)`, or `x * s` called on `[x, s]` (see the module doc).

    Weights: ["gamma", "beta" (bias_term)] with one input, none with two.
    """

    registered_name = "CaffeScale"  # as tf_keras records a custom class; Keras 3: kconvert_only_keras3

    def __init__(self, axis: int = 1, num_axes: int = 1, bias_term: bool = False, data_format: str | None = None,
                 **kwargs):
        super().__init__(**kwargs)
        kconvert_only_keras3(self)
        self.axis = int(axis)
        self.num_axes = int(num_axes)
        if self.num_axes < -1:
            raise ConfigError(f"num_axes must be -1 or more, got {num_axes!r}", layer=self.name)
        self.bias_term = bool(bias_term)
        self.data_format = normalize_data_format(data_format, layer=self.name)
        self.gamma = self.beta = None
        self._axes: list[int] = []  # the Caffe axes gamma (or the second input) spans

    def build(self, input_shape):
        two = is_shape_list(input_shape)
        x_shape = input_shape[0] if two else input_shape
        ndim = len(x_shape)
        axis = self.axis + ndim if self.axis < 0 else self.axis
        if not 0 <= axis < max(ndim, 1):
            raise ValueError(f"axis {self.axis} is out of range for an input of rank {ndim}")
        dims = caffe_shape(x_shape, self.data_format)
        if two:
            if len(input_shape) != 2:
                raise ValueError(f"takes one input or two ([x, scale]), got {len(input_shape)}")
            s_shape = input_shape[1]
            if axis != 0:
                raise ValueError("called on [x, scale], axis must be 0 (the scale input has a batch axis)")
            if self.bias_term:
                raise ValueError("bias_term with the scale from a second input would tie the bias to the batch size")
            wanted = dims[:len(s_shape)]
            got = caffe_shape(s_shape, self.data_format)
            if len(s_shape) > ndim or any(a is not None and b is not None and a != b
                                          for a, b in zip(wanted[1:], got[1:])):
                raise ValueError(f"the scale input's Caffe shape {got} must equal the leading axes of x's {dims}")
            self._axes = list(range(len(s_shape)))
            return
        count = ndim - axis if self.num_axes == -1 else self.num_axes
        if axis + count > ndim:
            raise ValueError(f"axis {self.axis} with num_axes {self.num_axes} exceeds the input's rank {ndim}")
        self._axes = list(range(axis, axis + count))
        shape = dims[axis:axis + count]
        if any(d is None for d in shape) or (0 in self._axes):
            raise ValueError(f"gamma's dimensions {shape} must be known and exclude the batch axis")
        self.gamma = self.add_weight("gamma", shape, "ones")
        if self.bias_term:
            self.beta = self.add_weight("beta", shape, "zeros")

    def call(self, inputs):
        if isinstance(inputs, (list, tuple)):
            x, s = inputs
            axes = sorted(model_axis(a, x.ndim, self.data_format) for a in self._axes)
            shape = [1] * x.ndim
            for a, d in zip(axes, s.shape):
                shape[a] = d
            return ops.multiply(x, ops.reshape(s, shape))
        x = inputs
        y = ops.multiply(x, broadcast_param(self.gamma.value, self._axes, x.ndim, self.data_format))
        if self.beta is not None:
            y = ops.add(y, broadcast_param(self.beta.value, self._axes, x.ndim, self.data_format))
        return y

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0]) if is_shape_list(input_shape) else tuple(input_shape)

    def compute_output_layout(self, input_layouts, output_shape):
        return input_layouts[0] if input_layouts else None

    def get_config(self):
        return {**super().get_config(), "axis": self.axis, "num_axes": self.num_axes, "bias_term": self.bias_term,
                "data_format": self.data_format}
