"""LocallyConnected1D and LocallyConnected2D (tf.keras): a convolution with separate weights at every position.

tf.keras stores the kernel in one of three layouts (`implementation`):

1. `(positions, kernel_size * channels_in, filters)`; window features ordered (rows, cols, channels) for
   channels_last and (channels, rows, cols) for channels_first; padding 'valid' only.
2. a dense masked kernel `(*input_spatial, channels_in, *output_spatial, filters)` for channels_last,
   `(channels_in, *input_spatial, filters, *output_spatial)` for channels_first.
3. the non-zero entries of the (output, input) matrix, in sorted (flat output index, flat input index) order.

Each layout is turned into one form, a kernel per output position over its (zero-padded) window, so that
every implementation computes the same way. 'same' padding follows tf.keras's own rule: the window of an
output position starts at `position * stride - kernel_size // 2`.
The bias `(*output_spatial, filters)` is reshaped, not transposed, into a channels_first output, as
tf.keras's `bias_add` does.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from ..errors import ConfigError
from . import activations
from .base import Layer, register_layer
from .config_objects import weight_args_config


def _tuple(value, n: int, name: str, layer: str | None) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * n
    try:
        out = tuple(int(v) for v in value)
    except TypeError:
        raise ConfigError(f"`{name}` must be an int or a tuple of {n} ints, got {value!r}", layer=layer) from None
    if len(out) != n:
        raise ConfigError(f"`{name}` must have {n} elements, got {value!r}", layer=layer)
    return out


def _out_length(size: int, k: int, padding: str, stride: int) -> int:
    n = size - k + 1 if padding == "valid" else size
    return (n + stride - 1) // stride


class _LocallyConnected(Layer):
    rank = 2

    def __init__(self, filters: int, kernel_size, strides=1, padding: str = "valid", data_format: str | None = None,
                 activation: Any = None, use_bias: bool = True, kernel_initializer: Any = "glorot_uniform",
                 bias_initializer: Any = "zeros", kernel_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, kernel_constraint=None, bias_constraint=None, implementation: int = 1,
                 **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = _tuple(kernel_size, self.rank, "kernel_size", self.name)
        self.strides = _tuple(strides, self.rank, "strides", self.name)
        self.padding = str(padding).lower()
        if self.padding not in ("valid", "same"):
            raise ConfigError(f"padding must be 'valid' or 'same', got {padding!r}", layer=self.name)
        if self.padding != "valid" and implementation == 1:
            raise ConfigError("only padding 'valid' is supported with implementation 1", layer=self.name)
        if implementation not in (1, 2, 3):
            raise ConfigError(f"unrecognized implementation mode {implementation!r}", layer=self.name)
        self.data_format = data_format or "channels_last"
        if self.data_format not in ("channels_last", "channels_first"):
            raise ConfigError(f"unknown data_format {data_format!r}", layer=self.name)
        self.activation = activation
        self._act = activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = kernel_initializer
        self.bias_initializer = bias_initializer
        self.kernel_regularizer = kernel_regularizer
        self.bias_regularizer = bias_regularizer
        self.activity_regularizer = activity_regularizer
        self.kernel_constraint = kernel_constraint
        self.bias_constraint = bias_constraint
        self.implementation = int(implementation)
        self.bias = None
        self._local = None  # (kernel array it was made from, per-position kernel)

    # ------------------------------------------------------------------ shapes
    def _split(self, shape):
        """(spatial dims, channels) of an input shape."""
        if self.data_format == "channels_last":
            return tuple(shape[1:-1]), shape[-1]
        return tuple(shape[2:]), shape[1]

    def _out_spatial(self, spatial):
        return tuple(None if s is None else _out_length(s, k, self.padding, st)
                     for s, k, st in zip(spatial, self.kernel_size, self.strides))

    def compute_output_shape(self, input_shape):
        out = self._out_spatial(self._split(input_shape)[0])
        if self.data_format == "channels_last":
            return (input_shape[0], *out, self.filters)
        return (input_shape[0], self.filters, *out)

    def build(self, input_shape):
        if len(input_shape) != self.rank + 2:
            raise ValueError(f"expected an input of rank {self.rank + 2}, got shape {input_shape}")
        spatial, cin = self._split(input_shape)
        if cin is None or any(s is None for s in spatial):
            raise ValueError(f"the spatial dimensions and the channels of the input must be known, got {input_shape}")
        out = self._out_spatial(spatial)
        if any(o <= 0 for o in out):
            raise ValueError(f"the input shape {input_shape} gives an output with a zero or negative dimension")
        self._in_spatial, self._cin, self._out_spatial_shape = spatial, cin, out
        positions, window = int(np.prod(out)), int(np.prod(self.kernel_size))
        if self.implementation == 1:
            shape = (positions, window * cin, self.filters)
        elif self.implementation == 2:
            if self.data_format == "channels_last":
                shape = (*spatial, cin, *out, self.filters)
            else:
                shape = (cin, *spatial, self.filters, *out)
        else:
            shape = (len(self._connections()[0]),)
        self.kernel = self.add_weight("kernel", shape, self.kernel_initializer)
        if self.use_bias:
            self.bias = self.add_weight("bias", (*out, self.filters), self.bias_initializer)

    # ------------------------------------------------------------------ kernel layouts
    def _starts(self, d: int) -> np.ndarray:
        """Input index where the window of each output position begins along spatial axis `d`."""
        starts = np.arange(self._out_spatial_shape[d]) * self.strides[d]
        return starts if self.padding == "valid" else starts - self.kernel_size[d] // 2

    def _connections(self):
        """Every (output position, window offset, input position) along with the flat indices of implementation 3.

        Returns (position index, offset index, flat output index base, flat input index base) arrays for the
        connections inside the input, before channels are expanded.
        """
        out, ks, spatial = self._out_spatial_shape, self.kernel_size, self._in_spatial
        pos, off, inp = [], [], []
        for p, o in enumerate(itertools.product(*[range(n) for n in out])):
            for t, w in enumerate(itertools.product(*[range(k) for k in ks])):
                idx = tuple(int(self._starts(d)[o[d]]) + w[d] for d in range(self.rank))
                if all(0 <= i < s for i, s in zip(idx, spatial)):
                    pos.append(p)
                    off.append(t)
                    inp.append(int(np.ravel_multi_index(idx, spatial)))
        pos, off, inp = np.array(pos), np.array(off), np.array(inp)
        f_in, f_out = np.arange(self._cin), np.arange(self.filters)
        # every (connection, channel in, filter) combination, as conv_kernel_idxs yields them
        conn, ci, co = (a.reshape(-1) for a in np.meshgrid(np.arange(len(pos)), f_in, f_out, indexing="ij"))
        n_pos, n_in = int(np.prod(out)), int(np.prod(spatial))
        if self.data_format == "channels_last":
            out_idx = pos[conn] * self.filters + co
            in_idx = inp[conn] * self._cin + ci
        else:
            out_idx = co * n_pos + pos[conn]
            in_idx = ci * n_in + inp[conn]
        order = np.lexsort((in_idx, out_idx))
        return out_idx[order], (pos[conn][order], off[conn][order], inp[conn][order], ci[order], co[order])

    def _local_kernel(self) -> np.ndarray:
        """The kernel as (positions, *kernel_size, channels_in, filters), zero outside the input."""
        k = self.kernel.value
        if self._local is not None and self._local[0] is k:
            return self._local[1]
        n_pos, cin, f = int(np.prod(self._out_spatial_shape)), self._cin, self.filters
        if self.implementation == 1:
            local = k.reshape(n_pos, *self.kernel_size, cin, f) if self.data_format == "channels_last" else \
                np.moveaxis(k.reshape(n_pos, cin, *self.kernel_size, f), 1, -2)
        else:
            local = np.zeros((n_pos, int(np.prod(self.kernel_size)), cin, f), k.dtype)
            if self.implementation == 3:
                _, (pos, off, _inp, ci, co) = self._connections()
                local[pos, off, ci, co] = k
            else:
                _, (pos, off, inp, ci, co) = self._connections()
                spatial_idx = np.unravel_index(inp, self._in_spatial)
                out_idx = np.unravel_index(pos, self._out_spatial_shape)
                if self.data_format == "channels_last":
                    local[pos, off, ci, co] = k[(*spatial_idx, ci, *out_idx, co)]
                else:
                    local[pos, off, ci, co] = k[(ci, *spatial_idx, co, *out_idx)]
            local = local.reshape(n_pos, *self.kernel_size, cin, f)
        self._local = (k, local)
        return local

    # ------------------------------------------------------------------ computing
    def _patches(self, x: np.ndarray) -> np.ndarray:
        """(batch, positions, *kernel_size, channels) windows of a channels-last input, zero-padded."""
        pads = [(0, 0)]
        for d in range(self.rank):
            lo = max(0, -int(self._starts(d)[0]))
            hi = max(0, int(self._starts(d)[-1]) + self.kernel_size[d] - self._in_spatial[d])
            pads.append((lo, hi))
        xp = np.pad(x, pads + [(0, 0)])
        index = []
        for d in range(self.rank):
            starts = self._starts(d) + pads[d + 1][0]
            index.append(starts[:, None] + np.arange(self.kernel_size[d])[None, :])
        if self.rank == 1:
            p = xp[:, index[0]]  # (N, O, K, C)
        else:
            r, c = index
            p = xp[:, r[:, None, :, None], c[None, :, None, :]]  # (N, OH, OW, KH, KW, C)
        return p.reshape(x.shape[0], -1, *self.kernel_size, x.shape[-1])

    def call(self, inputs):
        x = np.asarray(inputs)
        if self.data_format == "channels_first":
            x = np.moveaxis(x, 1, -1)
        patches = self._patches(x)
        local = self._local_kernel()
        n = patches.shape[0]
        y = np.einsum("npk,pkf->npf", patches.reshape(n, patches.shape[1], -1),
                      local.reshape(local.shape[0], -1, self.filters), optimize=True)
        y = y.reshape(n, *self._out_spatial_shape, self.filters).astype(x.dtype, copy=False)
        if self.data_format == "channels_first":
            y = np.moveaxis(y, -1, 1)
        if self.bias is not None:
            b = self.bias.value
            y = y + (b.reshape((1, b.shape[-1], *b.shape[:-1])) if self.data_format == "channels_first" else b)
        return self._act(y).astype(x.dtype, copy=False)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "strides": self.strides, "padding": self.padding, "data_format": self.data_format,
                "activation": activations.serialize(self.activation), "use_bias": self.use_bias,
                **weight_args_config(self, ("kernel", "bias"), activity=True), "implementation": self.implementation}


@register_layer()
class LocallyConnected1D(_LocallyConnected):
    """Locally-connected layer over one spatial axis: input (batch, steps, channels) or channels_first."""

    rank = 1


@register_layer()
class LocallyConnected2D(_LocallyConnected):
    """Locally-connected layer over rows and columns: input (batch, rows, cols, channels) or channels_first."""

    rank = 2
