"""Caffe's Slice, Crop and ArgMax, with Caffe's axis numbering and either data layout.

Caffe numbers axes in its own NCHW order. Each layer keeps Caffe's numbers in its config and maps them with
`data_format`: "channels_first" takes them as they are; "channels_last" (the converter's default) holds a
Caffe (N, C, d1, ..., dk) blob as (N, d1, ..., dk, C), so Caffe axis 0 -> 0, 1 -> the last axis, a >= 2 -> a - 1
(`keras_axis`). Negative axes count from the end in Caffe's order, as Caffe's CanonicalAxisIndex does.
The batch axis cannot be sliced, cropped or reduced by these layers (Keras keeps it free).
Semantics from BVLC Caffe's src/caffe/layers/{slice,crop,argmax}_layer.cpp.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from .base import Layer, is_shape_list
from .caffe_elementwise import kconvert_object

DATA_FORMATS = ("channels_last", "channels_first")


def _data_format(value, layer: str | None) -> str:
    value = value or "channels_last"
    if value not in DATA_FORMATS:
        raise ConfigError(f"data_format must be 'channels_last' or 'channels_first', got {value!r}", layer=layer)
    return value


def canonical_axis(axis: int, ndim: int) -> int:
    """Caffe's CanonicalAxisIndex: a negative axis counts from the end; out of range is an error."""
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis} is out of range for a {ndim}-D blob")
    return axis % ndim


def keras_axis(caffe_axis: int, ndim: int, data_format: str) -> int:
    """The axis of a `data_format` tensor holding Caffe (NCHW-numbered) axis `caffe_axis` of an ndim-D blob."""
    a = canonical_axis(caffe_axis, ndim)
    if data_format == "channels_first" or a == 0:
        return a
    return ndim - 1 if a == 1 else a - 1


def caffe_order(ndim: int, data_format: str) -> tuple[int, ...]:
    """Permutation taking a `data_format` tensor to Caffe's axis order: np.transpose(x, caffe_order(...))."""
    return tuple(keras_axis(a, ndim, data_format) for a in range(ndim))


def _int(value, name: str, layer: str | None) -> int:
    try:
        out = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"`{name}` must be an integer, got {value!r}", layer=layer) from None
    if out != value and not isinstance(value, str):
        raise ConfigError(f"`{name}` must be an integer, got {value!r}", layer=layer)
    return out


def _ints(value, name: str, layer: str | None) -> list[int]:
    if value is None:
        return []
    values = value if isinstance(value, (list, tuple)) else [value]
    return [_int(v, name, layer) for v in values]


def _not_batch(axis: int, what: str):
    if axis == 0:
        raise ValueError(f"{what} along the batch axis (Caffe axis 0) is not supported")


@kconvert_object
class CaffeSlice(Layer):
    """Caffe Slice: cuts the input along Caffe axis `axis` into `num_outputs` pieces.

    `slice_points` (Caffe's slice_point) are the cut positions, giving len(slice_points) + 1 outputs; without
    them the axis is split into `num_outputs` equal parts (it must divide evenly). One output is the input.
    """

    def __init__(self, axis: int = 1, slice_points=None, num_outputs: int | None = None,
                 data_format: str = "channels_last", **kwargs):
        super().__init__(**kwargs)
        self.axis = _int(axis, "axis", self.name)
        self.slice_points = _ints(slice_points, "slice_points", self.name) or None
        if self.slice_points is not None:
            if any(b <= a for a, b in zip([0, *self.slice_points], self.slice_points)):
                raise ConfigError(f"slice_points must be positive and increasing, got {self.slice_points}",
                                  layer=self.name)
            n = len(self.slice_points) + 1
            if num_outputs is not None and _int(num_outputs, "num_outputs", self.name) != n:
                raise ConfigError(f"{len(self.slice_points)} slice points make {n} outputs, not {num_outputs}",
                                  layer=self.name)
            num_outputs = n
        if num_outputs is None:
            raise ConfigError("CaffeSlice needs slice_points or num_outputs", layer=self.name)
        self.num_outputs = _int(num_outputs, "num_outputs", self.name)
        if self.num_outputs < 1:
            raise ConfigError(f"num_outputs must be at least 1, got {num_outputs}", layer=self.name)
        self.data_format = _data_format(data_format, self.name)

    def _bounds(self, input_shape) -> tuple[int, list[tuple[int, int]]]:
        """(Keras axis, [(start, stop)] per output)."""
        ndim = len(input_shape)
        axis = keras_axis(self.axis, ndim, self.data_format)
        _not_batch(axis, "slicing")
        size = input_shape[axis]
        if size is None:
            raise ValueError(f"the sliced axis must have a known size, got input shape {tuple(input_shape)}")
        if self.slice_points is not None:
            if self.slice_points[-1] >= size:
                raise ValueError(f"slice point {self.slice_points[-1]} is not inside the axis of size {size}")
            cuts = [0, *self.slice_points, size]
        else:
            if size % self.num_outputs:
                raise ValueError(f"{self.num_outputs} outputs do not evenly divide the sliced axis of size {size}")
            step = size // self.num_outputs
            cuts = [i * step for i in range(self.num_outputs + 1)]
        return axis, list(zip(cuts[:-1], cuts[1:]))

    def build(self, input_shape):
        if is_shape_list(input_shape):
            raise ValueError("CaffeSlice takes one input")
        self._bounds(input_shape)

    def compute_output_shape(self, input_shape):
        axis, bounds = self._bounds(input_shape)
        shapes = [tuple(b - a if i == axis else d for i, d in enumerate(input_shape)) for a, b in bounds]
        return shapes if self.num_outputs > 1 else shapes[0]

    def compute_output_layout(self, input_layouts, output_shape):
        first = input_layouts[0] if input_layouts else None
        return [first] * self.num_outputs if self.num_outputs > 1 else first

    def compute_mask(self, inputs, mask=None):
        return [None] * self.num_outputs if self.num_outputs > 1 else None

    def call(self, inputs):
        x = np.asarray(inputs)
        axis, bounds = self._bounds((None, *x.shape[1:]))
        outs = []
        for a, b in bounds:
            index = [slice(None)] * x.ndim
            index[axis] = slice(a, b)
            outs.append(x[tuple(index)])
        return outs if self.num_outputs > 1 else outs[0]

    def get_config(self):
        return {**super().get_config(), "axis": self.axis, "slice_points": self.slice_points,
                "num_outputs": self.num_outputs, "data_format": self.data_format}


@kconvert_object
class CaffeCrop(Layer):
    """Caffe Crop, called on [x, reference]: every axis from Caffe axis `axis` on is cut to the reference's size.

    `offset` is where each cut starts: nothing (0), one value for all cropped axes, or one per cropped axis in
    Caffe's order. Axes before `axis` keep x's size.
    """

    def __init__(self, axis: int = 2, offset=(), data_format: str = "channels_last", **kwargs):
        super().__init__(**kwargs)
        self.axis = _int(axis, "axis", self.name)
        self.offset = _ints(offset, "offset", self.name)
        if any(o < 0 for o in self.offset):
            raise ConfigError(f"offsets must not be negative, got {self.offset}", layer=self.name)
        self.data_format = _data_format(data_format, self.name)

    def crops(self, input_shape, reference_shape) -> list[tuple[int, int, int | None]]:
        """(Keras axis, start, size) for each cropped axis, in Caffe's axis order; size None when unknown."""
        ndim = len(input_shape)
        if len(reference_shape) != ndim:
            raise ValueError(f"the reference has rank {len(reference_shape)}, the input {ndim}")
        start = canonical_axis(self.axis, ndim)
        _not_batch(start, "cropping")
        n = ndim - start
        if len(self.offset) > 1 and len(self.offset) != n:
            raise ValueError(f"{len(self.offset)} offsets for {n} cropped axes (give one, or one per axis)")
        out = []
        for i, caffe in enumerate(range(start, ndim)):
            k = keras_axis(caffe, ndim, self.data_format)
            off = self.offset[i] if len(self.offset) > 1 else (self.offset[0] if self.offset else 0)
            size, have = reference_shape[k], input_shape[k]
            if size is not None and have is not None and have - off < size:
                raise ValueError(f"the crop of axis {caffe} (size {size}, offset {off}) runs past the input's "
                                 f"size {have}")
            out.append((k, off, size))
        return out

    def build(self, input_shape):
        if not is_shape_list(input_shape) or len(input_shape) != 2:
            raise ValueError("CaffeCrop is called on [x, reference]")
        self.crops(*input_shape)

    def compute_output_shape(self, input_shape):
        shape = list(input_shape[0])
        for k, _, size in self.crops(*input_shape):
            shape[k] = size
        return tuple(shape)

    def compute_output_layout(self, input_layouts, output_shape):
        return input_layouts[0] if input_layouts else None

    def compute_mask(self, inputs, mask=None):
        return None

    def call(self, inputs):
        x, ref = (np.asarray(v) for v in inputs)
        index = [slice(None)] * x.ndim
        for k, off, size in self.crops(x.shape, ref.shape):
            index[k] = slice(off, off + size)
        return x[tuple(index)]

    def get_config(self):
        return {**super().get_config(), "axis": self.axis, "offset": list(self.offset),
                "data_format": self.data_format}


@kconvert_object
class CaffeArgMax(Layer):
    """Caffe ArgMax: the `top_k` largest values' indices (as floats), or with `out_max_val` their values.

    Ties go to the larger index first (Caffe sorts (value, index) pairs in descending order).

    - `axis` None: each sample is flattened in Caffe's C, H, W order (the indices count in that order, whatever
      the data_format). Caffe's output blob is (N, 1, top_k) padded with 1s to the input's rank (at least 3),
      and (N, 2, top_k, ...) with `out_max_val`: channel 0 the indices, channel 1 the values. It is laid out
      in `data_format` like any blob: channels_last (N, top_k, 1, ..., 1|2).
    - `axis` given (Caffe numbering): the input's shape with that axis of size top_k, holding the indices,
      or only the values when `out_max_val`.
    """

    def __init__(self, top_k: int = 1, out_max_val: bool = False, axis: int | None = None,
                 data_format: str = "channels_last", **kwargs):
        super().__init__(**kwargs)
        self.top_k = _int(top_k, "top_k", self.name)
        if self.top_k < 1:
            raise ConfigError(f"top_k must be at least 1, got {top_k}", layer=self.name)
        self.out_max_val = bool(out_max_val)
        self.axis = None if axis is None else _int(axis, "axis", self.name)
        self.data_format = _data_format(data_format, self.name)

    def _keras_axis(self, ndim: int) -> int:
        axis = keras_axis(self.axis, ndim, self.data_format)
        _not_batch(axis, "ArgMax")
        return axis

    def compute_output_shape(self, input_shape):
        ndim = len(input_shape)
        if self.axis is not None:
            axis = self._keras_axis(ndim)
            if input_shape[axis] is not None and self.top_k > input_shape[axis]:
                raise ValueError(f"top_k {self.top_k} is larger than the axis size {input_shape[axis]}")
            return tuple(self.top_k if i == axis else d for i, d in enumerate(input_shape))
        count = int(np.prod(input_shape[1:])) if all(d is not None for d in input_shape[1:]) else None
        if count is not None and self.top_k > count:
            raise ValueError(f"top_k {self.top_k} is larger than the {count} values of a sample")
        out_ndim = max(ndim, 3)
        caffe = [input_shape[0], 2 if self.out_max_val else 1, self.top_k] + [1] * (out_ndim - 3)
        order = caffe_order(out_ndim, self.data_format)  # Keras axis k holds Caffe axis order.index(k)
        return tuple(caffe[order.index(k)] for k in range(out_ndim))

    def build(self, input_shape):
        if is_shape_list(input_shape):
            raise ValueError("CaffeArgMax takes one input")
        if len(input_shape) < 2:
            raise ValueError(f"the input needs a batch axis and at least one more, got shape {tuple(input_shape)}")
        self.compute_output_shape(input_shape)

    def compute_output_layout(self, input_layouts, output_shape):
        first = input_layouts[0] if input_layouts else None
        return first if self.axis is not None else None

    def compute_mask(self, inputs, mask=None):
        return None

    @staticmethod
    def top_k_last(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(indices, values) of the k largest along the last axis, ties to the larger index first."""
        n = x.shape[-1]
        order = np.argsort(-x[..., ::-1], axis=-1, kind="stable")[..., :k]  # reversed: ties to larger index
        idx = n - 1 - order
        return idx, np.take_along_axis(x, idx, axis=-1)

    def call(self, inputs):
        x = np.asarray(inputs, dtype=np.float32)
        ndim = x.ndim
        if self.axis is not None:
            axis = self._keras_axis(ndim)
            idx, val = self.top_k_last(np.moveaxis(x, axis, -1), self.top_k)
            out = val if self.out_max_val else idx.astype(np.float32)
            return np.moveaxis(out, -1, axis)
        flat = np.transpose(x, caffe_order(ndim, self.data_format)).reshape(x.shape[0], -1)  # Caffe's C,H,W order
        idx, val = self.top_k_last(flat, self.top_k)
        parts = [idx.astype(np.float32)] + ([val] if self.out_max_val else [])
        out_ndim = max(ndim, 3)
        caffe = np.stack(parts, axis=1).reshape(x.shape[0], len(parts), self.top_k, *[1] * (out_ndim - 3))
        return np.transpose(caffe, np.argsort(caffe_order(out_ndim, self.data_format)))

    def get_config(self):
        return {**super().get_config(), "top_k": self.top_k, "out_max_val": self.out_max_val, "axis": self.axis,
                "data_format": self.data_format}
