"""Lowerings of CaffePooling2D, LRN and CaffeScale (kconvert/layers/caffe_pooling.py, caffe_normalization.py).

- CaffePooling2D: MaxPool / AveragePool (count_include_pad=1) with the explicit pads `(p, hi)` that hold
  exactly Caffe's windows (ceil_mode=0), channels-first inside (a Pad node before it where a pad reaches the
  kernel size, which onnxruntime refuses as an attribute); AVE then a Mul by the constant
  `window / divisor` where Caffe's divisor differs; MAX a Max with -FLT_MAX where a window can be empty.
- LRN: ONNX LRN (the across-channels form, `bias` = k) on a channels-first value; within-channel as
  x * (1 + alpha * AveragePool(x^2, n x n, pads (n-1)/2, count_include_pad=1)) ^ -beta.
- CaffeScale: Mul (and Add) by gamma (beta) laid out against the input's physical layout; the two-input
  form Muls by the scale input reshaped to broadcast.
"""

from __future__ import annotations

import numpy as np

from ...layers.caffe_normalization import model_axis
from ...layers.caffe_pooling import FLT_LOWEST
from .conv import channels_first_input
from .core import elementwise_input, same_layout
from .refs import TensorRef, channels_first_perm
from .registry import lowers, unsupported


def _channels_first_result(layer, name: str, shape) -> TensorRef:
    perm = channels_first_perm(len(shape)) if layer.data_format == "channels_last" else None
    return TensorRef(name, tuple(shape), "float32", perm)


def _spatial(layer, shape) -> list:
    return list(shape[2:] if layer.data_format == "channels_first" else shape[1:3])


@lowers("CaffePooling2D")
def caffe_pool(ctx, layer, ins, node):
    sizes = _spatial(layer, ins[0].shape)
    if any(s is None for s in sizes):
        raise unsupported(layer, "an input of unknown spatial size")
    geo = layer.geometry(sizes)
    x = channels_first_input(ctx, layer, ins[0]).name
    pads = [lo for lo, _ in geo.pads] + [hi for _, hi in geo.pads]
    attrs = {"kernel_shape": list(layer.pool_size), "strides": list(layer.strides)}
    if any(p >= k for p, k in zip(pads, list(layer.pool_size) * 2)):  # onnxruntime wants pads < kernel
        x = ctx.node("Pad", [x, ctx.ints([0, 0, *pads[:2], 0, 0, *pads[2:]], "pads"),
                             _unfoldable(ctx, x, FLT_LOWEST if layer.mode == "max" else 0.0)])
    else:
        attrs["pads"] = pads
    if layer.mode == "max":
        y = ctx.node("MaxPool", [x], **attrs)
        if geo.empty_windows:
            y = ctx.node("Max", [y, ctx.const(np.float32(FLT_LOWEST), "flt_lowest")])
    else:
        y = ctx.node("AveragePool", [x], count_include_pad=1, **attrs)
        if geo.ave_factor is not None:
            y = ctx.node("Mul", [y, ctx.const(geo.ave_factor[None, None], "divisor_factor")])
    return [_channels_first_result(layer, y, node.outputs[0].shape)]


def _unfoldable(ctx, x: str, value: float) -> str:
    """The scalar `value`, computed from x's batch size so that no optimizer sees a constant Pad value.

    onnxruntime's PadFusion folds a Pad with a constant fill into the pooling after it, which then fails to load
    (pads as large as the kernel) or, for MaxPool, pads with -inf instead of Caffe's -FLT_MAX.
    """
    batch = ctx.node("Gather", [ctx.node("Shape", [x]), ctx.ints([0], "first")])
    zero = ctx.node("Mul", [ctx.node("Cast", [ctx.node("ReduceMin", [batch], keepdims=0)], to=1), ctx.const(0.0)])
    return ctx.node("Add", [zero, ctx.const(np.float32(value), "fill")])


@lowers("LRN")
def lrn(ctx, layer, ins, node):
    x = channels_first_input(ctx, layer, ins[0])
    n, half = layer.local_size, layer.local_size // 2
    if layer.norm_region == "across_channels":
        y = ctx.node("LRN", [x.name], size=n, alpha=layer.alpha, beta=layer.beta, bias=layer.k)
    else:
        mean = ctx.node("AveragePool", [ctx.node("Mul", [x.name, x.name])], kernel_shape=[n, n], strides=[1, 1],
                        pads=[half, half, half, half], count_include_pad=1)
        scale = ctx.node("Add", [ctx.node("Mul", [mean, ctx.const(np.float32(layer.alpha), "alpha")]),
                                 ctx.const(np.float32(1.0), "one")])
        y = ctx.node("Mul", [x.name, ctx.node("Pow", [scale, ctx.const(np.float32(-layer.beta), "neg_beta")])])
    return [_channels_first_result(layer, y, node.outputs[0].shape)]


def _param(layer, value: np.ndarray, x: TensorRef) -> np.ndarray:
    """gamma / beta over the layer's Caffe axes, shaped to broadcast against x's physical layout."""
    axes = [model_axis(a, x.ndim, layer.data_format) for a in layer._axes]
    order = np.argsort(axes)
    shape = [1] * x.ndim
    for i in order:
        shape[axes[i]] = value.shape[i]
    full = np.transpose(value, order).reshape(shape).astype(np.float32)
    return np.transpose(full, x.perm) if x.perm else full


@lowers("CaffeScale")
def caffe_scale(ctx, layer, ins, node):
    x = elementwise_input(ctx, ins[0])
    if len(ins) == 1:
        y = ctx.node("Mul", [x.name, ctx.const(_param(layer, layer.gamma.value, x), "gamma")])
        if layer.beta is not None:
            y = ctx.node("Add", [y, ctx.const(_param(layer, layer.beta.value, x), "beta")])
        return [same_layout(x, y)]
    s = ctx.keras(ins[1])
    axes = sorted(model_axis(a, x.ndim, layer.data_format) for a in layer._axes)
    missing = [a for a in range(x.ndim) if a not in axes]
    # s's axes are x's `axes` in order: unsqueezing the others gives it x's rank in Keras order
    full = ctx.node("Unsqueeze", [s.name, ctx.ints(missing, "axes")]) if missing else s.name
    shape = tuple(x.shape[a] if a in axes else 1 for a in range(x.ndim))
    s_full = ctx.as_perm(TensorRef(full, shape, s.dtype), x.perm)
    return [same_layout(x, ctx.node("Mul", [x.name, s_full.name]))]
