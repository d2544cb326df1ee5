"""Lowering of the ConvLSTMs, unrolled over their static timesteps with native Conv ops."""

from __future__ import annotations

import numpy as np

from ...layers.convolutional import conv_pads
from .activations import apply_activation
from .attention import unsqueeze
from .context import LoweringContext
from .conv import emit_conv
from .refs import TensorRef, channels_first_perm
from .registry import lowers, unsupported
from .wrappers import fold_time, unfold_time


def _step_masks(ctx: LoweringContext, mask: str, rank: int, last: bool) -> str:
    """The mask (N, T, ...) of any rank with size-1 axes appended up to rank + 3 (Keras expands each step's mask
    against the step's output that way), then laid out like the steps (channels-first): Gather(axis=1) gives one
    step's mask."""
    ones = ctx.ints([1] * (rank + 1), "ones")
    target = ctx.node("Slice", [ctx.node("Concat", [ctx.node("Shape", [mask]), ones], axis=0), ctx.ints([0], "starts"),
                                ctx.ints([rank + 3], "ends")])
    mask = ctx.node("Reshape", [mask, target])
    return ctx.node("Transpose", [mask], perm=[0, 1, rank + 2, *range(2, rank + 2)]) if last else mask


@lowers("ConvLSTM1D", "ConvLSTM2D", "ConvLSTM3D", handles_mask=True)
def conv_lstm(ctx, layer, ins, node):
    """Unrolled over the static timesteps, channels-first inside: one Conv for every step's input part, then per
    step a recurrent Conv, the gates (i, f, c, o) and Keras's masking (masked steps keep the states and repeat
    the previous output)."""
    if layer.stateful:
        raise unsupported(layer, "stateful=True")
    if layer.time_major:
        raise unsupported(layer, "time_major=True")
    if len(ins) not in (1, 3):
        raise unsupported(layer, f"{len(ins) - 1} initial states")
    x, rank = ins[0], layer.rank
    steps = x.shape[1]
    if steps is None:
        raise unsupported(layer, "an unknown number of timesteps (the steps are unrolled)")
    last = layer._channels_last
    seq = ctx.as_perm(x, (0, 1, rank + 2, *range(2, rank + 2)) if last else None)  # (N, T, C, *spatial)
    child = fold_time(ctx, seq)
    in_spatial = child.physical_shape()[2:]
    if any(d is None for d in in_spatial):
        raise unsupported(layer, "images of unknown size")
    pads = conv_pads(layer.padding, in_spatial, layer.kernel_size, layer.strides, layer.dilation_rate)
    xp = emit_conv(ctx, child.name, layer.kernel.value, layer.bias.value if layer.bias is not None else None,
                   layer.strides, pads, layer.dilation_rate, 1)
    step_shape = tuple(layer._step_output_shape(x.shape))  # Keras (N, *out, f) or (N, f, *out)
    gates_shape = (*step_shape[:-1], 4 * layer.filters) if last else (step_shape[0], 4 * layer.filters,
                                                                         *step_shape[2:])
    state_perm = channels_first_perm(rank + 2) if last else None
    xp = unfold_time(ctx, TensorRef(xp, gates_shape, "float32", state_perm), seq,
                     (gates_shape[0], steps, *gates_shape[1:])).name  # (N, T, 4f, *out)
    out_spatial = step_shape[1:-1] if last else step_shape[2:]
    phys_step = (None, layer.filters, *out_spatial)
    h = c = None
    if len(ins) == 3:
        h, c = (ctx.as_perm(s, state_perm).name for s in ins[1:])
    ones = (1,) * rank
    rec_pads = conv_pads("same", out_spatial, layer.kernel_size, ones, ones)
    mask = _step_masks(ctx, x.mask, rank, last) if x.mask else None
    zero = ctx.const(np.float32(0.0), "zero")

    def act(name: str, fn) -> str:
        return apply_activation(ctx, TensorRef(name, phys_step), fn, layer).name

    out, outputs = None, []
    for t in (range(steps - 1, -1, -1) if layer.go_backwards else range(steps)):
        z = ctx.node("Gather", [xp, ctx.const(t, "step", np.int64)], axis=1)
        if h is not None:
            z = ctx.node("Add", [z, emit_conv(ctx, h, layer.recurrent_kernel.value, None, ones, rec_pads, ones, 1)])
        zi, zf, zc, zo = ctx.node("Split", [z, ctx.ints([layer.filters] * 4, "split")], n_outputs=4, axis=1)
        ig = ctx.node("Mul", [act(zi, layer._ract), act(zc, layer._act)])
        c_new = ig if c is None else ctx.node("Add", [ctx.node("Mul", [act(zf, layer._ract), c]), ig])
        h_new = ctx.node("Mul", [act(zo, layer._ract), act(c_new, layer._act)])
        if mask is None:
            out, h, c = h_new, h_new, c_new
        else:
            keep = ctx.node("Gather", [mask, ctx.const(t, "step", np.int64)], axis=1)
            fill = zero if layer.zero_output_for_mask or out is None else out
            out = ctx.node("Where", [keep, h_new, fill])
            h = ctx.node("Where", [keep, h_new, zero if h is None else h])
            c = ctx.node("Where", [keep, c_new, zero if c is None else c])
        if layer.return_sequences:
            outputs.append(unsqueeze(ctx, out, [1]))
    shapes = [v.shape for v in node.outputs]
    if layer.return_sequences:
        y = outputs[0] if len(outputs) == 1 else ctx.node("Concat", outputs, axis=1)
        seq_perm = (0, 1, rank + 2, *range(2, rank + 2)) if last else None
        results = [TensorRef(y, shapes[0], "float32", seq_perm, None, x.mask)]
    else:
        results = [TensorRef(out, shapes[0], "float32", state_perm)]
    if layer.return_state:
        results += [TensorRef(h, shapes[1], "float32", state_perm), TensorRef(c, shapes[2], "float32", state_perm)]
    return results
