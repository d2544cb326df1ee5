"""Keras 3 model configs (plain dicts) <-> layer graphs.

Reading follows Keras 3's `functional_from_config` and `Sequential.from_config`: entries are
`{module, class_name, config, registered_name, build_config}`, inbound nodes are `{"args", "kwargs"}` with
`__keras_tensor__` objects, `input_layers`/`output_layers` mirror the real structure (one reference, a list or a
dict), and node indices differ from tf.keras's (reference/keras_formats.md section 4): in call arguments every
nested model's first call is node 0, in `input_layers`/`output_layers` a nested Functional is offset by one.
kconvert's models own a construction node 0 (as tf.keras's), so references to nested models are shifted here.
Layers are built under `keras_dialect(3)`, so version-dependent layers compute as Keras 3 does.

Writing produces the config real Keras 3 (3.15) writes: `to_json()`/`config.json`, or with `legacy=True` the
`model_config` of a Keras 3 legacy `.h5`. Layer configs are mapped from kconvert's tf.keras form by the rule
tables below; a layer read from a Keras 3 file remembers what the rules cannot reproduce (`_keras3_overrides`),
so reading and writing a Keras 3 config changes nothing. `prepare_for_keras3` rewrites layers Keras 3 lacks
into exact native equivalents and refuses, naming the layer, what has none.

Keras 3 turns the masks of `Embedding(mask_zero=True)` and `Masking` into graph operations (`NotEqual`, `Any`)
passed as `mask=` tensors. kconvert computes masks itself, so those mask-only operations are set aside when
reading and put back, in place, when the same graph is written again.
"""

from __future__ import annotations

import copy
import inspect
import sys
import threading
from typing import Any

import numpy as np

from ..custom_objects import current_custom_objects, custom_object_scope
from ..errors import ConfigError, KConvertError, UnknownLayerError
from ..ir import Node, Value
from ..layers import LAYERS, Layer, get_layer_class, keras_dialect
from ..layers.base import _BASE_KWARGS, is_shape_list, safe_mode_scope
from ..layers.call_args import ArgsNode, map_structure
from ..layers.keras3_ops import KERAS3_OPS, from_tf_op
from .keras3_weights import keras3_class_name, keras3_layers

__all__ = ["is_keras3_config", "model_from_keras3_config", "model_to_keras3_config", "layer_to_keras3_config",
           "prepare_for_keras3", "keras3_overrides"]

FUNCTIONAL_MODULE = "keras.src.models.functional"
_MISSING = object()
_ANY = object()

# ------------------------------------------------------------------------------------------------ rule tables

# Keras 3 layers whose `call` takes `mask`: Keras 3 records `mask` in the kwargs of each of their nodes.
CALL_TAKES_MASK = {"BatchNormalization", "GlobalAveragePooling1D", "Softmax", "LSTM", "GRU", "SimpleRNN", "RNN",
                   "Bidirectional", "TimeDistributed", "ConvLSTM1D", "ConvLSTM2D", "ConvLSTM3D", "Attention",
                   "AdditiveAttention", "Lambda", "Sequential", "Functional"}
# Keras 3 layers whose `call` defaults `training` to False: Keras 3 records `training: false` in their nodes.
CALL_TRAINING_FALSE = {"AlphaDropout", "Dropout", "GaussianDropout", "GaussianNoise", "SpatialDropout1D",
                       "SpatialDropout2D", "SpatialDropout3D", "LSTM", "GRU", "SimpleRNN", "RNN", "ConvLSTM1D",
                       "ConvLSTM2D", "ConvLSTM3D", "Attention", "AdditiveAttention"}
# Keras 3 layers that are built when constructed: they write no build_config.
BUILT_AT_INIT = {"Activation", "AlphaDropout", "AveragePooling1D", "AveragePooling2D", "AveragePooling3D",
                 "Dropout", "ELU", "GaussianDropout", "GaussianNoise", "GlobalAveragePooling1D",
                 "GlobalAveragePooling2D", "GlobalAveragePooling3D", "GlobalMaxPooling1D", "GlobalMaxPooling2D",
                 "GlobalMaxPooling3D", "LeakyReLU", "Masking", "MaxPooling1D", "MaxPooling2D", "MaxPooling3D",
                 "ReLU", "Reshape", "Softmax", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D",
                 "InputLayer"}
# Keys Keras 3 writes that tf.keras's layers lack: {class: {key: (value Keras 3 writes by default,
# True when any value computes the same at inference)}}. Reading drops them if kconvert's layer does not take
# them (a value that changes the numerics is refused); writing adds the default.
K3_ONLY: dict[str, dict[str, tuple[Any, bool]]] = {
    "Dense": {"quantization_config": (None, False)},
    "EinsumDense": {"quantization_config": (None, False)},
    "Embedding": {"quantization_config": (None, False)},
    "BatchNormalization": {"synchronized": (False, True), "renorm": (False, True), "renorm_clipping": (None, True),
                           "renorm_momentum": (0.99, True)},
    "LayerNormalization": {"rms_scaling": (False, False)},
    "AlphaDropout": {"noise_shape": (None, True)},
    "ZeroPadding1D": {"data_format": ("channels_last", False)},
    "SpatialDropout2D": {"data_format": ("channels_last", True)},
    "SpatialDropout3D": {"data_format": ("channels_last", True)},
    "Conv3DTranspose": {"dilation_rate": ([1, 1, 1], False)},
    "LSTM": {"zero_output_for_mask": (False, False), "seed": (None, True)},
    "GRU": {"zero_output_for_mask": (False, False), "seed": (None, True)},
    "SimpleRNN": {"zero_output_for_mask": (False, False)},
}
# K3_ONLY keys whose value, when kconvert's config omits it, is the layer's attribute of that name.
_K3_FROM_ATTRIBUTE = {"data_format", "zero_output_for_mask"}
# Keys Keras 3 writes only when set (LoRA): read like K3_ONLY, never written.
K3_WHEN_SET: dict[str, dict[str, tuple[Any, bool]]] = {
    c: {"lora_rank": (None, False), "lora_alpha": (None, False)} for c in ("Dense", "EinsumDense", "Embedding")}
# Keras 3 layers whose config holds the dtype as a plain string rather than a DTypePolicy.
PLAIN_DTYPE = {"InputLayer", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D"}
# Keys tf.keras writes that Keras 3 refuses: {class: {key: the value it must have to be dropped (_ANY: any)}}.
_SEPARABLE = {"groups": 1, "kernel_initializer": _ANY, "kernel_regularizer": _ANY, "kernel_constraint": _ANY}
_SPATIAL_DROPOUT = {"trainable": _ANY, "noise_shape": None}
K2_ONLY: dict[str, dict[str, Any]] = {
    "Conv1DTranspose": {"groups": 1}, "Conv2DTranspose": {"groups": 1}, "Conv3DTranspose": {"groups": 1},
    "DepthwiseConv1D": {"groups": 1}, "DepthwiseConv2D": {"groups": 1},
    "SeparableConv1D": _SEPARABLE, "SeparableConv2D": _SEPARABLE,
    "SpatialDropout1D": _SPATIAL_DROPOUT, "SpatialDropout2D": _SPATIAL_DROPOUT, "SpatialDropout3D": _SPATIAL_DROPOUT,
    "Embedding": {"input_length": _ANY},
    "LSTM": {"time_major": False, "implementation": _ANY}, "GRU": {"time_major": False, "implementation": _ANY},
    "SimpleRNN": {"time_major": False}, "RNN": {"time_major": False},
    "LSTMCell": {"implementation": _ANY}, "GRUCell": {"implementation": _ANY},
}
# Keys Keras 3 writes only when they are not at this value: {class: {key: value}}.
K3_OMITS_DEFAULT: dict[str, dict[str, Any]] = {"Dense": {"activity_regularizer": None}}
# Keys Keras 3 names differently: {class: {tf.keras key: Keras 3 key}}.
RENAMES: dict[str, dict[str, str]] = {
    "InputLayer": {"batch_input_shape": "batch_shape"},
    "LeakyReLU": {"alpha": "negative_slope"},
}
# Activation names tf.keras writes that Keras 3 spells differently.
_ACTIVATION_NAMES = {"swish": "silu", "hard_swish": "hard_silu", "log_softmax_v2": "log_softmax",
                     "relu6": "relu6", "leaky_relu": "leaky_relu"}
# Keras 3's initializer configs: keys it adds to tf.keras's, with their defaults.
_INITIALIZER_KEYS = {
    **{c: {"seed": None, "input_axes": None, "output_axes": None}
       for c in ("GlorotUniform", "GlorotNormal", "HeUniform", "HeNormal", "LecunUniform", "LecunNormal")},
    "VarianceScaling": {"seed": None, "input_axes": None, "output_axes": None},
}
# Config keys holding a wrapped layer's entry (Bidirectional, TimeDistributed).
_WRAPPED_KEYS = ("layer", "backward_layer")
# Keras 3's Bidirectional writes its forward copy as `layer` and its backward copy as `backward_layer`.
_BIDIRECTIONAL_KEYS = (("layer", "forward_layer"), ("backward_layer", "backward_layer"))
# tf.keras layers Keras 3 has no exact native form of (written from kconvert, they would not load).
_NO_KERAS3_FORM = {
    "TFOpLambda": "TensorFlow operations recorded by tf.keras have no Keras 3 form",
    "SlicingOpLambda": "TensorFlow operations recorded by tf.keras have no Keras 3 form",
    "TensorFlowOpLayer": "TensorFlow operations recorded by tf.keras have no Keras 3 form",
}
# Keys of tf.keras's Lambda config that Keras 3's lacks (it writes the functions as `__lambda__` objects).
_TF_KERAS_LAMBDA_KEYS = ("function_type", "module", "output_shape_type", "output_shape_module", "mask_type",
                         "mask_module", "output_shape", "mask")
# kconvert-only layers written for Keras 3 as `kconvert>Name` objects; real Keras 3 loads them with
# `custom_objects=kconvert.keras_objects("keras3")` (kconvert/keras_objects.py).
KCONVERT_OBJECTS = {"LocallyConnected1D", "LocallyConnected2D", "Merge"}
KCONVERT_MODULE = "kconvert.keras_objects"
# Keras 2's hard_sigmoid inside a recurrent layer, written for Keras 3 as this registered function.
HARD_SIGMOID_K2 = {"module": "builtins", "class_name": "function", "config": "kconvert>HardSigmoidKeras2",
                   "registered_name": "function"}
_RECURRENT_ACTIVATIONS = {"activation": "_act", "recurrent_activation": "_ract"}
# Layers that apply their `activation` to their result last (a Keras 2 hard_sigmoid there can be split off).
_POST_ACTIVATION = {"Dense", "Conv1D", "Conv2D", "Conv3D", "Conv1DTranspose", "Conv2DTranspose",
                    "Conv3DTranspose", "SeparableConv1D", "SeparableConv2D", "DepthwiseConv1D", "DepthwiseConv2D"}


def keras_major(version: Any) -> int:
    try:
        return int(str(version).split(".")[0])
    except (TypeError, ValueError):
        return 2


def is_keras3_config(config: Any, keras_version: Any = None) -> bool:
    """True for a config Keras 3 wrote: from a file whose keras_version is 3.x (the legacy `.h5` writer drops
    `module` but keeps Keras 3's node form), or, with no version known, a top-level `module` key (`to_json`)."""
    if not isinstance(config, dict):
        return False
    if keras_version is not None:  # tf.keras 2.12+ also writes `module` keys (its own `.keras` archives)
        return keras_major(keras_version) >= 3
    return "module" in config


# ------------------------------------------------------------------------------------------------ reading


def model_from_keras3_config(config: dict, custom_objects: dict | None = None, safe_mode: bool = True) -> Layer:
    """Build a model (or a single layer) from a Keras 3 `{module, class_name, config, ...}` dict."""
    if not isinstance(config, dict) or "class_name" not in config:
        raise ConfigError("a model config must be a dict with 'class_name' and 'config'")
    config = _strip_shared_ids(config)
    with keras_dialect(3), safe_mode_scope(safe_mode), custom_object_scope(custom_objects):
        model = _deserialize(config, current_custom_objects())
        if not getattr(model, "_is_graph_network", False):
            _build_from_config(model, config.get("build_config"))
            _remember_overrides(model, config)
    if isinstance(config.get("compile_config"), dict) and config["compile_config"]:
        model._keras3_compile_config = config["compile_config"]
    return model


def _json_plain(x: Any) -> Any:
    """A config as it reads back from JSON: tuples as lists, numpy values as Python numbers."""
    if isinstance(x, dict):
        return {k: _json_plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_plain(v) for v in x]
    if hasattr(x, "tolist") and not isinstance(x, (str, bytes)):
        return x.tolist()
    return x


def _strip_shared_ids(x: Any) -> Any:
    """Keras 3's `shared_object_id` only links equal objects (dtype policies) within one save; drop it."""
    if isinstance(x, dict):
        return {k: _strip_shared_ids(v) for k, v in x.items() if k != "shared_object_id"}
    if isinstance(x, list):
        return [_strip_shared_ids(v) for v in x]
    return x


_MASK_OPS = {"NotEqual", "Any"}  # what Embedding(mask_zero) and Masking become; legacy `.h5` entries lack `module`


def _is_op(entry: dict) -> bool:
    module = entry.get("module")
    return str(module).startswith("keras.src.ops") if module else entry.get("class_name") in _MASK_OPS


def _deserialize(entry: dict, custom_objects: dict) -> Layer:
    if not isinstance(entry, dict):
        raise ConfigError(f"malformed layer entry {str(entry)[:80]}")
    class_name = entry.get("class_name")
    config = entry.get("config")
    name = config.get("name") if isinstance(config, dict) else None
    if class_name == "Sequential":
        return _sequential(config, custom_objects)
    if class_name in ("Functional", "Model") and isinstance(config, dict) and "layers" in config:
        return _functional(config, custom_objects)
    if not isinstance(class_name, str) or not isinstance(config, dict):
        raise ConfigError(f"malformed layer entry {str(entry)[:80]}", layer=name)
    if _is_op(entry):
        return _operation(entry, class_name, config, name)
    registered = entry.get("registered_name")
    key = registered if isinstance(registered, str) and registered in custom_objects else class_name
    cls = get_layer_class(key, custom_objects, name)
    layer_config = _normalize_config(class_name, cls, dict(config), name)
    inner = []
    for wrapped in _WRAPPED_KEYS:  # a wrapper's layers are Keras 3 entries too: read them with these rules
        if isinstance(layer_config.get(wrapped), dict) and "class_name" in layer_config[wrapped]:
            inner.append((wrapped, layer_config[wrapped]))
            layer_config[wrapped] = _deserialize(layer_config[wrapped], custom_objects)
    try:
        if hasattr(cls, "from_config_with_objects"):
            layer = cls.from_config_with_objects(layer_config, custom_objects)
        else:
            layer = cls.from_config(layer_config)
    except KConvertError as e:
        raise e.with_context(layer=name) from None
    except (TypeError, ValueError, KeyError) as e:
        raise ConfigError(f"invalid {class_name} config: {e}", layer=name) from e
    if entry.get("module") is not None:
        layer._keras3_module = (entry.get("module"), registered)
    if inner:
        layer._keras3_inner = [(layer_config[k], e) for k, e in inner]
    return layer


def _operation(entry: dict, class_name: str, config: dict, name: str | None) -> Layer:
    """A Keras 3 operation entry (`keras.src.ops.*`) as its kconvert layer (kconvert/layers/keras3_ops.py)."""
    cls = KERAS3_OPS.get(class_name)
    if cls is None or class_name in _MASK_OPS:
        raise UnknownLayerError(f"the Keras 3 operation '{class_name}' ({entry.get('module')}) used on model "
                                f"tensors is not supported; supported: {', '.join(sorted(KERAS3_OPS))}", layer=name)
    try:
        layer = cls.from_config(dict(config))
    except KConvertError as e:
        raise e.with_context(layer=name) from None
    except (TypeError, ValueError) as e:
        raise ConfigError(f"invalid Keras 3 operation {class_name} config: {e}", layer=name) from e
    layer._keras3_module = (entry.get("module"), entry.get("registered_name"))
    return layer


def _is_operation(layer: Any) -> bool:
    return bool(getattr(type(layer), "keras3_operation", False))


class _Ref:
    """The place of the i-th tensor in an operation's call arguments."""

    __slots__ = ("index",)

    def __init__(self, index: int):
        self.index = index


def _parse_op_node(node: Any, layer: str) -> tuple[list, Any]:
    """(tensor references, `fill(tensors) -> (args, kwargs)`) of an operation's inbound node: every positional
    argument, tensors and constants alike, as Keras 3 calls the operation."""
    if not isinstance(node, dict):
        raise ConfigError(f"malformed inbound node of a Keras 3 operation {str(node)[:80]}", layer=layer)
    refs: list = []

    def decode(x):
        if isinstance(x, dict):
            if x.get("class_name") == "__keras_tensor__":
                refs.append(_tensor_history(x, layer))
                return _Ref(len(refs) - 1)
            if x.get("class_name") == "__slice__":
                c = x.get("config") or {}
                return slice(c.get("start"), c.get("stop"), c.get("step"))
            if x.get("class_name") == "__ellipsis__":
                return Ellipsis
            return {k: decode(v) for k, v in x.items()}
        if isinstance(x, list):
            return [decode(v) for v in x]
        return x

    args, kwargs = decode(list(node.get("args") or [])), decode(dict(node.get("kwargs") or {}))

    def fill(tensors: list) -> tuple[list, dict]:
        def put(x):
            return tensors[x.index] if isinstance(x, _Ref) else x

        return map_structure(args, put), map_structure(kwargs, put)

    return refs, fill


def _accepted(cls: type) -> set[str]:
    """Constructor argument names of a layer class (and of its bases up to Layer)."""
    names: set[str] = set(_BASE_KWARGS)
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        params = inspect.signature(init).parameters.values()
        names.update(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
        if klass is Layer:
            break
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return names


def _normalize_config(class_name: str, cls: type, config: dict, name: str | None) -> dict:
    """A Keras 3 layer config in the form kconvert's layer takes: Keras-3-only keys that make no difference
    are dropped, renamed keys get their tf.keras names."""
    accepted = _accepted(cls)
    inverse = {v: k for k, v in RENAMES.get(class_name, {}).items()}
    for key in list(config):
        if key in accepted:
            continue
        if key in inverse and inverse[key] in accepted:
            config[inverse[key]] = config.pop(key)
            continue
        spec = K3_ONLY.get(class_name, {}).get(key) or K3_WHEN_SET.get(class_name, {}).get(key)
        if spec is not None:
            default, neutral = spec
            if not neutral and config[key] != default:
                raise ConfigError(f"the Keras 3 option {key}={config[key]!r} is not supported by kconvert's "
                                  f"{class_name}", layer=name)
            config.pop(key)
    return config


def _build_from_config(layer: Layer, build_config: Any) -> None:
    if layer.built or not isinstance(build_config, dict) or build_config.get("input_shape") is None:
        return
    shape = build_config["input_shape"]
    shape = [tuple(s) for s in shape] if is_shape_list(shape) else tuple(shape)
    layer._maybe_build(shape)


def _tensor_history(x: Any, layer: str) -> tuple[str, int, int]:
    if isinstance(x, dict) and x.get("class_name") == "__keras_tensor__":
        hist = (x.get("config") or {}).get("keras_history")
        if isinstance(hist, (list, tuple)) and len(hist) == 3:
            return str(hist[0]), int(hist[1]), int(hist[2])
    if isinstance(x, (list, tuple)) and len(x) >= 3 and isinstance(x[0], str):  # legacy list form
        return str(x[0]), int(x[1]), int(x[2])
    raise ConfigError(f"a call argument is not a tensor reference: {str(x)[:80]}", layer=layer)


def _has_tensor(x: Any) -> bool:
    if isinstance(x, dict):
        return x.get("class_name") == "__keras_tensor__" or any(_has_tensor(v) for v in x.values())
    if isinstance(x, list):
        return any(_has_tensor(v) for v in x)
    return False


def _histories(x: Any) -> list:
    if isinstance(x, dict):
        if x.get("class_name") == "__keras_tensor__":
            return [(x.get("config") or {}).get("keras_history") or ["?"]]
        return [h for v in x.values() for h in _histories(v)]
    return [h for v in x for h in _histories(v)] if isinstance(x, list) else []


def _parse_node(node: Any, layer: str) -> tuple[list, bool, dict, dict | None]:
    """(refs, nested, kwargs for the call, the original kwargs when mask tensors were set aside)."""
    if isinstance(node, list):  # tf.keras's list form, still read by Keras 3
        refs = [_tensor_history(r, layer) for r in node]
        kwargs = node[0][3] if node and len(node[0]) > 3 and isinstance(node[0][3], dict) else {}
        return refs, len(refs) > 1, dict(kwargs), None
    if not isinstance(node, dict):
        raise ConfigError(f"malformed inbound node {str(node)[:80]}", layer=layer)
    args = node.get("args") or []
    if len(args) == 1 and isinstance(args[0], list):
        tensors, nested = args[0], True
    elif len(args) == 1:
        tensors, nested = [args[0]], False
    else:
        tensors, nested = list(args), True
    refs = [_tensor_history(t, layer) for t in tensors]
    kwargs = dict(node.get("kwargs") or {})
    original = None
    for key, value in list(kwargs.items()):
        if _has_tensor(value):
            if key != "mask" and not key.endswith("_mask"):
                raise ConfigError(f"the call argument '{key}' is a tensor; kconvert takes tensors only as the "
                                  "layer's inputs", layer=layer)
            original = original or copy.deepcopy(node.get("kwargs"))
            kwargs[key] = None  # kconvert propagates masks itself
    return refs, nested, kwargs, original


def _functional(config: dict, custom_objects: dict) -> Layer:
    model_name = config.get("name")
    entries = config.get("layers")
    if not isinstance(entries, list):
        raise ConfigError("a functional model config needs a 'layers' list", layer=model_name)
    # mask operations are set aside; the other operations are built as layers
    op_names = {e.get("name") for e in entries if isinstance(e, dict) and _is_op(e) and e.get("class_name") in _MASK_OPS}
    created: dict[str, Layer] = {}
    pending: dict[str, list] = {}
    order: list[str] = []
    graph_stash: dict[str, Any] = {"ops": [], "kwargs": {}, "order": []}
    for pos, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ConfigError(f"malformed layer entry {str(entry)[:80]}", layer=model_name)
        name = entry.get("name") or (entry.get("config") or {}).get("name")
        graph_stash["order"].append(name)
        if name in op_names:
            graph_stash["ops"].append((pos, copy.deepcopy(entry)))
            continue
        layer = _deserialize(entry, custom_objects)
        name = name or layer.name
        if name in created:
            raise ConfigError(f"the layer name '{name}' appears twice in the model config", layer=name)
        created[name] = layer
        nodes = entry.get("inbound_nodes") or []
        if not isinstance(nodes, list):
            raise ConfigError("'inbound_nodes' must be a list", layer=name)
        parsed = []
        for i, node in enumerate(nodes):
            if _is_operation(layer):
                refs, fill = _parse_op_node(node, name)
                if any(r[0] in op_names for r in refs):
                    raise UnknownLayerError("takes the output of a Keras 3 mask operation as an input", layer=name)
                parsed.append((refs, True, {}, fill))
                continue
            refs, nested, kwargs, original = _parse_node(node, name)
            if any(r[0] in op_names for r in refs):
                raise UnknownLayerError("takes the output of a Keras 3 operation as an input; only mask "
                                        "operations are supported", layer=name)
            if original is not None:
                sources = {h[0] for h in _histories(original)} - op_names
                if sources:
                    raise ConfigError(f"gets a mask from the output of {sorted(sources)}; kconvert computes masks "
                                      "from the layers' own mask support only", layer=name)
                graph_stash["kwargs"][(name, i)] = original
            parsed.append((refs, nested, kwargs, None))
        pending[name] = parsed
        order.append(name)

    def node_index(lname: str, ni: int, in_args: bool) -> int:
        layer = created[lname]
        if getattr(layer, "_is_graph_network", False):
            # kconvert's nested models own a construction node 0; Keras 3 counts it only for Functional
            # references in input_layers/output_layers
            return ni + 1 if in_args or type(layer).__name__ == "Sequential" else ni
        return ni

    def available(ref, in_args=True) -> bool:
        lname, ni, ti = ref
        if lname not in created:
            raise ConfigError(f"refers to unknown layer '{lname}'", layer=lname)
        nodes = created[lname]._inbound_nodes
        i = node_index(lname, ni, in_args)
        return 0 <= i < len(nodes) and ti < len(nodes[i].outputs)

    def tensor(ref, in_args=True) -> Value:
        lname, ni, ti = ref
        return created[lname]._inbound_nodes[node_index(lname, ni, in_args)].outputs[ti]

    while any(pending.values()):
        progressed = False
        for name in order:
            queue = pending[name]
            while queue and all(available(r) for r in queue[0][0]):
                refs, nested, kwargs, fill = queue.pop(0)
                inputs = [tensor(r) for r in refs]
                try:
                    if fill is not None:
                        args, kwargs = fill(inputs)
                        created[name](args, **kwargs)
                    else:
                        created[name](inputs if nested else inputs[0], **kwargs)
                except KConvertError as e:
                    raise e.with_context(layer=name) from None
                progressed = True
        if not progressed:
            stuck = [n for n in order if pending[n]]
            raise ConfigError(f"inbound nodes refer to tensors that are never produced (layers {stuck[:5]})",
                              layer=stuck[0])

    def structure(key: str):
        value = config.get(key)
        if value is None:
            raise ConfigError(f"the model config has no '{key}'", layer=model_name)

        def leaf(ref):
            ref = _tensor_history(ref, model_name)
            if ref[0] not in created or not available(ref, in_args=False):
                raise ConfigError(f"'{key}' refers to a tensor that does not exist: {list(ref)!r}", layer=model_name)
            return tensor(ref, in_args=False)

        def walk(x):
            if isinstance(x, list) and len(x) == 3 and isinstance(x[0], str):
                return leaf(x)
            if isinstance(x, dict):
                return {k: walk(v) for k, v in x.items()}
            if isinstance(x, list):
                return [walk(v) for v in x]
            raise ConfigError(f"malformed '{key}': {str(x)[:80]}", layer=model_name)

        return walk(value)

    inputs, outputs = structure("input_layers"), structure("output_layers")
    out_arg = list(outputs.values()) if isinstance(outputs, dict) else outputs
    model = LAYERS["Functional"](inputs=inputs, outputs=out_arg, name=model_name,
                                 trainable=config.get("trainable", True))
    model._nested_outputs = outputs
    model._keras3_io = True
    model._keras3_graph = graph_stash
    for name, layer in created.items():
        entry = next(e for e in entries if isinstance(e, dict) and (e.get("name") or e["config"].get("name")) == name)
        _remember_overrides(layer, entry)
    return model


def _sequential(config: Any, custom_objects: dict) -> Layer:
    if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
        raise ConfigError("a Sequential config needs a 'layers' list")
    name = config.get("name")
    kwargs = {"dtype": config["dtype"]} if "dtype" in config else {}
    model = LAYERS["Sequential"](name=name, **kwargs)
    pairs = []
    for entry in config["layers"]:
        layer = _deserialize(entry, custom_objects)
        model.add(layer)
        pairs.append((layer, entry))
    if not model.built and config.get("build_input_shape") is not None:
        model.build(tuple(config["build_input_shape"]))
    model.trainable = bool(config.get("trainable", True))
    model._keras3_io = True
    for layer, entry in pairs:
        _remember_overrides(layer, entry)
    return model


def _remember_overrides(layer: Layer, entry: dict) -> None:
    """Record where the rule-based Keras 3 config of a layer read from Keras 3 differs from the file's, so that
    writing it unchanged gives the file's config back (`_keras3_overrides`: key -> (ours then, theirs))."""
    if getattr(layer, "_is_graph_network", False):
        return
    for inner, inner_entry in getattr(layer, "_keras3_inner", []):
        _remember_overrides(inner, inner_entry)
    theirs = entry.get("config")
    if not isinstance(theirs, dict):
        return
    try:
        ours = _layer_config_by_rules(layer)
    except KConvertError:
        return
    overrides = {k: (ours.get(k, _MISSING), v) for k, v in theirs.items() if ours.get(k, _MISSING) != v}
    overrides.update({k: (v, _MISSING) for k, v in ours.items() if k not in theirs})
    layer._keras3_overrides = overrides
    layer._keras3_key_order = list(theirs)


def keras3_overrides(layer: Layer) -> dict:
    """Config keys where the rules did not reproduce the Keras 3 file's value: {key: (rules' value, file's)}."""
    return {k: (None if a is _MISSING else a, None if b is _MISSING else b)
            for k, (a, b) in getattr(layer, "_keras3_overrides", {}).items()}


# ------------------------------------------------------------------------------------------------ writing


def _policy(dtype: Any) -> dict:
    if isinstance(dtype, dict):
        cfg = dtype.get("config") if isinstance(dtype.get("config"), dict) else {}
        name = cfg.get("name", "float32")
    else:
        name = "float32" if dtype is None else str(dtype)
    return {"module": "keras", "class_name": "DTypePolicy", "config": {"name": name}, "registered_name": None}


def _activation(value: Any) -> Any:
    if value is None:
        return "linear"
    if isinstance(value, str):
        return _ACTIVATION_NAMES.get(value, value)
    if isinstance(value, dict) and value.get("class_name") == "function" and isinstance(value.get("config"), str):
        name = value["config"]
        if str(value.get("module", "")).startswith(("builtins", "keras", "tf_keras", "tensorflow")):
            return _ACTIVATION_NAMES.get(name, name)
    return value


def _initializer(value: Any) -> Any:
    if isinstance(value, dict) and value.get("class_name") in _INITIALIZER_KEYS:
        extra = _INITIALIZER_KEYS[value["class_name"]]
        value = {**value, "config": {**extra, **(value.get("config") or {})}}
    return value


def _layer_config_by_rules(layer: Layer) -> dict:
    """The Keras 3 config of a (non-model) kconvert layer, from its tf.keras-form config and the rule tables."""
    cls = keras3_class_name(layer)
    with keras_dialect(3):
        config = copy.deepcopy(layer.get_config())
    if cls == "Lambda" and not hasattr(layer, "_keras3_module"):  # read from tf.keras or built in kconvert
        config = {k: v for k, v in config.items() if k not in _TF_KERAS_LAMBDA_KEYS}
        config.update(layer.keras3_function_config())
    config = _json_plain(_strip_shared_ids(config))
    if cls not in PLAIN_DTYPE:
        config["dtype"] = _policy(config.get("dtype"))
    elif isinstance(config.get("dtype"), dict):
        config["dtype"] = _policy(config["dtype"])["config"]["name"]
    if cls != "InputLayer":
        config.pop("batch_input_shape", None)
    for key, new in RENAMES.get(cls, {}).items():
        if key in config:
            config = {new if k == key else k: v for k, v in config.items()}
    for key, required in K2_ONLY.get(cls, {}).items():
        if key not in config:
            continue
        if required is not _ANY and config[key] != required:
            raise ConfigError(f"{cls}({key}={config[key]!r}) has no Keras 3 equivalent", layer=layer.name)
        config.pop(key)
    for key, default in K3_OMITS_DEFAULT.get(cls, {}).items():
        if key in config and config[key] == default:
            config.pop(key)
    for key, (default, _) in K3_ONLY.get(cls, {}).items():
        if key not in config:
            value = getattr(layer, key, None) if key in _K3_FROM_ATTRIBUTE else None
            config[key] = default if value is None else value
    for key in ("activation", "recurrent_activation"):
        if key in config:
            hs_k2 = getattr(layer, _RECURRENT_ACTIVATIONS[key], None) is _hard_sigmoid_k2()
            config[key] = copy.deepcopy(HARD_SIGMOID_K2) if hs_k2 else _activation(config[key])
    if cls in KCONVERT_OBJECTS:
        _check_kconvert_object(layer, config)
    for key, attr in (_BIDIRECTIONAL_KEYS if cls == "Bidirectional" else zip(_WRAPPED_KEYS, _WRAPPED_KEYS)):
        wrapped = getattr(layer, attr, None)
        if isinstance(wrapped, Layer) and (key in config or cls == "Bidirectional"):
            config[key] = _entry(wrapped, legacy=False)
    for key, value in list(config.items()):
        if key.endswith("_initializer"):
            config[key] = _initializer(value)
    if cls == "BatchNormalization" and isinstance(config.get("axis"), list):
        if len(config["axis"]) != 1:
            raise ConfigError(f"BatchNormalization over the axes {config['axis']} has no Keras 3 equivalent "
                              "(Keras 3 normalizes over one axis)", layer=layer.name)
        config["axis"] = config["axis"][0]
    return config


def layer_to_keras3_config(layer: Layer) -> dict:
    """The Keras 3 `config` of one layer; a layer read from Keras 3 gets back what the file held."""
    config = _layer_config_by_rules(layer)
    overrides = getattr(layer, "_keras3_overrides", None)
    if overrides:
        for key, (ours, theirs) in overrides.items():
            if config.get(key, _MISSING) == ours:
                if theirs is _MISSING:
                    config.pop(key, None)
                else:
                    config[key] = copy.deepcopy(theirs)
        order = getattr(layer, "_keras3_key_order", [])
        config = {**{k: config[k] for k in order if k in config}, **config}
    return config


def _plain(shape):
    if shape is None:
        return None
    if is_shape_list(shape):
        return [list(s) for s in shape]
    return list(shape)


def _entry(layer: Layer, legacy: bool, compile_config: dict | None = None) -> dict:
    cls = keras3_class_name(layer)
    if cls == "Sequential":
        entry = {"module": "keras", "class_name": "Sequential", "config": _sequential_config(layer, legacy),
                 "registered_name": None, "build_config": {"input_shape": _plain(layer._build_input_shape)},
                 "compile_config": compile_config or {}}
    elif cls == "Functional":
        entry = {"module": FUNCTIONAL_MODULE, "class_name": "Functional", "config": _functional_config(layer, legacy),
                 "registered_name": "Functional", "build_config": {"input_shape": None},
                 "compile_config": compile_config or {}}
    elif _is_operation(layer):  # Keras 3 writes an operation's own config only, and no build_config
        module, registered = getattr(layer, "_keras3_module", (type(layer).keras3_module, cls))
        entry = {"module": module, "class_name": cls, "config": _json_plain(layer.get_config()),
                 "registered_name": registered}
    else:
        default = (getattr(type(layer), "keras3_module", None) or getattr(type(layer), "keras_module", "keras.layers"),
                   getattr(type(layer), "registered_name", None))
        module, registered = getattr(layer, "_keras3_module", default)
        if cls in KCONVERT_OBJECTS:
            module, registered = KCONVERT_MODULE, f"kconvert>{cls}"
        elif module is None or str(module).startswith(("tf_keras", "keras.src.layers")):
            module, registered = "keras.layers", None
        entry = {"module": module, "class_name": cls, "config": layer_to_keras3_config(layer),
                 "registered_name": registered}
        if cls not in BUILT_AT_INIT and layer.built and layer._build_input_shape is not None:
            entry["build_config"] = {"input_shape": _plain(layer._build_input_shape)}
    if legacy:
        entry = {k: v for k, v in entry.items()
                 if k not in ("module", "registered_name", "build_config", "compile_config")}
    return entry


def _sequential_config(model, legacy: bool) -> dict:
    config: dict[str, Any] = {"name": model.name, "trainable": model.trainable, "dtype": _policy(model._dtype_config),
                              "layers": [_entry(la, legacy) for la in model._all_layers()]}
    if model._is_graph_network and model._input_layer is not None:
        config["build_input_shape"] = list(model._input_layer._batch_input_shape)
    return config


def _node_kwargs(layer: Layer, node: Node) -> dict:
    kwargs = {k: copy.deepcopy(v) for k, v in node.kwargs.items() if not k.startswith("_")}
    if any(isinstance(v, Value) for v in kwargs.values()):
        raise ConfigError("a call argument other than the inputs is a tensor; Keras 3's form of it is not "
                          "written yet", layer=layer.name)
    cls = keras3_class_name(layer)
    if cls in CALL_TRAINING_FALSE and "training" not in kwargs:
        kwargs = {"training": False, **kwargs}
    if cls in CALL_TAKES_MASK and "mask" not in kwargs:
        kwargs["mask"] = None
    return kwargs


def _functional_config(model, legacy: bool) -> dict:
    model_nodes = {id(n) for n in model._graph.nodes}

    def call_index(layer: Layer, node: Node) -> int:
        return sum(1 for n in layer._inbound_nodes[:layer._inbound_nodes.index(node)] if id(n) in model_nodes)

    def io_ref(v: Value) -> list:
        layer = v.node.layer
        offset = 1 if keras3_class_name(layer) == "Functional" else 0
        return [layer.name, call_index(layer, v.node) + offset, v.tensor_index]

    def tensor(v: Value) -> dict:
        return {"class_name": "__keras_tensor__",
                "config": {"shape": list(v.shape), "dtype": v.dtype,
                           "keras_history": [v.node.layer.name, call_index(v.node.layer, v.node), v.tensor_index]}}

    stash = getattr(model, "_keras3_graph", None) or {"ops": [], "kwargs": {}, "order": []}
    if legacy:  # Keras 3's legacy loader cannot rebuild mask operations; it recomputes the masks without them
        stash = {"ops": [], "kwargs": {}, "order": stash["order"]}
    layers = []
    for layer in keras3_layers(model):
        entry = _entry(layer, legacy)
        entry["name"] = layer.name
        inbound = []
        own = [n for n in layer._inbound_nodes if id(n) in model_nodes and not n.is_input]
        if _is_operation(layer):
            own, entry["inbound_nodes"] = [], [_op_node(node, tensor) for node in own]
        for pos, node in enumerate(own):
            kwargs = stash["kwargs"].get((layer.name, pos))
            args = [tensor(v) for v in node.inputs]
            inbound.append({"args": [args] if node.nested else args[:1],
                            "kwargs": copy.deepcopy(kwargs) if kwargs is not None else _node_kwargs(layer, node)})
        entry.setdefault("inbound_nodes", inbound)
        layers.append(entry)
    layers = _restore_ops(layers, stash, legacy)

    def structure(x, leaf):
        if isinstance(x, Value):
            return leaf(x)
        if isinstance(x, dict):
            return {k: structure(v, leaf) for k, v in x.items()}
        return [structure(v, leaf) for v in x]

    ins, outs = model._nested_inputs, model._nested_outputs
    if not getattr(model, "_keras3_io", False):  # tf.keras always wrote lists; Keras 3 unwraps a single tensor
        ins = ins[0] if isinstance(ins, (list, tuple)) and len(ins) == 1 else ins
        outs = outs[0] if isinstance(outs, (list, tuple)) and len(outs) == 1 else outs
    return {"name": model.name, "trainable": model.trainable, "layers": layers,
            "input_layers": structure(ins, io_ref), "output_layers": structure(outs, io_ref)}


def _op_node(node: Node, tensor) -> dict:
    """An operation's inbound node as Keras 3 writes it: every positional argument in `args`."""
    def encode(x):
        if isinstance(x, Value):
            return tensor(x)
        if isinstance(x, slice):
            return {"class_name": "__slice__", "config": {"start": x.start, "stop": x.stop, "step": x.step}}
        if x is Ellipsis:
            return {"class_name": "__ellipsis__", "config": {}}
        if isinstance(x, dict):
            return {k: encode(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [encode(v) for v in x]
        return _json_plain(x)

    first = node.first_arg if isinstance(node.first_arg, (list, tuple)) else [node.first_arg]
    return {"args": encode(list(first)), "kwargs": encode(dict(node.kwargs))}


def _restore_ops(layers: list[dict], stash: dict, legacy: bool) -> list[dict]:
    """Put set-aside Keras 3 mask operations back where the file had them (when the graph is still the file's)."""
    if not stash["ops"]:
        return layers
    names = {e["name"] for e in layers} | {e.get("name") for _, e in stash["ops"]}
    order = stash["order"]
    if names != set(order):
        return layers  # the graph changed: Keras 3 recomputes the masks itself from the layers' mask support
    by_name = {e["name"]: e for e in layers}
    for _, op in stash["ops"]:
        op = copy.deepcopy(op)
        if legacy:
            op = {k: v for k, v in op.items() if k not in ("module", "registered_name", "build_config")}
        by_name[op.get("name")] = op
    return [by_name[n] for n in order]


def model_to_keras3_config(model: Layer, legacy: bool = False) -> dict:
    """The config real Keras 3 writes for `model`: `to_json()`/`config.json` (with `module`, `build_config`,
    `compile_config`), or with `legacy=True` the `model_config` of its legacy `.h5` writer.

    Layers Keras 3 lacks must have been rewritten first (`prepare_for_keras3`).
    """
    compile_config = getattr(model, "_keras3_compile_config", None)
    entry = _entry(model, legacy, compile_config)
    if not getattr(model, "_is_graph_network", False) and not legacy:
        entry.pop("compile_config", None)
    return entry


# ------------------------------------------------------------------------------------------------ upgrading


def _hard_sigmoid_k2():
    from ..layers import activations

    return activations._hard_sigmoid_keras2


def _in_recurrent_cell(layer: Any, attr: str) -> bool:
    """True when the attribute path `attr` ('_ract', 'forward_layer._ract', ...) is a recurrent layer's
    activation, which the config writer emits as HARD_SIGMOID_K2 (also inside Bidirectional/TimeDistributed)."""
    *owners, last = attr.split(".")
    for name in owners:
        layer = getattr(layer, name, None)
    return last in _RECURRENT_ACTIVATIONS.values() and keras3_class_name(layer) in ("LSTM", "GRU", "SimpleRNN")


def _uses_k2_hard_sigmoid(layer: Any, depth: int = 0) -> str | None:
    """The attribute through which a layer computes Keras 2's hard_sigmoid, or None."""
    target = _hard_sigmoid_k2()
    for attr, value in vars(layer).items():
        if value is target:
            return attr
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if depth < 2 and isinstance(item, Layer) and not getattr(item, "_is_graph_network", False):
                inner = _uses_k2_hard_sigmoid(item, depth + 1)
                if inner:
                    return f"{attr}.{inner}"
    return None


def _check_kconvert_object(layer: Layer, config: dict) -> None:
    """Refuse what kconvert's real-Keras implementations of its own layers do not compute."""
    cls = type(layer).__name__
    if cls.startswith("LocallyConnected") and (config.get("implementation", 1) != 1 or layer.padding != "valid"):
        raise ConfigError(f"{cls}(implementation={config.get('implementation')}, padding='{layer.padding}') "
                          "cannot be written for Keras 3: kconvert's Keras 3 LocallyConnected implements tf.keras's "
                          "implementation=1 with padding='valid' only", layer=layer.name)
    if cls == "Merge" and (config.get("layers") or callable(getattr(layer, "mode", None))):
        raise ConfigError("a Keras 1 Merge of models or with a function mode cannot be written for Keras 3; only "
                          "Merge called on tensors with a named mode can", layer=layer.name)


_NATIVE: dict[str, Any] = {}


def _native_rewrite(*class_names: str):
    """Register `fn(layer) -> layer`: the exact native Keras 3 layer (built, with weights) for a kconvert layer."""
    def register(fn):
        for name in class_names:
            _NATIVE[name] = fn
        return fn
    return register


def _rebuilt(layer: Layer, class_name: str, config: dict, weights: list) -> Layer:
    new = LAYERS[class_name].from_config(config)
    new._maybe_build(layer._build_input_shape)
    new.set_weights(weights)
    return new


def _cudnn_config(layer: Layer) -> dict:
    config = layer.get_config()
    for key in ("time_major", "bias_initializer"):  # the bias initializer is the CuDNN bias's; the weights are set
        config.pop(key, None)
    return config


@_native_rewrite("LocallyConnected1D", "LocallyConnected2D")
def _locally_connected_impl1(layer: Layer) -> Layer | None:
    """LocallyConnected with implementation 2 or 3 -> implementation 1 (the layout kconvert's Keras 3 class
    reads), exact for 'valid' padding: the same local kernel, stored per output position."""
    if layer.implementation == 1 or layer.padding != "valid":
        return None  # implementation 1 is written as it is; 'same' is refused by _check_kconvert_object
    local = layer._local_kernel()  # (positions, *kernel_size, channels_in, filters)
    if layer.data_format == "channels_first":
        local = np.moveaxis(local, -2, 1)  # implementation 1's channels_first rows are (channel, *kernel_size)
    kernel = local.reshape(local.shape[0], -1, local.shape[-1])
    weights = [kernel] + ([layer.bias.value] if layer.use_bias else [])
    return _rebuilt(layer, type(layer).__name__, {**layer.get_config(), "implementation": 1}, weights)


@_native_rewrite("CuDNNLSTM")
def _cudnn_lstm(layer: Layer) -> Layer:
    """CuDNNLSTM -> LSTM: the kernels as the layer computes with them, the input and recurrent biases summed."""
    return _rebuilt(layer, "LSTM", _cudnn_config(layer),
                    [layer._input_kernel(), layer._state_kernel(), layer._input_bias()])


@_native_rewrite("CuDNNGRU")
def _cudnn_gru(layer: Layer) -> Layer:
    """CuDNNGRU -> GRU(reset_after=True): the kernels as the layer computes with them, bias rows (input, recurrent)."""
    return _rebuilt(layer, "GRU", {**_cudnn_config(layer), "reset_after": True},
                    [layer._input_kernel(), layer._state_kernel(),
                     np.stack([layer._input_bias(), layer._recurrent_bias()])])


def _rewrite_for(layer: Layer) -> list[Layer] | None:
    """The chain of native Keras 3 layers that computes exactly what `layer` computes, or None if it is native.

    Raises ConfigError naming the layer when no exact Keras 3 form exists.
    """
    cls = type(layer).__name__
    native = _NATIVE.get(cls)
    if native is not None and not hasattr(layer, "_keras3_module"):
        replacement = native(layer)
        if replacement is not None:
            return [replacement]
    if cls in _TF_OPS and all(_tf_op_call(layer, n) is not None for n in layer._inbound_nodes):
        return [layer]  # _rewrite_graph replaces each call by its Keras 3 operation
    if cls == "Lambda" and not hasattr(layer, "_keras3_module"):
        layer.keras3_function_config()  # raises ConfigError naming the layer when a function is not Python code
        return None
    reason = _NO_KERAS3_FORM.get(cls)
    if reason is not None and not hasattr(layer, "_keras3_module"):
        raise ConfigError(f"{cls}: {reason}, so the model cannot be written for Keras 3", layer=layer.name)
    relu = LAYERS["ReLU"]
    if cls == "ThresholdedReLU":
        return [relu(threshold=float(layer.theta), name=layer.name, dtype=layer._dtype_config)]
    attr = _uses_k2_hard_sigmoid(layer)
    if attr is None or _in_recurrent_cell(layer, attr):
        return None  # a recurrent layer (wrapped or not) writes Keras 2's hard_sigmoid as HARD_SIGMOID_K2
    rescaling = LAYERS.get("Rescaling")
    if rescaling is None:
        raise ConfigError("Keras 2's hard_sigmoid needs a Rescaling layer to be written for Keras 3",
                          layer=layer.name)
    if cls == "Activation":
        return [rescaling(scale=0.2, offset=0.5, name=f"{layer.name}_scale", dtype=layer._dtype_config),
                relu(max_value=1.0, name=layer.name, dtype=layer._dtype_config)]
    if cls in _POST_ACTIVATION and attr == "_act":
        linear = type(layer).from_config({**layer.get_config(), "activation": "linear"})
        linear._maybe_build(layer._build_input_shape)
        linear.set_weights(layer.get_weights())
        return [linear, rescaling(scale=0.2, offset=0.5, name=f"{layer.name}_hard_sigmoid_scale"),
                relu(max_value=1.0, name=f"{layer.name}_hard_sigmoid")]
    raise ConfigError(f"computes Keras 2's hard_sigmoid, clip(0.2x + 0.5, 0, 1), through '{attr}'; Keras 3's "
                      "hard_sigmoid is relu6(x + 3) / 6 and no native Keras 3 form computes Keras 2's inside this "
                      "layer, so it cannot be written for Keras 3", layer=layer.name)


_TF_OPS = ("TFOpLambda", "SlicingOpLambda")


def _tf_op_call(layer: Layer, node: Node, name: str | None = None):
    """(Keras 3 operation, args, kwargs) computing one call of a tf.keras TFOpLambda, or None."""
    if not isinstance(node, ArgsNode):
        return None
    return from_tf_op(layer.function, node.first_arg, node.kwargs, name or layer.name)


def _models(model: Layer) -> list[Layer]:
    """`model` and every model nested in it, innermost first."""
    out: list[Layer] = []
    for layer in model.layers:
        if getattr(layer, "_is_graph_network", False):
            out.extend(m for m in _models(layer) if all(m is not o for o in out))
    out.append(model)
    return out


def prepare_for_keras3(model: Layer) -> Layer:
    """`model` itself, or a rewritten copy in which every layer Keras 3 lacks is replaced by its exact native
    Keras 3 form: ThresholdedReLU(theta) becomes ReLU(threshold=theta); Keras 2's hard_sigmoid activation becomes
    Rescaling(0.2, 0.5) and ReLU(max_value=1) after the layer (which then computes linearly).

    Raises ConfigError naming the layer when a layer has no exact Keras 3 form.
    """
    if not getattr(model, "_is_graph_network", False):
        chain = _rewrite_for(model)
        if chain is not None and len(chain) != 1:
            raise ConfigError("becomes several Keras 3 layers; save it inside a model", layer=model.name)
        return chain[0] if chain else model
    rewrite = any(_rewrite_for(la) is not None for m in _models(model) for la in m.layers)
    rename = any("/" in la.name for m in _models(model) for la in m.layers)
    if not rewrite and not rename:
        return model
    model = _deep_copy(model)
    for m in _models(model):
        _rewrite_graph(m)
        _rename_slashes(m)
    return model


def _deep_copy(obj: Any) -> Any:
    """copy.deepcopy of a layer graph; deep graphs (DenseNet: ~430 chained layers) recurse far deeper than
    Python's default limit, so the copy runs in a thread with a large stack and a raised recursion limit."""
    out: dict[str, Any] = {}

    def run() -> None:
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(max(limit, 200_000))
        try:
            out["value"] = copy.deepcopy(obj)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            out["error"] = e
        finally:
            sys.setrecursionlimit(limit)

    size = threading.stack_size(512 * 1024 * 1024)
    try:
        worker = threading.Thread(target=run)
        worker.start()
        worker.join()
    finally:
        threading.stack_size(size)
    if "error" in out:
        raise out["error"]
    return out["value"]


def _rename_slashes(model: Layer) -> None:
    """Keras 3 refuses '/' in layer names (tf.keras allowed it: DenseNet's 'conv1/conv'); use '_' instead."""
    taken = {la.name for la in model.layers}
    for layer in model.layers:
        if "/" not in layer.name:
            continue
        name = base = layer.name.replace("/", "_")
        i = 1
        while name in taken:
            name, i = f"{base}_{i}", i + 1
        taken.add(name)
        layer.name = name


def _rewrite_graph(model: Layer) -> None:
    from ..ir import Graph

    model_nodes = [n for n in model._graph.nodes if not n.is_input]
    chains = {id(la): _rewrite_for(la) for la in model.layers}
    taken = {la.name for la in model.layers}
    replaced: dict[int, list[Layer]] = {}
    for node in model_nodes:
        chain = chains.get(id(node.layer))
        if not chain:
            continue
        if type(node.layer).__name__ in _TF_OPS:  # a TensorFlow op: its Keras 3 operation, called alike
            calls = [n for n in model_nodes if n.layer is node.layer]
            suffix = f"_{calls.index(node)}" if calls.index(node) else ""
            op, args, kwargs = _tf_op_call(node.layer, node, f"{node.layer.name}{suffix}")
            new = ArgsNode(op, args, kwargs)
            op.built = True
            new.outputs = list(node.outputs)
            for v in new.outputs:
                v.node = new
            replaced[id(node.layer)] = [op]
            continue
        for la in chain:
            if la.name in taken and la.name != node.layer.name:
                raise ConfigError(f"the name '{la.name}' needed for Keras 3's form is taken", layer=node.layer.name)
        x = node.call_args(list(node.inputs))
        for la in chain[:-1]:
            x = la(x, **node.kwargs) if la is chain[0] else la(x)
        last = chain[-1]
        last._maybe_build(x.shape)
        new = Node(last, [x], nested=False, kwargs=dict(node.kwargs) if len(chain) == 1 else {})
        new.outputs = list(node.outputs)
        for v in new.outputs:
            v.node = new
        replaced[id(node.layer)] = chain
    if not replaced:
        return
    if type(model).__name__ == "Sequential":
        stack = []
        for la in model._stack:
            stack.extend(replaced.get(id(la), [la]))
        model._stack = stack
    model._graph = Graph(model._graph.inputs, model._graph.outputs)
    model._layers = model._all_layers() if type(model).__name__ == "Sequential" else model._graph.layers
