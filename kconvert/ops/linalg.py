"""Matrix products."""

from __future__ import annotations

import numpy as np

from .base import Op, register, unbroadcast


@register
class MatMul(Op):
    """numpy.matmul semantics (batched, broadcast); ONNX MatMul has the same semantics."""

    name = "matmul"

    @staticmethod
    def forward(a, b):
        return np.matmul(a, b)

    @staticmethod
    def backward(grad, inputs, output):
        a, b = inputs
        if b.ndim == 1:
            ga = np.multiply.outer(grad, b)
            gb = np.tensordot(a, grad, axes=(list(range(a.ndim - 1)), list(range(grad.ndim))))
            return unbroadcast(ga, a.shape), gb
        if a.ndim == 1:
            ga = np.matmul(grad[..., None, :], np.swapaxes(b, -1, -2))[..., 0, :]
            gb = np.multiply.outer(a, grad) if grad.ndim == 1 else a[:, None] * grad[..., None, :]
            return unbroadcast(ga, a.shape), unbroadcast(gb, b.shape)
        ga = np.matmul(grad, np.swapaxes(b, -1, -2))
        gb = np.matmul(np.swapaxes(a, -1, -2), grad)
        return unbroadcast(ga, a.shape), unbroadcast(gb, b.shape)

    @staticmethod
    def to_onnx(builder, inputs):
        return builder.node("MatMul", inputs)


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Matrix product with numpy broadcasting over leading axes."""
    return MatMul.forward(a, b)


def tensordot(a: np.ndarray, b: np.ndarray, axes) -> np.ndarray:
    return np.tensordot(a, b, axes)


def einsum(subscripts: str, *operands: np.ndarray) -> np.ndarray:
    return np.einsum(subscripts, *operands, optimize=True)
