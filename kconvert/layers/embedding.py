"""Embedding: integer ids to rows of a learned table."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import ops
from ..errors import ConfigError, KConvertError
from .base import Layer, register_layer
from .config_objects import weight_args_config


@register_layer()
class Embedding(Layer):
    """Looks up `embeddings[ids]`: (N, *ids) integers -> (N, *ids, output_dim) float32.

    With `mask_zero=True` id 0 is padding and `compute_mask` returns `ids != 0`. Like tf_keras, the
    config always carries a `batch_input_shape` ((None, input_length)).
    """

    def __init__(self, input_dim, output_dim, embeddings_initializer: Any = "uniform",
                 embeddings_regularizer=None, activity_regularizer=None, embeddings_constraint=None,
                 mask_zero=False, input_length=None, sparse=False, **kwargs):
        if "input_shape" not in kwargs:
            kwargs["input_shape"] = (input_length,) if input_length else (None,)
        kwargs.pop("autocast", None)
        kwargs.pop("use_one_hot_matmul", None)
        # Keras 3 writes these (None unless the layer is quantized or has LoRA weights)
        keras3_extras = {k: kwargs.pop(k) for k in ("quantization_config", "lora_rank", "lora_alpha") if k in kwargs}
        if any(v for v in keras3_extras.values()):
            raise ConfigError(f"Embedding with {sorted(k for k, v in keras3_extras.items() if v)} (quantized or LoRA, "
                              "Keras 3) is not supported", layer=kwargs.get("name"))
        super().__init__(**kwargs)
        if isinstance(input_dim, dict) or isinstance(output_dim, dict):
            raise ConfigError("Embedding input_dim/output_dim must be integers", layer=self.name)
        if input_dim <= 0 or output_dim <= 0:
            raise ConfigError(f"both input_dim and output_dim should be positive, got {input_dim} and {output_dim}",
                              layer=self.name)
        if sparse and mask_zero:
            raise ConfigError("mask_zero cannot be enabled together with sparse", layer=self.name)
        self.input_dim = int(input_dim)
        self.output_dim = int(output_dim)
        self.embeddings_initializer = embeddings_initializer
        self.embeddings_regularizer = embeddings_regularizer
        self.activity_regularizer = activity_regularizer
        self.embeddings_constraint = embeddings_constraint
        self.mask_zero = bool(mask_zero)
        self.supports_masking = self.mask_zero
        self.input_length = input_length
        self.sparse = bool(sparse)

    def build(self, input_shape):
        self.embeddings = self.add_weight("embeddings", (self.input_dim, self.output_dim),
                                          self.embeddings_initializer)

    def call(self, inputs):
        ids = np.asarray(inputs)
        if not np.issubdtype(ids.dtype, np.integer):
            ids = ids.astype(np.int32)  # tf_keras casts float ids to int32 (truncation)
        try:
            return ops.gather(self.embeddings.value, ids)
        except IndexError as e:
            raise KConvertError(f"Embedding ids must be in [0, {self.input_dim}): {e}", layer=self.name) from e

    def compute_mask(self, inputs, mask=None):
        if not self.mask_zero:
            return None
        return np.not_equal(np.asarray(inputs), 0)

    def compute_output_dtype(self, input_dtypes):
        return self.dtype  # float32 whatever the integer type of the ids

    def compute_output_shape(self, input_shape):
        input_shape = tuple(input_shape)
        if self.input_length is None:
            return (*input_shape, self.output_dim)
        in_lens = list(self.input_length) if isinstance(self.input_length, (list, tuple)) else [self.input_length]
        if len(in_lens) != len(input_shape) - 1:
            raise ValueError(f"input_length is {self.input_length}, but the input has shape {input_shape}")
        for i, (s1, s2) in enumerate(zip(in_lens, input_shape[1:])):
            if s1 is not None and s2 is not None and s1 != s2:
                raise ValueError(f"input_length is {self.input_length}, but the input has shape {input_shape}")
            if s1 is None:
                in_lens[i] = s2
        return (input_shape[0], *in_lens, self.output_dim)

    def compute_output_layout(self, input_layouts, output_shape):
        return None

    def get_config(self):
        return {**super().get_config(), "input_dim": self.input_dim, "output_dim": self.output_dim,
                **weight_args_config(self, ("embeddings",), activity=True),
                "mask_zero": self.mask_zero, "input_length": self.input_length}
