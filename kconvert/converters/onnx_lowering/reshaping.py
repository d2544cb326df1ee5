"""Lowerings of the reshaping layers. Permute (and channels_first Flatten's reordering) only relabel axes."""

from __future__ import annotations

import numpy as np

from ... import ops
from .context import LoweringContext
from .conv import channels_first_input
from .refs import TensorRef, channels_first_perm, compose, inverse, normalize_perm
from .registry import lowers

INT64_MAX = np.iinfo(np.int64).max


def relabel(ctx: LoweringContext, ref: TensorRef, q) -> TensorRef:
    """The Keras value transpose(keras(ref), q) without emitting anything: only the layout record changes."""
    if ref.flat_of is not None:
        ref = ctx.keras(ref)
    current = ref.perm or tuple(range(ref.ndim))
    # physical = transpose(x, current), x = transpose(v, inverse(q)) => physical = transpose(v, perm)
    perm = compose(inverse(q), current)
    shape = tuple(ref.shape[i] for i in q)
    return TensorRef(ref.name, shape, ref.dtype, normalize_perm(perm), None, ref.mask)


@lowers("Flatten")
def flatten(ctx, layer, ins, node):
    x = ins[0]
    if layer.data_format == "channels_first" and x.ndim > 2:  # Keras flattens in channels-last order
        x = relabel(ctx, x, (0, *range(2, x.ndim), 1))
    out_shape = node.outputs[0].shape
    if x.flat_of is not None or x.ndim == 2:
        return [TensorRef(ctx.keras(x).name, out_shape, x.dtype)] if x.flat_of is None else [x]
    if x.perm is not None and not _same_order(x):  # delayed: a Dense reading it permutes its kernel instead
        return [TensorRef(f"<flatten of {x.name}>", out_shape, x.dtype, None, x)]
    return [TensorRef(ctx.node("Flatten", [x.name], axis=1), out_shape, x.dtype)]


def _same_order(ref: TensorRef) -> bool:
    """True when the physical layout holds the elements in Keras order (only size-1 axes are permuted)."""
    moved = [a for a in ref.perm if ref.shape[a] != 1]
    return moved == sorted(moved)


@lowers("Reshape")
def reshape(ctx, layer, ins, node):
    x = ctx.keras(ins[0])
    y = ctx.node("Reshape", [x.name, ctx.ints([0, *layer.target_shape], "shape")])
    return [TensorRef(y, node.outputs[0].shape, x.dtype)]


@lowers("Permute")
def permute(ctx, layer, ins, node):
    return [relabel(ctx, ins[0], (0, *layer.dims))]


@lowers("RepeatVector")
def repeat_vector(ctx, layer, ins, node):
    x = ctx.keras(ins[0])
    y = ctx.node("Unsqueeze", [x.name, ctx.ints([1], "axes")])
    y = ctx.node("Tile", [y, ctx.ints([1, layer.n, 1], "repeats")])
    return [TensorRef(y, node.outputs[0].shape, x.dtype)]


def _spatial_edit_input(ctx, layer, ref: TensorRef) -> TensorRef:
    if layer.rank == 1:  # (N, steps, features): any layout the value already has
        return ref if ref.flat_of is None else ctx.keras(ref)
    return channels_first_input(ctx, layer, ref)


def _edit_axes(layer, ref: TensorRef):
    keras_axes = ops.spatial_axes(ref.ndim, layer._data_format() == "channels_last")
    return [ref.physical_axis(a) for a in keras_axes]


@lowers("ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D")
def zero_padding(ctx, layer, ins, node):
    x = _spatial_edit_input(ctx, layer, ins[0])
    lo, hi = [0] * x.ndim, [0] * x.ndim
    for a, (p, q) in zip(_edit_axes(layer, x), layer._amounts()):
        lo[a], hi[a] = p, q
    y = ctx.node("Pad", [x.name, ctx.ints(lo + hi, "pads")])
    return [TensorRef(y, node.outputs[0].shape, x.dtype, x.perm)]


@lowers("Cropping1D", "Cropping2D", "Cropping3D")
def cropping(ctx, layer, ins, node):
    x = _spatial_edit_input(ctx, layer, ins[0])
    axes, starts, ends = [], [], []
    for a, (p, q) in zip(_edit_axes(layer, x), layer._amounts()):
        axes.append(a)
        starts.append(p)
        ends.append(-q if q else INT64_MAX)
    y = ctx.node("Slice", [x.name, ctx.ints(starts, "starts"), ctx.ints(ends, "ends"), ctx.ints(axes, "axes")])
    return [TensorRef(y, node.outputs[0].shape, x.dtype, x.perm)]


def _resize(ctx, x: TensorRef, phys_axes, factors, linear: bool) -> str:
    scales = [1.0] * x.ndim
    for a, f in zip(phys_axes, factors):
        scales[a] = float(f)
    attrs = ({"mode": "linear", "coordinate_transformation_mode": "half_pixel"} if linear else
             {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"})
    return ctx.node("Resize", [x.name, "", ctx.const(np.asarray(scales, np.float32), "scales")], **attrs)


@lowers("UpSampling1D")
def upsampling1d(ctx, layer, ins, node):
    x = ins[0] if ins[0].flat_of is None else ctx.keras(ins[0])
    y = _resize(ctx, x, [x.physical_axis(1)], [layer.size], linear=False)
    return [TensorRef(y, node.outputs[0].shape, x.dtype, x.perm)]


@lowers("UpSampling2D", "UpSampling3D")
def upsampling(ctx, layer, ins, node):
    x = channels_first_input(ctx, layer, ins[0])
    linear = getattr(layer, "interpolation", "nearest") == "bilinear"
    y = _resize(ctx, x, range(2, x.ndim), layer.size, linear)
    perm = channels_first_perm(x.ndim) if layer.data_format == "channels_last" else None
    return [TensorRef(y, node.outputs[0].shape, x.dtype, perm)]
