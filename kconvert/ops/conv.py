"""N-d convolution and transposed convolution (1-D, 2-D, 3-D) with strides, dilation, groups and explicit
asymmetric padding.

Layout: `x` is channels-last `(N, *spatial, C)` (or channels-first with `channels_last=False`).
`conv`'s kernel is in Keras order `(*k, C/groups, filters)`; `conv_transpose`'s is Keras's transposed order
`(*k, filters, C)`.

Both directions are one GEMM each: the convolution gathers every kernel tap of every output position into
an im2col matrix (a strided view, copied once into a kept buffer, ops/scratch.py; tap by tap, in blocks, for
one input channel) and multiplies it by the kernel; the transposed convolution multiplies the input by the
kernel first and then scatter-adds the per-tap columns into the output (col2im), which loops over kernel taps
only, never over output positions. Work is split over batch chunks so that the im2col buffer stays bounded.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from . import gemm, ov_conv, parallel, scratch
from .array_module import like, on_device
from .base import Op, register, traceable

# the largest im2col buffer (in elements) built at once; bigger batches are processed in chunks
_MAX_COLS = 1 << 24


def conv_output_length(size: int, k: int, stride: int, dilation: int, pad_lo: int, pad_hi: int) -> int:
    """floor((size + pads - effective_kernel) / stride) + 1, the convolution arithmetic every framework shares."""
    eff = dilation * (k - 1) + 1
    return (size + pad_lo + pad_hi - eff) // stride + 1


def _to_last(x, channels_last):
    return x if channels_last else np.moveaxis(x, 1, -1)


def _from_last(y, channels_last):
    return y if channels_last else np.moveaxis(y, -1, 1)


def _norm(n_sp, strides, pads, dilations):
    strides = tuple(int(s) for s in strides) if strides is not None else (1,) * n_sp
    dilations = tuple(int(d) for d in dilations) if dilations is not None else (1,) * n_sp
    pads = tuple((int(p[0]), int(p[1])) for p in pads) if pads is not None else ((0, 0),) * n_sp
    if not (len(strides) == len(dilations) == len(pads) == n_sp):
        raise ValueError(f"conv: strides {strides}, dilations {dilations} and pads {pads} must each have "
                         f"{n_sp} entries (one per spatial axis)")
    if min(strides, default=1) < 1 or min(dilations, default=1) < 1:
        raise ValueError(f"conv: strides {strides} and dilations {dilations} must be positive")
    return strides, pads, dilations


def _pad(x, pads):
    """Zero-pad the spatial axes of a channels-last array; negative pads crop."""
    if not any(lo or hi for lo, hi in pads):
        return x
    if any(lo < 0 or hi < 0 for lo, hi in pads):
        crop = (slice(None),) + tuple(slice(max(-lo, 0), x.shape[1 + i] - max(-hi, 0))
                                      for i, (lo, hi) in enumerate(pads))
        x = x[crop]
        pads = [(max(lo, 0), max(hi, 0)) for lo, hi in pads]
    y = np.zeros((x.shape[0], *(s + lo + hi for s, (lo, hi) in zip(x.shape[1:-1], pads)), x.shape[-1]), x.dtype,
                 like=like(x))
    y[(slice(None),) + tuple(slice(lo, lo + s) for s, (lo, _) in zip(x.shape[1:-1], pads))] = x
    return y


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


def _columns(xp: np.ndarray, ksize, strides, dilations, out_sizes) -> np.ndarray:
    """The im2col matrix `(N * prod(out), prod(k) * C)` of padded channels-last `xp` (groups == 1): the window
    view copied once; for one channel, tap by tap (block copies of shifted rows, not a gather), F-ordered."""
    m = xp.shape[0] * int(np.prod(out_sizes))
    kprod = int(np.prod(ksize))
    if xp.shape[-1] == 1 and not on_device(xp):
        cols_t = np.empty((kprod, xp.shape[0], *out_sizes), dtype=xp.dtype, like=like(xp))
        taps = [sl for _, sl in _tap_slices(ksize, strides, dilations, out_sizes)]

        def copy_taps(part: slice) -> None:
            for j in range(part.start, part.stop):
                cols_t[j] = xp[taps[j]][..., 0]

        parallel.split(copy_taps, kprod, cols_t.nbytes)
        return cols_t.reshape(kprod, m).T  # BLAS reads it transposed
    win = _windows(xp, ksize, strides, dilations, out_sizes)
    if not isinstance(xp, np.ndarray):  # a device array: its own copy
        return win.reshape(m, kprod * xp.shape[-1])
    cols = scratch.buffer("im2col", win.shape, xp.dtype)  # a kept buffer: a new one's page faults cost as much
    parallel.split(lambda part: np.copyto(cols[part], win[part]), len(cols), cols.nbytes)
    return cols.reshape(m, kprod * xp.shape[-1])


def _tap_slices(ksize, strides, dilations, in_sizes):
    """For each kernel tap, the slice of the (padded / full) array it meets: positions t*d + i*s."""
    for tap in np.ndindex(*ksize):
        yield tap, (slice(None),) + tuple(
            slice(t * d, t * d + (i - 1) * s + 1, s) for t, d, i, s in zip(tap, dilations, in_sizes, strides))


def _col2im(cols: np.ndarray, ksize, strides, dilations, full_sizes) -> np.ndarray:
    """Scatter-add per-tap columns `(kprod, N, *in, C)` into `(N, *full, C)`: y[i*s + t*d] += cols[t, i]."""
    n_sp = len(ksize)
    y = np.zeros((cols.shape[1], *full_sizes, cols.shape[-1]), dtype=cols.dtype, like=like(cols))
    for j, (_, sl) in enumerate(_tap_slices(ksize, strides, dilations, cols.shape[2:2 + n_sp])):
        y[sl] += cols[j]
    return y


def _chunks(n: int, per_sample: int):
    """Batch slices whose im2col buffers stay under `_MAX_COLS` elements."""
    step = max(1, _MAX_COLS // max(per_sample, 1))
    return [slice(i, min(i + step, n)) for i in range(0, n, step)] or [slice(0, 0)]


def _input_grad_taps(gxp, g, kt, ksize, strides, dilations, out_sizes) -> None:
    """Add the input gradient of every kernel tap into padded `gxp`: one product per tap, added into place while
    it is still in cache. With MLAS on several threads (the training step's "mlas" mode), the batch is split
    over the cores instead, each half running its products on one thread: a (12544 x 64) by (64 x 32) product
    gains little from a second thread, and the strided adds then run on both cores too (MNIST CNN's second
    convolution, 2 cores: 7.8 -> 5.5 ms). Each row's products and sums are the same either way."""
    taps = [sl for _, sl in _tap_slices(ksize, strides, dilations, out_sizes)]
    if on_device(g):  # a GPU: every tap's product in one batched call (Python and launches are the cost there)
        prods = np.matmul(g.reshape(-1, g.shape[-1]), kt).reshape(len(taps), *g.shape[:-1], kt.shape[-1])
        for j, sl in enumerate(taps):
            gxp[sl] += prods[j]
        return
    threads = gemm.threads()
    work = len(taps) * (gxp.nbytes + g.nbytes)  # every tap reads the gradient and adds into the input's
    pieces = parallel.parts(len(g), work) if threads > 1 else [slice(0, len(g))]
    inner = max(1, threads // len(pieces)) if threads else 0

    def part(rows: slice) -> None:
        gp, lead = gxp[rows], g[rows].shape[:-1]
        g2 = g[rows].reshape(-1, g.shape[-1])
        tap = np.empty((len(g2), kt.shape[-1]), dtype=np.result_type(g2, kt), like=like(g2))
        with gemm.use_mlas(inner):
            for j, sl in enumerate(taps):
                gp[sl] += gemm.matmul(g2, kt[j], out=tap).reshape(*lead, kt.shape[-1])

    parallel.split(part, len(g), 0, pieces)


# ---------------------------------------------------------------------------------------------- conv


def _conv_forward_last(xl, kernel, strides, pads, dilations, groups, keep_cols: bool = False):
    """The convolution of channels-last `xl`; with `keep_cols`, (y, the im2col matrix or None): the matrix is
    kept when it was built in one piece (one batch chunk, groups == 1), for the kernel gradient."""
    n_sp = kernel.ndim - 2
    ksize = kernel.shape[:n_sp]
    cin_g, cout = kernel.shape[n_sp], kernel.shape[n_sp + 1]
    if groups < 1 or xl.shape[-1] != cin_g * groups:
        raise ValueError(f"conv: input has {xl.shape[-1]} channels, kernel {kernel.shape} with groups={groups} "
                         f"expects {cin_g * groups}")
    if cout % groups:
        raise ValueError(f"conv: {cout} filters are not divisible by groups={groups}")
    out_sizes = [conv_output_length(s, k, st, d, lo, hi)
                 for s, k, st, d, (lo, hi) in zip(xl.shape[1:-1], ksize, strides, dilations, pads)]
    if min(out_sizes, default=1) <= 0:
        raise ValueError(f"conv: input spatial size {xl.shape[1:-1]} is too small for kernel {ksize} "
                         f"(dilations {dilations}, pads {pads})")
    kprod = int(np.prod(ksize))
    cout_g = cout // groups
    if groups == 1 and (y := ov_conv.forward(xl, kernel, strides, pads, dilations, out_sizes)) is not None:
        return (y, None) if keep_cols else y  # OpenVINO's kernels, within a training step (ops/ov_conv.py)
    if cin_g == 1 and groups > 1:  # depthwise: a multiply-add per tap beats an im2col of tiny GEMMs
        xp = _pad(xl, pads)
        kd = kernel.reshape(kprod, groups, cout_g)
        y = np.zeros((xl.shape[0], *out_sizes, groups, cout_g), dtype=np.result_type(xl, kernel), like=like(xl))
        for j, (_, sl) in enumerate(_tap_slices(ksize, strides, dilations, out_sizes)):
            y += xp[sl][..., None] * kd[j]
        y = y.reshape(*y.shape[:-2], cout)
        return (y, None) if keep_cols else y
    if groups == 1:
        kmat = kernel.reshape(kprod * cin_g, cout)
    else:
        kmat = kernel.reshape(kprod, cin_g, groups, cout_g).transpose(2, 0, 1, 3).reshape(groups, kprod * cin_g,
                                                                                          cout_g)
    n = xl.shape[0]
    y = np.empty((n, *out_sizes, cout), dtype=np.result_type(xl, kernel), like=like(xl))
    per_sample = int(np.prod(out_sizes)) * kprod * xl.shape[-1]
    chunks = _chunks(n, per_sample)
    kept = None
    for b in chunks:
        xp = _pad(xl[b], pads)
        m = xl[b].shape[0] * int(np.prod(out_sizes))
        if groups == 1:
            cols = _columns(xp, ksize, strides, dilations, out_sizes)
            gemm.matmul(cols, kmat, out=y[b].reshape(m, cout))  # y[b] is contiguous
            if keep_cols and len(chunks) == 1:
                kept = cols
        else:
            win = _windows(xp, ksize, strides, dilations, out_sizes)  # (n_b, *out, *k, C)
            cols = win.reshape(m, kprod, groups, cin_g).transpose(2, 0, 1, 3).reshape(groups, m, kprod * cin_g)
            y[b] = np.matmul(cols, kmat).transpose(1, 0, 2).reshape(y[b].shape)
    return (y, kept) if keep_cols else y


@register
class Conv(Op):
    """Cross-correlation with Keras-order kernel `(*k, C/groups, filters)`; ONNX Conv."""

    name = "conv"

    @staticmethod
    def forward(x, kernel, strides=None, pads=None, dilations=None, groups=1, channels_last=True):
        strides, pads, dilations = _norm(kernel.ndim - 2, strides, pads, dilations)
        y = _conv_forward_last(_to_last(x, channels_last), kernel, strides, pads, dilations, int(groups))
        return _from_last(y, channels_last)

    @staticmethod
    def forward_saving(needs, x, kernel, strides=None, pads=None, dilations=None, groups=1, channels_last=True):
        """`forward`, plus the im2col matrix when the kernel's gradient will need it (for `backward`'s `saved`)."""
        strides, pads, dilations = _norm(kernel.ndim - 2, strides, pads, dilations)
        y, cols = _conv_forward_last(_to_last(x, channels_last), kernel, strides, pads, dilations, int(groups),
                                     keep_cols=bool(needs[1]))
        return _from_last(y, channels_last), cols

    @staticmethod
    def backward(grad, inputs, output, strides=None, pads=None, dilations=None, groups=1, channels_last=True,
                 needs=None, saved=None):
        """(d x, d kernel); `needs` (one flag per input) skips a gradient nobody asked for (None for it);
        `saved` is the im2col matrix `forward_saving` kept, if any."""
        x, kernel = inputs
        need_x, need_k = needs if needs is not None else (True, True)
        n_sp = kernel.ndim - 2
        strides, pads, dilations = _norm(n_sp, strides, pads, dilations)
        groups = int(groups)
        xl = _to_last(x, channels_last)
        gl = _to_last(grad, channels_last)
        ksize = kernel.shape[:n_sp]
        kprod = int(np.prod(ksize))
        cin_g, cout = kernel.shape[n_sp], kernel.shape[n_sp + 1]
        cout_g = cout // groups
        out_sizes = gl.shape[1:-1]
        padded = [s + lo + hi for s, (lo, hi) in zip(xl.shape[1:-1], pads)]
        dtype = np.result_type(xl, kernel, gl)
        crop = (slice(None),) + tuple(slice(lo, p - hi) for (lo, hi), p in zip(pads, padded))
        if cin_g == 1 and groups > 1:  # depthwise
            xp = _pad(xl, pads)
            kd = kernel.reshape(kprod, groups, cout_g)
            g3 = gl.reshape(*gl.shape[:-1], groups, cout_g)
            g_flat = g3.reshape(-1, groups, cout_g)
            gk = np.empty((kprod, groups, cout_g), dtype=dtype, like=like(xl)) if need_k else None
            gxp = np.zeros(xp.shape, dtype=dtype, like=like(xl)) if need_x else None
            for j, (_, sl) in enumerate(_tap_slices(ksize, strides, dilations, out_sizes)):
                if need_k:
                    gk[j] = np.einsum("nc,ncm->cm", xp[sl].reshape(-1, groups), g_flat)
                if need_x:
                    gxp[sl] += g3[..., 0] * kd[j, :, 0] if cout_g == 1 else np.einsum("...cm,cm->...c", g3, kd[j])
            return (_from_last(gxp[crop], channels_last) if need_x else None,
                    gk.reshape(kernel.shape) if need_k else None)
        if need_x and groups == 1 and \
                (gx := ov_conv.input_grad(gl, kernel, xl.shape, strides, pads, dilations)) is not None:
            gk = Conv.backward(grad, inputs, output, strides, pads, dilations, groups, channels_last,
                               (False, need_k), saved)[1] if need_k else None
            return _from_last(gx, channels_last), gk
        gk = np.zeros((groups, kprod * cin_g, cout_g), dtype=dtype, like=like(xl))
        if groups == 1:
            kt = np.ascontiguousarray(kernel.reshape(kprod, cin_g, cout).transpose(0, 2, 1))  # (kprod, cout, cin)
        else:
            kt = kernel.reshape(kprod, cin_g, groups, cout_g).transpose(0, 2, 3, 1)[:, :, None]  # (kprod,g,1,cout_g,cin_g)
        n = xl.shape[0]
        gx = np.empty(xl.shape, dtype=dtype, like=like(xl)) if need_x else None
        per_sample = int(np.prod(out_sizes)) * kprod * xl.shape[-1]
        for b in _chunks(n, per_sample):
            lead = (xl[b].shape[0], *out_sizes)
            m = int(np.prod(lead))
            if groups == 1:
                g2 = gl[b].reshape(m, cout)
                if need_k:
                    cols = saved if saved is not None else _columns(_pad(xl[b], pads), ksize, strides, dilations,
                                                                    out_sizes)
                    gk[0] += gemm.matmul(cols.T, g2)
                if need_x:
                    gxp = np.zeros((lead[0], *padded, cin_g), dtype=dtype, like=like(xl))
                    _input_grad_taps(gxp, gl[b], kt, ksize, strides, dilations, out_sizes)
                    gx[b] = gxp[crop]
            else:
                gg = gl[b].reshape(m, groups, cout_g).transpose(1, 0, 2)  # (g, m, cout_g)
                if need_k:
                    win = _windows(_pad(xl[b], pads), ksize, strides, dilations, out_sizes)
                    cols = win.reshape(m, kprod, groups, cin_g).transpose(2, 0, 1, 3).reshape(groups, m,
                                                                                              kprod * cin_g)
                    gk += np.matmul(cols.transpose(0, 2, 1), gg)
                if need_x:
                    gcols = np.matmul(gg[:, None], kt[:, :, 0, None]).reshape(kprod, groups, m, cin_g)
                    gcols = gcols.transpose(0, 2, 1, 3)  # (kprod, m, g, cin_g)
            if need_x and groups > 1:
                gxp = _col2im(gcols.reshape(kprod, *lead, -1), ksize, strides, dilations, padded)
                gx[b] = gxp[crop]
        if not need_k:
            gk = None
        elif groups == 1:
            gk = gk[0].reshape(kernel.shape)
        else:
            gk = gk.reshape(groups, kprod, cin_g, cout_g).transpose(1, 2, 0, 3).reshape(kernel.shape)
        return (_from_last(gx, channels_last) if need_x else None), gk

    @staticmethod
    def to_onnx(builder, inputs, strides=None, pads=None, dilations=None, groups=1, channels_last=True,
                kernel_value=None):
        """Emit ONNX Conv. The kernel is a constant (`kernel_value`, Keras order) or the second named input."""
        x_name = inputs[0]
        if kernel_value is not None:
            n_sp = np.ndim(kernel_value) - 2
        elif strides is not None:
            n_sp = len(strides)
        else:
            raise ValueError("Conv.to_onnx needs `strides` or `kernel_value` to know the number of spatial axes")
        strides, pads, dilations = _norm(n_sp, strides, pads, dilations)
        kperm = [n_sp + 1, n_sp] + list(range(n_sp))  # (*k, cin_g, out) -> (out, cin_g, *k)
        if kernel_value is not None:
            k_name = builder.const(np.transpose(kernel_value, kperm), "kernel")
        else:
            k_name = builder.node("Transpose", [inputs[1]], perm=kperm)
        if channels_last:
            x_name = builder.node("Transpose", [x_name], perm=[0, n_sp + 1] + list(range(1, n_sp + 1)))
        onnx_pads = [lo for lo, _ in pads] + [hi for _, hi in pads]
        y = builder.node("Conv", [x_name, k_name], strides=list(strides), pads=onnx_pads,
                         dilations=list(dilations), group=int(groups))
        if channels_last:
            y = builder.node("Transpose", [y], perm=[0] + list(range(2, n_sp + 2)) + [1])
        return y


# ---------------------------------------------------------------------------------------------- conv transpose


def _transpose_geometry(in_sizes, kernel_shape, strides, pads, dilations, output_padding):
    n_sp = len(in_sizes)
    output_padding = tuple(int(p) for p in output_padding) if output_padding is not None else (0,) * n_sp
    if len(output_padding) != n_sp:
        raise ValueError(f"conv_transpose: output_padding {output_padding} must have {n_sp} entries")
    full = [(i - 1) * s + d * (k - 1) + 1 + op
            for i, s, d, k, op in zip(in_sizes, strides, dilations, kernel_shape[:n_sp], output_padding)]
    out = [f - lo - hi for f, (lo, hi) in zip(full, pads)]
    if min(out, default=1) <= 0:
        raise ValueError(f"conv_transpose: pads {pads} leave no output for input size {tuple(in_sizes)}")
    return output_padding, full


@register
class ConvTranspose(Op):
    """Transposed convolution (the input-gradient of `conv`), Keras-order kernel `(*k, filters, C)`.

    Per axis the full output has length `(L-1)*s + d*(k-1) + 1 + output_padding` (the last `output_padding`
    positions receive no taps); `pads` (lo, hi) are then cropped from it (a negative pad adds zeros).
    """

    name = "conv_transpose"

    @staticmethod
    def forward(x, kernel, strides=None, pads=None, dilations=None, output_padding=None, channels_last=True):
        n_sp = kernel.ndim - 2
        strides, pads, dilations = _norm(n_sp, strides, pads, dilations)
        xl = _to_last(x, channels_last)
        ksize = kernel.shape[:n_sp]
        cout, cin = kernel.shape[n_sp], kernel.shape[n_sp + 1]
        if xl.shape[-1] != cin:
            raise ValueError(f"conv_transpose: input has {xl.shape[-1]} channels, kernel {kernel.shape} expects {cin}")
        _, full = _transpose_geometry(xl.shape[1:-1], kernel.shape, strides, pads, dilations, output_padding)
        kprod = int(np.prod(ksize))
        kmat = kernel.reshape(kprod, cout, cin).transpose(0, 2, 1)  # (kprod, cin, cout)
        n = xl.shape[0]
        outs = []
        per_sample = int(np.prod(xl.shape[1:-1])) * kprod * cout
        for b in _chunks(n, per_sample):
            cols = np.matmul(xl[b].reshape(-1, cin), kmat).reshape(kprod, *xl[b].shape[:-1], cout)
            outs.append(_pad(_col2im(cols, ksize, strides, dilations, full), [(-lo, -hi) for lo, hi in pads]))
        y = outs[0] if len(outs) == 1 else np.concatenate(outs, axis=0)
        return _from_last(y, channels_last)

    @staticmethod
    def backward(grad, inputs, output, strides=None, pads=None, dilations=None, output_padding=None,
                 channels_last=True):
        x, kernel = inputs
        n_sp = kernel.ndim - 2
        strides, pads, dilations = _norm(n_sp, strides, pads, dilations)
        xl = _to_last(x, channels_last)
        gl = _to_last(grad, channels_last)
        in_sizes = xl.shape[1:-1]
        ksize = kernel.shape[:n_sp]
        kprod = int(np.prod(ksize))
        cout, cin = kernel.shape[n_sp], kernel.shape[n_sp + 1]
        kmat = kernel.reshape(kprod * cout, cin)
        dtype = np.result_type(xl, kernel, gl)
        gk = np.zeros((kprod * cout, cin), dtype=dtype, like=like(xl))
        gx = np.empty(xl.shape, dtype=dtype, like=like(xl))
        per_sample = int(np.prod(in_sizes)) * kprod * cout
        for b in _chunks(xl.shape[0], per_sample):
            gfull = _pad(gl[b], pads)  # back to the uncropped output
            win = _windows(gfull, ksize, strides, dilations, in_sizes)  # (n_b, *in, *k, cout)
            m = int(np.prod(win.shape[: 1 + n_sp]))
            cols = win.reshape(m, kprod * cout)
            gx[b] = (cols @ kmat).reshape(gx[b].shape)
            gk += cols.T @ xl[b].reshape(m, cin)
        return _from_last(gx, channels_last), gk.reshape(kernel.shape)

    @staticmethod
    def to_onnx(builder, inputs, strides=None, pads=None, dilations=None, output_padding=None, channels_last=True,
                kernel_value=None):
        """Emit ONNX ConvTranspose; negative `hi` pads become output_padding, negative `lo` pads a Pad node."""
        x_name = inputs[0]
        if kernel_value is not None:
            n_sp = np.ndim(kernel_value) - 2
        elif strides is not None:
            n_sp = len(strides)
        else:
            raise ValueError("ConvTranspose.to_onnx needs `strides` or `kernel_value`")
        strides, pads, dilations = _norm(n_sp, strides, pads, dilations)
        output_padding = list(output_padding) if output_padding is not None else [0] * n_sp
        output_padding = [op + max(-hi, 0) for op, (_, hi) in zip(output_padding, pads)]
        lo_extra = [max(-lo, 0) for lo, _ in pads]
        kperm = [n_sp + 1, n_sp] + list(range(n_sp))  # (*k, out, in) -> (in, out, *k)
        if kernel_value is not None:
            k_name = builder.const(np.transpose(kernel_value, kperm), "kernel")
        else:
            k_name = builder.node("Transpose", [inputs[1]], perm=kperm)
        if channels_last:
            x_name = builder.node("Transpose", [x_name], perm=[0, n_sp + 1] + list(range(1, n_sp + 1)))
        onnx_pads = [max(lo, 0) for lo, _ in pads] + [max(hi, 0) for _, hi in pads]
        y = builder.node("ConvTranspose", [x_name, k_name], strides=list(strides), pads=onnx_pads,
                         dilations=list(dilations), output_padding=output_padding)
        if any(lo_extra):
            pad_vec = builder.const(np.array([0, 0, *lo_extra, 0, 0, *([0] * n_sp)], dtype=np.int64), "pads",
                                    dtype=np.int64)
            y = builder.node("Pad", [y, pad_vec])
        if channels_last:
            y = builder.node("Transpose", [y], perm=[0] + list(range(2, n_sp + 2)) + [1])
        return y


@traceable
def conv(x: np.ndarray, kernel: np.ndarray, strides: Sequence[int] | None = None,
         pads: Sequence[tuple[int, int]] | None = None, dilations: Sequence[int] | None = None,
         groups: int = 1, channels_last: bool = True) -> np.ndarray:
    """N-d cross-correlation (what every deep-learning 'convolution' computes), kernel `(*k, C/groups, out)`."""
    return Conv.forward(x, kernel, strides, pads, dilations, groups, channels_last)


@traceable
def conv_transpose(x: np.ndarray, kernel: np.ndarray, strides: Sequence[int] | None = None,
                   pads: Sequence[tuple[int, int]] | None = None, dilations: Sequence[int] | None = None,
                   output_padding: Sequence[int] | None = None, channels_last: bool = True) -> np.ndarray:
    """Transposed convolution (the input-gradient of `conv`); kernel in Keras order `(*k, out, in)`.

    The full output has length `(L-1)*s + d*(k-1) + 1 + output_padding` per axis, from which `pads`
    (lo, hi) are cropped.
    """
    return ConvTranspose.forward(x, kernel, strides, pads, dilations, output_padding, channels_last)
