"""Recurrent layers: SimpleRNN, LSTM, GRU, and the CuDNNLSTM / CuDNNGRU layers of Keras 2.0–2.2 / tf.keras 1.x.

Arguments, configs and weight names follow tf_keras 2.x (`lstm/lstm_cell/kernel:0`; gate blocks i, f, c, o for
LSTM and z, r, h for GRU). The numerics follow Keras's `backend.rnn`: the input projection of every timestep is
one matmul, then each step adds one recurrent matmul (`kconvert.ops.recurrent`). Masked steps keep the previous
states and repeat the previous output; `stateful` layers carry their final states into the next call until
`reset_states()`. `dropout`/`recurrent_dropout` apply in training (`call(..., training=True)`) with tf_keras's
masks: drawn once per batch, fixed over the timesteps, per gate where tf_keras uses one per gate.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import ops
from ..errors import ConfigError, KConvertError, ShapeError
from ..ops.array_module import like, module_of, to_device
from ..ops.recurrent import gru_cell, gru_step, lstm_cell, lstm_step, rnn_scan
from . import activations
from .base import Layer, Weight, current_keras_version, is_shape_list, register_layer
from .config_objects import weight_args_config


class RNNCell:
    """The weights of a layer's recurrent cell: Keras 3 saves them under `<layer>/cell/vars/<i>`."""

    def __init__(self, name: str, weights: list[Weight]):
        self.name = name
        self.weights = weights

    def keras3_state(self) -> tuple[list[Weight], dict[str, Any]]:
        return list(self.weights), {}


def _rate(value) -> float:
    return min(1.0, max(0.0, float(value)))


def split_state_inputs(inputs, mask) -> tuple[np.ndarray, list, Any]:
    """(sequence, initial states, sequence mask) from a call on `x` or on `[x, *initial_states]`."""
    if isinstance(mask, (list, tuple)):
        mask = mask[0] if mask else None
    if isinstance(inputs, (list, tuple)):
        return inputs[0], list(inputs[1:]), mask
    return inputs, [], mask


class Recurrent(Layer):
    """What every recurrent layer shares: the sequence arguments, initial and stateful states, masks, shapes.

    Subclasses give `_project(x)` (the input part of every timestep at once, (N, T, ...)), `_step(xp_t, states)`
    -> (output, new states), `_step_output_shape(input_shape)` (one step's output; every state has that shape
    too) and `n_states`.
    """

    n_states = 1
    cell_name = ""  # tf.keras's name scope of the cell's weights ('lstm_cell'); Keras 3's cell object name

    def __init__(self, return_sequences: bool = False, return_state: bool = False, go_backwards: bool = False,
                 stateful: bool = False, unroll: bool = False, time_major: bool = False,
                 zero_output_for_mask: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.go_backwards = bool(go_backwards)
        self.stateful = bool(stateful)
        self.unroll = bool(unroll)
        self.time_major = bool(time_major)
        self.zero_output_for_mask = bool(zero_output_for_mask)
        self.supports_masking = True
        self._states: list[np.ndarray] | None = None

    # ------------------------------------------------------------------ weights
    def _weight_name(self, name: str) -> str:
        return f"{self.cell_name}/{name}" if self.cell_name else name

    def keras3_state(self):
        return [], {"cell": RNNCell(self.cell_name, self.weights)}

    # ------------------------------------------------------------------ calling
    def __call__(self, inputs, initial_state=None, **kwargs):
        if initial_state is not None:  # Keras makes the initial states extra inputs of the call
            states = list(initial_state) if isinstance(initial_state, (list, tuple)) else [initial_state]
            inputs = [*(inputs if isinstance(inputs, (list, tuple)) else [inputs]), *states]
        return super().__call__(inputs, **kwargs)

    def _sequence_shape(self, input_shape) -> tuple:
        shape = tuple(input_shape[0] if is_shape_list(input_shape) else input_shape)
        return (shape[1], shape[0], *shape[2:]) if self.time_major else shape

    def _zero_states(self, x: np.ndarray) -> list[np.ndarray]:
        shape = (x.shape[0], *self._step_output_shape((None, *x.shape[1:]))[1:])
        return [np.zeros(shape, self.dtype, like=like(x)) for _ in range(self.n_states)]

    def _initial_states(self, x: np.ndarray, given: list) -> list[np.ndarray]:
        given = [to_device(np.asarray(s, self.dtype), module_of(x)) for s in given]
        if given and len(given) != self.n_states:
            raise ShapeError(f"has {self.n_states} states but was passed {len(given)} initial states",
                             layer=self.name)
        if not self.stateful:
            return given or self._zero_states(x)
        if self._states is None:
            self._states = self._zero_states(x)
        if self._states[0].shape[0] != x.shape[0]:
            raise ShapeError(f"is stateful with batch size {self._states[0].shape[0]}, got a batch of "
                             f"{x.shape[0]} samples", layer=self.name)
        # tf.keras takes the given initial states only while the recorded ones are all zero; Keras 3 always
        if given and (self._keras_major >= 3 or not any(np.any(s) for s in self._states)):
            return given
        return [to_device(s, module_of(x)) for s in self._states]  # reset_states leaves them on the host

    def call(self, inputs, mask=None, training=None, initial_state=None):
        x, given, mask = split_state_inputs(inputs, mask)
        if initial_state is not None:
            given = list(initial_state) if isinstance(initial_state, (list, tuple)) else [initial_state]
        x = np.asarray(x)
        if x.dtype != self.dtype:
            x = x.astype(self.dtype)
        if self.time_major:
            x = np.swapaxes(x, 0, 1)
            mask = None if mask is None else np.swapaxes(np.asarray(mask), 0, 1)
        if mask is not None:
            self._check_mask(mask)
        self._dp = self._dropout_masks(x) if training else None
        states = self._initial_states(x, given)
        last, outputs, states = rnn_scan(self._step, self._project(x), states, mask, self.go_backwards,
                                         self.zero_output_for_mask, self.return_sequences)
        if self.stateful:
            self._states = [np.array(s, copy=True) for s in states]
        if self.return_sequences:
            output = np.swapaxes(outputs, 0, 1) if self.time_major else outputs
        else:
            output = last
        return [output, *states] if self.return_state else output

    def _check_mask(self, mask) -> None:
        pass

    def _dropout_masks(self, x):
        """Training-time dropout masks, one draw per call and fixed over the timesteps (None: no dropout)."""
        return None

    def reset_states(self, states=None) -> None:
        """Zero the recorded states of a stateful layer (or set them to `states`)."""
        if not self.stateful:
            raise ConfigError("reset_states() needs a stateful layer (stateful=True)", layer=self.name)
        batch = None
        if self._build_input_shape is not None:
            batch = self._sequence_shape(self._build_input_shape)[0]
        if batch is None and self._states is not None:
            batch = self._states[0].shape[0]
        if states is None:
            if batch is None:
                self._states = None  # created at the first call, from the batch it gets
                return
            shape = (batch, *self._step_output_shape(self._sequence_shape(self._build_input_shape))[1:])
            self._states = [np.zeros(shape, self.dtype) for _ in range(self.n_states)]
            return
        states = [np.asarray(s, self.dtype) for s in (states if isinstance(states, (list, tuple)) else [states])]
        if len(states) != self.n_states:
            raise ShapeError(f"expects {self.n_states} states, received {len(states)}", layer=self.name)
        if self._states is not None and any(s.shape != o.shape for s, o in zip(states, self._states)):
            raise ShapeError(f"states must have shape {self._states[0].shape}, got {[s.shape for s in states]}",
                             layer=self.name)
        self._states = states

    reset_state = reset_states  # Keras 3's name

    @property
    def states(self) -> list:
        return list(self._states) if self._states is not None else [None] * self.n_states

    def _build_states(self) -> None:
        if self.stateful:
            self.reset_states()

    # ------------------------------------------------------------------ shapes and masks
    def compute_output_shape(self, input_shape):
        shape = self._sequence_shape(input_shape)
        step = tuple(self._step_output_shape(shape))
        if self.return_sequences:
            out = (shape[1], shape[0], *step[1:]) if self.time_major else (shape[0], shape[1], *step[1:])
        else:
            out = step
        return [out] + [step] * self.n_states if self.return_state else out

    def compute_output_layout(self, input_layouts, output_shape):
        return None

    def compute_mask(self, inputs, mask=None):
        if isinstance(mask, (list, tuple)):
            mask = mask[0] if mask else None
        out = mask if self.return_sequences else None
        return [out] + [None] * self.n_states if self.return_state else out

    def _sequence_config(self) -> dict:
        config = {"return_sequences": self.return_sequences, "return_state": self.return_state,
                  "go_backwards": self.go_backwards, "stateful": self.stateful, "unroll": self.unroll,
                  "time_major": self.time_major}
        if self.zero_output_for_mask:
            config["zero_output_for_mask"] = True
        return config


class _DenseRNN(Recurrent):
    """A recurrent layer whose cell is dense: kernel (in, G*u), recurrent_kernel (u, G*u), bias."""

    gates = 1

    def __init__(self, units: int, activation: Any = "tanh", recurrent_activation: Any = "sigmoid",
                 use_bias: bool = True, kernel_initializer: Any = "glorot_uniform",
                 recurrent_initializer: Any = "orthogonal", bias_initializer: Any = "zeros",
                 kernel_regularizer=None, recurrent_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, kernel_constraint=None, recurrent_constraint=None, bias_constraint=None,
                 dropout: float = 0.0, recurrent_dropout: float = 0.0, seed=None, **kwargs):
        kwargs.pop("use_cudnn", None)  # Keras 3: a backend choice, same numbers
        super().__init__(**kwargs)
        if isinstance(units, bool) or not isinstance(units, (int, np.integer, float)) or units <= 0:
            raise ConfigError(f"units must be a positive integer, got {units!r}", layer=self.name)
        self.units = int(units)
        self.activation = activation
        self.recurrent_activation = recurrent_activation
        self._act = activations.get(activation)
        self._ract = activations.get(recurrent_activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = kernel_initializer
        self.recurrent_initializer = recurrent_initializer
        self.bias_initializer = bias_initializer
        self.kernel_regularizer = kernel_regularizer
        self.recurrent_regularizer = recurrent_regularizer
        self.bias_regularizer = bias_regularizer
        self.activity_regularizer = activity_regularizer
        self.kernel_constraint = kernel_constraint
        self.recurrent_constraint = recurrent_constraint
        self.bias_constraint = bias_constraint
        self.dropout = _rate(dropout)
        self.recurrent_dropout = _rate(recurrent_dropout)
        self.seed = seed

    def _bias_shape(self) -> tuple:
        return (self.gates * self.units,)

    def _bias_initializer(self):
        return self.bias_initializer

    def build(self, input_shape):
        shape = self._sequence_shape(input_shape)
        if len(shape) != 3 or shape[-1] is None:
            raise ValueError(f"{type(self).__name__} expects inputs of shape (batch, timesteps, features) with "
                             f"known features, got {shape}")
        g = self.gates * self.units
        self.kernel = self.add_weight(self._weight_name("kernel"), (shape[-1], g), self.kernel_initializer)
        self.recurrent_kernel = self.add_weight(self._weight_name("recurrent_kernel"), (self.units, g),
                                                self.recurrent_initializer)
        self.bias = (self.add_weight(self._weight_name("bias"), self._bias_shape(), self._bias_initializer())
                     if self.use_bias else None)
        self._build_states()

    def _input_bias(self):
        return None if self.bias is None else self.bias.value

    def _input_kernel(self):
        return self.kernel.value

    def _state_kernel(self):
        return self.recurrent_kernel.value

    def _dropout_masks(self, x):
        """tf_keras's cell masks (inverted dropout, drawn once per batch): one input mask for every gate, or with
        `recurrent_dropout` (tf_keras then switches to implementation 1) one input and one recurrent mask per
        gate. Returns (input masks (N, F) or None, recurrent masks (N, units) or None)."""
        if not (self.dropout or self.recurrent_dropout):
            return None
        rng = np.random.default_rng(self.seed if isinstance(self.seed, int) else None)
        per_gate = self.gates if self.recurrent_dropout and self.gates > 1 else 1

        def draw(rate: float, width: int) -> list | None:
            if not rate:
                return None
            keep = np.float32(1.0 - rate)
            return [to_device((rng.random((x.shape[0], width)) < keep).astype(self.dtype) / keep, module_of(x))
                    for _ in range(per_gate)]

        recurrent = draw(self.recurrent_dropout, self.units)
        if recurrent is not None and self.gates == 1:
            recurrent = recurrent[:1]
        return draw(self.dropout, x.shape[-1]), recurrent

    def _project(self, x):
        kernel = self._input_kernel()
        masks = self._dp[0] if getattr(self, "_dp", None) else None
        if masks is None:
            xp = ops.matmul(x, kernel)
        elif len(masks) == 1:
            xp = ops.matmul(x * masks[0][:, None, :], kernel)
        else:  # one mask per gate block of the kernel
            u = self.units
            xp = np.concatenate([ops.matmul(x * m[:, None, :], kernel[:, k * u:(k + 1) * u])
                                 for k, m in enumerate(masks)], axis=-1)
        b = self._input_bias()
        return xp if b is None else xp + b

    def _recurrent_masks(self):
        return self._dp[1] if getattr(self, "_dp", None) else None

    def _recurrent_product(self, h):
        """h @ recurrent_kernel, each gate block from h times its recurrent dropout mask when training."""
        masks = self._recurrent_masks()
        kernel = self._state_kernel()
        if masks is None:
            return ops.matmul(h, kernel)
        if len(masks) == 1:
            return ops.matmul(h * masks[0], kernel)
        u = self.units
        return np.concatenate([ops.matmul(h * m, kernel[:, k * u:(k + 1) * u]) for k, m in enumerate(masks)],
                              axis=-1)

    def _step_output_shape(self, input_shape):
        return (input_shape[0], self.units)

    def get_config(self):
        return {**super().get_config(), **self._sequence_config(), "units": self.units,
                "activation": activations.serialize(self.activation)}

    def _weights_config(self) -> dict:
        return {"use_bias": self.use_bias, **weight_args_config(self, ("kernel", "recurrent", "bias"), activity=True)}

    def _dropout_config(self) -> dict:
        return {"dropout": self.dropout, "recurrent_dropout": self.recurrent_dropout}


@register_layer()
class SimpleRNN(_DenseRNN):
    """h_t = activation(x_t @ kernel + bias + h_{t-1} @ recurrent_kernel)."""

    cell_name = "simple_rnn_cell"

    def __init__(self, units, activation="tanh", **kwargs):
        super().__init__(units, activation=activation, **kwargs)

    def _step(self, xp, states):
        h = self._act(xp + self._recurrent_product(states[0]))
        return h, [h]

    def get_config(self):
        return {**super().get_config(), **self._weights_config(), **self._dropout_config()}


def _unit_forget_bias(initializer, units: int):
    from .initializers import get as get_initializer

    init = get_initializer(initializer)

    def bias(shape, dtype="float32"):
        n = shape[0] // units  # 4 blocks, or 8 for CuDNN (forget gate of the input bias only)
        return np.concatenate([init((units,), dtype), np.ones((units,), dtype), init(((n - 2) * units,), dtype)])

    return bias


@register_layer()
class LSTM(_DenseRNN):
    """Long short-term memory, gate blocks i, f, c, o; states [h, c]."""

    cell_name = "lstm_cell"
    gates = 4
    n_states = 2

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", unit_forget_bias: bool = True,
                 implementation: int = 2, **kwargs):
        super().__init__(units, activation=activation, recurrent_activation=recurrent_activation, **kwargs)
        self.unit_forget_bias = bool(unit_forget_bias)
        # tf_keras: "RNN `implementation=2` is not supported when `recurrent_dropout` is set. Using 1."
        self.implementation = 1 if self.recurrent_dropout else implementation

    def _bias_initializer(self):
        return _unit_forget_bias(self.bias_initializer, self.units) if self.unit_forget_bias else self.bias_initializer

    def _step(self, xp, states):
        z = xp + self._recurrent_product(states[0])
        if self._act is np.tanh and self._ract is ops.sigmoid:  # the fused cell: one tape node per step
            hc = lstm_cell(z, states[1])
            h, c = hc[..., :self.units], hc[..., self.units:]
        else:
            h, c = lstm_step(z, states[1], self._act, self._ract)
        return h, [h, c]

    def get_config(self):
        return {**super().get_config(), "recurrent_activation": activations.serialize(self.recurrent_activation),
                **self._weights_config(), "unit_forget_bias": self.unit_forget_bias, **self._dropout_config(),
                "implementation": self.implementation}


@register_layer()
class GRU(_DenseRNN):
    """Gated recurrent unit, gate blocks z, r, h; `reset_after` bias (2, 3u) (input row, recurrent row) else (3u,)."""

    cell_name = "gru_cell"
    gates = 3

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", implementation: int = 2,
                 reset_after: bool = True, **kwargs):
        super().__init__(units, activation=activation, recurrent_activation=recurrent_activation, **kwargs)
        # tf_keras: "RNN `implementation=2` is not supported when `recurrent_dropout` is set. Using 1."
        self.implementation = 1 if self.recurrent_dropout else implementation
        self.reset_after = bool(reset_after)

    @classmethod
    def from_config(cls, config):
        # configs without the key come from Keras < 2.1.5 (and Keras 1), whose GRU was reset_after=False
        return cls(**{"reset_after": False, **config})

    def _bias_shape(self):
        return (2, 3 * self.units) if self.reset_after else (3 * self.units,)

    def _input_bias(self):
        if self.bias is None:
            return None
        return self.bias.value[0] if self.reset_after else self.bias.value

    def _recurrent_bias(self):
        return self.bias.value[1] if self.bias is not None and self.reset_after else None

    def _step(self, xp, states):
        masks = self._recurrent_masks()
        if self.reset_after and masks is None and self._act is np.tanh and self._ract is ops.sigmoid:
            inner = states[0] @ self._state_kernel()  # the fused cell: one tape node for the gates
            bias = self._recurrent_bias()
            h = gru_cell(xp, inner if bias is None else inner + bias, states[0])
        else:
            h = gru_step(xp, states[0], self._state_kernel(), self._recurrent_bias(), self.reset_after,
                         self._act, self._ract, recurrent_masks=masks)
        return h, [h]

    def get_config(self):
        return {**super().get_config(), "recurrent_activation": activations.serialize(self.recurrent_activation),
                **self._weights_config(), **self._dropout_config(), "implementation": self.implementation,
                "reset_after": self.reset_after}


# ---------------------------------------------------------------------------------------------- CuDNN


class _CuDNN:
    """Mixin for CuDNNLSTM / CuDNNGRU: sigmoid/tanh, weights on the layer itself, input + recurrent biases."""

    cell_name = ""

    _writer_version: str | None = None

    def _cudnn_init(self, kwargs: dict) -> dict:
        self._writer_version = current_keras_version()
        for key in ("activation", "recurrent_activation", "use_bias", "dropout", "recurrent_dropout", "unroll",
                    "implementation", "reset_after"):
            if key in kwargs:
                raise ConfigError(f"{type(self).__name__} does not take `{key}`", layer=kwargs.get("name"))
        return kwargs

    def _check_mask(self, mask):
        raise KConvertError("masking is not supported for CuDNN RNNs (CuDNNLSTM, CuDNNGRU)", layer=self.name)

    def _raw_cudnn_layout(self) -> bool:
        """Multi-backend Keras (2.0-2.3) handed each gate's kernel to cuDNN as raw memory, without the
        transpose tf.keras applies; files it wrote need each gate block re-read (tf.keras's
        `_convert_rnn_weights` does the same when loading them into LSTM/GRU)."""
        version = self._writer_version or ""
        if not version or version.endswith("-tf"):
            return False
        try:
            major, minor = (int(p) for p in version.split(".")[:2])
        except ValueError:
            return False
        return (major, minor) < (2, 4)

    def _gates(self) -> int:
        return 4 if isinstance(self, LSTM) else 3

    def _input_kernel(self):
        k = self.kernel.value
        if not self._raw_cudnn_layout():
            return k
        return np.hstack([g.T.reshape(g.shape, order="F") for g in np.hsplit(k, self._gates())])

    def _state_kernel(self):
        k = self.recurrent_kernel.value
        if not self._raw_cudnn_layout():
            return k
        return np.hstack([g.T for g in np.hsplit(k, self._gates())])

    def keras3_state(self):
        return Layer.keras3_state(self)

    def get_config(self):
        config = {**Layer.get_config(self), "return_sequences": self.return_sequences,
                  "return_state": self.return_state, "go_backwards": self.go_backwards, "stateful": self.stateful,
                  "time_major": self.time_major, "units": self.units,
                  **weight_args_config(self, ("kernel", "recurrent", "bias"), activity=True)}
        return config


@register_layer()
class CuDNNLSTM(_CuDNN, LSTM):
    """The cuDNN LSTM: an LSTM with sigmoid/tanh whose bias (8u,) is the input bias, then the recurrent bias."""

    def __init__(self, units, **kwargs):
        super().__init__(units, **self._cudnn_init(kwargs))

    def _bias_shape(self):
        return (8 * self.units,)

    def _input_bias(self):
        b = self.bias.value
        return b[:4 * self.units] + b[4 * self.units:]

    def get_config(self):
        config = super().get_config()
        config["unit_forget_bias"] = self.unit_forget_bias
        return config


@register_layer()
class CuDNNGRU(_CuDNN, GRU):
    """The cuDNN GRU: GRU(reset_after=True) with sigmoid/tanh; bias (6u,) = input (z, r, h), recurrent (z, r, h)."""

    def __init__(self, units, **kwargs):
        super().__init__(units, **self._cudnn_init(kwargs))

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def _bias_shape(self):
        return (6 * self.units,)

    def _input_bias(self):
        return self.bias.value[:3 * self.units]

    def _recurrent_bias(self):
        return self.bias.value[3 * self.units:]


__all__ = ["Recurrent", "RNNCell", "SimpleRNN", "LSTM", "GRU", "CuDNNLSTM", "CuDNNGRU"]
