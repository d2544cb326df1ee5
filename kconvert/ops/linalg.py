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


def batch_dot(x: np.ndarray, y: np.ndarray, axes) -> np.ndarray:
    """Keras's `backend.batch_dot`: per-sample contraction of axis axes[0] of x with axis axes[1] of y.

    The result has shape (N, *x's other axes, *y's other axes); when both inputs are 2-D it is (N, 1).
    """
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim < 2 or y.ndim < 2:
        raise ValueError(f"batch_dot needs inputs of rank >= 2, got shapes {x.shape} and {y.shape}")
    if isinstance(axes, int):
        axes = (axes, axes)
    a0, a1 = (int(axes[0]) % x.ndim, int(axes[1]) % y.ndim)
    if a0 == 0 or a1 == 0:
        raise ValueError("cannot perform batch_dot over axis 0 (the batch axis)")
    if x.shape[0] != y.shape[0] or x.shape[a0] != y.shape[a1]:
        raise ValueError(f"batch_dot: shapes {x.shape} and {y.shape} do not match on axes {(a0, a1)}")
    xm = np.moveaxis(x, a0, -1)
    ym = np.moveaxis(y, a1, 1)
    n, k = x.shape[0], x.shape[a0]
    x_rest, y_rest = xm.shape[1:-1], ym.shape[2:]
    out = np.matmul(xm.reshape(n, -1, k), ym.reshape(n, k, -1))
    if x.ndim == 2 and y.ndim == 2:
        return out.reshape(n, 1)
    return out.reshape(n, *x_rest, *y_rest)
