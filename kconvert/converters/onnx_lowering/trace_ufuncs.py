"""The `__array_ufunc__` handlers (numpy ufuncs on Syms), and the reductions and clip np.* shares."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .trace_core import (
    _NV,
    PROTOCOL,
    Sym,
    TraceError,
    _as,
    _asarray,
    _axes,
    _cast,
    _dtype_arg,
    _emits,
    _is_scalar,
    _lift,
    _name,
    _new,
    _probes,
    _Tape,
    _tape,
)

# ---------------------------------------------------------------------------------------------- ufuncs

UFUNCS: dict[str, Callable] = {}  # ufunc name -> emit(tape, operands, probe) -> Sym


def _same_dtype_op(op_type: str) -> Callable:
    """An ONNX op computing numpy's result with every operand in the result's dtype."""
    def emit(t, args, probe):
        return _new(t, op_type, [_name(t, a, probe.dtype) for a in args], probe)
    return emit


for _uname, _onnx_op in {
        "add": "Add", "subtract": "Sub", "multiply": "Mul", "divide": "Div", "power": "Pow", "fmax": "Max",
        "fmin": "Min", "minimum": "Min", "matmul": "MatMul", "negative": "Neg", "absolute": "Abs", "fabs": "Abs",
        "sign": "Sign", "sqrt": "Sqrt", "exp": "Exp", "log": "Log", "sin": "Sin", "cos": "Cos", "tan": "Tan",
        "arcsin": "Asin", "arccos": "Acos", "arctan": "Atan", "sinh": "Sinh", "cosh": "Cosh", "tanh": "Tanh",
        "arcsinh": "Asinh", "arccosh": "Acosh", "arctanh": "Atanh", "floor": "Floor", "ceil": "Ceil",
        "rint": "Round", "reciprocal": "Reciprocal", "erf": "Erf", "expit": "Sigmoid", "positive": "Identity",
        "conjugate": "Identity"}.items():
    UFUNCS[_uname] = _same_dtype_op(_onnx_op)


@_emits(UFUNCS, "maximum")
def _u_maximum(t, args, probe):
    if probe.dtype.kind == "f" and len(args) == 2:  # max(x, 0) is a ReLU
        for a, b in (args, args[::-1]):
            if isinstance(a, Sym) and _is_scalar(b) and float(b) == 0.0 and a.shape == probe.shape:
                return _new(t, "Relu", [_name(t, a, probe.dtype)], probe)
    return _new(t, "Max", [_name(t, a, probe.dtype) for a in args], probe)


def _compare(op_type: str, negate: bool = False) -> Callable:
    def emit(t, args, probe):
        dtype = np.result_type(*[_dtype_arg(a) for a in args])
        y = _new(t, op_type, [_name(t, a, dtype) for a in args], probe)
        return _new(t, "Not", [y.name], probe) if negate else y
    return emit


for _uname, _onnx_op in {"greater": "Greater", "greater_equal": "GreaterOrEqual", "less": "Less",
                         "less_equal": "LessOrEqual", "equal": "Equal"}.items():
    UFUNCS[_uname] = _compare(_onnx_op)
UFUNCS["not_equal"] = _compare("Equal", negate=True)


def _logical(op_type: str) -> Callable:
    def emit(t, args, probe):
        if probe.dtype != np.bool_:
            raise TraceError(f"bitwise {op_type} of integers")
        return _new(t, op_type, [_name(t, a, np.bool_) for a in args], probe)
    return emit


for _uname, _onnx_op in {"logical_and": "And", "logical_or": "Or", "logical_xor": "Xor", "logical_not": "Not",
                         "bitwise_and": "And", "bitwise_or": "Or", "bitwise_xor": "Xor", "invert": "Not"}.items():
    UFUNCS[_uname] = _logical(_onnx_op)


def _predicate(op_type):
    def emit(t, args, probe):
        x = args[0]
        return _new(t, op_type, [_name(t, x, x.dtype if x.dtype.kind == "f" else np.float32)], probe)
    return emit


UFUNCS["isnan"] = _predicate("IsNaN")
UFUNCS["isinf"] = _predicate("IsInf")


@_emits(UFUNCS, "isfinite")
def _u_isfinite(t, args, probe):
    x = args[0]
    return np.logical_not(np.logical_or(np.isnan(x), np.isinf(x)))


@_emits(UFUNCS, "square")
def _u_square(t, args, probe):
    x = _lift(t, args[0], probe.dtype)
    return _new(t, "Mul", [x.name, x.name], probe)


@_emits(UFUNCS, "expm1")
def _u_expm1(t, args, probe):
    return np.exp(_lift(t, args[0], probe.dtype)) - 1


@_emits(UFUNCS, "log1p")
def _u_log1p(t, args, probe):
    return np.log(_lift(t, args[0], probe.dtype) + 1)


def _log_base(base: float):
    def emit(t, args, probe):
        x = _lift(t, args[0], probe.dtype)
        return np.log(x) * _asarray(1.0 / np.log(base), probe.dtype)
    return emit


UFUNCS["log2"] = _log_base(2.0)
UFUNCS["log10"] = _log_base(10.0)


@_emits(UFUNCS, "exp2")
def _u_exp2(t, args, probe):
    return np.power(_asarray(2.0, probe.dtype), _lift(t, args[0], probe.dtype))


@_emits(UFUNCS, "trunc")
def _u_trunc(t, args, probe):
    x = _lift(t, args[0], probe.dtype)
    return np.where(x < 0, np.ceil(x), np.floor(x))


@_emits(UFUNCS, "floor_divide")
def _u_floor_divide(t, args, probe):
    a, b = (_lift(t, v, probe.dtype) for v in args)
    if probe.dtype.kind == "f":
        return np.floor(a / b)
    rem = _new(t, "Mod", [a.name, b.name], np.remainder(a.probe, b.probe), fmod=0)
    return _new(t, "Div", [_new(t, "Sub", [a.name, rem.name], a.probe - rem.probe).name, b.name], probe)


@_emits(UFUNCS, "remainder")
def _u_remainder(t, args, probe):
    a, b = (_lift(t, v, probe.dtype) for v in args)
    if probe.dtype.kind == "f":  # Python's modulo: the sign of the divisor
        return a - np.floor(a / b) * b
    return _new(t, "Mod", [a.name, b.name], probe, fmod=0)


@_emits(UFUNCS, "fmod")
def _u_fmod(t, args, probe):
    return _new(t, "Mod", [_name(t, a, probe.dtype) for a in args], probe, fmod=1)


@_emits(UFUNCS, "logaddexp")
def _u_logaddexp(t, args, probe):
    a, b = args
    for c, x in ((a, b), (b, a)):  # logaddexp(0, x) is softplus
        if _is_scalar(c) and float(c) == 0.0 and isinstance(x, Sym) and x.shape == probe.shape:
            return _new(t, "Softplus", [_name(t, x, probe.dtype)], probe)
    a, b = _lift(t, a, probe.dtype), _lift(t, b, probe.dtype)
    m = np.maximum(a, b)
    return m + np.log1p(np.exp(-np.abs(a - b)))


@_emits(UFUNCS, "hypot")
def _u_hypot(t, args, probe):
    a, b = (_lift(t, v, probe.dtype) for v in args)
    return np.sqrt(a * a + b * b)


@_emits(UFUNCS, "clip")
def _u_clip(t, args, probe):
    return _clip(probe, *args)


_REDUCE_UFUNCS = {"add": "sum", "multiply": "prod", "maximum": "max", "minimum": "min", "logical_and": "all",
                  "logical_or": "any"}


@_emits(PROTOCOL, "ufunc")
def _ufunc(ufunc, method: str, inputs: tuple, kwargs: dict):
    out = kwargs.pop("out", None)
    if kwargs.pop("where", True) is not True:
        raise TraceError(f"numpy.{ufunc.__name__} with where=")
    for k in ("casting", "order", "subok", "signature"):
        kwargs.pop(k, None)
    t = _tape(inputs)
    name = ufunc.__name__
    if method == "__call__":
        emit = UFUNCS.get(name)
        if emit is None:
            raise TraceError(f"numpy.{name} has no ONNX form in the tracer")
        with np.errstate(all="ignore"):
            probe = ufunc(*_probes(inputs), **kwargs)
        if isinstance(probe, tuple):
            raise TraceError(f"numpy.{name} (several outputs)")
        result = _as(emit(t, list(inputs), _asarray(probe)), probe)
    elif method == "reduce" and name in _REDUCE_UFUNCS:
        x, *rest = inputs
        params = dict(zip(("axis", "dtype"), rest), **kwargs)
        result = _reduce(_REDUCE_UFUNCS[name], x, params.get("axis", 0), params.get("keepdims", False),
                         params.get("dtype"), params.get("initial", _NV))
    elif method == "accumulate" and name == "add":
        x, *rest = inputs
        params = dict(zip(("axis", "dtype"), rest), **kwargs)
        result = np.cumsum(x, axis=params.get("axis", 0), dtype=params.get("dtype"))
    else:
        raise TraceError(f"numpy.{name}.{method} has no ONNX form in the tracer")
    if out is None:
        return result
    target = out[0] if isinstance(out, tuple) else out
    if not isinstance(target, Sym):
        raise TraceError(f"numpy.{name} writing a traced tensor into a numpy array (out=)")
    target._assign(result)
    return target


# ---------------------------------------------------------------------------------------------- reductions

_REDUCE_OPS = {"sum": "ReduceSum", "mean": "ReduceMean", "max": "ReduceMax", "min": "ReduceMin",
               "prod": "ReduceProd"}


def _reduce_node(t: _Tape, op_type: str, x: Sym, axes: tuple, keepdims: bool, probe) -> Sym:
    if op_type == "ReduceSum" or t.opset >= 18:
        return _new(t, op_type, [x.name, t.ints(axes, "axes")], probe, keepdims=int(keepdims))
    return _new(t, op_type, [x.name], probe, axes=list(axes), keepdims=int(keepdims))


def _reduce(kind: str, x, axis=None, keepdims=False, dtype=None, initial=_NV, where=_NV) -> Sym:
    """numpy's sum/mean/prod/max/min/any/all of a traced tensor."""
    if where is not _NV and where is not True:
        raise TraceError(f"numpy {kind} with where=")
    if not isinstance(x, Sym):
        raise TraceError(f"numpy {kind} of a constant with traced arguments")
    keepdims = False if keepdims is _NV else bool(keepdims)
    fn = {"sum": np.sum, "mean": np.mean, "prod": np.prod, "max": np.max, "min": np.min, "any": np.any,
          "all": np.all}[kind]
    kw = {} if dtype is None or kind in ("max", "min", "any", "all") else {"dtype": dtype}
    with np.errstate(all="ignore"):
        probe = _asarray(fn(x.probe, axis=axis, keepdims=keepdims, **kw))
    axes = _axes(axis, x.ndim)
    t = x.tape
    if not axes:
        y = x
    elif kind in ("any", "all") or (kind in ("max", "min") and x.dtype == np.bool_):
        op = "ReduceMax" if kind in ("any", "max") else "ReduceMin"
        f = _cast(_cast(x, np.bool_), np.float32)  # any/all look at truth values
        extreme = np.max if op == "ReduceMax" else np.min
        y = _reduce_node(t, op, f, axes, keepdims, extreme(f.probe, axis=axes, keepdims=keepdims))
    else:
        work = probe.dtype if kind in ("sum", "mean", "prod") else x.dtype
        y = _reduce_node(t, _REDUCE_OPS[kind], _cast(x, work), axes, keepdims, probe.astype(work))
    if initial is not _NV and initial is not None:
        y = {"sum": np.add, "prod": np.multiply, "max": np.maximum, "min": np.minimum}[kind](y, initial)
        probe = _asarray(fn(x.probe, axis=axis, keepdims=keepdims, initial=initial, **kw))
    return _as(y, probe)


def _clip(probe, a, lo=None, hi=None):
    t = _tape(a, lo, hi)
    x = _lift(t, a, probe.dtype)
    if (lo is None or _is_scalar(lo)) and (hi is None or _is_scalar(hi)):
        names = [x.name] + ["" if v is None else _name(t, v, probe.dtype) for v in (lo, hi)]
        while names[-1] == "":
            names.pop()
        return _as(_new(t, "Clip", names, probe), probe)
    y = x if lo is None else np.maximum(x, _lift(t, lo, probe.dtype))
    return _as(y if hi is None else np.minimum(y, _lift(t, hi, probe.dtype)), probe)
