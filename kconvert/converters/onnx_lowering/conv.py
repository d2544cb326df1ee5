"""Lowerings of the convolution layers: Conv, ConvTranspose, depthwise and separable, in channels-first form.

A channels_last input is transposed to channels-first once (by the context, cached), the convolution runs
natively, and the result stays channels-first (perm (0, C, spatial...)) for the next layer.
"""

from __future__ import annotations

import numpy as np

from ...layers.convolutional import conv_pads, conv_transpose_geometry
from .activations import apply_activation
from .context import LoweringContext
from .core import folded_kernel_bias
from .refs import TensorRef, channels_first_perm
from .registry import lowers, unsupported


def channels_first_input(ctx: LoweringContext, layer, ref: TensorRef) -> TensorRef:
    """The input laid out (N, C, spatial...) whatever its data_format."""
    if ref.ndim != layer.rank + 2:
        raise unsupported(layer, f"an input of rank {ref.ndim} (extra leading batch axes)")
    return ctx.as_perm(ref, channels_first_perm(ref.ndim) if layer.data_format == "channels_last" else None)


def spatial_sizes(layer, ref: TensorRef) -> list:
    return list(layer._spatial(ref.shape))


def _onnx_kernel(kernel: np.ndarray) -> np.ndarray:
    """Keras (*k, in/groups, out) -> ONNX (out, in/groups, *k)."""
    n = kernel.ndim - 2
    return np.ascontiguousarray(np.transpose(kernel, [n + 1, n, *range(n)]))


def window_pads(padding: str, sizes, kernel_size, strides, dilations=None) -> dict:
    """ONNX padding attributes for a Keras window op: explicit pads, or SAME_UPPER when a size is symbolic.

    TensorFlow's 'SAME' puts the odd pixel at the end, which is what ONNX's SAME_UPPER computes at run time.
    """
    if padding == "same" and any(s is None for s in sizes):
        return {"auto_pad": "SAME_UPPER"}
    pads = conv_pads(padding, sizes, kernel_size, strides, dilations or (1,) * len(kernel_size))
    return {"pads": [lo for lo, _ in pads] + [hi for _, hi in pads]}


def emit_conv(ctx: LoweringContext, x: str, kernel: np.ndarray, bias, strides, padding, dilations,
              groups) -> str:
    """ONNX Conv from a Keras-layout kernel; `padding` from `window_pads`, or (lo, hi) pairs per spatial axis."""
    if not isinstance(padding, dict):
        padding = {"pads": [lo for lo, _ in padding] + [hi for _, hi in padding]}
    inputs = [x, ctx.const(_onnx_kernel(kernel), "kernel")]
    if bias is not None:
        inputs.append(ctx.const(bias, "bias"))
    return ctx.node("Conv", inputs, kernel_shape=list(kernel.shape[:-2]), strides=list(strides),
                    dilations=list(dilations), group=int(groups), **padding)


def _finish(ctx, layer, y: str, node) -> list[TensorRef]:
    out_shape = node.outputs[0].shape
    perm = channels_first_perm(len(out_shape)) if layer.data_format == "channels_last" else None
    return [apply_activation(ctx, TensorRef(y, out_shape, "float32", perm), layer._act, layer)]


def _windowed_input(ctx, layer, ref: TensorRef) -> tuple[TensorRef, dict]:
    """The input channels-first, and the layer's padding as ONNX attributes."""
    pads = window_pads(layer.padding, spatial_sizes(layer, ref), layer.kernel_size, layer.strides,
                       layer.dilation_rate)
    return channels_first_input(ctx, layer, ref), pads


def _bias(layer):
    return layer.bias.value if layer.bias is not None else None


def _depthwise_kernel(layer) -> np.ndarray:
    """(*k, C, mult) as a grouped-conv kernel (*k, 1, C*mult): output channel c * mult + m."""
    return layer.depthwise_kernel.value.reshape((*layer.kernel_size, 1, -1))


@lowers("Conv1D", "Conv2D", "Conv3D")
def conv(ctx, layer, ins, node):
    x, pads = _windowed_input(ctx, layer, ins[0])
    kernel, bias = folded_kernel_bias(ctx, layer, layer.kernel.value, _bias(layer))
    y = emit_conv(ctx, x.name, kernel, bias, layer.strides, pads, layer.dilation_rate, layer.groups)
    return _finish(ctx, layer, y, node)


@lowers("DepthwiseConv1D", "DepthwiseConv2D")
def depthwise(ctx, layer, ins, node):
    x, pads = _windowed_input(ctx, layer, ins[0])
    kernel, bias = folded_kernel_bias(ctx, layer, _depthwise_kernel(layer), _bias(layer))
    channels = layer._input_channels(ins[0].shape)
    y = emit_conv(ctx, x.name, kernel, bias, layer.strides, pads, layer.dilation_rate, channels)
    return _finish(ctx, layer, y, node)


@lowers("SeparableConv1D", "SeparableConv2D")
def separable(ctx, layer, ins, node):
    x, pads = _windowed_input(ctx, layer, ins[0])
    channels = layer._input_channels(ins[0].shape)
    y = emit_conv(ctx, x.name, _depthwise_kernel(layer), None, layer.strides, pads, layer.dilation_rate, channels)
    kernel, bias = folded_kernel_bias(ctx, layer, layer.pointwise_kernel.value, _bias(layer))
    y = emit_conv(ctx, y, kernel, bias, (1,) * layer.rank, {}, (1,) * layer.rank, 1)
    return _finish(ctx, layer, y, node)


@lowers("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose")
def conv_transpose(ctx, layer, ins, node):
    """ConvTranspose with TensorFlow's padding placement; surplus output positions via output_padding/Pad."""
    x = channels_first_input(ctx, layer, ins[0])
    if any(s is None for s in spatial_sizes(layer, ins[0])):
        raise unsupported(layer, "a transposed convolution over a symbolic spatial size")
    pads, extra = conv_transpose_geometry(layer.padding, spatial_sizes(layer, ins[0]), layer.kernel_size,
                                          layer.strides, layer._dilation(), layer.output_padding)
    k = layer.kernel.value  # (*k, out, in) -> ONNX (in, out, *k)
    n = k.ndim - 2
    inputs = [x.name, ctx.const(np.ascontiguousarray(np.transpose(k, [n + 1, n, *range(n)])), "kernel")]
    if layer.bias is not None:
        inputs.append(ctx.const(_bias(layer), "bias"))
    out_pad = [e + max(-hi, 0) for e, (_, hi) in zip(extra, pads)]
    lo_extra = [max(-lo, 0) for lo, _ in pads]
    y = ctx.node("ConvTranspose", inputs, kernel_shape=list(layer.kernel_size), strides=list(layer.strides),
                 pads=[max(lo, 0) for lo, _ in pads] + [max(hi, 0) for _, hi in pads],
                 dilations=list(layer._dilation()), output_padding=out_pad)
    if any(lo_extra):
        y = ctx.node("Pad", [y, ctx.ints([0, 0, *lo_extra, 0, 0, *([0] * n)], "pads")])
    return _finish(ctx, layer, y, node)
