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

    def call(self, layer, inputs: list, weights: list | None = None) -> list:
        """Call a kconvert layer on Values (one or a list) and set its weights; returns the outputs as a list."""
        out = layer(inputs if len(inputs) > 1 else inputs[0])
        if weights is not None:
            layer.set_weights(weights)
        return list(out) if isinstance(out, (list, tuple)) else [out]


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
            w = _units_last(b.blob_view(lp, blobs, 0, (filters, c_in // groups, *kernel)))  # (kh, kw, in, out)
            weights = [w] + ([b.blob(lp, blobs, 1, (filters,))] if use_bias else [])
    return b.call(layer, [x], weights)


_BLOCK_BYTES = 2 << 20


def _units_last(src: np.ndarray) -> np.ndarray:
    """Caffe weights (units, inner, *spatial) as a new C-contiguous float32 (*spatial, inner, units) array: Keras's
    Conv2D kernel, or a Dense kernel with rows in H,W,C order. Copied in blocks of units straight from the (mapped)
    blob: one pass, cache-sized temporaries, no full-size intermediate (VGG16's fc6 is 411 MB)."""
    axes = (*range(2, src.ndim), 1, 0)
    out = np.empty(tuple(src.shape[a] for a in axes), np.float32)
    step = max(1, _BLOCK_BYTES // max(1, 4 * src[:1].size))
    for u0 in range(0, src.shape[0], step):
        block = np.array(src[u0:u0 + step], dtype=np.float32)  # contiguous, cache-sized: the transposed write is fast
        out[..., u0:u0 + step] = block.transpose(axes)
    return out


@caffe_layer("Deconvolution")
def deconvolution(b: CaffeBuilder, lp, ins: list) -> list:
    """Conv2DTranspose 'valid' (Caffe's full output s(H-1) + d(k-1) + 1), then the padding cropped away."""
    p = lp.convolution_param
    kernel, stride, pad, dilation = _conv_geometry(p)
    x = ins[0]
    c_in = b.caffe_shape(x)[1]
    groups, filters = int(p.group or 1), int(p.num_output)
    if groups != 1:
        raise ConfigError(f"Deconvolution with group={groups} has no Keras equivalent yet", file=b.file,
                          layer=lp.name)
    if any(s > 1 for s in stride) and any(d > 1 for d in dilation):
        raise ConfigError("Deconvolution with both stride and dilation > 1 has no Keras equivalent", file=b.file,
                          layer=lp.name)
    blobs = b.blobs(lp)
    use_bias = bool(p.bias_term)
    name = lp.name if pad == (0, 0) else f"{lp.name}_full"
    layer = kl.Conv2DTranspose(filters, kernel, strides=stride, padding="valid", dilation_rate=dilation,
                               use_bias=use_bias, data_format=b.data_format, name=name)
    weights = None
    if blobs is not None:  # Caffe (in, out, kh, kw) -> Keras (kh, kw, out, in)
        w = b.blob(lp, blobs, 0, (c_in, filters, *kernel)).transpose(2, 3, 1, 0)
        weights = [w] + ([b.blob(lp, blobs, 1, (filters,))] if use_bias else [])
    out = b.call(layer, [x], weights)
    if pad != (0, 0):
        out = b.call(kl.Cropping2D(((pad[0], pad[0]), (pad[1], pad[1])), data_format=b.data_format,
                                   name=lp.name), out)
    return out


# ---------------------------------------------------------------------------------------------- dense


@caffe_layer("InnerProduct")
def inner_product(b: CaffeBuilder, lp, ins: list) -> list:
    """Dense; after a spatial blob the input is flattened in Keras order and the weight rows permuted to match
    Caffe's C,H,W flattening."""
    p = lp.inner_product_param
    x = ins[0]
    if p.axis not in (1, -len(x.shape) + 1):
        raise ConfigError(f"InnerProduct with axis={p.axis} is not supported", file=b.file, layer=lp.name)
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
        else:  # stored (units, K): one blocked pass to (K, units), rows in H,W,C order where the input is spatial
            w = _units_last(b.blob_view(lp, blobs, 0, (units, *caffe_shape[1:]) if spatial else (units, k)))
        weights = [np.ascontiguousarray(w).reshape(k, units)] + \
            ([b.blob(lp, blobs, 1, (units,))] if p.bias_term else [])
    return b.call(kl.Dense(units, use_bias=bool(p.bias_term), name=lp.name), [x], weights)


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
    CaffePooling2D (Caffe's rounding, clip rule and divisor) otherwise. STOCHASTIC pooling is an error."""
    p = lp.pooling_param
    mode = {0: "max", 1: "ave"}.get(int(p.pool))
    if mode is None:
        raise ConfigError("STOCHASTIC pooling has no deterministic inference form", file=b.file, layer=lp.name)
    x = ins[0]
    if p.global_pooling:
        cls = kl.GlobalMaxPooling2D if mode == "max" else kl.GlobalAveragePooling2D
        return b.call(cls(data_format=b.data_format, keepdims=True, name=lp.name), ins)
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
        return b.call(cls(kernel, strides=stride, padding="valid", data_format=b.data_format, name=lp.name), ins)
    layer = _caffe_class("CaffePooling2D")(pool_size=kernel, strides=stride, padding=pad, mode=mode,
                                           rounding="ceil" if ceil else "floor", data_format=b.data_format,
                                           name=lp.name)
    return b.call(layer, ins)


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
    """Caffe flattens in C,H,W order: in channels_last the value is permuted to that order first."""
    p = lp.flatten_param
    x = ins[0]
    ndim = len(x.shape)
    if int(p.axis) % ndim != 1 or int(p.end_axis) % ndim != ndim - 1:
        raise ConfigError(f"Flatten from axis {p.axis} to {p.end_axis} is not supported yet", file=b.file,
                          layer=lp.name)
    if b.channels_last and ndim > 2:
        x = b.call(kl.Permute((ndim - 1, *range(1, ndim - 1)), name=f"{lp.name}_nchw"), [x])[0]
    return b.call(kl.Flatten(name=lp.name), [x])


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
    """Caffe's reshape (0 copies a dim, -1 infers one) in NCHW order; to rank 2 or 4 (channels_last: the value is
    permuted to NCHW order first and a 4-D result back to NHWC)."""
    p = lp.reshape_param
    x = ins[0]
    ndim = len(x.shape)
    if int(p.axis) != 0 or int(p.num_axes) != -1:
        raise ConfigError("Reshape with axis/num_axes is not supported yet", file=b.file, layer=lp.name)
    dims = [int(d) for d in p.shape.dim]
    src = b.caffe_shape(x)
    target = [src[i] if d == 0 else d for i, d in enumerate(dims)]
    if target[0] not in (None, -1) and target[0] != src[0]:
        raise ConfigError("Reshape cannot change the batch size", file=b.file, layer=lp.name)
    target = target[1:]
    if len(target) + 1 not in (2, 4):
        raise ConfigError(f"Reshape to rank {len(target) + 1} is not supported yet", file=b.file, layer=lp.name)
    if b.channels_last and ndim == 4:
        x = b.call(kl.Permute((3, 1, 2), name=f"{lp.name}_nchw"), [x])[0]
    if b.channels_last and len(target) == 3:
        y = b.call(kl.Reshape(tuple(target), name=f"{lp.name}_reshape"), [x])[0]
        return b.call(kl.Permute((2, 3, 1), name=lp.name), [y])
    return b.call(kl.Reshape(tuple(target), name=lp.name), [x])


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
