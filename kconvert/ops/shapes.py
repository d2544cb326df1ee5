"""Shape arithmetic (padding rules, output lengths) and the layout ops: reshape, transpose, pad, crop, repeat.

The arithmetic helpers take plain ints (or None for an unknown size in shape inference). The ops take
attributes that do not depend on the batch size, so the same attributes serve the numpy kernel and the
ONNX emission: `reshape` reads a 0 in the target shape as "copy this dimension" (ONNX Reshape's rule),
`crop` takes (lo, hi) amounts cut from each end of each axis.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .base import Op, register

# ---------------------------------------------------------------------------------------------- arithmetic


def same_pads(size: int, k: int, stride: int = 1, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow's 'SAME' padding for one axis: output ceil(size / stride), the odd pixel goes at the end."""
    eff = dilation * (k - 1) + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + eff - size, 0)
    return total // 2, total - total // 2


def explicit_pads(padding: str, sizes: Sequence[int], ksize: Sequence[int], strides: Sequence[int] | None = None,
                  dilations: Sequence[int] | None = None) -> tuple[tuple[int, int], ...]:
    """(lo, hi) pads per spatial axis for Keras padding 'valid', 'same' or 'causal' (1-D convolutions)."""
    n = len(ksize)
    strides = tuple(strides) if strides is not None else (1,) * n
    dilations = tuple(dilations) if dilations is not None else (1,) * n
    padding = padding.lower()
    if padding == "valid":
        return ((0, 0),) * n
    if padding == "same":
        return tuple(same_pads(s, k, st, d) for s, k, st, d in zip(sizes, ksize, strides, dilations))
    if padding == "causal":
        return tuple((d * (k - 1), 0) for k, d in zip(ksize, dilations))
    raise ValueError(f"unknown padding '{padding}' (expected 'valid', 'same' or 'causal')")


def output_length(size: int | None, k: int, padding: str, stride: int, dilation: int = 1) -> int | None:
    """Keras's `conv_utils.conv_output_length`: output size of a window op on an axis (None stays None)."""
    if size is None:
        return None
    eff = dilation * (k - 1) + 1
    padding = padding.lower()
    if padding in ("same", "causal"):
        length = size
    elif padding == "valid":
        length = size - eff + 1
    elif padding == "full":
        length = size + eff - 1
    else:
        raise ValueError(f"unknown padding '{padding}'")
    return (length + stride - 1) // stride


def spatial_axes(ndim: int, channels_last: bool = True) -> tuple[int, ...]:
    """Axes of the spatial dims of a (N, *spatial, C) or (N, C, *spatial) array."""
    return tuple(range(1, ndim - 1)) if channels_last else tuple(range(2, ndim))


# ---------------------------------------------------------------------------------------------- reshape


def _resolve_shape(x_shape: tuple, shape: Sequence[int]) -> tuple:
    return tuple(x_shape[i] if s == 0 else int(s) for i, s in enumerate(shape))


@register
class Reshape(Op):
    """Reshape to `shape`; a 0 copies the input's dimension at that index, one -1 is inferred."""

    name = "reshape"

    @staticmethod
    def forward(x, shape):
        return np.reshape(x, _resolve_shape(np.shape(x), shape))

    @staticmethod
    def backward(grad, inputs, output, shape):
        return (np.reshape(grad, np.shape(inputs[0])),)

    @staticmethod
    def to_onnx(builder, inputs, shape):
        return builder.node("Reshape", [inputs[0], builder.const(list(shape), "shape", dtype=np.int64)])


def reshape(x: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """`x` reshaped to `shape` (0 = keep that dimension of `x`, -1 = inferred)."""
    return Reshape.forward(x, tuple(shape))


# ---------------------------------------------------------------------------------------------- transpose


@register
class Transpose(Op):
    name = "transpose"

    @staticmethod
    def forward(x, perm):
        return np.transpose(x, perm)

    @staticmethod
    def backward(grad, inputs, output, perm):
        return (np.transpose(grad, np.argsort(perm)),)

    @staticmethod
    def to_onnx(builder, inputs, perm):
        return builder.node("Transpose", [inputs[0]], perm=[int(p) for p in perm])


def transpose(x: np.ndarray, perm: Sequence[int]) -> np.ndarray:
    return Transpose.forward(x, tuple(perm))


# ---------------------------------------------------------------------------------------------- pad / crop


def _full_pads(ndim: int, pads: dict | Sequence) -> list[tuple[int, int]]:
    """(lo, hi) for every axis from a full list or an {axis: (lo, hi)} dict."""
    if isinstance(pads, dict):
        full = [(0, 0)] * ndim
        for ax, p in pads.items():
            full[ax % ndim] = (int(p[0]), int(p[1]))
        return full
    full = [(int(lo), int(hi)) for lo, hi in pads]
    if len(full) != ndim:
        raise ValueError(f"expected {ndim} (lo, hi) pairs, got {len(full)}")
    return full


@register
class Pad(Op):
    """Constant padding; `pads` is one (lo, hi) per axis, or a dict {axis: (lo, hi)}."""

    name = "pad"

    @staticmethod
    def forward(x, pads, value=0.0):
        full = _full_pads(np.ndim(x), pads)
        if not any(lo or hi for lo, hi in full):
            return x
        return np.pad(x, full, constant_values=value)

    @staticmethod
    def backward(grad, inputs, output, pads, value=0.0):
        full = _full_pads(np.ndim(grad), pads)
        return (grad[tuple(slice(lo, grad.shape[i] - hi) for i, (lo, hi) in enumerate(full))],)

    @staticmethod
    def to_onnx(builder, inputs, pads, value=0.0, ndim=None):
        if isinstance(pads, dict):
            if ndim is None:
                raise ValueError("pad: ONNX emission of per-axis pads needs `ndim`")
        full = _full_pads(ndim if ndim is not None else len(pads), pads)
        p = builder.const([lo for lo, _ in full] + [hi for _, hi in full], "pads", dtype=np.int64)
        v = builder.const(value, "pad_value")
        return builder.node("Pad", [inputs[0], p, v], mode="constant")


def pad(x: np.ndarray, pads, value: float = 0.0) -> np.ndarray:
    """Pad `x` with `value`; `pads` is one (lo, hi) per axis, or a dict {axis: (lo, hi)}."""
    return Pad.forward(x, pads, value)


@register
class Crop(Op):
    """Cut `lo` elements from the start and `hi` from the end of the given axes: {axis: (lo, hi)}."""

    name = "crop"

    @staticmethod
    def forward(x, crops):
        sl = [slice(None)] * np.ndim(x)
        for ax, (lo, hi) in crops.items():
            ax = ax % np.ndim(x)
            size = x.shape[ax]
            if lo + hi > size:
                raise ValueError(f"crop: cropping {(lo, hi)} is larger than axis {ax} of size {size}")
            sl[ax] = slice(lo, size - hi)
        return x[tuple(sl)]

    @staticmethod
    def backward(grad, inputs, output, crops):
        x = inputs[0]
        pads = {ax: (lo, hi) for ax, (lo, hi) in crops.items()}
        return (Pad.forward(grad, _full_pads(np.ndim(x), pads)),)

    @staticmethod
    def to_onnx(builder, inputs, crops):
        axes = sorted(crops)
        starts = [int(crops[a][0]) for a in axes]
        ends = [-int(crops[a][1]) if crops[a][1] else np.iinfo(np.int64).max for a in axes]
        return builder.node("Slice", [inputs[0], builder.const(starts, "starts", dtype=np.int64),
                                      builder.const(ends, "ends", dtype=np.int64),
                                      builder.const(axes, "axes", dtype=np.int64)])


def crop(x: np.ndarray, crops: dict) -> np.ndarray:
    """`x` with (lo, hi) elements cut from the two ends of each axis in `crops` ({axis: (lo, hi)})."""
    return Crop.forward(x, {int(a): (int(lo), int(hi)) for a, (lo, hi) in crops.items()})


# ---------------------------------------------------------------------------------------------- repeat


@register
class Repeat(Op):
    """np.repeat on one axis: each element `repeats` times in a row (nearest-neighbour upsampling)."""

    name = "repeat"

    @staticmethod
    def forward(x, repeats, axis):
        return np.repeat(x, repeats, axis=axis)

    @staticmethod
    def backward(grad, inputs, output, repeats, axis):
        ax = axis % grad.ndim
        shape = grad.shape[:ax] + (grad.shape[ax] // repeats, repeats) + grad.shape[ax + 1:]
        return (grad.reshape(shape).sum(axis=ax + 1),)

    @staticmethod
    def to_onnx(builder, inputs, repeats, axis, ndim=None):
        """Unsqueeze after `axis`, Tile there, merge the two axes with a Reshape (needs `ndim`)."""
        if ndim is None:
            raise ValueError("repeat: ONNX emission needs `ndim`")
        ax = axis % ndim
        u = builder.node("Unsqueeze", [inputs[0], builder.const([ax + 1], "axes", dtype=np.int64)])
        reps = [1] * (ndim + 1)
        reps[ax + 1] = int(repeats)
        t = builder.node("Tile", [u, builder.const(reps, "repeats", dtype=np.int64)])
        # (..., L, r, ...) -> (..., L*r, ...): dims before `ax` are copied with 0, those after from Shape
        if ax == ndim - 1:
            return builder.node("Reshape", [t, builder.const([0] * ax + [-1], "shape", dtype=np.int64)])
        shp = builder.node("Shape", [inputs[0]])
        head = builder.node("Slice", [shp, builder.const([0], "s", dtype=np.int64),
                                      builder.const([ax], "e", dtype=np.int64)]) if ax > 0 else None
        tail = builder.node("Slice", [shp, builder.const([ax + 1], "s", dtype=np.int64),
                                      builder.const([ndim], "e", dtype=np.int64)])
        parts = ([head] if head is not None else []) + [builder.const([-1], "m1", dtype=np.int64), tail]
        new_shape = builder.node("Concat", parts, axis=0)
        return builder.node("Reshape", [t, new_shape])


def repeat(x: np.ndarray, repeats: int, axis: int) -> np.ndarray:
    """Each element of `x` along `axis` repeated `repeats` times (np.repeat)."""
    return Repeat.forward(x, int(repeats), int(axis))


@register
class Tile(Op):
    """np.tile: the whole array repeated `reps[i]` times along axis i (RepeatVector)."""

    name = "tile"

    @staticmethod
    def forward(x, reps):
        return np.tile(x, reps)

    @staticmethod
    def backward(grad, inputs, output, reps):
        x = inputs[0]
        shape = []
        for r, s in zip(reps, x.shape):
            shape += [r, s]
        axes = tuple(range(0, 2 * x.ndim, 2))
        return (grad.reshape(shape).sum(axis=axes),)

    @staticmethod
    def to_onnx(builder, inputs, reps):
        return builder.node("Tile", [inputs[0], builder.const(list(reps), "repeats", dtype=np.int64)])


def tile(x: np.ndarray, reps: Sequence[int]) -> np.ndarray:
    return Tile.forward(x, tuple(int(r) for r in reps))


def expand_dims(x: np.ndarray, axis: int) -> np.ndarray:
    return np.expand_dims(x, axis)
