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
from .gather import gather
from .join import concatenate
from .linalg import batch_dot, einsum, matmul, tensordot
from .nn import elu, erf, gelu, l2_normalize, log_softmax, relu, selu, sigmoid, softmax, softplus, softsign
from .pooling import avg_pool, global_avg_pool, global_max_pool, max_pool
from .reduce import (
    logsumexp,
    moments,
    reduce_all,
    reduce_any,
    reduce_max,
    reduce_mean,
    reduce_min,
    reduce_sum,
)
from .resize import resize, upsample
from .shapes import (
    crop,
    expand_dims,
    explicit_pads,
    output_length,
    pad,
    repeat,
    reshape,
    same_pads,
    spatial_axes,
    tile,
    transpose,
)

__all__ = [
    "OPS", "Op", "register", "unbroadcast",
    "conv", "conv_output_length", "conv_transpose",
    "abs", "add", "cast", "clip", "divide", "exp", "greater", "log", "maximum", "minimum", "multiply",
    "negative", "not_equal", "power", "rsqrt", "sign", "sqrt", "square", "subtract", "tanh", "where",
    "batch_dot", "concatenate", "einsum", "gather", "matmul", "tensordot",
    "logsumexp", "moments", "reduce_all", "reduce_any", "reduce_max", "reduce_mean", "reduce_min", "reduce_sum",
    "elu", "erf", "gelu", "l2_normalize", "log_softmax", "relu", "selu", "sigmoid", "softmax", "softplus",
    "softsign",
    "avg_pool", "global_avg_pool", "global_max_pool", "max_pool",
    "resize", "upsample",
    "crop", "expand_dims", "explicit_pads", "output_length", "pad", "repeat", "reshape", "same_pads",
    "spatial_axes", "tile", "transpose",
]
