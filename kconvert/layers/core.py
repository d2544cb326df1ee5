"""InputLayer, Dense and Activation."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import ops
from ..errors import ConfigError
from ..ir import Node, Value
from . import activations
from .base import Layer, register_layer, unique_name
from .config_objects import weight_args_config


@register_layer()
class InputLayer(Layer):
    """The entry point of a functional model; owns node 0 whose output is the model input."""

    def __init__(self, input_shape=None, batch_size=None, dtype=None, input_tensor=None, sparse=False,
                 name=None, ragged=False, batch_input_shape=None, batch_shape=None, optional=False, **kwargs):
        if batch_shape is not None and batch_input_shape is None:
            batch_input_shape = batch_shape
        if batch_input_shape is None:
            if input_shape is None:
                raise ConfigError("InputLayer needs input_shape or batch_input_shape", layer=name)
            batch_input_shape = (batch_size, *input_shape)
        kwargs.pop("input_dtype", None)
        super().__init__(name=name or unique_name("input", zero_based=False), dtype=dtype,
                         batch_input_shape=batch_input_shape, **kwargs)
        self.sparse = bool(sparse)
        self.ragged = bool(ragged)
        self.optional = bool(optional)
        self.built = True
        node = Node(self, [], nested=False)
        node.outputs = [Value(self._batch_input_shape, self.dtype, None, node, 0, name=self.name)]

    def get_config(self) -> dict:
        return {"batch_input_shape": list(self._batch_input_shape), "dtype": self._dtype_config,
                "sparse": self.sparse, "ragged": self.ragged, "name": self.name, "optional": self.optional}


def Input(shape=None, batch_size=None, name=None, dtype=None, sparse=False, tensor=None, ragged=False,
          batch_shape=None, **kwargs) -> Value:
    """A symbolic model input, as `keras.Input`."""
    if shape is None and batch_shape is None:
        raise ConfigError("Input() needs shape or batch_shape")
    layer = InputLayer(input_shape=tuple(shape) if shape is not None else None, batch_size=batch_size, name=name,
                       dtype=dtype, sparse=sparse, ragged=ragged,
                       batch_input_shape=tuple(batch_shape) if batch_shape is not None else None, **kwargs)
    return layer._inbound_nodes[0].outputs[0]


@register_layer()
class Dense(Layer):
    """y = activation(x @ kernel + bias) on the last axis."""

    supports_masking = True  # tf.keras passes a timestep mask through Dense

    def __init__(self, units: int, activation: Any = None, use_bias: bool = True,
                 kernel_initializer: Any = "glorot_uniform", bias_initializer: Any = "zeros",
                 kernel_regularizer=None, bias_regularizer=None, activity_regularizer=None,
                 kernel_constraint=None, bias_constraint=None, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
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

    def build(self, input_shape):
        if input_shape[-1] is None:
            raise ValueError("the last dimension of the input to Dense must be known")
        self.kernel = self.add_weight("kernel", (input_shape[-1], self.units), self.kernel_initializer)
        self.bias = self.add_weight("bias", (self.units,), self.bias_initializer) if self.use_bias else None

    def call(self, inputs):
        y = ops.matmul(inputs, self.kernel.value)
        if self.bias is not None:
            y = ops.add(y, self.bias.value)
        return self._act(y)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "activation": activations.serialize(self.activation),
                "use_bias": self.use_bias, **weight_args_config(self, ("kernel", "bias"), activity=True)}


@register_layer()
class Activation(Layer):
    """Applies an activation function by name."""

    supports_masking = True

    def __init__(self, activation, **kwargs):
        super().__init__(**kwargs)
        self.activation = activation
        self._act = activations.get(activation)

    def call(self, inputs):
        return self._act(np.asarray(inputs))

    def get_config(self):
        return {**super().get_config(), "activation": activations.serialize(self.activation)}
