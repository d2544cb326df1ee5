"""Joining tensors: concatenation along an axis."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .base import Op, register


@register
class Concatenate(Op):
    """numpy.concatenate semantics; ONNX Concat has the same (negative axes included)."""

    name = "concatenate"

    @staticmethod
    def forward(*inputs, axis=-1):
        return np.concatenate([np.asarray(x) for x in inputs], axis=axis)

    @staticmethod
    def backward(grad, inputs, output, axis=-1):
        sizes = np.cumsum([np.shape(x)[axis] for x in inputs])[:-1]
        return tuple(np.split(grad, sizes, axis=axis))

    @staticmethod
    def to_onnx(builder, inputs, axis=-1):
        return builder.node("Concat", inputs, axis=int(axis))


def concatenate(inputs: Sequence[np.ndarray], axis: int = -1) -> np.ndarray:
    """Join arrays along `axis` (they must match on every other axis)."""
    return Concatenate.forward(*inputs, axis=axis)
