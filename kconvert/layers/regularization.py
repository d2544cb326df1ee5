"""Training-time noise layers: Dropout, SpatialDropout1D/2D/3D, GaussianNoise, GaussianDropout, AlphaDropout.

Each is the identity at inference (`training=False`, the default). With `training=True` it applies
tf_keras's training behaviour with a numpy generator seeded by the layer's `seed` (a fresh draw per call).
"""

from __future__ import annotations

import numbers

import numpy as np

from ..errors import ConfigError
from ..ops import noise
from .base import Layer, register_layer


class _RandomLayer(Layer):
    supports_masking = True

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self._rng = np.random.default_rng(seed)

    def compute_output_shape(self, input_shape):
        return input_shape


@register_layer()
class Dropout(_RandomLayer):
    """Sets a fraction `rate` of the inputs to 0 and scales the rest by 1 / (1 - rate) while training."""

    def __init__(self, rate, noise_shape=None, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        if isinstance(rate, numbers.Real) and not 0 <= rate <= 1:
            raise ConfigError(f"invalid dropout rate {rate}, expected a value between 0 and 1", layer=self.name)
        self.rate = rate
        self.noise_shape = noise_shape

    def _noise_shape(self, x: np.ndarray):
        return noise.resolve_noise_shape(self.noise_shape, x.shape) if self.noise_shape is not None else None

    def call(self, inputs, training=False):
        x = np.asarray(inputs)
        if not training or self.rate == 0:
            return x
        return noise.dropout(x, float(self.rate), self._rng, self._noise_shape(x))

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "noise_shape": self.noise_shape, "seed": self.seed}


def _check_data_format(data_format, name):
    data_format = data_format or "channels_last"
    if data_format not in ("channels_last", "channels_first"):
        raise ConfigError(f"data_format must be 'channels_last' or 'channels_first', got {data_format!r}", layer=name)
    return data_format


@register_layer()
class SpatialDropout1D(Dropout):
    """Dropout of whole channels of (N, steps, channels) inputs."""

    def __init__(self, rate, **kwargs):
        super().__init__(rate, **kwargs)

    def build(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"SpatialDropout1D expects a 3-D input, got shape {input_shape}")

    def _noise_shape(self, x):
        return (x.shape[0], 1, x.shape[2])


@register_layer()
class SpatialDropout2D(Dropout):
    """Dropout of whole feature maps of 4-D inputs.

    tf_keras leaves `data_format` out of the config (so does this class, to match it); it is kept on the layer.
    """

    def __init__(self, rate, data_format=None, **kwargs):
        super().__init__(rate, **kwargs)
        self.data_format = _check_data_format(data_format, self.name)

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(f"SpatialDropout2D expects a 4-D input, got shape {input_shape}")

    def _noise_shape(self, x):
        if self.data_format == "channels_first":
            return (x.shape[0], x.shape[1], 1, 1)
        return (x.shape[0], 1, 1, x.shape[3])


@register_layer()
class SpatialDropout3D(Dropout):
    """Dropout of whole feature volumes of 5-D inputs (`data_format` is not in the config, as in tf_keras)."""

    def __init__(self, rate, data_format=None, **kwargs):
        super().__init__(rate, **kwargs)
        self.data_format = _check_data_format(data_format, self.name)

    def build(self, input_shape):
        if len(input_shape) != 5:
            raise ValueError(f"SpatialDropout3D expects a 5-D input, got shape {input_shape}")

    def _noise_shape(self, x):
        if self.data_format == "channels_first":
            return (x.shape[0], x.shape[1], 1, 1, 1)
        return (x.shape[0], 1, 1, 1, x.shape[4])


@register_layer()
class GaussianNoise(_RandomLayer):
    """Adds zero-centred Gaussian noise of standard deviation `stddev` while training."""

    def __init__(self, stddev, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.stddev = stddev

    def call(self, inputs, training=False):
        x = np.asarray(inputs)
        if not training:
            return x
        return (x + noise.normal(x.shape, self._rng, 0.0, float(self.stddev), x.dtype, like=x)).astype(x.dtype,
                                                                                                  copy=False)

    def get_config(self):
        return {**super().get_config(), "stddev": self.stddev, "seed": self.seed}


@register_layer()
class GaussianDropout(_RandomLayer):
    """Multiplies by Gaussian noise of mean 1 and standard deviation sqrt(rate / (1 - rate)) while training."""

    def __init__(self, rate, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.rate = rate

    def call(self, inputs, training=False):
        x = np.asarray(inputs)
        if not training or not 0 < self.rate < 1:
            return x
        stddev = float(np.sqrt(self.rate / (1.0 - self.rate)))
        return (x * noise.normal(x.shape, self._rng, 1.0, stddev, x.dtype, like=x)).astype(x.dtype, copy=False)

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


@register_layer()
class AlphaDropout(_RandomLayer):
    """Dropout that keeps the mean and variance of SELU activations: dropped units go to -alpha*scale,
    then an affine correction restores the statistics. tf_keras leaves `noise_shape` out of the config."""

    def __init__(self, rate, noise_shape=None, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.rate = rate
        self.noise_shape = noise_shape

    def call(self, inputs, training=False):
        x = np.asarray(inputs)
        if not training or not 0.0 < self.rate < 1.0:
            return x
        rate = float(self.rate)
        shape = noise.resolve_noise_shape(self.noise_shape, x.shape) if self.noise_shape else x.shape
        kept = (noise.uniform(shape, self._rng, like=x) >= rate).astype(x.dtype)
        alpha_p = -_SELU_ALPHA * _SELU_SCALE
        a = ((1 - rate) * (1 + rate * alpha_p**2)) ** -0.5
        b = -a * alpha_p * rate
        y = x * kept + alpha_p * (1 - kept)
        return (a * y + b).astype(x.dtype, copy=False)

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}
