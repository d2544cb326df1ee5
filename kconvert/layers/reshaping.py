"""Reshaping layers: Flatten, Reshape, Permute, RepeatVector, ZeroPadding1D/2D/3D, Cropping1D/2D/3D and
UpSampling1D/2D/3D."""

from __future__ import annotations

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

_LAYOUTS = {"NWC", "NCW", "NHWC", "NCHW", "NDHWC", "NCDHW"}


# ---------------------------------------------------------------------------------------------- Flatten


@register_layer()
class Flatten(Layer):
    """(N, ...) -> (N, prod(...)); channels_first input is flattened in channels-last order, as Keras does."""

    def __init__(self, data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.data_format = normalize_data_format(data_format, layer=self.name)

    def call(self, inputs):
        x = inputs
        if self.data_format == "channels_first" and x.ndim > 2:
            x = ops.transpose(x, (0, *range(2, x.ndim), 1))
        return ops.reshape(x, (0, -1))

    def compute_output_shape(self, input_shape):
        if len(input_shape) == 0:
            return (1,)
        rest = input_shape[1:]
        if any(d is None for d in rest):
            return (input_shape[0], None)
        return (input_shape[0], int(np.prod(rest, dtype=np.int64)))

    def compute_output_layout(self, input_layouts, output_shape):
        return None

    def get_config(self):
        return {**super().get_config(), "data_format": self.data_format}


# ---------------------------------------------------------------------------------------------- Reshape


@register_layer()
class Reshape(Layer):
    """Reshape the non-batch dims to `target_shape`; one entry may be -1 (inferred)."""

    def __init__(self, target_shape, **kwargs):
        super().__init__(**kwargs)
        try:
            self.target_shape = tuple(int(d) for d in target_shape)
        except (TypeError, ValueError):
            raise ConfigError(f"target_shape must be a tuple of ints, got {target_shape!r}",
                              layer=self.name) from None
        if sum(d < 0 for d in self.target_shape) > 1:
            raise ConfigError(f"target_shape may hold at most one -1, got {self.target_shape}", layer=self.name)

    def _fix_unknown(self, input_dims) -> tuple:
        out = list(self.target_shape)
        known = int(np.prod([d for d in out if d >= 0], dtype=np.int64))
        original = int(np.prod(input_dims, dtype=np.int64))
        unknown = [i for i, d in enumerate(out) if d < 0]
        if unknown:
            if known == 0 or original % known:
                raise ValueError(f"cannot reshape {tuple(input_dims)} to {self.target_shape}: the total size "
                                 "of the new array must be unchanged")
            out[unknown[0]] = original // known
        elif original != known:
            raise ValueError(f"cannot reshape {tuple(input_dims)} to {self.target_shape}: the total size of the "
                             "new array must be unchanged")
        return tuple(out)

    def call(self, inputs):
        return ops.reshape(inputs, (inputs.shape[0], *self._fix_unknown(inputs.shape[1:])))

    def compute_output_shape(self, input_shape):
        if any(d is None for d in input_shape[1:]):
            return (input_shape[0], *(None if d == -1 else d for d in self.target_shape))
        return (input_shape[0], *self._fix_unknown(input_shape[1:]))

    def compute_output_layout(self, input_layouts, output_shape):
        return None

    def get_config(self):
        return {**super().get_config(), "target_shape": self.target_shape}


# ---------------------------------------------------------------------------------------------- Permute


@register_layer()
class Permute(Layer):
    """Permute the non-batch axes: output axis i+1 is input axis dims[i] (dims count from 1)."""

    def __init__(self, dims, **kwargs):
        super().__init__(**kwargs)
        try:
            self.dims = tuple(int(d) for d in dims)
        except (TypeError, ValueError):
            raise ConfigError(f"dims must be a tuple of ints, got {dims!r}", layer=self.name) from None
        if sorted(self.dims) != list(range(1, len(self.dims) + 1)):
            raise ConfigError("invalid permutation argument `dims` for Permute: the indices must be consecutive "
                              f"and start from 1, got {self.dims}", layer=self.name)

    def build(self, input_shape):
        check_rank(self, input_shape, len(self.dims) + 1)

    def call(self, inputs):
        return ops.transpose(inputs, (0, *self.dims))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *(input_shape[d] for d in self.dims))

    def compute_output_layout(self, input_layouts, output_shape):
        """A permuted spatial layout ('NHWC' with dims (3, 1, 2) gives 'NCHW'), when it is a known one."""
        layout = input_layouts[0] if input_layouts else None
        if layout is None or len(layout) != len(self.dims) + 1:
            return None
        permuted = layout[0] + "".join(layout[d] for d in self.dims)
        return permuted if permuted in _LAYOUTS else None

    def get_config(self):
        return {**super().get_config(), "dims": self.dims}


# ---------------------------------------------------------------------------------------------- RepeatVector


@register_layer()
class RepeatVector(Layer):
    """(N, D) -> (N, n, D)."""

    def __init__(self, n, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(n, int) or isinstance(n, bool):
            raise ConfigError(f"expected an integer value for `n`, got {type(n).__name__}", layer=self.name)
        self.n = n

    def build(self, input_shape):
        check_rank(self, input_shape, 2)

    def call(self, inputs):
        return ops.tile(ops.expand_dims(inputs, 1), (1, self.n, 1))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.n, input_shape[1])

    def get_config(self):
        return {**super().get_config(), "n": self.n}


# ---------------------------------------------------------------------------------------------- padding / cropping


def _pairs(value, rank: int, name: str, layer: str):
    """Keras's ZeroPadding/Cropping argument: an int, `rank` ints, or `rank` (lo, hi) pairs."""
    if isinstance(value, int) and not isinstance(value, bool):
        return ((value, value),) * rank
    if not hasattr(value, "__len__") or len(value) != rank:
        raise ConfigError(f"`{name}` should be an int, a tuple of {rank} ints or a tuple of {rank} tuples of 2 "
                          f"ints, got {value!r}", layer=layer)
    return tuple(normalize_tuple(v, 2, f"entry {i + 1} of {name}", allow_zero=True, layer=layer)
                 for i, v in enumerate(value))


class _SpatialEdit(Layer):
    """Shared shape logic of ZeroPadding*D and Cropping*D: add (sign +1) or remove (-1) (lo, hi) per axis."""

    rank = 2
    sign = 1
    attr = "padding"

    def _amounts(self):
        return getattr(self, self.attr)

    def _data_format(self):
        return getattr(self, "data_format", "channels_last")

    def build(self, input_shape):
        check_rank(self, input_shape, self.rank + 2)
        self.compute_output_shape(input_shape)

    def compute_output_shape(self, input_shape):
        spatial, channels = split_spatial(input_shape, self._data_format())
        out = []
        for s, (lo, hi) in zip(spatial, self._amounts()):
            o = None if s is None else s + self.sign * (lo + hi)
            if o is not None and o <= 0:
                raise ValueError(f"cropping {self._amounts()} is too large for the input shape {tuple(input_shape)}")
            out.append(o)
        return join_spatial(input_shape[0], out, channels, self._data_format())

    def _axes_amounts(self, ndim):
        axes = ops.spatial_axes(ndim, self._data_format() == "channels_last")
        return dict(zip(axes, self._amounts()))

    def call(self, inputs):
        amounts = self._axes_amounts(inputs.ndim)
        return ops.pad(inputs, amounts) if self.sign > 0 else ops.crop(inputs, amounts)

    def compute_output_layout(self, input_layouts, output_shape):
        if self.rank == 1:  # no data_format: the input's own layout, if any
            return super().compute_output_layout(input_layouts, output_shape)
        return spatial_layout(self.rank, self._data_format())


@register_layer()
class ZeroPadding1D(_SpatialEdit):
    """Zeros added at the start and end of the steps axis of (N, steps, features)."""

    rank, sign, attr = 1, 1, "padding"

    def __init__(self, padding=1, **kwargs):
        super().__init__(**kwargs)
        self.padding = normalize_tuple(padding, 2, "padding", allow_zero=True, layer=self.name)

    def _amounts(self):
        return (self.padding,)

    def get_config(self):
        return {**super().get_config(), "padding": self.padding}


@register_layer()
class ZeroPadding2D(_SpatialEdit):
    rank, sign, attr = 2, 1, "padding"

    def __init__(self, padding=(1, 1), data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.data_format = normalize_data_format(data_format, layer=self.name)
        self.padding = _pairs(padding, 2, "padding", self.name)

    def get_config(self):
        return {**super().get_config(), "padding": self.padding, "data_format": self.data_format}


@register_layer()
class ZeroPadding3D(_SpatialEdit):
    rank, sign, attr = 3, 1, "padding"

    def __init__(self, padding=(1, 1, 1), data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.data_format = normalize_data_format(data_format, layer=self.name)
        self.padding = _pairs(padding, 3, "padding", self.name)

    def get_config(self):
        return {**super().get_config(), "padding": self.padding, "data_format": self.data_format}


@register_layer()
class Cropping1D(_SpatialEdit):
    """(lo, hi) steps removed from the start and end of (N, steps, features)."""

    rank, sign, attr = 1, -1, "cropping"

    def __init__(self, cropping=(1, 1), **kwargs):
        super().__init__(**kwargs)
        self.cropping = normalize_tuple(cropping, 2, "cropping", allow_zero=True, layer=self.name)

    def _amounts(self):
        return (self.cropping,)

    def get_config(self):
        return {**super().get_config(), "cropping": self.cropping}


@register_layer()
class Cropping2D(_SpatialEdit):
    rank, sign, attr = 2, -1, "cropping"

    def __init__(self, cropping=((0, 0), (0, 0)), data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.data_format = normalize_data_format(data_format, layer=self.name)
        self.cropping = _pairs(cropping, 2, "cropping", self.name)

    def get_config(self):
        return {**super().get_config(), "cropping": self.cropping, "data_format": self.data_format}


@register_layer()
class Cropping3D(_SpatialEdit):
    rank, sign, attr = 3, -1, "cropping"

    def __init__(self, cropping=((1, 1), (1, 1), (1, 1)), data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.data_format = normalize_data_format(data_format, layer=self.name)
        self.cropping = _pairs(cropping, 3, "cropping", self.name)

    def get_config(self):
        return {**super().get_config(), "cropping": self.cropping, "data_format": self.data_format}


# ---------------------------------------------------------------------------------------------- upsampling

# tf_keras accepts every tf.image.resize method; Keras 3 a subset. kconvert computes 'nearest' and 'bilinear'.
_INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "area", "lanczos3", "lanczos5", "gaussian", "mitchellcubic")
_COMPUTED = ("nearest", "bilinear")


class _UpSampling(Layer):
    rank = 2

    def build(self, input_shape):
        check_rank(self, input_shape, self.rank + 2)

    def compute_output_shape(self, input_shape):
        spatial, channels = split_spatial(input_shape, self.data_format)
        out = [None if s is None else s * f for s, f in zip(spatial, self.size)]
        return join_spatial(input_shape[0], out, channels, self.data_format)

    def compute_output_layout(self, input_layouts, output_shape):
        return spatial_layout(self.rank, self.data_format)


@register_layer()
class UpSampling1D(Layer):
    """Each step of (N, steps, features) repeated `size` times."""

    def __init__(self, size=2, **kwargs):
        super().__init__(**kwargs)
        self.size = int(size)

    def build(self, input_shape):
        check_rank(self, input_shape, 3)

    def call(self, inputs):
        return ops.repeat(inputs, self.size, axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], None if input_shape[1] is None else input_shape[1] * self.size, input_shape[2])

    def get_config(self):
        return {**super().get_config(), "size": self.size}


@register_layer()
class UpSampling2D(_UpSampling):
    """Rows and columns repeated (nearest) or bilinearly interpolated by integer factors.

    Bilinear is `tf.image.resize(method='bilinear', antialias=False)`: half-pixel centres, edge samples
    clamped. tf_keras (Keras 2 on TF 2.x) and Keras 3 (all backends) compute the same, so no dialect branch
    is needed; Keras 2.2-era files (TF 1.x, `resize_bilinear` without half-pixel centres) differ.
    """

    rank = 2

    def __init__(self, size=(2, 2), data_format=None, interpolation="nearest", **kwargs):
        super().__init__(**kwargs)
        self.data_format = normalize_data_format(data_format, layer=self.name)
        self.size = normalize_tuple(size, 2, "size", layer=self.name)
        interpolation = str(interpolation).lower()
        if interpolation not in _INTERPOLATIONS:
            raise ConfigError(f"interpolation must be one of {_INTERPOLATIONS}, got {interpolation!r}",
                              layer=self.name)
        self.interpolation = interpolation

    def call(self, inputs):
        if self.interpolation not in _COMPUTED:
            raise ConfigError(f"interpolation '{self.interpolation}' is not implemented (kconvert computes "
                              f"{' and '.join(_COMPUTED)})", layer=self.name)
        return ops.upsample(inputs, self.size, mode=self.interpolation, coordinate_transformation="half_pixel",
                            channels_last=self.data_format == "channels_last")

    def get_config(self):
        return {**super().get_config(), "size": self.size, "data_format": self.data_format,
                "interpolation": self.interpolation}


@register_layer()
class UpSampling3D(_UpSampling):
    """Each voxel repeated size[0] x size[1] x size[2] times."""

    rank = 3

    def __init__(self, size=(2, 2, 2), data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.data_format = normalize_data_format(data_format, layer=self.name)
        self.size = normalize_tuple(size, 3, "size", layer=self.name)

    def call(self, inputs):
        return ops.upsample(inputs, self.size, mode="nearest", channels_last=self.data_format == "channels_last")

    def get_config(self):
        return {**super().get_config(), "size": self.size, "data_format": self.data_format}


__all__ = ["Flatten", "Reshape", "Permute", "RepeatVector", "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D",
           "Cropping1D", "Cropping2D", "Cropping3D", "UpSampling1D", "UpSampling2D", "UpSampling3D"]
