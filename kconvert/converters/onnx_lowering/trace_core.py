"""The traced value `Sym`, the tape it records on, and the helpers and handler tables the handlers share."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import numpy as np
from numpy.lib.array_utils import normalize_axis_tuple
from onnx import helper

from ...ops.coercion import asarray as _asarray  # numpy's own, whatever patch is installed

INT64_MAX = int(np.iinfo(np.int64).max)
INT64_MIN = int(np.iinfo(np.int64).min)
_NV = np._NoValue


class TraceError(Exception):
    """The layer's call does something that has no ONNX form."""


# ---------------------------------------------------------------------------------------------- the tape


class _Tape:
    """The nodes and constants one trace records (names local to the tape), and each traced value's probe shape.

    It has the `node`/`const` methods of `OnnxBuilder`, so the ops' `to_onnx` emissions can record on it.
    """

    def __init__(self, opset: int):
        self.opset = int(opset)
        self.nodes: list[tuple] = []  # (op_type, inputs, outputs, attrs)
        self.consts: dict[str, np.ndarray] = {}
        self.hints: dict[str, str] = {}
        self.shapes: dict[str, tuple] = {}
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        self.out_probes: list[np.ndarray] = []
        self.masks: list[str | None] | None = None  # the output masks' names (None: unmasked); None: untraceable
        self.casts: dict[tuple, Sym] = {}
        self._count = 0

    def unique(self, hint: str) -> str:
        self._count += 1
        return f"{hint}#{self._count}"

    def node(self, op_type: str, inputs, n_outputs: int = 1, output=None, **attrs):
        outs = [self.unique(op_type) for _ in range(n_outputs)]
        self.nodes.append((op_type, tuple(inputs), tuple(outs), attrs))
        return outs[0] if n_outputs == 1 else outs

    def const(self, value, hint: str = "const", dtype=np.float32) -> str:
        return self.array(_asarray(value, dtype=dtype), hint)

    def array(self, value: np.ndarray, hint: str = "const") -> str:
        name = self.unique("const")
        self.consts[name] = value
        self.hints[name] = hint
        return name

    def ints(self, values, hint: str = "ints") -> str:
        return self.array(_asarray(values, dtype=np.int64).reshape(-1), hint)


# ---------------------------------------------------------------------------------------------- traced values


class Sym:
    """An ONNX value during tracing: its tape name and a numpy probe of the value on the probe inputs."""

    __slots__ = ("tape", "name", "probe")
    __array_priority__ = 1000.0

    def __init__(self, tape: _Tape, name: str, probe):
        probe = _asarray(probe)
        if probe.dtype == object:
            raise TraceError("a tensor of Python objects")
        self.tape, self.name, self.probe = tape, name, probe
        tape.shapes[name] = probe.shape

    @property
    def __class__(self):  # isinstance(sym, np.ndarray): layer code that tells arrays from constants takes Syms
        return np.ndarray

    def __repr__(self) -> str:
        return f"<traced {self.name} shape={self.probe.shape} dtype={self.probe.dtype}>"

    def _assign(self, other: Sym) -> None:
        """In-place writes (`out=`, `x[i] = v`) rebind the value this object stands for."""
        other = _cast(other, self.dtype)
        self.name, self.probe = other.name, other.probe

    # numpy protocols
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        return PROTOCOL["ufunc"](ufunc, method, inputs, kwargs)

    def __array_function__(self, func, types, args, kwargs):
        handler = FUNCTIONS.get(func)
        if handler is None:
            raise TraceError(f"numpy.{func.__name__} has no ONNX form in the tracer")
        if kwargs.get("out") is not None:
            raise TraceError(f"numpy.{func.__name__} with out=")
        with np.errstate(all="ignore"):
            probe = func(*_probes(args), **_probes(kwargs))
        return handler(probe, *args, **kwargs)

    def __kconvert_trace__(self, name: str, fn: Callable, args: tuple, kwargs: dict):
        """A kconvert.ops function `fn(*args, **kwargs)` called on this value (see `ops.base.traceable`)."""
        with np.errstate(all="ignore"):
            probe = _asarray(fn(*_probes(args), **_probes(kwargs)))
        emit = HOOKS.get(name)
        out = emit(self.tape, probe, _bound(fn, args, kwargs)) if emit is not None else None
        if out is None:  # no native form for these arguments: trace the numpy kernel itself
            out = fn(*args, **kwargs)
        return _as(out, probe)

    def __array__(self, *args, **kwargs):
        raise TraceError("a traced tensor was converted to a numpy array: a numpy constant indexed by a tensor "
                         "(`table[x]`; np.take(table, x, axis=0) traces), a numpy function the tracer does not "
                         "know, or numpy's asarray imported under another name")

    # Python values of tensors: control flow and numbers
    def __bool__(self):
        raise TraceError("the call branches on a tensor's value (Python if/and/or on an array), which has no "
                         "ONNX form")

    def _number(self, *args):
        raise TraceError("the call reads a tensor's value as a Python number")

    __int__ = __float__ = __index__ = __complex__ = item = tolist = _number

    def __len__(self) -> int:
        if not self.probe.ndim:
            raise TypeError("len() of a 0-d tensor")
        return self.probe.shape[0]

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    __hash__ = object.__hash__

    # attributes
    shape = property(lambda self: self.probe.shape)
    ndim = property(lambda self: self.probe.ndim)
    dtype = property(lambda self: self.probe.dtype)
    size = property(lambda self: self.probe.size)
    itemsize = property(lambda self: self.probe.itemsize)
    T = property(lambda self: np.transpose(self))
    mT = property(lambda self: np.swapaxes(self, -1, -2))
    real = property(lambda self: self)

    # indexing
    def __getitem__(self, key):
        return PROTOCOL["getitem"](self, key)

    def __setitem__(self, key, value):
        PROTOCOL["setitem"](self, key, value)

    # methods
    def reshape(self, *shape, order="C", copy=None):
        return np.reshape(self, shape[0] if len(shape) == 1 else shape)

    def transpose(self, *axes):
        if len(axes) == 1 and (axes[0] is None or isinstance(axes[0], (tuple, list))):
            axes = axes[0]
        return np.transpose(self, axes or None)

    def astype(self, dtype, order="K", casting="unsafe", subok=True, copy=True):
        return _alias(_cast(self, np.dtype(dtype)))

    def copy(self, order="C"):
        return _alias(self)

    def view(self, *args, **kwargs):
        raise TraceError("ndarray.view")

    def _no_out(self, out):
        if out is not None:
            raise TraceError("an array method with out=")

    def sum(self, axis=None, dtype=None, out=None, keepdims=False, **kw):
        self._no_out(out)
        return np.sum(self, axis=axis, dtype=dtype, keepdims=keepdims, **kw)

    def mean(self, axis=None, dtype=None, out=None, keepdims=False, **kw):
        self._no_out(out)
        return np.mean(self, axis=axis, dtype=dtype, keepdims=keepdims, **kw)

    def prod(self, axis=None, dtype=None, out=None, keepdims=False, **kw):
        self._no_out(out)
        return np.prod(self, axis=axis, dtype=dtype, keepdims=keepdims, **kw)

    def max(self, axis=None, out=None, keepdims=False, **kw):
        self._no_out(out)
        return np.max(self, axis=axis, keepdims=keepdims, **kw)

    def min(self, axis=None, out=None, keepdims=False, **kw):
        self._no_out(out)
        return np.min(self, axis=axis, keepdims=keepdims, **kw)

    def any(self, axis=None, out=None, keepdims=False, **kw):
        self._no_out(out)
        return np.any(self, axis=axis, keepdims=keepdims, **kw)

    def all(self, axis=None, out=None, keepdims=False, **kw):
        self._no_out(out)
        return np.all(self, axis=axis, keepdims=keepdims, **kw)

    def var(self, axis=None, dtype=None, out=None, ddof=0, keepdims=False, **kw):
        self._no_out(out)
        return np.var(self, axis=axis, dtype=dtype, ddof=ddof, keepdims=keepdims, **kw)

    def std(self, axis=None, dtype=None, out=None, ddof=0, keepdims=False, **kw):
        self._no_out(out)
        return np.std(self, axis=axis, dtype=dtype, ddof=ddof, keepdims=keepdims, **kw)

    def argmax(self, axis=None, out=None, keepdims=False):
        self._no_out(out)
        return np.argmax(self, axis=axis, keepdims=keepdims)

    def argmin(self, axis=None, out=None, keepdims=False):
        self._no_out(out)
        return np.argmin(self, axis=axis, keepdims=keepdims)

    def cumsum(self, axis=None, dtype=None, out=None):
        self._no_out(out)
        return np.cumsum(self, axis=axis, dtype=dtype)

    def clip(self, min=None, max=None, out=None, **kw):  # noqa: A002 - numpy's names
        self._no_out(out)
        return np.clip(self, min, max, **kw)

    def squeeze(self, axis=None):
        return np.squeeze(self, axis)

    def swapaxes(self, axis1, axis2):
        return np.swapaxes(self, axis1, axis2)

    def flatten(self, order="C"):
        return np.ravel(self)

    ravel = flatten

    def repeat(self, repeats, axis=None):
        return np.repeat(self, repeats, axis)

    def take(self, indices, axis=None, out=None, mode="raise"):
        self._no_out(out)
        return np.take(self, indices, axis)

    def round(self, decimals=0, out=None):
        self._no_out(out)
        return np.round(self, decimals)

    def dot(self, b, out=None):
        self._no_out(out)
        return np.dot(self, b)

    def nonzero(self):
        raise TraceError("nonzero (its output size depends on the values)")


def _binary(ufunc):
    def op(self, other):
        return NotImplemented if other is None else ufunc(self, other)

    def rop(self, other):
        return NotImplemented if other is None else ufunc(other, self)

    return op, rop


for _name_, _uf in [("add", np.add), ("sub", np.subtract), ("mul", np.multiply), ("truediv", np.true_divide),
                    ("floordiv", np.floor_divide), ("mod", np.remainder), ("pow", np.power),
                    ("matmul", np.matmul), ("and", np.bitwise_and), ("or", np.bitwise_or), ("xor", np.bitwise_xor)]:
    _op, _rop = _binary(_uf)
    setattr(Sym, f"__{_name_}__", _op)
    setattr(Sym, f"__r{_name_}__", _rop)
for _name_, _uf in [("lt", np.less), ("le", np.less_equal), ("gt", np.greater), ("ge", np.greater_equal),
                    ("eq", np.equal), ("ne", np.not_equal)]:
    setattr(Sym, f"__{_name_}__", _binary(_uf)[0])
Sym.__neg__ = lambda self: np.negative(self)
Sym.__pos__ = lambda self: _alias(self)
Sym.__abs__ = lambda self: np.absolute(self)
Sym.__invert__ = lambda self: np.invert(self)

# ---------------------------------------------------------------------------------------------- helpers


def _probes(v):
    """`v` with every Sym replaced by its probe (inside lists, tuples and dicts)."""
    if isinstance(v, Sym):
        return v.probe
    if type(v) in (list, tuple):
        return type(v)(_probes(x) for x in v)
    if type(v) is dict:
        return {k: _probes(x) for k, x in v.items()}
    return v


def _find(v) -> Sym | None:
    if isinstance(v, Sym):
        return v
    if type(v) in (list, tuple):
        for x in v:
            s = _find(x)
            if s is not None:
                return s
    if type(v) is dict:
        return _find(list(v.values()))
    return None


def _tape(*values) -> _Tape:
    s = _find(values)
    if s is None:
        raise TraceError("no traced tensor among the arguments")
    return s.tape


def _onnx_type(dtype) -> int:
    try:
        return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    except (KeyError, TypeError, ValueError):
        raise TraceError(f"the dtype {dtype} has no ONNX type") from None


def _new(t: _Tape, op_type: str, inputs, probe, **attrs) -> Sym:
    return Sym(t, t.node(op_type, list(inputs), **attrs), probe)


def _alias(s: Sym) -> Sym:
    """A new Sym for the same value (numpy copies: in-place writes to one must not change the other)."""
    return Sym(s.tape, s.name, s.probe)


def _cast(s: Sym, dtype) -> Sym:
    dtype = np.dtype(dtype)
    if s.dtype == dtype:
        return s
    key = (s.name, dtype.str)
    hit = s.tape.casts.get(key)
    if hit is None:
        hit = s.tape.casts[key] = _new(s.tape, "Cast", [s.name], s.probe.astype(dtype), to=_onnx_type(dtype))
    return _alias(hit)


def _lift(t: _Tape, v, dtype=None) -> Sym:
    """`v` as a Sym of tape `t` (a constant becomes an initializer), cast to `dtype` if given."""
    if isinstance(v, Sym):
        if v.tape is not t:
            raise TraceError("values of two different traces meet")
        return v if dtype is None else _cast(v, dtype)
    arr = _asarray(v) if dtype is None else _asarray(v, dtype=dtype)
    if arr.dtype == object:
        raise TraceError(f"{type(v).__name__} {str(v)[:40]} used as a tensor")
    return Sym(t, t.array(arr), arr)


def _name(t: _Tape, v, dtype=None) -> str:
    return _lift(t, v, dtype).name


def _as(y, probe) -> Sym:
    """The traced result `y` checked against numpy's own result `probe` (shape), in numpy's dtype."""
    probe = _asarray(probe)
    if not isinstance(y, Sym):
        raise TraceError("an operation on a traced tensor gave a constant")
    if y.shape != probe.shape:
        raise TraceError(f"internal: the traced shape {y.shape} differs from numpy's {probe.shape}")
    y = _cast(y, probe.dtype)
    return Sym(y.tape, y.name, probe)


def _dtype_arg(v):
    """What np.result_type should see for an operand (Python scalars stay weak, as numpy treats them)."""
    if isinstance(v, Sym):
        return v.probe
    if isinstance(v, (bool, int, float, complex)):
        return v
    return _asarray(v)


def _is_scalar(v) -> bool:
    return not isinstance(v, Sym) and np.ndim(v) == 0


def _axes(axis, ndim: int) -> tuple:
    if axis is None:
        return tuple(range(ndim))
    return tuple(sorted(normalize_axis_tuple(axis, ndim)))


# ---------------------------------------------------------------------------------------------- handler tables

# filled by trace_ufuncs and trace_functions when imported (trace.py imports both before any trace runs)
FUNCTIONS: dict[Callable, Callable] = {}  # numpy function -> handler(probe, *args, **kwargs)
HOOKS: dict[str, Callable] = {}  # ops function name -> emit(tape, probe, bound arguments) -> Sym, or None
PROTOCOL: dict[str, Callable] = {}  # "ufunc", "getitem", "setitem" -> the handler module's entry point


def _emits(table: dict, *names: str):
    def deco(fn):
        for n in names:
            table[n] = fn
        return fn
    return deco


def _implements(*funcs):
    def deco(fn):
        for f in funcs:
            if f is not None:
                FUNCTIONS[f] = fn
        return fn
    return deco


def _bound(fn, args, kwargs) -> dict:
    b = inspect.signature(fn).bind(*args, **kwargs)
    b.apply_defaults()
    return dict(b.arguments)
