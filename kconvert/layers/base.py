"""The Layer base class, weights, layer naming and the layer registry."""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import itertools
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .. import backend as _backend
from ..errors import ConfigError, GraphError, ShapeError, UnknownLayerError, WeightsError
from ..ir import Node, Value
from ..ops import array_module

Shape = tuple  # a shape with None for unknown dims; layers taking several inputs get a list of shapes

# ---------------------------------------------------------------------------------------------- registry

LAYERS: dict[str, type[Layer]] = {}


def register_layer(*names: str) -> Callable[[type], type]:
    """Class decorator: make a layer class known by its class name (and any alias names)."""

    def deco(cls):
        for n in (cls.__name__, *names):
            LAYERS[n] = cls
        return cls

    return deco


def get_layer_class(class_name: str, custom_objects: dict | None = None, layer_name: str | None = None) -> type:
    """Resolve a config's class name: custom objects first, then the registry."""
    if custom_objects and class_name in custom_objects:
        return custom_objects[class_name]
    short = class_name.split(">")[-1]  # Keras 3 registered names "Package>Name"
    if custom_objects and short in custom_objects:
        return custom_objects[short]
    if class_name in LAYERS:
        return LAYERS[class_name]
    if short in LAYERS:
        return LAYERS[short]
    raise UnknownLayerError(
        f"unknown layer class '{class_name}'; if it is a custom layer, pass its class as "
        f"custom_objects={{'{short}': {short}}}", layer=layer_name)


# ---------------------------------------------------------------------------------------------- dialect

_KERAS_MAJOR: contextvars.ContextVar[int] = contextvars.ContextVar("keras_major", default=2)


_KERAS_VERSION: contextvars.ContextVar[str | None] = contextvars.ContextVar("keras_version", default=None)


@contextlib.contextmanager
def keras_dialect(major: int, version: str | None = None):
    """Layers built inside compute as Keras `major` computed (e.g. `hard_sigmoid` differs in 2 and 3).

    `version` is the writer's full version string where a layer's numerics depend on more than the major
    version (e.g. '2.2.4' multi-backend Keras vs '2.2.4-tf' tf.keras).
    """
    token = _KERAS_MAJOR.set(int(major))
    vtoken = _KERAS_VERSION.set(version)
    try:
        yield
    finally:
        _KERAS_MAJOR.reset(token)
        _KERAS_VERSION.reset(vtoken)


def current_keras_major() -> int:
    return _KERAS_MAJOR.get()


def current_keras_version() -> str | None:
    return _KERAS_VERSION.get()


_SAFE_MODE: contextvars.ContextVar[bool] = contextvars.ContextVar("safe_mode", default=True)
_WEIGHTS_FOLLOW: contextvars.ContextVar[bool] = contextvars.ContextVar("weights_follow", default=False)


@contextlib.contextmanager
def weights_follow():
    """Within the block, new weights are zeros instead of initializer draws: a loader that assigns every weight
    right after building the model (a whole-model file) skips the random initialization it would overwrite."""
    token = _WEIGHTS_FOLLOW.set(True)
    try:
        yield
    finally:
        _WEIGHTS_FOLLOW.reset(token)


@contextlib.contextmanager
def safe_mode_scope(safe_mode: bool):
    """Deserialization inside refuses to execute code from the file (Lambda bytecode) unless False."""
    token = _SAFE_MODE.set(bool(safe_mode))
    try:
        yield
    finally:
        _SAFE_MODE.reset(token)


def current_safe_mode() -> bool:
    return _SAFE_MODE.get()


# ---------------------------------------------------------------------------------------------- naming

_NAME_COUNTS: defaultdict[str, int] = defaultdict(int)


def to_snake_case(name: str) -> str:
    """Keras's class-name to default-layer-name rule (`Conv2D` -> `conv2d`, `PReLU` -> `p_re_lu`)."""
    s = re.sub(r"(.)([A-Z][a-z0-9]+)", r"\1_\2", name)
    s = re.sub(r"([a-z])([A-Z])", r"\1_\2", s).lower()
    return "private" + s if s.startswith("_") else s


def unique_name(base: str, zero_based: bool = True) -> str:
    """`base`, `base_1`, `base_2`, ... as tf.keras names layers (zero_based=False: `base_1` first)."""
    count = _NAME_COUNTS[base]
    _NAME_COUNTS[base] += 1
    if zero_based:
        return base if count == 0 else f"{base}_{count}"
    return f"{base}_{count + 1}"


def reset_names() -> None:
    """Forget the default-name counters (Keras's `clear_session`)."""
    _NAME_COUNTS.clear()


_backend._SESSION_RESET_HOOKS.append(reset_names)


# ---------------------------------------------------------------------------------------------- weights


_WEIGHT_STAMPS = itertools.count(1)


class Weight:
    """A named weight array held by a layer.

    Every assignment of `value` takes a new `stamp` from a process-wide counter, so a cache of something
    computed from the weights (an ONNX session) can tell that they changed. A converter reading a large source
    file can `defer` a weight: its value is computed on first use, a writer streaming weights to a file takes
    them with `chunks()`/`produce()` without keeping them, and `release()` lets go of a computed value that the
    producer can compute again — so a converted model never needs to sit in memory whole.
    """

    __slots__ = ("name", "_value", "trainable", "stamp", "_producer", "_computed")

    def __init__(self, name: str, value: np.ndarray, trainable: bool = True):
        self.name = name
        self._producer = None
        self.value = value
        self.trainable = trainable

    @property
    def value(self) -> np.ndarray:
        if self._producer is not None and not self._computed:
            self._value, self._computed = self.produce(), True
        value = self._value
        if type(value) is not np.ndarray and not array_module.in_step() and array_module.on_device(value):
            value = self._value = array_module.to_host(value)  # read outside a device step: back to the host
        return value

    def place(self, module) -> None:
        """Move the value to `module`'s device (numpy: the host) without a new stamp: the numbers are the same."""
        self._value = array_module.to_device(self.value, module)

    @value.setter
    def value(self, array: np.ndarray) -> None:
        self._value = array
        self._producer = None
        self._computed = False
        self.stamp = next(_WEIGHT_STAMPS)

    @property
    def shape(self) -> tuple:
        return self._value.shape

    @property
    def dtype(self) -> np.dtype:
        return self._value.dtype

    @property
    def deferred(self) -> bool:
        """True while the value is still to be computed by the producer given to `defer`."""
        return self._producer is not None and not self._computed

    def defer(self, producer: Callable[[], np.ndarray]) -> None:
        """Let `producer()` compute the value (of this weight's shape) when it is first needed."""
        self._value = np.broadcast_to(np.zeros((), self.dtype), self.shape)  # shape and dtype, no memory
        self._producer, self._computed = producer, False
        self.stamp = next(_WEIGHT_STAMPS)

    def release(self) -> None:
        """Let go of a computed value its producer can compute again (a writer done with this weight)."""
        if self._producer is not None and self._computed:
            self._value, self._computed = np.broadcast_to(np.zeros((), self.dtype), self.shape), False

    def produce(self) -> np.ndarray:
        """The value; a deferred one is computed afresh and not kept (for writers streaming weights to a file)."""
        if not self.deferred:
            return self._value
        array = np.asarray(self._producer())
        if array.shape != self.shape:
            raise WeightsError(f"weight '{self.name}' has shape {self.shape}, its source gave {array.shape}")
        return array.astype(self.dtype, copy=False)

    def chunks(self):
        """The value as (first row, rows) blocks along axis 0, for writers streaming it to a file: a deferred weight
        whose producer has `chunks()` is computed block by block (each block valid until the next), and not kept."""
        if not self.deferred or not hasattr(self._producer, "chunks") or not self.shape:
            yield 0, self.produce()
            return
        for start, block in self._producer.chunks():
            yield start, block.astype(self.dtype, copy=False)

    def numpy(self) -> np.ndarray:
        return self.value

    def assign(self, value) -> None:
        value = np.asarray(value)
        if value.shape != self.shape:
            raise WeightsError(f"weight '{self.name}' has shape {self.shape}, got {value.shape}")
        self.value = value.astype(self.dtype, copy=True)

    def __repr__(self) -> str:
        return f"<Weight {self.name} shape={self.shape}>"


# ---------------------------------------------------------------------------------------------- helpers


def _flatten(inputs) -> tuple[list, bool]:
    if isinstance(inputs, (list, tuple)):
        return list(inputs), True
    if isinstance(inputs, dict):
        return list(inputs.values()), True
    return [inputs], False


def is_shape_list(shape) -> bool:
    """True for a list of shapes (several tensors), False for one shape."""
    return isinstance(shape, list) and len(shape) > 0 and isinstance(shape[0], (tuple, list))


def _batchless(shape):
    return (None, *shape[1:])


# ---------------------------------------------------------------------------------------------- Layer

_CONSTRUCTING: contextvars.ContextVar[int | None] = contextvars.ContextVar("constructing", default=None)


def _legacy_names_init(init: Callable) -> Callable:
    """Wrap a layer class's `__init__`: the outermost call renames Keras 1 keywords for the built class."""
    from . import legacy_names

    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    positional = [p.name for p in inspect.signature(init).parameters.values() if p.kind in kinds][1:]

    @functools.wraps(init)
    def wrapper(self, *args, **kwargs):
        if _CONSTRUCTING.get() == id(self):
            return init(self, *args, **kwargs)
        table = legacy_names.table_for(type(self))
        if table is not None:
            args, kwargs = legacy_names.convert(table, args, kwargs, positional)
        token = _CONSTRUCTING.set(id(self))
        try:
            return init(self, *args, **kwargs)
        finally:
            _CONSTRUCTING.reset(token)

    return wrapper


_BASE_KWARGS = {"name", "trainable", "dtype", "input_shape", "batch_input_shape", "batch_size", "input_dim",
                "weights", "autocast", "dynamic", "input_dtype"}


class Layer:
    """Base of every layer: config, weights in Keras order, shape inference and a numpy `call`.

    Subclasses implement `build(input_shape)` (creating weights with `add_weight`), `call(inputs)` with
    `kconvert.ops`, `compute_output_shape(input_shape)` and `get_config()`.
    """

    supports_masking = False

    def __init_subclass__(cls, **kwargs):
        """Constructors of kconvert's layers accept Keras 1 keyword names (`Dense(output_dim=, init=)`), renamed
        with a DeprecationWarning once per construction (`legacy_names`)."""
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__ and cls.__module__.startswith("kconvert.layers"):
            cls.__init__ = _legacy_names_init(cls.__init__)

    def __init__(self, name: str | None = None, trainable: bool = True, dtype: Any = None, **kwargs):
        unknown = set(kwargs) - _BASE_KWARGS
        if unknown:
            raise ConfigError(f"{type(self).__name__} got unknown arguments: {sorted(unknown)}", layer=name)
        self.name = name or unique_name(to_snake_case(type(self).__name__))
        self.trainable = bool(trainable)
        self._dtype_config = dtype if dtype is not None else "float32"
        self.dtype = _resolve_dtype(self._dtype_config)
        self.built = False
        self._trainable_weights: list[Weight] = []
        self._non_trainable_weights: list[Weight] = []
        self._inbound_nodes: list[Node] = []
        self._build_input_shape = None
        self._initial_weights = kwargs.get("weights")
        self._keras_major = current_keras_major()
        batch_input_shape = kwargs.get("batch_input_shape")
        if batch_input_shape is None and kwargs.get("input_shape") is not None:
            batch_input_shape = (kwargs.get("batch_size"), *kwargs["input_shape"])
        if batch_input_shape is None and kwargs.get("input_dim") is not None:
            batch_input_shape = (kwargs.get("batch_size"), kwargs["input_dim"])
        self._batch_input_shape = tuple(batch_input_shape) if batch_input_shape is not None else None

    # ------------------------------------------------------------------ to be overridden
    def build(self, input_shape: Shape) -> None:
        """Create the layer's weights for `input_shape`."""
        self.built = True

    def call(self, inputs, **kwargs):
        """Compute the layer on numpy arrays."""
        return inputs

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return input_shape

    def compute_output_layout(self, input_layouts: list, output_shape: Shape):
        """Layout string of the output(s); by default the first input's when the rank is unchanged."""
        first = input_layouts[0] if input_layouts else None
        return first if first is not None and not is_shape_list(output_shape) and len(output_shape) == len(first) else None

    def compute_output_dtype(self, input_dtypes: list[str]) -> str:
        return self.dtype

    def compute_mask(self, inputs, mask=None):
        return mask if self.supports_masking else None

    def get_config(self) -> dict:
        config = {"name": self.name, "trainable": self.trainable, "dtype": self._dtype_config}
        if self._batch_input_shape is not None:
            config["batch_input_shape"] = list(self._batch_input_shape)
        return config

    @classmethod
    def from_config(cls, config: dict) -> Layer:
        return cls(**config)

    # ------------------------------------------------------------------ weights
    def add_weight(self, name: str, shape: Sequence[int], initializer: Any = "zeros", trainable: bool = True,
                   dtype: str | None = None) -> Weight:
        """Create a weight named `<layer>/<name>:0` as tf.keras names it."""
        from .initializers import get as get_initializer

        shape = tuple(int(s) for s in shape)
        init = get_initializer(initializer)  # resolved even when not drawn: an unknown name is still an error
        if _WEIGHTS_FOLLOW.get():
            value = np.zeros(shape, dtype=dtype or self.dtype)
        else:
            value = init(shape, dtype or self.dtype)
        w = Weight(f"{self.name}/{name}:0", np.asarray(value, dtype=dtype or self.dtype), trainable)
        (self._trainable_weights if trainable else self._non_trainable_weights).append(w)
        return w

    @property
    def trainable_weights(self) -> list[Weight]:
        return list(self._trainable_weights) if self.trainable else []

    @property
    def non_trainable_weights(self) -> list[Weight]:
        if self.trainable:
            return list(self._non_trainable_weights)
        return list(self._trainable_weights) + list(self._non_trainable_weights)

    @property
    def weights(self) -> list[Weight]:
        return self.trainable_weights + self.non_trainable_weights

    def get_weights(self) -> list[np.ndarray]:
        return [w.value.copy() for w in self.weights]

    def set_weights(self, weights: Sequence[np.ndarray]) -> None:
        own = self.weights
        if len(weights) != len(own):
            raise WeightsError(f"expects {len(own)} weight arrays, got {len(weights)}", layer=self.name)
        for w, value in zip(own, weights):
            value = np.asarray(value)
            if value.shape != w.shape:
                raise WeightsError(f"weight '{w.name}' has shape {w.shape}, the provided one {value.shape}",
                                   layer=self.name)
        for w, value in zip(own, weights):
            w.assign(value)

    def keras3_state(self) -> tuple[list[Weight], dict[str, Any]]:
        """Own variables in Keras 3 `vars/<i>` order, and named child objects, as Keras 3's `_save_state`
        walks them (a child is any object with its own `keras3_state`)."""
        return list(self._trainable_weights) + list(self._non_trainable_weights), {}

    def count_params(self) -> int:
        return int(sum(int(np.prod(w.shape)) for w in self.weights))

    # ------------------------------------------------------------------ calling
    def _maybe_build(self, input_shape) -> None:
        if not self.built:
            self._build_input_shape = input_shape
            try:
                self.build(input_shape)
            except (ValueError, IndexError, TypeError) as e:
                raise ShapeError(f"cannot be built for input shape {input_shape}: {e}", layer=self.name) from e
            self.built = True
            if self._initial_weights is not None:
                self.set_weights(self._initial_weights)
                self._initial_weights = None

    def __call__(self, inputs, **kwargs):
        flat, nested = _flatten(inputs)
        if flat and all(isinstance(v, Value) for v in flat):
            return self._call_symbolic(flat, nested, kwargs)
        if any(isinstance(v, Value) for v in flat):
            raise GraphError("a layer cannot mix symbolic tensors and arrays in one call", layer=self.name)
        arrays = [np.asarray(a) for a in flat]
        shapes = [_batchless(a.shape) for a in arrays]
        self._maybe_build(shapes if nested else shapes[0])
        return self.call(arrays if nested else arrays[0], **self._call_kwargs(kwargs))

    def _call_kwargs(self, kwargs: dict) -> dict:
        accepted = _call_params(type(self))
        return {k: v for k, v in kwargs.items() if k in accepted or "**" in accepted}

    def _call_symbolic(self, flat: list[Value], nested: bool, kwargs: dict):
        shapes = [v.shape for v in flat]
        in_shape = shapes if nested else shapes[0]
        self._maybe_build(in_shape)
        try:
            out_shape = self.compute_output_shape(in_shape)
        except (ValueError, IndexError, TypeError) as e:
            raise ShapeError(f"cannot compute the output shape for input shape {in_shape}: {e}",
                             layer=self.name) from e
        node = Node(self, flat, nested, kwargs)
        layout = self.compute_output_layout([v.layout for v in flat], out_shape)
        dtype = self.compute_output_dtype([v.dtype for v in flat])
        multi = is_shape_list(out_shape)
        shapes_out = out_shape if multi else [out_shape]
        layouts = layout if isinstance(layout, list) else [layout] * len(shapes_out)
        node.outputs = [Value(s, dtype, lay, node, i, name=f"{self.name}/{node.node_index}/{i}")
                        for i, (s, lay) in enumerate(zip(shapes_out, layouts))]
        return list(node.outputs) if multi else node.outputs[0]

    # ------------------------------------------------------------------ Keras node accessors
    def _node_attr(self, index: int, attr: str):
        if not self._inbound_nodes:
            raise GraphError("has never been called and thus has no defined " + attr, layer=self.name)
        if index >= len(self._inbound_nodes):
            raise GraphError(f"has only {len(self._inbound_nodes)} inbound nodes, asked for node {index}",
                             layer=self.name)
        node = self._inbound_nodes[index]
        values = node.inputs if attr == "input" else node.outputs
        if attr == "input" and not values:  # InputLayer: its input is its output
            values = node.outputs
        single = (attr == "input" and not node.nested) or (attr == "output" and len(values) == 1)
        return values[0] if single and values else list(values)

    def _single_node(self, attr: str):
        if len(self._inbound_nodes) > 1:
            raise GraphError(f"has multiple inbound nodes, hence the notion of 'layer {attr}' is ill-defined; "
                             f"use get_{attr}_at(node_index)", layer=self.name)
        return self._node_attr(0, attr)

    def get_input_at(self, node_index: int):
        return self._node_attr(node_index, "input")

    def get_output_at(self, node_index: int):
        return self._node_attr(node_index, "output")

    def get_input_shape_at(self, node_index: int):
        return _shape_of(self.get_input_at(node_index))

    def get_output_shape_at(self, node_index: int):
        return _shape_of(self.get_output_at(node_index))

    @property
    def input(self):
        return self._single_node("input")

    @property
    def output(self):
        return self._single_node("output")

    @property
    def input_shape(self):
        shapes = {repr(_shape_of(n.inputs if n.nested else (n.inputs or n.outputs)[0]))
                  for n in self._inbound_nodes}
        if len(shapes) > 1:
            raise GraphError("has multiple inbound nodes with different input shapes; use get_input_shape_at",
                             layer=self.name)
        return _shape_of(self.get_input_at(0))

    @property
    def output_shape(self):
        shapes = {repr(_shape_of(n.outputs if len(n.outputs) > 1 else n.outputs[0])) for n in self._inbound_nodes}
        if len(shapes) > 1:
            raise GraphError("has multiple inbound nodes with different output shapes; use get_output_shape_at",
                             layer=self.name)
        return _shape_of(self.get_output_at(0))

    @property
    def inbound_nodes(self) -> list[Node]:
        return list(self._inbound_nodes)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name}>"


def _shape_of(v):
    if isinstance(v, list):
        return [x.shape for x in v]
    return v.shape


_CALL_PARAMS: dict[type, set] = {}


def _call_params(cls: type) -> set:
    if cls not in _CALL_PARAMS:
        params = inspect.signature(cls.call).parameters
        names = {p.name for p in params.values()}
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            names.add("**")
        _CALL_PARAMS[cls] = names
    return _CALL_PARAMS[cls]


def _resolve_dtype(dtype: Any) -> str:
    """Compute dtype from a dtype string or a Keras policy dict (mixed policies compute in float32 here)."""
    if isinstance(dtype, dict):
        name = dtype.get("config", {}).get("name", "float32")
    else:
        name = str(dtype)
    if name.startswith("mixed_") or name in ("float16", "bfloat16"):
        return "float32"
    return name
