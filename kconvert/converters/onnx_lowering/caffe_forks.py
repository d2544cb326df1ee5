"""Lowerings of CaffeInterp, CaffeMaxUnpooling2D (layers/caffe_forks.py) and CaffeMaxPoolingMask (caffe_pooling.py).

All work channels-first, as Caffe, on static spatial sizes:

- CaffeInterp: a Slice for the (non-positive) pad_beg/pad_end crop, then Resize (linear,
  coordinate_transformation_mode=align_corners) to the output size; an axis resized to 1 is sliced to its first
  row instead (Caffe samples index 0 there; align_corners divides by out - 1).
- CaffeMaxPoolingMask: a Pad with -FLT_MAX, then Caffe's scan of each window: per offset a strided Slice, Greater
  than the running max, and Where updates of the max and of the constant flat indices.
- CaffeMaxUnpooling2D: the largest input position writing each output position (ScatterElements with
  reduction="max", opset 18: the last write wins, as in Caffe's loop), then GatherElements from the input with a
  zero in front (position 0: nothing written).
"""

from __future__ import annotations

import numpy as np

from ...layers.caffe_pooling import FLT_LOWEST, max_pool_mask_taps
from .conv import channels_first_input
from .refs import TensorRef, channels_first_perm
from .registry import lowers, unsupported


def _spatial(layer, shape) -> list:
    sizes = list(shape[2:] if layer.data_format == "channels_first" else shape[1:3])
    if any(s is None for s in sizes):
        raise unsupported(layer, "an input of unknown spatial size")
    return [int(s) for s in sizes]


def _result(layer, name: str, shape) -> TensorRef:
    perm = channels_first_perm(len(shape)) if layer.data_format == "channels_last" else None
    return TensorRef(name, tuple(shape), "float32", perm)


def _batch_channels(ctx, x: str) -> str:
    return ctx.node("Slice", [ctx.node("Shape", [x]), ctx.ints([0], "start"), ctx.ints([2], "end")])


@lowers("CaffeInterp")
def caffe_interp(ctx, layer, ins, node):
    sizes = _spatial(layer, ins[0].shape)
    out = layer.output_size(sizes)
    x = channels_first_input(ctx, layer, ins[0]).name
    lo, hi = -layer.pad_beg, -layer.pad_end
    ends = [n - hi for n in sizes]
    ones = [a for a, o in zip((2, 3), out) if o == 1]  # sampled at index 0 only
    for a in ones:
        ends[a - 2] = lo + 1
    if lo or hi or ones:
        x = ctx.node("Slice", [x, ctx.ints([lo, lo], "starts"), ctx.ints(ends, "ends"), ctx.ints([2, 3], "axes")])
    if [e - lo for e in ends] != list(out):
        full = ctx.node("Concat", [_batch_channels(ctx, x), ctx.ints(list(out), "sizes")], axis=0)
        x = ctx.node("Resize", [x, "", "", full], mode="linear", coordinate_transformation_mode="align_corners")
    return [_result(layer, x, node.outputs[0].shape)]


@lowers("CaffeMaxPoolingMask")
def caffe_max_pooling_mask(ctx, layer, ins, node):
    sizes = _spatial(layer, ins[0].shape)
    geo = layer.geometry(sizes)
    x = channels_first_input(ctx, layer, ins[0]).name
    (ph_lo, ph_hi), (pw_lo, pw_hi) = geo.pads
    if any(geo.pads[0] + geo.pads[1]):
        x = ctx.node("Pad", [x, ctx.ints([0, 0, ph_lo, pw_lo, 0, 0, ph_hi, pw_hi], "pads"),
                             ctx.const(np.float32(FLT_LOWEST), "flt_lowest")])
    (sh, sw), (oh, ow) = layer.strides, geo.out
    best, mask = ctx.const(np.float32(FLT_LOWEST), "flt_lowest"), ctx.const(np.float32(-1.0), "no_index")
    steps, axes = ctx.ints([sh, sw], "steps"), ctx.ints([2, 3], "axes")
    for (i, j), index in max_pool_mask_taps(geo, sizes, layer.pool_size, layer.strides, layer.padding):
        cand = ctx.node("Slice", [x, ctx.ints([i, j], "starts"),
                                  ctx.ints([i + (oh - 1) * sh + 1, j + (ow - 1) * sw + 1], "ends"), axes, steps])
        wins = ctx.node("Greater", [cand, best])
        best = ctx.node("Where", [wins, cand, best])
        mask = ctx.node("Where", [wins, ctx.const(index[None, None], "flat_index"), mask])
    return [_result(layer, mask, node.outputs[0].shape)]


@lowers("CaffeMaxUnpooling2D")
def caffe_max_unpooling(ctx, layer, ins, node):
    if ctx.opset < 18:
        raise unsupported(layer, f"max-unpooling at opset {ctx.opset} (it needs ScatterElements' reduction='max', "
                                 "opset 18 or newer: pass opset=18)")
    h, w = _spatial(layer, ins[0].shape)
    oh, ow = layer.output_size((h, w))
    n_in, n_out = h * w, oh * ow
    x = ctx.node("Reshape", [channels_first_input(ctx, layer, ins[0]).name, ctx.ints([0, 0, n_in], "shape")])
    m = ctx.node("Reshape", [channels_first_input(ctx, layer, ins[1]).name, ctx.ints([0, 0, n_in], "shape")])
    idx = ctx.node("Cast", [m], to=7)
    valid = ctx.node("And", [ctx.node("GreaterOrEqual", [idx, ctx.ints([0], "zero")]),
                             ctx.node("Less", [idx, ctx.ints([n_out], "n_out")])])
    valid = ctx.node("And", [valid, ctx.node("Equal", [ctx.node("Cast", [idx], to=1), m])])  # whole numbers only
    zero = ctx.ints([0], "zero")
    positions = ctx.const(np.arange(1, n_in + 1, dtype=np.int64)[None, None], "positions", dtype=np.int64)
    pos = ctx.node("Where", [valid, positions, zero])
    ids = ctx.node("Where", [valid, idx, zero])
    nc = _batch_channels(ctx, x)
    empty = ctx.node("ConstantOfShape", [ctx.node("Concat", [nc, ctx.ints([n_out], "n_out")], axis=0)],
                     value=_tensor(np.zeros(1, np.int64)))
    winners = ctx.node("ScatterElements", [empty, ids, pos], axis=2, reduction="max")
    front = ctx.node("ConstantOfShape", [ctx.node("Concat", [nc, ctx.ints([1], "one")], axis=0)],
                     value=_tensor(np.zeros(1, np.float32)))
    padded = ctx.node("Concat", [front, x], axis=2)
    y = ctx.node("GatherElements", [padded, winners], axis=2)
    y = ctx.node("Reshape", [y, ctx.ints([0, 0, oh, ow], "shape")])
    return [_result(layer, y, node.outputs[0].shape)]


def _tensor(value: np.ndarray):
    from onnx import numpy_helper

    return numpy_helper.from_array(value)
