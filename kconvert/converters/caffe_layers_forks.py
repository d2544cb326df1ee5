"""Caffe fork layer types -> kconvert layers: BN, Upsample, Interp, Axpy, ShuffleChannel, ReLU6, ConvolutionDepthwise.

Native Keras layers where they compute exactly what the fork computes (BatchNormalization, UpSampling2D, ReLU,
Multiply + Add, Reshape + Permute, DepthwiseConv2D); kconvert's CaffeInterp and CaffeMaxUnpooling2D
(layers/caffe_forks.py) otherwise. Imported by caffe_layers.py for its `@caffe_layer` registrations.
"""

from __future__ import annotations

from .. import layers as kl
from ..errors import ConfigError
from .caffe_layers import CaffeBuilder, _caffe_class, _conv_geometry, _pad_then, caffe_layer


@caffe_layer("BN")
def bn(b: CaffeBuilder, lp, ins: list) -> list:
    """yjxiong/caffe's BN (PSPNet, SegNet forks): blobs slope, bias, mean, var, each (1, C, 1, 1); at inference
    y = slope * (x - mean) / sqrt(var + eps) + bias, which is Keras's BatchNormalization."""
    x = ins[0]
    channels = b.caffe_shape(x)[1]
    eps = float(lp.bn_param.eps)
    layer = kl.BatchNormalization(axis=b.axis(1, len(x.shape)), epsilon=eps, name=lp.name)
    blobs = b.blobs(lp)
    weights = None if blobs is None else [b.blob(lp, blobs, i, (channels,)) for i in range(4)]
    return b.call(layer, [x], weights)


@caffe_layer("Upsample")
def upsample(b: CaffeBuilder, lp, ins: list) -> list:
    """Two bottoms [x, mask]: SegNet's max-unpooling (CaffeMaxUnpooling2D). One bottom: the YOLOv3 forks'
    nearest-neighbour Upsample, top[h, w] = bottom[h / scale, w / scale] (UpSampling2D)."""
    p = lp.upsample_param
    if p.HasField("scale_h") or p.HasField("scale_w"):
        if not (p.HasField("scale_h") and p.HasField("scale_w")) or p.HasField("scale"):
            raise ConfigError("Upsample takes scale, or scale_h with scale_w", file=b.file, layer=lp.name)
        scale = (int(p.scale_h), int(p.scale_w))
    else:
        scale = (int(p.scale), int(p.scale))
    if min(scale) < 1:
        raise ConfigError(f"Upsample scale {scale} must be positive", file=b.file, layer=lp.name)
    if len(ins) == 1:
        if p.HasField("upsample_h") or p.HasField("upsample_w") or p.pad_out_h or p.pad_out_w:
            raise ConfigError("Upsample with one bottom (nearest) takes only scale; upsample_h/w and pad_out_h/w "
                              "need the pooling mask as a second bottom", file=b.file, layer=lp.name)
        return b.call(kl.UpSampling2D(scale, data_format=b.data_format, interpolation="nearest", name=lp.name), ins)
    if len(ins) != 2:
        raise ConfigError(f"Upsample takes one or two bottoms, got {len(ins)}", file=b.file, layer=lp.name)
    size = None
    if p.HasField("upsample_h") or p.HasField("upsample_w"):
        if not (p.HasField("upsample_h") and p.HasField("upsample_w")):
            raise ConfigError("Upsample needs both upsample_h and upsample_w", file=b.file, layer=lp.name)
        size = (int(p.upsample_h), int(p.upsample_w))
    layer = _caffe_class("CaffeMaxUnpooling2D")(scale=scale, pad_out=(bool(p.pad_out_h), bool(p.pad_out_w)),
                                                size=size, data_format=b.data_format, name=lp.name)
    return b.call(layer, ins)


@caffe_layer("Interp")
def interp(b: CaffeBuilder, lp, ins: list) -> list:
    """PSPNet/DeepLab's Interp: CaffeInterp (crop by pad_beg/pad_end, align-corners bilinear)."""
    if len(ins) != 1:
        raise ConfigError(f"Interp with {len(ins)} bottoms is not supported (one bottom)", file=b.file, layer=lp.name)
    p = lp.interp_param
    both = p.HasField("height") and p.HasField("width")
    layer = _caffe_class("CaffeInterp")(
        height=int(p.height) if both else None, width=int(p.width) if both else None,
        zoom_factor=int(p.zoom_factor) if p.HasField("zoom_factor") else None,
        shrink_factor=int(p.shrink_factor) if p.HasField("shrink_factor") else None,
        pad_beg=int(p.pad_beg), pad_end=int(p.pad_end), data_format=b.data_format, name=lp.name)
    return b.call(layer, ins)


@caffe_layer("Axpy")
def axpy(b: CaffeBuilder, lp, ins: list) -> list:
    """SENet's Axpy on [a, x, y] (hujie-frank/SENet `axpy_layer.cpp`), a of shape (N, C, 1, 1) or (N, C):
    top = a * x + y. A Multiply broadcasting a (a 2-D one reshaped to (N, C, 1, 1) first), then an Add."""
    if len(ins) != 3:
        raise ConfigError(f"Axpy takes three bottoms (a, x, y), got {len(ins)}", file=b.file, layer=lp.name)
    a, x, y = ins
    a_shape, x_shape = b.caffe_shape(a), b.caffe_shape(x)
    if len(a_shape) not in (2, len(x_shape)) or a_shape[1] != x_shape[1] or any(d != 1 for d in a_shape[2:]):
        raise ConfigError(f"Axpy's scale bottom must be (N, C, 1, 1) or (N, C) for x of shape {x_shape}, got "
                          f"{a_shape}", file=b.file, layer=lp.name)
    if len(a_shape) < len(x_shape):
        ones = (1,) * (len(x_shape) - 2)
        a = b.call(kl.Reshape((*ones, a_shape[1]) if b.channels_last else (a_shape[1], *ones),
                              name=f"{lp.name}_a"), [a])[0]
    ax = b.call(kl.Multiply(name=f"{lp.name}_ax"), [a, x])
    return b.call(kl.Add(name=lp.name), [*ax, y])


@caffe_layer("ShuffleChannel")
def shuffle_channel(b: CaffeBuilder, lp, ins: list) -> list:
    """ShuffleNet's channel shuffle: channels viewed as (group, C / group), transposed, flattened back
    (top channel j * group + i = bottom channel i * C / group + j). Reshape, Permute, Reshape."""
    x = ins[0]
    group = int(lp.shuffle_channel_param.group)
    shape = b.caffe_shape(x)
    if len(shape) != 4 or None in shape[1:]:
        raise ConfigError(f"ShuffleChannel needs a 4-D bottom of known size, got {shape}", file=b.file,
                          layer=lp.name)
    c, h, w = shape[1:]
    if group < 1 or c % group:
        raise ConfigError(f"ShuffleChannel group {group} must divide the {c} channels", file=b.file, layer=lp.name)
    if group == 1:
        return [x]
    if b.channels_last:
        split, swap, back = (h, w, group, c // group), (1, 2, 4, 3), (h, w, c)
    else:
        split, swap, back = (group, c // group, h, w), (2, 1, 3, 4), (c, h, w)
    y = b.call(kl.Reshape(split, name=f"{lp.name}_split"), [x])
    y = b.call(kl.Permute(swap, name=f"{lp.name}_swap"), y)
    return b.call(kl.Reshape(back, name=lp.name), y)


@caffe_layer("ReLU6")
def relu6(b: CaffeBuilder, lp, ins: list) -> list:
    return b.call(kl.ReLU(max_value=6.0, name=lp.name), ins)


@caffe_layer("ConvolutionDepthwise")
def convolution_depthwise(b: CaffeBuilder, lp, ins: list) -> list:
    """The depthwise fork (yonghenglh6/DepthwiseConvolution `conv_dw_layer.cpp`): one kh x kw filter per input
    channel, as many outputs as inputs (num_output and group are not read), blobs (C, 1, kh, kw) and (C,)."""
    p = lp.convolution_param
    kernel, stride, pad, dilation = _conv_geometry(p)
    if kernel[0] <= 0:
        raise ConfigError("ConvolutionDepthwise needs kernel_size (or kernel_h/kernel_w)", file=b.file,
                          layer=lp.name)
    x = ins[0]
    channels = b.caffe_shape(x)[1]
    x, padding = _pad_then(b, lp, x, pad, kernel, stride, dilation)
    use_bias = bool(p.bias_term)
    layer = kl.DepthwiseConv2D(kernel, strides=stride, padding=padding, dilation_rate=dilation, use_bias=use_bias,
                               data_format=b.data_format, name=lp.name)
    blobs = b.blobs(lp)
    weights = None
    if blobs is not None:  # (C, 1, kh, kw) -> (kh, kw, C, 1)
        weights = [b.blob(lp, blobs, 0, (channels, 1, *kernel)).transpose(2, 3, 0, 1)]
        weights += [b.blob(lp, blobs, 1, (channels,))] if use_bias else []
    return b.call(layer, [x], weights)
