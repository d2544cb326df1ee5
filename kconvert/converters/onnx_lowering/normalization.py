"""Lowerings of BatchNormalization (native where the channel is ONNX axis 1), LayerNormalization,
UnitNormalization and GroupNormalization."""

from __future__ import annotations

import numpy as np

from .context import LoweringContext
from .core import elementwise_input, same_layout
from .refs import TensorRef
from .registry import lowers, unsupported
from .wrappers import shape_slice


def _bn_params(layer):
    c = layer.moving_mean.value.size
    gamma = layer.gamma.value if layer.gamma is not None else np.ones(c, np.float32)
    beta = layer.beta.value if layer.beta is not None else np.zeros(c, np.float32)
    return gamma.reshape(-1), beta.reshape(-1), layer.moving_mean.value.reshape(-1), \
        layer.moving_variance.value.reshape(-1)


@lowers("BatchNormalization")
def batch_norm(ctx: LoweringContext, layer, ins, node):
    x = elementwise_input(ctx, ins[0])
    axes = list(getattr(layer, "_axes", None) or [])
    if len(axes) != 1 or getattr(layer, "renorm", False) or getattr(layer, "virtual_batch_size", None):
        raise unsupported(layer, "normalization over several axes, renorm or virtual_batch_size")
    gamma, beta, mean, var = _bn_params(layer)
    axis = x.physical_axis(axes[0])
    if axis == 1 and x.ndim >= 2:
        y = ctx.node("BatchNormalization", [x.name, ctx.const(gamma, "gamma"), ctx.const(beta, "beta"),
                                            ctx.const(mean, "mean"), ctx.const(var, "var")],
                     epsilon=float(layer.epsilon))
        return [same_layout(x, y)]
    # channel not on axis 1 (e.g. a channels_last sequence): one multiply-add with the folded constants
    scale = gamma / np.sqrt(var.astype(np.float64) + layer.epsilon)
    shift = beta - mean * scale
    shape = [1] * x.ndim
    shape[axis] = -1
    y = ctx.node("Add", [ctx.node("Mul", [x.name, ctx.const(scale.reshape(shape), "scale")]),
                         ctx.const(shift.reshape(shape), "shift")])
    return [same_layout(x, y)]


def _broadcast_param(value: np.ndarray, ref: TensorRef, axes: list[int]) -> np.ndarray:
    """A parameter over Keras axes `axes`, shaped to broadcast against `ref`'s physical layout."""
    shape = [1] * ref.ndim
    for a in axes:
        shape[a] = ref.shape[a]
    full = value.reshape(shape)
    return np.transpose(full, ref.perm) if ref.perm else full


@lowers("LayerNormalization")
def layer_norm(ctx: LoweringContext, layer, ins, node):
    x = elementwise_input(ctx, ins[0])
    axes = sorted(a % x.ndim for a in layer.axis)
    phys = sorted(x.physical_axis(a) for a in axes)
    gamma = layer.gamma.value if layer.gamma is not None else None
    beta = layer.beta.value if layer.beta is not None else None
    trailing = phys == list(range(x.ndim - len(phys), x.ndim))
    if (ctx.opset >= 17 and trailing and not layer.rms_scaling and
            (len(axes) == 1 or x.perm is None)):
        norm_shape = [x.physical_shape()[a] for a in phys]
        g = np.ones(norm_shape, np.float32) if gamma is None else gamma
        inputs = [x.name, ctx.const(np.reshape(g, norm_shape), "gamma")]
        if beta is not None:
            inputs.append(ctx.const(np.reshape(beta, norm_shape), "beta"))
        y = ctx.node("LayerNormalization", inputs, axis=phys[0], epsilon=float(layer.epsilon))
        return [same_layout(x, y)]
    # opset < 17 (or non-trailing axes): the moments form, as Keras computes it
    mean = _reduce_mean(ctx, x.name, phys)
    centered = ctx.node("Sub", [x.name, mean])
    var = _reduce_mean(ctx, ctx.node("Mul", [centered, centered]), phys)
    inv = ctx.node("Reciprocal", [ctx.node("Sqrt", [ctx.node("Add", [var, ctx.const(float(layer.epsilon))])])])
    y = ctx.node("Mul", [x.name if layer.rms_scaling else centered, inv])
    if gamma is not None:
        y = ctx.node("Mul", [y, ctx.const(_broadcast_param(gamma, x, axes), "gamma")])
    if beta is not None:
        y = ctx.node("Add", [y, ctx.const(_broadcast_param(beta, x, axes), "beta")])
    return [same_layout(x, y)]


def _reduce_mean(ctx: LoweringContext, x: str, axes: list[int]) -> str:
    if ctx.opset >= 18:
        return ctx.node("ReduceMean", [x, ctx.ints(axes, "axes")], keepdims=1)
    return ctx.node("ReduceMean", [x], axes=list(axes), keepdims=1)


@lowers("UnitNormalization")
def unit_norm(ctx: LoweringContext, layer, ins, node):
    """x / sqrt(max(sum(x^2), 1e-12)) over the layer's axes."""
    x = elementwise_input(ctx, ins[0])
    axes = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
    phys = sorted(x.physical_axis(a) for a in axes)
    sq = ctx.node("Mul", [x.name, x.name])
    total = (ctx.node("ReduceSum", [sq, ctx.ints(phys, "axes")], keepdims=1))
    denom = ctx.node("Sqrt", [ctx.node("Max", [total, ctx.const(1e-12)])])
    return [same_layout(x, ctx.node("Div", [x.name, denom]))]


@lowers("GroupNormalization")
def group_norm(ctx, layer, ins, node):
    """Native GroupNormalization (opset 21, channels on ONNX axis 1), else the grouped moments as Keras computes."""
    x = elementwise_input(ctx, ins[0])
    axis = layer.axis % x.ndim
    pa = x.physical_axis(axis)
    channels, groups = x.shape[axis], layer.groups
    if pa == 0 or channels is None:
        raise unsupported(layer, f"normalizing over axis {layer.axis}")
    gamma = layer.gamma.value if layer.gamma is not None else None
    beta = layer.beta.value if layer.beta is not None else None
    if ctx.opset >= 21 and pa == 1:
        scale = np.ones(channels, np.float32) if gamma is None else gamma
        bias = np.zeros(channels, np.float32) if beta is None else beta
        y = ctx.node("GroupNormalization", [x.name, ctx.const(scale, "gamma"), ctx.const(bias, "beta")],
                     epsilon=float(layer.epsilon), num_groups=int(groups))
        return [same_layout(x, y)]
    phys = list(x.physical_shape())
    grouped = [groups, channels // groups]
    tail = [-1 if d is None else d for d in phys[pa + 1:]]
    if tail.count(-1) <= 1:
        target = ctx.ints([0] * pa + grouped + tail, "shape")
    else:
        target = ctx.node("Concat", [shape_slice(ctx, x.name, 0, pa), ctx.ints(grouped, "groups"),
                                     shape_slice(ctx, x.name, pa + 1)], axis=0)
    xg = ctx.node("Reshape", [x.name, target])
    axes = [a for a in range(1, x.ndim + 1) if a != pa]
    mean = _reduce_mean(ctx, xg, axes)
    centered = ctx.node("Sub", [xg, mean])
    var = _reduce_mean(ctx, ctx.node("Mul", [centered, centered]), axes)
    inv = ctx.node("Reciprocal", [ctx.node("Sqrt", [ctx.node("Add", [var, ctx.const(float(layer.epsilon))])])])
    param_shape = [1] * (x.ndim + 1)
    param_shape[pa:pa + 2] = grouped
    if gamma is not None:
        inv = ctx.node("Mul", [inv, ctx.const(gamma.reshape(param_shape), "gamma")])
    shift = ctx.node("Mul", [mean, inv])
    shift = (ctx.node("Sub", [ctx.const(beta.reshape(param_shape), "beta"), shift]) if beta is not None
             else ctx.node("Neg", [shift]))
    y = ctx.node("Add", [ctx.node("Mul", [xg, inv]), shift])
    return [same_layout(x, ctx.node("Reshape", [y, ctx.node("Shape", [x.name])]))]
