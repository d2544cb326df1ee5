"""Convolutional LSTMs: ConvLSTM1D, ConvLSTM2D, ConvLSTM3D.

The input part of every timestep is one convolution over `(N*T, ...)` with the layer's strides, padding and
dilation; each step adds the recurrent convolution of h (strides 1, 'same' padding, no dilation), gate blocks
i, f, c, o on the channel axis, as tf_keras's `ConvLSTMCell` and Keras 3's `ConvLSTMCell` compute. Weight names
follow tf_keras (`conv_lstm2d/kernel:0`, no cell scope); Keras 3 saves them under `<layer>/cell/vars`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import ops
from ..errors import ConfigError
from ..ops.recurrent import lstm_step
from . import activations
from .base import register_layer
from .config_objects import weight_args_config
from .convolutional import (
    conv_output_length,
    conv_pads,
    normalize_data_format,
    normalize_padding,
    normalize_tuple,
)
from .recurrent import Recurrent, RNNCell, _rate, _unit_forget_bias


class _ConvLSTM(Recurrent):
    """ConvLSTM over `(batch, time, *spatial, channels)` (or channels first): kernel `(*k, C, 4f)`,
    recurrent_kernel `(*k, f, 4f)`, bias `(4f,)`."""

    rank = 2
    n_states = 2
    keras3_cell_name = "conv_lstm_cell"

    def __init__(self, filters: int, kernel_size, strides=1, padding="valid", data_format=None, dilation_rate=1,
                 activation: Any = "tanh", recurrent_activation: Any = None, use_bias: bool = True,
                 kernel_initializer: Any = "glorot_uniform", recurrent_initializer: Any = "orthogonal",
                 bias_initializer: Any = "zeros", unit_forget_bias: bool = True, kernel_regularizer=None,
                 recurrent_regularizer=None, bias_regularizer=None, activity_regularizer=None, kernel_constraint=None,
                 recurrent_constraint=None, bias_constraint=None, dropout: float = 0.0,
                 recurrent_dropout: float = 0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(filters, bool) or not isinstance(filters, (int, np.integer)) or filters <= 0:
            raise ConfigError(f"filters must be a positive integer, got {filters!r}", layer=self.name)
        self.filters = int(filters)
        self.kernel_size = normalize_tuple(kernel_size, self.rank, "kernel_size", layer=self.name)
        self.strides = normalize_tuple(strides, self.rank, "strides", layer=self.name)
        self.padding = normalize_padding(padding, layer=self.name)
        if self.padding == "causal":
            raise ConfigError("ConvLSTM layers take padding 'valid' or 'same'", layer=self.name)
        self.data_format = normalize_data_format(data_format, layer=self.name)
        self.dilation_rate = normalize_tuple(dilation_rate, self.rank, "dilation_rate", layer=self.name)
        if recurrent_activation is None:  # the defaults differ: tf.keras hard_sigmoid, Keras 3 sigmoid
            recurrent_activation = "sigmoid" if self._keras_major >= 3 else "hard_sigmoid"
        self.activation = activation
        self.recurrent_activation = recurrent_activation
        self._act = activations.get(activation)
        self._ract = activations.get(recurrent_activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = kernel_initializer
        self.recurrent_initializer = recurrent_initializer
        self.bias_initializer = bias_initializer
        self.unit_forget_bias = bool(unit_forget_bias)
        self.kernel_regularizer = kernel_regularizer
        self.recurrent_regularizer = recurrent_regularizer
        self.bias_regularizer = bias_regularizer
        self.activity_regularizer = activity_regularizer
        self.kernel_constraint = kernel_constraint
        self.recurrent_constraint = recurrent_constraint
        self.bias_constraint = bias_constraint
        self.dropout = _rate(dropout)
        self.recurrent_dropout = _rate(recurrent_dropout)
        self.seed = seed

    # ------------------------------------------------------------------ geometry
    @property
    def _channels_last(self) -> bool:
        return self.data_format == "channels_last"

    @property
    def _gate_axis(self) -> int:
        return -1 if self._channels_last else 1

    def _split(self, shape) -> tuple[int | None, tuple]:
        """(channels, spatial sizes) of one step's shape (batch, ...)."""
        shape = tuple(shape)
        if len(shape) != self.rank + 2:
            raise ValueError(f"{type(self).__name__} expects inputs of rank {self.rank + 3} (batch, time, "
                             f"{self.rank} spatial axes, channels), got {shape}")
        return (shape[-1], shape[1:-1]) if self._channels_last else (shape[1], shape[2:])

    def _step_output_shape(self, input_shape):
        step = (input_shape[0], *input_shape[2:])
        _, spatial = self._split(step)
        out = [conv_output_length(n, k, self.padding, s, d)
               for n, k, s, d in zip(spatial, self.kernel_size, self.strides, self.dilation_rate)]
        return (step[0], *out, self.filters) if self._channels_last else (step[0], self.filters, *out)

    # ------------------------------------------------------------------ weights
    def build(self, input_shape):
        shape = self._sequence_shape(input_shape)
        channels, _ = self._split((shape[0], *shape[2:]))
        if channels is None:
            raise ValueError(f"the channel dimension of the inputs must be defined, got shape {shape}")
        self._step_output_shape(shape)
        g = 4 * self.filters
        self.kernel = self.add_weight("kernel", (*self.kernel_size, channels, g), self.kernel_initializer)
        self.recurrent_kernel = self.add_weight("recurrent_kernel", (*self.kernel_size, self.filters, g),
                                                self.recurrent_initializer)
        bias_init = (_unit_forget_bias(self.bias_initializer, self.filters) if self.unit_forget_bias
                     else self.bias_initializer)
        self.bias = self.add_weight("bias", (g,), bias_init) if self.use_bias else None
        self._build_states()

    def keras3_state(self):
        return [], {"cell": RNNCell(self.keras3_cell_name, self.weights)}

    # ------------------------------------------------------------------ computation
    def _project(self, x):
        n, t = x.shape[:2]
        pads = conv_pads(self.padding, self._split(x.shape[1:])[1], self.kernel_size, self.strides,
                         self.dilation_rate)
        y = ops.conv(x.reshape((n * t, *x.shape[2:])), self.kernel.value, self.strides, pads, self.dilation_rate, 1,
                     self._channels_last)
        if self.bias is not None:
            y = y + (self.bias.value if self._channels_last else self.bias.value.reshape((-1,) + (1,) * self.rank))
        return y.reshape((n, t, *y.shape[1:]))

    def _step(self, xp, states):
        h, c = states
        ones = (1,) * self.rank
        pads = conv_pads("same", self._split(h.shape)[1], self.kernel_size, ones, ones)
        z = xp + ops.conv(h, self.recurrent_kernel.value, ones, pads, ones, 1, self._channels_last)
        h, c = lstm_step(z, c, self._act, self._ract, axis=self._gate_axis)
        return h, [h, c]

    def compute_output_layout(self, input_layouts, output_shape):
        if self.return_sequences:
            return None
        spatial = {1: "W", 2: "HW", 3: "DHW"}[self.rank]
        layout = "N" + spatial + "C" if self._channels_last else "NC" + spatial
        return [layout] * len(output_shape) if self.return_state else layout

    def get_config(self):
        return {**super().get_config(), **self._sequence_config(), "filters": self.filters,
                "kernel_size": list(self.kernel_size), "strides": list(self.strides), "padding": self.padding,
                "data_format": self.data_format, "dilation_rate": list(self.dilation_rate),
                "activation": activations.serialize(self.activation),
                "recurrent_activation": activations.serialize(self.recurrent_activation), "use_bias": self.use_bias,
                **weight_args_config(self, ("kernel", "recurrent", "bias"), activity=True),
                "unit_forget_bias": self.unit_forget_bias, "dropout": self.dropout,
                "recurrent_dropout": self.recurrent_dropout}


@register_layer()
class ConvLSTM1D(_ConvLSTM):
    """ConvLSTM over `(batch, time, steps, channels)`."""

    rank = 1


@register_layer()
class ConvLSTM2D(_ConvLSTM):
    """ConvLSTM over `(batch, time, rows, cols, channels)`."""

    rank = 2


@register_layer()
class ConvLSTM3D(_ConvLSTM):
    """ConvLSTM over `(batch, time, depth, rows, cols, channels)`."""

    rank = 3
