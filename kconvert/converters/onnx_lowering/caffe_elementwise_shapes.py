"""Lowerings of the Caffe elementwise and shape layers (kconvert/layers/caffe_elementwise.py, caffe_shapes.py).

Elementwise layers and Slice/Crop/ArgMax-along-an-axis work in whatever layout their input already has.
ArgMax without an axis reads its input in Caffe's order and leaves its output in Caffe's order too, recorded as
the TensorRef's perm, so a Caffe-ordered (NCHW) graph needs no Transpose. ArgMax's ties go to the larger index,
as in Caffe: TopK (which prefers the lower index) runs on the input reversed along the axis.
"""

from __future__ import annotations

import numpy as np

from ...layers.caffe_shapes import caffe_order
from .context import LoweringContext
from .core import elementwise_input, same_layout
from .refs import TensorRef, normalize_perm
from .registry import lowers

INT64_MIN = np.iinfo(np.int64).min


def _f32(value) -> np.float32:
    return np.float32(value)


@lowers("Power")
def power(ctx, layer, ins, node):
    x = elementwise_input(ctx, ins[0])
    const = layer.constant()
    if const is not None:  # Caffe ignores the input when power·scale == 0
        y = ctx.node("Expand", [ctx.const(_f32(const), "value"), ctx.node("Shape", [x.name])])
        return [same_layout(x, y, dtype="float32")]
    y = x.name
    if layer.scale != 1:
        y = ctx.node("Mul", [y, ctx.const(_f32(layer.scale), "scale")])
    if layer.shift != 0:
        y = ctx.node("Add", [y, ctx.const(_f32(layer.shift), "shift")])
    if layer.power != 1:
        y = ctx.node("Pow", [y, ctx.const(_f32(layer.power), "power")])
    return [same_layout(x, y if y != x.name else ctx.node("Identity", [y]))]


@lowers("CaffeExp")
def caffe_exp(ctx, layer, ins, node):
    x = elementwise_input(ctx, ins[0])
    inner, outer = layer.factors()
    y = x.name if inner == 1 else ctx.node("Mul", [x.name, ctx.const(inner, "inner_scale")])
    y = ctx.node("Exp", [y])
    if outer != 1:
        y = ctx.node("Mul", [y, ctx.const(outer, "outer_scale")])
    return [same_layout(x, y)]


@lowers("CaffeLog")
def caffe_log(ctx, layer, ins, node):
    x = elementwise_input(ctx, ins[0])
    y = x.name
    if layer.scale != 1:
        y = ctx.node("Mul", [y, ctx.const(_f32(layer.scale), "scale")])
    if layer.shift != 0:
        y = ctx.node("Add", [y, ctx.const(_f32(layer.shift), "shift")])
    y = ctx.node("Log", [y])
    k = layer.base_scale()
    if k != 1:
        y = ctx.node("Mul", [y, ctx.const(k, "base_scale")])
    return [same_layout(x, y)]


@lowers("CaffeThreshold")
def caffe_threshold(ctx, layer, ins, node):
    x = elementwise_input(ctx, ins[0])
    above = ctx.node("Greater", [x.name, ctx.const(_f32(layer.threshold), "threshold")])
    return [same_layout(x, ctx.node("Cast", [above], to=1))]


@lowers("CaffeClip")
def caffe_clip(ctx, layer, ins, node):
    """max(min, min(x, max)) in Caffe's order (ONNX Clip differs only when min > max)."""
    x = elementwise_input(ctx, ins[0])
    y = ctx.node("Min", [x.name, ctx.const(_f32(layer.max), "max")])
    return [same_layout(x, ctx.node("Max", [y, ctx.const(_f32(layer.min), "min")]))]


@lowers("AbsVal")
def absval(ctx, layer, ins, node):
    x = elementwise_input(ctx, ins[0])
    return [same_layout(x, ctx.node("Abs", [x.name]))]


@lowers("CaffeEltwise")
def caffe_eltwise(ctx, layer, ins, node):
    ins = [elementwise_input(ctx, r) for r in ins]
    perm = ctx.common_perm(ins)
    names = [ctx.as_perm(r, perm).name for r in ins]
    if layer.operation == "sum":
        coeff = layer.coeff or [1.0] * len(names)
        names = [n if c == 1 else ctx.node("Mul", [n, ctx.const(_f32(c), "coeff")]) for c, n in zip(coeff, names)]
    op = {"sum": "Add", "prod": "Mul", "max": "Max"}[layer.operation]
    y = names[0]
    for n in names[1:]:
        y = ctx.node(op, [y, n])
    if y == names[0] and len(names) == 1:
        y = ctx.node("Identity", [y])
    return [TensorRef(y, node.outputs[0].shape, "float32", perm)]


@lowers("CaffeSlice")
def caffe_slice(ctx, layer, ins, node):
    x = elementwise_input(ctx, ins[0])
    axis, bounds = layer._bounds(x.shape)
    phys = ctx.ints([x.physical_axis(axis)], "axes")
    outs = []
    for (a, b), v in zip(bounds, node.outputs):
        y = ctx.node("Slice", [x.name, ctx.ints([a], "starts"), ctx.ints([b], "ends"), phys])
        outs.append(TensorRef(y, v.shape, x.dtype, x.perm))
    return outs


@lowers("CaffeCrop")
def caffe_crop(ctx, layer, ins, node):
    x, ref = (elementwise_input(ctx, r) for r in ins)
    crops = layer.crops(x.shape, ref.shape)
    axes = ctx.ints([x.physical_axis(k) for k, _, _ in crops], "axes")
    starts = ctx.ints([off for _, off, _ in crops], "starts")
    if all(size is not None for _, _, size in crops):
        ends = ctx.ints([off + size for _, off, size in crops], "ends")
    else:  # sizes known only at run time: the reference's dims plus the offsets
        dims = ctx.node("Gather", [ctx.node("Shape", [ref.name]),
                                   ctx.ints([ref.physical_axis(k) for k, _, _ in crops], "dims")], axis=0)
        ends = ctx.node("Add", [dims, starts])
    y = ctx.node("Slice", [x.name, starts, ends, axes])
    return [TensorRef(y, node.outputs[0].shape, x.dtype, x.perm)]


def _top_k(ctx: LoweringContext, x: str, axis: int, n: int | None, k: int) -> tuple[str, str]:
    """(indices as float32, values) of the k largest along `axis` of size n, ties to the larger index."""
    flipped = ctx.node("Slice", [x, ctx.ints([-1], "starts"), ctx.ints([INT64_MIN], "ends"), ctx.ints([axis], "axes"),
                                 ctx.ints([-1], "steps")])
    values, order = ctx.node("TopK", [flipped, ctx.ints([k], "k")], n_outputs=2, axis=axis, largest=1, sorted=1)
    if n is None:  # the axis size is known at run time only
        size = ctx.node("Gather", [ctx.node("Shape", [x]), ctx.ints([axis], "axis")], axis=0)
        last = ctx.node("Sub", [size, ctx.ints([1], "one")])
    else:
        last = ctx.ints([n - 1], "last")
    idx = ctx.node("Sub", [last, order])
    return ctx.node("Cast", [idx], to=1), values


@lowers("CaffeArgMax")
def caffe_argmax(ctx, layer, ins, node):
    x = elementwise_input(ctx, ins[0])
    out_shape = node.outputs[0].shape
    if layer.axis is not None:
        axis = layer._keras_axis(x.ndim)
        phys = x.physical_axis(axis)
        idx, values = _top_k(ctx, x.name, phys, x.shape[axis], layer.top_k)
        return [TensorRef(values if layer.out_max_val else idx, out_shape, "float32", x.perm)]
    count = int(np.prod(x.shape[1:])) if all(d is not None for d in x.shape[1:]) else None
    caffe = ctx.as_perm(x, caffe_order(x.ndim, layer.data_format))  # physical: the blob in Caffe's order
    flat = ctx.node("Flatten", [caffe.name], axis=1)
    idx, values = _top_k(ctx, flat, 1, count, layer.top_k)
    parts = [idx, values] if layer.out_max_val else [idx]
    one = ctx.ints([1], "axes")
    stacked = ctx.node("Concat", [ctx.node("Unsqueeze", [p, one]) for p in parts], axis=1)
    out_ndim = len(out_shape)
    y = ctx.node("Reshape", [stacked, ctx.ints([0, len(parts), layer.top_k] + [1] * (out_ndim - 3), "shape")])
    return [TensorRef(y, out_shape, "float32", normalize_perm(caffe_order(out_ndim, layer.data_format)))]
