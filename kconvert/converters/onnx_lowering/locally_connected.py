"""Lowering of LocallyConnected1D/2D: every output position's window gathered, one Einsum with the per-position
kernels."""

from __future__ import annotations

import numpy as np

from .activations import apply_activation
from .refs import TensorRef
from .registry import lowers


@lowers("LocallyConnected1D", "LocallyConnected2D")
def locally_connected(ctx, layer, ins, node):
    """Gather every output position's window (constant indices), one Einsum with the per-position kernels."""
    rank, nd = layer.rank, layer.rank + 2
    x = ctx.as_perm(ins[0], None if layer.data_format == "channels_last" else (0, *range(2, nd), 1))
    spatial, out, ks = layer._in_spatial, layer._out_spatial_shape, layer.kernel_size
    starts = [layer._starts(d) for d in range(rank)]
    lo = [max(0, -int(s[0])) for s in starts]
    hi = [max(0, int(s[-1]) + k - n) for s, k, n in zip(starts, ks, spatial)]
    y = x.name
    if any(lo) or any(hi):
        y = ctx.node("Pad", [y, ctx.ints([0, *lo, 0, 0, *hi, 0], "pads")])
    padded = [n + a + b for n, a, b in zip(spatial, lo, hi)]
    taps = [(s + a)[:, None] + np.arange(k)[None, :] for s, a, k in zip(starts, lo, ks)]  # (out_d, k_d) each
    if rank == 1:
        index = taps[0]
    else:  # (OH, OW, KH, KW) flat indices into the padded rows * cols
        index = taps[0][:, None, :, None] * padded[1] + taps[1][None, :, None, :]
    positions, window, cin, f = int(np.prod(out)), int(np.prod(ks)), layer._cin, layer.filters
    y = ctx.node("Reshape", [y, ctx.ints([0, int(np.prod(padded)), cin], "shape")])
    y = ctx.node("Gather", [y, ctx.ints(index.reshape(positions, window), "windows")], axis=1)  # (N, P, K, C)
    y = ctx.node("Reshape", [y, ctx.ints([0, positions, window * cin], "shape")])
    kernel = layer._local_kernel().reshape(positions, window * cin, f)
    y = ctx.node("Einsum", [y, ctx.const(kernel, "kernel")], equation="npk,pkf->npf")
    bias = layer.bias.value if layer.bias is not None else None
    if layer.data_format == "channels_last":
        if bias is not None:
            y = ctx.node("Add", [y, ctx.const(bias.reshape(positions, f), "bias")])
        y = ctx.node("Reshape", [y, ctx.ints([0, *out, f], "shape")])
    else:  # tf.keras adds the (*out, filters) bias reshaped, not transposed, to the channels-first output
        y = ctx.node("Transpose", [y], perm=[0, 2, 1])
        if bias is not None:
            y = ctx.node("Add", [y, ctx.const(bias.reshape(f, positions), "bias")])
        y = ctx.node("Reshape", [y, ctx.ints([0, f, *out], "shape")])
    return [apply_activation(ctx, TensorRef(y, node.outputs[0].shape, "float32"), layer._act, layer)]
