"""Keras 1's `Merge` layer and `merge` function (reference/keras_formats.md §3.4).

`Merge(mode=...)` called on a list of tensors computes as Keras 1 did: `sum`, `mul`, `ave`, `max`, `concat`
(on `concat_axis`), `dot` (`batch_dot` on `dot_axes`) and `cos` (cosine proximity on `dot_axes`).
`Merge([left_model, right_model], mode=...)` merges models: it is called on their outputs when it is built,
so as the first layer of a `Sequential` it brings the models' inputs with it, and that Sequential is then
predicted with a list of arrays. Its weights are the branch models' weights, in branch order.

Configs read from Keras 1 files turn `Merge` into the native merge layers (converters/keras1.py); this
class serves code written against the Keras 1 API and the models it saves.
"""

from __future__ import annotations

from functools import reduce
from typing import Any

import numpy as np

from .. import ops
from ..errors import ConfigError
from ..ir import Value
from .base import Layer, get_layer_class, is_shape_list, register_layer
from .merging import concat_masks

MODES = ("sum", "mul", "concat", "ave", "cos", "dot", "max")
EPSILON = 1e-7  # Keras 1's K.epsilon()


def _dedup(weights) -> list:
    seen: set[int] = set()
    return [w for w in weights if not (id(w) in seen or seen.add(id(w)))]


def _source_inputs(values: list[Value]) -> list[Value]:
    """The model inputs (InputLayer outputs) the values are computed from, in first-seen order."""
    out: list[Value] = []
    seen: set[int] = set()
    stack = list(reversed(values))
    while stack:
        v = stack.pop()
        if id(v) in seen:
            continue
        seen.add(id(v))
        if v.node.is_input:
            out.append(v)
        else:
            stack.extend(reversed(v.node.inputs))
    return out


@register_layer()
class Merge(Layer):
    """Keras 1's merge of a list of tensors, or of the outputs of a list of models."""

    supports_masking = True

    def __init__(self, layers=None, mode: Any = "sum", concat_axis: int = -1, dot_axes: Any = -1,
                 output_shape=None, output_mask=None, arguments: dict | None = None, node_indices=None,
                 tensor_indices=None, name: str | None = None, mode_type: str = "raw",
                 output_shape_type: str = "raw", output_mask_type: str = "raw", **kwargs):
        kwargs.pop("branch_weights_in_merge", None)
        if mode_type != "raw" or (output_shape is not None and output_shape_type != "raw"):
            raise ConfigError(f"a Merge whose mode or output_shape is Python code from the file ({mode_type}) "
                              "cannot be loaded; use the modes " + ", ".join(MODES), layer=name)
        if not callable(mode) and mode not in MODES:
            raise ConfigError(f"invalid Merge mode {mode!r}; expected one of {MODES} or a function", layer=name)
        super().__init__(name=name, **kwargs)
        self.mode = mode
        self.concat_axis = int(concat_axis)
        self.dot_axes = list(dot_axes) if isinstance(dot_axes, (list, tuple)) else int(dot_axes)
        self._output_shape = tuple(output_shape) if isinstance(output_shape, (list, tuple)) else output_shape
        self._output_mask = output_mask
        self.arguments = dict(arguments or {})
        self.layers: list[Layer] = [self._branch(la) for la in (layers or [])]
        if self.layers:
            if len(self.layers) < 2:
                raise ConfigError("a Merge needs at least 2 layers", layer=self.name)
            node_indices = node_indices or [0] * len(self.layers)
            tensor_indices = tensor_indices or [0] * len(self.layers)
            inputs = []
            for la, ni, ti in zip(self.layers, node_indices, tensor_indices):
                if not la._inbound_nodes:
                    raise ConfigError(f"cannot merge '{la.name}': it has no output yet (give its first layer "
                                      "an input_shape)", layer=self.name)
                out = la.get_output_at(ni)
                inputs.append(out[ti] if isinstance(out, list) else out)
            self(inputs)

    @staticmethod
    def _branch(layer):
        if isinstance(layer, dict):  # a serialized branch model
            cls = get_layer_class(layer.get("class_name"), None, (layer.get("config") or {}).get("name"))
            return cls.from_config(layer.get("config"))
        if not isinstance(layer, Layer):
            raise ConfigError(f"Merge branches must be models or layers, got {type(layer).__name__}")
        return layer

    # ------------------------------------------------------------------ a Sequential's first layer
    def sequential_inputs_outputs(self) -> tuple[list[Value], Value] | None:
        """(model inputs, output) when this Merge of models starts a Sequential, else None."""
        if not self.layers or not self._inbound_nodes:
            return None
        node = self._inbound_nodes[0]
        return _source_inputs(node.inputs), node.outputs[0]

    # ------------------------------------------------------------------ weights of the merged models
    @property
    def trainable_weights(self) -> list:
        if not self.layers:
            return super().trainable_weights
        return _dedup(w for la in self.layers for w in la.trainable_weights) if self.trainable else []

    @property
    def non_trainable_weights(self) -> list:
        if not self.layers:
            return super().non_trainable_weights
        if not self.trainable:
            return _dedup(w for la in self.layers for w in la.trainable_weights + la.non_trainable_weights)
        return _dedup(w for la in self.layers for w in la.non_trainable_weights)

    # ------------------------------------------------------------------ computing
    def _axes(self, ndim1: int, ndim2: int) -> list[int]:
        if isinstance(self.dot_axes, int):
            a = self.dot_axes
            return [a % ndim1, a % ndim2] if a < 0 else [a, a]
        return [a % n if a < 0 else a for a, n in zip(self.dot_axes, (ndim1, ndim2))]

    def build(self, input_shape):
        if not is_shape_list(input_shape) or len(input_shape) < 2:
            raise ValueError(f"a Merge should be called on a list of at least 2 inputs, got {input_shape}")
        if self.mode in ("sum", "mul", "ave", "cos", "max") and len({tuple(s) for s in input_shape}) > 1:
            raise ValueError(f"only inputs of the same shape can be merged with mode '{self.mode}': {input_shape}")
        if self.mode in ("dot", "cos"):
            if len(input_shape) != 2:
                raise ValueError(f"mode '{self.mode}' merges exactly 2 inputs")
            a1, a2 = self._axes(len(input_shape[0]), len(input_shape[1]))
            if input_shape[0][a1] != input_shape[1][a2]:
                raise ValueError(f"dimension mismatch in mode '{self.mode}': {input_shape} on axes {[a1, a2]}")
        if self.mode == "concat":
            reduced = set()
            for shape in input_shape:
                s = list(shape)
                del s[self.concat_axis]
                reduced.add(tuple(s))
            if len(reduced) > 1:
                raise ValueError(f"mode 'concat' needs shapes that match except on the concat axis: {input_shape}")

    def call(self, inputs, mask=None):
        if not isinstance(inputs, (list, tuple)) or len(inputs) < 2:
            raise ValueError("a Merge must be called on a list of at least 2 tensors")
        xs = [np.asarray(x) for x in inputs]
        if callable(self.mode):
            return self.mode(xs, **self.arguments)
        if self.mode == "sum":
            return reduce(ops.add, xs)
        if self.mode == "ave":
            total = reduce(ops.add, xs)
            return (total / np.asarray(len(xs), total.dtype)).astype(total.dtype, copy=False)
        if self.mode == "mul":
            return reduce(ops.multiply, xs)
        if self.mode == "max":
            return reduce(ops.maximum, xs)
        if self.mode == "concat":
            return ops.concatenate(xs, axis=self.concat_axis)
        axes = self._axes(xs[0].ndim, xs[1].ndim)
        dot = ops.batch_dot(xs[0], xs[1], axes)
        if self.mode == "dot":
            return dot.astype(xs[0].dtype, copy=False)
        # cos: Keras 1's batch_dot(a, b) / max(sqrt(batch_dot(a, a) * batch_dot(b, b)), epsilon)
        norms = np.sqrt(ops.batch_dot(xs[0], xs[0], axes) * ops.batch_dot(xs[1], xs[1], axes))
        return (dot / np.maximum(norms, EPSILON)).astype(xs[0].dtype, copy=False)

    def compute_output_shape(self, input_shape):
        if callable(self.mode):
            if callable(self._output_shape):
                return tuple(self._output_shape(input_shape))
            if self._output_shape is None:
                raise ValueError("a Merge with a function mode needs output_shape")
            return (input_shape[0][0], *self._output_shape)
        if self.mode in ("sum", "mul", "ave", "max"):
            return tuple(input_shape[0])
        if self.mode == "concat":
            out = list(input_shape[0])
            for shape in input_shape[1:]:
                if out[self.concat_axis] is None or shape[self.concat_axis] is None:
                    out[self.concat_axis] = None
                    break
                out[self.concat_axis] += shape[self.concat_axis]
            return tuple(out)
        shape1, shape2 = list(input_shape[0]), list(input_shape[1])
        a1, a2 = self._axes(len(shape1), len(shape2))
        shape1.pop(a1)
        shape2.pop(a2)
        shape2.pop(0)
        out = shape1 + shape2
        return tuple(out + [1] if len(out) == 1 else out)

    def compute_mask(self, inputs, mask=None):
        if mask is None or all(m is None for m in mask):
            return None
        if callable(self.mode):
            return self._output_mask(mask) if callable(self._output_mask) else self._output_mask
        if self.mode in ("sum", "mul", "ave"):
            return reduce(np.logical_and, [np.asarray(m, dtype=bool) for m in mask if m is not None])
        if self.mode == "concat":
            return concat_masks(inputs, mask, self.concat_axis)
        return None

    # ------------------------------------------------------------------ config
    def get_config(self) -> dict:
        mode = self.mode
        mode_type = "raw"
        if callable(mode):
            mode, mode_type = getattr(mode, "__name__", "function"), "function"
        output_shape = list(self._output_shape) if isinstance(self._output_shape, tuple) else self._output_shape
        config = {**super().get_config(), "mode": mode, "mode_type": mode_type, "concat_axis": self.concat_axis,
                  "dot_axes": self.dot_axes, "output_shape": output_shape, "output_shape_type": "raw",
                  "output_mask": self._output_mask, "output_mask_type": "raw", "arguments": self.arguments}
        if self.layers:
            config["layers"] = [_branch_entry(la) for la in self.layers]
            config["branch_weights_in_merge"] = True  # saved weights: under this layer, not inlined as Keras 1
        return config


def _branch_entry(layer: Layer) -> dict:
    if type(layer).__name__ == "Sequential":
        cls = "Sequential"
    elif getattr(layer, "_is_graph_network", False):
        cls = "Functional"
    else:
        cls = type(layer).__name__
    return {"class_name": cls, "config": layer.get_config()}


def merge(inputs: list, mode: Any = "sum", concat_axis: int = -1, dot_axes: Any = -1, output_shape=None,
          output_mask=None, arguments: dict | None = None, name: str | None = None):
    """Keras 1's functional `merge([a, b], mode=...)`: a new `Merge` layer called on the tensors."""
    return Merge(mode=mode, concat_axis=concat_axis, dot_axes=dot_axes, output_shape=output_shape,
                 output_mask=output_mask, arguments=arguments, name=name)(inputs)


__all__ = ["Merge", "merge", "MODES"]
