"""The generic ONNX lowering: a layer's numpy `call`, traced into ONNX nodes.

A layer with no registered lowering is called on `Sym`s, stand-ins for ONNX values that implement numpy's
protocols (`__array_ufunc__`, `__array_function__`, operators, indexing, the array methods). A numpy call that
meets a Sym records ONNX nodes on a tape and also runs on a small numpy *probe* array the Sym carries, so every
traced value has an exact shape and dtype and follows numpy's type rules. Calls on constants only stay in
numpy (constant folding by construction); a constant meeting a Sym becomes an initializer. `np.asarray` and
`np.array` are not dispatched by numpy, so they are patched while a trace runs to hand Syms back; kconvert.ops
functions that have no traceable numpy kernel or a native ONNX op (sigmoid, softmax, erf, conv, pooling,
resize) hand their Sym calls to the tracer through `ops.base.traceable`. `isinstance(sym, np.ndarray)` holds,
so layer code that tells arrays from Python constants treats Syms as arrays.

Sizes unknown until run time (the batch, None dims of the inputs) get probe sizes. The call is traced at every
corner of two probe values per unknown size, and once more at third values: the tapes must agree node for node.
An integer constant that differs between them (a reshape target computed from `x.shape[0]`) is fitted as a
product-linear function of the unknown sizes (`N * T / 2 + 1`), checked on the last trace and computed from
`Shape(input)` at run time, or becomes a 0/-1 in a Reshape; a constant as large as the batch holding the same
values along it (a zero initial state) becomes an Expand. Python control flow on values (`if np.any(x > 0)`),
value-dependent shapes (boolean masks) and other constants computed from the batch size cannot be traced: they
raise `TraceError`, reported as an ExportError naming the layer and the reason.

Masks: a layer's own `compute_mask` is traced too (a mask it makes reaches the layers after it); a masked
input reaching a traced call that takes a mask is refused, as for any lowering that does not handle masks.

Modules: trace_core (Sym, the tape, the shared helpers and handler tables), trace_ufuncs and trace_functions
(the numpy handlers, registered on import), this one (numpy's coercion patch and the driver).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import math
from fractions import Fraction

import numpy as np

from ...errors import ExportError, KConvertError
from ...layers.base import Layer
from ...ops.coercion import numpy_takes
from . import trace_functions, trace_ufuncs  # noqa: F401 - importing them fills the handler tables
from .context import ONNX_DTYPES, LoweringContext
from .refs import UNSUPPORTED_MASK, TensorRef
from .trace_core import (
    Sym,
    TraceError,
    _alias,
    _asarray,
    _cast,
    _find,
    _lift,
    _onnx_type,
    _Tape,
)

__all__ = ["Sym", "TraceError", "trace_lowering"]

# probe sizes of the unknown dims: base, changed, check (several so that a size read in the call shows)
_BATCH_SIZES = (2, 3, 5)
_DIM_SIZES = (8, 12, 16)


# ---------------------------------------------------------------------------------------------- numpy coercion


def _stack_nested(obj):
    """A (nested) list holding Syms as one Sym: np.array([a, b]) stacks."""
    parts = [_stack_nested(v) if type(v) in (list, tuple) else v for v in obj]
    return np.stack(parts) if _find(parts) is not None else _asarray(parts)


def _take_sym(obj, args: tuple, kwargs: dict, copies: bool):
    """np.asarray & co. on a Sym (or a list holding Syms): the Sym itself (stacked, cast to a dtype asked for)."""
    if isinstance(obj, Sym) or (type(obj) in (list, tuple) and _find(obj) is not None):
        dtype = args[0] if args else kwargs.get("dtype")
        s = obj if isinstance(obj, Sym) else _stack_nested(obj)
        if dtype is not None:
            s = _cast(s, dtype)
        return _alias(s) if s is obj and copies and kwargs.get("copy", True) is not False else s
    return NotImplemented


def _numpy_takes_syms():
    """While a trace runs, np.asarray / np.array / np.asanyarray / np.ascontiguousarray hand Syms back."""
    return numpy_takes(_take_sym)


# ---------------------------------------------------------------------------------------------- tracing a layer


def _size_key(axis: int) -> str:
    return "batch" if axis == 0 else f"dim{axis}"


def _unknown_sizes(refs: list[TensorRef]) -> dict[str, tuple[int, int]]:
    """Each unknown size -> (input index, axis) it is read from at run time; None dims on one axis share a size."""
    src: dict[str, tuple[int, int]] = {}
    for i, r in enumerate(refs):
        for axis, d in enumerate(r.shape):
            if d is None:
                src.setdefault(_size_key(axis), (i, axis))
    return src


def _plans(keys: list[str]) -> list[dict[str, int]]:
    """Probe sizes of each trace: every corner (each unknown size at its base or changed value), then all sizes
    at a third value (the check of the fit)."""
    sizes = {k: _BATCH_SIZES if k == "batch" else _DIM_SIZES for k in keys}
    plans = [dict(zip(keys, corner)) for corner in itertools.product(*[sizes[k][:2] for k in keys])]
    if keys:
        plans.append({k: s[2] for k, s in sizes.items()})
    return plans


def _probe_input(rng: np.random.Generator, shape: tuple, dtype: str) -> np.ndarray:
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return rng.random(shape) < 0.5
    if dtype.kind in "iu":
        return rng.integers(0, 2, shape).astype(dtype)
    return rng.uniform(0.25, 1.0, shape).astype(dtype)


def _reason(e: BaseException) -> TraceError:
    """The TraceError behind an exception raised by the layer's code (which may have wrapped it)."""
    seen = e
    while seen is not None:
        if isinstance(seen, TraceError):
            return seen
        seen = seen.__cause__ or seen.__context__
    if isinstance(e, KConvertError):
        return TraceError(str(e))
    return TraceError(f"the call failed on traced tensors ({type(e).__name__}: {e})")


@contextlib.contextmanager
def _state_kept(layer):
    """A traced call leaves nothing behind in the layer: attributes and weight values are put back."""
    attrs = dict(vars(layer))
    weights = [(w, w.value, w.stamp) for w in layer.weights]
    try:
        yield
    finally:
        for k in set(vars(layer)) - set(attrs):
            delattr(layer, k)
        vars(layer).update(attrs)
        for w, value, stamp in weights:
            if w.value is not value:
                w._value, w.stamp = value, stamp


def _trace(layer, node, refs: list[TensorRef], sizes: dict, opset: int, with_mask: bool) -> _Tape:
    tape = _Tape(opset)
    rng = np.random.default_rng(0)
    syms = []
    for i, r in enumerate(refs):
        shape = tuple(sizes[_size_key(a)] if d is None else int(d) for a, d in enumerate(r.shape))
        name = f"input#{i}"
        tape.inputs.append(name)
        syms.append(Sym(tape, name, _probe_input(rng, shape, r.dtype)))
    args = node.call_args(syms)
    kwargs = {k: v for k, v in node.kwargs.items() if not k.startswith("_") and k not in ("mask", "training")}
    with _numpy_takes_syms(), np.errstate(all="ignore"), _state_kept(layer):
        try:
            out = layer.call(args, **layer._call_kwargs(kwargs)) if kwargs else layer.call(args)
        except Exception as e:  # noqa: BLE001 - the layer's code may raise anything on Syms; the reason is kept
            raise _reason(e) from e
        outs = list(out) if isinstance(out, (list, tuple)) else [out]
        for o in outs:
            s = o if isinstance(o, Sym) else _lift(tape, o)
            tape.outputs.append(s.name)
            tape.out_probes.append(s.probe)
        if with_mask:  # a layer making a mask (Embedding's mask_zero, Masking): the mask is traced too
            try:
                m = layer.compute_mask(args, None)
                masks = list(m) if isinstance(m, (list, tuple)) else [m] * len(outs)
                tape.masks = [None if v is None else _lift(tape, v, np.bool_).name for v in masks]
            except Exception:  # noqa: BLE001 - a mask that cannot be traced only fails the layers that use it
                tape.masks = None
    return tape


def _attr_key(attrs: dict) -> str:
    return repr(sorted(attrs.items()))


def _check_same_path(tapes: list[_Tape]) -> None:
    first = tapes[0]
    for t in tapes[1:]:
        if (len(t.nodes) != len(first.nodes) or t.outputs != first.outputs or t.masks != first.masks
                or set(t.consts) != set(first.consts)):
            raise TraceError("the call computes differently for another batch size or input size")
        for a, b in zip(first.nodes, t.nodes):
            if a[:3] != b[:3]:
                raise TraceError("the call computes differently for another batch size or input size")
            if _attr_key(a[3]) != _attr_key(b[3]):
                raise TraceError(f"an attribute of its {a[0]} depends on the batch size or an input size")


def _same_array(a: np.ndarray, b: np.ndarray) -> bool:
    if a is b:
        return True
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    return bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))


class _Emitter:
    """Writes the traced nodes into the lowering context, computing size-dependent constants at run time."""

    def __init__(self, ctx: LoweringContext, tapes: list[_Tape], plans: list[dict], sources: dict,
                 refs: list[TensorRef]):
        self.ctx, self.tapes, self.plans, self.sources, self.refs = ctx, tapes, plans, sources, refs
        self.keys = list(sources)
        self.env: dict[str, str] = {n: r.name for n, r in zip(tapes[0].inputs, refs)}
        self._shape_nodes: dict[int, str] = {}
        self._sizes: dict[str, str] = {}
        self._static: dict[tuple, str] = {}

    # a size expression: ((monomial, coefficient), ...), a monomial being a tuple of unknown sizes' keys;
    # the constant term has the monomial (). E.g. batch * time / 2 + 1 is ((("batch", "dim1"), 1/2), ((), 1)).
    def fit(self, values: list[int]) -> tuple | None:
        """The multilinear function of the unknown sizes giving `values` in every trace, or None."""
        if all(v == values[0] for v in values):
            return (((), Fraction(int(values[0]))),)
        corners = self.plans[:2 ** len(self.keys)]
        monomials = [m for r in range(len(self.keys) + 1) for m in itertools.combinations(self.keys, r)]
        design = np.array([[math.prod(p[k] for k in m) for m in monomials] for p in corners], np.float64)
        coef = np.linalg.solve(design, np.asarray(values[:len(corners)], np.float64))
        expr = tuple((m, Fraction(float(c)).limit_denominator(1000)) for m, c in zip(monomials, coef)
                     if abs(c) > 1e-9)
        for p, v in zip(self.plans, values):
            if sum(c * math.prod(p[k] for k in m) for m, c in expr) != v:
                return None
        return expr

    @staticmethod
    def static_value(expr: tuple | None) -> int | None:
        if expr is None or any(m for m, _ in expr):
            return None
        return int(sum(c for _, c in expr))

    def dims(self, name: str) -> list | None:
        shapes = [t.shapes.get(name) for t in self.tapes]
        if any(s is None or len(s) != len(shapes[0]) for s in shapes):
            return None
        return [self.fit([s[i] for s in shapes]) for i in range(len(shapes[0]))]

    def size(self, key: str) -> str:
        """A 1-D int64 tensor [the unknown size `key`], read from the input's shape."""
        if key not in self._sizes:
            i, axis = self.sources[key]
            if i not in self._shape_nodes:
                self._shape_nodes[i] = self.ctx.node("Shape", [self.refs[i].name])
            self._sizes[key] = self.ctx.node("Slice", [self._shape_nodes[i], self.ctx.ints([axis], "start"),
                                                       self.ctx.ints([axis + 1], "end")])
        return self._sizes[key]

    def term(self, expr: tuple) -> str:
        """A 1-D int64 tensor [the value of `expr`] computed from the input shapes."""
        ctx = self.ctx
        scale = math.lcm(*[c.denominator for _, c in expr])
        total, offset = None, 0
        for mono, c in expr:
            k = int(c * scale)
            if not mono:
                offset += k
                continue
            y = self.size(mono[0])
            for key in mono[1:]:
                y = ctx.node("Mul", [y, self.size(key)])
            if k != 1:
                y = ctx.node("Mul", [y, ctx.ints([k], "coef")])
            total = y if total is None else ctx.node("Add", [total, y])
        if offset:
            total = ctx.node("Add", [total, ctx.ints([offset], "offset")])
        return total if scale == 1 else ctx.node("Div", [total, ctx.ints([scale], "divisor")])

    def runtime_ints(self, exprs: list, shape: tuple, dtype) -> str:
        ctx, pieces, run = self.ctx, [], []
        for expr in exprs:
            value = self.static_value(expr)
            if value is not None:
                run.append(value)
                continue
            if run:
                pieces.append(ctx.ints(run, "shape"))
                run = []
            pieces.append(self.term(expr))
        if run:
            pieces.append(ctx.ints(run, "shape"))
        y = pieces[0] if len(pieces) == 1 else ctx.node("Concat", pieces, axis=0)
        if len(shape) == 0:
            y = ctx.node("Squeeze", [y, ctx.ints([0], "axes")])
        elif len(shape) > 1:
            y = ctx.node("Reshape", [y, ctx.ints(list(shape), "shape")])
        if np.dtype(dtype) != np.int64:
            y = ctx.node("Cast", [y], to=_onnx_type(dtype))
        return y

    def static(self, arr: np.ndarray, hint: str) -> str:
        key = (arr.dtype.str, arr.shape, hashlib.sha1(np.ascontiguousarray(arr).tobytes()).hexdigest())
        if key not in self._static:
            self._static[key] = self.ctx.const(arr, hint, dtype=arr.dtype)
        return self._static[key]

    def const(self, name: str, consumer: tuple | None = None) -> str:
        arrs = [t.consts[name] for t in self.tapes]
        first, hint = arrs[0], self.tapes[0].hints.get(name, "const")
        if all(_same_array(first, a) for a in arrs[1:]):
            return self.static(first, hint)
        if any(a.shape != first.shape or a.dtype != first.dtype for a in arrs):
            return self.broadcast(arrs, hint)
        if first.dtype.kind not in "iu" and not all(a.dtype.kind == "f" and np.all(np.isfinite(a)) and
                                                    np.all(a == np.round(a)) for a in arrs):
            raise TraceError("a float constant computed in the call depends on the batch size or an input size")
        exprs = [self.fit([int(a.reshape(-1)[j]) for a in arrs]) for j in range(first.size)]
        if consumer is not None:
            exprs = self.relative(exprs, *consumer)
        if any(e is None for e in exprs):
            raise TraceError("a shape value computed in the call is not a product-linear function of the batch "
                             "size and the input sizes")
        values = [self.static_value(e) for e in exprs]
        if all(v is not None for v in values):
            return self.static(np.asarray(values, first.dtype).reshape(first.shape), hint)
        return self.runtime_ints(exprs, first.shape, first.dtype)

    def relative(self, exprs: list, op_type: str, data: str) -> list:
        """A Reshape target copies (0) or infers (-1) the sizes it can; an Expand keeps (1) the input's sizes."""
        dims = self.dims(data) or []
        exprs = list(exprs)
        dynamic = [i for i, e in enumerate(exprs) if self.static_value(e) is None]
        if op_type == "Reshape":
            for i in list(dynamic):
                if i < len(dims) and exprs[i] is not None and dims[i] == exprs[i]:
                    exprs[i] = (((), Fraction(0)),)
                    dynamic.remove(i)
            if len(dynamic) == 1 and all(self.static_value(e) != -1 for e in exprs):
                exprs[dynamic[0]] = (((), Fraction(-1)),)
        elif op_type == "Expand":
            offset = len(exprs) - len(dims)
            for i in dynamic:
                if i >= offset and exprs[i] is not None and dims[i - offset] == exprs[i]:
                    exprs[i] = (((), Fraction(1)),)
        return exprs

    def broadcast(self, arrs: list[np.ndarray], hint: str) -> str:
        """A constant whose shape depends on the unknown sizes (an initial state computed on zeros): the same
        values along those axes, expanded to the run-time shape."""
        first = arrs[0]
        error = TraceError("a constant computed in the call has a shape that depends on the batch size or an "
                           "input size")
        if any(a.ndim != first.ndim or a.dtype != first.dtype or not a.size for a in arrs):
            raise error
        varying = [i for i in range(first.ndim) if len({a.shape[i] for a in arrs}) > 1]
        bases = []
        for a in arrs:
            for i in varying:
                row = np.take(a, [0], axis=i)
                if not np.array_equal(a, np.broadcast_to(row, a.shape), equal_nan=a.dtype.kind in "fc"):
                    raise error
                a = row
            bases.append(a)
        if not all(_same_array(bases[0], b) for b in bases[1:]):
            raise error
        exprs = [self.fit([a.shape[i] for a in arrs]) for i in range(first.ndim)]
        if any(e is None for e in exprs):
            raise error
        shape = self.runtime_ints(exprs, (first.ndim,), np.int64)
        return self.ctx.node("Expand", [self.static(bases[0], hint), shape])

    def emit(self, names: list[str]) -> list[str]:
        """Emit the nodes computing the tape values `names`; their ONNX names."""
        first = self.tapes[0]
        needed = set(names)
        kept = []
        for node in reversed(first.nodes):
            if any(o in needed for o in node[2]):
                kept.append(node)
                needed.update(i for i in node[1] if i)
        for op_type, inputs, outputs, attrs in reversed(kept):
            args = []
            for j, n in enumerate(inputs):
                consumer = (op_type, inputs[0]) if j == 1 and op_type in ("Reshape", "Expand") else None
                args.append(self.value(n, consumer))
            made = self.ctx.node(op_type, args, n_outputs=len(outputs), **attrs)
            for o, m in zip(outputs, [made] if len(outputs) == 1 else made):
                self.env[o] = m
        return [self.value(n) for n in names]

    def value(self, name: str, consumer: tuple | None = None) -> str:
        if name == "":
            return ""
        if name not in self.env:
            if name not in self.tapes[0].consts:
                raise TraceError(f"internal: the value {name} has no producer")
            return self.const(name, consumer)
        return self.env[name]


def _lower_traced(ctx: LoweringContext, layer, refs: list[TensorRef], node, masks: list) -> list[TensorRef]:
    if getattr(layer, "stateful", False):
        raise TraceError("a stateful layer keeps its state between calls")
    sources = _unknown_sizes(refs)
    plans = _plans(list(sources))
    with_mask = masks is None
    tapes = [_trace(layer, node, refs, sizes, ctx.opset, with_mask) for sizes in plans]
    if len(tapes[0].outputs) != len(node.outputs):
        raise TraceError(f"the call returned {len(tapes[0].outputs)} tensors, the layer has {len(node.outputs)} "
                         "outputs")
    _check_same_path(tapes)
    for t, sizes in zip(tapes, plans):
        for probe, v in zip(t.out_probes, node.outputs):
            expected = tuple(sizes[_size_key(a)] if d is None and a == 0 else d for a, d in enumerate(v.shape))
            if probe.ndim != len(expected) or any(e is not None and e != p for e, p in zip(expected, probe.shape)):
                raise TraceError(f"the traced output has shape {probe.shape}, the layer's output shape is "
                                 f"{v.shape}")
    first = tapes[0]
    traced_masks = [m for m in (first.masks or []) if m is not None]
    names = _Emitter(ctx, tapes, plans, sources, refs).emit(first.outputs + traced_masks)
    found = dict(zip(traced_masks, names[len(first.outputs):]))
    if with_mask:
        masks = [UNSUPPORTED_MASK] * len(node.outputs) if first.masks is None else [found.get(m) for m in first.masks]
    out = []
    for name, probe, v, mask in zip(names, first.out_probes, node.outputs, masks):
        dtype = probe.dtype.name
        target = v.dtype if v.dtype in ONNX_DTYPES else dtype
        if target != dtype:
            name, dtype = ctx.node("Cast", [name], to=ONNX_DTYPES[target]), target
        out.append(TensorRef(name, tuple(v.shape), dtype, mask=mask))
    fold = getattr(ctx, "folded", {}).get(id(layer))
    if fold is not None:
        out[0] = _folded(ctx, layer, out[0], *fold)
    return out


def _folded(ctx: LoweringContext, layer, ref: TensorRef, scale: np.ndarray, shift: np.ndarray) -> TensorRef:
    """The output with the BatchNormalization that the graph passes folded into this layer (y * scale + shift)."""
    shape = [1] * ref.ndim
    shape[ref.ndim - 1 if getattr(layer, "data_format", "channels_last") == "channels_last" else 1] = -1
    y = ctx.node("Mul", [ref.name, ctx.const(scale.reshape(shape), "bn_scale", dtype=ref.dtype)])
    y = ctx.node("Add", [y, ctx.const(shift.reshape(shape), "bn_shift", dtype=ref.dtype)])
    return TensorRef(y, ref.shape, ref.dtype, mask=ref.mask)


def trace_lowering(ctx: LoweringContext, layer, ins: list[TensorRef], node) -> list[TensorRef]:
    """The lowering of a layer without a registered one: its numpy `call`, traced (see the module doc).

    Masks: a masked input reaching a call that takes a mask is an ExportError (the call is traced without it);
    a layer with its own `compute_mask` on unmasked inputs gets its mask traced; others pass masks as Keras does.
    """
    from .export import passed_mask, uses_mask  # export imports this module

    if any(r.mask for r in ins) and uses_mask(layer):
        raise ExportError(f"{type(layer).__name__} with a Keras mask (from Embedding(mask_zero=True) or Masking) "
                          "cannot be lowered to ONNX yet", layer=layer.name)
    makes_mask = type(layer).compute_mask is not Layer.compute_mask and not any(r.mask for r in ins)
    masks = None if makes_mask else [passed_mask(layer, ins)] * len(node.outputs)
    refs = [ctx.keras(r) for r in ins]
    try:
        return _lower_traced(ctx, layer, refs, node, masks)
    except TraceError as e:
        raise ExportError(f"{type(layer).__name__} has no ONNX lowering, and its call cannot be traced into ONNX "
                          f"nodes: {e}", layer=layer.name) from None


trace_lowering.handles_mask = True  # it sets its outputs' masks (and refuses masked inputs its call would use)
