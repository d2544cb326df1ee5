"""Real-Keras (tf_keras and Keras 3) implementations of CaffePooling2D, LRN and CaffeScale.

Each computes what the kconvert layer of the same name computes (kconvert/layers/caffe_pooling.py and
caffe_normalization.py, where the Caffe semantics are described), with the same config and the same weights in
the same order, written once against a small set of tensor functions (`_Ops`): `keras.ops` for Keras 3,
TensorFlow for tf_keras. Pooling runs channels_last inside (TensorFlow's CPU pooling kernels are NHWC only).
"""

from __future__ import annotations

import numpy as np

from . import implementation


class _Ops:
    """The tensor functions the layers below use, for one target."""

    def __init__(self, lib, target: str):
        if target == "keras3":
            k = lib.ops
            self.transpose, self.reshape, self.square = k.transpose, k.reshape, k.square
            self.pad = lambda x, width, value: k.pad(x, width, constant_values=value)
            self.max_pool = lambda x, size, strides: k.max_pool(x, size, strides, "valid", "channels_last")
            self.avg_pool = lambda x, size, strides: k.average_pool(x, size, strides, "valid", "channels_last")
            self.power = k.power
        else:
            import tensorflow as tf

            self.transpose, self.reshape, self.square = tf.transpose, tf.reshape, tf.square
            self.pad = lambda x, width, value: tf.pad(x, width, constant_values=value)
            self.max_pool = lambda x, size, strides: tf.nn.max_pool2d(x, size, strides, "VALID")
            self.avg_pool = lambda x, size, strides: tf.nn.avg_pool2d(x, size, strides, "VALID")
            self.power = tf.pow

    def nhwc(self, x, data_format: str):
        return self.transpose(x, (0, 2, 3, 1)) if data_format == "channels_first" else x

    def from_nhwc(self, x, data_format: str):
        return self.transpose(x, (0, 3, 1, 2)) if data_format == "channels_first" else x


def _geometry_helpers():
    # imported here: kconvert.real_keras is imported by keras_objects, which must stay light
    from ..layers.caffe_normalization import caffe_shape, model_axis
    from ..layers.caffe_pooling import FLT_LOWEST, caffe_pool_geometry

    return caffe_pool_geometry, FLT_LOWEST, caffe_shape, model_axis


def _spatial(shape, data_format: str) -> list[int]:
    return [int(d) for d in (shape[2:] if data_format == "channels_first" else shape[1:3])]


def _pair(value) -> tuple[int, int]:
    return (int(value),) * 2 if isinstance(value, int) else tuple(int(v) for v in value)


@implementation("CaffePooling2D")
def make_pooling(lib, target: str) -> type:
    ops = _Ops(lib, target)
    caffe_pool_geometry, lowest = _geometry_helpers()[:2]

    class CaffePooling2D(lib.layers.Layer):
        def __init__(self, pool_size=(2, 2), strides=None, padding=(0, 0), mode="max", rounding="ceil",
                     data_format=None, **kwargs):
            super().__init__(**kwargs)
            self.pool_size = _pair(pool_size)
            self.strides = _pair(strides if strides is not None else pool_size)
            self.padding = _pair(padding)
            self.mode, self.rounding = str(mode).lower(), str(rounding).lower()
            self.data_format = data_format or "channels_last"

        def build(self, input_shape):
            self.geo = caffe_pool_geometry(_spatial(input_shape, self.data_format), self.pool_size, self.strides,
                                           self.padding, self.rounding == "ceil")
            self.built = True

        def call(self, inputs):
            geo = self.geo
            x = ops.nhwc(inputs, self.data_format)
            width = [[0, 0], list(geo.pads[0]), list(geo.pads[1]), [0, 0]]
            if self.mode == "max":  # padded with -FLT_MAX: never wins, and is what an empty window gives
                y = ops.max_pool(ops.pad(x, width, lowest), self.pool_size, self.strides)
            else:
                y = ops.avg_pool(ops.pad(x, width, 0.0), self.pool_size, self.strides)
                if geo.ave_factor is not None:
                    y = y * geo.ave_factor[None, :, :, None]
            return ops.from_nhwc(y, self.data_format)

        def compute_output_shape(self, input_shape):
            geo = caffe_pool_geometry(_spatial(input_shape, self.data_format), self.pool_size, self.strides,
                                      self.padding, self.rounding == "ceil")
            if self.data_format == "channels_first":
                return (input_shape[0], input_shape[1], *geo.out)
            return (input_shape[0], *geo.out, input_shape[3])

        def get_config(self):
            return {**super().get_config(), "pool_size": self.pool_size, "strides": self.strides,
                    "padding": self.padding, "mode": self.mode, "rounding": self.rounding,
                    "data_format": self.data_format}

    return CaffePooling2D


@implementation("LRN")
def make_lrn(lib, target: str) -> type:
    ops = _Ops(lib, target)

    class LRN(lib.layers.Layer):
        def __init__(self, local_size=5, alpha=1.0, beta=0.75, k=1.0, norm_region="across_channels",
                     data_format=None, **kwargs):
            super().__init__(**kwargs)
            self.local_size, self.alpha, self.beta, self.k = int(local_size), float(alpha), float(beta), float(k)
            self.norm_region = str(norm_region).lower()
            self.data_format = data_format or "channels_last"

        def call(self, inputs):
            n, half = self.local_size, self.local_size // 2
            sq = ops.square(inputs)
            if self.norm_region == "within_channel":
                padded = ops.pad(ops.nhwc(sq, self.data_format), [[0, 0], [half, half], [half, half], [0, 0]], 0.0)
                mean = ops.from_nhwc(ops.avg_pool(padded, (n, n), (1, 1)), self.data_format)
                scale = 1.0 + self.alpha * mean
            else:
                axis = 3 if self.data_format == "channels_last" else 1
                width = [[0, 0]] * 4
                width[axis] = [half, half]
                padded = ops.pad(sq, width, 0.0)
                c = int(inputs.shape[axis])
                total = None
                for i in range(n):
                    index = [slice(None)] * 4
                    index[axis] = slice(i, i + c)
                    part = padded[tuple(index)]
                    total = part if total is None else total + part
                scale = self.k + (self.alpha / n) * total
            return inputs * ops.power(scale, -self.beta)

        def compute_output_shape(self, input_shape):
            return tuple(input_shape)

        def get_config(self):
            return {**super().get_config(), "local_size": self.local_size, "alpha": self.alpha, "beta": self.beta,
                    "k": self.k, "norm_region": self.norm_region, "data_format": self.data_format}

    return LRN


@implementation("CaffeScale")
def make_scale(lib, target: str) -> type:
    ops = _Ops(lib, target)
    _, _, caffe_shape, model_axis = _geometry_helpers()

    class CaffeScale(lib.layers.Layer):
        def __init__(self, axis=1, num_axes=1, bias_term=False, data_format=None, **kwargs):
            super().__init__(**kwargs)
            self.axis, self.num_axes, self.bias_term = int(axis), int(num_axes), bool(bias_term)
            self.data_format = data_format or "channels_last"
            self.gamma = self.beta = None

        def build(self, input_shape):
            two = _is_shape_list(input_shape)
            x_shape = tuple(input_shape[0] if two else input_shape)
            ndim = len(x_shape)
            axis = self.axis + ndim if self.axis < 0 else self.axis
            if two:
                self._axes = list(range(len(input_shape[1])))
            else:
                count = ndim - axis if self.num_axes == -1 else self.num_axes
                self._axes = list(range(axis, axis + count))
                shape = tuple(int(d) for d in caffe_shape(x_shape, self.data_format)[axis:axis + count])
                self.gamma = self.add_weight(name="gamma", shape=shape, initializer="ones")
                if self.bias_term:
                    self.beta = self.add_weight(name="beta", shape=shape, initializer="zeros")
            self.built = True

        def _param(self, weight, ndim):
            axes = [model_axis(a, ndim, self.data_format) for a in self._axes]
            order = [int(i) for i in np.argsort(axes)]
            shape = [1] * ndim
            for i in order:
                shape[axes[i]] = int(weight.shape[i])
            return ops.reshape(ops.transpose(weight, order) if len(order) > 1 else weight, shape)

        def call(self, inputs):
            if isinstance(inputs, (list, tuple)):
                x, s = inputs
                ndim = len(x.shape)
                axes = sorted(model_axis(a, ndim, self.data_format) for a in self._axes)
                shape = [1] * ndim
                for i, a in enumerate(axes):
                    shape[a] = -1 if i == 0 else int(s.shape[i])
                return x * ops.reshape(s, shape)
            ndim = len(inputs.shape)
            y = inputs * self._param(self.gamma, ndim)
            if self.beta is not None:
                y = y + self._param(self.beta, ndim)
            return y

        def compute_output_shape(self, input_shape):
            return tuple(input_shape[0]) if _is_shape_list(input_shape) else tuple(input_shape)

        def get_config(self):
            return {**super().get_config(), "axis": self.axis, "num_axes": self.num_axes,
                    "bias_term": self.bias_term, "data_format": self.data_format}

    return CaffeScale


def _is_shape_list(shape) -> bool:
    """True for a list of shapes (the two-input Scale), as tf_keras and Keras 3 pass them to build."""
    return isinstance(shape, (list, tuple)) and len(shape) > 0 and (
        isinstance(shape[0], (list, tuple)) or hasattr(shape[0], "as_list"))
