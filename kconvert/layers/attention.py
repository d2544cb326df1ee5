"""EinsumDense, MultiHeadAttention, Attention and AdditiveAttention.

MultiHeadAttention is called as `mha(query, value, key=None, attention_mask=None, ...)`; tf.keras records
`value`, `key` and `attention_mask` in the node's kwargs, so it is a `CallArgsLayer`. Its masks are the
Keras masks of query/value/key merged with `attention_mask` and the causal mask, as in tf.keras; files
written by Keras 3 follow Keras 3's softmax masking (masked rows become zeros, or uniform on its fused path).
"""

from __future__ import annotations

import math
import re
import string
from typing import Any

import numpy as np

from .. import ops
from ..errors import ConfigError
from ..ops.array_module import module_of, to_device
from . import activations
from .base import Layer, current_keras_major, register_layer
from .call_args import CallArgs, CallArgsLayer, Spec, unpack_call_args
from .config_objects import weight_args_config

# ---------------------------------------------------------------------------------------------- EinsumDense

_KERAS3_EXTRAS = ("quantization_config", "lora_rank", "lora_alpha", "gptq_unpacked_column_size")


def _pop_keras3_extras(kwargs: dict, cls: str) -> None:
    extras = {k: kwargs.pop(k) for k in _KERAS3_EXTRAS if k in kwargs}
    if any(v for v in extras.values()):
        raise ConfigError(f"{cls} with {sorted(k for k, v in extras.items() if v)} (quantized or LoRA, Keras 3) is "
                          "not supported", layer=kwargs.get("name"))


def analyze_einsum(equation: str, bias_axes: str | None, input_shape, output_shape):
    """(kernel shape, bias shape or None, full output shape) of an EinsumDense (tf.keras's rules)."""
    dotted = re.sub(r"\.\.\.", "0", equation)
    left_elided = False
    m = re.match("([a-zA-Z]+),([a-zA-Z]+)->([a-zA-Z]+)$", dotted)
    if not m:
        m = re.match("0([a-zA-Z]+),([a-zA-Z]+)->0([a-zA-Z]+)$", dotted)
        left_elided = bool(m)
    if not m:
        m = re.match("([a-zA-Z]{2,})0,([a-zA-Z]+)->([a-zA-Z]+)0$", dotted)
    if not m:
        raise ValueError(f"invalid einsum equation '{equation}'; equations must be in the form [X],[Y]->[Z], "
                         "...[X],[Y]->...[Z], or [X]...,[Y]->[Z]...")
    input_spec, weight_spec, output_spec = m.groups()
    input_shape = list(input_shape)
    elided = len(input_shape) - len(input_spec)
    out = [output_shape] if isinstance(output_shape, int) else list(output_shape)
    out.insert(0, input_shape[0])
    if elided > 0 and left_elided:
        for i in range(1, elided):
            out.insert(1, input_shape[i])
    elif elided > 0:
        out.extend(input_shape[len(input_shape) - elided:])
    if left_elided:
        in_map = {d: i + elided - len(input_shape) for i, d in enumerate(input_spec)}
        out_map = {d: i + elided for i, d in enumerate(output_spec)}
    else:
        in_map = {d: i for i, d in enumerate(input_spec)}
        out_map = {d: i for i, d in enumerate(output_spec)}
    for d in input_spec:
        if d in out_map and out[out_map[d]] is not None and out[out_map[d]] != input_shape[in_map[d]]:
            raise ValueError(f"input shape and output shape do not match at shared dimension '{d}'")
    for d in output_spec:
        if d not in input_spec and d not in weight_spec:
            raise ValueError(f"dimension '{d}' of the output has no match in the input or the weight spec")
    kernel = []
    for d in weight_spec:
        if d in in_map:
            kernel.append(input_shape[in_map[d]])
        elif d in out_map:
            kernel.append(out[out_map[d]])
        else:
            raise ValueError(f"weight dimension '{d}' has no match in the input or the output spec")
    bias = None
    if bias_axes is not None:
        offset = elided if left_elided else 0
        sizes = {c: out[i + offset] for i, c in enumerate(output_spec)}
        for c in bias_axes:
            if c not in output_spec:
                raise ValueError(f"bias dimension '{c}' is not part of the output spec '{output_spec}'")
        first = min(output_spec.find(c) for c in bias_axes)
        bias = [sizes[c] if c in bias_axes else 1 for c in output_spec[first:]]
        if not left_elided:
            bias.extend([1] * max(elided, 0))
    return kernel, bias, out


def _dropout(x, rate: float):
    """Inverted dropout (training): each entry kept with probability 1 - rate and scaled by 1 / (1 - rate)."""
    keep = np.float32(1.0 - rate)
    mask = (np.random.default_rng().random(np.shape(x)) < keep).astype(np.float32) / keep
    return x * mask.astype(x.dtype)


@register_layer()
class EinsumDense(Layer):
    """A dense layer written as an einsum: y = activation(einsum(equation, x, kernel) + bias)."""

    def __init__(self, equation: str, output_shape, activation: Any = None, bias_axes: str | None = None,
                 kernel_initializer: Any = "glorot_uniform", bias_initializer: Any = "zeros", kernel_regularizer=None,
                 bias_regularizer=None, activity_regularizer=None, kernel_constraint=None, bias_constraint=None,
                 **kwargs):
        _pop_keras3_extras(kwargs, "EinsumDense")
        super().__init__(**kwargs)
        self.equation = str(equation)
        self.partial_output_shape = [output_shape] if isinstance(output_shape, int) else list(output_shape)
        self.bias_axes = bias_axes
        self.activation = activation
        self._act = activations.get(activation)
        self.kernel_initializer = kernel_initializer
        self.bias_initializer = bias_initializer
        self.kernel_regularizer = kernel_regularizer
        self.bias_regularizer = bias_regularizer
        self.activity_regularizer = activity_regularizer
        self.kernel_constraint = kernel_constraint
        self.bias_constraint = bias_constraint
        self.bias = None

    def build(self, input_shape):
        kernel, bias, self.full_output_shape = analyze_einsum(self.equation, self.bias_axes, input_shape,
                                                              self.partial_output_shape)
        if any(d is None for d in kernel) or (bias is not None and any(d is None for d in bias)):
            raise ValueError(f"the kernel {kernel} / bias {bias} shape of the einsum must be known")
        self.kernel = self.add_weight("kernel", kernel, self.kernel_initializer)
        if bias is not None:
            self.bias = self.add_weight("bias", bias, self.bias_initializer)

    def call(self, inputs):
        x = np.asarray(inputs)
        y = ops.einsum(self.equation, x, self.kernel.value)
        if self.bias is not None:
            y = y + self.bias.value
        return self._act(y).astype(x.dtype, copy=False)

    def compute_output_shape(self, input_shape):
        return tuple(analyze_einsum(self.equation, self.bias_axes, input_shape, self.partial_output_shape)[2])

    def get_config(self):
        return {**super().get_config(), "output_shape": self.partial_output_shape, "equation": self.equation,
                "activation": activations.serialize(self.activation), "bias_axes": self.bias_axes,
                **weight_args_config(self, ("kernel", "bias"), activity=True)}


# ---------------------------------------------------------------------------------------------- MultiHeadAttention

_CHR_IDX = string.ascii_lowercase


def _proj_equation(free_dims: int, bound_dims: int, output_dims: int) -> tuple[str, str, int]:
    """Einsum equation, bias axes and output rank of one of MultiHeadAttention's projections."""
    i = _CHR_IDX[:free_dims]
    b = _CHR_IDX[free_dims:free_dims + bound_dims]
    o = _CHR_IDX[free_dims + bound_dims:free_dims + bound_dims + output_dims]
    return f"{i}{b},{b}{o}->{i}{o}", o, free_dims + output_dims


def _attention_equations(rank: int, attn_axes: tuple[int, ...]) -> tuple[str, str, int]:
    """(query-key dot-product equation, combine equation, rank of the scores) for projected inputs of `rank`."""
    target = _CHR_IDX[:rank]
    batch_dims = tuple(np.delete(range(rank), attn_axes + (rank - 1,)))
    source, offset = "", rank
    for i in range(rank):
        if i in batch_dims or i == rank - 1:
            source += target[i]
        else:
            source += _CHR_IDX[offset]
            offset += 1
    product = "".join([target[i] for i in batch_dims] + [target[i] for i in attn_axes]
                      + [source[i] for i in attn_axes])
    return f"{source},{target}->{product}", f"{product},{source}->{target}", len(product)


class _Stateless:
    """A Keras 3 child object without variables (MultiHeadAttention's softmax and dropout)."""

    def keras3_state(self):
        return [], {}


def _lower_triangular(t: int, s: int, like) -> np.ndarray:
    return to_device(np.tril(np.ones((t, s), dtype=bool))[None], module_of(like))


@register_layer()
class MultiHeadAttention(CallArgsLayer):
    """Multi-head (scaled dot-product) attention with EinsumDense projections, tf.keras / Keras 3."""

    supports_masking = True
    positional_names = ("value", "key")

    def __init__(self, num_heads: int, key_dim: int, value_dim: int | None = None, dropout: float = 0.0,
                 use_bias: bool = True, output_shape=None, attention_axes=None,
                 kernel_initializer: Any = "glorot_uniform", bias_initializer: Any = "zeros",
                 kernel_regularizer=None, bias_regularizer=None, activity_regularizer=None, kernel_constraint=None,
                 bias_constraint=None, softmax_robust_masking: bool = False, query_shape=None, key_shape=None,
                 value_shape=None, use_gate: bool = False, sliding_window: int | None = None, seed=None,
                 flash_attention=None, **kwargs):
        super().__init__(**kwargs)
        for arg, v in (("num_heads", num_heads), ("key_dim", key_dim)):
            if not isinstance(v, int) or v <= 0:
                raise ConfigError(f"`{arg}` must be a positive integer, got {v!r}", layer=self.name)
        self._num_heads = num_heads
        self._key_dim = key_dim
        self._value_dim = value_dim if value_dim else key_dim
        self._dropout = dropout
        self._use_bias = bool(use_bias)
        self._output_shape = output_shape
        if attention_axes is not None and not isinstance(attention_axes, (list, tuple)):
            attention_axes = (attention_axes,)
        self._attention_axes = tuple(attention_axes) if attention_axes is not None else None
        self.kernel_initializer = kernel_initializer
        self.bias_initializer = bias_initializer
        self.kernel_regularizer = kernel_regularizer
        self.bias_regularizer = bias_regularizer
        self.activity_regularizer = activity_regularizer
        self.kernel_constraint = kernel_constraint
        self.bias_constraint = bias_constraint
        self._softmax_robust_masking = bool(softmax_robust_masking)
        self._use_gate = bool(use_gate)
        self._sliding_window = sliding_window
        self._keras3 = current_keras_major() >= 3
        self._query_shape = self._key_shape = self._value_shape = None
        if None not in (query_shape, key_shape, value_shape):  # tf.keras builds from the saved shapes
            self._maybe_build_args(Spec(query_shape), {"value": Spec(value_shape), "key": Spec(key_shape)})

    def __call__(self, query, *args, **kwargs):
        if isinstance(query, (list, tuple)) and 2 <= len(query) <= 3 and not args and "value" not in kwargs:
            query, args = query[0], tuple(query[1:])  # Keras 3's node args (query, value[, key]) given as a list
        return super().__call__(query, *args, **kwargs)

    # ------------------------------------------------------------------ building
    def _dense(self, equation, bias_axes, output_shape, name, input_shape, activation=None) -> EinsumDense:
        layer = EinsumDense(equation, output_shape=output_shape, bias_axes=bias_axes if self._use_bias else None,
                            activation=activation, kernel_initializer=self.kernel_initializer,
                            bias_initializer=self.bias_initializer, name=name, dtype=self._dtype_config)
        layer._maybe_build(tuple(input_shape))
        for w in layer.weights:  # tf.keras names them inside the attention layer's scope
            w.name = f"{self.name}/{w.name}"
        self._trainable_weights.extend(layer._trainable_weights)
        return layer

    def build_args(self, first, kwargs) -> None:
        query = first.shape
        value = kwargs["value"].shape if isinstance(kwargs.get("value"), Spec) else query
        key = kwargs["key"].shape if isinstance(kwargs.get("key"), Spec) else value
        self._query_shape, self._value_shape, self._key_shape = list(query), list(value), list(key)
        heads_key = [self._num_heads, self._key_dim]
        heads_value = [self._num_heads, self._value_dim]

        def proj(shape, dims, name, activation=None):
            eq, bias_axes, rank = _proj_equation(len(shape) - 1, 1, 2)
            return self._dense(eq, bias_axes, [None] * (rank - 3) + dims, name, shape, activation)

        self._query_dense = proj(query, heads_key, "query")
        self._key_dense = proj(key, heads_key, "key")
        self._gate_dense = proj(query, heads_value, "gate", "sigmoid") if self._use_gate else None
        self._value_dense = proj(value, heads_value, "value")
        rank = len(query) + 1
        axes = self._attention_axes if self._attention_axes is not None else tuple(range(1, rank - 2))
        if self._keras3:  # Keras 3 counts negative axes in the input's rank, tf.keras in the projected rank
            axes = tuple(a if a >= 0 else rank - 1 + a for a in axes)
            self._attention_axes = axes
        elif self._attention_axes is None:
            self._attention_axes = axes
        self._axes = tuple(a % rank for a in axes)
        self._dot_eq, self._combine_eq, scores_rank = _attention_equations(rank, self._axes)
        self._norm_axes = tuple(range(scores_rank - len(self._axes), scores_rank))
        out = self._output_shape
        out = ([out] if isinstance(out, int) else list(out)) if out else [query[-1]]
        eq, bias_axes, out_rank = _proj_equation(len(query) - 1, 2, len(out))
        self._output_dense = self._dense(eq, bias_axes, [None] * (out_rank - 1 - len(out)) + out, "attention_output",
                                         (*query[:-1], self._num_heads, self._value_dim))

    def output_specs(self, first, kwargs):
        value = kwargs.get("value")
        key = kwargs.get("key")
        if not isinstance(value, Spec):
            raise ValueError("MultiHeadAttention needs a `value` tensor")
        if isinstance(key, Spec) and tuple(value.shape[1:-1]) != tuple(key.shape[1:-1]):
            raise ValueError(f"all dimensions of value {value.shape} and key {key.shape} but the last must be equal")
        out = self._output_shape
        out = ([out] if isinstance(out, int) else list(out)) if out else [first.shape[-1]]
        out = Spec((*first.shape[:-1], *out), self.dtype)
        if not kwargs.get("return_attention_scores"):
            return out
        q = (*first.shape[:-1], self._num_heads, self._key_dim)
        k = (*(key.shape if isinstance(key, Spec) else value.shape)[:-1], self._num_heads, self._key_dim)
        scores = self._scores_shape(q, k)
        return [out, Spec(scores, self.dtype)]

    def _scores_shape(self, q, k):
        (ks, qs), prod = self._dot_eq.split("->")[0].split(","), self._dot_eq.split("->")[1]
        sizes = dict(zip(qs, q))
        sizes.update({c: d for c, d in zip(ks, k) if c not in sizes})
        return tuple(sizes[c] for c in prod)

    # ------------------------------------------------------------------ computing
    def _attention_mask(self, query, value, query_mask, value_mask, key_mask, attention_mask, use_causal_mask):
        auto = None
        if query_mask is not None:
            auto = np.asarray(query_mask, bool)[:, :, None]
        for m in (value_mask, key_mask):
            if m is not None:
                m = np.asarray(m, bool)[:, None, :]
                auto = m if auto is None else auto & m
        if use_causal_mask:
            m = _lower_triangular(query.shape[1], value.shape[1], query)
            auto = m if auto is None else auto & m
        if self._sliding_window is not None:
            rows = np.arange(query.shape[1])[None, :, None]
            cols = np.arange(value.shape[1])[None, None, :]
            m = to_device(np.abs(rows - cols) < self._sliding_window, module_of(query))
            auto = m if auto is None else auto & m
        if auto is not None:
            return auto if attention_mask is None else np.asarray(attention_mask, bool) & auto
        return attention_mask

    def _masked_softmax(self, scores, mask, fused: bool):
        if mask is None:
            return ops.softmax(scores, self._norm_axes)
        mask = np.asarray(mask)
        for _ in range(scores.ndim - mask.ndim):
            mask = np.expand_dims(mask, -len(self._axes) * 2 - 1)
        keep = mask.astype(bool) if mask.dtype == bool or self._keras3 else mask > 0.5
        if self._keras3:
            # Keras 3: its fused dot_product_attention fills with -0.7 * float32 max (so a fully masked row is
            # uniform); its Softmax layer fills with -1e9 and then zeroes the masked positions
            fill = np.float32(-0.7 * 3.38953e38) if fused else np.float32(-1e9)
            probs = ops.softmax(np.where(keep, scores, fill), self._norm_axes)
            return probs if fused else np.where(keep, probs, np.float32(0.0))
        if self._softmax_robust_masking:
            return ops.softmax(np.where(keep, scores, np.float32(-1e9)), self._norm_axes)
        adder = (np.float32(1.0) - mask.astype(scores.dtype)) * np.float32(-1e9)
        return ops.softmax(scores + adder, self._norm_axes)

    @unpack_call_args
    def call(self, query, value=None, key=None, attention_mask=None, return_attention_scores=False, training=None,
             use_causal_mask=False, mask=None, value_mask=None, key_mask=None, query_mask=None):
        query = np.asarray(query)
        value = np.asarray(value)
        key_given = key is not None
        key = np.asarray(key) if key_given else value
        attention_mask = self._attention_mask(query, value, query_mask if query_mask is not None else mask, value_mask,
                                              key_mask if key_given else None,
                                              None if attention_mask is None else np.asarray(attention_mask),
                                              use_causal_mask)
        gate = self._gate_dense.call(query) if self._gate_dense is not None else None
        q = self._query_dense.call(query)
        k = self._key_dense.call(key)
        v = self._value_dense.call(value)
        q = (q * np.float32(1.0 / math.sqrt(float(self._key_dim)))).astype(q.dtype, copy=False)
        scores = ops.einsum(self._dot_eq, k, q)
        fused = self._keras3 and not (self._dropout > 0 or return_attention_scores or q.ndim != 4)
        scores = self._masked_softmax(scores, attention_mask, fused).astype(q.dtype, copy=False)
        dropped = _dropout(scores, self._dropout) if training and self._dropout > 0 else scores
        out = ops.einsum(self._combine_eq, dropped, v)  # the scores returned are the undropped ones, as in Keras
        if gate is not None:
            out = out * gate
        out = self._output_dense.call(out)
        return (out, scores) if return_attention_scores else out

    def compute_mask(self, inputs, mask=None):
        """The query's mask, on the attention output only (as tf.keras zips one mask with the outputs)."""
        out = super().compute_mask(inputs, mask)
        if isinstance(inputs, CallArgs) and inputs.kwargs.get("return_attention_scores"):
            return [out, None]
        return out

    # ------------------------------------------------------------------ config and state
    def keras3_state(self):
        children: dict[str, Any] = {"key_dense": self._key_dense, "output_dense": self._output_dense,
                                    "query_dense": self._query_dense, "value_dense": self._value_dense,
                                    "_dropout_layer": _Stateless()}
        if self._gate_dense is not None:
            children["_gate_dense"] = self._gate_dense
        children["_softmax"] = _Stateless()
        return [], children

    def get_config(self):
        config = {"num_heads": self._num_heads, "key_dim": self._key_dim, "value_dim": self._value_dim,
                  "dropout": self._dropout, "use_bias": self._use_bias, "output_shape": self._output_shape,
                  "attention_axes": self._attention_axes,
                  **weight_args_config(self, ("kernel", "bias"), activity=True),
                  "query_shape": self._query_shape, "key_shape": self._key_shape, "value_shape": self._value_shape,
                  "softmax_robust_masking": self._softmax_robust_masking}
        if self._use_gate:  # Keras 3 only; kept so that the file still says what it computes
            config["use_gate"] = True
        if self._sliding_window is not None:
            config["sliding_window"] = self._sliding_window
        return {**super().get_config(), **config}


# ---------------------------------------------------------------------------------------------- dense attention


class _BaseDenseAttention(CallArgsLayer):
    """Dot-product style attention over `[query, value]` or `[query, value, key]` (tf.keras BaseDenseAttention)."""

    supports_masking = True

    def __init__(self, dropout: float = 0.0, causal: bool = False, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.dropout = dropout
        self.causal = bool(causal)  # deprecated tf.keras argument, same as use_causal_mask=True in every call

    def _check(self, inputs):
        if not isinstance(inputs, (list, tuple)) or not 2 <= len(inputs) <= 3:
            raise ValueError(f"{type(self).__name__} must be called on a list [query, value] or [query, value, key]")

    def output_specs(self, first, kwargs):
        self._check(first)
        out = Spec((*first[0].shape[:-1], first[1].shape[-1]), self.dtype)
        if kwargs.get("return_attention_scores"):
            return [out, Spec((*first[0].shape[:-1], first[1].shape[-2]), self.dtype)]
        return out

    def compute_output_shape(self, input_shape):
        if isinstance(input_shape, list) and input_shape and isinstance(input_shape[0], tuple):
            return tuple(input_shape[0])  # tf.keras's rule (the query's shape)
        return super().compute_output_shape(input_shape)

    def _scores(self, q, k):
        raise NotImplementedError

    @unpack_call_args
    def call(self, inputs, mask=None, training=None, return_attention_scores=False, use_causal_mask=False):
        self._check(inputs)
        q, v = np.asarray(inputs[0]), np.asarray(inputs[1])
        k = np.asarray(inputs[2]) if len(inputs) > 2 else v
        q_mask = mask[0] if mask else None
        v_mask = mask[1] if mask and len(mask) > 1 else None
        scores = self._scores(q, k)
        score_mask = None
        if v_mask is not None:
            score_mask = np.expand_dims(np.asarray(v_mask, bool), -2)
        if self.causal or use_causal_mask:
            causal = to_device(np.tril(np.ones(scores.shape[-2:], dtype=bool)), module_of(scores))
            score_mask = causal if score_mask is None else score_mask & causal
        if score_mask is not None:
            scores = scores - np.float32(1e9) * (~score_mask).astype(scores.dtype)
        weights = ops.softmax(scores, -1).astype(q.dtype, copy=False)
        if training and self.dropout > 0:  # tf_keras drops the weights it then returns
            weights = _dropout(weights, self.dropout)
        out = np.matmul(weights, v)
        if q_mask is not None:
            out = out * np.expand_dims(np.asarray(q_mask), -1).astype(out.dtype)
        return (out, weights) if return_attention_scores else out

    def compute_mask(self, inputs, mask=None):
        """The query's mask, on the attention output only."""
        masks = super().compute_mask(inputs, mask)
        out = masks[0] if isinstance(masks, (list, tuple)) and masks else masks
        if isinstance(inputs, CallArgs) and inputs.kwargs.get("return_attention_scores"):
            return [out, None]
        return out

    def get_config(self):
        config = {**super().get_config(), "dropout": self.dropout}
        if self.causal:  # tf.keras drops it from its config; kept here so the file keeps its meaning
            config["causal"] = True
        return config


@register_layer()
class Attention(_BaseDenseAttention):
    """Luong-style attention: scores = query . key^T (`score_mode='dot'`) or sum(tanh(query + key)) ('concat')."""

    def __init__(self, use_scale: bool = False, score_mode: str = "dot", **kwargs):
        super().__init__(**kwargs)
        if score_mode not in ("dot", "concat"):
            raise ConfigError(f"score_mode must be 'dot' or 'concat', got {score_mode!r}", layer=self.name)
        self.use_scale = bool(use_scale)
        self.score_mode = score_mode
        self.scale = self.concat_score_weight = None

    def build_args(self, first, kwargs) -> None:
        if self.use_scale:
            self.scale = self.add_weight("scale", (), "ones")
        if self.score_mode == "concat":
            self.concat_score_weight = self.add_weight("concat_score_weight", (), "ones")

    def _scores(self, q, k):
        if self.score_mode == "dot":
            scores = np.matmul(q, np.swapaxes(k, -1, -2))
            return scores * self.scale.value if self.scale is not None else scores
        summed = q[..., :, None, :] + k[..., None, :, :]
        if self.scale is not None:
            summed = self.scale.value * summed
        return self.concat_score_weight.value * np.sum(np.tanh(summed), axis=-1)

    def get_config(self):
        return {**super().get_config(), "use_scale": self.use_scale, "score_mode": self.score_mode}


@register_layer()
class AdditiveAttention(_BaseDenseAttention):
    """Bahdanau-style attention: scores = sum(scale * tanh(query + key))."""

    def __init__(self, use_scale: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.use_scale = bool(use_scale)
        self.scale = None

    def build_args(self, first, kwargs) -> None:
        self._check(first)
        dim = first[1].shape[-1]
        if self.use_scale:
            if dim is None:
                raise ValueError("the last dimension of the value must be known")
            self.scale = self.add_weight("scale", (dim,), "glorot_uniform")

    def _scores(self, q, k):
        t = np.tanh(q[..., :, None, :] + k[..., None, :, :])
        return np.sum(self.scale.value * t if self.scale is not None else t, axis=-1)

    def get_config(self):
        return {**super().get_config(), "use_scale": self.use_scale}
