"""Lowerings of the merge layers, computed in whatever layout most inputs already have."""

from __future__ import annotations

import string

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


@lowers("Dot")
def dot(ctx, layer, ins, node):
    """Keras batch_dot as one Einsum over the two inputs in Keras layout."""
    x1, x2 = (ctx.keras(r) for r in ins)
    a1, a2 = layer._axes(x1.ndim, x2.ndim)
    n1, n2 = x1.name, x2.name
    if layer.normalize:
        n1, n2 = _l2_normalize(ctx, n1, a1), _l2_normalize(ctx, n2, a2)
    letters = iter(string.ascii_lowercase[2:])
    s1 = ["a"] + [next(letters) for _ in range(x1.ndim - 1)]
    s2 = ["a"] + [next(letters) for _ in range(x2.ndim - 1)]
    s1[a1] = s2[a2] = "b"
    out = ["a"] + [c for i, c in enumerate(s1) if i not in (0, a1)] + [c for i, c in enumerate(s2) if i not in (0, a2)]
    y = ctx.node("Einsum", [n1, n2], equation=f"{''.join(s1)},{''.join(s2)}->{''.join(out)}")
    if len(out) == 1:
        y = ctx.node("Unsqueeze", [y, ctx.ints([1], "axes")])
    return [TensorRef(y, node.outputs[0].shape, x1.dtype)]
