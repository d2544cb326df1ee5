"""Registration of the local gradient rules the tape (autodiff.py) applies, and the helpers rules share.

A rule is `rule(out, needs, *args, **kwargs) -> vjp` (or None: the result is a constant): `out` is the
forward result computed by numpy's own function on the raw arrays `args`, `needs[i]` says whether positional
argument i (or an item of it) is tracked, and `vjp(grad)` returns one gradient per positional argument (None
where not needed; a list for a list argument). A rule returning a list of vjps makes one tracked output per
item of a list result (np.split). A *composite* rule instead re-expresses the call with other numpy calls on
the Vars themselves (np.hstack via np.concatenate).

The rules themselves are grouped by family: grad_rules_elementwise (ufuncs), grad_rules_arrays (shape,
indexing, joining, reductions, products), grad_rules_ops (kconvert.ops functions).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..ops import parallel
from .autodiff import (
    FUNCTION_RULES,
    OP_RULES,
    UFUNC_RULES,
    AutodiffError,
    _has_float,
    _raw,
    _tracked,
    _write_out,
    needs_of,
    record,
)


def ufunc_rule(*names: str) -> Callable:
    """Register `rule(out, needs, *inputs) -> vjp` for the numpy ufuncs `names`."""
    def deco(rule):
        for n in names:
            UFUNC_RULES[n] = rule
        return rule
    return deco


def _function_dispatch(rule: Callable) -> Callable:
    def dispatch(func, args, kwargs):
        out_arg = kwargs.pop("out", None)
        if any(_tracked(v) for v in kwargs.values()):
            raise AutodiffError(f"numpy.{func.__name__} with a tracked tensor passed by keyword")
        raw, raw_kw = _raw(args), _raw(kwargs)
        out = func(*raw, **raw_kw)
        if not _has_float(out):
            result = out
        else:
            needs = needs_of(args)
            vjp = rule(out, needs, *raw, **raw_kw) if any(needs) else None
            if isinstance(out, (list, tuple)):
                vjps = vjp if vjp is not None else [None] * len(out)
                result = type(out)(record(o, args, v) for o, v in zip(out, vjps))
            else:
                result = record(out, args, vjp)
        return result if out_arg is None else _write_out(out_arg, result)
    return dispatch


def function_rule(*funcs: Callable) -> Callable:
    """Register `rule(out, needs, *args, **kwargs) -> vjp` for the numpy functions `funcs`."""
    def deco(rule):
        dispatch = _function_dispatch(rule)
        for f in funcs:
            if f is not None:
                FUNCTION_RULES[f] = dispatch
        return rule
    return deco


def composite_rule(*funcs: Callable) -> Callable:
    """Register `impl(*args, **kwargs)`, computing the numpy function with other numpy calls on the Vars."""
    def deco(impl):
        for f in funcs:
            if f is not None:
                FUNCTION_RULES[f] = lambda func, args, kwargs, impl=impl: impl(*args, **kwargs)
        return impl
    return deco


def op_rule(*names: str) -> Callable:
    """Register `rule(out, needs, *args) -> vjp` for the traceable kconvert.ops functions `names` (the args in
    the function's parameter order, defaults applied)."""
    def deco(rule):
        for n in names:
            OP_RULES[n] = rule
        return rule
    return deco


_UINT = {4: np.uint32, 8: np.uint64}


def masked(mask, g, keep: bool = True) -> np.ndarray:
    """`np.where(mask, g, 0)` (or `np.where(mask, 0, g)` with keep=False), bit for bit, as a branch-free AND of
    the float's bits: np.where's loop is ~20x slower on a random mask (ReLU's). Falls back to np.where unless
    `g` is a float32/float64 array at least as large as the mask."""
    g = np.asarray(g)
    mask = np.asarray(mask)
    if not isinstance(g, np.ndarray) or g.dtype.kind != "f" or g.dtype.itemsize not in _UINT or \
            np.broadcast_shapes(mask.shape, g.shape) != g.shape:  # a device array: its own where
        return np.where(mask, g, 0) if keep else np.where(mask, 0, g)
    ut = _UINT[g.dtype.itemsize]
    if mask.shape != g.shape or not (mask.flags.c_contiguous and g.flags.c_contiguous):
        bits = np.broadcast_to(mask, g.shape).astype(ut)  # 1 where mask
        _mask_bits(bits, g.view(ut), keep)
        return bits.view(g.dtype)
    bits = np.empty(g.shape, ut)
    flat_bits, flat_mask, flat_g = bits.reshape(-1), mask.reshape(-1), g.reshape(-1).view(ut)

    def part(sl: slice) -> None:
        np.copyto(flat_bits[sl], flat_mask[sl])
        _mask_bits(flat_bits[sl], flat_g[sl], keep)

    parallel.split(part, bits.size, bits.nbytes * 2)
    return bits.view(g.dtype)


def _mask_bits(bits: np.ndarray, g_bits: np.ndarray, keep: bool) -> None:
    """`bits` (1 where the mask holds) becomes g's bits where it held (keep) or where it did not."""
    if keep:
        np.negative(bits, out=bits)  # all ones where mask, zeros elsewhere
    else:
        np.subtract(bits, 1, out=bits)  # zeros where mask, all ones elsewhere
    np.bitwise_and(bits, g_bits, out=bits)


def unbroadcast_to(g: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum a broadcast gradient back to `shape`."""
    g = np.asarray(g)
    if g.shape == tuple(shape):
        return g
    while g.ndim > len(shape):
        g = g.sum(axis=0)
    axes = tuple(i for i, s in enumerate(shape) if s == 1 and g.shape[i] != 1)
    return g.sum(axis=axes, keepdims=True) if axes else g


def normalize_axes(axis, ndim: int) -> tuple:
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if np.ndim(axis) == 0 else tuple(axis)
    return tuple(sorted(int(a) % ndim for a in axes)) if ndim else ()


from . import grad_rules_arrays, grad_rules_elementwise, grad_rules_ops  # noqa: E402,F401 - fill the tables
