"""Primitive tensor operations the layers are written against.

Each op is a numpy kernel; registered ops (see `base.OPS`) also carry a gradient and an ONNX emission.
"""

from .base import OPS, Op, register, unbroadcast
from .conv import conv, conv_output_length, conv_transpose
from .elementwise import (
    abs,
    add,
    cast,
    clip,
    divide,
    exp,
    greater,
    log,
    maximum,
    minimum,
    multiply,
    negative,
    not_equal,
    power,
    rsqrt,
    sign,
    sqrt,
    square,
    subtract,
    tanh,
    where,
)
from .linalg import einsum, matmul, tensordot
from .nn import elu, erf, gelu, l2_normalize, log_softmax, relu, selu, sigmoid, softmax, softplus, softsign

__all__ = [
    "OPS", "Op", "register", "unbroadcast",
    "conv", "conv_output_length", "conv_transpose",
    "abs", "add", "cast", "clip", "divide", "exp", "greater", "log", "maximum", "minimum", "multiply",
    "negative", "not_equal", "power", "rsqrt", "sign", "sqrt", "square", "subtract", "tanh", "where",
    "einsum", "matmul", "tensordot",
    "elu", "erf", "gelu", "l2_normalize", "log_softmax", "relu", "selu", "sigmoid", "softmax", "softplus",
    "softsign",
]
