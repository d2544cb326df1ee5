"""Layers of Caffe forks that no Keras layer computes exactly: PSPNet/DeepLab's Interp and SegNet's max-unpooling.

Interp (hszhao/PSPNet `src/caffe/layers/interp_layer.cpp`, `src/caffe/util/interp.cpp`): the input is cropped by
`-pad_beg` rows/columns at the start and `-pad_end` at the end (both <= 0: `caffe_cpu_interp2` checks that the
window lies inside the input), giving an effective size `e = size + pad_beg + pad_end`; the output size is, in
Caffe's order of precedence,

- `shrink_factor` s alone: `(e - 1) // s + 1`;
- `zoom_factor` z alone: `e + (e - 1) * (z - 1)`;
- `height` and `width`: those;
- both factors: shrink, then zoom;

and every output pixel samples the cropped input bilinearly with aligned corners: `src = dst * (e - 1) / (out - 1)`
(0 when out == 1), lower tap `floor(src)`, upper tap `min(floor(src) + 1, e - 1)`.

Upsample with a mask (alexgkendall/caffe-segnet `src/caffe/layers/upsample_layer.cpp`): the top starts at zero and
for every bottom element i (per sample and channel, in raster order) `top[mask[i]] = bottom[i]`, the mask holding
Caffe's flat index `h * W + w` of the top (Pooling's second top). A later i overwrites an earlier one writing the
same place, so each top element takes the bottom element with the largest i whose mask names it. Mask values
outside the top (Caffe aborts on them) are ignored. The top is `upsample_h x upsample_w`, or
`H * scale_h - pad_out_h` by `W * scale_w - pad_out_w`.
"""

from __future__ import annotations

import numpy as np

from .. import ops
from ..errors import ConfigError
from .base import Layer, is_shape_list, register_layer
from .caffe_pooling import kconvert_only_keras3
from .pooling import check_rank, join_spatial, normalize_data_format, spatial_layout, split_spatial


def _opt_int(value, what: str, layer: str, minimum: int | None = None) -> int | None:
    if value is None:
        return None
    try:
        out = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be an integer, got {value!r}", layer=layer) from None
    if minimum is not None and out < minimum:
        raise ConfigError(f"{what} must be at least {minimum}, got {value!r}", layer=layer)
    return out


def interp_output_length(size: int, zoom: int | None, shrink: int | None, target: int | None,
                         pad_beg: int, pad_end: int) -> int:
    """Caffe Interp's output length on one axis (see the module doc); `target` is height or width."""
    eff = size + pad_beg + pad_end
    if eff <= 0:
        raise ValueError(f"the input size {size} is too small for pad_beg {pad_beg} and pad_end {pad_end}")
    if shrink is not None and zoom is None:
        return (eff - 1) // shrink + 1
    if zoom is not None and shrink is None:
        return eff + (eff - 1) * (zoom - 1)
    if target is not None:
        return target
    if shrink is not None and zoom is not None:
        out = (eff - 1) // shrink + 1
        return out + (out - 1) * (zoom - 1)
    raise ValueError("Interp needs zoom_factor, shrink_factor, or height and width")


@register_layer()
class CaffeInterp(Layer):
    """Caffe's Interp (PSPNet, DeepLab): crop by the (non-positive) pads, then align-corners bilinear resizing.

    `zoom_factor` / `shrink_factor` are None when the prototxt does not set them (Caffe tells "set to 1" from
    "not set"); `height` / `width` likewise. No weights.
    """

    rank = 2
    registered_name = "CaffeInterp"  # as tf_keras records a custom class; Keras 3: kconvert_only_keras3

    def __init__(self, height: int | None = None, width: int | None = None, zoom_factor: int | None = None,
                 shrink_factor: int | None = None, pad_beg: int = 0, pad_end: int = 0,
                 data_format: str | None = None, **kwargs):
        super().__init__(**kwargs)
        kconvert_only_keras3(self)
        self.height = _opt_int(height, "height", self.name, 1)
        self.width = _opt_int(width, "width", self.name, 1)
        if (self.height is None) != (self.width is None):
            raise ConfigError("height and width must be given together", layer=self.name)
        self.zoom_factor = _opt_int(zoom_factor, "zoom_factor", self.name, 1)
        self.shrink_factor = _opt_int(shrink_factor, "shrink_factor", self.name, 1)
        if self.zoom_factor is None and self.shrink_factor is None and self.height is None:
            raise ConfigError("Interp needs zoom_factor, shrink_factor, or height and width", layer=self.name)
        self.pad_beg = _opt_int(pad_beg, "pad_beg", self.name)
        self.pad_end = _opt_int(pad_end, "pad_end", self.name)
        if self.pad_beg > 0 or self.pad_end > 0:
            raise ConfigError(f"pad_beg ({self.pad_beg}) and pad_end ({self.pad_end}) must be <= 0: Caffe's Interp "
                              "only crops its input", layer=self.name)
        self.data_format = normalize_data_format(data_format, layer=self.name)

    def output_size(self, sizes) -> tuple[int, int]:
        """(out_h, out_w) for input spatial `sizes`."""
        targets = (self.height, self.width)
        return tuple(interp_output_length(int(n), self.zoom_factor, self.shrink_factor, t, self.pad_beg,
                                          self.pad_end) for n, t in zip(sizes, targets))

    def build(self, input_shape):
        check_rank(self, input_shape, 4)

    def call(self, inputs):
        x = inputs
        channels_last = self.data_format == "channels_last"
        axes = ops.spatial_axes(x.ndim, channels_last)
        out = self.output_size([x.shape[a] for a in axes])
        if self.pad_beg or self.pad_end:
            x = ops.crop(x, {a: (-self.pad_beg, -self.pad_end) for a in axes})
        return ops.resize(x, out, mode="bilinear", coordinate_transformation="align_corners",
                          channels_last=channels_last)

    def compute_output_shape(self, input_shape):
        spatial, channels = split_spatial(input_shape, self.data_format)
        out = [None] * 2 if any(n is None for n in spatial) else list(self.output_size(spatial))
        return join_spatial(input_shape[0], out, channels, self.data_format)

    def compute_output_layout(self, input_layouts, output_shape):
        return spatial_layout(2, self.data_format)

    def get_config(self):
        return {**super().get_config(), "height": self.height, "width": self.width, "zoom_factor": self.zoom_factor,
                "shrink_factor": self.shrink_factor, "pad_beg": self.pad_beg, "pad_end": self.pad_end,
                "data_format": self.data_format}


def _pair(value, what: str, layer: str) -> tuple[int, int]:
    values = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if len(values) != 2:
        raise ConfigError(f"{what} must be one integer or two, got {value!r}", layer=layer)
    return int(values[0]), int(values[1])


def unpool_winners(mask: np.ndarray, out_size: int) -> np.ndarray:
    """For (rows, n_in) Caffe masks: (rows, out_size) int64, 1 + the largest input position writing each output
    position, 0 where none does (masks outside [0, out_size) are ignored)."""
    rows, n_in = mask.shape
    idx = mask.astype(np.int64)
    valid = (idx >= 0) & (idx < out_size) & (mask == idx)
    winners = np.zeros((rows, out_size), np.int64)
    r, i = np.nonzero(valid)  # row-major: i increases within a row, so the last write is the largest i
    np.maximum.at(winners, (r, idx[r, i]), i + 1)
    return winners


@register_layer()
class CaffeMaxUnpooling2D(Layer):
    """SegNet's Upsample layer called on `[x, mask]`: max-unpooling with Caffe's pooling mask (module doc).

    `scale` (scale_h, scale_w) and `pad_out` (pad_out_h, pad_out_w) give the output size `H * scale - pad_out`
    unless `size` (upsample_h, upsample_w) fixes it. No weights.
    """

    rank = 2
    registered_name = "CaffeMaxUnpooling2D"  # as tf_keras records a custom class; Keras 3: kconvert_only_keras3

    def __init__(self, scale=(2, 2), pad_out=(False, False), size=None, data_format: str | None = None, **kwargs):
        super().__init__(**kwargs)
        kconvert_only_keras3(self)
        self.scale = _pair(scale, "scale", self.name)
        if min(self.scale) < 1:
            raise ConfigError(f"scale must be positive, got {scale!r}", layer=self.name)
        pads = (pad_out, pad_out) if isinstance(pad_out, bool) else tuple(pad_out)
        if len(pads) != 2:
            raise ConfigError(f"pad_out must be one bool or two, got {pad_out!r}", layer=self.name)
        self.pad_out = (bool(pads[0]), bool(pads[1]))
        self.size = None if size is None else _pair(size, "size", self.name)
        if self.size is not None and min(self.size) < 1:
            raise ConfigError(f"size must be positive, got {size!r}", layer=self.name)
        self.data_format = normalize_data_format(data_format, layer=self.name)

    def output_size(self, sizes) -> tuple[int, int]:
        if self.size is not None:
            return self.size
        return tuple(int(n) * s - int(p) for n, s, p in zip(sizes, self.scale, self.pad_out))

    def build(self, input_shape):
        if not is_shape_list(input_shape) or len(input_shape) != 2:
            raise ValueError("CaffeMaxUnpooling2D is called on [x, mask]")
        x_shape, m_shape = (tuple(s) for s in input_shape)
        check_rank(self, x_shape, 4)
        if len(m_shape) != 4 or any(a is not None and b is not None and a != b
                                    for a, b in zip(x_shape[1:], m_shape[1:])):
            raise ValueError(f"the mask's shape {m_shape} must equal the input's {x_shape}")

    def call(self, inputs):
        x, mask = (np.asarray(v) for v in inputs)
        if self.data_format == "channels_last":
            x, mask = np.moveaxis(x, -1, 1), np.moveaxis(mask, -1, 1)
        n, c, h, w = x.shape
        oh, ow = self.output_size((h, w))
        winners = unpool_winners(mask.reshape(n * c, h * w), oh * ow)
        padded = np.concatenate([np.zeros((n * c, 1), x.dtype), x.reshape(n * c, h * w)], axis=1)
        y = np.take_along_axis(padded, winners, axis=1).reshape(n, c, oh, ow)
        return np.ascontiguousarray(np.moveaxis(y, 1, -1)) if self.data_format == "channels_last" else y

    def compute_output_shape(self, input_shape):
        x_shape = tuple(input_shape[0])
        spatial, channels = split_spatial(x_shape, self.data_format)
        out = [None] * 2 if self.size is None and any(s is None for s in spatial) else list(self.output_size(spatial))
        return join_spatial(x_shape[0], out, channels, self.data_format)

    def compute_output_layout(self, input_layouts, output_shape):
        return spatial_layout(2, self.data_format)

    def compute_mask(self, inputs, mask=None):
        return None

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "pad_out": self.pad_out, "size": self.size,
                "data_format": self.data_format}
