"""The `__array_function__` handlers (np.* on Syms), indexing, and the kconvert.ops hooks."""

from __future__ import annotations

import operator
import string
from collections.abc import Callable

import numpy as np
from numpy.lib.array_utils import normalize_axis_index, normalize_axis_tuple

from ...ops.conv import Conv, ConvTranspose
from ...ops.pooling import AvgPool, MaxPool
from ...ops.resize import Resize
from .trace_core import (
    _NV,
    HOOKS,
    INT64_MAX,
    INT64_MIN,
    PROTOCOL,
    Sym,
    TraceError,
    _alias,
    _as,
    _asarray,
    _axes,
    _cast,
    _emits,
    _implements,
    _lift,
    _name,
    _new,
    _probes,
    _tape,
)
from .trace_ufuncs import _clip, _reduce

# ---------------------------------------------------------------------------------------------- numpy functions


@_implements(np.shape, np.ndim, np.size, np.result_type, np.min_scalar_type, np.can_cast)
def _f_metadata(probe, *args, **kwargs):
    return probe


@_implements(np.may_share_memory, np.shares_memory, np.iscomplexobj)
def _f_false(probe, *args, **kwargs):
    return False


@_implements(np.isrealobj)
def _f_true(probe, *args, **kwargs):
    return True


@_implements(np.copy)
def _f_copy(probe, a, *args, **kwargs):
    return _alias(_lift(_tape(a), a))


@_implements(getattr(np, "astype", None))
def _f_astype(probe, x, dtype, /, *, copy=True, **kwargs):
    return _alias(_cast(x, probe.dtype))


def _reduction(kind: str):
    def handler(probe, a, axis=None, *args, keepdims=_NV, initial=_NV, where=_NV, dtype=None, **kwargs):
        if args and kind in ("sum", "mean", "prod"):
            dtype = args[0]
        return _reduce(kind, a, axis, keepdims, dtype, initial, where)
    return handler


for _kind, _funcs in {"sum": (np.sum,), "mean": (np.mean,), "prod": (np.prod,), "max": (np.max, np.amax),
                      "min": (np.min, np.amin), "any": (np.any,), "all": (np.all,)}.items():
    _implements(*_funcs)(_reduction(_kind))


def _variance(std: bool):
    def handler(probe, a, axis=None, dtype=None, out=None, ddof=0, keepdims=_NV, *, where=_NV, mean=_NV,
                correction=_NV):
        if where is not _NV or mean is not _NV:
            raise TraceError("numpy var/std with where= or mean=")
        ddof = correction if correction is not _NV else ddof
        x = _lift(_tape(a), a)
        x = _cast(x, dtype if dtype is not None else (x.dtype if x.dtype.kind == "f" else np.float64))
        d = x - np.mean(x, axis=axis, keepdims=True)
        v = np.mean(d * d, axis=axis, keepdims=False if keepdims is _NV else bool(keepdims))
        if ddof:
            n = int(np.prod([x.shape[i] for i in _axes(axis, x.ndim)]))
            v = v * _asarray(n / (n - ddof), x.dtype)
        return _as(np.sqrt(v) if std else v, probe)
    return handler


_implements(np.var)(_variance(std=False))
_implements(np.std)(_variance(std=True))


def _arg_extreme(op_type: str):
    def handler(probe, a, axis=None, out=None, *, keepdims=_NV):
        x = _lift(_tape(a), a)
        if axis is None:
            x, axis = np.ravel(x), 0
        attrs = {"axis": normalize_axis_index(axis, x.ndim), "keepdims": int(keepdims is not _NV and bool(keepdims)),
                 "select_last_index": 0}
        return _as(_new(x.tape, op_type, [x.name], probe, **attrs), probe)
    return handler


_implements(np.argmax)(_arg_extreme("ArgMax"))
_implements(np.argmin)(_arg_extreme("ArgMin"))


@_implements(np.reshape)
def _f_reshape(probe, a, /, shape=None, order="C", *, newshape=None, copy=None):
    shape = newshape if shape is None else shape
    return _reshape_to(_lift(_tape(a), a), shape, probe)


def _reshape_to(x: Sym, shape, probe) -> Sym:
    target = [operator.index(s) for s in (shape if isinstance(shape, (tuple, list)) else (shape,))]
    if 0 in target:
        raise TraceError("reshape to a zero-size dimension")
    if x.shape == probe.shape:
        return _as(_alias(x), probe)
    return _as(_new(x.tape, "Reshape", [x.name, x.tape.ints(target, "shape")], probe), probe)


@_implements(np.ravel)
def _f_ravel(probe, a, order="C"):
    return _reshape_to(_lift(_tape(a), a), (-1,), probe)


def _permute(x: Sym, perm, probe) -> Sym:
    perm = [int(p) for p in perm]
    if perm == list(range(x.ndim)):
        return _as(_alias(x), probe)
    return _as(_new(x.tape, "Transpose", [x.name], probe, perm=perm), probe)


@_implements(np.transpose, getattr(np, "permute_dims", None))
def _f_transpose(probe, a, axes=None):
    x = _lift(_tape(a), a)
    perm = list(range(x.ndim))[::-1] if axes is None else [normalize_axis_index(int(p), x.ndim) for p in axes]
    return _permute(x, perm, probe)


@_implements(np.moveaxis)
def _f_moveaxis(probe, a, source, destination):
    x = _lift(_tape(a), a)
    src = normalize_axis_tuple(source, x.ndim)
    dst = normalize_axis_tuple(destination, x.ndim)
    order = [n for n in range(x.ndim) if n not in src]
    for d, s in sorted(zip(dst, src)):
        order.insert(d, s)
    return _permute(x, order, probe)


@_implements(np.swapaxes)
def _f_swapaxes(probe, a, axis1, axis2):
    x = _lift(_tape(a), a)
    perm = list(range(x.ndim))
    i, j = normalize_axis_index(axis1, x.ndim), normalize_axis_index(axis2, x.ndim)
    perm[i], perm[j] = perm[j], perm[i]
    return _permute(x, perm, probe)


@_implements(np.expand_dims)
def _f_expand_dims(probe, a, axis):
    x = _lift(_tape(a), a)
    axes = normalize_axis_tuple(axis, probe.ndim)
    return _as(_new(x.tape, "Unsqueeze", [x.name, x.tape.ints(sorted(axes), "axes")], probe), probe)


@_implements(np.squeeze)
def _f_squeeze(probe, a, axis=None):
    x = _lift(_tape(a), a)
    axes = [i for i, d in enumerate(x.shape) if d == 1] if axis is None else sorted(normalize_axis_tuple(axis,
                                                                                                         x.ndim))
    if not axes:
        return _as(_alias(x), probe)
    return _as(_new(x.tape, "Squeeze", [x.name, x.tape.ints(axes, "axes")], probe), probe)


@_implements(np.broadcast_to)
def _f_broadcast_to(probe, array, shape, subok=False):
    x = _lift(_tape(array), array)
    if x.shape == probe.shape:
        return _as(_alias(x), probe)
    return _as(_new(x.tape, "Expand", [x.name, x.tape.ints(probe.shape, "shape")], probe), probe)


@_implements(np.broadcast_arrays)
def _f_broadcast_arrays(probe, *args, subok=False):
    t = _tape(args)
    return [_f_broadcast_to(p, _lift(t, a), p.shape) for p, a in zip(probe, args)]


@_implements(np.concatenate)
def _f_concatenate(probe, arrays, axis=0, out=None, *, dtype=None, casting=None):
    t = _tape(arrays)
    arrays = list(arrays)
    if axis is None:
        arrays, axis = [np.ravel(_lift(t, a)) for a in arrays], 0
    names = [_name(t, a, probe.dtype) for a in arrays]
    if len(names) == 1:
        return _as(_alias(_lift(t, arrays[0])), probe)
    return _as(_new(t, "Concat", names, probe, axis=normalize_axis_index(axis, probe.ndim)), probe)


@_implements(np.stack)
def _f_stack(probe, arrays, axis=0, out=None, *, dtype=None, casting=None):
    t = _tape(arrays)
    ax = normalize_axis_index(axis, probe.ndim)
    parts = [np.expand_dims(_lift(t, a, probe.dtype), ax) for a in arrays]
    return _as(parts[0] if len(parts) == 1 else np.concatenate(parts, axis=ax), probe)


@_implements(np.hstack, np.vstack)
def _f_hvstack(probe, tup, *, dtype=None, casting=None):
    t = _tape(tup)
    parts = [_lift(t, a, probe.dtype) for a in tup]
    if any(p.ndim != probe.ndim for p in parts):
        raise TraceError("hstack/vstack of tensors of different ranks")
    axis = 1 if probe.ndim > 1 and any(p.shape[0] == probe.shape[0] for p in parts) and \
        sum(p.shape[0] for p in parts) != probe.shape[0] else 0
    return _as(np.concatenate(parts, axis=axis), probe)


@_implements(np.split, np.array_split)
def _f_split(probe, ary, indices_or_sections, axis=0):
    x = _lift(_tape(ary), ary)
    ax = normalize_axis_index(axis, x.ndim)
    sizes = [p.shape[ax] for p in probe]
    if 0 in sizes:
        raise TraceError("split into empty parts")
    if len(sizes) == 1:
        return [_as(_alias(x), probe[0])]
    names = x.tape.node("Split", [x.name, x.tape.ints(sizes, "split")], n_outputs=len(sizes), axis=ax)
    return [Sym(x.tape, n, p) for n, p in zip(names, probe)]


@_implements(np.where)
def _f_where(probe, condition, x=_NV, y=_NV):
    if x is _NV or y is _NV:
        raise TraceError("numpy.where with only a condition (its output size depends on the values)")
    t = _tape(condition, x, y)
    names = [_name(t, condition, np.bool_), _name(t, x, probe.dtype), _name(t, y, probe.dtype)]
    return _as(_new(t, "Where", names, probe), probe)



@_implements(np.clip)
def _f_clip(probe, a, a_min=_NV, a_max=_NV, out=None, *, min=_NV, max=_NV, **kwargs):  # noqa: A002
    lo = a_min if a_min is not _NV else (None if min is _NV else min)
    hi = a_max if a_max is not _NV else (None if max is _NV else max)
    return _clip(probe, a, lo, hi)


@_implements(np.round, np.around)
def _f_round(probe, a, decimals=0, out=None):
    x = _lift(_tape(a), a)
    if x.dtype.kind != "f":
        return _as(_alias(x), probe)
    if decimals == 0:
        return _as(_new(x.tape, "Round", [x.name], probe), probe)
    scale = _asarray(10.0 ** decimals, x.dtype)
    return _as(np.rint(x * scale) / scale, probe)


@_implements(np.tile)
def _f_tile(probe, A, reps):
    x = _lift(_tape(A), A)
    reps = tuple(operator.index(r) for r in np.atleast_1d(_asarray(reps)).tolist())
    if len(reps) < x.ndim:
        reps = (1,) * (x.ndim - len(reps)) + reps
    elif len(reps) > x.ndim:
        x = np.expand_dims(x, tuple(range(len(reps) - x.ndim)))
    if all(r == 1 for r in reps):
        return _as(_alias(x), probe)
    return _as(_new(x.tape, "Tile", [x.name, x.tape.ints(reps, "repeats")], probe), probe)


@_implements(np.repeat)
def _f_repeat(probe, a, repeats, axis=None):
    x = _lift(_tape(a), a)
    if axis is None:
        x, axis = np.ravel(x), 0
    ax = normalize_axis_index(axis, x.ndim)
    reps = _asarray(repeats)
    if reps.size == 1:
        r = int(reps.reshape(-1)[0])
        tiled = np.tile(np.expand_dims(x, ax + 1), (1,) * (ax + 1) + (r,) + (1,) * (x.ndim - ax - 1))
        return _reshape_to(tiled, probe.shape, probe)
    index = np.repeat(np.arange(x.shape[ax]), reps)
    return _as(_new(x.tape, "Gather", [x.name, x.tape.ints(index, "index")], probe, axis=ax), probe)


@_implements(np.pad)
def _f_pad(probe, array, pad_width, mode="constant", **kwargs):
    x = _lift(_tape(array), array)
    widths = np.broadcast_to(_asarray(pad_width, dtype=np.int64), (x.ndim, 2))
    if not widths.any():
        return _as(_alias(x), probe)
    pads = x.tape.ints(list(widths[:, 0]) + list(widths[:, 1]), "pads")
    if mode == "constant":
        value = kwargs.get("constant_values", 0)
        if np.ndim(value) != 0:
            raise TraceError("numpy.pad with per-axis constant values")
        return _as(_new(x.tape, "Pad", [x.name, pads, _name(x.tape, value, x.dtype)], probe, mode="constant"),
                   probe)
    if mode in ("reflect", "edge") and not kwargs:
        return _as(_new(x.tape, "Pad", [x.name, pads], probe, mode=mode), probe)
    raise TraceError(f"numpy.pad with mode '{mode}'")


@_implements(np.flip)
def _f_flip(probe, m, axis=None):
    x = _lift(_tape(m), m)
    axes = _axes(axis, x.ndim)
    t = x.tape
    n = len(axes)
    return _as(_new(t, "Slice", [x.name, t.ints([-1] * n), t.ints([INT64_MIN] * n), t.ints(axes), t.ints([-1] * n)],
                    probe), probe)


@_implements(np.cumsum)
def _f_cumsum(probe, a, axis=None, dtype=None, out=None):
    x = _lift(_tape(a), a)
    if axis is None:
        x, axis = np.ravel(x), 0
    x = _cast(x, probe.dtype)
    ax = normalize_axis_index(axis, x.ndim)
    return _as(_new(x.tape, "CumSum", [x.name, x.tape.array(_asarray(ax, np.int64), "axis")], probe), probe)


@_implements(np.sort)
def _f_sort(probe, a, axis=-1, kind=None, order=None, *, stable=None):
    x = _lift(_tape(a), a)
    if axis is None:
        x, axis = np.ravel(x), 0
    ax = normalize_axis_index(axis, x.ndim)
    values, _ = x.tape.node("TopK", [x.name, x.tape.ints([x.shape[ax]], "k")], n_outputs=2, axis=ax, largest=0,
                            sorted=1)
    return _as(Sym(x.tape, values, probe), probe)


@_implements(np.take)
def _f_take(probe, a, indices, axis=None, out=None, mode="raise"):
    t = _tape(a, indices)
    x = _lift(t, a)
    if axis is None:
        x, axis = np.ravel(x), 0
    ax = normalize_axis_index(axis, x.ndim)
    return _as(_new(t, "Gather", [x.name, _name(t, indices, np.int64)], probe, axis=ax), probe)


@_implements(np.take_along_axis)
def _f_take_along_axis(probe, arr, indices, axis=-1):
    t = _tape(arr, indices)
    x, idx = _lift(t, arr), _lift(t, indices, np.int64)
    if axis is None or idx.shape != probe.shape or x.ndim != idx.ndim:
        raise TraceError("numpy.take_along_axis with broadcast indices")
    ax = normalize_axis_index(axis, x.ndim)
    if any(x.shape[i] != idx.shape[i] for i in range(x.ndim) if i != ax):
        raise TraceError("numpy.take_along_axis with broadcast indices")
    return _as(_new(t, "GatherElements", [x.name, idx.name], probe, axis=ax), probe)


def _like(value):
    def handler(probe, a, *args, dtype=None, shape=None, **kwargs):
        if shape is not None:
            raise TraceError("numpy *_like with shape=")
        fill = args[0] if value is None else value
        x = _lift(_tape(a), a)
        t = x.tape
        shape_of = _new(t, "Shape", [x.name], _asarray(x.shape, np.int64))
        return _as(_new(t, "Expand", [_name(t, fill, probe.dtype), shape_of.name], probe), probe)
    return handler


_implements(np.zeros_like, np.empty_like)(_like(0))
_implements(np.ones_like)(_like(1))
_implements(np.full_like)(_like(None))


@_implements(np.einsum)
def _f_einsum(probe, subscripts, *operands, out=None, dtype=None, order="K", casting="safe", optimize=False):
    if not isinstance(subscripts, str):
        raise TraceError("numpy.einsum with operand lists")
    eq = subscripts.replace(" ", "")
    if "->" not in eq:  # numpy's implicit output: the labels seen once, in alphabetical order
        labels = [c for c in eq if c.isalpha()]
        eq += "->" + ("..." if "..." in eq else "") + "".join(sorted(c for c in set(labels) if labels.count(c) == 1))
    t = _tape(operands)
    return _as(_new(t, "Einsum", [_name(t, o, probe.dtype) for o in operands], probe, equation=eq), probe)


@_implements(np.tensordot)
def _f_tensordot(probe, a, b, axes=2):
    t = _tape(a, b)
    x, y = _lift(t, a), _lift(t, b)
    if isinstance(axes, (int, np.integer)):
        ax_a, ax_b = list(range(x.ndim - int(axes), x.ndim)), list(range(int(axes)))
    else:
        ax_a, ax_b = ([int(v)] if np.ndim(v) == 0 else [int(i) for i in v] for v in axes)
    ax_a = [normalize_axis_index(i, x.ndim) for i in ax_a]
    ax_b = [normalize_axis_index(i, y.ndim) for i in ax_b]
    letters = iter(string.ascii_letters)
    sa = [next(letters) for _ in range(x.ndim)]
    sb = [next(letters) for _ in range(y.ndim)]
    for i, j in zip(ax_a, ax_b):
        sb[j] = sa[i]
    out = [c for i, c in enumerate(sa) if i not in ax_a] + [c for j, c in enumerate(sb) if j not in ax_b]
    return _as(np.einsum(f"{''.join(sa)},{''.join(sb)}->{''.join(out)}", x, y), probe)


@_implements(np.dot)
def _f_dot(probe, a, b, out=None):
    t = _tape(a, b)
    x, y = _lift(t, a), _lift(t, b)
    if x.ndim == 0 or y.ndim == 0:
        return _as(np.multiply(x, y), probe)
    if y.ndim == 1 or (x.ndim <= 2 and y.ndim <= 2):
        return _as(np.matmul(x, y), probe)
    return _as(np.tensordot(x, y, ([-1], [-2])), probe)


@_implements(np.inner)
def _f_inner(probe, a, b):
    t = _tape(a, b)
    x, y = _lift(t, a), _lift(t, b)
    if x.ndim == 0 or y.ndim == 0:
        return _as(np.multiply(x, y), probe)
    return _as(np.tensordot(x, y, ([-1], [-1])), probe)


@_implements(np.outer)
def _f_outer(probe, a, b, out=None):
    t = _tape(a, b)
    return _as(np.multiply(np.reshape(_lift(t, a), (-1, 1)), np.reshape(_lift(t, b), (1, -1))), probe)


@_implements(np.linalg.norm)
def _f_norm(probe, x, ord=None, axis=None, keepdims=False):  # noqa: A002 - numpy's name
    if ord not in (None, 2, "fro") or (ord == 2 and (axis is None or np.ndim(axis) != 0)):
        raise TraceError(f"numpy.linalg.norm with ord={ord!r}")
    s = _lift(_tape(x), x)
    if s.dtype.kind != "f":
        s = _cast(s, np.float64)
    return _as(np.sqrt(np.sum(s * s, axis=axis, keepdims=keepdims)), probe)


@_implements(np.nan_to_num)
def _f_nan_to_num(probe, x, copy=True, nan=0.0, posinf=None, neginf=None):
    s = _lift(_tape(x), x)
    if s.dtype.kind != "f":
        return _as(_alias(s), probe)
    info = np.finfo(s.dtype)
    y = np.where(np.isnan(s), _asarray(nan, s.dtype), s)
    y = np.where(np.isinf(y) & (y > 0), _asarray(info.max if posinf is None else posinf, s.dtype), y)
    y = np.where(np.isinf(y) & (y < 0), _asarray(info.min if neginf is None else neginf, s.dtype), y)
    return _as(y, probe)


# ---------------------------------------------------------------------------------------------- indexing


def _index_items(x: Sym, key) -> list:
    """The index as one item per input axis or None, with the Ellipsis expanded."""
    items = list(key) if type(key) is tuple else [key]
    items = [_asarray(k) if type(k) is list else k for k in items]
    consumed = 0
    for k in items:
        if k is None or k is Ellipsis:
            continue
        if not isinstance(k, Sym) and isinstance(k, np.ndarray) and k.dtype == np.bool_:
            consumed += max(k.ndim, 1)
        else:
            consumed += 1
    fill = [slice(None)] * (x.ndim - consumed)
    n_ellipsis = sum(k is Ellipsis for k in items)
    if n_ellipsis > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    if n_ellipsis:
        i = next(i for i, k in enumerate(items) if k is Ellipsis)
        return items[:i] + fill + items[i + 1:]
    return items + fill


@_emits(PROTOCOL, "getitem")
def _getitem(x: Sym, key) -> Sym:
    t = x.tape
    with np.errstate(all="ignore"):
        probe = _asarray(x.probe[_probes(key) if type(key) is not list else _asarray(key)])
    starts, ends, axes, steps, gathers, news = [], [], [], [], [], []
    axis = pos = 0
    for k in _index_items(x, key):
        if k is None:
            news.append(pos)
            pos += 1
            continue
        if isinstance(k, slice):
            if k != slice(None):
                step = 1 if k.step is None else operator.index(k.step)
                if step == 0:
                    raise ValueError("slice step cannot be zero")
                starts.append((0 if step > 0 else INT64_MAX) if k.start is None else operator.index(k.start))
                ends.append((INT64_MAX if step > 0 else INT64_MIN) if k.stop is None else operator.index(k.stop))
                axes.append(axis)
                steps.append(step)
            axis += 1
            pos += 1
            continue
        if isinstance(k, Sym):
            if k.dtype == np.bool_:
                raise TraceError("indexing with a boolean tensor (the output size depends on the values)")
            index = k
        else:
            arr = _asarray(k)
            if arr.dtype == np.bool_:
                if arr.ndim != 1:
                    raise TraceError("indexing with a boolean array of several axes")
                arr = np.nonzero(arr)[0]
            elif arr.dtype.kind not in "iu":
                raise TraceError(f"the index {k!r}")
            index = arr.astype(np.int64)
        gathers.append((axis, index))
        axis += 1
        pos += np.ndim(_probes(index))
    y = x
    if starts:
        sl = [slice(None)] * x.ndim
        for a, b, e, s in zip(axes, starts, ends, steps):
            sl[a] = slice(b, e, s)
        y = _new(t, "Slice", [x.name, t.ints(starts, "starts"), t.ints(ends, "ends"), t.ints(axes, "axes"),
                              t.ints(steps, "steps")], x.probe[tuple(sl)])
    for a, index in reversed(gathers):
        y = _new(t, "Gather", [y.name, _name(t, index, np.int64)], np.take(y.probe, _probes(index), axis=a), axis=a)
    if news:
        y = _new(t, "Unsqueeze", [y.name, t.ints(news, "axes")], np.expand_dims(y.probe, news))
    if y.probe.shape != probe.shape or not np.array_equal(y.probe, probe, equal_nan=probe.dtype.kind == "f"):
        raise TraceError(f"the index {key!r} (advanced indexing of several axes) has no ONNX form in the tracer")
    return Sym(t, y.name, probe) if y is not x else _alias(x)


@_emits(PROTOCOL, "setitem")
def _setitem(x: Sym, key, value) -> None:
    """x[key] = value for keys of ints and step-1 slices: the untouched parts sliced off and concatenated back
    around the value, axis by axis (sizes known only at run time work too)."""
    new_probe = x.probe.copy()
    with np.errstate(all="ignore"):
        new_probe[_probes(key)] = _probes(value)
    spans, int_axes = [], []
    for axis, k in enumerate(_index_items(x, key)):
        dim = x.shape[axis]
        if isinstance(k, slice) and k == slice(None):
            spans.append(None)
        elif isinstance(k, slice):
            start, stop, step = k.indices(dim)
            if step != 1:
                raise TraceError("assignment to a strided slice")
            spans.append((start, max(stop, start)))
        elif isinstance(k, (int, np.integer)) and not isinstance(k, (bool, np.bool_)):
            i = range(dim)[operator.index(k)]
            spans.append((i, i + 1))
            int_axes.append(axis)
        else:
            raise TraceError(f"assignment to the index {key!r}")
    v = np.broadcast_to(_lift(x.tape, value, x.dtype), x.probe[_probes(key)].shape)
    if int_axes:
        v = np.expand_dims(v, int_axes)
    x._assign(_as(_place(x, spans, v, 0), new_probe))


def _place(x: Sym, spans: list, v: Sym, axis: int) -> Sym:
    """`x` with the block `spans` (per axis: (lo, hi) or None for all of it) replaced by `v`."""
    k = next((a for a in range(axis, x.ndim) if spans[a] is not None), None)
    if k is None:
        return np.broadcast_to(v, x.shape)
    lo, hi = spans[k]

    def cut(a, b):
        index = [slice(None)] * x.ndim
        index[k] = slice(a, b)
        return x[tuple(index)]

    parts = [cut(None, lo)] if lo > 0 else []
    parts.append(_place(cut(lo, hi), spans, v, k + 1))
    if hi < x.shape[k]:
        parts.append(cut(hi, None))
    return np.concatenate(parts, axis=k) if len(parts) > 1 else parts[0]


# ---------------------------------------------------------------------------------------------- kconvert.ops hooks


def _unary_hook(op_type: str) -> Callable:
    def emit(t, probe, a):
        return _new(t, op_type, [_name(t, a["x"], probe.dtype)], probe)
    return emit


HOOKS["sigmoid"] = _unary_hook("Sigmoid")
HOOKS["erf"] = _unary_hook("Erf")


def _softmax_hook(op_type: str) -> Callable:
    def emit(t, probe, a):
        if not isinstance(a["axis"], (int, np.integer)):  # several axes: the numpy kernel is traced
            return None
        return _new(t, op_type, [_name(t, a["x"], probe.dtype)], probe, axis=int(a["axis"]))
    return emit


HOOKS["softmax"] = _softmax_hook("Softmax")
HOOKS["log_softmax"] = _softmax_hook("LogSoftmax")


@_emits(HOOKS, "gather")
def _h_gather(t, probe, a):
    return _new(t, "Gather", [_name(t, a["params"]), _name(t, a["indices"], np.int64)], probe, axis=0)


def _op_hook(op) -> Callable:
    """An ops function whose registered Op has an ONNX emission: its `to_onnx` records on the tape."""
    def emit(t, probe, a):
        x = _lift(t, a.pop("x"), probe.dtype)
        kernel = a.pop("kernel", None)
        inputs = [x.name]
        if isinstance(kernel, Sym):
            inputs.append(_name(t, kernel, probe.dtype))
            a["strides"] = a["strides"] if a["strides"] is not None else (1,) * (x.ndim - 2)
        elif kernel is not None:
            a["kernel_value"] = _asarray(kernel)
        return Sym(t, op.to_onnx(t, inputs, **a), probe)
    return emit


for _hname, _hop in {"conv": Conv, "conv_transpose": ConvTranspose, "max_pool": MaxPool, "avg_pool": AvgPool,
                     "resize": Resize}.items():
    HOOKS[_hname] = _op_hook(_hop)
