"""Keras layer classes -> Caffe layers: one mapping per class through the `@to_caffe` registry.

Each mapping reads the layer's config, adds the Caffe layer(s) computing exactly the same thing, and gives their
blobs as a function of the layer's weights (evaluated when the caffemodel is written, one layer at a time).
Conventions: ../shared/reference/caffe_semantics.md; blob layouts as caffe_layers.py reads them back.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from ..errors import ExportError
from .caffe_export import CaffeExporter, CaffeValue, to_caffe


def _weights(layer) -> list[np.ndarray]:
    return [w.produce() for w in layer.weights]


def _cfg(layer) -> dict:
    return layer.get_config()


def _set_pair(p, name: str, pair, default: int) -> None:
    """A Caffe ConvolutionParameter/PoolingParameter pair: `name_h`/`name_w`, or the single field when equal."""
    h, w = (int(v) for v in pair)
    field = "kernel_size" if name == "kernel" else name
    if h == w:
        if h != default:
            target = getattr(p, field)
            if hasattr(target, "append"):
                target.append(h)
            else:
                setattr(p, field, h)
        return
    setattr(p, f"{name}_h", h)
    setattr(p, f"{name}_w", w)


def _spatial(ex: CaffeExporter, v: CaffeValue) -> tuple[int, int]:
    return tuple(int(d) for d in v.caffe_shape[2:4])


def _same_pads(layer, sizes, kernel, strides) -> tuple[int, int]:
    """TensorFlow's 'same' padding as Caffe's symmetric pad, where it is symmetric (else an error)."""
    pads = []
    for n, k, s in zip(sizes, kernel, strides):
        total = max((math.ceil(n / s) - 1) * s + k - n, 0)
        if total % 2:
            raise ExportError(f"padding='same' pads {total} rows/cols ({total // 2} before, {total - total // 2} "
                              "after) here; Caffe pads symmetrically", layer=layer.name)
        pads.append(total // 2)
    return tuple(pads)


def _conv_input(ex: CaffeExporter, layer, x: CaffeValue, kernel_eff, strides, padding: str):
    """(bottom, (pad_h, pad_w)): a pending ZeroPadding2D folded in, and Keras's padding as Caffe's."""
    pre = x.pad or ((0, 0), (0, 0))
    if any(lo != hi for lo, hi in pre):
        raise ExportError(f"the ZeroPadding2D before it pads {pre} (asymmetric); Caffe pads symmetrically",
                          layer=layer.name)
    sizes = [n + 2 * p[0] for n, p in zip(_spatial(ex, x), pre)]
    own = (0, 0) if padding == "valid" else _same_pads(layer, sizes, kernel_eff, strides)
    return x, (pre[0][0] + own[0], pre[1][0] + own[1])


def _conv_params(p, kernel, strides, pads, dilation) -> None:
    _set_pair(p, "kernel", kernel, -1)
    _set_pair(p, "stride", strides, 1)
    _set_pair(p, "pad", pads, 0)
    if tuple(dilation) != (1, 1):
        if dilation[0] != dilation[1]:
            raise ExportError("Caffe's dilation is the same on both axes")
        p.dilation.append(int(dilation[0]))


def _effective(kernel, dilation) -> tuple[int, int]:
    return tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))


def _check_2d(ex: CaffeExporter, layer, x: CaffeValue) -> None:
    if len(x.keras_shape) != 4:
        raise ExportError(f"{type(layer).__name__} of rank {len(x.keras_shape)} has no Caffe mapping here",
                          layer=layer.name)


# ---------------------------------------------------------------------------------------------- activations

_ACTIVATIONS = {"relu": "ReLU", "sigmoid": "Sigmoid", "tanh": "TanH", "softplus": "BNLL", "elu": "ELU",
                "softmax": "Softmax", "relu6": "ReLU6", "abs": "AbsVal"}


def _activation_name(activation) -> str:
    if isinstance(activation, str):
        return activation
    if isinstance(activation, dict):
        return str(activation.get("config", {}).get("name", activation.get("class_name", "")))
    return getattr(activation, "__name__", str(activation))


def activation(ex: CaffeExporter, layer, v: CaffeValue, name: str, in_place: bool) -> CaffeValue:
    """`v` through Keras activation `name` as Caffe layers (in place when nothing else reads `v`)."""
    if name in ("linear", None, ""):
        return v
    lname = layer.name if not in_place else f"{layer.name}_{name}"
    top = [v.top] if in_place else None
    if name in ("swish", "silu"):
        sig = ex.add("Sigmoid", f"{layer.name}_sigmoid", [v])
        prod = ex.add("Eltwise", lname if not in_place else f"{layer.name}_swish", [v, sig.top[0]])
        prod.eltwise_param.operation = 0  # PROD
        return replace(v, top=prod.top[0])
    type_ = _ACTIVATIONS.get(name)
    if type_ is None:
        raise ExportError(f"activation '{name}' has no exact Caffe layer", layer=layer.name)
    lp = ex.add(type_, lname, [v], top)
    if type_ == "Softmax":
        if v.keras_is_caffe:
            raise ExportError("softmax over a value held in Keras's axis order", layer=layer.name)
        lp.softmax_param.axis = 1
    return replace(v, top=lp.top[0])  # elementwise: the value keeps its axis order


def _fused_activation(ex: CaffeExporter, layer, v: CaffeValue) -> CaffeValue:
    return activation(ex, layer, v, _activation_name(_cfg(layer).get("activation", "linear")), in_place=True)


@to_caffe("Activation")
def activation_layer(ex: CaffeExporter, layer, ins: list, outs: list) -> list:
    x = ex.plain(ins[0], layer)
    name = _activation_name(_cfg(layer)["activation"])
    if name == "softmax" and len(x.keras_shape) > 2 and ex.channels_last is False:
        raise ExportError("softmax over the last axis of a channels_first tensor", layer=layer.name)
    return [activation(ex, layer, x, name, in_place=False)]


@to_caffe("ReLU")
def relu(ex: CaffeExporter, layer, ins: list, outs: list) -> list:
    x = ex.plain(ins[0], layer)
    c = _cfg(layer)
    slope, top, threshold = float(c.get("negative_slope") or 0.0), c.get("max_value"), float(c.get("threshold") or 0)
    if threshold != 0:
        raise ExportError(f"ReLU with threshold={threshold:g} has no Caffe layer", layer=layer.name)
    if top is not None:
        if slope != 0:
            raise ExportError("ReLU with both max_value and negative_slope has no Caffe layer", layer=layer.name)
        if float(top) == 6.0:  # the MobileNet fork's ReLU6, which OpenCV runs (it has no Clip)
            lp = ex.add("ReLU6", layer.name, [x])
        else:
            lp = ex.add("Clip", layer.name, [x])
            lp.clip_param.min, lp.clip_param.max = 0.0, float(top)
    else:
        lp = ex.add("ReLU", layer.name, [x])
        if slope:
            lp.relu_param.negative_slope = slope
    return [CaffeValue(lp.top[0], x.keras_shape, x.caffe_shape)]


@to_caffe("LeakyReLU")
def leaky_relu(ex: CaffeExporter, layer, ins: list, outs: list) -> list:
    x = ex.plain(ins[0], layer)
    c = _cfg(layer)
    lp = ex.add("ReLU", layer.name, [x])
    lp.relu_param.negative_slope = float(c.get("negative_slope", c.get("alpha", 0.3)))
    return [CaffeValue(lp.top[0], x.keras_shape, x.caffe_shape)]


@to_caffe("ELU")
def elu(ex: CaffeExporter, layer, ins: list, outs: list) -> list:
    x = ex.plain(ins[0], layer)
    lp = ex.add("ELU", layer.name, [x])
    lp.elu_param.alpha = float(_cfg(layer).get("alpha", 1.0))
    return [CaffeValue(lp.top[0], x.keras_shape, x.caffe_shape)]


@to_caffe("PReLU")
def prelu(ex: CaffeExporter, layer, ins: list, outs: list) -> list:
    """Caffe's PReLU has one slope per channel or one for all: Keras's alpha shared over every other axis."""
    x = ex.plain(ins[0], layer)
    alpha = layer.weights[0]
    ndim = len(x.keras_shape)
    channel = ndim - 1 if ex.channels_last else 1
    per_channel = all(d == 1 for i, d in enumerate(alpha.shape, start=1) if i != channel)
    if not per_channel:
        raise ExportError(f"PReLU alpha of shape {alpha.shape} varies over more than the channels; Caffe's PReLU "
                          "has one slope per channel", layer=layer.name)
    shared = int(np.prod(alpha.shape)) == 1 and x.caffe_shape[1] != 1
    lp = ex.add("PReLU", layer.name, [x],
                blobs=lambda: [alpha.produce().reshape(-1)[:1] if shared else alpha.produce().reshape(-1)])
    if shared:
        lp.prelu_param.channel_shared = True
    return [CaffeValue(lp.top[0], x.keras_shape, x.caffe_shape)]


@to_caffe("Softmax")
def softmax(ex: CaffeExporter, layer, ins: list, outs: list) -> list:
    x = ex.plain(ins[0], layer)
    axis = _cfg(layer).get("axis", -1)
    if isinstance(axis, (list, tuple)):
        if len(axis) != 1:
            raise ExportError("softmax over several axes has no Caffe layer", layer=layer.name)
        axis = axis[0]
    lp = ex.add("Softmax", layer.name, [x])
    lp.softmax_param.axis = ex.caffe_axis(int(axis), len(x.keras_shape))
    return [CaffeValue(lp.top[0], x.keras_shape, x.caffe_shape)]


# ---------------------------------------------------------------------------------------------- convolution


def _conv_setup(ex: CaffeExporter, layer, ins: list):
    """(config, kernel, strides, dilation, input, pads) of a Keras 2-D convolution, its padding as Caffe's."""
    c = _cfg(layer)
    _check_2d(ex, layer, ins[0])
    kernel, strides, dilation = tuple(c["kernel_size"]), tuple(c["strides"]), tuple(c["dilation_rate"])
    x, pads = _conv_input(ex, layer, ins[0], _effective(kernel, dilation), strides, c["padding"])
    return c, kernel, strides, dilation, x, pads


def _convolution(ex: CaffeExporter, name: str, x, blobs, num_output: int, group: int, bias: bool, kernel,
                 strides=(1, 1), pads=(0, 0), dilation=(1, 1)):
    lp = ex.add("Convolution", name, [x], blobs=blobs)
    p = lp.convolution_param
    p.num_output, p.bias_term = int(num_output), bool(bias)
    if group != 1:
        p.group = int(group)
    _conv_params(p, kernel, strides, pads, dilation)
    return lp


def _depthwise_blob(kernel: np.ndarray) -> np.ndarray:
    """Keras (kh, kw, C, m) -> Caffe (C*m, 1, kh, kw): output channel c*m + j reads input channel c."""
    kh, kw, channels, m = kernel.shape
    return kernel.transpose(2, 3, 0, 1).reshape(channels * m, 1, kh, kw)


@to_caffe("Conv2D")
def conv2d(ex: CaffeExporter, layer, ins: list, outs: list) -> list:
    c, kernel, strides, dilation, x, pads = _conv_setup(ex, layer, ins)
    w = layer.weights

    def blobs():  # (kh, kw, in/groups, out) -> (out, in/groups, kh, kw)
        return [w[0].produce().transpose(3, 2, 0, 1)] + ([w[1].produce()] if c["use_bias"] else [])

    lp = _convolution(ex, layer.name, x, blobs, c["filters"], int(c.get("groups", 1)), c["use_bias"], kernel,
                      strides, pads, dilation)
    return [_fused_activation(ex, layer, ex.value(lp.top[0], outs[0]))]


@to_caffe("DepthwiseConv2D")
def depthwise_conv2d(ex: CaffeExporter, layer, ins: list, outs: list) -> list:
    """A Convolution with group = channels."""
    c, kernel, strides, dilation, x, pads = _conv_setup(ex, layer, ins)
    channels, m = x.caffe_shape[1], int(c.get("depth_multiplier", 1))
    w = layer.weights

    def blobs():
        return [_depthwise_blob(w[0].produce())] + ([w[1].produce()] if c["use_bias"] else [])

    lp = _convolution(ex, layer.name, x, blobs, channels * m, channels, c["use_bias"], kernel, strides, pads,
                      dilation)
    return [_fused_activation(ex, layer, ex.value(lp.top[0], outs[0]))]


@to_caffe("SeparableConv2D")
def separable_conv2d(ex: CaffeExporter, layer, ins: list, outs: list) -> list:
    """The depthwise Convolution (no bias) then a 1x1 Convolution with the bias."""
    c, kernel, strides, dilation, x, pads = _conv_setup(ex, layer, ins)
    channels, m = x.caffe_shape[1], int(c.get("depth_multiplier", 1))
    w = layer.weights
    dw = _convolution(ex, f"{layer.name}_depthwise", x, lambda: [_depthwise_blob(w[0].produce())], channels * m,
                      channels, False, kernel, strides, pads, dilation)
    pw = _convolution(ex, layer.name, dw.top[0], lambda: [w[1].produce().transpose(3, 2, 0, 1)] + (
        [w[2].produce()] if c["use_bias"] else []), c["filters"], 1, c["use_bias"], (1, 1))
    return [_fused_activation(ex, layer, ex.value(pw.top[0], outs[0]))]


@to_caffe("Conv2DTranspose")
def conv2d_transpose(ex: CaffeExporter, layer, ins: list, outs: list) -> list:
    """Deconvolution: 'valid' is Caffe's full output; 'same' is Caffe's pad (k - s) / 2 when that is whole."""
    c = _cfg(layer)
    x = ex.plain(ins[0], layer)
    _check_2d(ex, layer, x)
    kernel, strides, dilation = tuple(c["kernel_size"]), tuple(c["strides"]), tuple(c["dilation_rate"])
    if c.get("output_padding") is not None:
        raise ExportError("Conv2DTranspose with output_padding has no Caffe form", layer=layer.name)
    if any(s > 1 for s in strides) and any(d > 1 for d in dilation):
        raise ExportError("a transposed convolution with both stride and dilation", layer=layer.name)
    pads = (0, 0)
    if c["padding"] == "same":
        extra = [k - s for k, s in zip(_effective(kernel, dilation), strides)]
        if any(e < 0 or e % 2 for e in extra):
            raise ExportError(f"padding='same' crops {extra} here; Caffe crops symmetrically", layer=layer.name)
        pads = tuple(e // 2 for e in extra)
    w = layer.weights

    def blobs():  # Keras (kh, kw, out, in) -> Caffe (in, out, kh, kw)
        return [w[0].produce().transpose(3, 2, 0, 1)] + ([w[1].produce()] if c["use_bias"] else [])

    lp = ex.add("Deconvolution", layer.name, [x], blobs=blobs)
    p = lp.convolution_param
    p.num_output, p.bias_term = int(c["filters"]), bool(c["use_bias"])
    _conv_params(p, kernel, strides, pads, dilation)
    return [_fused_activation(ex, layer, ex.value(lp.top[0], outs[0]))]


@to_caffe("Cropping2D")
def cropping2d(ex: CaffeExporter, layer, ins: list, outs: list) -> list:
    """A symmetric crop of a Deconvolution output nothing else reads is that Deconvolution's pad; otherwise Caffe's
    Crop, whose reference blob (it only gives the shape) is a stride-1 Pooling of the input with a window one
    larger than the crop."""
    x = ex.plain(ins[0], layer)
    crop = [tuple(int(v) for v in pair) for pair in _cfg(layer)["cropping"]]
    producer = next((lp for lp in ex.net.layer if x.top in lp.top), None)
    if (producer is not None and producer.type == "Deconvolution" and x.uses == 1
            and all(lo == hi for lo, hi in crop) and not list(producer.convolution_param.pad)
            and not producer.convolution_param.pad_h):
        _set_pair(producer.convolution_param, "pad", (crop[0][0], crop[1][0]), 0)
        return [ex.value(x.top, outs[0])]
    ref = ex.add("Pooling", f"{layer.name}_shape", [x])
    _set_pair(ref.pooling_param, "kernel", [1 + lo + hi for lo, hi in crop], -1)
    ref.pooling_param.stride = 1
    lp = ex.add("Crop", layer.name, [x, ref.top[0]])
    lp.crop_param.axis = 2
    lp.crop_param.offset.extend([crop[0][0], crop[1][0]])
    return [ex.value(lp.top[0], outs[0])]


@to_caffe("ZeroPadding2D")
def zero_padding2d(ex: CaffeExporter, layer, ins: list, outs: list) -> list:
    """No Caffe layer: the padding travels on the value to the convolution that reads it."""
    x = ins[0]
    pad = tuple(tuple(int(v) for v in pair) for pair in _cfg(layer)["padding"])
    if x.pad is not None:
        pad = tuple((a + c, b + d) for (a, b), (c, d) in zip(pad, x.pad))
    return [CaffeValue(x.top, tuple(outs[0]), x.caffe_shape, pad=pad, uses=x.uses)]


# ---------------------------------------------------------------------------------------------- dense, shapes


@to_caffe("Dense")
def dense(ex: CaffeExporter, layer, ins: list, outs: list) -> list:
    """InnerProduct. After a Flatten of an NCHW map the kernel rows go from Keras's H,W,C order to Caffe's C,H,W;
    on a higher-rank value whose last Keras axis is also the blob's last (Caffe's order, or channels_first) it is
    InnerProduct over that last axis."""
    x = ins[0]
    rank = len(x.keras_shape)
    if x.pad is not None:
        x = ex.plain(x, layer)
    if rank > 2:
        x = ex.keras_order(x, layer)
    c = _cfg(layer)
    w = layer.weights
    flat = x.flat_of

    def blobs():
        k = w[0].produce()
        if flat is not None:  # rows (h, w, c) -> columns (c, h, w)
            ch, h, wd = flat
            kt = k.reshape(h, wd, ch, -1).transpose(3, 2, 0, 1).reshape(k.shape[1], -1)
        else:
            kt = k.T
        return [kt] + ([w[1].produce()] if c["use_bias"] else [])

    lp = ex.add("InnerProduct", layer.name, [x], blobs=blobs)
    lp.inner_product_param.num_output = int(c["units"])
    lp.inner_product_param.bias_term = bool(c["use_bias"])
    if rank > 2:
        lp.inner_product_param.axis = rank - 1
    out = ex.value(lp.top[0], outs[0], keras_is_caffe=x.keras_is_caffe)
    return [_fused_activation(ex, layer, out)]  # elementwise: the same in either axis order


@to_caffe("Flatten")
def flatten(ex: CaffeExporter, layer, ins: list, outs: list) -> list:
    x = ins[0] if ins[0].keras_is_caffe else ex.plain(ins[0], layer)
    if len(x.keras_shape) <= 2:
        return [x]
    lp = ex.add("Flatten", layer.name, [x])
    flat_of = tuple(x.caffe_shape[1:]) if ex.channels_last and not x.keras_is_caffe else None
    return [ex.value(lp.top[0], outs[0], flat_of=flat_of)]


@to_caffe("Permute")
def permute(ex: CaffeExporter, layer, ins: list, outs: list) -> list:
    """The output in its Keras axis order: one Caffe Permute (the SSD fork's layer) from the input's blob, or none
    where the orders agree — e.g. channels_last (N, H, W, C) permuted to (N, C, H, W) is the NCHW blob itself."""
    x = ins[0] if ins[0].keras_is_caffe else ex.plain(ins[0], layer)
    full = [0, *(int(d) for d in _cfg(layer)["dims"])]
    ndim = len(x.keras_shape)
    if ex.channels_last and ndim >= 3 and not x.keras_is_caffe:  # x's blob is moveaxis(K, -1, 1)
        def blob_axis(a: int) -> int:
            return 0 if a == 0 else (1 if a == ndim - 1 else a + 1)
        order = [blob_axis(a) for a in full]
    else:
        order = full
    top = x.top
    if order != list(range(ndim)):
        lp = ex.add("Permute", layer.name, [x])
        lp.permute_param.order.extend(order)
        top = lp.top[0]
    return [ex.value(top, outs[0], keras_is_caffe=True)]


def _same_order(ex: CaffeExporter, shape: tuple) -> bool:
    """Whether a value's Keras and Caffe element orders agree (rank <= 2, or channels or spatial size 1)."""
    if not ex.channels_last or len(shape) <= 2:
        return True
    return shape[-1] == 1 or int(np.prod(shape[1:-1])) == 1


@to_caffe("Reshape")
def reshape(ex: CaffeExporter, layer, ins: list, outs: list) -> list:
    """Caffe's Reshape of the input in its Keras axis order (Keras reshapes in that order), giving the output in its
    Keras order too; a channels_last (d.., C) -> (e.., C) is Caffe's per-channel (C, d..) -> (C, e..) as held."""
    x = ins[0]
    out_shape = tuple(outs[0])
    if (ex.channels_last and not x.keras_is_caffe and len(x.keras_shape) >= 3 and len(out_shape) >= 3
            and x.keras_shape[-1] == out_shape[-1]):
        x = ex.plain(x, layer)
        lp = ex.add("Reshape", layer.name, [x])
        lp.reshape_param.shape.dim.extend([0, *(int(d) for d in ex.caffe_shape(out_shape)[1:])])
        return [ex.value(lp.top[0], out_shape)]
    x = ex.keras_order(x, layer) if not _same_order(ex, x.keras_shape) or x.keras_is_caffe else ex.plain(x, layer)
    usual = _same_order(ex, out_shape)  # then the NCHW convention holds the same order: keep it usable as is
    target = ex.value("", out_shape, keras_is_caffe=not usual).caffe_shape
    lp = ex.add("Reshape", layer.name, [x])
    lp.reshape_param.shape.dim.extend([0, *(int(d) for d in target[1:])])
    return [ex.value(lp.top[0], out_shape, keras_is_caffe=not usual)]


@to_caffe("Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
          "GaussianDropout", "AlphaDropout", "ActivityRegularization")
def identity(ex: CaffeExporter, layer, ins: list, outs: list) -> list:
    return [ins[0]]


@to_caffe("Concatenate")
def concatenate(ex: CaffeExporter, layer, ins: list, outs: list) -> list:
    xs = [ex.plain(v, layer) for v in ins]
    lp = ex.add("Concat", layer.name, xs)
    lp.concat_param.axis = ex.caffe_axis(int(_cfg(layer).get("axis", -1)), len(xs[0].keras_shape))
    return [ex.value(lp.top[0], outs[0])]


def _channel_scale(ex: CaffeExporter, layer, xs: list, outs: list) -> list | None:
    """x * s with s one value per (sample, channel) (an SE/Axpy gate of shape (N, C) or (N, C, 1, 1) in Caffe's
    terms): Caffe's two-bottom Scale over axes 0..1, the gate reshaped to (N, C) first. None if not that case."""
    if len(xs) != 2:
        return None
    for big, small in (xs, xs[::-1]):
        b, s = big.caffe_shape, small.caffe_shape
        if len(b) >= 3 and s[:2] == b[:2] and all(d == 1 for d in s[2:]) and s != b:
            gate = small
            if len(s) > 2:
                rs = ex.add("Reshape", ex.unique_layer(f"{layer.name}__gate"), [small])
                rs.reshape_param.shape.dim.extend([0, int(s[1])])
                gate = ex.value(rs.top[0], (s[0], s[1]))
            lp = ex.add("Scale", layer.name, [big, gate])
            lp.scale_param.axis = 0
            lp.scale_param.num_axes = 2
            return [ex.value(lp.top[0], outs[0])]
    return None


def _eltwise(operation: int, coeff=None):
    def mapping(ex: CaffeExporter, layer, ins: list, outs: list) -> list:
        xs = [ex.plain(v, layer) for v in ins]
        if operation == 0 and len({v.keras_shape[1:] for v in xs}) > 1:
            scaled = _channel_scale(ex, layer, xs, outs)
            if scaled is not None:
                return scaled
        if len({v.keras_shape[1:] for v in xs}) > 1:
            raise ExportError(f"inputs of shapes {[v.keras_shape for v in xs]}: Caffe's Eltwise does not broadcast",
                              layer=layer.name)
        lp = ex.add("Eltwise", layer.name, xs)
        lp.eltwise_param.operation = operation
        if coeff is not None:
            lp.eltwise_param.coeff.extend(coeff(len(xs)))
        return [ex.value(lp.top[0], outs[0])]
    return mapping


to_caffe("Add")(_eltwise(1))
to_caffe("Multiply")(_eltwise(0))
to_caffe("Maximum")(_eltwise(2))
to_caffe("Subtract")(_eltwise(1, lambda n: [1.0, -1.0]))
to_caffe("Average")(_eltwise(1, lambda n: [1.0 / n] * n))


# ---------------------------------------------------------------------------------------------- normalization


@to_caffe("BatchNormalization")
def batch_normalization(ex: CaffeExporter, layer, ins: list, outs: list) -> list:
    """BatchNorm (mean, variance, scale factor 1) then Scale (gamma, beta), in place as Caffe nets write them."""
    x = ex.plain(ins[0], layer)
    c = _cfg(layer)
    axis = c["axis"][0] if isinstance(c["axis"], (list, tuple)) and len(c["axis"]) == 1 else c["axis"]
    if not isinstance(axis, int) or ex.caffe_axis(axis, len(x.keras_shape)) != 1:
        raise ExportError(f"BatchNormalization over axis {c['axis']}: Caffe normalizes the channel axis",
                          layer=layer.name)
    by_name = {w.name.rsplit("/", 1)[-1].split(":")[0]: w for w in layer.weights}
    mean, var = by_name["moving_mean"], by_name["moving_variance"]
    bn = ex.add("BatchNorm", layer.name, [x], blobs=lambda: [mean.produce(), var.produce(), np.ones(1, np.float32)])
    bn.batch_norm_param.use_global_stats = True
    bn.batch_norm_param.eps = float(c.get("epsilon", 1e-3))
    out = CaffeValue(bn.top[0], x.keras_shape, x.caffe_shape)
    gamma, beta = by_name.get("gamma"), by_name.get("beta")
    if gamma is None and beta is None:
        return [out]
    channels = x.caffe_shape[1]

    def scale_blobs():
        return [gamma.produce() if gamma is not None else np.ones(channels, np.float32),
                beta.produce() if beta is not None else np.zeros(channels, np.float32)]

    sc = ex.add("Scale", f"{layer.name}_scale", [out], [out.top], blobs=scale_blobs)
    sc.scale_param.bias_term = True
    return [out]


# ---------------------------------------------------------------------------------------------- pooling


def _keras_pool(mode: int):
    def mapping(ex: CaffeExporter, layer, ins: list, outs: list) -> list:
        x = ex.plain(ins[0], layer)
        _check_2d(ex, layer, x)
        c = _cfg(layer)
        kernel, strides = tuple(c["pool_size"]), tuple(c["strides"] or c["pool_size"])
        sizes = _spatial(ex, x)
        if c["padding"] == "valid":
            pads = (0, 0)
        else:
            pads = _same_pads(layer, sizes, kernel, strides)
            if mode == 1 and any(pads):
                raise ExportError("average pooling with padding='same': Keras divides by the real elements, Caffe "
                                  "by the padded window", layer=layer.name)
        want = tuple(int(d) for d in ex.caffe_shape(tuple(outs[0]))[2:4])
        got = tuple(_caffe_pooled(n, k, s, p) for n, k, s, p in zip(sizes, kernel, strides, pads))
        if got != want:
            raise ExportError(f"Caffe's pooling (rounding up) gives {got} here where Keras gives {want}",
                              layer=layer.name)
        lp = ex.add("Pooling", layer.name, [x])
        _pool_params(lp.pooling_param, mode, kernel, strides, pads)
        return [ex.value(lp.top[0], outs[0])]
    return mapping


def _pool_params(p, mode: int, kernel, strides, pads, floor: bool = False) -> None:
    """A PoolingParameter: MAX (0) or AVE (1), the window, and BVLC's round_mode FLOOR where asked (OpenCV 4.x
    reads only the forks' ceil_mode: false)."""
    p.pool = mode
    _set_pair(p, "kernel", kernel, -1)
    _set_pair(p, "stride", strides, 1)
    _set_pair(p, "pad", pads, 0)
    if floor:
        p.round_mode = 1


def _caffe_pooled(n: int, k: int, s: int, p: int) -> int:
    out = int(math.ceil((n + 2 * p - k) / s)) + 1
    if p > 0 and (out - 1) * s >= n + p:
        out -= 1
    return out


to_caffe("MaxPooling2D")(_keras_pool(0))
to_caffe("AveragePooling2D")(_keras_pool(1))


def _global_pool(mode: int):
    def mapping(ex: CaffeExporter, layer, ins: list, outs: list) -> list:
        x = ex.plain(ins[0], layer)
        _check_2d(ex, layer, x)
        lp = ex.add("Pooling", layer.name, [x])
        lp.pooling_param.pool = mode
        lp.pooling_param.global_pooling = True
        if len(outs[0]) == 2:  # keepdims=False: Caffe's (N, C, 1, 1) flattened to (N, C)
            fl = ex.add("Flatten", f"{layer.name}_flatten", [lp.top[0]])
            return [ex.value(fl.top[0], outs[0])]
        return [ex.value(lp.top[0], outs[0])]
    return mapping


to_caffe("GlobalMaxPooling2D")(_global_pool(0))
to_caffe("GlobalAveragePooling2D")(_global_pool(1))


@to_caffe("CaffePooling2D")
def caffe_pooling(ex: CaffeExporter, layer, ins: list, outs: list) -> list:
    x = ex.plain(ins[0], layer)
    c = _cfg(layer)
    lp = ex.add("Pooling", layer.name, [x])
    _pool_params(lp.pooling_param, 0 if c["mode"] == "max" else 1, c["pool_size"], c["strides"], c["padding"],
                 c["rounding"] == "floor")
    return [ex.value(lp.top[0], outs[0])]


# ---------------------------------------------------------------------------------------------- kconvert's Caffe layers


@to_caffe("LRN")
def lrn(ex: CaffeExporter, layer, ins: list, outs: list) -> list:
    x = ex.plain(ins[0], layer)
    c = _cfg(layer)
    lp = ex.add("LRN", layer.name, [x])
    p = lp.lrn_param
    p.local_size, p.alpha, p.beta, p.k = int(c["local_size"]), float(c["alpha"]), float(c["beta"]), float(c["k"])
    if c["norm_region"] == "within_channel":
        p.norm_region = 1
    return [ex.value(lp.top[0], outs[0])]


@to_caffe("CaffeScale")
def caffe_scale(ex: CaffeExporter, layer, ins: list, outs: list) -> list:
    xs = [ex.plain(v, layer) for v in ins]
    c = _cfg(layer)
    lp = ex.add("Scale", layer.name, xs, blobs=(lambda: _weights(layer)) if layer.weights else None)
    p = lp.scale_param
    p.axis, p.num_axes, p.bias_term = int(c["axis"]), int(c["num_axes"]), bool(c["bias_term"])
    return [ex.value(lp.top[0], outs[0])]


@to_caffe("CaffeEltwise")
def caffe_eltwise(ex: CaffeExporter, layer, ins: list, outs: list) -> list:
    xs = [ex.plain(v, layer) for v in ins]
    c = _cfg(layer)
    lp = ex.add("Eltwise", layer.name, xs)
    lp.eltwise_param.operation = {"prod": 0, "sum": 1, "max": 2}[c["operation"]]
    if c.get("coeff"):
        lp.eltwise_param.coeff.extend(float(v) for v in c["coeff"])
    return [ex.value(lp.top[0], outs[0])]


def _neuron(type_: str, field: str | None, keys: tuple):
    def mapping(ex: CaffeExporter, layer, ins: list, outs: list) -> list:
        x = ex.plain(ins[0], layer)
        c = _cfg(layer)
        lp = ex.add(type_, layer.name, [x])
        for key in keys:
            setattr(getattr(lp, field), key, float(c[key]))
        return [ex.value(lp.top[0], outs[0])]
    return mapping


to_caffe("Power")(_neuron("Power", "power_param", ("power", "scale", "shift")))
to_caffe("CaffeExp")(_neuron("Exp", "exp_param", ("base", "scale", "shift")))
to_caffe("CaffeLog")(_neuron("Log", "log_param", ("base", "scale", "shift")))
to_caffe("CaffeThreshold")(_neuron("Threshold", "threshold_param", ("threshold",)))
to_caffe("CaffeClip")(_neuron("Clip", "clip_param", ("min", "max")))
to_caffe("AbsVal")(_neuron("AbsVal", None, ()))


@to_caffe("CaffeSlice")
def caffe_slice(ex: CaffeExporter, layer, ins: list, outs: list) -> list:
    x = ex.plain(ins[0], layer)
    c = _cfg(layer)
    tops = [ex.unique_top(f"{layer.name}_{i}") for i in range(len(outs))]
    lp = ex.add("Slice", layer.name, [x], tops)
    lp.slice_param.axis = int(c["axis"])
    if c.get("slice_points"):
        lp.slice_param.slice_point.extend(int(v) for v in c["slice_points"])
    return [ex.value(t, o) for t, o in zip(tops, outs)]


@to_caffe("CaffeCrop")
def caffe_crop(ex: CaffeExporter, layer, ins: list, outs: list) -> list:
    xs = [ex.plain(v, layer) for v in ins]
    c = _cfg(layer)
    lp = ex.add("Crop", layer.name, xs)
    lp.crop_param.axis = int(c["axis"])
    lp.crop_param.offset.extend(int(v) for v in c["offset"])
    return [ex.value(lp.top[0], outs[0])]


@to_caffe("CaffeArgMax")
def caffe_argmax(ex: CaffeExporter, layer, ins: list, outs: list) -> list:
    x = ex.plain(ins[0], layer)
    c = _cfg(layer)
    lp = ex.add("ArgMax", layer.name, [x])
    p = lp.argmax_param
    p.top_k, p.out_max_val = int(c["top_k"]), bool(c["out_max_val"])
    if c.get("axis") is not None:
        p.axis = int(c["axis"])
    return [ex.value(lp.top[0], outs[0])]


# ---------------------------------------------------------------------------------------------- fork layers


def _pool_geometry(p, bottom_hw) -> tuple:
    """(kernel, stride, pad, floor) of a PoolingParameter, global pooling as its whole-map window."""
    if p.global_pooling:
        return tuple(bottom_hw), (1, 1), (0, 0), False

    def pair(name: str, default: int) -> tuple[int, int]:
        h, w = f"{name}_h", f"{name}_w"
        if p.HasField(h) or p.HasField(w):
            return int(getattr(p, h)), int(getattr(p, w))
        field = "kernel_size" if name == "kernel" else name
        value = int(getattr(p, field)) if p.HasField(field) else default
        return value, value

    return pair("kernel", 0), pair("stride", 1), pair("pad", 0), int(p.round_mode) == 1


@to_caffe("CaffeMaxPoolingMask")
def caffe_max_pooling_mask(ex: CaffeExporter, layer, ins: list, outs: list) -> list:
    """Caffe's MAX Pooling second top: added to the Pooling of the same input and window when there is one (as the
    source net had it), else a Pooling of its own whose first top goes unused."""
    x = ex.plain(ins[0], layer)
    c = _cfg(layer)
    want = (tuple(c["pool_size"]), tuple(c["strides"]), tuple(c["padding"]), c["rounding"] == "floor")
    top = ex.unique_top(layer.name)
    for lp in ex.net.layer:
        if (lp.type == "Pooling" and list(lp.bottom) == [x.top] and len(lp.top) == 1 and lp.pooling_param.pool == 0
                and _pool_geometry(lp.pooling_param, _spatial(ex, x)) == want):
            lp.top.append(top)
            return [ex.value(top, outs[0])]
    lp = ex.add("Pooling", f"{layer.name}__values", [x], [ex.unique_top(f"{layer.name}__values"), top])
    _pool_params(lp.pooling_param, 0, *want)
    return [ex.value(top, outs[0])]


@to_caffe("CaffeMaxUnpooling2D")
def caffe_max_unpooling(ex: CaffeExporter, layer, ins: list, outs: list) -> list:
    """SegNet's Upsample with the pooling mask as its second bottom."""
    xs = [ex.plain(v, layer) for v in ins]
    c = _cfg(layer)
    lp = ex.add("Upsample", layer.name, xs)
    p = lp.upsample_param
    scale = tuple(int(v) for v in c["scale"])
    if scale[0] == scale[1]:
        p.scale = scale[0]
    else:
        p.scale_h, p.scale_w = scale
    pad_out = tuple(bool(v) for v in c["pad_out"])
    if any(pad_out):
        p.pad_out_h, p.pad_out_w = pad_out
    if c.get("size"):
        p.upsample_h, p.upsample_w = (int(v) for v in c["size"])
    return [ex.value(lp.top[0], outs[0])]


@to_caffe("CaffeInterp")
def caffe_interp(ex: CaffeExporter, layer, ins: list, outs: list) -> list:
    x = ex.plain(ins[0], layer)
    c = _cfg(layer)
    lp = ex.add("Interp", layer.name, [x])
    p = lp.interp_param
    for key in ("height", "width", "zoom_factor", "shrink_factor"):
        if c.get(key) is not None:
            setattr(p, key, int(c[key]))
    p.pad_beg, p.pad_end = int(c.get("pad_beg") or 0), int(c.get("pad_end") or 0)
    return [ex.value(lp.top[0], outs[0])]


@to_caffe("UpSampling2D")
def upsampling2d(ex: CaffeExporter, layer, ins: list, outs: list) -> list:
    """Nearest upsampling by integers as BVLC's Deconvolution: kernel = stride = the factor, one group per channel,
    weights 1 and no bias (each input pixel copied to its block; OpenCV runs it, unlike the forks' Upsample)."""
    x = ex.plain(ins[0], layer)
    _check_2d(ex, layer, x)
    c = _cfg(layer)
    if c.get("interpolation", "nearest") != "nearest":
        raise ExportError(f"UpSampling2D with {c['interpolation']} interpolation has no exact Caffe layer",
                          layer=layer.name)
    size = tuple(int(v) for v in c["size"])
    channels = int(x.caffe_shape[1])
    lp = ex.add("Deconvolution", layer.name, [x], blobs=lambda: [np.ones((channels, 1, *size), np.float32)])
    p = lp.convolution_param
    p.num_output, p.group, p.bias_term = channels, channels, False
    _conv_params(p, size, size, (0, 0), (1, 1))
    return [ex.value(lp.top[0], outs[0])]


@to_caffe("CaffeNormalize")
def caffe_normalize(ex: CaffeExporter, layer, ins: list, outs: list) -> list:
    x = ex.plain(ins[0], layer)
    c = _cfg(layer)
    lp = ex.add("Normalize", layer.name, [x], blobs=lambda: [w.produce().reshape(-1) for w in layer.weights])
    p = lp.norm_param
    p.across_spatial, p.channel_shared, p.eps = bool(c["across_spatial"]), bool(c["channel_shared"]), float(c["eps"])
    return [ex.value(lp.top[0], outs[0])]


def _set_hw(p, name: str, pair, single: str, cast) -> None:
    """SSD's `img_size`/`step`: one field when both axes agree, else the `_h`/`_w` pair; nothing when unset."""
    h, w = (cast(v) for v in pair)
    if not h and not w:
        return
    if h == w:
        setattr(p, single, h)
    else:
        setattr(p, f"{name}_h", h)
        setattr(p, f"{name}_w", w)


@to_caffe("PriorBox")
def prior_box(ex: CaffeExporter, layer, ins: list, outs: list) -> list:
    xs = [ex.plain(v, layer) for v in ins]
    c = _cfg(layer)
    lp = ex.add("PriorBox", layer.name, xs)
    p = lp.prior_box_param
    p.min_size.extend(float(v) for v in c["min_size"])
    p.max_size.extend(float(v) for v in c["max_size"] or [])
    p.aspect_ratio.extend(float(v) for v in c["aspect_ratio"] or [])
    p.flip, p.clip, p.offset = bool(c["flip"]), bool(c["clip"]), float(c["offset"])
    p.variance.extend(float(v) for v in c["variance"] or [])
    _set_hw(p, "img", c["img_size"], "img_size", int)
    _set_hw(p, "step", c["step"], "step", float)
    return [ex.value(lp.top[0], outs[0])]


@to_caffe("DetectionOutput")
def detection_output(ex: CaffeExporter, layer, ins: list, outs: list) -> list:
    xs = [ex.plain(v, layer) for v in ins]
    c = _cfg(layer)
    lp = ex.add("DetectionOutput", layer.name, xs)
    p = lp.detection_output_param
    p.num_classes, p.share_location = int(c["num_classes"]), bool(c["share_location"])
    p.background_label_id, p.keep_top_k = int(c["background_label_id"]), int(c["keep_top_k"])
    p.nms_param.nms_threshold, p.nms_param.eta = float(c["nms_threshold"]), float(c["eta"])
    if int(c["top_k"]) != -1:
        p.nms_param.top_k = int(c["top_k"])
    p.code_type = p.DESCRIPTOR.fields_by_name["code_type"].enum_type.values_by_name[c["code_type"]].number
    p.variance_encoded_in_target = bool(c["variance_encoded_in_target"])
    if c.get("confidence_threshold") is not None:
        p.confidence_threshold = float(c["confidence_threshold"])
    if c.get("clip"):
        p.clip = True
    return [ex.value(lp.top[0], outs[0])]
