"""Preprocessing layers that models carry inside them: Rescaling, Normalization, Resizing, CenterCrop, and the
random augmentation layers (identity at inference).

Resizing computes as TensorFlow's `tf.image.resize` (which both tf.keras and Keras 3's TensorFlow backend
call): half-pixel bilinear and nearest, Keys bicubic (a = -0.5, with TensorFlow's 1/1024 weight table and its
renormalised borders) and area averaging.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import ops
from ..errors import ConfigError
from ..ops.array_module import const
from .base import Layer, register_layer


def _value(v: Any) -> Any:
    """A scalar or array argument as saved (Keras 3 may write numpy values as `__numpy__` objects)."""
    if isinstance(v, dict) and v.get("class_name") in ("__numpy__", "__tensor__"):
        cfg = v.get("config", {})
        return np.asarray(cfg.get("value"), dtype=cfg.get("dtype"))
    return v


def _listify(v: Any) -> Any:
    return v.tolist() if isinstance(v, np.ndarray) else v


# ---------------------------------------------------------------------------------------------- Rescaling


@register_layer()
class Rescaling(Layer):
    """y = x * scale + offset, in the layer's dtype (`scale`/`offset` scalars or per-channel lists)."""

    def __init__(self, scale, offset=0.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = _value(scale)
        self.offset = _value(offset)

    def call(self, inputs):
        x = np.asarray(inputs).astype(self.dtype, copy=False)
        return x * const(self.scale, self.dtype, like=x) + const(self.offset, self.dtype, like=x)

    def compute_output_dtype(self, input_dtypes):
        return self.dtype

    def get_config(self):
        return {**super().get_config(), "scale": _listify(self.scale), "offset": _listify(self.offset)}


# ---------------------------------------------------------------------------------------------- Normalization


@register_layer()
class Normalization(Layer):
    """(x - mean) / max(sqrt(variance), 1e-7) per position of `axis` (`invert=True`: the inverse).

    With `mean`/`variance` in the config it has no weights; otherwise the adapted statistics are the
    non-trainable weights `mean`, `variance` and `count` (int64), as tf.keras saves them.
    """

    def __init__(self, axis=-1, mean=None, variance=None, invert: bool = False, **kwargs):
        super().__init__(**kwargs)
        if axis is None:
            axis = ()
        self.axis = (int(axis),) if isinstance(axis, (int, np.integer)) else tuple(int(a) for a in axis)
        mean, variance = _value(mean), _value(variance)
        if (mean is None) != (variance is None):
            raise ConfigError("Normalization needs both `mean` and `variance`, or neither", layer=self.name)
        self.input_mean = mean
        self.input_variance = variance
        self.invert = bool(invert)

    def build(self, input_shape):
        ndim = len(input_shape)
        if any(a < -ndim or a >= ndim for a in self.axis):
            raise ValueError(f"every axis must be in [-{ndim}, {ndim}), got {self.axis}")
        keep = sorted(a % ndim for a in self.axis)
        if any(input_shape[d] is None for d in keep):
            raise ValueError(f"the kept axes {self.axis} of the input {input_shape} must be known")
        self._broadcast_shape = [input_shape[d] if d in keep else 1 for d in range(ndim)]
        shape = tuple(input_shape[d] for d in keep)
        if self.input_mean is None:
            self.adapt_mean = self.add_weight("mean", shape, "zeros", trainable=False)
            self.adapt_variance = self.add_weight("variance", shape, "ones", trainable=False)
            self.count = self.add_weight("count", (), "zeros", trainable=False, dtype="int64")
        else:
            self._mean = (np.asarray(self.input_mean) * np.ones(shape)).reshape(self._broadcast_shape)
            self._variance = (np.asarray(self.input_variance) * np.ones(shape)).reshape(self._broadcast_shape)

    def _stats(self):
        if self.input_mean is None:
            return (self.adapt_mean.value.reshape(self._broadcast_shape),
                    self.adapt_variance.value.reshape(self._broadcast_shape))
        return self._mean, self._variance

    def call(self, inputs):
        x = np.asarray(inputs).astype(self.dtype, copy=False)
        mean, variance = (const(s, self.dtype, like=x) for s in self._stats())
        std = np.maximum(np.sqrt(variance), const(1e-7, self.dtype))
        return mean + x * std if self.invert else (x - mean) / std

    def compute_output_dtype(self, input_dtypes):
        return self.dtype

    def get_config(self):
        return {**super().get_config(), "axis": list(self.axis), "invert": self.invert,
                "mean": _listify(self.input_mean), "variance": _listify(self.input_variance)}


# ---------------------------------------------------------------------------------------------- resizing kernels

_TABLE = 1024


def _keys_table(a: float = -0.5) -> np.ndarray:
    """TensorFlow's bicubic coefficient table: (f(x), f(x + 1)) for x = i / 1024, float32."""
    x = np.arange(_TABLE + 1, dtype=np.float64) / _TABLE
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    x1 = x + 1
    far = ((a * x1 - 5 * a) * x1 + 8 * a) * x1 - 4 * a
    return np.stack([near, far], axis=1).astype(np.float32)


def _bicubic_matrix(out_size: int, in_size: int) -> np.ndarray:
    """(out, in) weights of TensorFlow's half-pixel Keys-cubic resize along one axis."""
    table = _keys_table()
    scale = np.float32(in_size / out_size)
    m = np.zeros((out_size, in_size), np.float32)
    for o in range(out_size):
        loc = (np.float32(o) + np.float32(0.5)) * scale - np.float32(0.5)
        base = int(np.floor(loc))
        offset = int(np.rint((loc - base) * _TABLE))
        weights = [table[offset, 1], table[offset, 0], table[_TABLE - offset, 0], table[_TABLE - offset, 1]]
        taps = [(base + i - 1, w) for i, w in enumerate(weights) if 0 <= base + i - 1 < in_size]
        total = np.float32(sum(w for _, w in taps))
        for i, w in taps:
            m[o, i] += w / total if abs(total) >= 1000 * np.finfo(np.float32).tiny else w
    return m


def _area_matrix(out_size: int, in_size: int) -> np.ndarray:
    """(out, in) weights of TensorFlow's `resize_area`: the overlap of each output cell with each input pixel."""
    scale = in_size / out_size
    m = np.zeros((out_size, in_size), np.float64)
    for o in range(out_size):
        top, bottom = o * scale, (o + 1) * scale
        for i in range(int(np.floor(top)), int(np.ceil(bottom))):
            m[o, min(max(i, 0), in_size - 1)] += (min(i + 1, bottom) - max(i, top)) / scale
    return m.astype(np.float32)


def _resize_separable(x: np.ndarray, size, matrix_fn) -> np.ndarray:
    """Apply a per-axis (out, in) matrix along the rows and the columns of a channels-last image batch."""
    mh = matrix_fn(size[0], x.shape[1])
    mw = matrix_fn(size[1], x.shape[2])
    y = np.einsum("oh,nhwc->nowc", mh, x, optimize=True)
    return np.einsum("pw,nowc->nopc", mw, y, optimize=True).astype(np.float32, copy=False)


INTERPOLATIONS = ("bilinear", "nearest", "bicubic", "area")


def resize_images(x: np.ndarray, size, interpolation: str = "bilinear") -> np.ndarray:
    """`tf.image.resize` of a channels-last batch (antialias off)."""
    size = (int(size[0]), int(size[1]))
    if interpolation == "nearest":
        return ops.resize(x, size, "nearest", "half_pixel")
    x = x.astype(np.float32, copy=False)
    if interpolation == "bilinear":
        return ops.resize(x, size, "linear", "half_pixel")
    if interpolation == "bicubic":
        return _resize_separable(x, size, _bicubic_matrix)
    if interpolation == "area":
        return _resize_separable(x, size, _area_matrix)
    raise ValueError(f"unsupported interpolation '{interpolation}' (supported: {', '.join(INTERPOLATIONS)})")


def _to_aspect(size_hw, target, pad: bool) -> tuple[int, int]:
    """The crop (or pad) height and width that give the target's aspect ratio (Keras's float32 rounding)."""
    (h, w), (th, tw) = size_hw, target
    ah = int(np.float32(w * th) / np.float32(tw))
    aw = int(np.float32(h * tw) / np.float32(th))
    if pad:
        return max(h, ah), max(w, aw)
    return max(min(h, ah), 1), max(min(w, aw), 1)


def smart_resize(x: np.ndarray, size, interpolation: str = "bilinear") -> np.ndarray:
    """Keras's `smart_resize`: crop the largest centred box of the target aspect ratio, then resize."""
    ch, cw = _to_aspect(x.shape[1:3], size, pad=False)
    h0 = int(np.float32(x.shape[1] - ch) / 2)
    w0 = int(np.float32(x.shape[2] - cw) / 2)
    return resize_images(x[:, h0:h0 + ch, w0:w0 + cw], size, interpolation)


class _ImageLayer(Layer):
    """A layer on batches of images (batch, height, width, channels) or channels_first."""

    def __init__(self, height: int, width: int, data_format: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.height = int(height)
        self.width = int(width)
        self.data_format = data_format
        if data_format not in (None, "channels_last", "channels_first"):
            raise ConfigError(f"unknown data_format {data_format!r}", layer=self.name)

    def _channels_first(self) -> bool:
        return self.data_format == "channels_first"

    def call(self, inputs):
        x = np.asarray(inputs)
        unbatched = x.ndim == 3
        if unbatched:
            x = x[None]
        if self._channels_first():
            x = np.moveaxis(x, 1, -1)
        y = self._transform(x).astype(self.dtype, copy=False)
        if self._channels_first():
            y = np.moveaxis(y, -1, 1)
        return y[0] if unbatched else y

    def _transform(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def compute_output_shape(self, input_shape):
        shape = list(input_shape)
        h, w = (-2, -1) if self._channels_first() else (-3, -2)
        shape[h], shape[w] = self.height, self.width
        return tuple(shape)

    def compute_output_dtype(self, input_dtypes):
        return self.dtype

    def get_config(self):
        config = {**super().get_config(), "height": self.height, "width": self.width}
        if self._channels_first():  # Keras 3 only (tf.keras would not read it; it is written when it matters)
            config["data_format"] = self.data_format
        return config


@register_layer()
class Resizing(_ImageLayer):
    """Resizes images to (height, width); `crop_to_aspect_ratio` / Keras 3's `pad_to_aspect_ratio` first fit
    the aspect ratio."""

    def __init__(self, height: int, width: int, interpolation: str = "bilinear", crop_to_aspect_ratio: bool = False,
                 pad_to_aspect_ratio: bool = False, fill_mode: str = "constant", fill_value: float = 0.0,
                 antialias: bool = False, data_format: str | None = None, **kwargs):
        super().__init__(height, width, data_format, **kwargs)
        if interpolation not in INTERPOLATIONS:
            raise ConfigError(f"Resizing with interpolation '{interpolation}' is not supported (supported: "
                              f"{', '.join(INTERPOLATIONS)})", layer=self.name)
        if antialias:
            raise ConfigError("Resizing with antialias=True is not supported", layer=self.name)
        if fill_mode != "constant":
            raise ConfigError(f"Resizing supports only fill_mode 'constant', got {fill_mode!r}", layer=self.name)
        if crop_to_aspect_ratio and pad_to_aspect_ratio:
            raise ConfigError("only one of crop_to_aspect_ratio and pad_to_aspect_ratio can be True",
                              layer=self.name)
        self.interpolation = interpolation
        self.crop_to_aspect_ratio = bool(crop_to_aspect_ratio)
        self.pad_to_aspect_ratio = bool(pad_to_aspect_ratio)
        self.fill_mode = fill_mode
        self.fill_value = fill_value
        self.antialias = bool(antialias)

    def _transform(self, x):
        size = (self.height, self.width)
        if self.interpolation != "nearest":
            x = x.astype(np.float32, copy=False)
        if self.crop_to_aspect_ratio:
            return smart_resize(x, size, self.interpolation)
        if self.pad_to_aspect_ratio:
            ph, pw = _to_aspect(x.shape[1:3], size, pad=True)
            top = int(np.float32(ph - x.shape[1]) / 2)
            left = int(np.float32(pw - x.shape[2]) / 2)
            x = np.pad(x, [(0, 0), (top, top), (left, left), (0, 0)], constant_values=self.fill_value)
        return resize_images(x, size, self.interpolation)

    def get_config(self):
        config = {**super().get_config(), "interpolation": self.interpolation,
                  "crop_to_aspect_ratio": self.crop_to_aspect_ratio}
        if self.pad_to_aspect_ratio:  # Keras 3 only
            config.update(pad_to_aspect_ratio=self.pad_to_aspect_ratio, fill_mode=self.fill_mode,
                          fill_value=self.fill_value, antialias=self.antialias)
        return config


@register_layer()
class CenterCrop(_ImageLayer):
    """Crops the central (height, width) window; an image smaller than that is `smart_resize`d instead."""

    def _transform(self, x):
        dh, dw = x.shape[1] - self.height, x.shape[2] - self.width
        if dh >= 0 and dw >= 0:
            return x[:, dh // 2:dh // 2 + self.height, dw // 2:dw // 2 + self.width]
        return smart_resize(x, (self.height, self.width))


# ---------------------------------------------------------------------------------------------- augmentation


class _InferenceIdentity(Layer):
    """A random augmentation layer: the identity at inference; its arguments are kept for its config."""

    arguments: tuple[str, ...] = ()

    def __init__(self, *args, **kwargs):
        given = dict(zip(self.arguments, args))
        for k in ("rng_type", *self.arguments):  # tf.keras's random layers also write their generator type
            if k in kwargs:
                given[k] = kwargs.pop(k)
        super().__init__(**kwargs)
        self._arguments = given

    def call(self, inputs):
        return np.asarray(inputs).astype(self.dtype, copy=False)

    def compute_output_dtype(self, input_dtypes):
        return self.dtype

    def get_config(self):
        extra = {k: v for k, v in self._arguments.items() if not (k == "data_format" and v == "channels_last")}
        return {**super().get_config(), **extra}


_AUGMENTATIONS = {
    "RandomFlip": ("mode", "seed", "data_format"),
    "RandomRotation": ("factor", "fill_mode", "interpolation", "seed", "fill_value", "value_range", "data_format"),
    "RandomZoom": ("height_factor", "width_factor", "fill_mode", "interpolation", "seed", "fill_value",
                   "data_format"),
    "RandomTranslation": ("height_factor", "width_factor", "fill_mode", "interpolation", "seed", "fill_value",
                          "data_format"),
    "RandomContrast": ("factor", "seed", "value_range", "data_format"),
    "RandomBrightness": ("factor", "value_range", "seed", "data_format"),
    "RandomHeight": ("factor", "interpolation", "seed"),
    "RandomWidth": ("factor", "interpolation", "seed"),
}

for _name, _args in _AUGMENTATIONS.items():
    register_layer()(type(_name, (_InferenceIdentity,), {
        "arguments": _args, "__module__": __name__,
        "__doc__": f"Keras's {_name}: a random augmentation in training, the identity at inference."}))
