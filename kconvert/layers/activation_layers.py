"""Activation layers with parameters: ReLU, LeakyReLU, PReLU, ELU, ThresholdedReLU, Softmax."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import ops
from ..errors import ConfigError
from .base import Layer, register_layer
from .config_objects import weight_args_config


def _f32(v) -> float:
    """tf_keras keeps these parameters as float32 (`backend.cast_to_floatx`) and writes them back as floats."""
    return float(np.float32(v))


@register_layer()
class ReLU(Layer):
    """x where x > threshold, negative_slope * (x - threshold) below it, capped at max_value."""

    supports_masking = True

    def __init__(self, max_value=None, negative_slope=0.0, threshold=0.0, **kwargs):
        super().__init__(**kwargs)
        if max_value is not None and max_value < 0.0:
            raise ConfigError(f"max_value of a ReLU layer cannot be negative, got {max_value}", layer=self.name)
        if negative_slope is None or negative_slope < 0.0:
            raise ConfigError(f"negative_slope of a ReLU layer cannot be negative, got {negative_slope}",
                              layer=self.name)
        if threshold is None or threshold < 0.0:
            raise ConfigError(f"threshold of a ReLU layer cannot be negative, got {threshold}", layer=self.name)
        self.max_value = None if max_value is None else _f32(max_value)
        self.negative_slope = _f32(negative_slope)
        self.threshold = _f32(threshold)

    def call(self, inputs):
        x = np.asarray(inputs)
        return ops.relu(x, negative_slope=np.float32(self.negative_slope),
                        max_value=None if self.max_value is None else np.float32(self.max_value),
                        threshold=np.float32(self.threshold))

    def get_config(self):
        return {**super().get_config(), "max_value": self.max_value, "negative_slope": self.negative_slope,
                "threshold": self.threshold}


@register_layer()
class LeakyReLU(Layer):
    """x for x > 0, alpha * x otherwise (tf_keras's default alpha is 0.3)."""

    supports_masking = True

    def __init__(self, alpha=0.3, negative_slope=None, **kwargs):
        # Keras 3 names the argument negative_slope (same default, 0.3)
        if negative_slope is not None:
            alpha = negative_slope
        super().__init__(**kwargs)
        if alpha is None:
            raise ConfigError("the alpha of a LeakyReLU layer cannot be None", layer=self.name)
        self.alpha = _f32(alpha)

    def call(self, inputs):
        x = np.asarray(inputs)
        return np.where(x > 0, x, np.float32(self.alpha) * x).astype(x.dtype, copy=False)

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha}


@register_layer()
class PReLU(Layer):
    """max(x, 0) - alpha * max(-x, 0) with a learned `alpha` shaped like one sample (shared_axes set to 1)."""

    supports_masking = True

    def __init__(self, alpha_initializer: Any = "zeros", alpha_regularizer=None, alpha_constraint=None,
                 shared_axes=None, **kwargs):
        super().__init__(**kwargs)
        self.alpha_initializer = alpha_initializer
        self.alpha_regularizer = alpha_regularizer
        self.alpha_constraint = alpha_constraint
        if shared_axes is None:
            self.shared_axes = None
        elif not isinstance(shared_axes, (list, tuple)):
            self.shared_axes = [int(shared_axes)]
        else:
            self.shared_axes = [int(a) for a in shared_axes]

    def build(self, input_shape):
        param_shape = list(input_shape[1:])
        for i in self.shared_axes or []:
            param_shape[i - 1] = 1
        if any(d is None for d in param_shape):
            raise ValueError("PReLU needs every non-shared axis of its input to be known")
        self.alpha = self.add_weight("alpha", param_shape, self.alpha_initializer)

    def call(self, inputs):
        x = np.asarray(inputs)
        return (ops.relu(x) - self.alpha.value * ops.relu(-x)).astype(x.dtype, copy=False)

    def get_config(self):
        return {**super().get_config(), **weight_args_config(self, ("alpha",)), "shared_axes": self.shared_axes}


@register_layer()
class ELU(Layer):
    """x for x > 0, alpha * (exp(x) - 1) otherwise."""

    supports_masking = True

    def __init__(self, alpha=1.0, **kwargs):
        super().__init__(**kwargs)
        if alpha is None:
            raise ConfigError("the alpha of an ELU layer cannot be None", layer=self.name)
        self.alpha = _f32(alpha)

    def call(self, inputs):
        return ops.elu(np.asarray(inputs), np.float32(self.alpha))

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha}


@register_layer()
class ThresholdedReLU(Layer):
    """x where x > theta, 0 elsewhere."""

    supports_masking = True

    def __init__(self, theta=1.0, **kwargs):
        super().__init__(**kwargs)
        if theta is None:
            raise ConfigError("the theta of a ThresholdedReLU layer cannot be None", layer=self.name)
        if theta < 0:
            raise ConfigError(f"the theta of a ThresholdedReLU layer must be >= 0, got {theta}", layer=self.name)
        self.theta = _f32(theta)

    def call(self, inputs):
        x = np.asarray(inputs)
        return (x * (x > np.float32(self.theta)).astype(x.dtype)).astype(x.dtype, copy=False)

    def get_config(self):
        return {**super().get_config(), "theta": self.theta}


_LARGE_NEGATIVE = -1e9  # tf_keras's `_large_compatible_negative` for float32


@register_layer()
class Softmax(Layer):
    """Softmax over `axis` (an int, or a list normalized jointly); masked positions get ~0 probability."""

    supports_masking = True

    def __init__(self, axis=-1, robust_masking=False, **kwargs):
        super().__init__(**kwargs)
        self.axis = axis
        self.robust_masking = bool(robust_masking)

    def call(self, inputs, mask=None):
        x = np.asarray(inputs)
        if mask is not None:
            mask = np.asarray(mask)
            if self.robust_masking:
                keep = mask if mask.dtype == bool else mask > 0.5
                x = np.where(keep, x, np.asarray(_LARGE_NEGATIVE, x.dtype)).astype(x.dtype, copy=False)
            else:
                x = (x + (1.0 - mask.astype(x.dtype)) * np.asarray(_LARGE_NEGATIVE, x.dtype)).astype(x.dtype,
                                                                                                     copy=False)
        if isinstance(self.axis, (list, tuple)):
            if len(self.axis) > 1:
                return np.exp(x - ops.logsumexp(x, axis=self.axis, keepdims=True)).astype(x.dtype, copy=False)
            return ops.softmax(x, axis=self.axis[0])
        return ops.softmax(x, axis=self.axis)

    def get_config(self):
        config = {**super().get_config(), "axis": self.axis}
        if self.robust_masking:
            config["robust_masking"] = True
        return config
