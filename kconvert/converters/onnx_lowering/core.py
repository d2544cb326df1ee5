"""Lowerings of the core layers: Dense, the inference identities (Dropout & co), Activation and the activation
layers, Embedding, Masking; and the small layout helpers the other lowerings share."""

from __future__ import annotations

import numpy as np

from .activations import apply_activation, relu_general
from .context import LoweringContext
from .refs import TensorRef
from .registry import lowers


def folded_kernel_bias(ctx: LoweringContext, layer, kernel: np.ndarray, bias: np.ndarray | None):
    """(kernel, bias) with a BatchNormalization folded into the output channels (kernel's last axis) if planned."""
    fold = getattr(ctx, "folded", {}).get(id(layer))
    if fold is None:
        return kernel, bias
    scale, shift = fold
    b = np.zeros(kernel.shape[-1]) if bias is None else bias.astype(np.float64)
    return (kernel * scale).astype(kernel.dtype), (b * scale + shift).astype(kernel.dtype)


def same_layout(ref: TensorRef, name: str, shape=None, dtype=None) -> TensorRef:
    """A result of an elementwise op on `ref`: same layout."""
    return TensorRef(name, ref.shape if shape is None else tuple(shape), dtype or ref.dtype, ref.perm)


def elementwise_input(ctx: LoweringContext, ref: TensorRef) -> TensorRef:
    """`ref` as an elementwise op can read it: any layout, but a delayed Flatten materialized."""
    return ref if ref.flat_of is None else ctx.keras(ref)


def keras_param(value, ref: TensorRef, dtype=np.float32) -> np.ndarray:
    """A parameter broadcasting (numpy's rule) against the Keras value of `ref`, laid out like `ref`."""
    v = np.asarray(value, dtype)
    if v.ndim > ref.ndim:
        raise ValueError(f"a parameter of shape {v.shape} cannot broadcast against {ref.shape}")
    full = v.reshape((1,) * (ref.ndim - v.ndim) + v.shape)
    return np.transpose(full, ref.perm) if ref.perm else full


@lowers("Dense")
def dense(ctx: LoweringContext, layer, ins, node):
    (x,) = ins
    kernel, bias = folded_kernel_bias(ctx, layer, layer.kernel.value,
                                      layer.bias.value if layer.bias is not None else None)
    if x.ndim == 2:
        name, src_perm = ctx.flatten_physical(x)
        if src_perm is not None:  # rows of the flattened permuted tensor: permute the kernel rows to match
            src_shape = x.flat_of.shape[1:]
            rows = kernel.reshape(*src_shape, -1).transpose([p - 1 for p in src_perm[1:]] + [len(src_shape)])
            kernel = rows.reshape(kernel.shape)
        inputs = [name, ctx.const(kernel, "kernel")]
        if bias is not None:
            inputs.append(ctx.const(bias, "bias"))
        y = TensorRef(ctx.node("Gemm", inputs), (x.shape[0], layer.units))
    else:
        x = ctx.keras(x)
        y_name = ctx.node("MatMul", [x.name, ctx.const(kernel, "kernel")])
        if bias is not None:
            y_name = ctx.node("Add", [y_name, ctx.const(bias, "bias")])
        y = TensorRef(y_name, (*x.shape[:-1], layer.units))
    return [apply_activation(ctx, y, layer._act, layer)]


@lowers("Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise", "GaussianDropout",
        "AlphaDropout", "ActivityRegularization", "StochasticDepth")
def inference_identity(ctx, layer, ins, node):
    """The identity at inference (what the graph passes drop when they run)."""
    return [ins[0]]


@lowers("Activation")
def activation(ctx, layer, ins, node):
    return [apply_activation(ctx, ins[0], layer._act, layer)]


@lowers("ReLU")
def relu(ctx, layer, ins, node):
    x = elementwise_input(ctx, ins[0])
    return [same_layout(x, relu_general(ctx, x.name, layer.negative_slope, layer.max_value, layer.threshold))]


@lowers("LeakyReLU")
def leaky_relu(ctx, layer, ins, node):
    x = elementwise_input(ctx, ins[0])
    return [same_layout(x, ctx.node("LeakyRelu", [x.name], alpha=float(layer.alpha)))]


@lowers("ELU")
def elu(ctx, layer, ins, node):
    x = elementwise_input(ctx, ins[0])
    return [same_layout(x, ctx.node("Elu", [x.name], alpha=float(layer.alpha)))]


@lowers("ThresholdedReLU")
def thresholded_relu(ctx, layer, ins, node):
    x = elementwise_input(ctx, ins[0])
    return [same_layout(x, ctx.node("ThresholdedRelu", [x.name], alpha=float(layer.theta)))]


@lowers("PReLU")
def prelu(ctx, layer, ins, node):
    """PRelu with the slope broadcast in the input's physical layout (shared axes have size 1)."""
    x = elementwise_input(ctx, ins[0])
    alpha = layer.alpha.value  # Keras's param shape: the input shape without batch, shared axes 1
    full = alpha.reshape((1, *alpha.shape))
    if x.perm is not None:
        full = np.transpose(full, x.perm)
    return [same_layout(x, ctx.node("PRelu", [x.name, ctx.const(full[0], "slope")]))]


@lowers("Softmax")
def softmax(ctx, layer, ins, node):
    x = elementwise_input(ctx, ins[0])
    axes = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
    if len(axes) == 1:
        return [same_layout(x, ctx.node("Softmax", [x.name], axis=x.physical_axis(axes[0])))]
    phys = [x.physical_axis(a) for a in axes]  # exp(x - logsumexp over several axes)
    lse = ctx.node("ReduceLogSumExp", [x.name, ctx.ints(phys, "axes")] if ctx.opset >= 18 else [x.name],
                   keepdims=1, **({} if ctx.opset >= 18 else {"axes": phys}))
    return [same_layout(x, ctx.node("Exp", [ctx.node("Sub", [x.name, lse])]))]


@lowers("Embedding", handles_mask=True)
def embedding(ctx, layer, ins, node):
    """Gather rows of the table; with mask_zero the mask is `indices != 0`."""
    x = ctx.keras(ins[0])
    idx = ctx.node("Cast", [x.name], to=7) if x.dtype != "int64" else x.name
    y = ctx.node("Gather", [ctx.const(layer.embeddings.value, "embeddings"), idx], axis=0)
    mask = ctx.node("Not", [ctx.node("Equal", [idx, ctx.ints([0], "zero")])]) if layer.mask_zero else None
    return [TensorRef(y, (*x.shape, layer.output_dim), "float32", mask=mask)]


@lowers("Masking", handles_mask=True)
def masking(ctx, layer, ins, node):
    """x * any(x != mask_value, axis=-1), in Keras layout; that boolean (N, steps) is the mask."""
    x = ctx.keras(ins[0])
    keep = ctx.node("Cast", [ctx.node("Not", [ctx.node("Equal", [x.name, ctx.const(float(layer.mask_value))])])],
                    to=1)
    axes = [x.ndim - 1]
    any_ = (ctx.node("ReduceMax", [keep, ctx.ints(axes, "axes")], keepdims=1) if ctx.opset >= 18
            else ctx.node("ReduceMax", [keep], axes=axes, keepdims=1))
    mask = ctx.node("Cast", [ctx.node("Squeeze", [any_, ctx.ints(axes, "axes")])], to=9)
    return [TensorRef(ctx.node("Mul", [x.name, any_]), x.shape, x.dtype, mask=mask)]
