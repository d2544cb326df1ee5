"""N-d nearest and (bi/tri)linear resizing of the spatial axes, channels-last or channels-first.

`coordinate_transformation` says where an output pixel samples the input, as in ONNX Resize:

- `half_pixel`: src = (dst + 0.5) * in / out - 0.5 (TF2 `tf.image.resize`, Keras 2 in TF 2.x and Keras 3,
  PyTorch `align_corners=False`); for nearest the TF rule floor((dst + 0.5) * in / out).
- `asymmetric`: src = dst * in / out (TF 1.x `resize_bilinear` / `resize_nearest_neighbor` defaults).
- `align_corners`: src = dst * (in - 1) / (out - 1) (Caffe's Interp layer, `align_corners=True`).

Linear interpolation follows TensorFlow's kernel: lower = max(floor(src), 0), upper = min(ceil(src),
in - 1), weight src - floor(src); so samples left of the first pixel centre take the first pixel.
Bilinear is applied one axis at a time (last spatial axis first, as TF's kernel blends along x first).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .array_module import module_of, to_device
from .base import Op, register, traceable
from .shapes import spatial_axes

MODES = ("nearest", "linear", "bilinear", "trilinear")
TRANSFORMS = ("half_pixel", "asymmetric", "align_corners")


def _source(out_size: int, in_size: int, transform: str) -> np.ndarray:
    i = np.arange(out_size, dtype=np.float64)
    if transform == "half_pixel":
        return (i + 0.5) * (in_size / out_size) - 0.5
    if transform == "asymmetric":
        return i * (in_size / out_size)
    if transform == "align_corners":
        return i * ((in_size - 1) / (out_size - 1)) if out_size > 1 else np.zeros(out_size)
    raise ValueError(f"unknown coordinate transformation '{transform}' (expected one of {TRANSFORMS})")


def nearest_indices(out_size: int, in_size: int, transform: str = "half_pixel") -> np.ndarray:
    """Input index each output index copies."""
    if transform == "half_pixel":  # TF: floor((dst + 0.5) * scale), clamped
        idx = np.floor((np.arange(out_size) + 0.5) * (in_size / out_size))
    elif transform == "align_corners":  # TF: roundf (half away from zero)
        idx = np.floor(_source(out_size, in_size, transform) + 0.5)
    else:
        idx = np.floor(_source(out_size, in_size, transform))
    return np.clip(idx, 0, in_size - 1).astype(np.intp)


def linear_taps(out_size: int, in_size: int, transform: str = "half_pixel"):
    """(lower index, upper index, weight of upper) for each output index."""
    src = _source(out_size, in_size, transform)
    f = np.floor(src)
    lower = np.clip(f, 0, in_size - 1).astype(np.intp)
    upper = np.clip(np.ceil(src), 0, in_size - 1).astype(np.intp)
    return lower, upper, src - f


def _bshape(ndim, axis, n):
    s = [1] * ndim
    s[axis] = n
    return s


def _check(x, sizes, mode, channels_last):
    axes = spatial_axes(np.ndim(x), channels_last)
    sizes = tuple(int(s) for s in sizes)
    if len(sizes) != len(axes):
        raise ValueError(f"resize: input has {len(axes)} spatial dims, got output sizes {sizes}")
    if mode not in MODES:
        raise ValueError(f"resize: unknown mode '{mode}' (expected one of {MODES})")
    return axes, sizes


def _resize_axis(x, axis, out_size, mode, transform):
    in_size = x.shape[axis]
    if out_size == in_size:  # every transformation maps an axis onto itself identically
        return x
    if mode == "nearest":
        if out_size % in_size == 0 and transform in ("half_pixel", "asymmetric"):
            return np.repeat(x, out_size // in_size, axis=axis)  # exact for integer factors
        return np.take(x, to_device(nearest_indices(out_size, in_size, transform), module_of(x)), axis=axis)
    module = module_of(x)
    lo, hi, w = (to_device(v, module) for v in linear_taps(out_size, in_size, transform))
    a = np.take(x, lo, axis=axis)
    b = np.take(x, hi, axis=axis)
    w = w.astype(np.result_type(x.dtype, np.float32)).reshape(_bshape(x.ndim, axis, out_size))
    return a + (b - a) * w


def _matrix(out_size, in_size, mode, transform):
    """Dense (out, in) interpolation matrix of one axis (used for the gradient)."""
    m = np.zeros((out_size, in_size))
    rows = np.arange(out_size)
    if mode == "nearest":
        m[rows, nearest_indices(out_size, in_size, transform)] = 1.0
    else:
        lo, hi, w = linear_taps(out_size, in_size, transform)
        np.add.at(m, (rows, lo), 1.0 - w)
        np.add.at(m, (rows, hi), w)
    return m


@register
class Resize(Op):
    name = "resize"

    @staticmethod
    def forward(x, sizes, mode="nearest", coordinate_transformation="half_pixel", channels_last=True):
        axes, sizes = _check(x, sizes, mode, channels_last)
        y = x
        for a, s in reversed(list(zip(axes, sizes))):
            y = _resize_axis(y, a, s, mode, coordinate_transformation)
        return y

    @staticmethod
    def backward(grad, inputs, output, sizes, mode="nearest", coordinate_transformation="half_pixel",
                 channels_last=True):
        (x,) = inputs
        axes, sizes = _check(x, sizes, mode, channels_last)
        g = grad
        for a in axes:  # transpose of the forward: the axes in the opposite order
            m = to_device(_matrix(g.shape[a], x.shape[a], mode, coordinate_transformation).astype(grad.dtype),
                          module_of(grad))
            g = np.moveaxis(np.tensordot(g, m, axes=([a], [0])), -1, a)
        return (g,)

    @staticmethod
    def to_onnx(builder, inputs, sizes, mode="nearest", coordinate_transformation="half_pixel",
                channels_last=True):
        """ONNX Resize on the channels-first tensor, output sizes = Shape(x)[:2] ++ `sizes`."""
        n_sp = len(sizes)
        x = inputs[0]
        if channels_last:
            x = builder.node("Transpose", [x], perm=[0, n_sp + 1] + list(range(1, n_sp + 1)))
        nc = builder.node("Slice", [builder.node("Shape", [x]), builder.const([0], "s", dtype=np.int64),
                                    builder.const([2], "e", dtype=np.int64)])
        full = builder.node("Concat", [nc, builder.const(list(sizes), "sizes", dtype=np.int64)], axis=0)
        if mode == "nearest":
            # TensorFlow's half-pixel nearest, floor((i + 0.5) * in / out), is ONNX's half_pixel rounded half up
            # (the older `tf_half_pixel_for_nn` mode is deprecated since opset 13)
            extra = {"mode": "nearest", "coordinate_transformation_mode": coordinate_transformation,
                     "nearest_mode": "floor" if coordinate_transformation == "asymmetric" else "round_prefer_ceil"}
        else:
            extra = {"mode": "linear", "coordinate_transformation_mode": coordinate_transformation}
        y = builder.node("Resize", [x, "", "", full], **extra)
        if channels_last:
            y = builder.node("Transpose", [y], perm=[0] + list(range(2, n_sp + 2)) + [1])
        return y


@traceable
def resize(x: np.ndarray, sizes: Sequence[int], mode: str = "nearest",
           coordinate_transformation: str = "half_pixel", channels_last: bool = True) -> np.ndarray:
    """Resize the spatial axes of `x` to `sizes` ('nearest' or 'linear'/'bilinear'/'trilinear')."""
    return Resize.forward(x, tuple(int(s) for s in sizes), mode, coordinate_transformation, channels_last)


def upsample(x: np.ndarray, factors: Sequence[int], mode: str = "nearest",
             coordinate_transformation: str = "half_pixel", channels_last: bool = True) -> np.ndarray:
    """Resize by integer `factors` per spatial axis (Keras UpSampling*D)."""
    axes = spatial_axes(np.ndim(x), channels_last)
    if len(factors) != len(axes):
        raise ValueError(f"upsample: input has {len(axes)} spatial dims, got factors {tuple(factors)}")
    return resize(x, [x.shape[a] * int(f) for a, f in zip(axes, factors)], mode, coordinate_transformation,
                  channels_last)
