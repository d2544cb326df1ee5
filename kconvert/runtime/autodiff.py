"""Reverse-mode automatic differentiation for the numpy engine: a tape of primitive calls with local rules.

Design. A `Var` wraps a numpy array and the tape node that made it. It implements numpy's dispatch protocols
(`__array_ufunc__`, `__array_function__`), the operators, indexing and the array methods, and
`ops.base.traceable` hands it the kconvert.ops calls it meets, so layer code written with numpy, `kconvert.ops`
or `K` runs unchanged on Vars. Execution is define-by-run: every call runs numpy's (or the op's) own kernel on
the underlying arrays, so the forward numerics are bit-identical to the inference path and Python control flow
reads real values; the call then records one node: its parents and a vector-Jacobian product (its local
gradient rule). `backward` walks the nodes reachable from the loss in reverse creation order and sums the
gradients reaching each node. That is micrograd's design; speed lives in the kernels, not in the tape.

Rules (grad_rules*.py, grouped by family) come in three tables: numpy ufuncs, numpy functions (with the array
methods and indexing routed to them), and kconvert.ops functions. An ops function whose numpy kernel cannot run
on Vars (im2col views, masked writes) or is better differentiated whole is `traceable`: its gradient comes from
its `Op.backward` next to the kernel (conv, conv_transpose, pooling, resize, gather) or from a rule here
(sigmoid, softmax, log_softmax, erf); every other op is differentiated through the numpy calls its kernel makes.
A numpy call on a Var with no rule and a floating result raises `AutodiffError` instead of silently dropping
the gradient; integer and boolean results (comparisons, argmax, masks) are plain arrays.

`np.asarray`/`np.array`/`np.asanyarray`/`np.ascontiguousarray` are not dispatched by numpy: while a tape
records they hand Vars back (as the ONNX tracer does), so a layer's `x = np.asarray(inputs)` keeps its
gradient. In-place writes (`y += v`, `y[i] = v`, `out=`) rebind the Var to a new node (copy on write); a
write through a view (`v = y[0]; v += 1`) therefore does not reach `y`, unlike numpy. A Var converted to a
plain array while recording (a Var written into a numpy array) raises `AutodiffError`.

Public API: `GradientTape` (Keras/TF naming: `watch`, `gradient`), `value_and_grad(fn, params)`, and
`gradients(model, inputs, loss_fn, training=True)`, which runs a model (or a layer) in training mode and
differentiates w.r.t. its trainable weights; state a layer assigns during the call (BatchNormalization's moving
statistics) is applied to the weights as plain arrays, outside the gradient.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..errors import KConvertError
from ..ops import logits, ufuncs
from ..ops.array_module import add_at, full, is_array, like, on_device

# _asarray: numpy's own (whatever patch is installed), except that a device array stays where it is
from ..ops.array_module import asarray as _asarray
from ..ops.base import OPS, unbroadcast
from ..ops.coercion import numpy_takes
from .numpy_engine import run_graph

__all__ = ["AutodiffError", "GradientTape", "Var", "gradients", "value_and_grad"]



class AutodiffError(KConvertError):
    """A computation on tracked tensors that the tape cannot differentiate."""


# ---------------------------------------------------------------------------------------------- nodes and Vars

_SEQ = itertools.count()


class _Node:
    """One recorded call: its parents (one per input slot, None for constants), its vector-Jacobian product
    `vjp(grad) -> grads per positional argument` and `layout` (how positional arguments map to slots)."""

    __slots__ = ("parents", "vjp", "layout", "seq", "shape", "dtype")

    def __init__(self, parents: tuple, vjp: Callable | None, layout: tuple, shape: tuple, dtype):
        self.parents, self.vjp, self.layout = parents, vjp, layout
        self.seq = next(_SEQ)
        self.shape, self.dtype = shape, dtype


def _is_var(v) -> bool:
    return type(v) is Var


class Var:
    """A numpy array followed by the tape: `data` (the array) and `node` (None for a constant)."""

    __slots__ = ("data", "node")
    __array_priority__ = 1000.0

    def __init__(self, data, node: _Node | None = None):
        self.data = data
        self.node = node

    @property
    def __class__(self):  # isinstance(var, np.ndarray): layer code telling arrays from constants takes Vars
        # ... but not over a device array: CuPy defers an operation to a foreign type with its own
        # __array_ufunc__ (`device_array + var`), unless it claims to be a numpy array, which CuPy then refuses
        return np.ndarray if type(self.data) is np.ndarray or not on_device(self.data) else Var

    def __repr__(self) -> str:
        return f"Var({self.data!r}, tracked={self.node is not None})"

    def _rebind(self, other) -> None:
        """An in-place write: this object now stands for `other` (cast to this dtype, as numpy writes)."""
        if not _is_var(other):
            other = Var(_asarray(other))
        if other.data.dtype != self.data.dtype:
            other = other.astype(self.data.dtype)
        if other.data.shape != self.data.shape:
            other = np.broadcast_to(other, self.data.shape)
        self.data, self.node = other.data, other.node

    # numpy protocols (the dispatch lives in dispatch functions below)
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        return _ufunc(ufunc, method, inputs, kwargs)

    def __array_function__(self, func, types, args, kwargs):
        return _function(func, args, kwargs)

    def __kconvert_trace__(self, name: str, fn: Callable, args: tuple, kwargs: dict):
        return _op_call(name, fn, args, kwargs)

    def __array__(self, dtype=None, copy=None):
        if self.node is not None and _recording():
            raise AutodiffError("a tracked tensor was converted to a plain numpy array, which would drop its "
                                "gradient (a Var written into a numpy array, e.g. `out = np.zeros(...); "
                                "out[i] = x`: build the result with np.stack/np.concatenate or "
                                "np.zeros_like(x) instead)")
        return self.data if dtype is None else self.data.astype(dtype)

    # Python values
    def __bool__(self):
        return bool(self.data)

    def __float__(self):
        return float(self.data)

    def __int__(self):
        return int(self.data)

    def __index__(self):
        return self.data.__index__()

    def __complex__(self):
        return complex(self.data)

    def item(self, *args):
        return self.data.item(*args)

    def tolist(self):
        return self.data.tolist()

    def __len__(self) -> int:
        return len(self.data)

    def __iter__(self):
        for i in range(len(self.data)):
            yield self[i]

    __hash__ = object.__hash__

    # attributes
    shape = property(lambda self: self.data.shape)
    ndim = property(lambda self: self.data.ndim)
    dtype = property(lambda self: self.data.dtype)
    size = property(lambda self: self.data.size)
    itemsize = property(lambda self: self.data.itemsize)
    nbytes = property(lambda self: self.data.nbytes)
    strides = property(lambda self: self.data.strides)
    flags = property(lambda self: self.data.flags)
    T = property(lambda self: np.transpose(self))
    mT = property(lambda self: np.swapaxes(self, -1, -2))
    real = property(lambda self: self)

    # indexing
    def __getitem__(self, key):
        return _getitem(self, key)

    def __setitem__(self, key, value):
        _setitem(self, key, value)

    # methods
    def astype(self, dtype, order="K", casting="unsafe", subok=True, copy=True):
        dtype = np.dtype(dtype)
        if dtype == self.data.dtype:
            return Var(self.data, self.node) if copy else self
        return _cast(self, dtype)

    def copy(self, order="C"):
        return Var(self.data, self.node)  # data is never written in place: sharing it is a copy

    def reshape(self, *shape, order="C", copy=None):
        return np.reshape(self, shape[0] if len(shape) == 1 else shape)

    def transpose(self, *axes):
        if len(axes) == 1 and (axes[0] is None or isinstance(axes[0], (tuple, list))):
            axes = axes[0]
        return np.transpose(self, axes or None)

    def sum(self, axis=None, dtype=None, out=None, keepdims=False, **kw):
        return np.sum(self, axis=axis, dtype=dtype, out=out, keepdims=keepdims, **kw)

    def mean(self, axis=None, dtype=None, out=None, keepdims=False, **kw):
        return np.mean(self, axis=axis, dtype=dtype, out=out, keepdims=keepdims, **kw)

    def prod(self, axis=None, dtype=None, out=None, keepdims=False, **kw):
        return np.prod(self, axis=axis, dtype=dtype, out=out, keepdims=keepdims, **kw)

    def max(self, axis=None, out=None, keepdims=False, **kw):
        return np.max(self, axis=axis, out=out, keepdims=keepdims, **kw)

    def min(self, axis=None, out=None, keepdims=False, **kw):
        return np.min(self, axis=axis, out=out, keepdims=keepdims, **kw)

    def var(self, axis=None, dtype=None, out=None, ddof=0, keepdims=False, **kw):
        return np.var(self, axis=axis, dtype=dtype, out=out, ddof=ddof, keepdims=keepdims, **kw)

    def std(self, axis=None, dtype=None, out=None, ddof=0, keepdims=False, **kw):
        return np.std(self, axis=axis, dtype=dtype, out=out, ddof=ddof, keepdims=keepdims, **kw)

    def any(self, axis=None, out=None, keepdims=False, **kw):
        return np.any(self.data, axis=axis, out=out, keepdims=keepdims, **kw)

    def all(self, axis=None, out=None, keepdims=False, **kw):
        return np.all(self.data, axis=axis, out=out, keepdims=keepdims, **kw)

    def argmax(self, axis=None, out=None, keepdims=False):
        return self.data.argmax(axis=axis, out=out, keepdims=keepdims)

    def argmin(self, axis=None, out=None, keepdims=False):
        return self.data.argmin(axis=axis, out=out, keepdims=keepdims)

    def nonzero(self):
        return self.data.nonzero()

    def cumsum(self, axis=None, dtype=None, out=None):
        return np.cumsum(self, axis=axis, dtype=dtype, out=out)

    def clip(self, min=None, max=None, out=None, **kw):  # noqa: A002 - numpy's names
        return np.clip(self, min, max, out=out, **kw)

    def squeeze(self, axis=None):
        return np.squeeze(self, axis)

    def swapaxes(self, axis1, axis2):
        return np.swapaxes(self, axis1, axis2)

    def flatten(self, order="C"):
        return np.reshape(self, -1)

    ravel = flatten

    def repeat(self, repeats, axis=None):
        return np.repeat(self, repeats, axis)

    def take(self, indices, axis=None, out=None, mode="raise"):
        return np.take(self, indices, axis, out, mode)

    def round(self, decimals=0, out=None):
        return np.round(self, decimals, out)

    def dot(self, b, out=None):
        return np.dot(self, b, out)

    def fill(self, value):
        self._rebind(Var(np.full_like(self.data, value)))


def _binary(ufunc):
    def op(self, other):
        return ufunc(self, other)

    def rop(self, other):
        return ufunc(other, self)

    def iop(self, other):
        self._rebind(ufunc(self, other))
        return self

    return op, rop, iop


for _name_, _uf in [("add", np.add), ("sub", np.subtract), ("mul", np.multiply), ("truediv", np.true_divide),
                    ("floordiv", np.floor_divide), ("mod", np.remainder), ("pow", np.power),
                    ("matmul", np.matmul), ("and", np.bitwise_and), ("or", np.bitwise_or), ("xor", np.bitwise_xor)]:
    _op, _rop, _iop = _binary(_uf)
    setattr(Var, f"__{_name_}__", _op)
    setattr(Var, f"__r{_name_}__", _rop)
    setattr(Var, f"__i{_name_}__", _iop)
for _name_, _uf in [("lt", np.less), ("le", np.less_equal), ("gt", np.greater), ("ge", np.greater_equal),
                    ("eq", np.equal), ("ne", np.not_equal)]:
    setattr(Var, f"__{_name_}__", _binary(_uf)[0])
Var.__neg__ = lambda self: np.negative(self)
Var.__pos__ = lambda self: Var(self.data, self.node)
Var.__abs__ = lambda self: np.absolute(self)
Var.__invert__ = lambda self: np.invert(self)


# ---------------------------------------------------------------------------------------------- recording


def _raw(v):
    """`v` with every Var replaced by its array (inside lists, tuples and dicts)."""
    t = type(v)
    if t is Var:
        return v.data
    if t is list or t is tuple:
        return t(_raw(x) for x in v)
    if t is dict:
        return {k: _raw(x) for k, x in v.items()}
    return v


def _has_var(v) -> bool:
    t = type(v)
    if t is Var:
        return True
    if t is list or t is tuple:
        return any(_has_var(x) for x in v)
    if t is dict:
        return any(_has_var(x) for x in v.values())
    return False


def _tracked(v) -> bool:
    t = type(v)
    if t is Var:
        return v.node is not None
    if t is list or t is tuple:
        return any(_tracked(x) for x in v)
    return False


def needs_of(args: Sequence) -> tuple:
    """Whether each positional argument is (or holds) a tracked Var."""
    return tuple(_tracked(a) for a in args)


def _slots(args: Sequence) -> tuple[tuple, tuple]:
    """The parents (one per array slot: a positional argument, or each item of a list/tuple one) and the layout."""
    parents, layout = [], []
    for a in args:
        t = type(a)
        if t is Var:
            parents.append(a.node)
            layout.append(-1)
        elif t is list or t is tuple:
            parents.extend(x.node if type(x) is Var else None for x in a)
            layout.append(len(a))
        else:
            parents.append(None)
            layout.append(-1)
    return tuple(parents), tuple(layout)


def _is_float(a) -> bool:
    return is_array(a) and a.dtype.kind in "fc" or isinstance(a, np.inexact)


def record(out, args: Sequence, vjp: Callable | None):
    """The result of a call on `args` (positional, raw or Var) computing `out` with local rule `vjp`.

    A floating result is a Var, tracked when a parent is; other results are returned as they are.
    """
    if not _is_float(out):
        return out
    out = _asarray(out)
    parents, layout = _slots(args)
    if vjp is None or not any(parents):  # nodes are truthy
        return Var(out)
    return Var(out, _Node(parents, vjp, layout, out.shape, out.dtype))


def _cast(x: Var, dtype: np.dtype):
    src = x.data.dtype
    out = x.data.astype(dtype)
    if dtype.kind not in "fc" or src.kind not in "fc":
        return out if dtype.kind not in "fc" else Var(out)
    return record(out, (x,), lambda g: (g.astype(src, copy=False),))


# ---------------------------------------------------------------------------------------------- dispatch

# filled by the grad_rules modules: numpy ufunc name / numpy function / kconvert.ops function name -> rule
UFUNC_RULES: dict[str, Callable] = {}
FUNCTION_RULES: dict[Callable, Callable] = {}
OP_RULES: dict[str, Callable] = {}


def _no_rule(what: str, out, args) -> Any:
    """The result of a call without a rule: fine unless it would drop a gradient."""
    if _has_float(out) and any(needs_of(args)):
        raise AutodiffError(f"{what} on a tracked tensor has no gradient rule (kconvert/runtime/grad_rules*.py)")
    return out


def _has_float(out) -> bool:
    if isinstance(out, (list, tuple)):
        return any(_has_float(o) for o in out)
    return _is_float(out)


def _write_out(out, result):
    """A ufunc's `out=` argument: a Var is rebound, a plain array receives an untracked result."""
    target = out[0] if isinstance(out, tuple) else out
    if _is_var(target):
        target._rebind(result)
        return target
    if _is_var(result) and result.node is not None:
        raise AutodiffError("a numpy call wrote a tracked result into a plain array (out=), dropping its gradient")
    np.copyto(target, _raw(result), casting="unsafe")
    return target


_REDUCE_METHODS = {"add": np.sum, "maximum": np.max, "minimum": np.min, "multiply": np.prod}


def _ufunc(ufunc, method: str, inputs: tuple, kwargs: dict):
    out = kwargs.pop("out", None)
    if method == "__call__":
        if kwargs.get("where", True) is not True:
            raise AutodiffError(f"numpy.{ufunc.__name__} with where= on a tracked tensor")
        raw = [_raw(a) for a in inputs]
        value = ufuncs.call(ufunc, *raw, **kwargs)
        rule = UFUNC_RULES.get(ufunc.__name__)
        if rule is None:
            result = _no_rule(f"numpy.{ufunc.__name__}", value, inputs)
        elif isinstance(value, tuple):
            raise AutodiffError(f"numpy.{ufunc.__name__} (several outputs) on a tracked tensor")
        else:
            needs = needs_of(inputs)
            vjp = rule(value, needs, *[_raw(a) for a in inputs]) if _is_float(value) and any(needs) else None
            result = record(value, inputs, vjp)
    elif method == "reduce" and ufunc.__name__ in _REDUCE_METHODS:
        x, *rest = inputs
        params = dict(zip(("axis", "dtype"), rest), **kwargs)
        params.setdefault("axis", 0)
        if ufunc.__name__ in ("maximum", "minimum"):
            params.pop("dtype", None)
        result = _REDUCE_METHODS[ufunc.__name__](x, **params)
    elif method == "outer" and ufunc.__name__ == "multiply":
        a, b = inputs
        result = np.multiply(np.reshape(a, np.shape(a) + (1,) * np.ndim(b)), b)
    else:
        result = _no_rule(f"numpy.{ufunc.__name__}.{method}", getattr(ufunc, method)(*_raw(inputs), **kwargs),
                          inputs)
    return result if out is None else _write_out(out, result)


def _function(func, args: tuple, kwargs: dict):
    rule = FUNCTION_RULES.get(func)
    if rule is None:
        return _no_rule(f"numpy.{func.__name__}", func(*_raw(args), **_raw(kwargs)), (*args, *kwargs.values()))
    return rule(func, args, kwargs)


_SIGNATURES: dict[Callable, tuple[inspect.Signature, int]] = {}
_PLAIN = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def _bound(fn: Callable, args: tuple, kwargs: dict) -> list:
    """`fn`'s arguments in parameter order (defaults applied)."""
    entry = _SIGNATURES.get(fn)
    if entry is None:
        sig = inspect.signature(fn)
        plain = all(p.kind in _PLAIN for p in sig.parameters.values())
        entry = _SIGNATURES[fn] = (sig, len(sig.parameters) if plain else -1)
    sig, n_plain = entry
    if not kwargs and len(args) == n_plain:  # every parameter given by position: binding is the identity
        return list(args)
    b = sig.bind(*args, **kwargs)
    b.apply_defaults()
    return list(b.arguments.values())


_LOGITS_OPS = ("softmax", "sigmoid")  # their outputs remember their inputs for the crossentropy losses


def _op_call(name: str, fn: Callable, args: tuple, kwargs: dict):
    """A traceable kconvert.ops function called on a Var: its own kernel forward, its rule (or Op.backward)."""
    rule = OP_RULES.get(name)
    if rule is None and name in OPS:
        rule = OP_RULES[name] = op_backward_rule(OPS[name], fn)
    if rule is None:  # differentiate through the numpy calls of its kernel
        return fn(*args, **kwargs)
    bound = _bound(fn, args, kwargs)
    raw = [_raw(v) for v in bound]
    needs = needs_of(bound)
    saving = getattr(OPS.get(name), "forward_saving", None) if any(needs) else None
    if saving is not None:  # the kernel keeps what its backward would recompute (conv: the im2col columns)
        value, saved = saving(needs, *raw)
        vjp = rule(value, needs, *raw, saved=saved) if _is_float(value) else None
    else:
        value = fn(*raw)
        vjp = rule(value, needs, *raw) if _is_float(value) and any(needs) else None
    out = record(value, bound, vjp)
    if name in _LOGITS_OPS:
        logits.mark(out, bound[0])
    return out


def op_backward_rule(op, fn: Callable) -> Callable:
    """A rule from an `Op` class: `fn`'s leading parameters not named in `op.backward` are its inputs."""
    backward_params = inspect.signature(op.backward).parameters
    attrs = [p for p in backward_params if p not in ("grad", "inputs", "output", "needs", "saved")]
    wants_needs = "needs" in backward_params  # skips the gradients of inputs that lead to no watched value
    wants_saved = "saved" in backward_params  # what `op.forward_saving` kept for it
    params = list(inspect.signature(fn).parameters)
    n_in = len([p for p in params if p not in attrs])
    if params[n_in:] != [p for p in params if p in attrs]:
        raise TypeError(f"{op.__name__}: the inputs of {fn.__name__} must come before its attributes")

    def rule(out, needs, *values, saved=None):
        inputs, named = values[:n_in], dict(zip(params[n_in:], values[n_in:]))
        extra = {"needs": tuple(needs[:n_in])} if wants_needs else {}
        if wants_saved:
            extra["saved"] = saved

        def vjp(g):
            return tuple(op.backward(g, tuple(inputs), out, **named, **extra)) + (None,) * len(named)
        return vjp
    return rule


# ---------------------------------------------------------------------------------------------- indexing


def _raw_key(key):
    if type(key) is tuple:
        return tuple([_raw(k) for k in key])
    return _raw(key)


def _advanced(key) -> bool:
    keys = key if type(key) is tuple else (key,)
    return any(isinstance(k, (list, np.ndarray)) and np.asarray(k).dtype != np.bool_ for k in keys)


def _scatter(g, key, shape, dtype, advanced: bool):
    out = np.zeros(shape, dtype, like=like(g))
    if advanced:
        add_at(out, key, g)
    else:
        out[key] = g
    return out


def _getitem(x: Var, key):
    key = _raw_key(key)
    out = x.data[key]
    if not _is_float(out):
        return out
    shape, dtype, adv = x.data.shape, x.data.dtype, _advanced(key)
    return record(out, (x,), lambda g: (_scatter(g, key, shape, dtype, adv),))


def _setitem(x: Var, key, value) -> None:
    key = _raw_key(key)
    raw_value = _raw(value)
    data = x.data.copy()
    data[key] = raw_value
    vshape = np.shape(raw_value)
    vdtype = raw_value.dtype if isinstance(raw_value, np.ndarray) else None

    def vjp(g):
        gx = g.copy()
        gx[key] = 0
        gv = unbroadcast(_asarray(g[key]), vshape)
        return gx, None, gv if vdtype is None else gv.astype(vdtype, copy=False)

    x.data, x.node = data, record(data, (x, None, value), vjp).node


# ---------------------------------------------------------------------------------------------- the tape

_lock = threading.Lock()
_depth = 0


def _recording() -> bool:
    return _depth > 0


def _stack_nested(obj):
    parts = [_stack_nested(v) if type(v) in (list, tuple) else v for v in obj]
    return np.stack(parts) if _has_var(parts) else _asarray(parts)


def _take_var(obj, args: tuple, kwargs: dict, copies: bool):
    """np.asarray & co. on a Var (or a list holding Vars): the Var itself (stacked, cast to a dtype asked for)."""
    t = type(obj)
    if t is Var or ((t is list or t is tuple) and _has_var(obj)):
        dtype = args[0] if args else kwargs.get("dtype")
        v = obj if t is Var else _stack_nested(obj)
        if dtype is not None and np.dtype(dtype) != v.dtype:
            return v.astype(dtype)
        return Var(v.data, v.node) if v is obj and copies and kwargs.get("copy", True) is not False else v
    return NotImplemented


@contextlib.contextmanager
def _numpy_takes_vars():
    global _depth
    with _lock:
        _depth += 1
    try:
        with numpy_takes(_take_var):
            yield
    finally:
        with _lock:
            _depth -= 1


def _backward(target: Var, seed, keep: set) -> dict:
    """Gradients of the nodes in `keep` (and of every leaf) reachable from `target`, seeded with `seed`."""
    root = target.node
    nodes, stack, seen = [], [root], {id(root)}
    while stack:
        n = stack.pop()
        nodes.append(n)
        for p in n.parents:
            if p is not None and id(p) not in seen:
                seen.add(id(p))
                stack.append(p)
    nodes.sort(key=lambda n: n.seq, reverse=True)
    grads = {root: _asarray(seed, dtype=root.dtype).reshape(root.shape)}
    for n in nodes:
        if n.vjp is None:
            continue
        g = grads.get(n) if n in keep else grads.pop(n, None)
        if g is None:
            continue
        for p, gp in zip(n.parents, _flat(n.vjp(g), n.layout)):
            if p is None or gp is None:
                continue
            gp = _asarray(gp)
            if gp.shape != p.shape:
                gp = unbroadcast(gp, p.shape) if gp.ndim >= len(p.shape) else np.broadcast_to(gp, p.shape)
            if gp.dtype != p.dtype:
                gp = gp.astype(p.dtype)
            prev = grads.get(p)
            grads[p] = gp if prev is None else prev + gp
    return grads


def _flat(grads, layout: tuple) -> list:
    out = []
    for g, n in zip(grads, layout):
        if n < 0:
            out.append(g)
        elif g is None:
            out.extend([None] * n)
        else:
            out.extend(g)
    return out


class GradientTape:
    """Records the numpy and kconvert.ops calls made on watched values, as `tf.GradientTape`.

        with GradientTape() as tape:
            w = tape.watch(w_array)          # a Var: use it where the array was used
            loss = fn(w)
        (dw,) = tape.gradient(loss, [w])

    While the tape is open, `np.asarray` and friends hand Vars back (see the module doc).
    """

    def __init__(self):
        self._ctx = None

    def __enter__(self) -> GradientTape:
        self._ctx = _numpy_takes_vars()
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        ctx, self._ctx = self._ctx, None
        ctx.__exit__(*exc)

    @staticmethod
    def watch(value) -> Var:
        """A tracked leaf holding `value` (a Var already tracked is returned as it is)."""
        if _is_var(value) and value.node is not None:
            return value
        data = _asarray(_raw(value))
        if data.dtype.kind not in "fc":
            raise AutodiffError(f"cannot differentiate with respect to a {data.dtype} tensor")
        return Var(data, _Node((), None, (), data.shape, data.dtype))

    @staticmethod
    def gradient(target, sources, output_gradients=None):
        """d target / d source for each source (None where the target does not depend on it), as TF does."""
        single = _is_var(sources)
        srcs = [sources] if single else list(sources)
        if not _is_var(target) or target.node is None:
            grads = [None] * len(srcs)
        else:
            seed = full(target.shape, 1, target.dtype, like=target.data) if output_gradients is None else \
                _raw(output_gradients)
            table = _backward(target, seed, {s.node for s in srcs if _is_var(s) and s.node is not None})
            grads = [table.get(s.node) if _is_var(s) and s.node is not None else None for s in srcs]
        return grads[0] if single else grads


def value_and_grad(fn: Callable, params) -> tuple[np.ndarray, Any]:
    """(fn(*params), d fn / d params): `params` is an array or a sequence of arrays; the value must be a scalar
    (or its gradients are those of its sum). Grads of parameters the value does not depend on are zeros."""
    single = not isinstance(params, (list, tuple))
    arrays = [params] if single else list(params)
    with GradientTape() as tape:
        vars_ = [tape.watch(a) for a in arrays]
        value = fn(*vars_)
    grads = tape.gradient(value, vars_)
    grads = [np.zeros_like(v.data) if g is None else g for g, v in zip(grads, vars_)]
    return _asarray(_raw(value)), (grads[0] if single else grads)


# ---------------------------------------------------------------------------------------------- models


def gradients(model, inputs, loss_fn: Callable, training: bool = True, observe=None) -> tuple[float, dict]:
    """Run `model` (a Model or a single layer) on `inputs` in training mode and differentiate `loss_fn(outputs)`
    (a scalar; `outputs` as the model returns them) w.r.t. its trainable weights.

    Returns (loss, {weight: gradient}); the gradient is None for a weight the loss does not depend on (as
    tf.GradientTape). Weights a layer assigns during the call (BatchNormalization's moving mean and variance)
    keep their new values, as plain arrays: a state update applied outside the gradient, as Keras applies it; so
    do the states a stateful RNN carries to the next batch.
    """
    weights = list(model.trainable_weights)
    all_weights = list(model.weights)
    saved = [(w.value, w.stamp) for w in weights]
    watched: list[Var] = []
    try:
        with GradientTape() as tape:
            watched = [tape.watch(v) for v, _ in saved]
            for w, v in zip(weights, watched):
                w.value = v
            outputs = _run(model, inputs, training, observe)
            loss = loss_fn(outputs)
        grads = tape.gradient(loss, watched)
    finally:
        for w, v, (array, stamp) in zip(weights, watched, saved):
            if w.value is v:  # untouched by the call: the same array, the same stamp (caches stay valid)
                w.value, w.stamp = array, stamp
        for w in all_weights:
            if _is_var(w.value):  # assigned by the call (a state update): keep the new value as an array
                w.value = w.value.data
        _detach_state(model, set())
    value = _raw(loss)
    return float(np.sum(value)), dict(zip(weights, grads))


def _detached(v):
    if _is_var(v):
        return v.data
    if type(v) in (list, tuple) and any(_is_var(x) for x in v):
        return type(v)(x.data if _is_var(x) else x for x in v)
    return v


def _detach_state(layer, seen: set) -> None:
    """Replace the Vars a call left in a layer's attributes (a stateful RNN's states) by their arrays, in the layer
    and in the layers it holds, so that the next batch starts from values, not from this batch's tape."""
    if id(layer) in seen or not hasattr(layer, "__dict__"):
        return
    seen.add(id(layer))
    for name, v in list(vars(layer).items()):
        new = _detached(v)
        if new is not v:
            setattr(layer, name, new)
        for item in (v if type(v) in (list, tuple) else [v]):
            if hasattr(item, "trainable_weights") and hasattr(item, "call"):
                _detach_state(item, seen)


def _run(model, inputs, training: bool, observe=None):
    graph = getattr(model, "_graph", None)
    if graph is None:  # a single layer
        return model(inputs, training=training) if training else model(inputs)
    model._ensure_built(inputs)
    feeds = model._standardize_inputs(inputs)
    outs, _ = run_graph(graph, feeds, training=training, observe=observe)
    return outs if len(outs) > 1 else outs[0]


from . import grad_rules  # noqa: E402,F401 - importing it fills the rule tables
