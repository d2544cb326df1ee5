"""Pooling layers: Max/AveragePooling1D/2D/3D and GlobalMax/GlobalAveragePooling1D/2D/3D, with Keras aliases.

Also the config normalisers these and the reshaping layers share (`normalize_tuple`, `normalize_padding`,
`normalize_data_format`, as in Keras's `conv_utils`) and `spatial_layout`, the IR layout string of a
data format.
"""

from __future__ import annotations

from collections.abc import Sequence

from .. import ops
from ..errors import ConfigError
from .base import Layer, register_layer

# ---------------------------------------------------------------------------------------------- config helpers

_SPATIAL_LETTERS = {1: "W", 2: "HW", 3: "DHW"}


def normalize_tuple(value, n: int, name: str, allow_zero: bool = False, layer: str | None = None) -> tuple:
    """An int or an iterable of `n` ints as a tuple of `n` ints (Keras's `conv_utils.normalize_tuple`)."""
    if isinstance(value, int) and not isinstance(value, bool):
        values = (value,) * n
    else:
        try:
            values = tuple(value)
        except TypeError:
            raise ConfigError(f"the `{name}` argument must be an int or a tuple of {n} ints, got {value!r}",
                              layer=layer) from None
        if len(values) != n:
            raise ConfigError(f"the `{name}` argument must be a tuple of {n} ints, got {value!r}", layer=layer)
        try:
            values = tuple(int(v) for v in values)
        except (TypeError, ValueError):
            raise ConfigError(f"the `{name}` argument must be a tuple of {n} ints, got {value!r}",
                              layer=layer) from None
    bad = [v for v in values if (v < 0 if allow_zero else v <= 0)]
    if bad:
        raise ConfigError(f"the `{name}` argument must hold values {'>= 0' if allow_zero else '> 0'}, "
                          f"got {value!r}", layer=layer)
    return values


def normalize_padding(value, allowed: Sequence[str] = ("valid", "same"), layer: str | None = None) -> str:
    padding = str(value).lower()
    if padding not in allowed:
        raise ConfigError(f"padding must be one of {tuple(allowed)}, got {value!r}", layer=layer)
    return padding


def normalize_data_format(value, layer: str | None = None) -> str:
    """'channels_last' / 'channels_first'; None is Keras's default image data format, 'channels_last'."""
    if value is None:
        return "channels_last"
    data_format = str(value).lower()
    if data_format not in ("channels_last", "channels_first"):
        raise ConfigError(f"data_format must be 'channels_last' or 'channels_first', got {value!r}", layer=layer)
    return data_format


def spatial_layout(rank: int, data_format: str) -> str:
    """The IR layout string of a `rank`-d spatial tensor: 'NHWC' / 'NCHW', 'NWC', 'NCDHW', ..."""
    sp = _SPATIAL_LETTERS[rank]
    return "NC" + sp if data_format == "channels_first" else "N" + sp + "C"


def check_rank(layer: Layer, input_shape, ndim: int) -> None:
    if len(input_shape) != ndim:
        raise ValueError(f"{type(layer).__name__} expects inputs of rank {ndim}, got shape {tuple(input_shape)}")


def split_spatial(input_shape, data_format: str):
    """(spatial dims, channels) of a batch shape in the given data format."""
    if data_format == "channels_first":
        return tuple(input_shape[2:]), input_shape[1]
    return tuple(input_shape[1:-1]), input_shape[-1]


def join_spatial(batch, spatial, channels, data_format: str) -> tuple:
    if data_format == "channels_first":
        return (batch, channels, *spatial)
    return (batch, *spatial, channels)


# ---------------------------------------------------------------------------------------------- windowed


class _Pooling(Layer):
    """Max or average pooling over `rank` spatial axes (Keras's Pooling1D/2D/3D)."""

    rank = 2
    mode = "max"
    _config_keys = ("pool_size", "padding", "strides", "data_format")

    def __init__(self, pool_size, strides, padding="valid", data_format=None, **kwargs):
        super().__init__(**kwargs)
        if strides is None:
            strides = pool_size
        self.pool_size = normalize_tuple(pool_size, self.rank, "pool_size", layer=self.name)
        self.strides = normalize_tuple(strides, self.rank, "strides", layer=self.name)
        self.padding = normalize_padding(padding, layer=self.name)
        self.data_format = normalize_data_format(data_format, layer=self.name)

    def build(self, input_shape):
        check_rank(self, input_shape, self.rank + 2)

    def call(self, inputs):
        channels_last = self.data_format == "channels_last"
        sizes = [inputs.shape[a] for a in ops.spatial_axes(inputs.ndim, channels_last)]
        pads = ops.explicit_pads(self.padding, sizes, self.pool_size, self.strides)
        if self.mode == "max":
            return ops.max_pool(inputs, self.pool_size, self.strides, pads, channels_last=channels_last)
        # TF's 'SAME' average divides by the real (unpadded) elements of each window
        return ops.avg_pool(inputs, self.pool_size, self.strides, pads, count_include_pad=False,
                            channels_last=channels_last)

    def compute_output_shape(self, input_shape):
        spatial, channels = split_spatial(input_shape, self.data_format)
        out = [ops.output_length(s, k, self.padding, st) for s, k, st in zip(spatial, self.pool_size, self.strides)]
        if any(o is not None and o <= 0 for o in out):
            raise ValueError(f"the input spatial size {spatial} is too small for pool_size {self.pool_size} "
                             f"with padding '{self.padding}'")
        return join_spatial(input_shape[0], out, channels, self.data_format)

    def compute_output_layout(self, input_layouts, output_shape):
        return spatial_layout(self.rank, self.data_format)

    def get_config(self):
        values = {"pool_size": self.pool_size, "padding": self.padding, "strides": self.strides,
                  "data_format": self.data_format}
        return {**super().get_config(), **{k: values[k] for k in self._config_keys}}


@register_layer("MaxPool1D")
class MaxPooling1D(_Pooling):
    rank, mode = 1, "max"
    _config_keys = ("strides", "pool_size", "padding", "data_format")

    def __init__(self, pool_size=2, strides=None, padding="valid", data_format="channels_last", **kwargs):
        super().__init__(pool_size, strides, padding, data_format, **kwargs)


@register_layer("MaxPool2D")
class MaxPooling2D(_Pooling):
    rank, mode = 2, "max"

    def __init__(self, pool_size=(2, 2), strides=None, padding="valid", data_format=None, **kwargs):
        super().__init__(pool_size, strides, padding, data_format, **kwargs)


@register_layer("MaxPool3D")
class MaxPooling3D(_Pooling):
    rank, mode = 3, "max"

    def __init__(self, pool_size=(2, 2, 2), strides=None, padding="valid", data_format=None, **kwargs):
        super().__init__(pool_size, strides, padding, data_format, **kwargs)


@register_layer("AvgPool1D")
class AveragePooling1D(_Pooling):
    rank, mode = 1, "avg"
    _config_keys = ("strides", "pool_size", "padding", "data_format")

    def __init__(self, pool_size=2, strides=None, padding="valid", data_format="channels_last", **kwargs):
        super().__init__(pool_size, strides, padding, data_format, **kwargs)


@register_layer("AvgPool2D")
class AveragePooling2D(_Pooling):
    rank, mode = 2, "avg"

    def __init__(self, pool_size=(2, 2), strides=None, padding="valid", data_format=None, **kwargs):
        super().__init__(pool_size, strides, padding, data_format, **kwargs)


@register_layer("AvgPool3D")
class AveragePooling3D(_Pooling):
    rank, mode = 3, "avg"

    def __init__(self, pool_size=(2, 2, 2), strides=None, padding="valid", data_format=None, **kwargs):
        super().__init__(pool_size, strides, padding, data_format, **kwargs)


# ---------------------------------------------------------------------------------------------- global


class _GlobalPooling(Layer):
    """Max or mean over all spatial axes (Keras's GlobalPooling1D/2D/3D)."""

    rank = 2
    mode = "max"

    def __init__(self, data_format=None, keepdims=False, **kwargs):
        super().__init__(**kwargs)
        self.data_format = normalize_data_format(data_format, layer=self.name)
        self.keepdims = keepdims

    def _axes(self, ndim):
        return ops.spatial_axes(ndim, self.data_format == "channels_last")

    def build(self, input_shape):
        check_rank(self, input_shape, self.rank + 2)
        for a in self._axes(len(input_shape)):
            if input_shape[a] == 0:
                raise ValueError(f"incorrect input shape {tuple(input_shape)} with dimension 0 at reduction "
                                 f"axis {a}")

    def call(self, inputs):
        axes = self._axes(inputs.ndim)
        if self.mode == "max":
            return ops.global_max_pool(inputs, axes, keepdims=bool(self.keepdims))
        return ops.global_avg_pool(inputs, axes, keepdims=bool(self.keepdims))

    def compute_output_shape(self, input_shape):
        _, channels = split_spatial(input_shape, self.data_format)
        if not self.keepdims:
            return (input_shape[0], channels)
        return join_spatial(input_shape[0], (1,) * self.rank, channels, self.data_format)

    def compute_output_layout(self, input_layouts, output_shape):
        return spatial_layout(self.rank, self.data_format) if self.keepdims else None

    def get_config(self):
        return {**super().get_config(), "data_format": self.data_format, "keepdims": self.keepdims}


@register_layer("GlobalMaxPool1D")
class GlobalMaxPooling1D(_GlobalPooling):
    rank, mode = 1, "max"

    def __init__(self, data_format="channels_last", keepdims=False, **kwargs):
        super().__init__(data_format, keepdims, **kwargs)


@register_layer("GlobalMaxPool2D")
class GlobalMaxPooling2D(_GlobalPooling):
    rank, mode = 2, "max"


@register_layer("GlobalMaxPool3D")
class GlobalMaxPooling3D(_GlobalPooling):
    rank, mode = 3, "max"


@register_layer("GlobalAvgPool1D")
class GlobalAveragePooling1D(_GlobalPooling):
    """Mean over the steps; a (N, steps) mask from upstream restricts the mean to the unmasked steps."""

    rank, mode = 1, "avg"
    supports_masking = True

    def __init__(self, data_format="channels_last", keepdims=False, **kwargs):
        super().__init__(data_format, keepdims, **kwargs)

    def call(self, inputs, mask=None):
        axes = self._axes(inputs.ndim)
        if mask is None:
            return ops.global_avg_pool(inputs, axes, keepdims=bool(self.keepdims))
        # the mask (N, steps) is put on the steps axis; a fully masked sample gives 0/0 = nan, as in Keras
        m = ops.expand_dims(ops.cast(mask, inputs.dtype), 2 if self.data_format == "channels_last" else 1)
        return ops.global_avg_pool(inputs, axes, keepdims=bool(self.keepdims), mask=m)

    def compute_mask(self, inputs, mask=None):
        return None


@register_layer("GlobalAvgPool2D")
class GlobalAveragePooling2D(_GlobalPooling):
    rank, mode = 2, "avg"


@register_layer("GlobalAvgPool3D")
class GlobalAveragePooling3D(_GlobalPooling):
    rank, mode = 3, "avg"


MaxPool1D, MaxPool2D, MaxPool3D = MaxPooling1D, MaxPooling2D, MaxPooling3D
AvgPool1D, AvgPool2D, AvgPool3D = AveragePooling1D, AveragePooling2D, AveragePooling3D
GlobalMaxPool1D, GlobalMaxPool2D, GlobalMaxPool3D = GlobalMaxPooling1D, GlobalMaxPooling2D, GlobalMaxPooling3D
GlobalAvgPool1D, GlobalAvgPool2D, GlobalAvgPool3D = (GlobalAveragePooling1D, GlobalAveragePooling2D,
                                                     GlobalAveragePooling3D)

__all__ = [
    "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D", "AveragePooling2D", "AveragePooling3D",
    "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D",
    "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D",
    "MaxPool1D", "MaxPool2D", "MaxPool3D", "AvgPool1D", "AvgPool2D", "AvgPool3D",
    "GlobalMaxPool1D", "GlobalMaxPool2D", "GlobalMaxPool3D", "GlobalAvgPool1D", "GlobalAvgPool2D",
    "GlobalAvgPool3D",
    "normalize_tuple", "normalize_padding", "normalize_data_format", "spatial_layout",
]
