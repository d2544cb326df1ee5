"""N-d convolution (1-D, 2-D, 3-D) with strides, dilation, groups and explicit asymmetric padding.

Layout: `x` is channels-last `(N, *spatial, C)` (or channels-first with `channels_last=False`), the
kernel is in Keras order `(*k, C/groups, filters)`. The forward pass is one im2col GEMM per group; the
gradient loops over kernel positions (one GEMM each), which needs no im2col buffer.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .base import Op, register


def conv_output_length(size: int, k: int, stride: int, dilation: int, pad_lo: int, pad_hi: int) -> int:
    """floor((size + pads - effective_kernel) / stride) + 1, the convolution arithmetic every framework shares."""
    eff = dilation * (k - 1) + 1
    return (size + pad_lo + pad_hi - eff) // stride + 1


def _to_last(x, channels_last):
    return x if channels_last else np.moveaxis(x, 1, -1)


def _from_last(y, channels_last):
    return y if channels_last else np.moveaxis(y, -1, 1)


def _windows(xp: np.ndarray, ksize, strides, dilations, out_sizes):
    """View of shape (N, *out, *k, C): every kernel tap of every output position, without copying."""
    n_sp = len(ksize)
    eff = [d * (k - 1) + 1 for k, d in zip(ksize, dilations)]
    win = np.lib.stride_tricks.sliding_window_view(xp, eff, axis=tuple(range(1, 1 + n_sp)))
    # win: (N, *positions, C, *eff) -> subsample positions by stride and taps by dilation
    idx = (slice(None),)
    idx += tuple(slice(0, (o - 1) * s + 1, s) for o, s in zip(out_sizes, strides))
    idx += (slice(None),)
    idx += tuple(slice(None, None, d) for d in dilations)
    win = win[idx]
    # move C after the taps: (N, *out, *k, C)
    return np.moveaxis(win, 1 + n_sp, -1)


def _pad(x, pads):
    if any(lo or hi for lo, hi in pads):
        return np.pad(x, [(0, 0)] + [tuple(p) for p in pads] + [(0, 0)])
    return x


@register
class Conv(Op):
    name = "conv"

    @staticmethod
    def forward(x, kernel, strides=None, pads=None, dilations=None, groups=1, channels_last=True):
        n_sp = kernel.ndim - 2
        strides, pads, dilations = _norm(n_sp, strides, pads, dilations)
        xl = _to_last(x, channels_last)
        ksize = kernel.shape[:n_sp]
        cin_g, cout = kernel.shape[n_sp], kernel.shape[n_sp + 1]
        if xl.shape[-1] != cin_g * groups:
            raise ValueError(f"conv: input has {xl.shape[-1]} channels, kernel expects {cin_g * groups}")
        out_sizes = [conv_output_length(s, k, st, d, lo, hi)
                     for s, k, st, d, (lo, hi) in zip(xl.shape[1:-1], ksize, strides, dilations, pads)]
        if min(out_sizes) <= 0:
            raise ValueError(f"conv: input spatial size {xl.shape[1:-1]} is too small for kernel {ksize}")
        win = _windows(_pad(xl, pads), ksize, strides, dilations, out_sizes)  # (N, *out, *k, C)
        m = int(np.prod(win.shape[: 1 + n_sp]))
        kprod = int(np.prod(ksize))
        if groups == 1:
            cols = win.reshape(m, kprod * cin_g)
            y = cols @ kernel.reshape(kprod * cin_g, cout)
        else:
            cout_g = cout // groups
            cols = win.reshape(m, kprod, groups, cin_g).transpose(2, 0, 1, 3).reshape(groups, m, kprod * cin_g)
            kg = kernel.reshape(kprod, cin_g, groups, cout_g).transpose(2, 0, 1, 3).reshape(groups, kprod * cin_g, cout_g)
            y = np.matmul(cols, kg).transpose(1, 0, 2).reshape(m, cout)
        y = y.reshape(*win.shape[: 1 + n_sp], cout)
        return _from_last(y, channels_last)

    @staticmethod
    def backward(grad, inputs, output, strides=None, pads=None, dilations=None, groups=1, channels_last=True):
        x, kernel = inputs
        n_sp = kernel.ndim - 2
        strides, pads, dilations = _norm(n_sp, strides, pads, dilations)
        xl = _to_last(x, channels_last)
        gl = _to_last(grad, channels_last)
        xp = _pad(xl, pads)
        out_sizes = gl.shape[1:-1]
        cin_g, cout = kernel.shape[n_sp], kernel.shape[n_sp + 1]
        cout_g = cout // groups
        gxp = np.zeros_like(xp)
        gk = np.zeros_like(kernel)
        n = gl.shape[0]
        g2 = gl.reshape(-1, groups, cout_g)
        for tap in np.ndindex(*kernel.shape[:n_sp]):
            sl = (slice(None),) + tuple(
                slice(t * d, t * d + (o - 1) * s + 1, s) for t, d, o, s in zip(tap, dilations, out_sizes, strides))
            xs = xp[sl].reshape(-1, groups, cin_g)  # (M, g, cin_g)
            w = kernel[tap].reshape(cin_g, groups, cout_g)  # (cin_g, g, cout_g)
            gk[tap] = np.einsum("mgc,mgo->cgo", xs, g2, optimize=True).reshape(cin_g, cout)
            gx = np.einsum("mgo,cgo->mgc", g2, w, optimize=True).reshape(n, *out_sizes, groups * cin_g)
            gxp[sl] += gx
        crop = (slice(None),) + tuple(slice(lo, xp.shape[1 + i] - hi) for i, (lo, hi) in enumerate(pads))
        return _from_last(gxp[crop], channels_last), gk

    @staticmethod
    def to_onnx(builder, inputs, strides=None, pads=None, dilations=None, groups=1, channels_last=True,
                kernel_value=None):
        """Emit ONNX Conv. The kernel is a constant (`kernel_value`, Keras order) or a named input."""
        x_name, k_name = inputs
        n_sp = len(strides) if strides is not None else kernel_value.ndim - 2
        strides, pads, dilations = _norm(n_sp, strides, pads, dilations)
        if kernel_value is not None:  # (*k, cin_g, out) -> (out, cin_g, *k)
            k_name = builder.const(np.transpose(kernel_value, (n_sp + 1, n_sp) + tuple(range(n_sp))), "kernel")
        else:
            k_name = builder.node("Transpose", [k_name], perm=[n_sp + 1, n_sp] + list(range(n_sp)))
        perm_in = [0, n_sp + 1] + list(range(1, n_sp + 1))
        perm_out = [0] + list(range(2, n_sp + 2)) + [1]
        if channels_last:
            x_name = builder.node("Transpose", [x_name], perm=perm_in)
        onnx_pads = [lo for lo, _ in pads] + [hi for _, hi in pads]
        y = builder.node("Conv", [x_name, k_name], strides=list(strides), pads=onnx_pads,
                         dilations=list(dilations), group=int(groups))
        if channels_last:
            y = builder.node("Transpose", [y], perm=perm_out)
        return y


def _norm(n_sp, strides, pads, dilations):
    strides = tuple(strides) if strides is not None else (1,) * n_sp
    dilations = tuple(dilations) if dilations is not None else (1,) * n_sp
    pads = tuple(tuple(p) for p in pads) if pads is not None else ((0, 0),) * n_sp
    return strides, pads, dilations


def conv(x: np.ndarray, kernel: np.ndarray, strides: Sequence[int] | None = None,
         pads: Sequence[tuple[int, int]] | None = None, dilations: Sequence[int] | None = None,
         groups: int = 1, channels_last: bool = True) -> np.ndarray:
    """N-d cross-correlation (what every deep-learning 'convolution' computes), kernel `(*k, C/groups, out)`."""
    return Conv.forward(x, kernel, strides, pads, dilations, groups, channels_last)


def conv_transpose(x: np.ndarray, kernel: np.ndarray, strides: Sequence[int] | None = None,
                   pads: Sequence[tuple[int, int]] | None = None, dilations: Sequence[int] | None = None,
                   output_padding: Sequence[int] | None = None, channels_last: bool = True) -> np.ndarray:
    """Transposed convolution (the input-gradient of `conv`); kernel in Keras order `(*k, out, in)`.

    The full output has length `(L-1)*s + d*(k-1) + 1 + output_padding` per axis, from which `pads`
    (lo, hi) are cropped.
    """
    n_sp = kernel.ndim - 2
    strides, pads, dilations = _norm(n_sp, strides, pads, dilations)
    output_padding = tuple(output_padding) if output_padding is not None else (0,) * n_sp
    xl = _to_last(x, channels_last)
    in_sizes = xl.shape[1:-1]
    cout = kernel.shape[n_sp]
    full = [(i - 1) * s + d * (k - 1) + 1 + op
            for i, s, d, k, op in zip(in_sizes, strides, dilations, kernel.shape[:n_sp], output_padding)]
    y = np.zeros((xl.shape[0], *full, cout), dtype=np.result_type(xl, kernel))
    flat = xl.reshape(-1, xl.shape[-1])
    for tap in np.ndindex(*kernel.shape[:n_sp]):
        sl = (slice(None),) + tuple(
            slice(t * d, t * d + (i - 1) * s + 1, s) for t, d, i, s in zip(tap, dilations, in_sizes, strides))
        y[sl] += (flat @ kernel[tap].T).reshape(xl.shape[0], *in_sizes, cout)
    crop = (slice(None),) + tuple(slice(lo, f - hi) for (lo, hi), f in zip(pads, full))
    return _from_last(y[crop], channels_last)
