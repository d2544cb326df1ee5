"""Lowerings of the recurrent layers onto ONNX's native RNN / LSTM / GRU operators (never Loop or Scan).

Keras's gate blocks are reordered (LSTM i,f,c,o -> ONNX i,o,f,c; GRU z,r,h as is), GRU `reset_after` maps to
`linear_before_reset` with the two bias rows as Wb / Rb, and Keras activations map to the operators'
`activations` attribute. A Bidirectional layer whose two halves lower alike is one node with
direction="bidirectional". Sequences run time-major inside the graph: a sequence output keeps that layout
(perm (1, 0, 2)), so stacked recurrent layers need no Transpose between them.

Masks are exact without a loop: each sample's valid steps are moved to the front (a stable TopK on
mask * T - t), the operator runs with `sequence_lens` = the number of valid steps, and outputs are gathered back
to Keras's timesteps (a masked step repeats the previous output, zeros before the first valid step, or zeros
with `zero_output_for_mask`). Stateful layers take their states as extra graph inputs `<layer>/state_h_in`
(`state_c_in` for LSTM; `forward_` / `backward_` prefixed in Bidirectional) and give the final states as
outputs `<layer>/state_h_out`, ... .
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import TensorProto, helper

from .activations import activation_name
from .context import LoweringContext
from .refs import TensorRef
from .registry import lowers, unsupported

# Keras activation -> (ONNX RNN activation, alpha, beta); None: the activation takes no such parameter.
# onnxruntime reads activation_alpha / activation_beta in activation order, one value per activation that uses it.
ONNX_ACTIVATIONS = {
    "tanh": ("Tanh", None, None),
    "sigmoid": ("Sigmoid", None, None),
    "relu": ("Relu", None, None),
    "linear": ("Affine", 1.0, 0.0),
    "hard_sigmoid_keras2": ("HardSigmoid", 0.2, 0.5),
    "hard_sigmoid_keras3": ("HardSigmoid", 1.0 / 6.0, 0.5),
    "elu": ("Elu", 1.0, None),
    "leaky_relu": ("LeakyRelu", 0.2, None),
    "softsign": ("Softsign", None, None),
    "softplus": ("Softplus", None, None),
}
RECURRENT = ("SimpleRNN", "LSTM", "GRU", "CuDNNLSTM", "CuDNNGRU")
_OPS = {"SimpleRNN": ("RNN", 1, [0]), "LSTM": ("LSTM", 4, [0, 3, 1, 2]), "GRU": ("GRU", 3, [0, 1, 2])}
_STATE_NAMES = {1: ("h",), 2: ("h", "c")}
_INT64_MIN = -(2**63)


# ---------------------------------------------------------------------------------------------- weights


@dataclass
class _Spec:
    """One Keras recurrent layer as one direction of an ONNX RNN / LSTM / GRU."""

    op: str
    units: int
    W: np.ndarray  # (G*u, F), ONNX gate order
    R: np.ndarray  # (G*u, u)
    B: np.ndarray | None  # (2*G*u,): Wb then Rb
    acts: tuple
    lbr: int | None  # GRU's linear_before_reset

    def same_op(self, other: _Spec) -> bool:
        return (self.op, self.units, self.acts, self.lbr, self.W.shape) == \
            (other.op, other.units, other.acts, other.lbr, other.W.shape)


def _kind(layer) -> str | None:
    for cls in type(layer).__mro__:
        if cls.__name__ in _OPS:
            return cls.__name__
    return None


def _onnx_activation(layer, fn) -> tuple:
    name = activation_name(fn)  # tells Keras 2's hard_sigmoid from Keras 3's
    if name not in ONNX_ACTIVATIONS:
        raise unsupported(layer, f"the activation {name or getattr(fn, '__name__', fn)!r} (the ONNX recurrent "
                                 "operators take only tanh, sigmoid, relu, hard_sigmoid, linear, elu, leaky_relu, "
                                 "softsign, softplus)")
    return ONNX_ACTIVATIONS[name]


def _spec(layer) -> _Spec:
    kind = _kind(layer)
    if kind is None:
        raise unsupported(layer, "a recurrent cell other than SimpleRNN, LSTM or GRU")
    op, gates, order = _OPS[kind]
    u = layer.units

    def reorder(a):  # gate blocks on the last axis, Keras order -> ONNX order
        blocks = np.split(np.asarray(a, np.float32), gates, axis=-1)
        return np.concatenate([blocks[i] for i in order], axis=-1)

    W = reorder(layer._input_kernel()).T
    R = reorder(layer._state_kernel()).T
    wb = layer._input_bias()
    rb = layer._recurrent_bias() if kind == "GRU" else None
    B = None
    if wb is not None or rb is not None:
        zeros = np.zeros(gates * u, np.float32)
        B = np.concatenate([zeros if wb is None else reorder(wb), zeros if rb is None else reorder(rb)])
    act = _onnx_activation(layer, layer._act)
    if op == "RNN":
        acts = (act,)
    else:
        ract = _onnx_activation(layer, layer._ract)
        acts = (ract, act, act) if op == "LSTM" else (ract, act)
    lbr = int(layer.reset_after) if op == "GRU" else None
    return _Spec(op, u, np.ascontiguousarray(W), np.ascontiguousarray(R), B, acts, lbr)


def _activation_attrs(specs: list[_Spec]) -> dict:
    acts = [a for s in specs for a in s.acts]
    attrs = {"activations": [a[0] for a in acts]}
    alphas = [a[1] for a in acts if a[1] is not None]
    betas = [a[2] for a in acts if a[2] is not None]
    if alphas:
        attrs["activation_alpha"] = [float(v) for v in alphas]
    if betas:
        attrs["activation_beta"] = [float(v) for v in betas]
    return attrs


# ---------------------------------------------------------------------------------------------- masks


@dataclass
class _Mask:
    """A Keras mask, time-major (T, N), and what the compaction derives from it."""

    ctx: LoweringContext
    mask: str  # bool (T, N)
    m: str  # int64 (T, N)
    cum: str  # int64 (T, N): valid steps up to and including t
    count: str  # int64 (N,): valid steps
    lens: str  # int32 (N,): sequence_lens, at least 1 (an all-masked sample's results are replaced)
    _any: str | None = None

    @property
    def any(self) -> str:
        """bool (N, 1): the sample has a valid step (for its states and last output)."""
        if self._any is None:
            ctx = self.ctx
            self._any = ctx.node("Unsqueeze", [ctx.node("Greater", [self.count, ctx.ints([0], "zero")]),
                                               ctx.ints([1], "axes")])
        return self._any


def _mask_info(ctx: LoweringContext, mask_tm: str) -> _Mask:
    m = ctx.node("Cast", [mask_tm], to=TensorProto.INT64)
    cum = ctx.node("CumSum", [m, ctx.const(np.int64(0), "axis", dtype=np.int64)])
    count = ctx.node("ReduceSum", [m, ctx.ints([0], "axes")], keepdims=0)
    lens = ctx.node("Cast", [ctx.node("Max", [count, ctx.ints([1], "one")])], to=TensorProto.INT32)
    return _Mask(ctx, mask_tm, m, cum, count, lens)


def _compact(ctx: LoweringContext, x_tm: str, mk: _Mask) -> str:
    """x (T, N, F) with each sample's valid steps moved to the front, in order (a stable TopK on mask*T - t)."""
    steps = ctx.node("Gather", [ctx.node("Shape", [mk.mask]), ctx.const(np.int64(0), "zero", dtype=np.int64)],
                     axis=0)
    t = ctx.node("Range", [ctx.const(np.int64(0), "zero", dtype=np.int64), steps,
                           ctx.const(np.int64(1), "one", dtype=np.int64)])
    t = ctx.node("Unsqueeze", [ctx.node("Cast", [t], to=TensorProto.FLOAT), ctx.ints([1], "axes")])
    key = ctx.node("Sub", [ctx.node("Mul", [ctx.node("Cast", [mk.mask], to=TensorProto.FLOAT),
                                            ctx.node("Cast", [steps], to=TensorProto.FLOAT)]), t])
    k = ctx.node("Unsqueeze", [steps, ctx.ints([0], "axes")])
    _, order = ctx.node("TopK", [key, k], n_outputs=2, axis=0, largest=1, sorted=1)
    return _gather_time(ctx, x_tm, order)


def _gather_time(ctx: LoweringContext, y_tm: str, index: str) -> str:
    """y (T, N, C) gathered along time with a per-sample index (T, N): out[t, n] = y[index[t, n], n]."""
    idx = ctx.node("Expand", [ctx.node("Unsqueeze", [index, ctx.ints([2], "axes")]), ctx.node("Shape", [y_tm])])
    return ctx.node("GatherElements", [y_tm, idx], axis=0)


# ---------------------------------------------------------------------------------------------- running


@dataclass
class _Result:
    """What one Keras recurrent layer computed: its sequence (T, N, u) in the input's time order (Keras's order
    is that reversed when `flipped`: go_backwards), its last output (N, u) and its final states (N, u)."""

    seq: str | None
    flipped: bool
    last: str | None
    states: list


def _flip_time(ctx: LoweringContext, y: str) -> str:
    return ctx.node("Slice", [y, ctx.ints([-1], "start"), ctx.ints([_INT64_MIN], "end"), ctx.ints([0], "axes"),
                              ctx.ints([-1], "step")])


def _stack_dirs(ctx: LoweringContext, names: list[str]) -> str:
    parts = [ctx.node("Unsqueeze", [n, ctx.ints([0], "axes")]) for n in names]
    return parts[0] if len(parts) == 1 else ctx.node("Concat", parts, axis=0)


def _direction(ctx: LoweringContext, y: str, d: int, n_dirs: int, axis: int) -> str:
    if n_dirs == 1:
        return ctx.node("Squeeze", [y, ctx.ints([axis], "axes")])
    return ctx.node("Gather", [y, ctx.const(np.int64(d), "dir", dtype=np.int64)], axis=axis)


def _emit(ctx: LoweringContext, layers: list, specs: list[_Spec], x_tm: str, lens: str | None,
          inits: list[list[str] | None], wants: list[tuple[bool, int]]) -> list[tuple[str | None, list]]:
    """One ONNX op over `layers` (one, or two of opposite directions).

    Per layer: (Y (T, N, u) or None, final states (N, u), the first `n` of them) for `wants` = (Y?, n) per layer.
    """
    if len(layers) == 2 and layers[0].go_backwards:  # ONNX's bidirectional op takes the forward direction first
        return _emit(ctx, layers[::-1], specs[::-1], x_tm, lens, inits[::-1], wants[::-1])[::-1]
    spec = specs[0]
    direction = "bidirectional" if len(layers) == 2 else ("reverse" if layers[0].go_backwards else "forward")
    W = ctx.const(np.stack([s.W for s in specs]), "W")
    R = ctx.const(np.stack([s.R for s in specs]), "R")
    B = ""
    if any(s.B is not None for s in specs):
        zeros = np.zeros(2 * spec.W.shape[0], np.float32)
        B = ctx.const(np.stack([zeros if s.B is None else s.B for s in specs]), "B")
    n_states = 2 if spec.op == "LSTM" else 1
    init_names = ["", ""]
    if any(i is not None for i in inits):
        for k in range(n_states):
            init_names[k] = _stack_dirs(ctx, [i[k] for i in inits])
    inputs = [x_tm, W, R, B, lens or "", *init_names[:n_states]]
    while inputs[-1] == "":
        inputs.pop()
    attrs = {"hidden_size": spec.units, "direction": direction, **_activation_attrs(specs)}
    if spec.lbr is not None:
        attrs["linear_before_reset"] = spec.lbr
    outs = ctx.node(spec.op, inputs, n_outputs=1 + n_states, **attrs)
    n = len(layers)
    return [(_direction(ctx, outs[0], d, n, axis=1) if want_y else None,
             [_direction(ctx, s, d, n, axis=0) for s in outs[1:1 + n_finals]])
            for d, (want_y, n_finals) in enumerate(wants)]


def _wants(layer) -> tuple[bool, int]:
    """(whether Keras's outputs need the operator's Y, how many of its final states they need)."""
    states = 2 if _kind(layer) == "LSTM" else 1
    if layer.return_state or layer.stateful:
        return bool(layer.return_sequences), states
    return bool(layer.return_sequences), 0 if layer.return_sequences else 1


def _finish(ctx: LoweringContext, layer, y: str | None, finals: list[str], init: list[str] | None,
            mk: _Mask | None) -> _Result:
    """Keras's outputs of `layer` from the operator's Y (T, N, u) and final states."""
    back = bool(layer.go_backwards)
    if mk is None:
        return _Result(y, back, finals[0] if finals else None, list(finals))
    zero = ctx.const(0.0, "zero")
    states = [ctx.node("Where", [mk.any, s, zero if init is None else init[k]]) for k, s in enumerate(finals)]
    last = None
    if not layer.return_sequences:
        if layer.zero_output_for_mask:  # the output of the last step processed, zeros where it is masked
            keep = ctx.node("Gather", [mk.mask, ctx.const(np.int64(0 if back else -1), "last", dtype=np.int64)],
                            axis=0)
            keep = ctx.node("Unsqueeze", [keep, ctx.ints([1], "axes")])
        else:
            keep = mk.any
        last = ctx.node("Where", [keep, finals[0], zero])
    seq = None
    if y is not None:
        # output at t: the compacted output after the valid steps processed so far (forward: those <= t, at
        # index cum-1; backward: those >= t, at index #valid-before-t = cum - m), zeros where none yet
        if back:
            index = ctx.node("Sub", [mk.cum, mk.m])
            valid = ctx.node("Less", [index, mk.count])
        else:
            index = ctx.node("Sub", [mk.cum, ctx.ints([1], "one")])
            valid = ctx.node("Greater", [mk.cum, ctx.ints([0], "zero")])
        keep = ctx.node("Unsqueeze", [mk.mask if layer.zero_output_for_mask else valid, ctx.ints([2], "axes")])
        seq = ctx.node("Where", [keep, _gather_time(ctx, y, index), zero])
    return _Result(seq, back, last, states)


def _run_layers(ctx: LoweringContext, owner, layers: list, x_tm: str, mask_tm: str | None,
                inits: list[list[str] | None], batch) -> list[_Result]:
    """Run Keras recurrent layers (one, or Bidirectional's two) over the time-major input (T, N, F)."""
    specs = [_spec(la) for la in layers]
    for la in layers:
        if mask_tm is not None and type(la).__name__.startswith("CuDNN"):
            raise unsupported(owner, "masking with a CuDNN RNN (Keras refuses it too)")
    prefixes = [""] if len(layers) == 1 else ["forward_", "backward_"]
    stateful = any(la.stateful for la in layers)
    if stateful:
        if any(i is not None for i in inits):
            raise unsupported(owner, "a stateful layer called with initial states")
        inits = [_state_inputs(ctx, owner, la, p, batch) for la, p in zip(layers, prefixes)]
    mk = _mask_info(ctx, mask_tm) if mask_tm is not None else None
    x_run = _compact(ctx, x_tm, mk) if mk is not None else x_tm
    lens = mk.lens if mk is not None else None
    wants = [_wants(la) for la in layers]
    if len(layers) == 2 and specs[0].same_op(specs[1]) and layers[0].go_backwards != layers[1].go_backwards:
        raw = _emit(ctx, layers, specs, x_run, lens, inits, wants)
    else:
        raw = [_emit(ctx, [la], [s], x_run, lens, [i], [w])[0] for la, s, i, w in zip(layers, specs, inits, wants)]
    results = [_finish(ctx, la, y, finals, init, mk) for la, (y, finals), init in zip(layers, raw, inits)]
    if stateful:
        for la, p, r in zip(layers, prefixes, results):
            _state_outputs(ctx, owner, la, p, r.states, batch)
    return results


def _state_inputs(ctx: LoweringContext, owner, layer, prefix: str, batch) -> list[str]:
    names = []
    for s in _STATE_NAMES[2 if _kind(layer) == "LSTM" else 1]:
        name = f"{owner.name}/{prefix}state_{s}_in"
        ctx.extra_inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [batch, layer.units]))
        names.append(name)
    return names


def _state_outputs(ctx: LoweringContext, owner, layer, prefix: str, states: list[str], batch) -> None:
    for s, value in zip(_STATE_NAMES[len(states)], states):
        name = f"{owner.name}/{prefix}state_{s}_out"
        ctx.node("Identity", [value], output=name)
        ctx.extra_outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [batch, layer.units]))


# ---------------------------------------------------------------------------------------------- lowerings


def _sequence_input(ctx: LoweringContext, layer, ins: list[TensorRef], time_major: bool) -> tuple:
    """(x as (T, N, F), mask (T, N) or None, the batch dim for state inputs, initial states as Keras (N, u))."""
    x = ins[0]
    if time_major:
        x_tm = ctx.keras(x).name
        batch = x.shape[1]
    else:
        x_tm = ctx.as_perm(x, (1, 0, 2)).name
        batch = x.shape[0]
    mask = x.mask  # Keras's mask has the input's first two axes: time-major it is already (T, N)
    if mask is not None and not time_major:
        mask = ctx.node("Transpose", [mask], perm=[1, 0])
    states = [ctx.keras(r).name for r in ins[1:]]
    return x_tm, mask, ("N" if batch is None else int(batch)), states


def _keras_sequence(ctx: LoweringContext, seq: str, flip: bool, shape, time_major: bool, mask) -> TensorRef:
    name = _flip_time(ctx, seq) if flip else seq
    return TensorRef(name, tuple(shape), "float32", None if time_major else (1, 0, 2), mask=mask)


@lowers(*RECURRENT, handles_mask=True)
def recurrent(ctx: LoweringContext, layer, ins: list[TensorRef], node) -> list[TensorRef]:
    """SimpleRNN / LSTM / GRU / CuDNNLSTM / CuDNNGRU as one ONNX RNN / LSTM / GRU node."""
    x_tm, mask, batch, states = _sequence_input(ctx, layer, ins, layer.time_major)
    init = states or None
    (res,) = _run_layers(ctx, layer, [layer], x_tm, mask, [init], batch)
    shapes = [v.shape for v in node.outputs]
    if layer.return_sequences:
        out = _keras_sequence(ctx, res.seq, res.flipped, shapes[0], layer.time_major, ins[0].mask)
    else:
        out = TensorRef(res.last, tuple(shapes[0]))
    if not layer.return_state:
        return [out]
    return [out, *(TensorRef(s, tuple(shp)) for s, shp in zip(res.states, shapes[1:]))]


_MERGE_OPS = {"sum": "Add", "mul": "Mul", "ave": "Add"}


@lowers("Bidirectional", handles_mask=True)
def bidirectional(ctx: LoweringContext, layer, ins: list[TensorRef], node) -> list[TensorRef]:
    """Both halves as one ONNX node with direction="bidirectional" when they lower alike, else one node each."""
    fw, bw = layer.forward_layer, layer.backward_layer
    for sub in (fw, bw):
        if _kind(sub) is None:
            raise unsupported(layer, f"a wrapped {type(sub).__name__}")
    if fw.time_major != bw.time_major:
        raise unsupported(layer, "halves of different time_major")
    time_major = fw.time_major
    x_tm, mask, batch, states = _sequence_input(ctx, layer, ins, time_major)
    half = len(states) // 2
    inits = [states[:half], states[half:]] if states else [None, None]
    r_fw, r_bw = _run_layers(ctx, layer, [fw, bw], x_tm, mask, inits, batch)
    shapes = [tuple(v.shape) for v in node.outputs]
    seq_mask = ins[0].mask if layer.return_sequences else None
    if layer.return_sequences:
        # Keras's outputs: y = forward's sequence, y_rev = the backward's sequence reversed again
        y = (r_fw.seq, r_fw.flipped)
        y_rev = (r_bw.seq, not r_bw.flipped)
        if layer.merge_mode is None:
            outs = [_keras_sequence(ctx, n, f, shapes[i], time_major, seq_mask) for i, (n, f) in enumerate((y, y_rev))]
        else:
            flip = y[1]
            if y_rev[1] != flip:  # bring both to one time order; flip the merged result once
                y_rev = (_flip_time(ctx, y_rev[0]), flip)
            merged = _merge(ctx, layer.merge_mode, y[0], y_rev[0], axis=2)
            outs = [_keras_sequence(ctx, merged, flip, shapes[0], time_major, seq_mask)]
    else:
        if layer.merge_mode is None:
            outs = [TensorRef(r_fw.last, shapes[0]), TensorRef(r_bw.last, shapes[1])]
        else:
            outs = [TensorRef(_merge(ctx, layer.merge_mode, r_fw.last, r_bw.last, axis=1), shapes[0])]
    if layer.return_state:  # the forward layer's states, then the backward layer's
        outs += [TensorRef(s, shp) for s, shp in zip([*r_fw.states, *r_bw.states], shapes[len(outs):])]
    return outs


def _merge(ctx: LoweringContext, mode: str, a: str, b: str, axis: int) -> str:
    if mode == "concat":
        return ctx.node("Concat", [a, b], axis=axis)
    y = ctx.node(_MERGE_OPS[mode], [a, b])
    return ctx.node("Div", [y, ctx.const(2.0, "two")]) if mode == "ave" else y
