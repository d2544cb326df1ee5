"""Layers that `keras.applications` models define for themselves (they appear in saved model files)."""

from __future__ import annotations

import numpy as np

from .base import Layer, register_layer


@register_layer()
class CustomScaleLayer(Layer):
    """InceptionResNetV2's residual scaling: inputs[0] + inputs[1] * scale."""

    keras3_module = "keras.src.applications.inception_resnet_v2"  # where Keras 3 defines it (unregistered)

    def __init__(self, scale, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale

    def call(self, inputs):
        return inputs[0] + inputs[1] * np.asarray(self.scale, dtype=inputs[1].dtype)

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


@register_layer()
class LayerScale(Layer):
    """ConvNeXt's per-channel scale: x * gamma, gamma of shape (projection_dim,)."""

    keras3_module = "keras.src.applications.convnext"

    def __init__(self, init_values, projection_dim, **kwargs):
        super().__init__(**kwargs)
        self.init_values = init_values
        self.projection_dim = projection_dim

    def build(self, input_shape):
        self.gamma = self.add_weight("gamma", (self.projection_dim,), {"class_name": "Constant",
                                                                      "config": {"value": self.init_values}})

    def call(self, inputs):
        return inputs * self.gamma.value

    def get_config(self):
        return {**super().get_config(), "init_values": self.init_values, "projection_dim": self.projection_dim}


@register_layer()
class StochasticDepth(Layer):
    """ConvNeXt's batch-wise residual drop; the identity at inference."""

    keras3_module = "keras.src.applications.convnext"

    def __init__(self, drop_path_rate, **kwargs):
        super().__init__(**kwargs)
        self.drop_path_rate = drop_path_rate

    def call(self, inputs, training=False):
        if not training or not self.drop_path_rate:
            return inputs
        keep = 1.0 - self.drop_path_rate
        shape = (inputs.shape[0],) + (1,) * (inputs.ndim - 1)
        mask = np.floor(keep + np.random.default_rng().uniform(0, 1, shape)).astype(inputs.dtype)
        return inputs / keep * mask

    def get_config(self):
        return {**super().get_config(), "drop_path_rate": self.drop_path_rate}
