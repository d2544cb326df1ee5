"""N-d max and average pooling (windowed and global) on channels-last or channels-first input.

Windowed pooling takes the window `ksize`, `strides` and explicit (lo, hi) `pads` per spatial axis (see
`shapes.explicit_pads` for Keras's 'valid' / 'same'). Max pooling never selects padding; average pooling
divides by the whole window (`count_include_pad=True`, Caffe / ONNX default) or by the number of real
input elements in it (`count_include_pad=False`, TensorFlow's 'SAME'). The kernels loop over the taps of
the window (at most prod(ksize) vectorised strided slices), never over pixels, and work in either layout
without transposing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from . import parallel
from .array_module import like, module_of, on_device, to_device
from .base import Op, register, traceable
from .conv import conv_output_length
from .shapes import spatial_axes


def _norm(n_sp, ksize, strides, pads):
    ksize = tuple(int(k) for k in ksize)
    if len(ksize) != n_sp:
        raise ValueError(f"pool: input has {n_sp} spatial dims, window {ksize}")
    strides = tuple(int(s) for s in strides) if strides is not None else ksize
    pads = tuple((int(lo), int(hi)) for lo, hi in pads) if pads is not None else ((0, 0),) * n_sp
    return ksize, strides, pads


def _geometry(x, ksize, strides, pads, channels_last):
    n_sp = np.ndim(x) - 2
    ksize, strides, pads = _norm(n_sp, ksize, strides, pads)
    axes = spatial_axes(np.ndim(x), channels_last)
    sizes = [x.shape[a] for a in axes]
    out = [conv_output_length(s, k, st, 1, lo, hi) for s, k, st, (lo, hi) in zip(sizes, ksize, strides, pads)]
    if min(out, default=1) <= 0:
        raise ValueError(f"pool: input spatial size {tuple(sizes)} is too small for window {ksize} "
                         f"with pads {pads}")
    return ksize, strides, pads, axes, sizes, out


def _pad(x, axes, pads, value):
    if not any(lo or hi for lo, hi in pads):
        return x
    width = [(0, 0)] * x.ndim
    for a, p in zip(axes, pads):
        width[a] = p
    return np.pad(x, width, constant_values=value)


def _tap_slice(ndim, axes, tap, strides, out):
    sl = [slice(None)] * ndim
    for a, t, s, o in zip(axes, tap, strides, out):
        sl[a] = slice(t, t + (o - 1) * s + 1, s)
    return tuple(sl)


def _lowest(dtype):
    return -np.inf if np.issubdtype(dtype, np.floating) else np.iinfo(dtype).min


def _divisor(x, ksize, strides, pads, axes, sizes, out, count_include_pad):
    """The averaging divisor, broadcastable to the output: window size, or real elements per window."""
    if count_include_pad or not any(lo or hi for lo, hi in pads):
        return float(np.prod(ksize))
    div = np.ones([1] * x.ndim, dtype=np.float64)
    for a, size, k, s, (lo, _), o in zip(axes, sizes, ksize, strides, pads, out):
        start = np.arange(o) * s - lo
        cnt = np.minimum(start + k, size) - np.maximum(start, 0)
        shape = [1] * x.ndim
        shape[a] = o
        div = div * cnt.reshape(shape)
    return to_device(div, module_of(x))


def _crop_pads(gxp, axes, pads):
    sl = [slice(None)] * gxp.ndim
    for a, (lo, hi) in zip(axes, pads):
        sl[a] = slice(lo, gxp.shape[a] - hi)
    return gxp[tuple(sl)]


def _where_or_zero(mask, g, out=None):
    """np.where(mask, g, 0) for same-shape arrays, bit for bit, into `out` if given (a view may be strided);
    float32/64 as an AND of the bits (np.where's loop is ~20x slower on an unpredictable mask)."""
    g = np.asarray(g)
    if g.dtype.kind != "f" or g.dtype.itemsize not in (4, 8) or mask.shape != g.shape or \
            (out is not None and out.dtype != g.dtype):
        if out is None:
            return np.where(mask, g, 0)
        out[...] = np.where(mask, g, 0)
        return out
    ut = np.uint32 if g.dtype.itemsize == 4 else np.uint64
    bits = mask.astype(ut)
    np.negative(bits, out=bits)
    if out is None:
        np.bitwise_and(bits, g.view(ut), out=bits)
        return bits.view(g.dtype)
    np.bitwise_and(bits, np.ascontiguousarray(g).view(ut), out=out.view(ut))
    return out


def _saved_max_grad(x, grad, output, won, axes, ksize, strides, pads, out, tiled):
    """Max pooling's gradient from each window's winning tap `won` (MaxPool.forward_saving): one masked copy of
    the gradient per tap. A NaN window takes no gradient (as in a loop over the taps where each window's first
    tap equal to its maximum takes it: no tap equals NaN)."""
    grad = np.asarray(grad)
    nan = np.isnan(output) if np.asarray(output).dtype.kind == "f" else None
    if nan is not None and nan.any():
        grad = _where_or_zero(~nan, grad)
    taps = [_tap_slice(x.ndim, axes, tap, strides, out) for tap in np.ndindex(*ksize)]
    if tiled:  # the taps' slices cover x once: each is written, none added
        gx = np.empty(x.shape, grad.dtype, like=like(grad))

        def write(part: slice) -> None:
            g, w, dest = grad[part], won[part], gx[part]
            for j, sl in enumerate(taps):
                _where_or_zero(np.equal(w, j), g, out=dest[sl])

        parallel.split(write, len(gx), 0 if on_device(gx) else gx.nbytes * 2)  # a GPU has its own threads
        return gx
    shape = list(x.shape)
    for a, (lo, hi) in zip(axes, pads):
        shape[a] += lo + hi
    gxp = np.zeros(shape, grad.dtype, like=like(grad))
    for j, sl in enumerate(taps):
        gxp[sl] += _where_or_zero(np.equal(won, j), grad)
    return _crop_pads(gxp, axes, pads)


def _max_taps(xp, y, won, axes, ksize, strides, out):
    """The window maxima of padded `xp` into `y` and, if `won` is given, each window's first tap (in tap order)
    holding the maximum: a later tap wins only with a strictly greater value, so won = max(won, j * (v > y))."""
    for j, tap in enumerate(np.ndindex(*ksize)):
        v = xp[_tap_slice(xp.ndim, axes, tap, strides, out)]
        if j == 0:
            np.copyto(y, v)
            continue
        if won is None:
            np.maximum(y, v, out=y)
            continue
        before = y.copy()  # contiguous arrays compare faster than the strided tap
        np.maximum(y, v, out=y)
        step = np.greater(y, before)
        step = step.view(np.int8) if won.dtype == np.int8 else step.astype(won.dtype)
        np.multiply(step, won.dtype.type(j), out=step)
        np.maximum(won, step, out=won)


def _onnx_pool(builder, op_type, x_name, ksize, strides, pads, channels_last, **extra):
    n_sp = len(ksize)
    if channels_last:
        x_name = builder.node("Transpose", [x_name], perm=[0, n_sp + 1] + list(range(1, n_sp + 1)))
    y = builder.node(op_type, [x_name], kernel_shape=list(ksize), strides=list(strides),
                     pads=[lo for lo, _ in pads] + [hi for _, hi in pads], **extra)
    if channels_last:
        y = builder.node("Transpose", [y], perm=[0] + list(range(2, n_sp + 2)) + [1])
    return y


@register
class MaxPool(Op):
    name = "max_pool"

    @staticmethod
    def forward(x, ksize, strides=None, pads=None, channels_last=True):
        return MaxPool.forward_saving((False,), x, ksize, strides, pads, channels_last)[0]

    @staticmethod
    def forward_saving(needs, x, ksize, strides=None, pads=None, channels_last=True):
        """`forward`, plus (when x's gradient is wanted) each window's winning tap: the first one, in tap order,
        holding the maximum (a few byte-sized passes here save the backward pass's comparisons with the whole
        input)."""
        ksize, strides, pads, axes, _, out = _geometry(x, ksize, strides, pads, channels_last)
        xp = _pad(x, axes, pads, _lowest(x.dtype))
        shape = list(x.shape)
        for a, o in zip(axes, out):
            shape[a] = o
        y = np.empty(shape, x.dtype, like=like(x))
        won = np.zeros(shape, np.int8 if np.prod(ksize) <= 127 else np.int32, like=like(x)) if needs[0] else None
        parallel.split(lambda part: _max_taps(xp[part], y[part], None if won is None else won[part], axes, ksize,
                                              strides, out),
                       len(y), 0 if on_device(y) else xp.nbytes + y.nbytes)
        return y, won

    @staticmethod
    def backward(grad, inputs, output, ksize, strides=None, pads=None, channels_last=True, saved=None):
        """The gradient goes to the first tap holding the window's maximum (`saved`: those taps, from
        `forward_saving`)."""
        (x,) = inputs
        ksize, strides, pads, axes, sizes, out = _geometry(x, ksize, strides, pads, channels_last)
        tiled = strides == ksize and not any(lo or hi for lo, hi in pads) and \
            all(s == o * k for s, o, k in zip(sizes, out, ksize))
        if saved is None:
            saved = MaxPool.forward_saving((True,), x, ksize, strides, pads, channels_last)[1]
        return (_saved_max_grad(x, grad, output, saved, axes, ksize, strides, pads, out, tiled),)

    @staticmethod
    def to_onnx(builder, inputs, ksize, strides=None, pads=None, channels_last=True):
        ksize, strides, pads = _norm(len(ksize), ksize, strides, pads)
        return _onnx_pool(builder, "MaxPool", inputs[0], ksize, strides, pads, channels_last)


@register
class AvgPool(Op):
    name = "avg_pool"

    @staticmethod
    def forward(x, ksize, strides=None, pads=None, count_include_pad=False, channels_last=True):
        ksize, strides, pads, axes, sizes, out = _geometry(x, ksize, strides, pads, channels_last)
        xp = _pad(x, axes, pads, 0)
        y = None
        for tap in np.ndindex(*ksize):
            v = xp[_tap_slice(x.ndim, axes, tap, strides, out)]
            y = v.astype(np.result_type(x.dtype, np.float32), copy=True) if y is None else np.add(y, v, out=y)
        div = _divisor(x, ksize, strides, pads, axes, sizes, out, count_include_pad)
        y /= y.dtype.type(div) if np.ndim(div) == 0 else div.astype(y.dtype)
        return y

    @staticmethod
    def backward(grad, inputs, output, ksize, strides=None, pads=None, count_include_pad=False,
                 channels_last=True):
        (x,) = inputs
        ksize, strides, pads, axes, sizes, out = _geometry(x, ksize, strides, pads, channels_last)
        div = _divisor(x, ksize, strides, pads, axes, sizes, out, count_include_pad)
        g = grad / (grad.dtype.type(div) if np.ndim(div) == 0 else div.astype(grad.dtype))
        shape = list(x.shape)
        for a, (lo, hi) in zip(axes, pads):
            shape[a] += lo + hi
        gxp = np.zeros(shape, dtype=grad.dtype, like=like(grad))
        for tap in np.ndindex(*ksize):
            gxp[_tap_slice(x.ndim, axes, tap, strides, out)] += g
        return (_crop_pads(gxp, axes, pads),)

    @staticmethod
    def to_onnx(builder, inputs, ksize, strides=None, pads=None, count_include_pad=False, channels_last=True):
        ksize, strides, pads = _norm(len(ksize), ksize, strides, pads)
        return _onnx_pool(builder, "AveragePool", inputs[0], ksize, strides, pads, channels_last,
                          count_include_pad=int(bool(count_include_pad)))


@traceable
def max_pool(x: np.ndarray, ksize: Sequence[int], strides: Sequence[int] | None = None,
             pads: Sequence[tuple[int, int]] | None = None, channels_last: bool = True) -> np.ndarray:
    """N-d max pooling; padding never wins (it is -inf). Strides default to the window."""
    return MaxPool.forward(x, ksize, strides, pads, channels_last)


@traceable
def avg_pool(x: np.ndarray, ksize: Sequence[int], strides: Sequence[int] | None = None,
             pads: Sequence[tuple[int, int]] | None = None, count_include_pad: bool = False,
             channels_last: bool = True) -> np.ndarray:
    """N-d average pooling; `count_include_pad` picks the divisor (see the module doc)."""
    return AvgPool.forward(x, ksize, strides, pads, count_include_pad, channels_last)


# ---------------------------------------------------------------------------------------------- global


def _axes(ndim, axes):
    return tuple(sorted(a % ndim for a in axes))


def _reduce_onnx(builder, op_type, x_name, axes, keepdims):
    opset = getattr(builder, "opset", 17)
    if opset >= 18 or op_type == "ReduceSum":
        return builder.node(op_type, [x_name, builder.const(list(axes), "axes", dtype=np.int64)],
                            keepdims=int(keepdims))
    return builder.node(op_type, [x_name], axes=list(axes), keepdims=int(keepdims))


@register
class GlobalMaxPool(Op):
    name = "global_max_pool"

    @staticmethod
    def forward(x, axes, keepdims=False):
        return np.max(x, axis=_axes(x.ndim, axes), keepdims=keepdims)

    @staticmethod
    def backward(grad, inputs, output, axes, keepdims=False):
        """Ties share nothing: the gradient goes to every position equal to the maximum (as TF's reduce_max)."""
        (x,) = inputs
        axes = _axes(x.ndim, axes)
        y = output if keepdims else np.expand_dims(output, axes)
        g = grad if keepdims else np.expand_dims(grad, axes)
        hit = x == y
        return (np.where(hit, g / np.sum(hit, axis=axes, keepdims=True), 0).astype(grad.dtype),)

    @staticmethod
    def to_onnx(builder, inputs, axes, keepdims=False):
        return _reduce_onnx(builder, "ReduceMax", inputs[0], axes, keepdims)


@register
class GlobalAvgPool(Op):
    """Mean over `axes`; with a `mask` (broadcastable to x, 1 = keep) the mean of the kept elements."""

    name = "global_avg_pool"

    @staticmethod
    def forward(x, mask=None, axes=(1,), keepdims=False):
        axes = _axes(x.ndim, axes)
        if mask is None:
            return np.mean(x, axis=axes, keepdims=keepdims, dtype=np.result_type(x.dtype, np.float32))
        m = np.asarray(mask).astype(x.dtype)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.sum(x * m, axis=axes, keepdims=keepdims) / np.sum(m, axis=axes, keepdims=keepdims)

    @staticmethod
    def backward(grad, inputs, output, axes=(1,), keepdims=False):
        x, mask = (inputs + (None,))[:2]
        axes = _axes(x.ndim, axes)
        g = grad if keepdims else np.expand_dims(grad, axes)
        if mask is None:
            count = int(np.prod([x.shape[a] for a in axes]))
            return (np.broadcast_to(g / count, x.shape).astype(grad.dtype), None)
        m = np.asarray(mask).astype(x.dtype)
        with np.errstate(invalid="ignore", divide="ignore"):
            gx = g * m / np.sum(m, axis=axes, keepdims=True)
        return (np.broadcast_to(gx, x.shape).astype(grad.dtype), None)

    @staticmethod
    def to_onnx(builder, inputs, axes=(1,), keepdims=False):
        if len(inputs) < 2 or not inputs[1]:
            return _reduce_onnx(builder, "ReduceMean", inputs[0], axes, keepdims)
        m = builder.node("Cast", [inputs[1]], to=1)  # float
        num = _reduce_onnx(builder, "ReduceSum", builder.node("Mul", [inputs[0], m]), axes, keepdims)
        den = _reduce_onnx(builder, "ReduceSum", m, axes, keepdims)
        return builder.node("Div", [num, den])


def global_max_pool(x: np.ndarray, axes: Sequence[int], keepdims: bool = False) -> np.ndarray:
    """Maximum over the (spatial) `axes`."""
    return GlobalMaxPool.forward(x, tuple(axes), keepdims)


def global_avg_pool(x: np.ndarray, axes: Sequence[int], keepdims: bool = False, mask=None) -> np.ndarray:
    """Mean over the (spatial) `axes`; `mask` (broadcastable to x) restricts it to the kept elements."""
    return GlobalAvgPool.forward(x, mask, tuple(axes), keepdims)
