"""Lowerings of the pooling layers (MaxPool/AveragePool, global pooling), channels-first inside."""

from __future__ import annotations

from ... import ops
from .conv import channels_first_input, window_pads
from .refs import TensorRef, channels_first_perm
from .registry import lowers, unsupported


def _spatial(layer, shape):
    return [shape[a] for a in ops.spatial_axes(len(shape), layer.data_format == "channels_last")]


@lowers("MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D", "AveragePooling2D",
        "AveragePooling3D")
def pool(ctx, layer, ins, node):
    x = channels_first_input(ctx, layer, ins[0])
    attrs = {"kernel_shape": list(layer.pool_size), "strides": list(layer.strides),
             **window_pads(layer.padding, _spatial(layer, ins[0].shape), layer.pool_size, layer.strides)}
    if layer.mode == "max":
        _keep_pad_apart(ctx, x.name)
        y = ctx.node("MaxPool", [x.name], **attrs)
    else:  # TensorFlow's 'SAME' average divides by the real (unpadded) elements of each window
        y = ctx.node("AveragePool", [x.name], count_include_pad=0, **attrs)
    out_shape = node.outputs[0].shape
    perm = channels_first_perm(len(out_shape)) if layer.data_format == "channels_last" else None
    return [TensorRef(y, out_shape, x.dtype, perm)]


def _keep_pad_apart(ctx, name: str) -> None:
    """Stop onnxruntime fusing a zero Pad (ZeroPadding) into the MaxPool that reads it.

    onnxruntime's PadFusion (seen in 1.31) folds a constant Pad into a following MaxPool's `pads`, which
    changes the result: MaxPool's own padding is -inf, where ZeroPadding's zeros take part in the maximum.
    It only fuses a Pad whose fill value is a constant, so the fill value is given as a zero computed from
    the batch size, which no optimizer can fold.
    """
    producer = next((n for n in reversed(ctx.builder.nodes) if name in n.output), None)
    if producer is None or producer.op_type != "Pad" or len(producer.input) > 2:
        return
    start = len(ctx.builder.nodes)
    batch = ctx.node("Gather", [ctx.node("Shape", [producer.input[0]]), ctx.ints([0], "first")])
    zero = ctx.node("Mul", [ctx.node("Cast", [ctx.node("ReduceMin", [batch], keepdims=0)], to=1), ctx.const(0.0)])
    new = ctx.builder.nodes[start:]
    del ctx.builder.nodes[start:]
    at = ctx.builder.nodes.index(producer)
    ctx.builder.nodes[at:at] = new  # computed before the Pad, from the Pad's own input
    if len(producer.input) == 1:
        producer.input.append("")
    producer.input.append(zero)


def reduce(ctx, op_type: str, x: str, axes, keepdims: bool) -> str:
    """ReduceMean/ReduceMax/ReduceSum over `axes` (the axes are an input from opset 18, 13 for ReduceSum)."""
    if op_type == "ReduceSum" or ctx.opset >= 18:
        return ctx.node(op_type, [x, ctx.ints(list(axes), "axes")], keepdims=int(keepdims))
    return ctx.node(op_type, [x], axes=list(axes), keepdims=int(keepdims))


@lowers("GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D", "GlobalAveragePooling2D",
        "GlobalAveragePooling3D", "GlobalAveragePooling1D", handles_mask=True)
def global_pool(ctx, layer, ins, node):
    """GlobalAveragePool/GlobalMaxPool on a channels-first value, else a reduction over the spatial axes."""
    x = ins[0] if ins[0].flat_of is None else ctx.keras(ins[0])
    if x.ndim != layer.rank + 2:
        raise unsupported(layer, f"an input of rank {x.ndim}")
    axes = sorted(x.physical_axis(a) for a in ops.spatial_axes(x.ndim, layer.data_format == "channels_last"))
    out_shape = node.outputs[0].shape
    if x.mask and type(layer).__name__ == "GlobalAveragePooling1D":
        return [_masked_mean(ctx, layer, x, axes[0], out_shape)]
    if axes == list(range(2, x.ndim)):
        y = ctx.node("GlobalMaxPool" if layer.mode == "max" else "GlobalAveragePool", [x.name])
        if not layer.keepdims:
            y = ctx.node("Flatten", [y], axis=1)
    else:
        y = reduce(ctx, "ReduceMax" if layer.mode == "max" else "ReduceMean", x.name, axes, layer.keepdims)
    return [TensorRef(y, out_shape, x.dtype, x.perm if layer.keepdims else None)]


def _masked_mean(ctx, layer, x: TensorRef, steps_axis: int, out_shape) -> TensorRef:
    """sum(x * mask) / sum(mask) over the steps (a fully masked sample gives 0/0 = nan, as in Keras)."""
    channel_axis = 3 - steps_axis  # the other non-batch axis of (N, steps, C) in its physical order
    m = ctx.node("Unsqueeze", [ctx.node("Cast", [x.mask], to=1), ctx.ints([channel_axis], "axes")])
    total = reduce(ctx, "ReduceSum", ctx.node("Mul", [x.name, m]), [steps_axis], layer.keepdims)
    count = reduce(ctx, "ReduceSum", m, [steps_axis], layer.keepdims)
    return TensorRef(ctx.node("Div", [total, count]), out_shape, x.dtype, x.perm if layer.keepdims else None)
