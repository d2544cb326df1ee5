"""Lowering of TimeDistributed: fold (N, T, ...) into (N*T, ...), lower the inner layer, unfold its outputs.

The fold and the unfold are Reshapes of the physical tensor: a value whose layout keeps the batch and time axes
in front (a channels-first image sequence) is folded without a Transpose, and an inner output laid out with the
batch axis first (a channels_last Conv's NCHW result) is unfolded keeping its layout, so that a chain of
TimeDistributed convolutions stays channels-first.
"""

from __future__ import annotations

import numpy as np

from ...ir import Value
from .context import LoweringContext
from .export import lower_nested, lower_node, uses_mask
from .refs import TensorRef, normalize_perm
from .registry import lowers, unsupported

INT64_MAX = np.iinfo(np.int64).max


def shape_slice(ctx: LoweringContext, name: str, start: int, end: int = INT64_MAX) -> str:
    """Shape(name)[start:end] (int64)."""
    return ctx.node("Slice", [ctx.node("Shape", [name]), ctx.ints([start], "starts"), ctx.ints([end], "ends")])


def fold_time(ctx: LoweringContext, ref: TensorRef) -> TensorRef:
    """The Keras value reshaped from (N, T, ...) to (N*T, ...), keeping the layout of the axes after T."""
    perm = ref.perm
    if ref.flat_of is not None or (perm is not None and perm[:2] != (0, 1)):
        ref, perm = ctx.keras(ref), None
    rest = ref.physical_shape()[2:]
    if all(d is not None for d in rest):
        target = ctx.ints([-1, *rest], "shape")
    else:
        target = ctx.node("Concat", [ctx.ints([-1], "minus_one"), shape_slice(ctx, ref.name, 2)], axis=0)
    name = ctx.node("Reshape", [ref.name, target])
    child_perm = None if perm is None else normalize_perm((0, *[p - 1 for p in perm[2:]]))
    return TensorRef(name, (None, *ref.shape[2:]), ref.dtype, child_perm)


def unfold_time(ctx: LoweringContext, ref: TensorRef, source: TensorRef, shape) -> TensorRef:
    """`ref` (N*T, ...) reshaped to `shape` (N, T, ...); N and T are read from `source` (N, T, ...) when unknown."""
    perm = ref.perm
    if ref.flat_of is not None or (perm is not None and perm[0] != 0):
        ref, perm = ctx.keras(ref), None
    rest = ref.physical_shape()[1:]
    if shape[1] is not None and all(d is not None for d in rest):
        target = ctx.ints([-1, shape[1], *rest], "shape")
    else:
        keeps_front = source.flat_of is None and (source.perm is None or source.perm[:2] == (0, 1))
        src = source.name if keeps_front else ctx.keras(source).name
        tail = ctx.ints(list(rest), "rest") if all(d is not None for d in rest) else shape_slice(ctx, ref.name, 1)
        target = ctx.node("Concat", [shape_slice(ctx, src, 0, 2), tail], axis=0)
    name = ctx.node("Reshape", [ref.name, target])
    out_perm = None if perm is None else normalize_perm((0, 1, *[p + 1 for p in perm[1:]]))
    return TensorRef(name, tuple(shape), ref.dtype, out_perm)


class StandInNode:
    """What a lowering reads of its IR node, for a layer called inside a wrapper (no node of its own)."""

    is_input = False
    nested = False

    def __init__(self, layer, input_shapes: list, output_shapes: list, dtype: str = "float32"):
        self.layer = layer
        self.inputs = [Value(s, dtype) for s in input_shapes]
        self.outputs = [Value(s, dtype, None, None, i) for i, s in enumerate(output_shapes)]
        self.kwargs: dict = {}

    def call_args(self, values: list):
        return list(values) if len(values) > 1 else values[0]


def _shapes(out) -> list:
    if isinstance(out, list) and out and isinstance(out[0], (list, tuple)):
        return [tuple(s) for s in out]
    return [tuple(out)]


def lower_inner(ctx: LoweringContext, inner, child: TensorRef) -> list[TensorRef]:
    """Lower `inner` (a layer or a nested model) on one input, outside any IR node of its own: as the exporter
    lowers a node (registered lowering, or its fallback), then back under the wrapper's name prefix."""
    prefix = ctx.builder.prefix
    try:
        if getattr(inner, "_graph", None) is not None and hasattr(inner, "_is_graph_network"):
            return lower_nested(ctx, inner, [child], None)
        node = StandInNode(inner, [child.shape], _shapes(inner.compute_output_shape(child.shape)), child.dtype)
        return lower_node(ctx, node, [child])
    finally:
        ctx.builder.prefix = prefix


@lowers("TimeDistributed", handles_mask=True)
def time_distributed(ctx, layer, ins, node):
    """The inner layer on (N*T, ...); the output mask is the input's (what both Kerases give for inner layers
    that pass masks through or drop them)."""
    x = ins[0]
    if x.ndim < 3:
        raise unsupported(layer, f"an input of rank {x.ndim}")
    inner = layer.layer
    if x.mask and uses_mask(inner):
        raise unsupported(layer, f"a Keras mask reaching the wrapped {type(inner).__name__}")
    child = fold_time(ctx, TensorRef(x.name, x.shape, x.dtype, x.perm, x.flat_of))
    outs = lower_inner(ctx, inner, child)
    if len(outs) != len(node.outputs):
        raise unsupported(layer, f"a wrapped layer with {len(outs)} outputs")
    if any(r.mask for r in outs) and layer._keras_major < 3:
        raise unsupported(layer, f"a mask computed by the wrapped {type(inner).__name__} (tf.keras)")
    results = []
    for ref, v in zip(outs, node.outputs):
        y = unfold_time(ctx, ref, x, v.shape)
        results.append(TensorRef(y.name, y.shape, y.dtype, y.perm, None, x.mask))
    return results
