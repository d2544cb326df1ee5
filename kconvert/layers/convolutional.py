"""Convolution layers: Conv1D/2D/3D, their transposes, separable and depthwise convolutions.

Arguments, defaults and configs follow tf_keras 2.x; the numerics follow TensorFlow: 'same' padding puts the
smaller half of the padding first (`lo = total // 2`), 'causal' pads only on the left, and the transposed
convolutions reproduce `conv_utils.deconv_output_length` and where TensorFlow's `conv2d_backprop_input`
places the padding.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import ops
from ..errors import ConfigError
from . import activations
from .base import Layer, register_layer
from .config_objects import weight_args_config

# ---------------------------------------------------------------------------------------------- argument helpers


def normalize_tuple(value: Any, n: int, name: str, allow_zero: bool = False, layer: str | None = None) -> tuple:
    """An int or an iterable of `n` ints as a tuple of `n` ints (tf_keras `conv_utils.normalize_tuple`)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        out = (int(value),) * n
    else:
        try:
            out = tuple(value)
        except TypeError:
            raise ConfigError(f"the `{name}` argument must be a tuple of {n} integers, got {value!r}",
                              layer=layer) from None
        if len(out) != n or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in out):
            raise ConfigError(f"the `{name}` argument must be a tuple of {n} integers, got {value!r}", layer=layer)
        out = tuple(int(v) for v in out)
    if any(v < 0 or (v == 0 and not allow_zero) for v in out):
        raise ConfigError(f"the `{name}` argument must be {'>= 0' if allow_zero else '> 0'}, got {value!r}",
                          layer=layer)
    return out


def normalize_padding(value: Any, layer: str | None = None) -> str:
    padding = str(value).lower()
    if padding not in ("valid", "same", "causal"):
        raise ConfigError(f"`padding` must be one of 'valid', 'same' (or 'causal', only for Conv1D and "
                          f"SeparableConv1D), got {value!r}", layer=layer)
    return padding


def normalize_data_format(value: Any, layer: str | None = None) -> str:
    data_format = "channels_last" if value is None else str(value).lower()
    if data_format not in ("channels_first", "channels_last"):
        raise ConfigError(f"`data_format` must be 'channels_first' or 'channels_last', got {value!r}", layer=layer)
    return data_format


def deconv_output_length(size: int | None, k: int, padding: str, output_padding: int | None = None,
                         stride: int = 1, dilation: int = 1) -> int | None:
    """tf_keras `conv_utils.deconv_output_length` (padding 'valid' or 'same')."""
    if size is None:
        return None
    eff = k + (k - 1) * (dilation - 1)
    if output_padding is None:
        return size * stride + max(eff - stride, 0) if padding == "valid" else size * stride
    pad = eff // 2 if padding == "same" else 0
    return (size - 1) * stride + eff - 2 * pad + output_padding


# the forward-convolution arithmetic is shared with the pooling layers (kconvert.ops.shapes)
conv_output_length = ops.output_length  # tf_keras conv_utils.conv_output_length
same_pads = ops.same_pads  # TensorFlow's 'SAME' split: the smaller half first


def conv_pads(padding: str, sizes, kernel_size, strides, dilation_rate) -> list[tuple[int, int]]:
    """Explicit (lo, hi) pads per spatial axis for a forward convolution ('valid', 'same' or 'causal')."""
    return list(ops.explicit_pads(padding, sizes, kernel_size, strides, dilation_rate))


def conv_transpose_geometry(padding: str, sizes, kernel_size, strides, dilation_rate, output_padding):
    """(pads, output_padding) for `ops.conv_transpose` reproducing TensorFlow's transposed convolution.

    The output length is tf_keras's `deconv_output_length`; TensorFlow computes it as the input-gradient of a
    forward convolution of that length, whose 'SAME' padding puts `total // 2` before. Output positions past
    the last tap (when the output is longer than `(L-1)*s + eff`) are zeros: an extra output padding.
    """
    pads, extra = [], []
    for i, (n, k, s, d) in enumerate(zip(sizes, kernel_size, strides, dilation_rate)):
        op = None if output_padding is None else output_padding[i]
        out = deconv_output_length(n, k, padding, op, s, d)
        eff = k + (k - 1) * (d - 1)
        full = (n - 1) * s + eff
        lo = max(full - out, 0) // 2 if padding == "same" else 0
        hi = full - lo - out
        pads.append((lo, max(hi, 0)))
        extra.append(max(-hi, 0))
    return pads, extra


_SPATIAL = {1: "W", 2: "HW", 3: "DHW"}


def _layout(rank: int, data_format: str) -> str:
    return "NC" + _SPATIAL[rank] if data_format == "channels_first" else "N" + _SPATIAL[rank] + "C"


# ---------------------------------------------------------------------------------------------- base


class _Conv(Layer):
    """N-d convolution (tf_keras `Conv`): kernel `(*kernel_size, C/groups, filters)` and an optional bias."""

    rank = 0
    _allows_causal = False
    _exact_rank = False  # True: the input must have rank + 2 dims (no extra batch dims)

    def __init__(self, rank: int, filters: int | None, kernel_size, strides=1, padding="valid", data_format=None,
                 dilation_rate=1, groups=1, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, kernel_constraint=None, bias_constraint=None, **kwargs):
        super().__init__(**kwargs)
        self.rank = rank
        if isinstance(filters, float):
            filters = int(filters)
        if filters is not None and filters <= 0:
            raise ConfigError(f"`filters` must be strictly positive, got {filters}", layer=self.name)
        self.filters = filters
        self.groups = int(groups or 1)
        self.kernel_size = normalize_tuple(kernel_size, rank, "kernel_size", layer=self.name)
        self.strides = normalize_tuple(strides, rank, "strides", layer=self.name)
        self.padding = normalize_padding(padding, layer=self.name)
        self.data_format = normalize_data_format(data_format, layer=self.name)
        self.dilation_rate = normalize_tuple(dilation_rate, rank, "dilation_rate", layer=self.name)
        self.activation = activation
        self._act = activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = kernel_initializer
        self.bias_initializer = bias_initializer
        self.kernel_regularizer = kernel_regularizer
        self.bias_regularizer = bias_regularizer
        self.activity_regularizer = activity_regularizer
        self.kernel_constraint = kernel_constraint
        self.bias_constraint = bias_constraint
        if self.filters is not None and self.filters % self.groups:
            raise ConfigError(f"the number of filters ({self.filters}) must be evenly divisible by the number of "
                              f"groups ({self.groups})", layer=self.name)
        if self.padding == "causal" and not self._allows_causal:
            raise ConfigError("causal padding is only supported for Conv1D and SeparableConv1D", layer=self.name)
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ConfigError(f"strides > 1 are not supported in conjunction with dilation_rate > 1, got "
                              f"strides={self.strides} and dilation_rate={self.dilation_rate}", layer=self.name)

    # ------------------------------------------------------------------ geometry
    @property
    def _channels_last(self) -> bool:
        return self.data_format == "channels_last"

    def _channel_axis(self) -> int:
        return -1 if self._channels_last else -1 - self.rank

    def _spatial(self, shape) -> tuple:
        shape = tuple(shape)
        return shape[-1 - self.rank:-1] if self._channels_last else shape[-self.rank:]

    def _input_channels(self, input_shape) -> int:
        input_shape = tuple(input_shape)
        if len(input_shape) < self.rank + 2 or (self._exact_rank and len(input_shape) != self.rank + 2):
            want = f"rank {self.rank + 2}" if self._exact_rank else f"at least rank {self.rank + 2}"
            raise ValueError(f"{type(self).__name__} expects inputs of {want}, got shape {input_shape}")
        channels = input_shape[self._channel_axis()]
        if channels is None:
            raise ValueError(f"the channel dimension of the inputs must be defined, got shape {input_shape}")
        return int(channels)

    def _with_spatial(self, input_shape, spatial, channels) -> tuple:
        input_shape = tuple(input_shape)
        lead = input_shape[:len(input_shape) - self.rank - 1]
        return (*lead, *spatial, channels) if self._channels_last else (*lead, channels, *spatial)

    def _out_spatial(self, spatial) -> list:
        return [conv_output_length(n, k, self.padding, s, d)
                for n, k, s, d in zip(spatial, self.kernel_size, self.strides, self.dilation_rate)]

    def _out_channels(self, input_channels: int) -> int:
        return self.filters

    def compute_output_shape(self, input_shape):
        channels = self._input_channels(input_shape)
        spatial = self._out_spatial(self._spatial(input_shape))
        if any(s is not None and s <= 0 for s in spatial):
            raise ValueError(f"one of the dimensions in the output is <= 0 due to downsampling; input shape "
                             f"{tuple(input_shape)} gives output spatial size {tuple(spatial)}")
        return self._with_spatial(input_shape, spatial, self._out_channels(channels))

    def compute_output_layout(self, input_layouts, output_shape):
        return _layout(self.rank, self.data_format) if len(output_shape) == self.rank + 2 else None

    # ------------------------------------------------------------------ weights and computation
    def build(self, input_shape):
        channels = self._input_channels(input_shape)
        if channels % self.groups:
            raise ValueError(f"the number of input channels ({channels}) must be evenly divisible by the number "
                             f"of groups ({self.groups})")
        self.compute_output_shape(input_shape)
        self.kernel = self.add_weight("kernel", (*self.kernel_size, channels // self.groups, self.filters),
                                      self.kernel_initializer)
        self.bias = self.add_weight("bias", (self.filters,), self.bias_initializer) if self.use_bias else None

    def _add_bias(self, y):
        if self.bias is None:
            return y
        b = self.bias.value if self._channels_last else self.bias.value.reshape((-1,) + (1,) * self.rank)
        return ops.add(y, b)

    def _convolve(self, x):
        pads = conv_pads(self.padding, self._spatial(x.shape), self.kernel_size, self.strides, self.dilation_rate)
        return ops.conv(x, self.kernel.value, self.strides, pads, self.dilation_rate, self.groups,
                        self._channels_last)

    def _linear(self, inputs):
        """The output before the activation."""
        x = np.asarray(inputs)
        lead = x.shape[:x.ndim - self.rank - 1]
        if len(lead) != 1:  # extra batch dimensions are folded into one
            x = x.reshape((-1, *x.shape[len(lead):]))
        y = self._add_bias(self._convolve(x))
        return y.reshape((*lead, *y.shape[1:])) if len(lead) != 1 else y

    def call(self, inputs):
        return self._act(self._linear(inputs))

    # ------------------------------------------------------------------ config
    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": list(self.kernel_size),
                "strides": list(self.strides), "padding": self.padding, "data_format": self.data_format,
                "dilation_rate": list(self.dilation_rate), "groups": self.groups,
                "activation": activations.serialize(self.activation), "use_bias": self.use_bias,
                **weight_args_config(self, ("kernel", "bias"), activity=True)}


# ---------------------------------------------------------------------------------------------- Conv1D/2D/3D


@register_layer("Convolution1D")
class Conv1D(_Conv):
    """1-D convolution over `(batch, steps, channels)`; supports 'causal' padding."""

    _allows_causal = True

    def __init__(self, filters, kernel_size, strides=1, padding="valid", data_format="channels_last",
                 dilation_rate=1, groups=1, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, kernel_constraint=None, bias_constraint=None, **kwargs):
        super().__init__(1, filters, kernel_size, strides=strides, padding=padding, data_format=data_format,
                         dilation_rate=dilation_rate, groups=groups, activation=activation, use_bias=use_bias,
                         kernel_initializer=kernel_initializer, bias_initializer=bias_initializer,
                         kernel_regularizer=kernel_regularizer, bias_regularizer=bias_regularizer,
                         activity_regularizer=activity_regularizer, kernel_constraint=kernel_constraint,
                         bias_constraint=bias_constraint, **kwargs)


@register_layer("Convolution2D")
class Conv2D(_Conv):
    """2-D convolution over `(batch, rows, cols, channels)` (or channels first)."""

    def __init__(self, filters, kernel_size, strides=(1, 1), padding="valid", data_format=None,
                 dilation_rate=(1, 1), groups=1, activation=None, use_bias=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", kernel_regularizer=None,
                 bias_regularizer=None, activity_regularizer=None, kernel_constraint=None, bias_constraint=None,
                 **kwargs):
        super().__init__(2, filters, kernel_size, strides=strides, padding=padding, data_format=data_format,
                         dilation_rate=dilation_rate, groups=groups, activation=activation, use_bias=use_bias,
                         kernel_initializer=kernel_initializer, bias_initializer=bias_initializer,
                         kernel_regularizer=kernel_regularizer, bias_regularizer=bias_regularizer,
                         activity_regularizer=activity_regularizer, kernel_constraint=kernel_constraint,
                         bias_constraint=bias_constraint, **kwargs)


@register_layer("Convolution3D")
class Conv3D(_Conv):
    """3-D convolution over `(batch, depth, rows, cols, channels)` (or channels first)."""

    def __init__(self, filters, kernel_size, strides=(1, 1, 1), padding="valid", data_format=None,
                 dilation_rate=(1, 1, 1), groups=1, activation=None, use_bias=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", kernel_regularizer=None,
                 bias_regularizer=None, activity_regularizer=None, kernel_constraint=None, bias_constraint=None,
                 **kwargs):
        super().__init__(3, filters, kernel_size, strides=strides, padding=padding, data_format=data_format,
                         dilation_rate=dilation_rate, groups=groups, activation=activation, use_bias=use_bias,
                         kernel_initializer=kernel_initializer, bias_initializer=bias_initializer,
                         kernel_regularizer=kernel_regularizer, bias_regularizer=bias_regularizer,
                         activity_regularizer=activity_regularizer, kernel_constraint=kernel_constraint,
                         bias_constraint=bias_constraint, **kwargs)


# ---------------------------------------------------------------------------------------------- transposed


class _ConvTranspose(_Conv):
    """Transposed convolution: kernel `(*kernel_size, filters, C)`; output length `deconv_output_length`."""

    _exact_rank = True
    _uses_dilation = True

    def __init__(self, rank, filters, kernel_size, strides=1, padding="valid", output_padding=None,
                 data_format=None, dilation_rate=1, **kwargs):
        super().__init__(rank, filters, kernel_size, strides=strides, padding=padding, data_format=data_format,
                         dilation_rate=dilation_rate, **kwargs)
        if self.padding == "causal":
            raise ConfigError("causal padding is not supported by transposed convolutions", layer=self.name)
        self.output_padding = output_padding
        if output_padding is not None:
            self.output_padding = normalize_tuple(output_padding, rank, "output_padding", allow_zero=True,
                                                  layer=self.name)
            if any(op >= s for op, s in zip(self.output_padding, self.strides)):
                raise ConfigError(f"strides must be greater than output padding, got strides={self.strides} and "
                                  f"output_padding={self.output_padding}", layer=self.name)

    def _dilation(self) -> tuple:
        return self.dilation_rate if self._uses_dilation else (1,) * self.rank

    def _out_spatial(self, spatial) -> list:
        ops_ = self.output_padding or (None,) * self.rank
        return [deconv_output_length(n, k, self.padding, op, s, d)
                for n, k, op, s, d in zip(spatial, self.kernel_size, ops_, self.strides, self._dilation())]

    def build(self, input_shape):
        channels = self._input_channels(input_shape)
        self.kernel = self.add_weight("kernel", (*self.kernel_size, self.filters, channels), self.kernel_initializer)
        self.bias = self.add_weight("bias", (self.filters,), self.bias_initializer) if self.use_bias else None

    def _convolve(self, x):
        pads, extra = conv_transpose_geometry(self.padding, self._spatial(x.shape), self.kernel_size, self.strides,
                                              self._dilation(), self.output_padding)
        return ops.conv_transpose(x, self.kernel.value, self.strides, pads, self._dilation(), extra,
                                  self._channels_last)

    def get_config(self):
        return {**super().get_config(),
                "output_padding": list(self.output_padding) if self.output_padding is not None else None}


@register_layer("Convolution1DTranspose")
class Conv1DTranspose(_ConvTranspose):
    """1-D transposed convolution."""

    def __init__(self, filters, kernel_size, strides=1, padding="valid", output_padding=None, data_format=None,
                 dilation_rate=1, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, kernel_constraint=None, bias_constraint=None, **kwargs):
        super().__init__(1, filters, kernel_size, strides=strides, padding=padding, output_padding=output_padding,
                         data_format=data_format, dilation_rate=dilation_rate, activation=activation,
                         use_bias=use_bias, kernel_initializer=kernel_initializer,
                         bias_initializer=bias_initializer, kernel_regularizer=kernel_regularizer,
                         bias_regularizer=bias_regularizer, activity_regularizer=activity_regularizer,
                         kernel_constraint=kernel_constraint, bias_constraint=bias_constraint, **kwargs)


@register_layer("Convolution2DTranspose", "Deconvolution2D", "Deconv2D")
class Conv2DTranspose(_ConvTranspose):
    """2-D transposed convolution ("deconvolution")."""

    def __init__(self, filters, kernel_size, strides=(1, 1), padding="valid", output_padding=None,
                 data_format=None, dilation_rate=(1, 1), activation=None, use_bias=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", kernel_regularizer=None,
                 bias_regularizer=None, activity_regularizer=None, kernel_constraint=None, bias_constraint=None,
                 **kwargs):
        super().__init__(2, filters, kernel_size, strides=strides, padding=padding, output_padding=output_padding,
                         data_format=data_format, dilation_rate=dilation_rate, activation=activation,
                         use_bias=use_bias, kernel_initializer=kernel_initializer,
                         bias_initializer=bias_initializer, kernel_regularizer=kernel_regularizer,
                         bias_regularizer=bias_regularizer, activity_regularizer=activity_regularizer,
                         kernel_constraint=kernel_constraint, bias_constraint=bias_constraint, **kwargs)


@register_layer("Convolution3DTranspose", "Deconvolution3D", "Deconv3D")
class Conv3DTranspose(_ConvTranspose):
    """3-D transposed convolution.

    tf_keras's Conv3DTranspose ignores `dilation_rate` (neither its output shape nor its computation uses it,
    and its config leaves it out); Keras 3's applies it. Layers built under the Keras 3 dialect
    (`keras_dialect(3)`) apply it and keep it in their config; others ignore it and leave it out, as tf_keras.
    """

    def __init__(self, filters, kernel_size, strides=(1, 1, 1), padding="valid", output_padding=None,
                 data_format=None, dilation_rate=(1, 1, 1), activation=None, use_bias=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", kernel_regularizer=None,
                 bias_regularizer=None, activity_regularizer=None, kernel_constraint=None, bias_constraint=None,
                 **kwargs):
        super().__init__(3, filters, kernel_size, strides=strides, padding=padding, output_padding=output_padding,
                         data_format=data_format, dilation_rate=dilation_rate, activation=activation,
                         use_bias=use_bias, kernel_initializer=kernel_initializer,
                         bias_initializer=bias_initializer, kernel_regularizer=kernel_regularizer,
                         bias_regularizer=bias_regularizer, activity_regularizer=activity_regularizer,
                         kernel_constraint=kernel_constraint, bias_constraint=bias_constraint, **kwargs)
        self._uses_dilation = self._keras_major >= 3

    def get_config(self):
        config = super().get_config()
        if not self._uses_dilation:
            config.pop("dilation_rate")
        return config


# ---------------------------------------------------------------------------------------------- separable


class _SeparableConv(_Conv):
    """Depthwise convolution (`depth_multiplier` filters per channel) followed by a 1x1 pointwise convolution."""

    _exact_rank = True

    def __init__(self, rank, filters, kernel_size, strides=1, padding="valid", data_format=None, dilation_rate=1,
                 depth_multiplier=1, activation=None, use_bias=True, depthwise_initializer="glorot_uniform",
                 pointwise_initializer="glorot_uniform", bias_initializer="zeros", depthwise_regularizer=None,
                 pointwise_regularizer=None, bias_regularizer=None, activity_regularizer=None,
                 depthwise_constraint=None, pointwise_constraint=None, bias_constraint=None, **kwargs):
        super().__init__(rank, filters, kernel_size, strides=strides, padding=padding, data_format=data_format,
                         dilation_rate=dilation_rate, activation=activation, use_bias=use_bias,
                         bias_initializer=bias_initializer, bias_regularizer=bias_regularizer,
                         activity_regularizer=activity_regularizer, bias_constraint=bias_constraint, **kwargs)
        self.depth_multiplier = int(depth_multiplier)
        self.depthwise_initializer = depthwise_initializer
        self.pointwise_initializer = pointwise_initializer
        self.depthwise_regularizer = depthwise_regularizer
        self.pointwise_regularizer = pointwise_regularizer
        self.depthwise_constraint = depthwise_constraint
        self.pointwise_constraint = pointwise_constraint

    def build(self, input_shape):
        channels = self._input_channels(input_shape)
        self.depthwise_kernel = self.add_weight("depthwise_kernel",
                                                (*self.kernel_size, channels, self.depth_multiplier),
                                                self.depthwise_initializer)
        self.pointwise_kernel = self.add_weight("pointwise_kernel",
                                                (*(1,) * self.rank, channels * self.depth_multiplier, self.filters),
                                                self.pointwise_initializer)
        self.bias = self.add_weight("bias", (self.filters,), self.bias_initializer) if self.use_bias else None

    def _convolve(self, x):
        dk = self.depthwise_kernel.value
        channels = dk.shape[-2]
        pads = conv_pads(self.padding, self._spatial(x.shape), self.kernel_size, self.strides, self.dilation_rate)
        y = ops.conv(x, dk.reshape((*self.kernel_size, 1, -1)), self.strides, pads, self.dilation_rate, channels,
                     self._channels_last)
        return ops.conv(y, self.pointwise_kernel.value, channels_last=self._channels_last)

    def get_config(self):
        # tf_keras keeps the (unused) kernel_initializer/regularizer/constraint keys of its Conv base here
        return {**super().get_config(), "depth_multiplier": self.depth_multiplier,
                **weight_args_config(self, ("depthwise", "pointwise"))}


@register_layer("SeparableConvolution1D")
class SeparableConv1D(_SeparableConv):
    """Depthwise-separable 1-D convolution; supports 'causal' padding."""

    _allows_causal = True

    def __init__(self, filters, kernel_size, strides=1, padding="valid", data_format=None, dilation_rate=1,
                 depth_multiplier=1, activation=None, use_bias=True, depthwise_initializer="glorot_uniform",
                 pointwise_initializer="glorot_uniform", bias_initializer="zeros", depthwise_regularizer=None,
                 pointwise_regularizer=None, bias_regularizer=None, activity_regularizer=None,
                 depthwise_constraint=None, pointwise_constraint=None, bias_constraint=None, **kwargs):
        super().__init__(1, filters, kernel_size, strides=strides, padding=padding, data_format=data_format,
                         dilation_rate=dilation_rate, depth_multiplier=depth_multiplier, activation=activation,
                         use_bias=use_bias, depthwise_initializer=depthwise_initializer,
                         pointwise_initializer=pointwise_initializer, bias_initializer=bias_initializer,
                         depthwise_regularizer=depthwise_regularizer, pointwise_regularizer=pointwise_regularizer,
                         bias_regularizer=bias_regularizer, activity_regularizer=activity_regularizer,
                         depthwise_constraint=depthwise_constraint, pointwise_constraint=pointwise_constraint,
                         bias_constraint=bias_constraint, **kwargs)


@register_layer("SeparableConvolution2D")
class SeparableConv2D(_SeparableConv):
    """Depthwise-separable 2-D convolution."""

    def __init__(self, filters, kernel_size, strides=(1, 1), padding="valid", data_format=None,
                 dilation_rate=(1, 1), depth_multiplier=1, activation=None, use_bias=True,
                 depthwise_initializer="glorot_uniform", pointwise_initializer="glorot_uniform",
                 bias_initializer="zeros", depthwise_regularizer=None, pointwise_regularizer=None,
                 bias_regularizer=None, activity_regularizer=None, depthwise_constraint=None,
                 pointwise_constraint=None, bias_constraint=None, **kwargs):
        super().__init__(2, filters, kernel_size, strides=strides, padding=padding, data_format=data_format,
                         dilation_rate=dilation_rate, depth_multiplier=depth_multiplier, activation=activation,
                         use_bias=use_bias, depthwise_initializer=depthwise_initializer,
                         pointwise_initializer=pointwise_initializer, bias_initializer=bias_initializer,
                         depthwise_regularizer=depthwise_regularizer, pointwise_regularizer=pointwise_regularizer,
                         bias_regularizer=bias_regularizer, activity_regularizer=activity_regularizer,
                         depthwise_constraint=depthwise_constraint, pointwise_constraint=pointwise_constraint,
                         bias_constraint=bias_constraint, **kwargs)


# ---------------------------------------------------------------------------------------------- depthwise


class _DepthwiseConv(_Conv):
    """Per-channel convolution with `depth_multiplier` filters each: output channel `c * depth_multiplier + m`."""

    _exact_rank = True

    def __init__(self, rank, kernel_size, strides=1, padding="valid", depth_multiplier=1, data_format=None,
                 dilation_rate=1, activation=None, use_bias=True, depthwise_initializer="glorot_uniform",
                 bias_initializer="zeros", depthwise_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, depthwise_constraint=None, bias_constraint=None, **kwargs):
        super().__init__(rank, None, kernel_size, strides=strides, padding=padding, data_format=data_format,
                         dilation_rate=dilation_rate, activation=activation, use_bias=use_bias,
                         bias_initializer=bias_initializer, bias_regularizer=bias_regularizer,
                         activity_regularizer=activity_regularizer, bias_constraint=bias_constraint, **kwargs)
        self.depth_multiplier = int(depth_multiplier)
        self.depthwise_initializer = depthwise_initializer
        self.depthwise_regularizer = depthwise_regularizer
        self.depthwise_constraint = depthwise_constraint

    def _out_channels(self, input_channels):
        return input_channels * self.depth_multiplier

    def build(self, input_shape):
        channels = self._input_channels(input_shape)
        self.compute_output_shape(input_shape)
        self.depthwise_kernel = self.add_weight("depthwise_kernel",
                                                (*self.kernel_size, channels, self.depth_multiplier),
                                                self.depthwise_initializer)
        self.bias = (self.add_weight("bias", (channels * self.depth_multiplier,), self.bias_initializer)
                     if self.use_bias else None)

    def _convolve(self, x):
        dk = self.depthwise_kernel.value
        pads = conv_pads(self.padding, self._spatial(x.shape), self.kernel_size, self.strides, self.dilation_rate)
        return ops.conv(x, dk.reshape((*self.kernel_size, 1, -1)), self.strides, pads, self.dilation_rate,
                        dk.shape[-2], self._channels_last)

    def get_config(self):
        config = super().get_config()
        for key in ("filters", "kernel_initializer", "kernel_regularizer", "kernel_constraint"):
            config.pop(key)
        return {**config, "depth_multiplier": self.depth_multiplier,
                **weight_args_config(self, ("depthwise",))}


@register_layer()
class DepthwiseConv1D(_DepthwiseConv):
    """Depthwise 1-D convolution."""

    def __init__(self, kernel_size, strides=1, padding="valid", depth_multiplier=1, data_format=None,
                 dilation_rate=1, activation=None, use_bias=True, depthwise_initializer="glorot_uniform",
                 bias_initializer="zeros", depthwise_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, depthwise_constraint=None, bias_constraint=None, **kwargs):
        super().__init__(1, kernel_size, strides=strides, padding=padding, depth_multiplier=depth_multiplier,
                         data_format=data_format, dilation_rate=dilation_rate, activation=activation,
                         use_bias=use_bias, depthwise_initializer=depthwise_initializer,
                         bias_initializer=bias_initializer, depthwise_regularizer=depthwise_regularizer,
                         bias_regularizer=bias_regularizer, activity_regularizer=activity_regularizer,
                         depthwise_constraint=depthwise_constraint, bias_constraint=bias_constraint, **kwargs)


@register_layer()
class DepthwiseConv2D(_DepthwiseConv):
    """Depthwise 2-D convolution."""

    def __init__(self, kernel_size, strides=(1, 1), padding="valid", depth_multiplier=1, data_format=None,
                 dilation_rate=(1, 1), activation=None, use_bias=True, depthwise_initializer="glorot_uniform",
                 bias_initializer="zeros", depthwise_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, depthwise_constraint=None, bias_constraint=None, **kwargs):
        super().__init__(2, kernel_size, strides=strides, padding=padding, depth_multiplier=depth_multiplier,
                         data_format=data_format, dilation_rate=dilation_rate, activation=activation,
                         use_bias=use_bias, depthwise_initializer=depthwise_initializer,
                         bias_initializer=bias_initializer, depthwise_regularizer=depthwise_regularizer,
                         bias_regularizer=bias_regularizer, activity_regularizer=activity_regularizer,
                         depthwise_constraint=depthwise_constraint, bias_constraint=bias_constraint, **kwargs)


__all__ = ["Conv1D", "Conv2D", "Conv3D", "Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose",
           "SeparableConv1D", "SeparableConv2D", "DepthwiseConv1D", "DepthwiseConv2D", "conv_output_length",
           "deconv_output_length", "same_pads", "conv_pads", "conv_transpose_geometry", "normalize_tuple"]
