"""Caffe layer types -> kconvert layers: one mapping function per Caffe type, found through a registry.

Each function gets the builder, the (V2, deploy) LayerParameter and its input Values, creates native Keras layers
wherever they compute exactly what Caffe computes (kconvert's Caffe layers otherwise), calls them, sets their
weights from the caffemodel blobs, and returns the output Values. Caffe's axes are NCHW-numbered; the builder
maps them to the model's data_format. Semantics: ../shared/reference/caffe_semantics.md.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .. import layers as kl
from ..errors import ConfigError, UnknownLayerError, WeightsError
from ..formats.caffe.caffemodel import release_pages

CAFFE_LAYERS: dict[str, Callable] = {}


def caffe_layer(*types: str) -> Callable:
    """Register `fn(builder, layer_param, inputs) -> outputs` for Caffe layer types."""
    def deco(fn: Callable) -> Callable:
        for t in types:
            CAFFE_LAYERS[t] = fn
        return fn
    return deco


class CaffeBuilder:
    """What the mappings share: the data format, the caffemodel blobs by layer name, the file for errors."""

    def __init__(self, data_format: str = "channels_last", weights: dict | None = None, file: str | None = None):
        if data_format not in ("channels_last", "channels_first"):
            raise ConfigError(f"data_format must be 'channels_last' or 'channels_first', got {data_format!r}")
        self.data_format = data_format
        self.channels_last = data_format == "channels_last"
        self.weights = weights
        self.file = file

    # ------------------------------------------------------------------ axes and shapes
    def axis(self, caffe_axis: int, ndim: int) -> int:
        """The Keras axis of Caffe's (NCHW-numbered) `caffe_axis` in a tensor of rank `ndim`."""
        a = caffe_axis % ndim
        if not self.channels_last or ndim < 3:
            return a
        return ndim - 1 if a == 1 else (a - 1 if a >= 2 else 0)

    def axis_inverse(self, keras_axis: int, ndim: int) -> int:
        """The Caffe (NCHW-numbered) axis held by Keras axis `keras_axis`."""
        return next(a for a in range(ndim) if self.axis(a, ndim) == keras_axis)

    def caffe_shape(self, value) -> tuple:
        """The NCHW shape Caffe sees for a model value."""
        s = tuple(value.shape)
        if self.channels_last and len(s) >= 3:
            return (s[0], s[-1], *s[1:-1])
        return s

    # ------------------------------------------------------------------ blobs
    def blobs(self, lp) -> list[np.ndarray] | None:
        """The layer's blobs from the caffemodel; None when converting the architecture only."""
        if self.weights is None:
            return None
        layer = self.weights.get(lp.name)
        if layer is None:
            raise WeightsError(f"the caffemodel has no layer named '{lp.name}' (type {lp.type})", file=self.file,
                               layer=lp.name)
        return list(layer.blobs)

    def blob(self, lp, blobs: list, index: int, shape: tuple) -> np.ndarray:
        """Blob `index` as a float32 array of `shape` (legacy right-aligned 4-D dims are reshaped)."""
        return np.array(self.blob_view(lp, blobs, index, shape), dtype=np.float32)

    def blob_view(self, lp, blobs: list, index: int, shape: tuple) -> np.ndarray:
        """Blob `index` reshaped to `shape`, not copied (a read-only view of the caffemodel, any dtype)."""
        if index >= len(blobs):
            raise WeightsError(f"{lp.type} needs blob {index}, the caffemodel has {len(blobs)}", file=self.file,
                               layer=lp.name)
        array = np.asarray(blobs[index])
        if array.size != int(np.prod(shape)):
            raise WeightsError(f"{lp.type} blob {index} has shape {array.shape} ({array.size} values); the "
                               f"prototxt implies {tuple(shape)}", file=self.file, layer=lp.name)
        return array.reshape(shape)

    def later(self, fn: Callable, view: np.ndarray, shape: tuple) -> Later:
        """Weight `fn(view)` of `shape`, computed from the (mapped) blob view only when the weight is first needed."""
        return Later(fn, view, tuple(shape))

    def call(self, layer, inputs: list, weights: list | None = None) -> list:
        """Call a kconvert layer on Values (one or a list) and set its weights (arrays, or `Later` ones the layer
        defers); returns the outputs as a list."""
        out = layer(inputs if len(inputs) > 1 else inputs[0])
        if weights is not None:
            own = layer.weights
            if len(weights) != len(own):
                raise WeightsError(f"{type(layer).__name__} expects {len(own)} weight arrays, got {len(weights)}")
            for w, value in zip(own, weights):
                if tuple(value.shape) != w.shape:
                    raise WeightsError(f"weight '{w.name}' has shape {w.shape}, the blob gives {tuple(value.shape)}")
            for w, value in zip(own, weights):
                w.defer(value) if isinstance(value, Later) else w.assign(value)
        return list(out) if isinstance(out, (list, tuple)) else [out]


class Later:
    """A weight computed from a caffemodel blob when first needed: a converted VGG16 streams to its output file
    one layer at a time instead of holding every transformed kernel. `fn(view)` gives the weight (reshaped to
    `shape` if needed); when `fn` has a `blocks(view)` generator, `chunks()` yields the weight in row blocks. The
    blob's mapped pages are released after (they stay in the page cache), so reading does not grow the process."""

    __slots__ = ("fn", "view", "shape")

    def __init__(self, fn: Callable, view: np.ndarray, shape: tuple):
        self.fn, self.view, self.shape = fn, view, shape

    def __call__(self) -> np.ndarray:
        out = self.fn(self.view).reshape(self.shape)
        release_pages(self.view)
        return out

    def chunks(self):
        """(first row, rows) blocks of the weight, in order; each block is only valid until the next one."""
        blocks = getattr(self.fn, "blocks", None)
        if blocks is None:
            yield 0, self()
            return
        row = int(np.prod(self.shape[1:]))
        for a, block in blocks(self.view):
            yield a * (block[0].size // row), block.reshape(-1, *self.shape[1:])
        release_pages(self.view)


def _pair(values, h, w, default):
    """Caffe's repeated field (one value for both axes, or one per axis) or its _h/_w form."""
    if h or w:
        return int(h), int(w)
    values = list(values)
    if not values:
        return default, default
    return (int(values[0]), int(values[0])) if len(values) == 1 else (int(values[0]), int(values[1]))


# ---------------------------------------------------------------------------------------------- input


@caffe_layer("Input")
def input_layer(b: CaffeBuilder, lp, ins: list) -> list:
    outs = []
    for i, top in enumerate(lp.top):
        shapes = lp.input_param.shape
        dims = list(shapes[i if len(shapes) > 1 else 0].dim) if shapes else []
        if len(dims) < 2:
            raise ConfigError(f"Input '{top}' needs a shape with at least 2 dims, got {dims}", file=b.file,
                              layer=lp.name)
        rest = dims[1:]
        if b.channels_last and len(rest) >= 2:
            rest = [*rest[1:], rest[0]]
        outs.append(kl.Input(shape=tuple(rest), name=top))  # the batch stays free, as Caffe reshapes to any N
    return outs


# ---------------------------------------------------------------------------------------------- convolution


def _conv_geometry(p):
    k = _pair(p.kernel_size, p.kernel_h, p.kernel_w, 0)
    s = _pair(p.stride, p.stride_h, p.stride_w, 1)
    pad = _pair(p.pad, p.pad_h, p.pad_w, 0)
    d = _pair(p.dilation, 0, 0, 1)
    return k, s, pad, d


def _pad_then(b: CaffeBuilder, lp, x, pad, kernel, stride, dilation):
    """(input, padding argument): 'same' where Keras's is exactly Caffe's symmetric padding, else ZeroPadding2D."""
    if pad == (0, 0):
        return x, "valid"
    exact_same = stride == (1, 1) and all(2 * p == dd * (kk - 1) for p, kk, dd in zip(pad, kernel, dilation))
    if exact_same:
        return x, "same"
    padded = b.call(kl.ZeroPadding2D(pad, data_format=b.data_format, name=f"{lp.name}_pad"), [x])[0]
    return padded, "valid"


@caffe_layer("Convolution")
def convolution(b: CaffeBuilder, lp, ins: list) -> list:
    p = lp.convolution_param
    kernel, stride, pad, dilation = _conv_geometry(p)
    if kernel[0] <= 0:
        raise ConfigError("Convolution needs kernel_size (or kernel_h/kernel_w)", file=b.file, layer=lp.name)
    x = ins[0]
    c_in = b.caffe_shape(x)[1]
    groups, filters = int(p.group or 1), int(p.num_output)
    blobs = b.blobs(lp)
    x, padding = _pad_then(b, lp, x, pad, kernel, stride, dilation)
    use_bias = bool(p.bias_term)
    weights = None
    if groups > 1 and groups == c_in == filters:  # depthwise: (C, 1, kh, kw) -> (kh, kw, C, 1)
        layer = kl.DepthwiseConv2D(kernel, strides=stride, padding=padding, dilation_rate=dilation,
                                   use_bias=use_bias, data_format=b.data_format, name=lp.name)
        if blobs is not None:
            w = b.blob(lp, blobs, 0, (filters, 1, *kernel)).transpose(2, 3, 0, 1)
            weights = [w] + ([b.blob(lp, blobs, 1, (filters,))] if use_bias else [])
    else:
        layer = kl.Conv2D(filters, kernel, strides=stride, padding=padding, dilation_rate=dilation, groups=groups,
                          use_bias=use_bias, data_format=b.data_format, name=lp.name)
        if blobs is not None:
            w = b.later(_units_last, b.blob_view(lp, blobs, 0, (filters, c_in // groups, *kernel)),
                        (*kernel, c_in // groups, filters))  # (kh, kw, in, out)
            weights = [w] + ([b.blob(lp, blobs, 1, (filters,))] if use_bias else [])
    return b.call(layer, [x], weights)


_BLOCK_BYTES = 32 << 20  # output rows produced at a time when a weight streams to a file
_UNIT_TILE = 256  # units copied per step: 1 KB contiguous runs in the output, a bounded spread in the source


def _units_last(src: np.ndarray) -> np.ndarray:
    """Caffe weights (units, inner, *spatial) as a new C-contiguous float32 (*spatial, inner, units) array: Keras's
    Conv2D kernel, or a Dense kernel with rows in H,W,C order. Copied straight from the (mapped) blob in tiles of
    units: one pass, no full-size intermediate (VGG16's fc6 is 411 MB)."""
    t = src.transpose((*range(2, src.ndim), 1, 0))
    out = np.empty(t.shape, np.float32)
    _copy_tiled(out, t)
    return out


def _units_last_blocks(src: np.ndarray):
    """`_units_last(src)` in blocks of leading rows, (first row, block): a writer streams the weight to its file
    without holding it whole. The next block is computed in a thread while the caller writes this one (two
    buffers, alternating); a block is valid until the next one is asked for."""
    t = src.transpose((*range(2, src.ndim), 1, 0))
    step = max(1, _BLOCK_BYTES // max(1, 4 * t[0].size))
    starts = range(0, t.shape[0], step)
    if len(starts) == 1:
        yield 0, _units_last(src)
        return
    buffers = [np.empty((step, *t.shape[1:]), np.float32) for _ in range(2)]

    def fill(i: int) -> tuple[int, np.ndarray]:
        a = starts[i]
        block = buffers[i % 2][:min(step, t.shape[0] - a)]
        _copy_tiled(block, t[a:a + len(block)])
        return a, block

    pending = _pool("prefetch").submit(fill, 0)
    for i in range(len(starts)):
        a, block = pending.result()
        if i + 1 < len(starts):
            pending = _pool("prefetch").submit(fill, i + 1)
        yield a, block


_units_last.blocks = _units_last_blocks


def _copy_tiled(dst: np.ndarray, t: np.ndarray, threads: bool = True) -> None:
    """dst[...] = t (a transposed view) in tiles of units, split over two threads when large (numpy's copy
    releases the GIL; the strided reads of a transpose leave a core idle waiting on memory otherwise)."""
    def tile(u0: int) -> None:
        np.copyto(dst[..., u0:u0 + _UNIT_TILE], t[..., u0:u0 + _UNIT_TILE], casting="unsafe")

    starts = range(0, t.shape[-1], _UNIT_TILE)
    if not threads or dst.nbytes < _THREADED_BYTES or len(starts) < 2:
        for u0 in starts:
            tile(u0)
        return
    list(_pool("tiles").map(tile, starts))


def _pool(kind: str):
    """The thread pools: 'tiles' (two threads sharing one copy) and 'prefetch' (the next block while the caller
    writes this one); separate, so that a prefetched block's copy still gets both tile threads."""
    if kind not in _POOLS:
        from concurrent.futures import ThreadPoolExecutor

        _POOLS[kind] = ThreadPoolExecutor(max_workers=2 if kind == "tiles" else 1,
                                          thread_name_prefix=f"kconvert-{kind}")
    return _POOLS[kind]


_POOLS: dict = {}
_THREADED_BYTES = 8 << 20  # copies smaller than this stay on the calling thread


@caffe_layer("Deconvolution")
def deconvolution(b: CaffeBuilder, lp, ins: list) -> list:
    """Conv2DTranspose 'valid' (Caffe's full output s(H-1) + d(k-1) + 1), then the padding cropped away. With
    group G (Keras's Conv2DTranspose has no groups) the input channels are cut into G equal CaffeSlice parts, each
    part gets its own Conv2DTranspose (the group's blob rows, its outputs' bias) and the results are concatenated:
    Caffe's group g maps input channels [g*in/G, (g+1)*in/G) to outputs [g*out/G, (g+1)*out/G)."""
    p = lp.convolution_param
    kernel, stride, pad, dilation = _conv_geometry(p)
    x = ins[0]
    c_in = b.caffe_shape(x)[1]
    groups, filters = int(p.group or 1), int(p.num_output)
    if groups < 1 or c_in % groups or filters % groups:
        raise ConfigError(f"Deconvolution group={groups} must divide its {c_in} input and {filters} output channels",
                          file=b.file, layer=lp.name)
    if any(s > 1 for s in stride) and any(d > 1 for d in dilation):
        raise ConfigError("Deconvolution with both stride and dilation > 1 has no Keras equivalent", file=b.file,
                          layer=lp.name)
    blobs = b.blobs(lp)
    use_bias = bool(p.bias_term)
    name = lp.name if pad == (0, 0) else f"{lp.name}_full"
    g_in, g_out = c_in // groups, filters // groups
    parts = [x] if groups == 1 else b.call(_caffe_class("CaffeSlice")(
        axis=1, num_outputs=groups, data_format=b.data_format, name=f"{lp.name}_groups"), [x])
    w = bias = None
    if blobs is not None:  # Caffe (in, out/G, kh, kw) -> Keras (kh, kw, out/G, in/G) per group
        w = b.blob(lp, blobs, 0, (c_in, g_out, *kernel)).transpose(2, 3, 1, 0)
        bias = b.blob(lp, blobs, 1, (filters,)) if use_bias else None
    outs = []
    for g, part in enumerate(parts):
        layer = kl.Conv2DTranspose(g_out, kernel, strides=stride, padding="valid", dilation_rate=dilation,
                                   use_bias=use_bias, data_format=b.data_format,
                                   name=name if groups == 1 else f"{lp.name}_g{g}")
        weights = None
        if w is not None:
            weights = [np.ascontiguousarray(w[..., g * g_in:(g + 1) * g_in])]
            weights += [bias[g * g_out:(g + 1) * g_out]] if use_bias else []
        outs += b.call(layer, [part], weights)
    out = outs if groups == 1 else b.call(kl.Concatenate(axis=b.axis(1, 4), name=name), outs)
    if pad != (0, 0):
        out = b.call(kl.Cropping2D(((pad[0], pad[0]), (pad[1], pad[1])), data_format=b.data_format,
                                   name=lp.name), out)
    return out


# ---------------------------------------------------------------------------------------------- dense


@caffe_layer("InnerProduct")
def inner_product(b: CaffeBuilder, lp, ins: list) -> list:
    """Dense; after a spatial blob the input is flattened in Keras order and the weight rows permuted to match
    Caffe's C,H,W flattening. With axis > 1 the dims before `axis` are kept (_inner_product_at)."""
    p = lp.inner_product_param
    x = ins[0]
    ndim = len(x.shape)
    axis = int(p.axis) + ndim if int(p.axis) < 0 else int(p.axis)  # Caffe's CanonicalAxisIndex
    if not 1 <= axis < ndim:
        raise ConfigError(f"InnerProduct axis={p.axis} must name a non-batch axis of its rank-{ndim} bottom",
                          file=b.file, layer=lp.name)
    if axis > 1:
        return _inner_product_at(b, lp, x, axis)
    caffe_shape = b.caffe_shape(x)
    k = int(np.prod(caffe_shape[1:]))
    units = int(p.num_output)
    if len(x.shape) > 2:  # Keras flattens the tensor as laid out: H,W,C in channels_last, C,H,W in channels_first
        x = b.call(kl.Flatten(name=f"{lp.name}_flatten"), [x])[0]
    blobs = b.blobs(lp)
    weights = None
    if blobs is not None:
        spatial = b.channels_last and len(caffe_shape) > 2
        if p.transpose:  # stored (K in Caffe's C,H,W order, units)
            w = b.blob(lp, blobs, 0, (k, units))
            if spatial:
                w = np.moveaxis(w.reshape(*caffe_shape[1:], units), 0, -2).reshape(k, units)  # rows in H,W,C order
            w = np.ascontiguousarray(w).reshape(k, units)
        else:  # stored (units, K): one blocked pass to (K, units), rows in H,W,C order where the input is spatial
            view = b.blob_view(lp, blobs, 0, (units, *caffe_shape[1:]) if spatial else (units, k))
            w = b.later(_units_last, view, (k, units))
        weights = [w] + ([b.blob(lp, blobs, 1, (units,))] if p.bias_term else [])
    return b.call(kl.Dense(units, use_bias=bool(p.bias_term), name=lp.name), [x], weights)


def _inner_product_at(b: CaffeBuilder, lp, x, axis: int) -> list:
    """InnerProduct with axis > 1: Caffe keeps dims [0, axis), merges the rest in C order and multiplies, giving
    (N, C, .., num_output). The value is taken in Caffe's order, merged by a Reshape, multiplied by a Dense on its
    last axis (weight rows stay in Caffe's order) and, in channels_last, permuted back (C last). The last layer
    carries the Caffe layer's name (the Dense is `<name>_dense` before a Permute)."""
    p = lp.inner_product_param
    ndim = len(x.shape)
    src = b.caffe_shape(x)
    k, units = int(np.prod(src[axis:])), int(p.num_output)
    if b.channels_last:
        x = b.call(kl.Permute((ndim - 1, *range(1, ndim - 1)), name=f"{lp.name}_nchw"), [x])[0]
    if axis < ndim - 1:
        x = b.call(kl.Reshape((*src[1:axis], k), name=f"{lp.name}_flatten"), [x])[0]
    blobs = b.blobs(lp)
    weights = None
    if blobs is not None:
        if p.transpose:  # stored (K, units): Keras's kernel as it is
            w = b.blob(lp, blobs, 0, (k, units))
        else:  # stored (units, K)
            w = b.later(_units_last, b.blob_view(lp, blobs, 0, (units, k)), (k, units))
        weights = [w] + ([b.blob(lp, blobs, 1, (units,))] if p.bias_term else [])
    dense = kl.Dense(units, use_bias=bool(p.bias_term), name=f"{lp.name}_dense" if b.channels_last else lp.name)
    out = b.call(dense, [x], weights)
    if b.channels_last:  # (N, C, d.., units) -> (N, d.., units, C)
        out = b.call(kl.Permute((*range(2, axis + 1), 1), name=lp.name), out)
    return out


# ---------------------------------------------------------------------------------------------- activations


@caffe_layer("ReLU")
def relu(b: CaffeBuilder, lp, ins: list) -> list:
    slope = float(lp.relu_param.negative_slope)
    layer = kl.ReLU(name=lp.name) if slope == 0.0 else kl.LeakyReLU(alpha=slope, name=lp.name)
    return b.call(layer, ins)


@caffe_layer("PReLU")
def prelu(b: CaffeBuilder, lp, ins: list) -> list:
    x = ins[0]
    ndim = len(x.shape)
    channel = b.axis(1, ndim)
    shared = [a for a in range(1, ndim) if a != channel] if not lp.prelu_param.channel_shared \
        else list(range(1, ndim))
    layer = kl.PReLU(shared_axes=shared, name=lp.name)
    blobs = b.blobs(lp)
    out = b.call(layer, ins)
    if blobs is not None:  # slopes (C,), or one value when channel_shared
        slopes = np.asarray(blobs[0], np.float32).reshape(-1)
        shape = layer.alpha.shape
        layer.set_weights([np.full(shape, slopes[0], np.float32) if slopes.size == 1 else slopes.reshape(shape)])
    return out


@caffe_layer("ELU")
def elu(b: CaffeBuilder, lp, ins: list) -> list:
    return b.call(kl.ELU(alpha=float(lp.elu_param.alpha), name=lp.name), ins)


def _activation(name: str) -> Callable:
    def fn(b: CaffeBuilder, lp, ins: list) -> list:
        return b.call(kl.Activation(name, name=lp.name), ins)
    return fn


caffe_layer("Sigmoid")(_activation("sigmoid"))
caffe_layer("TanH")(_activation("tanh"))
caffe_layer("BNLL")(_activation("softplus"))  # log(1 + exp(x))


@caffe_layer("Softmax")
def softmax(b: CaffeBuilder, lp, ins: list) -> list:
    axis = b.axis(int(lp.softmax_param.axis), len(ins[0].shape))
    return b.call(kl.Softmax(axis=axis, name=lp.name), ins)


@caffe_layer("Dropout")
def dropout(b: CaffeBuilder, lp, ins: list) -> list:
    return b.call(kl.Dropout(float(lp.dropout_param.dropout_ratio), name=lp.name), ins)


# ---------------------------------------------------------------------------------------------- normalization


def batch_norm_stats(b: CaffeBuilder, lp, channels: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Caffe BatchNorm's (mean, var): the sums divided by the factor blob (0 when the factor is 0)."""
    blobs = b.blobs(lp)
    if blobs is None:
        return None
    mean, var = b.blob(lp, blobs, 0, (channels,)), b.blob(lp, blobs, 1, (channels,))
    factor = float(b.blob(lp, blobs, 2, (1,))[0]) if len(blobs) > 2 else 1.0
    scale = 0.0 if factor == 0 else 1.0 / factor
    return mean * scale, var * scale


@caffe_layer("BatchNorm")
def batch_norm(b: CaffeBuilder, lp, ins: list, scale_lp=None) -> list:
    """Keras BatchNormalization: alone (center/scale off), or with the following Scale folded in (gamma, beta)."""
    x = ins[0]
    channels = b.caffe_shape(x)[1]
    eps = float(lp.batch_norm_param.eps) if lp.batch_norm_param.HasField("eps") else 1e-5
    axis = b.axis(1, len(x.shape))
    has_scale = scale_lp is not None
    bias = has_scale and bool(scale_lp.scale_param.bias_term)
    layer = kl.BatchNormalization(axis=axis, epsilon=eps, center=bias, scale=has_scale,
                                  name=scale_lp.name if has_scale else lp.name)
    stats = batch_norm_stats(b, lp, channels)
    weights = None
    if stats is not None:
        weights = []
        if has_scale:
            sblobs = b.blobs(scale_lp)
            weights.append(b.blob(scale_lp, sblobs, 0, (channels,)))
            if bias:
                weights.append(b.blob(scale_lp, sblobs, 1, (channels,)))
        weights += [stats[0], stats[1]]
    return b.call(layer, [x], weights)


# ---------------------------------------------------------------------------------------------- merging


@caffe_layer("Concat")
def concat(b: CaffeBuilder, lp, ins: list) -> list:
    p = lp.concat_param
    caffe_axis = int(p.concat_dim) if p.HasField("concat_dim") else int(p.axis)
    return b.call(kl.Concatenate(axis=b.axis(caffe_axis, len(ins[0].shape)), name=lp.name), ins)


@caffe_layer("Eltwise")
def eltwise(b: CaffeBuilder, lp, ins: list) -> list:
    """PROD -> Multiply, MAX -> Maximum, SUM -> Add, weighted SUM -> CaffeEltwise."""
    p = lp.eltwise_param
    op = {0: "prod", 1: "sum", 2: "max"}[int(p.operation)]
    coeff = [float(c) for c in p.coeff]
    if coeff and op == "sum" and any(c != 1.0 for c in coeff):
        if len(coeff) != len(ins):
            raise ConfigError(f"Eltwise has {len(coeff)} coeff for {len(ins)} bottoms", file=b.file, layer=lp.name)
        return b.call(_caffe_class("CaffeEltwise")(operation="sum", coeff=coeff, name=lp.name), ins)
    cls = {"prod": kl.Multiply, "sum": kl.Add, "max": kl.Maximum}[op]
    return b.call(cls(name=lp.name), ins)


# ---------------------------------------------------------------------------------------------- pooling


def _caffe_pool_out(size: int, k: int, s: int, p: int, ceil: bool) -> int:
    out = (-(-(size + 2 * p - k) // s) if ceil else (size + 2 * p - k) // s) + 1
    if ceil and p > 0 and (out - 1) * s >= size + p:
        out -= 1
    return out


@caffe_layer("Pooling")
def pooling(b: CaffeBuilder, lp, ins: list) -> list:
    """Global -> GlobalMax/AveragePooling2D; Keras pooling where it is exact (no padding, floor == ceil);
    CaffePooling2D (Caffe's rounding, clip rule and divisor) otherwise. STOCHASTIC pooling is an error.
    A second top (MAX only) is Caffe's argmax mask, computed by CaffeMaxPoolingMask (named `<layer>_mask`)."""
    p = lp.pooling_param
    mode = {0: "max", 1: "ave"}.get(int(p.pool))
    if mode is None:
        raise ConfigError("STOCHASTIC pooling has no deterministic inference form", file=b.file, layer=lp.name)
    masked = len(lp.top) > 1
    if masked and mode != "max":
        raise ConfigError("only MAX Pooling has a second top (the argmax mask)", file=b.file, layer=lp.name)
    x = ins[0]
    if p.global_pooling:
        cls = kl.GlobalMaxPooling2D if mode == "max" else kl.GlobalAveragePooling2D
        values = b.call(cls(data_format=b.data_format, keepdims=True, name=lp.name), ins)
        kernel, stride, pad, ceil = tuple(b.caffe_shape(x)[2:4]), (1, 1), (0, 0), True
    else:
        kernel = _pool_pair(p, "kernel", 0)
        stride = _pool_pair(p, "stride", 1)
        pad = _pool_pair(p, "pad", 0)
        if kernel[0] <= 0:
            raise ConfigError("Pooling needs kernel_size (or kernel_h/kernel_w) or global_pooling", file=b.file,
                              layer=lp.name)
        ceil = not _floor_rounding(p)
        h, w = b.caffe_shape(x)[2:4]
        exact = pad == (0, 0) and all(_caffe_pool_out(n, k, s, 0, ceil) == (n - k) // s + 1
                                      for n, k, s in zip((h, w), kernel, stride))
        if exact:
            cls = kl.MaxPooling2D if mode == "max" else kl.AveragePooling2D
            layer = cls(kernel, strides=stride, padding="valid", data_format=b.data_format, name=lp.name)
        else:
            layer = _caffe_class("CaffePooling2D")(pool_size=kernel, strides=stride, padding=pad, mode=mode,
                                                   rounding="ceil" if ceil else "floor", data_format=b.data_format,
                                                   name=lp.name)
        values = b.call(layer, ins)
    if not masked:
        return values
    mask = _caffe_class("CaffeMaxPoolingMask")(pool_size=kernel, strides=stride, padding=pad,
                                               rounding="ceil" if ceil else "floor", data_format=b.data_format,
                                               name=f"{lp.name}_mask")
    return values + b.call(mask, ins)


def _pool_pair(p, name: str, default: int) -> tuple[int, int]:
    """PoolingParameter's single `kernel_size`/`stride`/`pad` or its `_h`/`_w` pair."""
    h, w = f"{name}_h", f"{name}_w"
    if p.HasField(h) or p.HasField(w):
        return int(getattr(p, h)), int(getattr(p, w))
    field = "kernel_size" if name == "kernel" else name
    value = int(getattr(p, field)) if p.HasField(field) else default
    return value, value


def _floor_rounding(p) -> bool:
    fields = {f.name for f, _ in p.ListFields()}
    if "round_mode" in fields:
        return int(p.round_mode) == 1  # FLOOR
    if "ceil_mode" in fields:
        return not bool(p.ceil_mode)
    return False


# ---------------------------------------------------------------------------------------------- reshaping


@caffe_layer("Flatten")
def flatten(b: CaffeBuilder, lp, ins: list) -> list:
    """Caffe merges its (NCHW-numbered) dims axis..end_axis into one, in C order. The full flatten (1..-1) is a
    Flatten, after a permute to C,H,W order in channels_last. A partial one is a Reshape (_reshape_to); in
    channels_last, where the merged dims include C, one Permute first puts the dims after the range ahead of
    C, d1.. (the held layout of the result, C-major inside the merged dim)."""
    p = lp.flatten_param
    x = ins[0]
    ndim = len(x.shape)
    start, end = (int(a) + ndim if int(a) < 0 else int(a) for a in (p.axis, p.end_axis))
    if not 0 <= start <= end < ndim:
        raise ConfigError(f"Flatten axis {p.axis} to end_axis {p.end_axis} is not a range of the rank-{ndim} "
                          f"bottom's axes", file=b.file, layer=lp.name)
    if start == 0 and end > 0:
        raise ConfigError(f"Flatten from axis {p.axis} would merge the batch axis", file=b.file, layer=lp.name)
    start, end = max(start, 1), max(end, 1)
    if start == 1 and end == ndim - 1:
        if b.channels_last and ndim > 2:
            x = b.call(kl.Permute((ndim - 1, *range(1, ndim - 1)), name=f"{lp.name}_nchw"), [x])[0]
        return b.call(kl.Flatten(name=lp.name), [x])
    src = b.caffe_shape(x)
    merged = int(np.prod(src[start:end + 1]))
    if b.channels_last and start == 1 and end > 1:  # held (d1.., C) -> (d_end+1.., C, d1..d_end-1) -> merged last
        x = b.call(kl.Permute((*range(end, ndim - 1), ndim - 1, *range(1, end)), name=f"{lp.name}_permute"),
                   [x])[0]
        return b.call(kl.Reshape((*src[end + 1:], merged), name=lp.name), [x])
    return _reshape_to(b, lp, x, (*src[1:start], merged, *src[end + 1:]))


def _reshape_to(b: CaffeBuilder, lp, x, target: tuple) -> list:
    """`x` reshaped as Caffe reshapes (C order over its NCHW-numbered axes) to (N, *target), held in the model's
    layout. channels_first: one Reshape. channels_last (C last from rank 3 on): where axis 1 keeps its size the
    value is reshaped as held (C stays innermost, the other dims keep their C order); otherwise it is permuted to
    Caffe's order, reshaped, and a result of rank >= 3 permuted back."""
    src = b.caffe_shape(x)
    r_in, r_out = len(src), len(target) + 1
    if not b.channels_last or (r_in < 3 and r_out < 3):
        return b.call(kl.Reshape(tuple(target), name=lp.name), [x])
    if r_in >= 3 and r_out >= 3 and target[0] == src[1]:
        return b.call(kl.Reshape((*target[1:], target[0]), name=lp.name), [x])
    if r_in >= 3:
        x = b.call(kl.Permute((r_in - 1, *range(1, r_in - 1)), name=f"{lp.name}_nchw"), [x])[0]
    if r_out < 3:
        return b.call(kl.Reshape(tuple(target), name=lp.name), [x])
    y = b.call(kl.Reshape(tuple(target), name=f"{lp.name}_reshape"), [x])[0]
    return b.call(kl.Permute((*range(2, r_out), 1), name=lp.name), [y])


def _caffe_class(name: str):
    cls = kl.LAYERS.get(name)
    if cls is None:
        raise UnknownLayerError(f"kconvert's {name} layer is not available")
    return cls


# ---------------------------------------------------------------------------------------------- kconvert's Caffe layers


@caffe_layer("LRN")
def lrn(b: CaffeBuilder, lp, ins: list) -> list:
    p = lp.lrn_param
    region = "within_channel" if int(p.norm_region) == 1 else "across_channels"
    layer = _caffe_class("LRN")(local_size=int(p.local_size), alpha=float(p.alpha), beta=float(p.beta),
                                k=float(p.k), norm_region=region, data_format=b.data_format, name=lp.name)
    return b.call(layer, ins)


@caffe_layer("Scale")
def scale(b: CaffeBuilder, lp, ins: list) -> list:
    """A Scale not folded into a BatchNorm: CaffeScale (one bottom: gamma blob; two: the scale is bottom[1])."""
    p = lp.scale_param
    layer = _caffe_class("CaffeScale")(axis=int(p.axis), num_axes=int(p.num_axes), bias_term=bool(p.bias_term),
                                       data_format=b.data_format, name=lp.name)
    out = b.call(layer, ins)
    if not layer.weights:  # two bottoms, no bias: nothing to read (Caffe needs no caffemodel entry for it)
        return out
    blobs = b.blobs(lp)
    if blobs is not None:
        shapes = [w.shape for w in layer.weights]
        layer.set_weights([b.blob(lp, blobs, i, s) for i, s in enumerate(shapes)])
    return out


def _elementwise(kind: str, args: Callable) -> Callable:
    def fn(b: CaffeBuilder, lp, ins: list) -> list:
        return b.call(_caffe_class(kind)(name=lp.name, **args(lp)), ins)
    return fn


caffe_layer("Power")(_elementwise("Power", lambda lp: {
    "power": float(lp.power_param.power), "scale": float(lp.power_param.scale),
    "shift": float(lp.power_param.shift)}))
caffe_layer("Exp")(_elementwise("CaffeExp", lambda lp: {
    "base": float(lp.exp_param.base), "scale": float(lp.exp_param.scale), "shift": float(lp.exp_param.shift)}))
caffe_layer("Log")(_elementwise("CaffeLog", lambda lp: {
    "base": float(lp.log_param.base), "scale": float(lp.log_param.scale), "shift": float(lp.log_param.shift)}))
caffe_layer("Threshold")(_elementwise("CaffeThreshold", lambda lp: {
    "threshold": float(lp.threshold_param.threshold)}))
caffe_layer("Clip")(_elementwise("CaffeClip", lambda lp: {
    "min": float(lp.clip_param.min), "max": float(lp.clip_param.max)}))
caffe_layer("AbsVal")(_elementwise("AbsVal", lambda lp: {}))


@caffe_layer("Slice")
def slice_layer(b: CaffeBuilder, lp, ins: list) -> list:
    p = lp.slice_param
    axis = int(p.slice_dim) if p.HasField("slice_dim") else int(p.axis)
    points = [int(v) for v in p.slice_point]
    layer = _caffe_class("CaffeSlice")(axis=axis, slice_points=points or None, num_outputs=len(lp.top),
                                       data_format=b.data_format, name=lp.name)
    return b.call(layer, ins)


@caffe_layer("Crop")
def crop(b: CaffeBuilder, lp, ins: list) -> list:
    """Cropping2D where the crop is of the two spatial axes with static sizes, CaffeCrop otherwise."""
    p = lp.crop_param
    axis = int(p.axis) % len(ins[0].shape)
    offsets = [int(o) for o in p.offset]
    x_shape, ref_shape = b.caffe_shape(ins[0]), b.caffe_shape(ins[1])
    if axis == 2 and len(x_shape) == 4 and None not in x_shape[2:] + ref_shape[2:]:
        offs = (offsets * 2)[:2] if len(offsets) <= 1 else offsets
        offs = offs or [0, 0]
        cropping = tuple((o, x - r - o) for o, x, r in zip(offs, x_shape[2:], ref_shape[2:]))
        if all(lo >= 0 and hi >= 0 for lo, hi in cropping):
            return b.call(kl.Cropping2D(cropping, data_format=b.data_format, name=lp.name), [ins[0]])
    layer = _caffe_class("CaffeCrop")(axis=int(p.axis), offset=offsets, data_format=b.data_format, name=lp.name)
    return b.call(layer, ins)


@caffe_layer("ArgMax")
def argmax(b: CaffeBuilder, lp, ins: list) -> list:
    p = lp.argmax_param
    layer = _caffe_class("CaffeArgMax")(top_k=int(p.top_k), out_max_val=bool(p.out_max_val),
                                        axis=int(p.axis) if p.HasField("axis") else None,
                                        data_format=b.data_format, name=lp.name)
    return b.call(layer, ins)


@caffe_layer("Reshape")
def reshape(b: CaffeBuilder, lp, ins: list) -> list:
    """Caffe's ReshapeParameter: the bottom's dims [axis, axis + num_axes) (NCHW-numbered; a negative axis counts
    from the end, -1 meaning after the last dim; num_axes -1: to the end) are replaced by `shape`, where 0 copies
    the bottom dim at that position and one -1 is inferred. Emitted by _reshape_to."""
    p = lp.reshape_param
    x = ins[0]
    src = b.caffe_shape(x)
    ndim = len(src)
    axis, num_axes = int(p.axis), int(p.num_axes)
    start = axis if axis >= 0 else ndim + axis + 1  # Caffe's reshape_layer.cpp: not CanonicalAxisIndex
    end = ndim if num_axes == -1 else start + num_axes
    if not 0 <= start <= ndim or num_axes < -1 or end > ndim:
        raise ConfigError(f"Reshape axis={axis} num_axes={num_axes} is not a range of the rank-{ndim} bottom's axes",
                          file=b.file, layer=lp.name)
    top = list(src[:start])
    for i, d in enumerate(int(d) for d in p.shape.dim):
        if d == 0 and start + i >= ndim:
            raise ConfigError(f"Reshape dim {i} is 0 (copy) but the bottom has no axis {start + i}", file=b.file,
                              layer=lp.name)
        if d < -1:
            raise ConfigError(f"Reshape dim {i} is {d}; dims must be -1, 0 or positive", file=b.file, layer=lp.name)
        top.append(src[start + i] if d == 0 else d)
    top += src[end:]
    if top.count(-1) > 1:
        raise ConfigError(f"Reshape shape {top} infers more than one dim (-1)", file=b.file, layer=lp.name)
    if top[0] not in (None, -1) and top[0] != src[0]:
        raise ConfigError("Reshape cannot change the batch size", file=b.file, layer=lp.name)
    target = top[1:]
    if None not in src[1:]:
        per_sample, known = int(np.prod(src[1:])), int(np.prod([d for d in target if d != -1]))
        if -1 in target and known and per_sample % known == 0:
            target[target.index(-1)] = per_sample // known
        elif -1 in target or known != per_sample:
            raise ConfigError(f"Reshape of {tuple(src)} to {tuple(top)} does not keep the {per_sample} values of a "
                              f"sample", file=b.file, layer=lp.name)
    return _reshape_to(b, lp, x, tuple(target))


@caffe_layer("Permute")
def permute(b: CaffeBuilder, lp, ins: list) -> list:
    """Caffe's Permute (SSD): `order` over NCHW axes; in channels_last the result stays a channels_last view
    of the permuted blob, so the Keras permutation composes the layout change on both sides."""
    x = ins[0]
    ndim = len(x.shape)
    order = [int(o) for o in lp.permute_param.order]
    order += [a for a in range(ndim) if a not in order]
    if sorted(order) != list(range(ndim)) or order[0] != 0:
        raise ConfigError(f"Permute order {order} must keep the batch axis first", file=b.file, layer=lp.name)
    to_caffe = [b.axis(a, ndim) for a in range(ndim)]  # Keras axis of each Caffe axis
    keras_to_caffe = [b.axis_inverse(i, ndim) for i in range(ndim)]  # Caffe axis of each Keras axis
    perm = [to_caffe[order[keras_to_caffe[i]]] for i in range(ndim)]
    if perm == list(range(ndim)):
        return ins
    return b.call(kl.Permute(tuple(perm[1:]), name=lp.name), [x])


from . import (  # noqa: E402, F401 - modules registering more Caffe types
    caffe_layers_forks,  # BN, Upsample, Interp, Axpy, ShuffleChannel, ReLU6, ConvolutionDepthwise
    caffe_layers_ssd,  # SSD's Normalize, PriorBox and DetectionOutput
)
