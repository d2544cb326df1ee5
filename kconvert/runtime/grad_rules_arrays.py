"""Gradient rules of numpy's array functions: shapes and axes, joining and splitting, indexing, reductions,
products (dot, tensordot, einsum), and the constant makers (zeros_like, ...) whose results can still be written
into with tracked values."""

from __future__ import annotations

import string

import numpy as np

from ..ops import array_module
from .autodiff import AutodiffError
from .grad_rules import composite_rule, function_rule, masked, normalize_axes, unbroadcast_to

_NV = np._NoValue

# ---------------------------------------------------------------------------------------------- shapes


@function_rule(np.reshape, np.ravel, np.squeeze, np.expand_dims, np.atleast_1d, np.atleast_2d, np.atleast_3d)
def _reshape(out, needs, a, *args, **kwargs):
    shape = np.shape(a)
    return lambda g: (np.reshape(g, shape),) + (None,) * len(args)


@function_rule(np.copy, np.ascontiguousarray, np.asfortranarray)
def _identity(out, needs, a, *args, **kwargs):
    return lambda g: (g,) + (None,) * len(args)


@function_rule(getattr(np, "astype", None))
def _astype(out, needs, x, dtype, **kwargs):
    src = np.asarray(x).dtype
    if np.dtype(dtype).kind not in "fc" or src.kind not in "fc":
        return None
    return lambda g: (g.astype(src, copy=False), None)


@function_rule(np.transpose)
def _transpose(out, needs, a, axes=None):
    inv = None if axes is None else tuple(int(i) for i in np.argsort([int(i) % np.ndim(a) for i in axes]))
    return lambda g: (np.transpose(g, inv), None)


@function_rule(np.moveaxis)
def _moveaxis(out, needs, a, source, destination):
    return lambda g: (np.moveaxis(g, destination, source), None, None)


@function_rule(np.swapaxes)
def _swapaxes(out, needs, a, axis1, axis2):
    return lambda g: (np.swapaxes(g, axis1, axis2), None, None)


@function_rule(np.broadcast_to)
def _broadcast_to(out, needs, array, shape, subok=False):
    src = np.shape(array)
    return lambda g: (unbroadcast_to(g, src), None)


@function_rule(np.flip)
def _flip(out, needs, m, axis=None):
    return lambda g: (np.flip(g, axis),)


@function_rule(np.roll)
def _roll(out, needs, a, shift, axis=None):
    neg = np.negative(shift)
    return lambda g: (np.roll(g, neg, axis), None)


@function_rule(np.tile)
def _tile(out, needs, a, reps):
    shape = np.shape(a)

    def vjp(g):
        reps_t = (reps,) if np.ndim(reps) == 0 else tuple(reps)
        full = (1,) * (g.ndim - len(shape)) + tuple(shape)
        reps_t = (1,) * (g.ndim - len(reps_t)) + reps_t
        split = [d for r, s in zip(reps_t, full) for d in (r, s)]
        return np.reshape(g.reshape(split).sum(axis=tuple(range(0, 2 * g.ndim, 2))), shape), None
    return vjp


@function_rule(np.repeat)
def _repeat(out, needs, a, repeats, axis=None):
    shape = np.shape(a)

    def vjp(g):
        ax = 0 if axis is None else int(axis) % len(shape)
        n = 1 if axis is None and not shape else (int(np.prod(shape)) if axis is None else shape[ax])
        if np.ndim(repeats) == 0 or np.size(repeats) == 1:
            r = int(np.reshape(repeats, -1)[0])
            gs = g.shape[:ax] + (n, r) + g.shape[ax + 1:]
            ga = g.reshape(gs).sum(axis=ax + 1)
        else:
            gm = np.moveaxis(g.reshape(-1) if axis is None else g, ax, 0)
            ga = np.zeros((n,) + gm.shape[1:], g.dtype, like=array_module.like(g))
            array_module.add_at(ga, np.repeat(np.arange(n), array_module.to_host(repeats)), gm)
            ga = np.moveaxis(ga, 0, ax)
        return np.reshape(ga, shape), None
    return vjp


@function_rule(np.tril)
def _tril(out, needs, m, k=0):
    return lambda g: (np.tril(g, k), None)


@function_rule(np.triu)
def _triu(out, needs, m, k=0):
    return lambda g: (np.triu(g, k), None)


# ---------------------------------------------------------------------------------------------- join / split


def _axis_sizes(arrays, axis):
    return [np.shape(x)[axis] for x in arrays]


@function_rule(np.concatenate)
def _concatenate(out, needs, arrays, axis=0, **kwargs):
    if axis is None:
        shapes = [np.shape(x) for x in arrays]

        def vjp_flat(g):
            cuts = np.cumsum([int(np.prod(s)) for s in shapes])[:-1]
            return ([p.reshape(s) for p, s in zip(np.split(g, cuts.tolist()), shapes)],)
        return vjp_flat
    cuts = np.cumsum(_axis_sizes(arrays, axis))[:-1]
    return lambda g: (np.split(g, cuts.tolist(), axis=axis),)


@function_rule(np.stack)
def _stack(out, needs, arrays, axis=0, **kwargs):
    n = len(arrays)
    return lambda g: ([np.take(g, i, axis=axis) for i in range(n)],)


@composite_rule(np.hstack)
def _hstack(tup, **kwargs):
    arrs = [np.atleast_1d(a) for a in tup]
    return np.concatenate(arrs, axis=0 if arrs and arrs[0].ndim == 1 else 1)


@composite_rule(np.vstack)
def _vstack(tup, **kwargs):
    return np.concatenate([np.atleast_2d(a) for a in tup], axis=0)


def _split_points(size: int, sections, even: bool) -> list[int]:
    if np.ndim(sections) > 0:
        return [int(i) for i in sections]
    n = int(sections)
    if even and size % n:
        raise ValueError("array split does not result in an equal division")
    each, extra = divmod(size, n)
    sizes = [each + 1] * extra + [each] * (n - extra)
    return [int(v) for v in np.cumsum(sizes)[:-1]]


@function_rule(np.split, np.array_split)
def _split(out, needs, ary, indices_or_sections, axis=0):
    """numpy splits in one call; piece i (numpy's `ary[p_i:p_i+1]` along the axis, its own tracked output) sends
    its gradient into that slice of a zero array."""
    shape, dtype = np.shape(ary), np.asarray(ary).dtype
    ax = int(axis) % len(shape)
    points = [0, *_split_points(shape[ax], indices_or_sections, False), shape[ax]]
    rest = (None,) * (len(needs) - 1)

    def piece_vjp(lo, hi):
        def vjp(g):
            full = np.zeros(shape, dtype, like=array_module.like(g))
            full[(slice(None),) * ax + (slice(lo, hi),)] = g
            return (full, *rest)
        return vjp
    return [piece_vjp(lo, hi) for lo, hi in zip(points[:-1], points[1:])]


@composite_rule(np.hsplit)
def _hsplit(ary, indices_or_sections):
    return np.split(ary, indices_or_sections, axis=1 if ary.ndim > 1 else 0)


# ---------------------------------------------------------------------------------------------- indexing


@function_rule(np.take)
def _take(out, needs, a, indices, axis=None, mode="raise"):
    shape, dtype = np.shape(a), np.asarray(a).dtype

    def vjp(g):
        idx = np.asarray(indices)
        if axis is None:
            full = np.zeros(int(np.prod(shape)), dtype, like=array_module.like(g))
            array_module.add_at(full, idx.ravel(), np.reshape(g, -1))
            return full.reshape(shape), None
        ax = int(axis) % len(shape)
        full = np.zeros(shape, dtype, like=array_module.like(g))
        moved = np.moveaxis(full, ax, 0)
        gm = np.moveaxis(np.reshape(g, shape[:ax] + idx.shape + shape[ax + 1:]), list(range(ax, ax + idx.ndim)),
                         list(range(idx.ndim)))
        array_module.add_at(moved, idx, gm)
        return full, None
    return vjp


@function_rule(np.take_along_axis)
def _take_along_axis(out, needs, arr, indices, axis=-1):
    shape, dtype = np.shape(arr), np.asarray(arr).dtype

    def vjp(g):
        full = np.zeros(shape, dtype, like=array_module.like(g))
        if axis is None:
            array_module.add_at(full.reshape(-1), np.asarray(indices).ravel(), g.ravel())
            return full, None
        ax = int(axis) % len(shape)
        grids = [array_module.to_device(i, array_module.module_of(g)) for i in np.indices(g.shape, sparse=True)]
        grids[ax] = np.broadcast_to(indices, g.shape)
        array_module.add_at(full, tuple(grids), g)
        return full, None
    return vjp


@function_rule(np.where)
def _where(out, needs, condition, x=None, y=None):
    cond = np.asarray(condition).astype(bool)
    return lambda g: (None, unbroadcast_to(masked(cond, g), np.shape(x)) if needs[1] else None,
                      unbroadcast_to(masked(cond, g, keep=False), np.shape(y)) if needs[2] else None)


@function_rule(np.clip)
def _clip(out, needs, a, a_min=_NV, a_max=_NV, **kwargs):
    lo = kwargs.get("min", a_min)
    hi = kwargs.get("max", a_max)
    if needs[1:] and any(needs[1:]):
        raise AutodiffError("numpy.clip with tracked bounds")

    def vjp(g):
        inside = array_module.full(np.shape(a), True, bool, like=a)
        if lo is not _NV and lo is not None:
            inside &= np.greater_equal(a, lo)
        if hi is not _NV and hi is not None:
            inside &= np.less_equal(a, hi)
        return (masked(inside, g).astype(g.dtype, copy=False),) + (None,) * (len(needs) - 1)
    return vjp


@function_rule(np.pad)
def _pad(out, needs, array, pad_width, mode="constant", **kwargs):
    if mode != "constant":
        raise AutodiffError(f"numpy.pad(mode={mode!r}) has no gradient rule (only mode='constant')")
    ndim = np.ndim(array)
    widths = np.broadcast_to(np.asarray(pad_width, dtype=np.int64), (ndim, 2))
    crop = tuple(slice(int(lo), s - int(hi)) for (lo, hi), s in zip(widths, np.shape(out)))
    return lambda g: (g[crop], None)


# ---------------------------------------------------------------------------------------------- reductions


def _expand(g, axes, keepdims) -> np.ndarray:
    return g if keepdims else np.expand_dims(g, axes) if axes else g


def _keep(keepdims) -> bool:
    return False if keepdims is _NV else bool(keepdims)


@function_rule(np.sum)
def _sum(out, needs, a, axis=None, dtype=None, keepdims=_NV, initial=_NV, where=_NV):
    if where is not _NV and where is not True:
        raise AutodiffError("numpy.sum with where= on a tracked tensor")
    shape = np.shape(a)
    axes = normalize_axes(axis, len(shape))
    return lambda g: (np.broadcast_to(_expand(g, axes, _keep(keepdims)), shape),) + (None,) * 2


@function_rule(np.mean)
def _mean(out, needs, a, axis=None, dtype=None, keepdims=_NV, where=_NV):
    if where is not _NV and where is not True:
        raise AutodiffError("numpy.mean with where= on a tracked tensor")
    shape = np.shape(a)
    axes = normalize_axes(axis, len(shape))
    count = int(np.prod([shape[i] for i in axes])) if axes else 1
    return lambda g: (np.broadcast_to(_expand(g, axes, _keep(keepdims)) / count, shape),) + (None,) * 2


@function_rule(np.max, np.amax, np.min, np.amin)
def _extreme(out, needs, a, axis=None, keepdims=_NV, initial=_NV, where=_NV):
    """Ties share the gradient equally, as TensorFlow's reduce_max / reduce_min."""
    if where is not _NV and where is not True:
        raise AutodiffError("numpy.max/min with where= on a tracked tensor")
    a = np.asarray(a)
    axes = normalize_axes(axis, a.ndim)
    keep = _keep(keepdims)

    def vjp(g):
        hit = a == _expand(np.asarray(out), axes, keep)
        share = hit / np.sum(hit, axis=axes, keepdims=True)
        return (share * _expand(g, axes, keep),) + (None,) * 2
    return vjp


@function_rule(np.prod)
def _prod(out, needs, a, axis=None, dtype=None, keepdims=_NV, initial=_NV, where=_NV):
    a = np.asarray(a)
    axes = normalize_axes(axis, a.ndim)
    keep = _keep(keepdims)

    def vjp(g):
        with np.errstate(divide="ignore", invalid="ignore"):
            return (_expand(g * np.asarray(out), axes, keep) / a,) + (None,) * 2
    return vjp


def _variance(std: bool):
    def rule(out, needs, a, axis=None, dtype=None, ddof=0, keepdims=_NV, **kwargs):
        if kwargs.get("where", _NV) is not _NV or kwargs.get("mean", _NV) is not _NV:
            raise AutodiffError("numpy.var/std with where= or mean= on a tracked tensor")
        ddof = kwargs.get("correction", ddof)
        a = np.asarray(a)
        axes = normalize_axes(axis, a.ndim)
        keep = _keep(keepdims)
        n = int(np.prod([a.shape[i] for i in axes])) if axes else 1

        def vjp(g):
            d = a - np.mean(a, axis=axes, keepdims=True)
            gv = _expand(g, axes, keep) * (2.0 / (n - ddof))
            if std:
                gv = gv / (2.0 * _expand(np.asarray(out), axes, keep))
            return (gv * d,) + (None,) * 3
        return vjp
    return rule


function_rule(np.var)(_variance(False))
function_rule(np.std)(_variance(True))


@function_rule(np.cumsum)
def _cumsum(out, needs, a, axis=None, dtype=None):
    shape = np.shape(a)

    def vjp(g):
        ax = 0 if axis is None else axis
        r = np.flip(np.cumsum(np.flip(g, ax), axis=ax), ax)
        return np.reshape(r, shape), None, None
    return vjp


# ---------------------------------------------------------------------------------------------- products


def _tensordot_axes(axes, na: int, nb: int) -> tuple[list, list]:
    if np.ndim(axes) == 0:
        k = int(axes)
        return list(range(na - k, na)), list(range(k))
    a_ax, b_ax = axes
    a_ax = [a_ax] if np.ndim(a_ax) == 0 else list(a_ax)
    b_ax = [b_ax] if np.ndim(b_ax) == 0 else list(b_ax)
    return [int(i) % na for i in a_ax], [int(i) % nb for i in b_ax]


def tensordot_vjp(a, b, axes, needs):
    a, b = np.asarray(a), np.asarray(b)
    a_ax, b_ax = _tensordot_axes(axes, a.ndim, b.ndim)
    a_free = [i for i in range(a.ndim) if i not in a_ax]
    b_free = [i for i in range(b.ndim) if i not in b_ax]

    def vjp(g):
        ga = gb = None
        if needs[0]:
            t = np.tensordot(g, b, axes=(list(range(len(a_free), g.ndim)), b_free))
            order = a_free + [a_ax[b_ax.index(j)] for j in sorted(b_ax)]
            ga = np.transpose(t, np.argsort(order))
        if needs[1]:
            t = np.tensordot(a, g, axes=(a_free, list(range(len(a_free)))))
            order = [b_ax[a_ax.index(i)] for i in sorted(a_ax)] + b_free
            gb = np.transpose(t, np.argsort(order))
        return ga, gb
    return vjp


@function_rule(np.tensordot)
def _tensordot(out, needs, a, b, axes=2):
    vjp = tensordot_vjp(a, b, axes, needs)
    return lambda g: (*vjp(g), None)


@function_rule(np.dot)
def _dot(out, needs, a, b):
    na, nb = np.ndim(a), np.ndim(b)
    if na == 0 or nb == 0:
        return lambda g: (unbroadcast_to(g * b, np.shape(a)) if needs[0] else None,
                          unbroadcast_to(g * a, np.shape(b)) if needs[1] else None)
    return tensordot_vjp(a, b, ([na - 1], [max(nb - 2, 0)]), needs)


@function_rule(np.outer)
def _outer(out, needs, a, b):
    a, b = np.ravel(a), np.ravel(b)
    return lambda g: ((g @ b) if needs[0] else None, (a @ g) if needs[1] else None)


def _parse_einsum(subscripts: str, shapes: list[tuple]) -> tuple[list[str], str]:
    """Operand and output subscripts with letters only ('...' replaced by fresh letters, implicit output made
    explicit as numpy does)."""
    subscripts = subscripts.replace(" ", "")
    lhs, arrow, rhs = subscripts.partition("->")
    ins = lhs.split(",")
    used = set(subscripts)
    fresh = [c for c in string.ascii_letters if c not in used]
    n_ell = max([len(s) - (len(sub) - 3) for sub, s in zip(ins, shapes) if "..." in sub], default=0)
    ell = "".join(fresh[:n_ell])
    ops = []
    for sub, s in zip(ins, shapes):
        if "..." in sub:
            k = len(s) - (len(sub) - 3)
            sub = sub.replace("...", ell[n_ell - k:] if k else "")
        ops.append(sub)
    if arrow:
        out = rhs.replace("...", ell)
    else:
        letters = "".join(ops)
        out = ell + "".join(sorted(c for c in set(letters) if letters.count(c) == 1 and c not in ell))
    return ops, out


@function_rule(np.einsum)
def _einsum(out, needs, subscripts, *operands, **kwargs):
    if not isinstance(subscripts, str):
        raise AutodiffError("numpy.einsum in its sublist form on a tracked tensor")
    shapes = [np.shape(o) for o in operands]
    ins, out_sub = _parse_einsum(subscripts, shapes)
    sizes = {c: d for sub, s in zip(ins, shapes) for c, d in zip(sub, s) if d != 1}
    for sub, s in zip(ins, shapes):
        if len(set(sub)) != len(sub):
            raise AutodiffError(f"numpy.einsum '{subscripts}' (a repeated index in one operand) on a tracked tensor")
        if any(d == 1 and sizes.get(c, 1) != 1 for c, d in zip(sub, s)):
            raise AutodiffError(f"numpy.einsum '{subscripts}' broadcasting a size-1 axis on a tracked tensor")

    def vjp(g):
        grads = [None]
        for k, (sub, shape) in enumerate(zip(ins, shapes)):
            if not needs[k + 1]:
                grads.append(None)
                continue
            others = [(s, o) for j, (s, o) in enumerate(zip(ins, operands)) if j != k]
            avail = set(out_sub).union(*[set(s) for s, _ in others])
            target = "".join(c for c in sub if c in avail)
            eq = ",".join([out_sub] + [s for s, _ in others]) + "->" + target
            gk = np.einsum(eq, g, *[o for _, o in others], optimize=True)
            if target != sub:  # indices summed in this operand only: the gradient is constant along them
                gk = np.broadcast_to(np.expand_dims(gk, [i for i, c in enumerate(sub) if c not in avail]), shape)
            grads.append(gk)
        return tuple(grads)
    return vjp


# ---------------------------------------------------------------------------------------------- constants


@function_rule(np.zeros_like, np.ones_like, np.empty_like, np.full_like)
def _constant(out, needs, *args, **kwargs):
    return None  # a constant result (a Var, so that tracked values can be written into it)
