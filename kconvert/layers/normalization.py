"""BatchNormalization, LayerNormalization, GroupNormalization and UnitNormalization."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import ops
from ..errors import ConfigError
from .base import Layer, register_layer
from .config_objects import weight_args_config


def _validate_axis(axis, input_shape) -> list[int]:
    """tf_keras's `validate_axis`: a list of non-negative axes, checked against the rank."""
    rank = len(input_shape)
    axes = [axis] if isinstance(axis, int) else list(axis)
    axes = [int(a) + rank if int(a) < 0 else int(a) for a in axes]
    for a in axes:
        if not 0 <= a < rank:
            raise ValueError(f"invalid axis {tuple(axes)} for an input of rank {rank}")
    if len(set(axes)) != len(axes):
        raise ValueError(f"duplicate axis: {tuple(axes)}")
    return axes


def _check_axis_arg(axis, name):
    if isinstance(axis, (list, tuple)):
        return list(axis) if isinstance(axis, list) else axis
    if isinstance(axis, (int, np.integer)) and not isinstance(axis, bool):
        return int(axis)
    raise ConfigError(f"expected an int or a list/tuple of ints for the argument 'axis', got {axis!r}", layer=name)


def _normalize(x, mean, variance, gamma, beta, epsilon):
    """tf.nn.batch_normalization: x * inv + (beta - mean * inv) with inv = gamma / sqrt(variance + epsilon)."""
    inv = ops.rsqrt(variance + variance.dtype.type(epsilon))
    if gamma is not None:
        inv = inv * gamma
    shift = -mean * inv if beta is None else beta - mean * inv
    return (x * inv + shift).astype(x.dtype, copy=False)


@register_layer()
class BatchNormalization(Layer):
    """Normalizes over every axis but `axis` with moving statistics (inference) or batch statistics (training).

    `training=True` also updates the moving mean and variance:
    `moving = moving * momentum + batch_stat * (1 - momentum)` (biased batch variance, as tf_keras).
    A non-trainable layer (`trainable=False`) always runs in inference mode, as in tf_keras 2.
    """

    supports_masking = True

    def __init__(self, axis=-1, momentum=0.99, epsilon=1e-3, center=True, scale=True,
                 beta_initializer: Any = "zeros", gamma_initializer: Any = "ones",
                 moving_mean_initializer: Any = "zeros", moving_variance_initializer: Any = "ones",
                 beta_regularizer=None, gamma_regularizer=None, beta_constraint=None, gamma_constraint=None,
                 renorm=False, renorm_clipping=None, renorm_momentum=0.99, fused=None, trainable=True,
                 virtual_batch_size=None, adjustment=None, name=None, synchronized=False, **kwargs):
        super().__init__(name=name, trainable=trainable, **kwargs)
        self.axis = _check_axis_arg(axis, self.name)
        self.momentum = momentum
        self.epsilon = epsilon
        self.center = bool(center)
        self.scale = bool(scale)
        self.beta_initializer = beta_initializer
        self.gamma_initializer = gamma_initializer
        self.moving_mean_initializer = moving_mean_initializer
        self.moving_variance_initializer = moving_variance_initializer
        self.beta_regularizer = beta_regularizer
        self.gamma_regularizer = gamma_regularizer
        self.beta_constraint = beta_constraint
        self.gamma_constraint = gamma_constraint
        self.renorm = bool(renorm)
        if self.renorm:
            renorm_clipping = renorm_clipping or {}
            unknown = set(renorm_clipping) - {"rmax", "rmin", "dmax"}
            if unknown:
                raise ConfigError(f"invalid keys for renorm_clipping: {sorted(unknown)}", layer=self.name)
        self.renorm_clipping = renorm_clipping
        self.renorm_momentum = renorm_momentum
        self.fused = fused
        if virtual_batch_size is not None and int(virtual_batch_size) <= 0:
            raise ConfigError(f"virtual_batch_size must be a positive integer, got {virtual_batch_size}",
                              layer=self.name)
        self.virtual_batch_size = virtual_batch_size
        self.adjustment = adjustment
        self.synchronized = bool(synchronized)
        self.gamma = self.beta = None
        # tf_keras's choice of its fused kernel, which changes how training updates the moving variance
        axes = [self.axis] if isinstance(self.axis, int) else list(self.axis)
        can_fuse = (not self.renorm and len(axes) == 1 and axes[0] in (-4, -3, -1, 1, 3, 4)
                    and virtual_batch_size is None and adjustment is None)
        if self.synchronized or (fused is None and not can_fuse) or self._keras_major >= 3:
            fused = False  # Keras 3 has no fused kernel: its moving variance takes the uncorrected batch variance
        self._fused = fused

    def build(self, input_shape):
        self._axes = _validate_axis(self.axis, input_shape)
        dims = {a: input_shape[a] for a in self._axes}
        if any(d is None for d in dims.values()):
            raise ValueError(f"the normalized axis {tuple(self.axis)} of the input must be known")
        rank = len(input_shape)
        if len(dims) == 1 and self.virtual_batch_size is None:
            param_shape = [next(iter(dims.values()))]
        else:
            param_shape = [dims.get(i, 1) for i in range(rank)]
        # as tf_keras, the config then names the axes built (non-negative; shifted by one with ghost batches)
        self.axis = list(self._axes)
        if self.virtual_batch_size is not None:
            param_shape.insert(1, 1)  # tf_keras keeps the ghost-batch axis in the weights
            self.axis = [a + 1 for a in self._axes]
        self._param_shape = tuple(param_shape)
        self._rank = rank
        if self._fused is None:
            self._fused = rank in (4, 5)
        if self._fused and self._axes not in ([1], [rank - 1]):
            self._fused = False
        if self.scale:
            self.gamma = self.add_weight("gamma", param_shape, self.gamma_initializer)
        if self.center:
            self.beta = self.add_weight("beta", param_shape, self.beta_initializer)
        self.moving_mean = self.add_weight("moving_mean", param_shape, self.moving_mean_initializer, trainable=False)
        self.moving_variance = self.add_weight("moving_variance", param_shape, self.moving_variance_initializer,
                                               trainable=False)
        if self.renorm:
            std = np.sqrt(self.moving_variance.value)
            self.moving_stddev = self.add_weight("moving_stddev", param_shape, lambda s, d: std, trainable=False)
            self.renorm_mean = self.add_weight("renorm_mean", param_shape, self.moving_mean_initializer,
                                               trainable=False)
            self.renorm_stddev = self.add_weight("renorm_stddev", param_shape, lambda s, d: std, trainable=False)

    def _broadcast(self, v):
        """A parameter reshaped to broadcast against the input."""
        if v is None:
            return None
        if v.ndim == 1:
            shape = [1] * self._rank
            shape[self._axes[0]] = -1
            return v.reshape(shape)
        if self.virtual_batch_size is not None:
            return v.reshape(v.shape[:1] + v.shape[2:])  # drop the ghost-batch axis (size 1)
        return v

    def call(self, inputs, training=False):
        x = np.asarray(inputs)
        gamma = self._broadcast(self.gamma.value if self.gamma is not None else None)
        beta = self._broadcast(self.beta.value if self.beta is not None else None)
        if not training or not self.trainable:
            return _normalize(x, self._broadcast(self.moving_mean.value), self._broadcast(self.moving_variance.value),
                              gamma, beta, self.epsilon)
        if self.renorm or self.virtual_batch_size is not None or self.adjustment is not None:
            raise NotImplementedError("training BatchNormalization with renorm, virtual_batch_size or adjustment "
                                      "is not supported")
        reduce_axes = [i for i in range(x.ndim) if i not in self._axes]
        mean, variance = ops.moments(x, reduce_axes, keepdims=True)
        m = np.float32(self.momentum)
        shape = self.moving_mean.shape
        self.moving_mean.assign(self.moving_mean.value * m + mean.reshape(shape) * (1 - m))
        # tf_keras's fused kernel (4-D/5-D inputs normalized on axis 1 or the last) moves the moving variance
        # towards the unbiased batch variance; its other path uses the biased one (which also normalizes)
        n = x.size // max(variance.size, 1)
        moved = variance * np.float32(n / (n - 1)) if self._fused and n > 1 else variance
        self.moving_variance.assign(self.moving_variance.value * m + moved.reshape(shape) * (1 - m))
        return _normalize(x, mean, variance, gamma, beta, self.epsilon)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = {"axis": self.axis, "momentum": self.momentum, "epsilon": self.epsilon, "center": self.center,
                  "scale": self.scale,
                  **weight_args_config(self, ("beta", "gamma"),
                                       extra_initializers=("moving_mean", "moving_variance"))}
        if self.renorm:
            config.update(renorm=True, renorm_clipping=self.renorm_clipping, renorm_momentum=self.renorm_momentum)
        if self.virtual_batch_size is not None:
            config["virtual_batch_size"] = self.virtual_batch_size
        return {**super().get_config(), **config}


@register_layer()
class LayerNormalization(Layer):
    """Normalizes each sample over `axis` with its own mean and variance, then scales by gamma and shifts by beta.

    Keras 3's deprecated `rms_scaling=True` is accepted too: x / sqrt(var(x) + epsilon) * gamma, no beta weight.
    """

    supports_masking = True

    def __init__(self, axis=-1, epsilon=1e-3, center=True, scale=True, beta_initializer: Any = "zeros",
                 gamma_initializer: Any = "ones", beta_regularizer=None, gamma_regularizer=None,
                 beta_constraint=None, gamma_constraint=None, rms_scaling=False, **kwargs):
        super().__init__(**kwargs)
        self.axis = list(axis) if isinstance(axis, (list, tuple)) else _check_axis_arg(axis, self.name)
        self.epsilon = epsilon
        self.center = bool(center)
        self.scale = bool(scale)
        self.rms_scaling = bool(rms_scaling)
        self.beta_initializer = beta_initializer
        self.gamma_initializer = gamma_initializer
        self.beta_regularizer = beta_regularizer
        self.gamma_regularizer = gamma_regularizer
        self.beta_constraint = beta_constraint
        self.gamma_constraint = gamma_constraint
        self.gamma = self.beta = None

    def build(self, input_shape):
        self.axis = _validate_axis(self.axis, input_shape)
        param_shape = [input_shape[a] for a in self.axis]
        if any(d is None for d in param_shape):
            raise ValueError(f"the normalized axis {tuple(self.axis)} of the input must be known")
        self._rank = len(input_shape)
        if self.scale or self.rms_scaling:
            self.gamma = self.add_weight("gamma", param_shape, self.gamma_initializer)
        if self.center and not self.rms_scaling:
            self.beta = self.add_weight("beta", param_shape, self.beta_initializer)

    def _broadcast(self, v, input_shape):
        # tf_keras reshapes (it does not transpose) the parameters into the input's rank
        if v is None:
            return None
        if v.ndim != self._rank and self.axis != [self._rank - 1]:
            shape = [1] * self._rank
            for a in self.axis:
                shape[a] = input_shape[a]
            return v.reshape(shape)
        return v

    def call(self, inputs):
        x = np.asarray(inputs)
        gamma = self._broadcast(self.gamma.value if self.gamma is not None else None, x.shape)
        beta = self._broadcast(self.beta.value if self.beta is not None else None, x.shape)
        if self.rms_scaling:  # Keras 3 divides by sqrt(variance + epsilon) here (not by the RMS), and has no beta
            _, variance = ops.moments(x, self.axis, keepdims=True)
            y = x * ops.rsqrt(variance + x.dtype.type(self.epsilon))
            return (y * gamma if gamma is not None else y).astype(x.dtype, copy=False)
        mean, variance = ops.moments(x, self.axis, keepdims=True)
        return _normalize(x, mean, variance, gamma, beta, self.epsilon)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = {"axis": self.axis, "epsilon": self.epsilon, "center": self.center, "scale": self.scale,
                  **weight_args_config(self, ("beta", "gamma"))}
        if self.rms_scaling:
            config["rms_scaling"] = True
        return {**super().get_config(), **config}


@register_layer()
class GroupNormalization(Layer):
    """Normalizes each sample over groups of channels along `axis` (groups=-1: one group per channel).

    A Keras mask weights the group statistics as tf.keras's `tf.nn.weighted_moments` does.
    """

    supports_masking = True

    def __init__(self, groups: int = 32, axis: int = -1, epsilon: float = 1e-3, center: bool = True,
                 scale: bool = True, beta_initializer: Any = "zeros", gamma_initializer: Any = "ones",
                 beta_regularizer=None, gamma_regularizer=None, beta_constraint=None, gamma_constraint=None,
                 **kwargs):
        super().__init__(**kwargs)
        self.groups = int(groups)
        if isinstance(axis, (list, tuple)) or isinstance(axis, bool):
            raise ConfigError(f"GroupNormalization takes a single integer axis, got {axis!r}", layer=self.name)
        self.axis = int(axis)
        self.epsilon = epsilon
        self.center = bool(center)
        self.scale = bool(scale)
        self.beta_initializer = beta_initializer
        self.gamma_initializer = gamma_initializer
        self.beta_regularizer = beta_regularizer
        self.gamma_regularizer = gamma_regularizer
        self.beta_constraint = beta_constraint
        self.gamma_constraint = gamma_constraint
        self.gamma = self.beta = None

    def build(self, input_shape):
        _validate_axis(self.axis, input_shape)
        dim = input_shape[self.axis]
        if dim is None:
            raise ValueError(f"axis {self.axis} of the input must have a known size, got shape {input_shape}")
        if self.groups == -1:
            self.groups = dim
        if dim < self.groups:
            raise ValueError(f"the number of groups ({self.groups}) cannot be more than the channels ({dim})")
        if dim % self.groups != 0:
            raise ValueError(f"the number of groups ({self.groups}) must divide the channels ({dim})")
        if self.scale:
            self.gamma = self.add_weight("gamma", (dim,), self.gamma_initializer)
        if self.center:
            self.beta = self.add_weight("beta", (dim,), self.beta_initializer)

    def _grouped(self, shape) -> list:
        """tf.keras's reshape into groups: the group axis is inserted before `axis`."""
        g = list(shape)
        g[self.axis] = shape[self.axis] // self.groups
        g.insert(self.axis, self.groups)
        return g

    def call(self, inputs, mask=None):
        x = np.asarray(inputs)
        xg = x.reshape(self._grouped(x.shape))
        axes = list(range(1, xg.ndim))
        axes.pop(self.axis - 1)
        axes = tuple(axes)
        if mask is None:
            mean, variance = ops.moments(xg, axes, keepdims=True)
        else:  # tf.nn.weighted_moments with the broadcast mask as frequency weights
            w = np.broadcast_to(np.asarray(mask, x.dtype), x.shape).reshape(xg.shape)
            total = np.sum(w, axis=axes, keepdims=True)
            with np.errstate(divide="ignore", invalid="ignore"):
                mean = np.where(total > 0, np.sum(w * xg, axis=axes, keepdims=True) / total, 0).astype(x.dtype)
                variance = np.where(total > 0, np.sum(w * np.square(xg - mean), axis=axes, keepdims=True) / total,
                                    0).astype(x.dtype)
        shape = self._grouped([x.shape[i] if i == self.axis % x.ndim else 1 for i in range(x.ndim)])
        gamma = self.gamma.value.reshape(shape) if self.gamma is not None else None
        beta = self.beta.value.reshape(shape) if self.beta is not None else None
        return _normalize(xg, mean, variance, gamma, beta, self.epsilon).reshape(x.shape)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "groups": self.groups, "axis": self.axis, "epsilon": self.epsilon,
                "center": self.center, "scale": self.scale, **weight_args_config(self, ("beta", "gamma"))}


@register_layer()
class UnitNormalization(Layer):
    """Scales each sample to unit L2 norm over `axis`: x / sqrt(max(sum(x ** 2), 1e-12))."""

    supports_masking = True

    def __init__(self, axis=-1, **kwargs):
        super().__init__(**kwargs)
        if isinstance(axis, (list, tuple)):
            self.axis = list(axis)
        elif isinstance(axis, (int, np.integer)) and not isinstance(axis, bool):
            self.axis = int(axis)
        else:
            raise ConfigError(f"invalid axis {axis!r}: expected an int or a list/tuple of ints", layer=self.name)

    def build(self, input_shape):
        _validate_axis(self.axis, input_shape)

    def call(self, inputs):
        x = np.asarray(inputs)
        axes = tuple(self.axis) if isinstance(self.axis, list) else self.axis
        sq = np.sum(np.square(x), axis=axes, keepdims=True)
        return (x * ops.rsqrt(np.maximum(sq, np.asarray(1e-12, x.dtype)))).astype(x.dtype, copy=False)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}
