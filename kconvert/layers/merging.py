"""Merge layers: Add, Subtract, Multiply, Average, Maximum, Minimum, Concatenate, Dot. Inputs come as a list."""

from __future__ import annotations

from functools import reduce

import numpy as np

from .. import ops
from ..errors import ConfigError
from .base import Layer, is_shape_list, register_layer


def _elementwise_shape(shape1, shape2):
    """tf_keras `_compute_elemwise_op_output_shape`: right-aligned broadcast of two batchless shapes."""
    if shape1 is None or shape2 is None:
        return None
    if len(shape1) < len(shape2):
        shape1, shape2 = shape2, shape1
    if not shape2:
        return tuple(shape1)
    out = list(shape1[: len(shape1) - len(shape2)])
    for i, j in zip(shape1[len(shape1) - len(shape2):], shape2):
        if i is None or j is None:
            out.append(None)
        elif i == 1:
            out.append(j)
        elif j == 1 or i == j:
            out.append(i)
        else:
            raise ValueError(f"inputs have incompatible shapes {tuple(shape1)} and {tuple(shape2)}")
    return tuple(out)


def _require_list(input_shape, what: str):
    if not is_shape_list(input_shape):
        raise ValueError(f"a {what} layer should be called on a list of inputs, got input shape {input_shape}")



def concat_masks(inputs, masks, axis: int):
    """The timestep mask of concatenated inputs, as Keras computes it (a missing mask counts as all True)."""
    full = []
    for x, m in zip(inputs, masks):
        x = np.asarray(x)
        if m is None:
            full.append(np.ones(x.shape, dtype=bool))
        else:
            m = np.asarray(m, dtype=bool)
            full.append(m[..., None] if m.ndim < x.ndim else m)
    return np.all(np.concatenate(full, axis=axis), axis=-1)

class _Merge(Layer):
    """Elementwise merge of a list of tensors.

    Like tf_keras, inputs of lower rank get size-1 axes inserted after the batch axis, then the
    merge broadcasts (numpy rules), so (N, 3) merges with (N, 4, 3) as (N, 1, 3).
    """

    supports_masking = True
    min_inputs = 1
    max_inputs: int | None = None

    def _merge_function(self, inputs: list[np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def _check_count(self, n: int) -> None:
        name = type(self).__name__
        if n < self.min_inputs or (self.max_inputs is not None and n > self.max_inputs):
            exact = self.min_inputs == self.max_inputs
            need = f"exactly {self.min_inputs}" if exact else f"at least {self.min_inputs}"
            raise ValueError(f"a {name} layer should be called on {need} inputs, got {n}")

    def build(self, input_shape):
        _require_list(input_shape, type(self).__name__)
        self._check_count(len(input_shape))
        batch_sizes = {s[0] for s in input_shape if s} - {None}
        if len(batch_sizes) > 1:
            raise ValueError(f"cannot merge tensors with different batch sizes: {input_shape}")
        self.compute_output_shape(input_shape)

    def call(self, inputs):
        if not isinstance(inputs, (list, tuple)):
            raise ValueError(f"a merge layer should be called on a list of inputs, got {type(inputs).__name__}")
        arrays = [np.asarray(x) for x in inputs]
        self._check_count(len(arrays))
        ndim = max(a.ndim for a in arrays)
        arrays = [a.reshape(a.shape[:1] + (1,) * (ndim - a.ndim) + a.shape[1:]) for a in arrays]
        return self._merge_function(arrays)

    def compute_output_shape(self, input_shape):
        _require_list(input_shape, type(self).__name__)
        out = tuple(input_shape[0][1:])
        for shape in input_shape[1:]:
            out = _elementwise_shape(out, tuple(shape[1:]))
        batch_sizes = {s[0] for s in input_shape} - {None}
        return ((next(iter(batch_sizes)) if len(batch_sizes) == 1 else None), *out)

    def compute_mask(self, inputs, mask=None):
        if mask is None:
            return None
        if not isinstance(mask, (list, tuple)):
            raise ValueError("the mask of a merge layer should be a list")
        masks = [np.asarray(m, dtype=bool) for m in mask if m is not None]
        if not masks:
            return None
        return reduce(np.logical_and, masks)


@register_layer()
class Add(_Merge):
    def _merge_function(self, inputs):
        return reduce(ops.add, inputs)


@register_layer()
class Subtract(_Merge):
    min_inputs = max_inputs = 2

    def _merge_function(self, inputs):
        return ops.subtract(inputs[0], inputs[1])


@register_layer()
class Multiply(_Merge):
    def _merge_function(self, inputs):
        return reduce(ops.multiply, inputs)


@register_layer()
class Average(_Merge):
    def _merge_function(self, inputs):
        total = reduce(ops.add, inputs)
        return (total / np.asarray(len(inputs), total.dtype)).astype(total.dtype, copy=False)


@register_layer()
class Maximum(_Merge):
    def _merge_function(self, inputs):
        return reduce(ops.maximum, inputs)


@register_layer()
class Minimum(_Merge):
    def _merge_function(self, inputs):
        return reduce(ops.minimum, inputs)


@register_layer()
class Concatenate(_Merge):
    """Joins the inputs along `axis` (counted with the batch axis; negative from the end)."""

    def __init__(self, axis=-1, **kwargs):
        super().__init__(**kwargs)
        self.axis = int(axis)

    def build(self, input_shape):
        _require_list(input_shape, "Concatenate")
        reduced = set()
        for shape in input_shape:
            s = list(shape)
            del s[self.axis]
            reduced.add(tuple(s))
        if len(reduced) != 1:
            err = ("a Concatenate layer requires inputs with matching shapes except for the concatenation "
                   f"axis, got input shapes {input_shape}")
            ranks = {len(s) for s in reduced}
            if len(ranks) != 1:
                raise ValueError(err)
            for axis in range(ranks.pop()):
                if len({s[axis] for s in reduced if s[axis] is not None}) > 1:
                    raise ValueError(err)

    def call(self, inputs):
        if not isinstance(inputs, (list, tuple)):
            raise ValueError("a Concatenate layer should be called on a list of inputs")
        return ops.concatenate([np.asarray(x) for x in inputs], axis=self.axis)

    def compute_output_shape(self, input_shape):
        _require_list(input_shape, "Concatenate")
        out = list(input_shape[0])
        for shape in input_shape[1:]:
            if out[self.axis] is None or shape[self.axis] is None:
                out[self.axis] = None
                break
            out[self.axis] += shape[self.axis]
        return tuple(out)

    def compute_mask(self, inputs, mask=None):
        if mask is None:
            return None
        if not isinstance(mask, (list, tuple)) or len(mask) != len(inputs):
            raise ValueError("Concatenate needs one mask (or None) per input")
        if all(m is None for m in mask):
            return None
        return concat_masks(inputs, mask, self.axis)

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}


@register_layer()
class Dot(_Merge):
    """Per-sample dot product of two tensors along `axes` (Keras's `batch_dot`), optionally of L2-normalized inputs."""

    min_inputs = max_inputs = 2

    def __init__(self, axes, normalize=False, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(axes, int):
            if not isinstance(axes, (list, tuple)):
                raise ConfigError(f"Dot axes should be an int or a list of two ints, got {axes!r}", layer=self.name)
            if len(axes) != 2 or not all(isinstance(a, int) for a in axes):
                raise ConfigError(f"Dot axes should contain two integers, got {axes!r}", layer=self.name)
        self.axes = axes
        self.normalize = bool(normalize)

    def _axes(self, ndim1: int, ndim2: int) -> list[int]:
        if isinstance(self.axes, int):
            return [self.axes % ndim1, self.axes % ndim2] if self.axes < 0 else [self.axes] * 2
        return [a % n if a < 0 else a for a, n in zip(self.axes, (ndim1, ndim2))]

    def build(self, input_shape):
        _require_list(input_shape, "Dot")
        self._check_count(len(input_shape))
        shape1, shape2 = input_shape
        a1, a2 = self._axes(len(shape1), len(shape2))
        if shape1[a1] is not None and shape2[a2] is not None and shape1[a1] != shape2[a2]:
            raise ValueError(f"incompatible input shapes: axis values {shape1[a1]} (at axis {a1}) != "
                             f"{shape2[a2]} (at axis {a2}); full input shapes {shape1}, {shape2}")

    def call(self, inputs):
        if not isinstance(inputs, (list, tuple)):
            raise ValueError("a Dot layer should be called on a list of 2 inputs")
        self._check_count(len(inputs))
        x1, x2 = (np.asarray(x) for x in inputs)
        a1, a2 = self._axes(x1.ndim, x2.ndim)
        if self.normalize:
            x1 = ops.l2_normalize(x1, axis=a1)
            x2 = ops.l2_normalize(x2, axis=a2)
        return ops.batch_dot(x1, x2, (a1, a2)).astype(x1.dtype, copy=False)

    def compute_output_shape(self, input_shape):
        _require_list(input_shape, "Dot")
        self._check_count(len(input_shape))
        shape1, shape2 = list(input_shape[0]), list(input_shape[1])
        a1, a2 = self._axes(len(shape1), len(shape2))
        shape1.pop(a1)
        shape2.pop(a2)
        shape2.pop(0)
        out = shape1 + shape2
        if len(out) == 1:
            out.append(1)
        return tuple(out)

    def compute_mask(self, inputs, mask=None):
        return None

    def get_config(self):
        return {**super().get_config(), "axes": self.axes, "normalize": self.normalize}
