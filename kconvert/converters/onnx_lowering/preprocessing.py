"""Lowerings of the preprocessing layers: the random augmentations (identities at inference), Rescaling,
Normalization, Resizing and CenterCrop."""

from __future__ import annotations

import numpy as np

from ...layers.preprocessing import _area_matrix, _bicubic_matrix, _to_aspect
from ...ops.resize import nearest_indices
from .context import ONNX_DTYPES, LoweringContext
from .core import elementwise_input, keras_param, same_layout
from .refs import TensorRef, channels_first_perm
from .registry import lowers, unsupported
from .wrappers import shape_slice


def _cast(ctx: LoweringContext, ref: TensorRef, dtype: str, layer) -> TensorRef:
    if ref.dtype == dtype:
        return ref
    if dtype not in ONNX_DTYPES:
        raise unsupported(layer, f"the dtype {dtype}")
    return same_layout(ref, ctx.node("Cast", [ref.name], to=ONNX_DTYPES[dtype]), dtype=dtype)


@lowers("_InferenceIdentity")
def augmentation_identity(ctx, layer, ins, node):
    """A random augmentation layer: its input cast to the layer's dtype."""
    return [_cast(ctx, elementwise_input(ctx, ins[0]), layer.dtype, layer)]


@lowers("Rescaling")
def rescaling(ctx, layer, ins, node):
    x = _cast(ctx, elementwise_input(ctx, ins[0]), layer.dtype, layer)
    dtype = np.dtype(layer.dtype)
    y = ctx.node("Mul", [x.name, ctx.const(keras_param(layer.scale, x, dtype), "scale", dtype)])
    y = ctx.node("Add", [y, ctx.const(keras_param(layer.offset, x, dtype), "offset", dtype)])
    return [same_layout(x, y)]


@lowers("Normalization")
def normalization(ctx, layer, ins, node):
    """(x - mean) / max(sqrt(variance), 1e-7), the constants computed in numpy as the layer does."""
    x = _cast(ctx, elementwise_input(ctx, ins[0]), layer.dtype, layer)
    dtype = np.dtype(layer.dtype)
    mean, variance = (np.asarray(s, dtype) for s in layer._stats())
    std = np.maximum(np.sqrt(variance), np.asarray(1e-7, dtype))
    m, s = ctx.const(keras_param(mean, x, dtype), "mean", dtype), ctx.const(keras_param(std, x, dtype), "std", dtype)
    if layer.invert:
        y = ctx.node("Add", [m, ctx.node("Mul", [x.name, s])])
    else:
        y = ctx.node("Div", [ctx.node("Sub", [x.name, m]), s])
    return [same_layout(x, y)]


def _image_input(ctx: LoweringContext, layer, ref: TensorRef) -> tuple[TensorRef, tuple, tuple | None]:
    """(the image batch as float32 (N, C, H, W), its (H, W), the perm of a result laid out the same way)."""
    if ref.ndim != 4:
        raise unsupported(layer, f"an input of rank {ref.ndim}")
    if layer.dtype != "float32":
        raise unsupported(layer, f"the dtype {layer.dtype}")
    perm = None if layer._channels_first() else channels_first_perm(4)
    x = _cast(ctx, ctx.as_perm(ref, perm), "float32", layer)
    hw = tuple(x.physical_shape()[2:])
    return x, hw, perm


def _crop(ctx: LoweringContext, x: str, top: int, left: int, h: int, w: int) -> str:
    return ctx.node("Slice", [x, ctx.ints([top, left], "starts"), ctx.ints([top + h, left + w], "ends"),
                              ctx.ints([2, 3], "axes")])


def _resize(ctx: LoweringContext, layer, x: str, hw, size, interpolation: str) -> str:
    """tf.image.resize of (N, C, H, W) to `size`: native Resize (bilinear), Gathers (nearest, exact indices),
    constant interpolation matrices (bicubic and area, TensorFlow's tables)."""
    if interpolation == "bilinear":
        full = ctx.node("Concat", [shape_slice(ctx, x, 0, 2), ctx.ints(list(size), "sizes")], axis=0)
        return ctx.node("Resize", [x, "", "", full], mode="linear", coordinate_transformation_mode="half_pixel")
    if any(d is None for d in hw):
        raise unsupported(layer, f"'{interpolation}' resizing of images of unknown size")
    if interpolation == "nearest":
        for axis, out, n in ((2, size[0], hw[0]), (3, size[1], hw[1])):
            if out != n:
                x = ctx.node("Gather", [x, ctx.ints(nearest_indices(out, n, "half_pixel"), "indices")], axis=axis)
        return x
    matrix = {"bicubic": _bicubic_matrix, "area": _area_matrix}.get(interpolation)
    if matrix is None:
        raise unsupported(layer, f"the interpolation '{interpolation}'")
    y = ctx.node("MatMul", [ctx.const(matrix(size[0], hw[0]), "rows"), x])
    return ctx.node("MatMul", [y, ctx.const(np.ascontiguousarray(matrix(size[1], hw[1]).T), "cols")])


def _smart_resize(ctx, layer, x: str, hw, size, interpolation: str) -> str:
    ch, cw = _to_aspect(hw, size, pad=False)
    h0, w0 = int(np.float32(hw[0] - ch) / 2), int(np.float32(hw[1] - cw) / 2)
    return _resize(ctx, layer, _crop(ctx, x, h0, w0, ch, cw), (ch, cw), size, interpolation)


@lowers("Resizing")
def resizing(ctx, layer, ins, node):
    x, hw, perm = _image_input(ctx, layer, ins[0])
    size = (layer.height, layer.width)
    y = x.name
    if (layer.crop_to_aspect_ratio or layer.pad_to_aspect_ratio) and any(d is None for d in hw):
        raise unsupported(layer, "fitting the aspect ratio of images of unknown size")
    if layer.crop_to_aspect_ratio:
        y = _smart_resize(ctx, layer, y, hw, size, layer.interpolation)
    else:
        if layer.pad_to_aspect_ratio:
            ph, pw = _to_aspect(hw, size, pad=True)
            top, left = int(np.float32(ph - hw[0]) / 2), int(np.float32(pw - hw[1]) / 2)
            y = ctx.node("Pad", [y, ctx.ints([0, 0, top, left, 0, 0, top, left], "pads"),
                                 ctx.const(np.float32(layer.fill_value), "fill")])
            hw = (hw[0] + 2 * top, hw[1] + 2 * left)
        y = _resize(ctx, layer, y, hw, size, layer.interpolation)
    return [TensorRef(y, node.outputs[0].shape, "float32", perm)]


@lowers("CenterCrop")
def center_crop(ctx, layer, ins, node):
    x, hw, perm = _image_input(ctx, layer, ins[0])
    if any(d is None for d in hw):
        raise unsupported(layer, "images of unknown size")
    dh, dw = hw[0] - layer.height, hw[1] - layer.width
    if dh >= 0 and dw >= 0:
        y = _crop(ctx, x.name, dh // 2, dw // 2, layer.height, layer.width)
    else:
        y = _smart_resize(ctx, layer, x.name, hw, (layer.height, layer.width), "bilinear")
    return [TensorRef(y, node.outputs[0].shape, "float32", perm)]
