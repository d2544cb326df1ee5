"""Elementwise arithmetic with numpy broadcasting."""

from __future__ import annotations

import numpy as np

from .base import Op, register, unbroadcast


@register
class Add(Op):
    name = "add"

    @staticmethod
    def forward(a, b):
        return np.add(a, b)

    @staticmethod
    def backward(grad, inputs, output):
        a, b = inputs
        return unbroadcast(grad, np.shape(a)), unbroadcast(grad, np.shape(b))

    @staticmethod
    def to_onnx(builder, inputs):
        return builder.node("Add", inputs)


def add(a, b):
    """a + b, broadcasting."""
    return Add.forward(a, b)


def subtract(a, b):
    return np.subtract(a, b)


def multiply(a, b):
    return np.multiply(a, b)


def divide(a, b):
    return np.divide(a, b)


def maximum(a, b):
    return np.maximum(a, b)


def minimum(a, b):
    return np.minimum(a, b)


def negative(x):
    return np.negative(x)


def power(x, p):
    return np.power(x, p)


def square(x):
    return np.square(x)


def sqrt(x):
    return np.sqrt(x)


def rsqrt(x):
    return 1.0 / np.sqrt(x)


def exp(x):
    return np.exp(x)


def log(x):
    return np.log(x)


def abs(x):  # noqa: A001 - mirrors keras.ops.abs
    return np.abs(x)


def sign(x):
    return np.sign(x)


def tanh(x):
    return np.tanh(x)


def clip(x, lo, hi):
    return np.clip(x, lo, hi)


def where(cond, a, b):
    return np.where(cond, a, b)


def cast(x, dtype):
    return np.asarray(x).astype(dtype, copy=False)


def greater(a, b):
    return np.greater(a, b)


def not_equal(a, b):
    return np.not_equal(a, b)
