"""Lowerings of the merge layers (and Keras 1's Merge), computed in whatever layout most inputs already have."""

from __future__ import annotations

import string

import numpy as np

from .context import LoweringContext
from .refs import TensorRef
from .registry import lowers, unsupported


def _aligned(ctx: LoweringContext, ins: list[TensorRef]) -> tuple[list[TensorRef], tuple | None]:
    """The inputs in one common layout; lower-rank inputs get size-1 axes after the batch axis, as Keras does."""
    ndim = max(r.ndim for r in ins)
    if all(r.ndim == ndim for r in ins):
        perm = ctx.common_perm(ins)
        return [ctx.as_perm(r, perm) for r in ins], perm
    out = []
    for r in ins:
        r = ctx.keras(r)
        if r.ndim < ndim:
            extra = list(range(1, 1 + ndim - r.ndim))
            name = ctx.node("Unsqueeze", [r.name, ctx.ints(extra, "axes")])
            r = TensorRef(name, (r.shape[0], *[1] * len(extra), *r.shape[1:]), r.dtype)
        out.append(r)
    return out, None


def _chain(ctx: LoweringContext, op_type: str, names: list[str]) -> str:
    y = names[0]
    for n in names[1:]:
        y = ctx.node(op_type, [y, n])
    return y


@lowers("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum")
def elementwise_merge(ctx, layer, ins, node):
    refs, perm = _aligned(ctx, ins)
    names = [r.name for r in refs]
    kind = type(layer).__name__
    if kind == "Add":
        y = _chain(ctx, "Add", names)
    elif kind == "Subtract":
        y = ctx.node("Sub", names)
    elif kind == "Multiply":
        y = _chain(ctx, "Mul", names)
    elif kind == "Average":
        y = ctx.node("Div", [_chain(ctx, "Add", names), ctx.const(float(len(names)))])
    else:
        y = ctx.node("Max" if kind == "Maximum" else "Min", names)
    return [TensorRef(y, node.outputs[0].shape, refs[0].dtype, perm)]


@lowers("Concatenate")
def concatenate(ctx, layer, ins, node):
    refs, perm = _aligned(ctx, ins)
    if len({r.ndim for r in ins}) != 1:
        raise unsupported(layer, "inputs of different ranks")
    axis = refs[0].physical_axis(layer.axis)
    y = ctx.node("Concat", [r.name for r in refs], axis=axis)
    return [TensorRef(y, node.outputs[0].shape, refs[0].dtype, perm)]


def _l2_normalize(ctx, x: str, axis: int) -> str:
    total = ctx.node("ReduceSum", [ctx.node("Mul", [x, x]), ctx.ints([axis], "axes")], keepdims=1)
    return ctx.node("Div", [x, ctx.node("Sqrt", [ctx.node("Max", [total, ctx.const(1e-12)])])])


def batch_dot(ctx: LoweringContext, x: TensorRef, y: TensorRef, a0: int, a1: int) -> str:
    """Keras's batch_dot of two Keras-layout values as one Einsum; (N, 1) for two 2-D inputs."""
    letters = iter(string.ascii_lowercase[2:])
    s1 = ["a"] + [next(letters) for _ in range(x.ndim - 1)]
    s2 = ["a"] + [next(letters) for _ in range(y.ndim - 1)]
    s1[a0] = s2[a1] = "b"
    out = ["a"] + [c for i, c in enumerate(s1) if i not in (0, a0)] + [c for i, c in enumerate(s2) if i not in (0, a1)]
    z = ctx.node("Einsum", [x.name, y.name], equation=f"{''.join(s1)},{''.join(s2)}->{''.join(out)}")
    return ctx.node("Unsqueeze", [z, ctx.ints([1], "axes")]) if len(out) == 1 else z


@lowers("Dot")
def dot(ctx, layer, ins, node):
    """Keras batch_dot as one Einsum over the two inputs in Keras layout."""
    x1, x2 = (ctx.keras(r) for r in ins)
    a1, a2 = layer._axes(x1.ndim, x2.ndim)
    if layer.normalize:
        x1 = TensorRef(_l2_normalize(ctx, x1.name, a1), x1.shape, x1.dtype)
        x2 = TensorRef(_l2_normalize(ctx, x2.name, a2), x2.shape, x2.dtype)
    return [TensorRef(batch_dot(ctx, x1, x2, a1, a2), node.outputs[0].shape, x1.dtype)]


@lowers("Merge")
def legacy_merge(ctx, layer, ins, node):
    mode = layer.mode
    if callable(mode):
        raise unsupported(layer, "a Merge with a Python function as its mode")
    out_shape = node.outputs[0].shape
    if mode in ("dot", "cos"):
        x, y = ctx.keras(ins[0]), ctx.keras(ins[1])
        a0, a1 = layer._axes(x.ndim, y.ndim)
        z = batch_dot(ctx, x, y, a0, a1)
        if mode == "cos":
            norms = ctx.node("Sqrt", [ctx.node("Mul", [batch_dot(ctx, x, x, a0 % x.ndim, a1 % x.ndim),
                                                        batch_dot(ctx, y, y, a0 % y.ndim, a1 % y.ndim)])])
            z = ctx.node("Div", [z, ctx.node("Max", [norms, ctx.const(np.float32(1e-7), "epsilon")])])
        return [TensorRef(z, out_shape, "float32")]
    if len({r.ndim for r in ins}) != 1:
        raise unsupported(layer, "inputs of different ranks")
    perm = ctx.common_perm(ins)
    refs = [ctx.as_perm(r, perm) for r in ins]
    names = [r.name for r in refs]
    if mode == "concat":
        y = ctx.node("Concat", names, axis=refs[0].physical_axis(layer.concat_axis))
    else:
        y = _chain(ctx, {"sum": "Add", "ave": "Add", "mul": "Mul", "max": "Max"}[mode], names)
        if mode == "ave":
            y = ctx.node("Div", [y, ctx.const(np.float32(len(names)), "count")])
    return [TensorRef(y, out_shape, refs[0].dtype, perm)]
