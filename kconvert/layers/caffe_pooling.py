"""CaffePooling2D: Caffe's Pooling layer (MAX / AVE), with Caffe's output size rule and average divisor.

Caffe (BVLC `src/caffe/layers/pooling_layer.cpp`) computes, per spatial axis of size H with kernel k, stride s
and symmetric pad p:

- `out = ceil((H + 2p - k) / s) + 1` (`rounding="ceil"`, Caffe's default) or `floor(...) + 1`
  (`rounding="floor"`: BVLC `round_mode: FLOOR`, SSD-style forks' `ceil_mode: false`);
- then, when the layer has any padding (either axis), `out -= 1` if `(out - 1) * s >= H + p`, on both axes
  (the last window must start inside the image or its left/top padding);
- MAX takes the largest real element of each window: padding and the ceil overhang never win. A window with
  no real element (possible only without padding, when the stride exceeds the kernel) gives Caffe's
  initial value -FLT_MAX;
- AVE divides the window's sum by the size of the window clipped to `[-p, H + p)`: explicit zero padding is
  counted, the overhang past `H + p` is not (0/0 = nan for an empty window, as Caffe computes).

Here this is a pooling with explicit pads `(p, hi)` per axis, `hi = max(0, (out - 1) * s + k - H - p)` (the
padded extent then holds exactly `out` windows), followed for AVE by a constant per-position factor
`k_h * k_w / divisor` where the divisor differs from the window size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import ops
from ..errors import ConfigError
from .base import Layer, register_layer
from .pooling import (
    check_rank,
    join_spatial,
    normalize_data_format,
    normalize_tuple,
    spatial_layout,
    split_spatial,
)

_MODES = ("max", "ave")
_ROUNDINGS = ("ceil", "floor")
FLT_LOWEST = float(np.finfo(np.float32).min)  # Caffe's -FLT_MAX, the start value of a MAX window


def kconvert_only_keras3(layer: Layer) -> None:
    """Have kconvert's Keras 3 writer record `layer` as the registered object `kconvert>ClassName` of
    `kconvert.keras_objects("keras3")` (Keras 2 files record the plain class name, the `registered_name`)."""
    layer._keras3_module = ("kconvert.keras_objects", f"kconvert>{type(layer).__name__}")


def caffe_pooled_length(size: int, k: int, s: int, p: int, ceil: bool, padded: bool) -> int:
    """Caffe's pooled output length on one axis; `padded`: the layer has a non-zero pad on any axis."""
    span = size + 2 * p - k
    out = (-(-span // s) if ceil else span // s) + 1
    if padded and (out - 1) * s >= size + p:
        out -= 1
    return out


@dataclass(frozen=True)
class PoolGeometry:
    """Where Caffe's windows fall for one input size: output sizes, explicit (lo, hi) pads per axis,
    the AVE factor `window / divisor` (None when it is 1 everywhere) and whether a MAX window can be empty."""

    out: tuple[int, ...]
    pads: tuple[tuple[int, int], ...]
    ave_factor: np.ndarray | None
    empty_windows: bool


def caffe_pool_geometry(sizes, pool_size, strides, padding, ceil: bool) -> PoolGeometry:
    """The geometry of Caffe's pooling of spatial `sizes` (see the module doc)."""
    padded = any(p > 0 for p in padding)
    outs, pads, divisors, empty = [], [], [], False
    for size, k, s, p in zip(sizes, pool_size, strides, padding):
        out = caffe_pooled_length(size, k, s, p, ceil, padded)
        if out <= 0:
            raise ValueError(f"the input size {tuple(sizes)} is too small for pool_size {tuple(pool_size)} "
                             f"with padding {tuple(padding)}")
        start = np.arange(out) * s - p
        divisors.append(np.minimum(start + k, size + p) - start)  # Caffe's pool_size, before clipping
        empty = empty or bool(np.any(start >= size))
        outs.append(out)
        pads.append((p, max(0, (out - 1) * s + k - size - p)))
    window = float(np.prod(pool_size))
    divisor = np.multiply.outer(divisors[0], divisors[1]).astype(np.float64)
    factor = None
    if np.any(divisor != window):
        with np.errstate(divide="ignore"):
            factor = (window / divisor).astype(np.float32)
    return PoolGeometry(tuple(outs), tuple(pads), factor, empty)


@register_layer()
class CaffePooling2D(Layer):
    """Caffe's MAX / AVE pooling over (rows, cols) with symmetric explicit `padding` (pad_h, pad_w).

    `mode`: "max" or "ave"; `rounding`: "ceil" (Caffe's default) or "floor". `strides` defaults to `pool_size`
    as in Keras (Caffe's own default stride is 1: a converter passes it). No weights. Caffe's global pooling is
    `pool_size` = (H, W) with no padding and stride 1.
    """

    rank = 2
    registered_name = "CaffePooling2D"  # as tf_keras records a custom class; Keras 3: kconvert_only_keras3

    def __init__(self, pool_size=(2, 2), strides=None, padding=(0, 0), mode: str = "max", rounding: str = "ceil",
                 data_format: str | None = None, **kwargs):
        super().__init__(**kwargs)
        kconvert_only_keras3(self)
        self.pool_size = normalize_tuple(pool_size, 2, "pool_size", layer=self.name)
        self.strides = normalize_tuple(strides if strides is not None else self.pool_size, 2, "strides",
                                       layer=self.name)
        self.padding = normalize_tuple(padding, 2, "padding", allow_zero=True, layer=self.name)
        if any(p >= k for p, k in zip(self.padding, self.pool_size)):
            raise ConfigError(f"padding {self.padding} must be smaller than pool_size {self.pool_size} "
                              "(Caffe refuses it too)", layer=self.name)
        self.mode = str(mode).lower()
        if self.mode not in _MODES:
            raise ConfigError(f"mode must be one of {_MODES}, got {mode!r}", layer=self.name)
        self.rounding = str(rounding).lower()
        if self.rounding not in _ROUNDINGS:
            raise ConfigError(f"rounding must be one of {_ROUNDINGS}, got {rounding!r}", layer=self.name)
        self.data_format = normalize_data_format(data_format, layer=self.name)

    def geometry(self, sizes) -> PoolGeometry:
        return caffe_pool_geometry(sizes, self.pool_size, self.strides, self.padding, self.rounding == "ceil")

    def build(self, input_shape):
        check_rank(self, input_shape, 4)

    def call(self, inputs):
        x = inputs
        channels_last = self.data_format == "channels_last"
        geo = self.geometry([x.shape[a] for a in ops.spatial_axes(x.ndim, channels_last)])
        if self.mode == "max":
            y = ops.max_pool(x, self.pool_size, self.strides, geo.pads, channels_last=channels_last)
            return ops.maximum(y, np.asarray(FLT_LOWEST, y.dtype)) if geo.empty_windows else y
        y = ops.avg_pool(x, self.pool_size, self.strides, geo.pads, count_include_pad=True,
                         channels_last=channels_last)
        if geo.ave_factor is None:
            return y
        factor = geo.ave_factor[..., None] if channels_last else geo.ave_factor
        with np.errstate(invalid="ignore"):  # an empty window: 0 * inf = nan, Caffe's 0 / 0
            return ops.multiply(y, factor.astype(y.dtype))

    def compute_output_shape(self, input_shape):
        spatial, channels = split_spatial(input_shape, self.data_format)
        padded = any(p > 0 for p in self.padding)
        out = [None if n is None else caffe_pooled_length(n, k, s, p, self.rounding == "ceil", padded)
               for n, k, s, p in zip(spatial, self.pool_size, self.strides, self.padding)]
        if any(o is not None and o <= 0 for o in out):
            raise ValueError(f"the input size {spatial} is too small for pool_size {self.pool_size}")
        return join_spatial(input_shape[0], out, channels, self.data_format)

    def compute_output_layout(self, input_layouts, output_shape):
        return spatial_layout(2, self.data_format)

    def get_config(self):
        return {**super().get_config(), "pool_size": self.pool_size, "strides": self.strides,
                "padding": self.padding, "mode": self.mode, "rounding": self.rounding,
                "data_format": self.data_format}


def max_pool_mask_taps(geo: PoolGeometry, sizes, pool_size, strides, padding):
    """The window offsets of Caffe's MAX pooling in its scan order, each with the (out_h, out_w) float32 array of
    Caffe's flat input index `h * W + w` that offset reads at every output position (`padding`: the lo pads)."""
    w, (sh, sw), (ph, pw) = sizes[1], strides, padding
    rows = np.arange(geo.out[0])[:, None] * sh - ph
    cols = np.arange(geo.out[1])[None, :] * sw - pw
    return [((i, j), ((rows + i) * w + (cols + j)).astype(np.float32))
            for i in range(pool_size[0]) for j in range(pool_size[1])]


@register_layer()
class CaffeMaxPoolingMask(CaffePooling2D):
    """The second top of Caffe's MAX Pooling: per output position, the flat index `h * W + w` (as float) of the
    element CaffePooling2D's max came from, padding excluded.

    Caffe scans each window row by row and replaces the max only when an element is strictly greater, so the first
    maximum wins ties; a window with no real element gives -1 (BVLC `pooling_layer.cpp`, the `mask` / `top_mask`
    branch). Same config as CaffePooling2D, without `mode`.
    """

    registered_name = "CaffeMaxPoolingMask"  # as tf_keras records a custom class; Keras 3: kconvert_only_keras3

    def __init__(self, pool_size=(2, 2), strides=None, padding=(0, 0), rounding: str = "ceil",
                 data_format: str | None = None, **kwargs):
        kwargs.pop("mode", None)
        super().__init__(pool_size, strides, padding, "max", rounding, data_format, **kwargs)

    def call(self, inputs):
        channels_last = self.data_format == "channels_last"
        x = np.moveaxis(np.asarray(inputs), -1, 1) if channels_last else np.asarray(inputs)
        sizes = x.shape[2:]
        geo = self.geometry(sizes)
        xp = np.pad(x, ((0, 0), (0, 0), *geo.pads), constant_values=FLT_LOWEST)
        best = np.full((*x.shape[:2], *geo.out), FLT_LOWEST, x.dtype)
        mask = np.full(best.shape, -1.0, np.float32)
        (sh, sw), (oh, ow) = self.strides, geo.out
        for (i, j), index in max_pool_mask_taps(geo, sizes, self.pool_size, self.strides, self.padding):
            cand = xp[:, :, i:i + (oh - 1) * sh + 1:sh, j:j + (ow - 1) * sw + 1:sw]
            wins = cand > best
            best = np.where(wins, cand, best)
            mask = np.where(wins, index, mask)
        return np.ascontiguousarray(np.moveaxis(mask, 1, -1)) if channels_last else mask

    def get_config(self):
        config = super().get_config()
        config.pop("mode")
        return config
