"""A model's weights <-> Keras 3 saved-state paths (`layers/dense/vars/0`, ...), with Keras 3's naming rules.

Keras 3's `_save_state` walks a model: each object saves its own variables under `<path>/vars`, then its
children. A Sequential or Functional model visits its `layers` list first; objects inside a list are named by
the snake_case of their Keras 3 class name plus a uniquifier (`dense`, `dense_1`, ...; nested lists are
`container`, `container_1`, ...), never by `layer.name`. An object reached twice (a shared layer) is saved
once, at its first path. Layers report their own variables and named children through `Layer.keras3_state()`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import WeightsError
from ..formats.keras3_weights import StateGroup
from ..layers import Layer
from ..layers.base import to_snake_case

__all__ = ["keras3_class_name", "keras3_layers", "model_state", "load_model_state", "state_paths", "legacy_weight_groups"]


def keras3_class_name(obj: Any) -> str:
    """The class name Keras 3 gives the object (a functional kconvert `Model` is Keras 3's `Functional`)."""
    name = getattr(type(obj), "keras3_class_name", None)
    if isinstance(name, str):
        return name
    cls = type(obj).__name__
    if getattr(obj, "_is_graph_network", False) and cls != "Sequential":
        return "Functional"
    return cls


def _flatten(struct: Any) -> list:
    """Keras 3's `tree.flatten`: dicts in sorted key order, lists and tuples in order."""
    if isinstance(struct, dict):
        return [v for k in sorted(struct) for v in _flatten(struct[k])]
    if isinstance(struct, (list, tuple)):
        return [v for x in struct for v in _flatten(x)]
    return [struct]


def keras3_layers(model: Any) -> list:
    """`model.layers` in Keras 3's order: the order of a Keras 3 file the model was read from, else Keras 3's
    graph order, which walks dict outputs by sorted key (tf.keras walks them as given)."""
    layers = list(model.layers)
    if type(model).__name__ == "Sequential" or not getattr(model, "_is_graph_network", False):
        return layers
    by_name = {la.name: la for la in layers}
    stash = getattr(model, "_keras3_graph", None)
    if stash and stash.get("order"):
        order = [n for n in stash["order"] if n in by_name]
        if len(order) == len(by_name):
            return [by_name[n] for n in order]
    outputs = _flatten(getattr(model, "_nested_outputs", model.outputs))
    if [id(v) for v in outputs] == [id(v) for v in model.outputs]:
        return layers
    from ..ir import Graph

    return Graph(_flatten(getattr(model, "_nested_inputs", model.inputs)), outputs).layers


def _is_model(obj: Any) -> bool:
    return isinstance(obj, Layer) and bool(getattr(obj, "_is_graph_network", False))


def _name_key(name: str) -> str:
    return f"~{name}" if name.startswith("_") else name  # Keras visits private attributes last


def _state(obj: Any) -> tuple[list, list[tuple[str, Any]]]:
    """(own variables, [(attribute, child or list of children)]) in Keras 3's visiting order."""
    if _is_model(obj):
        own, children = [], {}
        extra = getattr(obj, "keras3_state", None)
        if extra is not None and type(obj).keras3_state is not Layer.keras3_state:
            own, children = extra()
        return list(own), [("layers", keras3_layers(obj)), *sorted(children.items(), key=lambda kv: _name_key(kv[0]))]
    own, children = obj.keras3_state()
    return list(own), sorted(children.items(), key=lambda kv: _name_key(kv[0]))


def _walk(obj: Any, path: str, visited: set[int], visit: Callable[[str, Any, list], None]) -> None:
    if id(obj) in visited:
        return
    own, children = _state(obj)
    visit(path, obj, own)
    visited.add(id(obj))
    for attr, child in children:
        child_path = f"{path}/{attr}" if path else attr
        if isinstance(child, (list, tuple, dict)):
            _walk_container(list(child.values()) if isinstance(child, dict) else list(child), child_path, visited,
                            visit)
        elif child is not None and hasattr(child, "keras3_state"):
            _walk(child, child_path, visited, visit)


def _walk_container(items: list, path: str, visited: set[int], visit) -> None:
    used: dict[str, int] = {}

    def unique(base: str) -> str:
        if base in used:
            used[base] += 1
            return f"{base}_{used[base]}"
        used[base] = 0
        return base

    for item in items:
        if isinstance(item, (list, tuple, dict)):
            values = list(item.values()) if isinstance(item, dict) else list(item)
            _walk_container(values, f"{path}/{unique('container')}", visited, visit)
        elif hasattr(item, "keras3_state") and not getattr(item, "keras3_operation", False):
            _walk(item, f"{path}/{unique(to_snake_case(keras3_class_name(item)))}", visited, visit)


def state_paths(model: Layer) -> list[tuple[str, Layer, list]]:
    """(path, object, own weights) for every saved object of `model`, in Keras 3's saving order."""
    out: list[tuple[str, Layer, list]] = []
    _walk(model, "", set(), lambda path, obj, own: out.append((path, obj, own)))
    return out


def model_state(model: Layer, optimizer: StateGroup | None = None) -> StateGroup:
    """The StateGroup tree Keras 3's `save_weights` writes for `model` (optionally with optimizer variables)."""
    root = StateGroup()
    for path, obj, own in state_paths(model):
        group = root.ensure(path)
        group.has_vars = True
        group.name = getattr(obj, "name", None)
        group.vars = [w if w.deferred else w.value for w in own]  # a deferred weight streams when written
    if optimizer is not None:
        root.children["optimizer"] = optimizer
    return root


def load_model_state(model: Layer, root: StateGroup, file: str | None = None) -> None:
    """Assign the variables saved in a Keras 3 state tree to `model`'s weights, path by path.

    Every object with weights must find a `vars` group with as many arrays of the right shapes (as Keras 3's
    loader demands); nothing is assigned unless everything fits.
    """
    assignments: list[tuple[Any, np.ndarray]] = []
    for path, obj, own in state_paths(model):
        if not own:
            continue
        group = root.find(path)
        where = f"{path}/vars" if path else "vars"
        saved = group.vars if group is not None else []
        if len(saved) != len(own):
            hint = f" (saved for '{group.name}')" if group is not None and group.name not in (None, obj.name) else ""
            raise WeightsError(f"expects {len(own)} variables at '{where}', the file has {len(saved)}{hint}",
                               file=file, layer=obj.name)
        for i, (w, value) in enumerate(zip(own, saved)):
            value = np.asarray(value)
            if tuple(value.shape) != tuple(w.shape):
                raise WeightsError(f"variable '{w.name}' has shape {tuple(w.shape)} but '{where}/{i}' holds "
                                   f"{tuple(value.shape)}", file=file, layer=obj.name)
            assignments.append((w, value))
    for w, value in assignments:
        w.assign(value)


# Variables Keras 3 names differently from tf.keras: {class: {tf.keras name: Keras 3 name}}.
_VARIABLE_NAMES = {"DepthwiseConv1D": {"depthwise_kernel": "kernel"}, "DepthwiseConv2D": {"depthwise_kernel": "kernel"}}


def _variable_path(layer: Layer, name: str) -> str:
    name = name[:-2] if name.endswith(":0") else name
    head, _, short = name.rpartition("/")
    short = _VARIABLE_NAMES.get(type(layer).__name__, {}).get(short, short)
    return f"{head}/{short}" if head else short


def _variable_owners(layers: list, scope: str) -> dict[int, tuple[str, Layer, Any]]:
    """id(weight) -> (name scope, the innermost layer that owns it, the weight). Keras 3 builds a Sequential's layers inside
    its name scope, a functional model's in the enclosing one: `seq/dense/kernel`, but `dense/kernel` for the same
    layer in a functional model."""
    out: dict[int, tuple[str, Layer, Any]] = {}
    for layer in layers:
        inner = getattr(layer, "layers", None)
        if _is_model(layer) and inner is not None:
            nested = scope + (f"{layer.name}/" if type(layer).__name__ == "Sequential" else "")
            for key, value in _variable_owners(list(inner), nested).items():
                out.setdefault(key, value)
        else:
            for w in layer.weights:
                out.setdefault(id(w), (scope, layer, w))
    return out


def legacy_weight_groups(layers: list[Layer], model: Any = None) -> list[tuple[str, list[tuple[str, np.ndarray]]]]:
    """(layer name, [(weight name, array)]) as Keras 3's legacy `.h5` writer stores them: the variable paths
    (tf.keras's weight names without `:0`, in Keras 3's spelling, inside the name scopes of the Sequential models
    around them, `model` included). Loaders use only their order."""
    paths = variable_paths(layers, model)
    return [(layer.name, [(paths.get(id(w)) or _variable_path(layer, w.name), w if w.deferred else w.value)
                          for w in layer.trainable_weights + layer.non_trainable_weights]) for layer in layers]


def variable_paths(layers: list[Layer], model: Any = None) -> dict[int, str]:
    """id(weight) -> the variable's path in Keras 3 (`seq/dense/kernel`) for the weights of `layers` (of `model`)."""
    top = f"{model.name}/" if model is not None and type(model).__name__ == "Sequential" else ""
    return {key: scope + _variable_path(owner, owner_weight.name)
            for key, (scope, owner, owner_weight) in _variable_owners(layers, top).items()}
