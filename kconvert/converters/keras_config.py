"""Keras model configs (plain dicts) <-> layer graphs.

Reading follows tf.keras's `reconstruct_from_config`: create every layer, then replay each layer's
inbound nodes in config order as soon as their input tensors exist. Writing follows tf.keras 2.x's
`get_network_config`, including its node renumbering (a nested functional model's node 0 is its own
construction node and is never serialized).
"""

from __future__ import annotations

import contextlib
import copy
from typing import Any

from ..custom_objects import current_custom_objects, custom_object_scope
from ..errors import ConfigError, KConvertError, UnknownLayerError
from ..ir import Value
from ..layers import LAYERS, InputLayer, Layer, get_layer_class, keras_dialect
from ..layers.base import current_keras_major, is_shape_list, safe_mode_scope
from .dialects import normalize_entry

KERAS_VERSION = "2.21.0"  # the tf.keras version whose file layout and config dialect we write


def keras_major(version: Any) -> int:
    """Major Keras version from a version string such as '2.2.4-tf', '3.15.1', '1.2.2' (default 2)."""
    try:
        return int(str(version).split(".")[0])
    except (TypeError, ValueError):
        return 2


# ---------------------------------------------------------------------------------------------- reading


# What building layers from a malformed config can raise (a wrong type or value that a layer's constructor or
# build trips on, a declared weight too large to allocate); turned into ConfigError naming the layer where known.
CONFIG_FAILURES = (TypeError, ValueError, KeyError, IndexError, AttributeError, MemoryError, OverflowError,
                   ZeroDivisionError, RecursionError)


@contextlib.contextmanager
def building(layer: str | None = None):
    """Within the block, errors a malformed config causes become ConfigError (naming `layer` where known)."""
    try:
        yield
    except KConvertError as e:
        raise e.with_context(layer=layer) from None
    except MemoryError as e:
        raise ConfigError(f"the config declares weights too large to allocate ({e})", layer=layer) from e
    except RecursionError:
        raise ConfigError("the config is nested too deeply", layer=layer) from None
    except CONFIG_FAILURES as e:
        raise ConfigError(f"invalid config ({type(e).__name__}: {e})", layer=layer) from e


def model_from_config(config: dict, custom_objects: dict | None = None, keras_version: Any = None,
                      safe_mode: bool = True) -> Layer:
    """Build a model (or a single layer) from a `{'class_name', 'config'}` dict of any Keras 2 writer.

    With `safe_mode=True` nothing in the config may execute code (Lambda bytecode is refused).
    """
    with building():
        return _model_from_config(config, custom_objects, keras_version, safe_mode)


def _model_from_config(config: dict, custom_objects: dict | None, keras_version: Any, safe_mode: bool) -> Layer:
    if not isinstance(config, dict) or "class_name" not in config:
        raise ConfigError("a model config must be a dict with 'class_name' and 'config'")
    version = keras_version or config.get("keras_version")
    from . import keras3_config  # Keras 3 configs (top-level `module`, or a 3.x file) have their own reader

    if keras3_config.is_keras3_config(config, version):
        return keras3_config.model_from_keras3_config(config, custom_objects, safe_mode=safe_mode)
    # the argument is the innermost custom-object scope, so activations and initializers see it too
    with keras_dialect(keras_major(version) if version else 2, str(version) if version else None), \
            safe_mode_scope(safe_mode), \
            custom_object_scope(custom_objects):
        return deserialize_entry(config, current_custom_objects())


def deserialize_entry(entry: dict, custom_objects: dict) -> Layer:
    """One `{'class_name', 'config'}` entry: a nested model or a layer."""
    if isinstance(entry, dict):
        entry = normalize_entry(entry, current_keras_major())
    class_name = entry.get("class_name")
    config = entry.get("config")
    name = config.get("name") if isinstance(config, dict) else None
    if class_name in ("Sequential",):
        return _sequential_from_config(config, custom_objects)
    if class_name in ("Model", "Functional"):
        return _functional_from_config(config, custom_objects)
    if not isinstance(class_name, str):
        raise ConfigError(f"layer entry without a class_name: {str(entry)[:80]}", layer=name)
    registered = entry.get("registered_name")  # Keras 3: custom objects may be known as 'Package>Name'
    cls = get_layer_class(registered if isinstance(registered, str) and registered in custom_objects
                          else class_name, custom_objects, name)
    if not isinstance(config, dict):
        raise ConfigError(f"the config of a {class_name} layer must be a dict", layer=name)
    try:
        if hasattr(cls, "from_config_with_objects"):
            return cls.from_config_with_objects(config, custom_objects)
        return cls.from_config(dict(config))
    except KConvertError as e:
        raise e.with_context(layer=name) from None
    except CONFIG_FAILURES as e:
        raise ConfigError(f"invalid {class_name} config: {e}", layer=name) from e


def _sequential_from_config(config: Any, custom_objects: dict) -> Layer:
    seq_cls = LAYERS["Sequential"]
    if isinstance(config, list):  # Keras <= 2.2.2: the config is the list of layers
        name, layer_entries, build_shape = None, config, None
    elif isinstance(config, dict):
        name, layer_entries, build_shape = config.get("name"), config.get("layers"), config.get("build_input_shape")
    else:
        raise ConfigError("a Sequential config must be a list or a dict")
    if not isinstance(layer_entries, list):
        raise ConfigError("a Sequential config has no 'layers' list", layer=name)
    model = seq_cls(name=name)
    model._legacy_form = _is_legacy_form(layer_entries)
    for entry in layer_entries:
        layer = deserialize_entry(entry, custom_objects)
        with building(getattr(layer, "name", None)):
            model.add(layer)
    if not model.built and build_shape is not None:
        model.build(tuple(build_shape))
    return model


def _tensor_ref(ref: Any, where: str, layer: str | None) -> tuple[str, int, int, dict]:
    if isinstance(ref, dict):  # Keras 3 __keras_tensor__
        hist = ref.get("config", {}).get("keras_history")
        if not hist:
            raise ConfigError(f"malformed tensor reference in {where}", layer=layer)
        return hist[0], int(hist[1]), int(hist[2]), {}
    if not isinstance(ref, (list, tuple)) or len(ref) < 3:
        raise ConfigError(f"malformed tensor reference {ref!r} in {where}", layer=layer)
    kwargs = ref[3] if len(ref) > 3 and isinstance(ref[3], dict) else {}
    return str(ref[0]), int(ref[1]), int(ref[2]), kwargs


_CONSTANT_VALUE = "_CONSTANT_VALUE"


class _Ref(tuple):
    """(layer, node index, tensor index) of a tensor named in an inbound node's call arguments."""


def _k2_arg(x: Any, layer: str) -> Any:
    """A tf.keras call-kwargs value with its tensor references (`[layer, node, tensor]` lists) as `_Ref`."""
    if isinstance(x, list) and len(x) in (3, 4) and isinstance(x[0], str):  # tf.keras's node-data test
        return _Ref(_tensor_ref(x, "inbound_nodes", layer)[:3])
    if isinstance(x, dict):
        return {k: _k2_arg(v, layer) for k, v in x.items()}
    if isinstance(x, list):
        return [_k2_arg(v, layer) for v in x]
    return x


def _k3_arg(x: Any, layer: str) -> Any:
    """A Keras 3 call argument with its `__keras_tensor__` objects as `_Ref`."""
    if isinstance(x, dict):
        if x.get("class_name") == "__keras_tensor__":
            return _Ref(_tensor_ref(x, "inbound_nodes", layer)[:3])
        return {k: _k3_arg(v, layer) for k, v in x.items()}
    if isinstance(x, list):
        return [_k3_arg(v, layer) for v in x]
    return x


def _k2_item(item: Any, layer: str) -> tuple[Any, dict]:
    """One element of a tf.keras node's first argument: a tensor reference or `_CONSTANT_VALUE`, and kwargs."""
    if not isinstance(item, (list, tuple)) or len(item) < 3:
        raise ConfigError(f"malformed tensor reference {item!r} in inbound_nodes", layer=layer)
    kwargs = _k2_arg(dict(item[3]), layer) if len(item) > 3 and isinstance(item[3], dict) else {}
    if item[0] == _CONSTANT_VALUE:
        return item[2], kwargs
    return _Ref(_tensor_ref(item, "inbound_nodes", layer)[:3]), kwargs


def _node_refs(node_data: Any, layer: str) -> tuple[Any, list, dict]:
    """One inbound node as (first argument, further positional arguments, call kwargs), tensors as `_Ref`."""
    if isinstance(node_data, dict):  # Keras 3 {"args": [...], "kwargs": {...}}
        args = [_k3_arg(a, layer) for a in node_data.get("args", [])]
        if not args:
            raise ConfigError(f"inbound node without arguments {node_data!r}", layer=layer)
        return args[0], args[1:], _k3_arg(dict(node_data.get("kwargs") or {}), layer)
    if not isinstance(node_data, list):
        raise ConfigError(f"malformed inbound node {node_data!r}", layer=layer)
    if node_data and isinstance(node_data[0], str):  # a single tensor written without a list (TFOpLambda)
        first, kwargs = _k2_item(node_data, layer)
        return first, [], kwargs
    items = [_k2_item(r, layer) for r in node_data]
    return [t for t, _ in items], [], items[-1][1] if items else {}


def _refs_in(x: Any) -> list:
    if isinstance(x, _Ref):
        return [x]
    if isinstance(x, dict):
        return [r for v in x.values() for r in _refs_in(v)]
    if isinstance(x, list):
        return [r for v in x for r in _refs_in(v)]
    return []


def _resolve(x: Any, tensor) -> Any:
    if isinstance(x, _Ref):
        return tensor(x)
    if isinstance(x, dict):
        return {k: _resolve(v, tensor) for k, v in x.items()}
    if isinstance(x, list):
        return [_resolve(v, tensor) for v in x]
    return x


def _functional_from_config(config: Any, custom_objects: dict) -> Layer:
    if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
        raise ConfigError("a functional model config needs a 'layers' list")
    model_name = config.get("name")
    created: dict[str, Layer] = {}
    pending: dict[str, list] = {}
    order: list[str] = []
    for entry in config["layers"]:
        if not isinstance(entry, dict):
            raise ConfigError(f"malformed layer entry {str(entry)[:80]}", layer=model_name)
        layer = deserialize_entry(entry, custom_objects)
        name = entry.get("name") or layer.name
        if name in created:
            raise ConfigError(f"the layer name '{name}' appears twice in the model config", layer=name)
        created[name] = layer
        nodes = entry.get("inbound_nodes") or []
        if not isinstance(nodes, list):
            raise ConfigError("'inbound_nodes' must be a list", layer=name)
        pending[name] = [_node_refs(n, name) for n in nodes]
        order.append(name)

    def available(ref) -> bool:
        lname, ni, ti = ref
        if lname not in created:
            raise ConfigError(f"refers to unknown layer '{lname}'", layer=lname)
        la = created[lname]
        return ni < len(la._inbound_nodes) and ti < len(la._inbound_nodes[ni].outputs)

    def tensor(ref):
        lname, ni, ti = ref
        return created[lname]._inbound_nodes[ni].outputs[ti]

    # Replay nodes until nothing is left; each sweep must make progress or the graph is broken.
    while any(pending.values()):
        progressed = False
        for name in order:
            queue = pending[name]
            while queue and all(available(r) for r in _refs_in(list(queue[0]))):
                first, rest, kwargs = _resolve(list(queue.pop(0)), tensor)
                if rest and not getattr(created[name], "positional_names", ()):
                    first, rest = [first, *rest], []  # a layer taking one argument gets the tensors as a list
                if isinstance(first, list) and len(first) == 1 and not getattr(
                        created[name], "preserve_input_structure", False):
                    first = first[0]  # tf.keras unnests a single tensor unless the layer keeps the structure
                with building(name):
                    created[name](first, *rest, **kwargs)
                progressed = True
        if not progressed:
            stuck = [n for n in order if pending[n]]
            raise ConfigError(f"inbound nodes refer to tensors that are never produced (layers {stuck[:5]})",
                              layer=stuck[0])

    def refs_of(key):
        value = config.get(key)
        if isinstance(value, dict):  # Keras 3 dict structure
            value = list(value.values())
        if isinstance(value, list) and value and not isinstance(value[0], (list, dict)):
            value = [value]  # Keras 3 single ["name", 0, 0]
        if not isinstance(value, list) or not value:
            raise ConfigError(f"the model config has no '{key}'", layer=model_name)
        out = []
        for r in value:
            lname, ni, ti, _ = _tensor_ref(r, key, model_name)
            if lname not in created or not available((lname, ni, ti)):
                raise ConfigError(f"'{key}' refers to a tensor that does not exist: {r!r}", layer=model_name)
            out.append(tensor((lname, ni, ti)))
        return out

    cls = LAYERS["Functional"]
    model = cls(inputs=refs_of("input_layers"), outputs=refs_of("output_layers"), name=model_name,
                trainable=config.get("trainable", True))
    model._legacy_form = _is_legacy_form(config["layers"])
    return model


def _is_legacy_form(entries: list) -> bool:
    """True when layer entries carry no `module` key (HDF5 configs, and tf.keras's own nested to_json)."""
    return bool(entries) and all(isinstance(e, dict) and "module" not in e for e in entries)


# ---------------------------------------------------------------------------------------------- writing


def _module_of(layer: Layer) -> tuple[str, str | None]:
    cls_name = type(layer).__name__
    if cls_name == "Sequential":
        return "keras", None
    if getattr(layer, "_is_graph_network", False):
        return "tf_keras.src.engine.functional", "Functional"
    module = getattr(type(layer), "keras_module", "keras.layers")
    return module, getattr(type(layer), "registered_name", None)


def _class_name(layer: Layer) -> str:
    if getattr(layer, "_is_graph_network", False) and type(layer).__name__ != "Sequential":
        return "Functional"
    return type(layer).__name__


def _plain(shape):
    if shape is None:
        return None
    if is_shape_list(shape):
        return [list(s) for s in shape]
    return list(shape)


def _layer_config(layer: Layer, legacy: bool) -> dict:
    if type(layer).__name__ == "Sequential":
        return sequential_config(layer, legacy)
    if getattr(layer, "_is_graph_network", False):
        return functional_config(layer, legacy)
    return layer.get_config()


def layer_entry(layer: Layer, legacy: bool = False) -> dict:
    """A layer serialized as tf.keras 2.13+ does.

    `to_json` writes module, class_name, config, registered_name and build_config; the `model_config` of
    an HDF5 file uses the legacy form with class_name and config only (`legacy=True`).
    """
    # tf.keras writes a nested model's own entries in either form; keep the one the model was read in
    inner_legacy = legacy or getattr(layer, "_legacy_form", False)
    if legacy:
        return {"class_name": _class_name(layer), "config": _layer_config(layer, legacy)}
    module, registered = _module_of(layer)
    entry: dict[str, Any] = {"module": module, "class_name": _class_name(layer),
                             "config": _layer_config(layer, inner_legacy), "registered_name": registered}
    if not isinstance(layer, InputLayer) and layer.built and layer._build_input_shape is not None:
        entry["build_config"] = {"input_shape": _plain(layer._build_input_shape)}
    return entry


def _skip_first_node(layer: Layer) -> bool:
    return bool(getattr(layer, "_is_graph_network", False))


def functional_config(model, legacy: bool = False) -> dict:
    """The `config` of a functional model (tf.keras `get_network_config`)."""
    model_nodes = {id(n) for n in model._graph.nodes}
    conversion: dict[tuple[int, int], int] = {}
    for layer in model.layers:
        kept = 1 if _skip_first_node(layer) else 0
        for i, node in enumerate(layer._inbound_nodes):
            if id(node) in model_nodes:
                conversion[(id(layer), i)] = kept
                kept += 1

    def ref(value, kwargs=None):
        layer, ni, ti = value.keras_history
        item = [layer.name, conversion.get((id(layer), ni), ni), ti]
        if kwargs is not None:
            item.append(kwargs)
        return item

    layers = []
    for layer in model.layers:
        entry = layer_entry(layer, legacy)
        entry["name"] = layer.name
        nodes = []
        for node in layer._inbound_nodes:
            if id(node) not in model_nodes or node.is_input:
                continue
            nodes.append(_node_data(node, ref))
        entry["inbound_nodes"] = nodes
        layers.append(entry)
    return {"name": model.name, "trainable": model.trainable, "layers": layers,
            "input_layers": [ref(v) for v in model.inputs], "output_layers": [ref(v) for v in model.outputs]}


def _node_data(node, ref) -> list:
    """One inbound node as tf.keras writes it: each tensor of the first argument with the call kwargs, where
    a tensor is `[layer, node, tensor]` and a constant first-argument element is `_CONSTANT_VALUE`."""

    def plain(x):
        if isinstance(x, Value):
            return ref(x)
        if isinstance(x, dict):
            return {k: plain(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [plain(v) for v in x]
        return copy.deepcopy(x)

    kwargs = plain(node.kwargs)
    first = getattr(node, "first_arg", None)
    if first is None:
        return [ref(v, kwargs) for v in node.inputs]

    def item(x):
        return ref(x, kwargs) if isinstance(x, Value) else [_CONSTANT_VALUE, -1, plain(x), kwargs]

    if isinstance(first, (list, tuple)):
        return [item(x) for x in first]
    return item(first) if getattr(node.layer, "preserve_input_structure", False) else [item(first)]


def sequential_config(model, legacy: bool = False) -> dict:
    """The `config` of a Sequential model (tf.keras form: name and the list of layer entries)."""
    layers = [layer_entry(la, legacy) for la in model._all_layers()]
    config: dict[str, Any] = {"name": model.name, "layers": layers}
    if not model._is_graph_network and model._build_input_shape is not None:
        config["build_input_shape"] = _plain(model._build_input_shape)
    return config


def model_to_config(model, legacy: bool = False) -> dict:
    """`{'class_name', 'config'}` of a model: `to_json`'s form, or with `legacy=True` an HDF5 `model_config`."""
    return {"class_name": _class_name(model), "config": _layer_config(model, legacy)}


__all__ = ["model_from_config", "model_to_config", "functional_config", "sequential_config", "layer_entry",
           "deserialize_entry", "keras_major", "KERAS_VERSION", "UnknownLayerError"]
