"""Reductions over axes (sum, mean, max, min, any, all, logsumexp) and batch moments.

`axis` is None (every axis), an int or a sequence of ints, negative ones counted from the end, as
numpy and Keras take it. ONNX emissions target opset 17 (ReduceSum takes its axes as an input there,
the other reductions as an attribute).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .base import Op, register


def normalize_axes(axis, ndim: int) -> tuple[int, ...]:
    """Non-negative, sorted, de-duplicated axes; None means every axis. Raises ValueError if out of range."""
    if axis is None:
        return tuple(range(ndim))
    axes = [axis] if isinstance(axis, (int, np.integer)) else list(axis)
    out = []
    for a in axes:
        a = int(a)
        if not -ndim <= a < ndim:
            raise ValueError(f"axis {a} is out of range for a tensor of rank {ndim}")
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"duplicate axis in {tuple(axes)}")
    return tuple(sorted(out))


def _expand_back(g: np.ndarray, axes: tuple, ndim: int, keepdims: bool) -> np.ndarray:
    """Re-insert reduced axes (size 1) into a gradient so it broadcasts against the input."""
    if keepdims:
        return g
    for a in axes:
        g = np.expand_dims(g, a)
    return g


@register
class ReduceSum(Op):
    name = "reduce_sum"

    @staticmethod
    def forward(x, axis=None, keepdims=False):
        x = np.asarray(x)
        return np.sum(x, axis=normalize_axes(axis, x.ndim), keepdims=keepdims).astype(x.dtype, copy=False)

    @staticmethod
    def backward(grad, inputs, output, axis=None, keepdims=False):
        (x,) = inputs
        axes = normalize_axes(axis, x.ndim)
        return (np.broadcast_to(_expand_back(grad, axes, x.ndim, keepdims), x.shape).astype(x.dtype),)

    @staticmethod
    def to_onnx(builder, inputs, axis=None, keepdims=False):
        if axis is None:
            return builder.node("ReduceSum", inputs, keepdims=int(keepdims))
        axes = [axis] if isinstance(axis, int) else list(axis)
        return builder.node("ReduceSum", [inputs[0], builder.const(axes, "axes", np.int64)], keepdims=int(keepdims))


@register
class ReduceMean(Op):
    name = "reduce_mean"

    @staticmethod
    def forward(x, axis=None, keepdims=False):
        x = np.asarray(x)
        return np.mean(x, axis=normalize_axes(axis, x.ndim), keepdims=keepdims).astype(x.dtype, copy=False)

    @staticmethod
    def backward(grad, inputs, output, axis=None, keepdims=False):
        (x,) = inputs
        axes = normalize_axes(axis, x.ndim)
        count = int(np.prod([x.shape[a] for a in axes])) if axes else 1
        g = _expand_back(grad, axes, x.ndim, keepdims) / max(count, 1)
        return (np.broadcast_to(g, x.shape).astype(x.dtype),)

    @staticmethod
    def to_onnx(builder, inputs, axis=None, keepdims=False):
        attrs = {"keepdims": int(keepdims)}
        if axis is not None:
            attrs["axes"] = [axis] if isinstance(axis, int) else list(axis)
        return builder.node("ReduceMean", inputs, **attrs)


class _ReduceExtreme(Op):
    fn = staticmethod(np.max)
    onnx_type = "ReduceMax"

    @classmethod
    def forward(cls, x, axis=None, keepdims=False):
        x = np.asarray(x)
        return cls.fn(x, axis=normalize_axes(axis, x.ndim), keepdims=keepdims)

    @staticmethod
    def backward(grad, inputs, output, axis=None, keepdims=False):
        # the gradient goes to every position holding the extreme value, shared equally between ties
        (x,) = inputs
        axes = normalize_axes(axis, x.ndim)
        hit = x == _expand_back(output, axes, x.ndim, keepdims)
        share = hit / np.sum(hit, axis=axes, keepdims=True)
        return ((share * _expand_back(grad, axes, x.ndim, keepdims)).astype(x.dtype),)

    @classmethod
    def to_onnx(cls, builder, inputs, axis=None, keepdims=False):
        attrs = {"keepdims": int(keepdims)}
        if axis is not None:
            attrs["axes"] = [axis] if isinstance(axis, int) else list(axis)
        return builder.node(cls.onnx_type, inputs, **attrs)


@register
class ReduceMax(_ReduceExtreme):
    name = "reduce_max"
    fn = staticmethod(np.max)
    onnx_type = "ReduceMax"


@register
class ReduceMin(_ReduceExtreme):
    name = "reduce_min"
    fn = staticmethod(np.min)
    onnx_type = "ReduceMin"


def reduce_sum(x, axis=None, keepdims: bool = False) -> np.ndarray:
    return ReduceSum.forward(x, axis, keepdims)


def reduce_mean(x, axis=None, keepdims: bool = False) -> np.ndarray:
    return ReduceMean.forward(x, axis, keepdims)


def reduce_max(x, axis=None, keepdims: bool = False) -> np.ndarray:
    return ReduceMax.forward(x, axis, keepdims)


def reduce_min(x, axis=None, keepdims: bool = False) -> np.ndarray:
    return ReduceMin.forward(x, axis, keepdims)


def reduce_any(x, axis=None, keepdims: bool = False) -> np.ndarray:
    x = np.asarray(x)
    return np.any(x, axis=normalize_axes(axis, x.ndim), keepdims=keepdims)


def reduce_all(x, axis=None, keepdims: bool = False) -> np.ndarray:
    x = np.asarray(x)
    return np.all(x, axis=normalize_axes(axis, x.ndim), keepdims=keepdims)


def logsumexp(x, axis=None, keepdims: bool = False) -> np.ndarray:
    """log(sum(exp(x))) over `axis`, shifted by the maximum for stability."""
    x = np.asarray(x)
    axes = normalize_axes(axis, x.ndim)
    m = np.max(x, axis=axes, keepdims=True)
    m = np.where(np.isfinite(m), m, 0).astype(x.dtype)
    out = np.log(np.sum(np.exp(x - m), axis=axes, keepdims=True)) + m
    if not keepdims:
        out = np.squeeze(out, axis=axes)
    return out.astype(x.dtype, copy=False)


def moments(x, axis: int | Sequence[int] | None, keepdims: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(mean, biased variance) over `axis`, as `tf.nn.moments` computes them."""
    x = np.asarray(x)
    axes = normalize_axes(axis, x.ndim)
    mean = np.mean(x, axis=axes, keepdims=True)
    var = np.mean(np.square(x - mean), axis=axes, keepdims=True)
    if not keepdims:
        mean, var = np.squeeze(mean, axis=axes), np.squeeze(var, axis=axes)
    return mean.astype(x.dtype, copy=False), var.astype(x.dtype, copy=False)
