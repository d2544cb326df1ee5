"""Indexing ops: gathering rows of a table by integer ids (embedding lookup)."""

from __future__ import annotations

import numpy as np

from .array_module import add_at
from .base import Op, register, traceable


@register
class Gather(Op):
    """`params[indices]` along axis 0 (tf.gather / ONNX Gather with axis=0); ids must be in range."""

    name = "gather"

    @staticmethod
    def forward(params, indices):
        params = np.asarray(params)
        idx = np.asarray(indices)
        if not np.issubdtype(idx.dtype, np.integer):
            idx = idx.astype(np.int64)
        n = params.shape[0]
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            bad = idx[(idx < 0) | (idx >= n)].ravel()[0]
            raise IndexError(f"index {int(bad)} is out of range [0, {n})")
        return np.take(params, idx, axis=0)

    @staticmethod
    def backward(grad, inputs, output):
        params, indices = inputs
        g = np.zeros_like(np.asarray(params))
        idx = np.asarray(indices).astype(np.int64).ravel()
        add_at(g, idx, grad.reshape(idx.size, *g.shape[1:]))
        return g, None

    @staticmethod
    def to_onnx(builder, inputs):
        return builder.node("Gather", inputs, axis=0)


@traceable
def gather(params: np.ndarray, indices) -> np.ndarray:
    """Rows of `params` picked by integer `indices`; the output shape is indices.shape + params.shape[1:]."""
    return Gather.forward(params, indices)
