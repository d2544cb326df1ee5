"""Layers called with tensors outside their first argument (tf.keras records them in the node's kwargs).

`CallArgsLayer` is the base of such layers (TF-op layers; attention's `value=`, `key=`, `attention_mask=`):
its node (`ArgsNode`) lists every tensor of the call as an input, and hands the layer its arguments back in
the shape they were given, with arrays, masks or shape `Spec`s in place of the tensors.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import GraphError, KConvertError, ShapeError
from ..ir import Node, Value
from .base import Layer


class Spec:
    """Shape and dtype of a tensor argument while a layer is built or its outputs inferred."""

    __slots__ = ("shape", "dtype")

    def __init__(self, shape, dtype: str = "float32"):
        self.shape = tuple(shape)
        self.dtype = str(dtype)

    def __repr__(self) -> str:
        return f"Spec({self.shape}, {self.dtype})"


def map_structure(struct: Any, fn: Callable[[Any], Any]) -> Any:
    """Apply `fn` to every leaf of nested lists, tuples and dicts (lists and tuples keep their type)."""
    if isinstance(struct, dict):
        return {k: map_structure(v, fn) for k, v in struct.items()}
    if isinstance(struct, (list, tuple)):
        return type(struct)(map_structure(v, fn) for v in struct)
    return fn(struct)


def leaves(struct: Any) -> list:
    out: list = []
    map_structure(struct, out.append)
    return out


class CallArgs:
    """One call's arguments as a node replays them: the first argument and the keyword arguments."""

    __slots__ = ("first", "kwargs")

    def __init__(self, first: Any, kwargs: dict):
        self.first = first
        self.kwargs = kwargs


class ArgsNode(Node):
    """A node whose inputs are every tensor of the call: those of the first argument, then those in kwargs."""

    def __init__(self, layer, first: Any, kwargs: dict):
        tensors = [v for v in leaves(first) + leaves(kwargs) if isinstance(v, Value)]
        super().__init__(layer, tensors, nested=isinstance(first, (list, tuple)), kwargs=kwargs)
        self.first_arg = first

    def call_args(self, values: list) -> CallArgs:
        """The call's arguments with `values` (arrays, masks, or shapes, which become Specs) for its tensors."""
        it = iter(values)

        def fill(v):
            if not isinstance(v, Value):
                return v
            x = next(it)
            return Spec(x, v.dtype) if isinstance(x, tuple) else x

        first = map_structure(self.first_arg, fill)
        return CallArgs(first, map_structure(self.kwargs, fill))


def _spec(v):
    if isinstance(v, Value):
        return Spec(v.shape, v.dtype)
    if isinstance(v, np.ndarray):
        return Spec((None, *v.shape[1:]) if v.ndim else (), v.dtype)
    return v


def _shape_of(s):
    return s.shape if isinstance(s, Spec) else tuple(np.shape(s))  # a constant's own shape, as tf.keras


def unpack_call_args(call: Callable) -> Callable:
    """Decorator for `call`: accept a `CallArgs` bundle from the engine as the first argument.

    The masks of tensors in keyword arguments are passed as `<name>_mask` (Keras 3's convention) when
    `call` takes such a parameter; `mask` gets the first argument's mask(s).
    """
    params = inspect.signature(call).parameters

    @functools.wraps(call)
    def wrapper(self, inputs, **kwargs):
        if isinstance(inputs, CallArgs):
            mask = kwargs.pop("mask", None)
            kwargs.update(inputs.kwargs)
            if isinstance(mask, CallArgs):
                if "mask" in params:
                    kwargs["mask"] = mask.first
                for k, m in mask.kwargs.items():
                    if f"{k}_mask" in params and isinstance(inputs.kwargs.get(k), np.ndarray):
                        kwargs[f"{k}_mask"] = m
            inputs = inputs.first
        return call(self, inputs, **kwargs)

    return wrapper


class CallArgsLayer(Layer):
    """A layer whose call may take tensors in any argument (tf.keras records them in the node's kwargs).

    Subclasses implement `build_args(first, kwargs)` and `output_specs(first, kwargs)`, where every tensor
    is a `Spec`, and a `call` decorated with `unpack_call_args`.
    """

    positional_names: tuple[str, ...] = ()  # names of the positional arguments after the first
    preserve_input_structure = False  # tf.keras writes the first argument's structure as it was

    def __call__(self, inputs, *args, **kwargs):
        if args:
            if len(args) > len(self.positional_names):
                raise GraphError(f"takes at most {len(self.positional_names) + 1} positional arguments",
                                 layer=self.name)
            kwargs = {**dict(zip(self.positional_names, args)), **kwargs}
        found = leaves(inputs) + leaves(kwargs)
        symbolic = any(isinstance(v, Value) for v in found)
        if symbolic and any(isinstance(v, np.ndarray) for v in found):
            raise GraphError("a layer cannot mix symbolic tensors and arrays in one call", layer=self.name)
        first_spec, kw_spec = map_structure(inputs, _spec), map_structure(kwargs, _spec)
        self._maybe_build_args(first_spec, kw_spec)
        if not symbolic:
            return self.call(inputs, **self._call_kwargs(kwargs))
        try:
            out = self.output_specs(first_spec, kw_spec)
        except KConvertError:
            raise
        except (ValueError, IndexError, TypeError, KeyError) as e:
            raise ShapeError(f"cannot compute the output shape for inputs {first_spec!r}: {e}",
                             layer=self.name) from e
        node = ArgsNode(self, inputs, kwargs)
        multi = isinstance(out, list)
        specs = out if multi else [out]
        layout = self.compute_output_layout([v.layout for v in node.inputs],
                                            [s.shape for s in specs] if multi else specs[0].shape)
        layouts = layout if isinstance(layout, list) else [layout] * len(specs)
        node.outputs = [Value(s.shape, s.dtype, lay, node, i, name=f"{self.name}/{node.node_index}/{i}")
                        for i, (s, lay) in enumerate(zip(specs, layouts))]
        return list(node.outputs) if multi else node.outputs[0]

    def _maybe_build_args(self, first, kwargs) -> None:
        if self.built:
            return
        # each element of a list argument is one input, whatever a constant's own nesting (tf.keras's rule)
        self._build_input_shape = [_shape_of(x) for x in first] if isinstance(first, (list, tuple)) else \
            _shape_of(first)
        try:
            self.build_args(first, kwargs)
        except KConvertError:
            raise
        except (ValueError, IndexError, TypeError) as e:
            raise ShapeError(f"cannot be built for inputs {first!r}: {e}", layer=self.name) from e
        self.built = True
        if self._initial_weights is not None:
            self.set_weights(self._initial_weights)
            self._initial_weights = None

    def _maybe_build(self, input_shape) -> None:
        if isinstance(input_shape, list) and input_shape and isinstance(input_shape[0], (tuple, list)):
            self._maybe_build_args([Spec(s) for s in input_shape], {})
        else:
            self._maybe_build_args(Spec(input_shape), {})

    def build_args(self, first, kwargs) -> None:
        self.build(self._build_input_shape)

    def output_specs(self, first, kwargs):
        """Spec (or list of Specs) of the outputs; by default the first argument's."""
        return first

    def compute_output_shape(self, input_shape):
        """Output shape(s) for the first argument's shape(s), or for a node's `CallArgs` of Specs."""
        if isinstance(input_shape, CallArgs):
            first, kwargs = input_shape.first, input_shape.kwargs
        elif isinstance(input_shape, list) and input_shape and isinstance(input_shape[0], (tuple, list)):
            first, kwargs = [Spec(s) for s in input_shape], {}
        else:
            first, kwargs = Spec(input_shape), {}
        out = self.output_specs(first, kwargs)
        return [s.shape for s in out] if isinstance(out, list) else out.shape

    def compute_mask(self, inputs, mask=None):
        if not self.supports_masking or mask is None:
            return None
        return mask.first if isinstance(mask, CallArgs) else mask
