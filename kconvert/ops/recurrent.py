"""The recurrent loop (Keras's `backend.rnn`) on numpy, and the LSTM / GRU / SimpleRNN cell steps.

The layers project the inputs of every timestep at once (one matmul or one convolution over `(N*T, ...)`);
`rnn_scan` then walks the timesteps, calling a step function that adds the recurrent part. Masks follow
Keras exactly: at a masked step every state keeps its previous value and the output repeats the previous
output (zeros before the first step, or always zeros with `zero_output_for_mask`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .base import Op, register, traceable
from .nn import sigmoid

Step = Callable[[np.ndarray, list], tuple]  # (projected input at t, states) -> (output, new states)


def _where(keep: np.ndarray, new: np.ndarray, old: np.ndarray) -> np.ndarray:
    return np.where(keep.reshape(keep.shape + (1,) * (new.ndim - keep.ndim)), new, old)


def rnn_scan(step: Step, inputs: np.ndarray, initial_states: Sequence[np.ndarray], mask: np.ndarray | None = None,
             go_backwards: bool = False, zero_output_for_mask: bool = False,
             return_sequences: bool = True) -> tuple[np.ndarray, np.ndarray | None, list[np.ndarray]]:
    """Run `step` over axis 1 of `inputs` (N, T, ...); returns (last output, outputs (N, T, ...) or None, states).

    With `go_backwards` the steps run from the last timestep to the first and the outputs are stacked in that
    (reversed) order, as Keras returns them. `mask` is a boolean (N, T) array.
    """
    steps = inputs.shape[1]
    if steps == 0:
        raise ValueError("a recurrent layer needs at least one timestep")
    order = range(steps - 1, -1, -1) if go_backwards else range(steps)
    states = list(initial_states)
    mask = None if mask is None else np.asarray(mask, dtype=bool)
    outputs: list[np.ndarray] = []
    out = None
    for t in order:
        new_out, new_states = step(inputs[:, t], states)
        if mask is not None:
            keep = mask[:, t]
            fill = np.zeros_like(new_out) if zero_output_for_mask or out is None else out
            new_out = _where(keep, new_out, fill)
            new_states = [_where(keep, s, s0) for s, s0 in zip(new_states, states)]
        out, states = new_out, list(new_states)
        if return_sequences:
            outputs.append(out)
    return out, (np.stack(outputs, axis=1) if return_sequences else None), states


def lstm_step(z: np.ndarray, c: np.ndarray, act: Callable, recurrent_act: Callable,
              axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """One LSTM update from the summed pre-activations `z` (4 blocks on `axis`), Keras's gate order i, f, c, o."""
    zi, zf, zc, zo = np.split(z, 4, axis=axis)
    c = recurrent_act(zf) * c + recurrent_act(zi) * act(zc)
    h = recurrent_act(zo) * act(c)
    return h, c


def _lstm_gates(z: np.ndarray, c: np.ndarray):
    zi, zf, zc, zo = np.split(z, 4, axis=-1)
    i, f, g, o = sigmoid(zi), sigmoid(zf), np.tanh(zc), sigmoid(zo)
    c_new = f * c + i * g  # lstm_step's order of operations: the same bits
    tc = np.tanh(c_new)
    return np.concatenate([o * tc, c_new], axis=-1), (i, f, g, o, tc)


@register
class LSTMCell(Op):
    """The standard LSTM update (sigmoid gates, tanh) as one op for training: `(z, c) -> [h, c']` concatenated
    on the last axis, `z` the summed pre-activations (gate blocks i, f, c, o). One tape node per timestep instead
    of a dozen; its forward keeps the gates for the backward."""

    name = "lstm_cell"

    @staticmethod
    def forward(z, c):
        return _lstm_gates(z, c)[0]

    @staticmethod
    def forward_saving(needs, z, c):
        return _lstm_gates(z, c)

    @staticmethod
    def backward(grad, inputs, output, saved=None):
        z, c = inputs
        i, f, g, o, tc = saved if saved is not None else _lstm_gates(z, c)[1]
        units = c.shape[-1]
        gh, gc = grad[..., :units], grad[..., units:]
        dc = gc + gh * o * (1 - tc * tc)
        dz = np.concatenate([dc * g * i * (1 - i), dc * c * f * (1 - f), dc * i * (1 - g * g),
                             gh * tc * o * (1 - o)], axis=-1)
        return dz, dc * f


@traceable
def lstm_cell(z: np.ndarray, c: np.ndarray) -> np.ndarray:
    """`lstm_step` with sigmoid and tanh as one op: `[h, c']` concatenated on the last axis."""
    return LSTMCell.forward(z, c)


def _gru_gates(xp: np.ndarray, inner: np.ndarray, h: np.ndarray):
    xz, xr, xh = np.split(xp, 3, axis=-1)
    rz, rr, rh = np.split(inner, 3, axis=-1)
    z, r = sigmoid(xz + rz), sigmoid(xr + rr)
    hh = np.tanh(xh + r * rh)
    return z * h + (1 - z) * hh, (z, r, hh, rh)  # gru_step's order of operations: the same bits


@register
class GRUCell(Op):
    """The reset-after GRU update (sigmoid gates, tanh) as one op for training: `(x_proj, inner, h) -> h'`, with
    `inner` = h @ recurrent_kernel + recurrent bias (gate blocks z, r, h)."""

    name = "gru_cell"

    @staticmethod
    def forward(xp, inner, h):
        return _gru_gates(xp, inner, h)[0]

    @staticmethod
    def forward_saving(needs, xp, inner, h):
        return _gru_gates(xp, inner, h)

    @staticmethod
    def backward(grad, inputs, output, saved=None):
        xp, inner, h = inputs
        z, r, hh, rh = saved if saved is not None else _gru_gates(xp, inner, h)[1]
        dz = grad * (h - hh) * z * (1 - z)
        dh_pre = grad * (1 - z) * (1 - hh * hh)
        dr = dh_pre * rh * r * (1 - r)
        return (np.concatenate([dz, dr, dh_pre], axis=-1), np.concatenate([dz, dr, dh_pre * r], axis=-1),
                grad * z)


@traceable
def gru_cell(xp: np.ndarray, inner: np.ndarray, h: np.ndarray) -> np.ndarray:
    """The reset-after `gru_step` with sigmoid and tanh, after its recurrent product, as one op."""
    return GRUCell.forward(xp, inner, h)


def gru_step(x_proj: np.ndarray, h: np.ndarray, recurrent_kernel: np.ndarray, recurrent_bias: np.ndarray | None,
             reset_after: bool, act: Callable, recurrent_act: Callable, recurrent_masks=None) -> np.ndarray:
    """One GRU update (gate order z, r, h); `x_proj` = x @ kernel + input bias. `recurrent_masks` (training with
    recurrent dropout): the three masks tf_keras's implementation 1 multiplies h by, one per gate, before its
    products (the final mix with h uses h itself)."""
    u = h.shape[-1]
    xz, xr, xh = np.split(x_proj, 3, axis=-1)
    hz, hr, hh_in = (h * m for m in recurrent_masks) if recurrent_masks is not None else (h, h, h)
    if reset_after:  # the candidate's recurrent part is reset after the product
        if recurrent_masks is None:
            inner = h @ recurrent_kernel
        else:
            inner = np.concatenate([hz @ recurrent_kernel[:, :u], hr @ recurrent_kernel[:, u:2 * u],
                                    hh_in @ recurrent_kernel[:, 2 * u:]], axis=-1)
        if recurrent_bias is not None:
            inner = inner + recurrent_bias
        rz, rr, rh = np.split(inner, 3, axis=-1)
        z, r = recurrent_act(xz + rz), recurrent_act(xr + rr)
        hh = act(xh + r * rh)
    else:  # Keras 2's default: the reset gate scales h before its product with the candidate kernel
        if recurrent_masks is None:
            inner = h @ recurrent_kernel[:, :2 * u]
            rz, rr = inner[..., :u], inner[..., u:]
        else:
            rz, rr = hz @ recurrent_kernel[:, :u], hr @ recurrent_kernel[:, u:2 * u]
        z, r = recurrent_act(xz + rz), recurrent_act(xr + rr)
        hh = act(xh + (r * hh_in) @ recurrent_kernel[:, 2 * u:])
    return z * h + (1 - z) * hh
