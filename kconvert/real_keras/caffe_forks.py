"""Real-Keras (tf_keras and Keras 3) implementations of CaffeInterp, CaffeMaxUnpooling2D and CaffeMaxPoolingMask.

Each computes what the kconvert layer of the same name computes (kconvert/layers/caffe_forks.py and
caffe_pooling.py describe the Caffe semantics), with the same config, written once against a small set of tensor
functions (`_Ops`: `keras.ops` for Keras 3, TensorFlow for tf_keras). They run channels_first inside, as Caffe:
the interpolation taps, window offsets and flat indices are constants computed from the (static) spatial sizes.
"""

from __future__ import annotations

import numpy as np

from . import implementation


class _Ops:
    """The tensor functions the layers below use, for one target."""

    def __init__(self, lib, target: str):
        if target == "keras3":
            k = lib.ops
            self.transpose, self.reshape, self.take, self.where = k.transpose, k.reshape, k.take, k.where
            self.cast, self.maximum, self.concatenate = k.cast, k.maximum, k.concatenate
            self.pad = lambda x, width, value: k.pad(x, width, constant_values=value)
            self.shape = k.shape
            self.zeros_like = k.zeros_like
            self.segment_max = lambda data, ids, n: k.segment_max(data, ids, num_segments=n)
            self.convert = k.convert_to_tensor
            self.arange = lambda n: k.arange(n, dtype="int32")
        else:
            import tensorflow as tf

            self.transpose, self.reshape, self.where = tf.transpose, tf.reshape, tf.where
            self.take = lambda x, idx, axis=None: tf.gather(x, idx, axis=axis)
            self.cast, self.maximum = tf.cast, tf.maximum
            self.concatenate = lambda xs, axis=0: tf.concat(xs, axis)
            self.pad = lambda x, width, value: tf.pad(x, width, constant_values=value)
            self.shape = tf.shape
            self.zeros_like = tf.zeros_like
            self.segment_max = tf.math.unsorted_segment_max
            self.convert = tf.convert_to_tensor
            self.arange = lambda n: tf.range(n, dtype=tf.int32)

    def nchw(self, x, data_format: str):
        return self.transpose(x, (0, 3, 1, 2)) if data_format == "channels_last" else x

    def from_nchw(self, x, data_format: str):
        return self.transpose(x, (0, 2, 3, 1)) if data_format == "channels_last" else x


def _spatial(shape, data_format: str) -> list[int]:
    return [int(d) for d in (shape[2:] if data_format == "channels_first" else shape[1:3])]


def _out_shape(input_shape, out, data_format: str) -> tuple:
    if data_format == "channels_first":
        return (input_shape[0], input_shape[1], *out)
    return (input_shape[0], *out, input_shape[3])


def _pair(value) -> tuple[int, int]:
    return (int(value),) * 2 if isinstance(value, int) else tuple(int(v) for v in value)


@implementation("CaffeInterp")
def make_interp(lib, target: str) -> type:
    ops = _Ops(lib, target)

    class CaffeInterp(lib.layers.Layer):
        def __init__(self, height=None, width=None, zoom_factor=None, shrink_factor=None, pad_beg=0, pad_end=0,
                     data_format=None, **kwargs):
            super().__init__(**kwargs)
            self.height, self.width = height, width
            self.zoom_factor, self.shrink_factor = zoom_factor, shrink_factor
            self.pad_beg, self.pad_end = int(pad_beg), int(pad_end)
            self.data_format = data_format or "channels_last"

        def _out(self, sizes):
            from ..layers.caffe_forks import interp_output_length

            return [interp_output_length(n, self.zoom_factor, self.shrink_factor, t, self.pad_beg, self.pad_end)
                    for n, t in zip(sizes, (self.height, self.width))]

        def build(self, input_shape):
            from ..ops.resize import linear_taps

            sizes = _spatial(input_shape, self.data_format)
            eff = [n + self.pad_beg + self.pad_end for n in sizes]
            self.taps = [linear_taps(o, e, "align_corners") for o, e in zip(self._out(sizes), eff)]
            self.built = True

        def call(self, inputs):
            x = ops.nchw(inputs, self.data_format)
            lo, hi = -self.pad_beg, -self.pad_end
            if lo or hi:
                x = x[:, :, lo:x.shape[2] - hi, lo:x.shape[3] - hi]
            for axis in (3, 2):  # the last spatial axis first, as kconvert's ops.resize
                low, high, w = self.taps[axis - 2]
                shape = [1, 1, 1, 1]
                shape[axis] = len(w)
                a = ops.take(x, ops.convert(low.astype(np.int32)), axis=axis)
                b = ops.take(x, ops.convert(high.astype(np.int32)), axis=axis)
                x = a + (b - a) * ops.convert(w.astype(np.float32).reshape(shape))
            return ops.from_nchw(x, self.data_format)

        def compute_output_shape(self, input_shape):
            return _out_shape(input_shape, self._out(_spatial(input_shape, self.data_format)), self.data_format)

        def get_config(self):
            return {**super().get_config(), "height": self.height, "width": self.width,
                    "zoom_factor": self.zoom_factor, "shrink_factor": self.shrink_factor, "pad_beg": self.pad_beg,
                    "pad_end": self.pad_end, "data_format": self.data_format}

    return CaffeInterp


@implementation("CaffeMaxUnpooling2D")
def make_unpooling(lib, target: str) -> type:
    ops = _Ops(lib, target)

    class CaffeMaxUnpooling2D(lib.layers.Layer):
        def __init__(self, scale=(2, 2), pad_out=(False, False), size=None, data_format=None, **kwargs):
            super().__init__(**kwargs)
            self.scale = _pair(scale)
            self.pad_out = tuple(bool(p) for p in pad_out)
            self.size = None if size is None else _pair(size)
            self.data_format = data_format or "channels_last"

        def _out(self, sizes):
            if self.size is not None:
                return list(self.size)
            return [n * s - int(p) for n, s, p in zip(sizes, self.scale, self.pad_out)]

        def call(self, inputs):
            x, mask = (ops.nchw(v, self.data_format) for v in inputs)
            c, h, w = (int(d) for d in x.shape[1:])
            oh, ow = self._out((h, w))
            n_in, n_out = h * w, oh * ow
            xf = ops.reshape(x, (-1, n_in))
            mf = ops.reshape(mask, (-1, n_in))
            rows = ops.shape(xf)[0]
            idx = ops.cast(mf, "int32")
            valid = (idx >= 0) & (idx < n_out) & (ops.cast(idx, mf.dtype) == mf)
            row = ops.reshape(ops.arange(rows), (-1, 1))
            pos = ops.where(valid, ops.convert(np.arange(1, n_in + 1, dtype=np.int32)[None]), 0)
            seg = row * n_out + ops.where(valid, idx, 0)
            winners = ops.segment_max(ops.reshape(pos, (-1,)), ops.reshape(seg, (-1,)), rows * n_out)
            winners = ops.reshape(ops.maximum(winners, 0), (-1, n_out))  # empty segments: the dtype's lowest
            flat = ops.concatenate([ops.zeros_like(xf[:1, :1])[0], ops.reshape(xf, (-1,))], axis=0)
            gather = ops.where(winners > 0, row * n_in + winners, 0)
            y = ops.reshape(ops.take(flat, ops.reshape(gather, (-1,)), axis=0), (-1, c, oh, ow))
            return ops.from_nchw(y, self.data_format)

        def compute_output_shape(self, input_shape):
            x_shape = input_shape[0]
            return _out_shape(x_shape, self._out(_spatial(x_shape, self.data_format)), self.data_format)

        def get_config(self):
            return {**super().get_config(), "scale": self.scale, "pad_out": self.pad_out, "size": self.size,
                    "data_format": self.data_format}

    return CaffeMaxUnpooling2D


@implementation("CaffeMaxPoolingMask")
def make_pooling_mask(lib, target: str) -> type:
    ops = _Ops(lib, target)

    class CaffeMaxPoolingMask(lib.layers.Layer):
        def __init__(self, pool_size=(2, 2), strides=None, padding=(0, 0), rounding="ceil", data_format=None,
                     **kwargs):
            kwargs.pop("mode", None)
            super().__init__(**kwargs)
            self.pool_size = _pair(pool_size)
            self.strides = _pair(strides if strides is not None else pool_size)
            self.padding = _pair(padding)
            self.rounding = str(rounding).lower()
            self.data_format = data_format or "channels_last"

        def _geometry(self, sizes):
            from ..layers.caffe_pooling import caffe_pool_geometry

            return caffe_pool_geometry(sizes, self.pool_size, self.strides, self.padding, self.rounding == "ceil")

        def build(self, input_shape):
            from ..layers.caffe_pooling import max_pool_mask_taps

            sizes = _spatial(input_shape, self.data_format)
            self.geo = self._geometry(sizes)
            self.taps = max_pool_mask_taps(self.geo, sizes, self.pool_size, self.strides, self.padding)
            self.built = True

        def call(self, inputs):
            from ..layers.caffe_pooling import FLT_LOWEST

            geo = self.geo
            x = ops.pad(ops.nchw(inputs, self.data_format), [[0, 0], [0, 0], list(geo.pads[0]), list(geo.pads[1])],
                        FLT_LOWEST)
            (sh, sw), (oh, ow) = self.strides, geo.out
            best = mask = None
            for (i, j), index in self.taps:
                cand = x[:, :, i:i + (oh - 1) * sh + 1:sh, j:j + (ow - 1) * sw + 1:sw]
                if best is None:
                    best = ops.zeros_like(cand) + FLT_LOWEST
                    mask = ops.zeros_like(cand) - 1.0
                wins = cand > best
                best = ops.where(wins, cand, best)
                mask = ops.where(wins, ops.convert(index[None, None]), mask)
            return ops.from_nchw(mask, self.data_format)

        def compute_output_shape(self, input_shape):
            return _out_shape(input_shape, self._geometry(_spatial(input_shape, self.data_format)).out,
                              self.data_format)

        def get_config(self):
            return {**super().get_config(), "pool_size": self.pool_size, "strides": self.strides,
                    "padding": self.padding, "rounding": self.rounding, "data_format": self.data_format}

    return CaffeMaxPoolingMask
