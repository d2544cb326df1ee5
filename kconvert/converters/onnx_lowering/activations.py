"""ONNX emissions of the Keras activation functions, by name."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from ...layers import activations as keras_activations
from .context import LoweringContext
from .refs import TensorRef
from .registry import unsupported

EMITTERS: dict[str, Callable] = {}


def emits(*names: str):
    def deco(fn):
        for n in names:
            EMITTERS[n] = fn
        return fn
    return deco


def activation_name(fn) -> str | None:
    """The Keras name of an activation function object (hard_sigmoid's two versions are told apart)."""
    if fn is keras_activations._hard_sigmoid_keras2:
        return "hard_sigmoid_keras2"
    if fn is keras_activations._hard_sigmoid_keras3:
        return "hard_sigmoid_keras3"
    return keras_activations._NAME_OF.get(id(fn))


def apply_activation(ctx: LoweringContext, ref: TensorRef, fn, layer) -> TensorRef:
    """Emit `fn` (a layer's `_act`) on `ref`, in whatever layout `ref` has."""
    name = activation_name(fn)
    if name == "linear":
        return ref
    emitter = EMITTERS.get(name)
    if emitter is None:
        raise unsupported(layer, f"the activation {name or getattr(fn, '__name__', fn)!r}")
    if ref.flat_of is not None:
        ref = ctx.keras(ref)
    out = emitter(ctx, ref.name, ref)
    return TensorRef(out, ref.shape, ref.dtype, ref.perm, None, ref.mask)


def _unary(op_type: str, **attrs):
    return lambda ctx, x, ref: ctx.node(op_type, [x], **attrs)


for _name, _op in {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh", "softplus": "Softplus",
                   "softsign": "Softsign", "elu": "Elu", "selu": "Selu", "exponential": "Exp"}.items():
    EMITTERS[_name] = _unary(_op)
EMITTERS["leaky_relu"] = _unary("LeakyRelu", alpha=0.2)
EMITTERS["hard_sigmoid_keras2"] = _unary("HardSigmoid", alpha=0.2, beta=0.5)
EMITTERS["kconvert>HardSigmoidKeras2"] = EMITTERS["hard_sigmoid_keras2"]
EMITTERS["hard_sigmoid_keras3"] = _unary("HardSigmoid", alpha=1.0 / 6.0, beta=0.5)
EMITTERS["hard_silu"] = EMITTERS["hard_swish"] = _unary("HardSwish")
EMITTERS["celu"] = _unary("Celu", alpha=1.0)


def clip(ctx: LoweringContext, x: str, lo: float | None, hi: float | None) -> str:
    return ctx.node("Clip", [x, ctx.const(lo) if lo is not None else "", ctx.const(hi) if hi is not None else ""])


@emits("relu6")
def _relu6(ctx, x, ref):
    return clip(ctx, x, 0.0, 6.0)


@emits("hard_tanh")
def _hard_tanh(ctx, x, ref):
    return clip(ctx, x, -1.0, 1.0)


@emits("softmax")
def _softmax(ctx, x, ref):
    return ctx.node("Softmax", [x], axis=ref.physical_axis(-1))


@emits("log_softmax", "log_softmax_v2")
def _log_softmax(ctx, x, ref):
    return ctx.node("LogSoftmax", [x], axis=ref.physical_axis(-1))


@emits("swish", "silu")
def _swish(ctx, x, ref):
    return ctx.node("Mul", [x, ctx.node("Sigmoid", [x])])


@emits("mish")
def _mish(ctx, x, ref):
    if ctx.opset >= 18:
        return ctx.node("Mish", [x])
    return ctx.node("Mul", [x, ctx.node("Tanh", [ctx.node("Softplus", [x])])])


@emits("gelu")
def _gelu(ctx, x, ref):
    return gelu(ctx, x, approximate=False)


def gelu(ctx: LoweringContext, x: str, approximate: bool) -> str:
    """Gelu (opset 20) or its Erf / tanh form: 0.5 x (1 + erf(x / sqrt 2))."""
    if ctx.opset >= 20:
        return ctx.node("Gelu", [x], approximate="tanh" if approximate else "none")
    if approximate:  # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
        cube = ctx.node("Mul", [ctx.node("Mul", [x, x]), x])
        inner = ctx.node("Add", [x, ctx.node("Mul", [cube, ctx.const(0.044715)])])
        t = ctx.node("Tanh", [ctx.node("Mul", [inner, ctx.const(math.sqrt(2.0 / math.pi))])])
    else:
        t = ctx.node("Erf", [ctx.node("Mul", [x, ctx.const(1.0 / math.sqrt(2.0))])])
    half_x = ctx.node("Mul", [x, ctx.const(0.5)])
    return ctx.node("Mul", [half_x, ctx.node("Add", [t, ctx.const(1.0)])])


@emits("log_sigmoid")
def _log_sigmoid(ctx, x, ref):
    return ctx.node("Neg", [ctx.node("Softplus", [ctx.node("Neg", [x])])])


@emits("tanh_shrink")
def _tanh_shrink(ctx, x, ref):
    return ctx.node("Sub", [x, ctx.node("Tanh", [x])])


def relu_general(ctx: LoweringContext, x: str, negative_slope: float = 0.0, max_value: float | None = None,
                 threshold: float = 0.0) -> str:
    """Keras's relu: x where x > threshold (else 0), capped at max_value, minus slope * relu(threshold - x)."""
    negative_slope = float(negative_slope or 0.0)
    threshold = float(threshold or 0.0)
    if threshold == 0.0 and max_value is None and negative_slope != 0.0:
        return ctx.node("LeakyRelu", [x], alpha=negative_slope)
    if threshold == 0.0 and negative_slope == 0.0 and max_value is not None:  # relu6 and friends: one Clip
        return clip(ctx, x, 0.0, float(max_value))
    if threshold == 0.0:
        y = ctx.node("Relu", [x])
    else:
        t = ctx.const(threshold)
        y = ctx.node("Where", [ctx.node("Greater", [x, t]), x, ctx.const(0.0)])
    if max_value is not None:
        y = clip(ctx, y, 0.0, float(max_value))
    if negative_slope != 0.0:
        below = ctx.node("Relu", [ctx.node("Sub", [ctx.const(threshold), x])])
        y = ctx.node("Sub", [y, ctx.node("Mul", [below, ctx.const(negative_slope)])])
    return y


@emits("hard_shrink")
def _hard_shrink(ctx, x, ref):
    return ctx.node("Shrink", [x], lambd=0.5, bias=0.0)


@emits("soft_shrink")
def _soft_shrink(ctx, x, ref):
    return ctx.node("Shrink", [x], lambd=0.5, bias=0.5)


@emits("sparse_sigmoid")
def _sparse_sigmoid(ctx, x, ref):  # 0 below -1, 1 above 1, (x + 1) / 2 between
    return clip(ctx, ctx.node("Mul", [ctx.node("Add", [x, ctx.const(1.0)]), ctx.const(0.5)]), 0.0, 1.0)


@emits("sparse_plus")
def _sparse_plus(ctx, x, ref):  # 0 below -1, x above 1, (x + 1)^2 / 4 between
    shifted = ctx.node("Add", [x, ctx.const(1.0)])
    middle = ctx.node("Mul", [ctx.node("Mul", [shifted, shifted]), ctx.const(0.25)])
    upper = ctx.node("Where", [ctx.node("GreaterOrEqual", [x, ctx.const(1.0)]), x, middle])
    return ctx.node("Where", [ctx.node("LessOrEqual", [x, ctx.const(-1.0)]), ctx.const(0.0), upper])


@emits("squareplus")
def _squareplus(ctx, x, ref):  # (x + sqrt(x^2 + 4)) / 2
    root = ctx.node("Sqrt", [ctx.node("Add", [ctx.node("Mul", [x, x]), ctx.const(4.0)])])
    return ctx.node("Mul", [ctx.node("Add", [x, root]), ctx.const(0.5)])


@emits("glu")
def _glu(ctx, x, ref):  # a * sigmoid(b) with a, b the two halves of the last axis
    axis = ref.physical_axis(-1)
    half = ref.shape[-1] // 2
    a = ctx.node("Slice", [x, ctx.ints([0]), ctx.ints([half]), ctx.ints([axis])])
    b = ctx.node("Slice", [x, ctx.ints([half]), ctx.ints([2 * half]), ctx.ints([axis])])
    return ctx.node("Mul", [a, ctx.node("Sigmoid", [b])])


@emits("sparsemax")
def _sparsemax(ctx, x, ref):
    """Keras 3's sparsemax: tau = (sum of the cumulative sums over the support - 1) / k (see layers.activations)."""
    axis = ref.physical_axis(-1)
    n = ref.shape[-1]
    zs = ctx.node("TopK", [x, ctx.ints([n], "k")], n_outputs=2, axis=axis, largest=1, sorted=1)[0]
    cum = ctx.node("CumSum", [zs, ctx.const(axis, "axis", dtype=np.int64)])
    shape = [1] * ref.ndim
    shape[axis] = n
    r = ctx.const(np.arange(1, n + 1, dtype=np.float32).reshape(shape), "r")
    support = ctx.node("Greater", [ctx.node("Sub", [zs, ctx.node("Div", [ctx.node("Sub", [cum, ctx.const(1.0)]), r])]),
                                   ctx.const(0.0)])
    k = ctx.node("ReduceSum", [ctx.node("Cast", [support], to=1), ctx.ints([axis], "axes")], keepdims=1)
    total = ctx.node("ReduceSum", [ctx.node("Where", [support, cum, ctx.const(0.0)]), ctx.ints([axis], "axes")],
                     keepdims=1)
    tau = ctx.node("Div", [ctx.node("Sub", [total, ctx.const(1.0)]), k])
    return ctx.node("Relu", [ctx.node("Sub", [x, tau])])
