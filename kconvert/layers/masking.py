"""Masking: marks timesteps whose features all equal `mask_value` as padding."""

from __future__ import annotations

import numpy as np

from .. import ops
from ..ops.array_module import const
from .base import Layer, register_layer


@register_layer()
class Masking(Layer):
    """output = inputs * any(inputs != mask_value, axis=-1, keepdims=True); the mask is that boolean, (N, T)."""

    supports_masking = True

    def __init__(self, mask_value=0.0, **kwargs):
        super().__init__(**kwargs)
        self.mask_value = mask_value

    def _keep(self, x: np.ndarray, keepdims: bool) -> np.ndarray:
        return ops.reduce_any(ops.not_equal(x, const(self.mask_value, x.dtype, like=x)), axis=-1, keepdims=keepdims)

    def call(self, inputs):
        x = np.asarray(inputs)
        return (x * self._keep(x, True).astype(x.dtype)).astype(x.dtype, copy=False)

    def compute_mask(self, inputs, mask=None):
        return self._keep(np.asarray(inputs), False)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mask_value": self.mask_value}
