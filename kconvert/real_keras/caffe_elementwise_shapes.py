"""Real tf_keras and Keras 3 classes for kconvert's Caffe elementwise and shape layers (Power, CaffeExp, CaffeLog,
CaffeThreshold, CaffeClip, AbsVal, CaffeEltwise, CaffeSlice, CaffeCrop, CaffeArgMax).

Each class takes the kconvert layer's config and keeps a kconvert instance of it (`_spec`) for what is not
tensor math: checking the arguments, Caffe's axis numbering and the shapes. `call` is written once against the
names of `keras.ops`; for tf_keras, `_TfOps` provides those names with TensorFlow functions.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import numpy as np

from ..layers.base import Layer
from ..layers.caffe_elementwise import (
    AbsVal,
    CaffeClip,
    CaffeEltwise,
    CaffeExp,
    CaffeLog,
    CaffeThreshold,
    Power,
)
from ..layers.caffe_shapes import CaffeArgMax, CaffeCrop, CaffeSlice, caffe_order
from . import implementation


class _TfOps:
    """The `keras.ops` functions the calls below use, on TensorFlow (for tf_keras)."""

    def __init__(self):
        import tensorflow as tf

        self.tf = tf
        self.multiply, self.add, self.power, self.exp = tf.multiply, tf.add, tf.pow, tf.exp
        self.log, self.abs, self.minimum, self.maximum = tf.math.log, tf.abs, tf.minimum, tf.maximum
        self.greater, self.cast, self.ones_like, self.transpose = tf.greater, tf.cast, tf.ones_like, tf.transpose
        self.reshape, self.stack, self.shape = tf.reshape, tf.stack, tf.shape

    def flip(self, x, axis):
        return self.tf.reverse(x, [axis])

    def top_k(self, x, k):
        out = self.tf.math.top_k(x, k=k, sorted=True)
        return out.values, out.indices


def _ops(lib, target: str):
    return lib.ops if target == "keras3" else _TfOps()


def _static(shape) -> tuple:
    return tuple(None if d is None else int(d) for d in shape)


def _caffe_class(lib, target: str, spec_cls: type, forward: Callable) -> type:
    """A `lib` layer taking `spec_cls`'s config, whose call is `forward(spec, ops, inputs)` (spec: a kconvert instance)."""
    ops = _ops(lib, target)
    base = set(inspect.signature(Layer.__init__).parameters)
    names = tuple(p.name for p in inspect.signature(spec_cls.__init__).parameters.values()
                  if p.name not in base and p.kind is p.POSITIONAL_OR_KEYWORD)  # the Caffe arguments

    class CaffeLayer(lib.layers.Layer):
        def __init__(self, **kwargs):
            own = {k: kwargs.pop(k) for k in names if k in kwargs}
            super().__init__(**kwargs)
            self._spec = spec_cls(name=f"{self.name}_spec", **own)  # checks the arguments as kconvert does

        def call(self, inputs):
            return forward(self._spec, ops, inputs)

        def get_config(self):
            config = self._spec.get_config()
            return {**super().get_config(), **{k: config[k] for k in names}}

    CaffeLayer.__name__ = CaffeLayer.__qualname__ = spec_cls.__name__
    CaffeLayer.__doc__ = spec_cls.__doc__
    return CaffeLayer


# ---------------------------------------------------------------------------------------------- elementwise


def _power(spec, ops, x):
    const = spec.constant()
    if const is not None:
        return ops.ones_like(x) * np.float32(const)
    if spec.scale != 1:
        x = ops.multiply(x, np.float32(spec.scale))
    if spec.shift != 0:
        x = ops.add(x, np.float32(spec.shift))
    return x if spec.power == 1 else ops.power(x, np.float32(spec.power))


def _exp(spec, ops, x):
    inner, outer = spec.factors()
    y = ops.exp(x if inner == 1 else ops.multiply(x, inner))
    return y if outer == 1 else ops.multiply(y, outer)


def _log(spec, ops, x):
    if spec.scale != 1:
        x = ops.multiply(x, np.float32(spec.scale))
    if spec.shift != 0:
        x = ops.add(x, np.float32(spec.shift))
    y = ops.log(x)
    k = spec.base_scale()
    return y if k == 1 else ops.multiply(y, k)


def _threshold(spec, ops, x):
    return ops.cast(ops.greater(x, np.float32(spec.threshold)), "float32")


def _clip(spec, ops, x):
    return ops.maximum(ops.minimum(x, np.float32(spec.max)), np.float32(spec.min))


def _absval(spec, ops, x):
    return ops.abs(x)


def _eltwise(spec, ops, inputs):
    xs = list(inputs)
    if spec.operation in ("prod", "max"):
        combine = ops.multiply if spec.operation == "prod" else ops.maximum
        y = xs[0]
        for x in xs[1:]:
            y = combine(y, x)
        return y
    coeff = spec.coeff or [1.0] * len(xs)
    terms = [x if c == 1 else ops.multiply(x, np.float32(c)) for c, x in zip(coeff, xs)]
    y = terms[0]
    for t in terms[1:]:
        y = ops.add(y, t)
    return y


# ---------------------------------------------------------------------------------------------- shapes


def _slice(spec, ops, x):
    axis, bounds = spec._bounds(_static(x.shape))
    outs = []
    for a, b in bounds:
        index = [slice(None)] * len(x.shape)
        index[axis] = slice(a, b)
        outs.append(x[tuple(index)])
    return outs if spec.num_outputs > 1 else outs[0]


def _crop(spec, ops, inputs):
    x, ref = inputs
    index = [slice(None)] * len(x.shape)
    for k, off, size in spec.crops(_static(x.shape), _static(ref.shape)):
        index[k] = slice(off, off + (size if size is not None else ops.shape(ref)[k]))
    return x[tuple(index)]


def _top_k_last(ops, x, k: int, n: int):
    """(indices as float32, values) of the k largest along the last axis, ties to the larger index (Caffe)."""
    values, order = ops.top_k(ops.flip(x, axis=-1), k)
    return ops.cast(n - 1 - order, "float32"), values


def _argmax(spec, ops, x):
    shape = _static(x.shape)
    ndim = len(shape)
    if spec.axis is not None:
        axis = spec._keras_axis(ndim)
        perm = [i for i in range(ndim) if i != axis] + [axis]
        n = shape[axis] if shape[axis] is not None else ops.shape(x)[axis]
        idx, val = _top_k_last(ops, ops.transpose(x, perm), spec.top_k, n)
        return ops.transpose(val if spec.out_max_val else idx, [int(i) for i in np.argsort(perm)])
    caffe_x = ops.transpose(x, caffe_order(ndim, spec.data_format))
    if all(d is not None for d in shape[1:]):
        count = int(np.prod(shape[1:]))
        flat = ops.reshape(caffe_x, (-1, count))
    else:  # sizes known at run time only
        flat = ops.reshape(caffe_x, (ops.shape(caffe_x)[0], -1))
        count = ops.shape(flat)[1]
    idx, val = _top_k_last(ops, flat, spec.top_k, count)
    parts = [idx, val] if spec.out_max_val else [idx]
    out_ndim = max(ndim, 3)
    caffe = ops.reshape(ops.stack(parts, axis=1), (-1, len(parts), spec.top_k, *[1] * (out_ndim - 3)))
    return ops.transpose(caffe, [int(i) for i in np.argsort(caffe_order(out_ndim, spec.data_format))])


_FORWARDS = {Power: _power, CaffeExp: _exp, CaffeLog: _log, CaffeThreshold: _threshold, CaffeClip: _clip,
             AbsVal: _absval, CaffeEltwise: _eltwise, CaffeSlice: _slice, CaffeCrop: _crop, CaffeArgMax: _argmax}


def _register(spec_cls: type, forward: Callable) -> None:
    @implementation(spec_cls.__name__)
    def make(lib, target: str) -> type:
        return _caffe_class(lib, target, spec_cls, forward)


for _cls, _forward in _FORWARDS.items():
    _register(_cls, _forward)
