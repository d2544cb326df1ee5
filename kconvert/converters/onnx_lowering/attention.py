"""Lowerings of EinsumDense (Einsum + bias) and the attention layers (Einsum/MatMul + Softmax), in Keras layout.

Masks follow the numpy `call`s exactly: MultiHeadAttention merges the Keras masks of query/value/key with
`attention_mask` and the causal mask and applies each Keras version's masked softmax; Attention and
AdditiveAttention subtract 1e9 at masked value positions and zero the masked query rows.
"""

from __future__ import annotations

import math

import numpy as np

from .activations import apply_activation
from .context import ONNX_DTYPES, LoweringContext
from .refs import TensorRef
from .registry import lowers, unsupported

FLOAT, BOOL, INT64 = ONNX_DTYPES["float32"], ONNX_DTYPES["bool"], ONNX_DTYPES["int64"]


def einsum_dense(ctx: LoweringContext, layer, ref: TensorRef, shape=None) -> TensorRef:
    """activation(Einsum(equation, x, kernel) + bias) of an EinsumDense on `ref` (taken in Keras layout)."""
    x = ctx.keras(ref)
    y = ctx.node("Einsum", [x.name, ctx.const(layer.kernel.value, "kernel")], equation=layer.equation)
    if layer.bias is not None:
        y = ctx.node("Add", [y, ctx.const(layer.bias.value, "bias")])
    shape = tuple(layer.compute_output_shape(x.shape)) if shape is None else tuple(shape)
    return apply_activation(ctx, TensorRef(y, shape, "float32"), layer._act, layer)


@lowers("EinsumDense")
def einsum_dense_layer(ctx, layer, ins, node):
    return [einsum_dense(ctx, layer, ins[0], node.outputs[0].shape)]


# ---------------------------------------------------------------------------------------------- shared pieces


def as_bool(ctx: LoweringContext, name: str, dtype: str) -> str:
    """`name` as a bool tensor (nonzero is True, as numpy's astype(bool))."""
    return name if dtype == "bool" else ctx.node("Cast", [name], to=BOOL)


def as_float(ctx: LoweringContext, name: str, dtype: str) -> str:
    return name if dtype == "float32" else ctx.node("Cast", [name], to=FLOAT)


def unsqueeze(ctx: LoweringContext, name: str, axes) -> str:
    return ctx.node("Unsqueeze", [name, ctx.ints(list(axes), "axes")])


def positions(ctx: LoweringContext, ref: TensorRef, axis: int) -> str:
    """int64 arange over Keras axis `axis` of `ref` (a constant when the size is known)."""
    size = ref.shape[axis]
    if size is not None:
        return ctx.ints(np.arange(size), "positions")
    x = ctx.keras(ref)
    n = ctx.node("Squeeze", [ctx.node("Gather", [ctx.node("Shape", [x.name]), ctx.ints([axis], "axis")], axis=0),
                             ctx.ints([0], "axes")])
    return ctx.node("Range", [ctx.const(0, "start", np.int64), n, ctx.const(1, "delta", np.int64)])


def causal_mask(ctx: LoweringContext, query: TensorRef, value: TensorRef, q_axis: int, v_axis: int) -> str:
    """bool (Tq, Tv): key position <= query position (np.tril of ones)."""
    if query.shape[q_axis] is not None and value.shape[v_axis] is not None:
        return ctx.const(np.tril(np.ones((query.shape[q_axis], value.shape[v_axis]), bool)), "causal", bool)
    rows, cols = positions(ctx, query, q_axis), positions(ctx, value, v_axis)
    return ctx.node("GreaterOrEqual", [unsqueeze(ctx, rows, [1]), unsqueeze(ctx, cols, [0])])


def sliding_mask(ctx: LoweringContext, query: TensorRef, value: TensorRef, window: int) -> str:
    """bool (Tq, Tv): |query position - key position| < window."""
    if query.shape[1] is not None and value.shape[1] is not None:
        rows, cols = np.arange(query.shape[1])[:, None], np.arange(value.shape[1])[None, :]
        return ctx.const(np.abs(rows - cols) < window, "window", bool)
    rows, cols = positions(ctx, query, 1), positions(ctx, value, 1)
    diff = ctx.node("Abs", [ctx.node("Sub", [unsqueeze(ctx, rows, [1]), unsqueeze(ctx, cols, [0])])])
    return ctx.node("Less", [diff, ctx.const(window, "window", np.int64)])


def softmax_trailing(ctx: LoweringContext, x: str, ndim: int, n_axes: int) -> str:
    """Softmax over the last `n_axes` axes (flattened into one for the native op when there are several)."""
    if n_axes == 1:
        return ctx.node("Softmax", [x], axis=-1)
    flat = ctx.node("Reshape", [x, ctx.ints([0] * (ndim - n_axes) + [-1], "shape")])
    return ctx.node("Reshape", [ctx.node("Softmax", [flat], axis=-1), ctx.node("Shape", [x])])


def _and(ctx: LoweringContext, a: str | None, b: str) -> str:
    return b if a is None else ctx.node("And", [a, b])


# ---------------------------------------------------------------------------------------------- MultiHeadAttention


@lowers("MultiHeadAttention", handles_mask=True)
def multi_head_attention(ctx, layer, ins, node):
    args = node.call_args(ins)
    kw = args.kwargs
    query, value, key, attn = args.first, kw.get("value"), kw.get("key"), kw.get("attention_mask")
    if not isinstance(query, TensorRef) or not isinstance(value, TensorRef):
        raise unsupported(layer, "a call without query and value tensors")
    scores_out = bool(kw.get("return_attention_scores"))
    q_in, v_in = ctx.keras(query), ctx.keras(value)
    k_in = ctx.keras(key) if isinstance(key, TensorRef) else v_in

    mask, mask_dtype, mask_ndim = _mha_mask(ctx, layer, query, value, key, attn, bool(kw.get("use_causal_mask")))
    gate = einsum_dense(ctx, layer._gate_dense, q_in) if layer._gate_dense is not None else None
    q = einsum_dense(ctx, layer._query_dense, q_in)
    k = einsum_dense(ctx, layer._key_dense, k_in)
    v = einsum_dense(ctx, layer._value_dense, v_in)
    q_scaled = ctx.node("Mul", [q.name, ctx.const(np.float32(1.0 / math.sqrt(float(layer._key_dim))), "scale")])
    scores = ctx.node("Einsum", [k.name, q_scaled], equation=layer._dot_eq)
    scores_ndim = len(layer._dot_eq.split("->")[1])
    fused = layer._keras3 and not (layer._dropout > 0 or scores_out or q.ndim != 4)
    probs = _masked_softmax(ctx, layer, scores, scores_ndim, mask, mask_dtype, mask_ndim, fused)
    out = ctx.node("Einsum", [probs, v.name], equation=layer._combine_eq)
    if gate is not None:
        out = ctx.node("Mul", [out, gate.name])
    y = einsum_dense(ctx, layer._output_dense, TensorRef(out, (*q.shape[:-2], *v.shape[-2:])),
                     node.outputs[0].shape)
    outs = [TensorRef(y.name, y.shape, y.dtype, mask=query.mask)]
    if scores_out:
        outs.append(TensorRef(probs, node.outputs[1].shape, "float32"))
    return outs


def _mha_mask(ctx, layer, query: TensorRef, value: TensorRef, key, attn, use_causal: bool):
    """(mask name or None, its dtype, its rank): MultiHeadAttention._attention_mask."""
    auto, auto_ndim = None, 0
    if query.mask:
        auto, auto_ndim = unsqueeze(ctx, query.mask, [2]), 3
    masks = [value.mask] + ([key.mask] if isinstance(key, TensorRef) else [])
    for m in masks:
        if m:
            auto, auto_ndim = _and(ctx, auto, unsqueeze(ctx, m, [1])), max(auto_ndim, 3)
    if use_causal:
        auto, auto_ndim = _and(ctx, auto, unsqueeze(ctx, causal_mask(ctx, query, value, 1, 1), [0])), max(auto_ndim, 3)
    if layer._sliding_window is not None:
        window = unsqueeze(ctx, sliding_mask(ctx, query, value, int(layer._sliding_window)), [0])
        auto, auto_ndim = _and(ctx, auto, window), max(auto_ndim, 3)
    if auto is None:
        if attn is None:
            return None, None, 0
        a = ctx.keras(attn)
        return a.name, a.dtype, a.ndim
    if attn is None:
        return auto, "bool", auto_ndim
    a = ctx.keras(attn)
    return ctx.node("And", [as_bool(ctx, a.name, a.dtype), auto]), "bool", max(a.ndim, auto_ndim)


def _masked_softmax(ctx, layer, scores: str, ndim: int, mask: str | None, dtype, mask_ndim: int, fused: bool) -> str:
    """MultiHeadAttention._masked_softmax: each Keras version's way of excluding masked positions."""
    n_axes = len(layer._axes)
    if mask is None:
        return softmax_trailing(ctx, scores, ndim, n_axes)
    for _ in range(ndim - mask_ndim):
        mask = unsqueeze(ctx, mask, [-2 * n_axes - 1])
    if layer._keras3:
        keep = as_bool(ctx, mask, dtype)
        fill = np.float32(-0.7 * 3.38953e38) if fused else np.float32(-1e9)
        probs = softmax_trailing(ctx, ctx.node("Where", [keep, scores, ctx.const(fill, "fill")]), ndim, n_axes)
        return probs if fused else ctx.node("Where", [keep, probs, ctx.const(np.float32(0.0), "zero")])
    if layer._softmax_robust_masking:
        keep = mask if dtype == "bool" else ctx.node("Greater", [as_float(ctx, mask, dtype), ctx.const(0.5, "half")])
        return softmax_trailing(ctx, ctx.node("Where", [keep, scores, ctx.const(np.float32(-1e9), "fill")]), ndim,
                                n_axes)
    adder = ctx.node("Mul", [ctx.node("Sub", [ctx.const(1.0, "one"), as_float(ctx, mask, dtype)]),
                             ctx.const(np.float32(-1e9), "big")])
    return softmax_trailing(ctx, ctx.node("Add", [scores, adder]), ndim, n_axes)


# ---------------------------------------------------------------------------------------------- dense attention


@lowers("Attention", "AdditiveAttention", handles_mask=True)
def dense_attention(ctx, layer, ins, node):
    args = node.call_args(ins)
    first = args.first
    if not isinstance(first, (list, tuple)) or not 2 <= len(first) <= 3:
        raise unsupported(layer, "a call on anything but [query, value] or [query, value, key]")
    q, v = ctx.keras(first[0]), ctx.keras(first[1])
    k = ctx.keras(first[2]) if len(first) > 2 else v
    q_mask, v_mask = first[0].mask, first[1].mask
    scores = _dense_scores(ctx, layer, q, k)
    score_mask = unsqueeze(ctx, v_mask, [-2]) if v_mask else None
    if layer.causal or args.kwargs.get("use_causal_mask"):
        score_mask = _and(ctx, score_mask, causal_mask(ctx, q, k, -2, -2))
    if score_mask is not None:
        penalty = ctx.node("Mul", [ctx.node("Cast", [ctx.node("Not", [score_mask])], to=FLOAT),
                                   ctx.const(np.float32(1e9), "big")])
        scores = ctx.node("Sub", [scores, penalty])
    weights = ctx.node("Softmax", [scores], axis=-1)
    out = ctx.node("MatMul", [weights, v.name])
    if q_mask:
        out = ctx.node("Mul", [out, unsqueeze(ctx, ctx.node("Cast", [q_mask], to=FLOAT), [-1])])
    outs = [TensorRef(out, node.outputs[0].shape, "float32", mask=q_mask)]
    if args.kwargs.get("return_attention_scores"):
        outs.append(TensorRef(weights, node.outputs[1].shape, "float32"))
    return outs


def _dense_scores(ctx, layer, q: TensorRef, k: TensorRef) -> str:
    if type(layer).__name__ == "Attention" and layer.score_mode == "dot":
        perm = [*range(k.ndim - 2), k.ndim - 1, k.ndim - 2]
        scores = ctx.node("MatMul", [q.name, ctx.node("Transpose", [k.name], perm=perm)])
        if layer.scale is not None:
            scores = ctx.node("Mul", [scores, ctx.const(layer.scale.value, "scale")])
        return scores
    summed = ctx.node("Add", [unsqueeze(ctx, q.name, [-2]), unsqueeze(ctx, k.name, [-3])])  # (..., Tq, Tv, d)
    if type(layer).__name__ == "Attention":  # score_mode 'concat'
        if layer.scale is not None:
            summed = ctx.node("Mul", [ctx.const(layer.scale.value, "scale"), summed])
        total = ctx.node("ReduceSum", [ctx.node("Tanh", [summed]), ctx.ints([-1], "axes")], keepdims=0)
        return ctx.node("Mul", [ctx.const(layer.concat_score_weight.value, "concat_score_weight"), total])
    t = ctx.node("Tanh", [summed])
    if layer.scale is not None:
        t = ctx.node("Mul", [ctx.const(layer.scale.value, "scale"), t])
    return ctx.node("ReduceSum", [t, ctx.ints([-1], "axes")], keepdims=0)
