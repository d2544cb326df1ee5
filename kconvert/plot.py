"""`plot_model` / `model_to_dot`: the model graph in Graphviz DOT, drawn as tf_keras's `vis_utils` draws it.

The graph is the one tf_keras 2.x builds: one record-shaped node per layer (id `str(id(layer))`), labelled
"name|ClassName" (or the table with the dtype, the activation and the input/output shapes), one edge per
inbound layer of each of the model's nodes, and with `expand_nested` each nested model (or a wrapper around
one) as a dashed cluster whose first and last nodes take the edges. Graphviz's `dot` program renders it to
png/svg/pdf/...; a `.dot` file is the graph text itself and needs no Graphviz.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

from .errors import ConfigError, ExportError, GraphError, GraphvizNotFoundError
from .formats.atomic import atomic_write
from .layers import Layer
from .layers.activations import serialize as serialize_activation
from .layers.wrappers import Wrapper
from .summary import _class_name

__all__ = ["model_to_dot", "plot_model", "graph_stats", "output_format", "render", "write_dot", "DOT_FORMATS"]

DOT_FORMATS = ("dot", "gv")  # the graph text, written without Graphviz


def _pydot():
    try:
        import pydot
    except ImportError:  # pragma: no cover - pydot is a dependency
        raise ConfigError("plotting needs pydot (`pip install pydot`)") from None
    return pydot


# ---------------------------------------------------------------------------------------------- labels


def _is_functional(layer) -> bool:
    return getattr(layer, "_is_graph_network", False)


def _is_wrapped_model(layer) -> bool:
    return isinstance(layer, Wrapper) and _is_functional(layer.layer)


def _unwrap_single(shapes):
    # tf_keras's Node.input_shapes/output_shapes: a structure of length one is replaced by its element
    # (which turns a rank-1 shape (None,) into None, as tf_keras prints it)
    return shapes[0] if len(shapes) == 1 else shapes


def _node_shapes(node, which: str):
    if node.is_input:  # tf_keras wraps an InputLayer's tensor in a list, for input and output alike
        return [v.shape for v in node.outputs]
    if which == "output":
        values = node.outputs
        return _unwrap_single(values[0].shape if len(values) == 1 else [v.shape for v in values])
    if not node.nested:
        return _unwrap_single(node.inputs[0].shape)
    return _unwrap_single([v.shape for v in node.inputs])


_UNKNOWN = object()


def _layer_shapes(layer, which: str):
    """tf_keras's `layer.input_shape`/`output_shape`; `_UNKNOWN` where it raises (never called, nodes disagree)."""
    if _is_functional(layer):
        values = layer.inputs if which == "input" else layer.outputs
        shapes = [v.shape for v in values]
        nested = layer._nested_inputs if which == "input" else layer._nested_outputs
        if isinstance(nested, dict):
            return dict(zip(nested, shapes))
        return shapes[0] if len(shapes) == 1 else shapes
    if not layer._inbound_nodes:
        return _UNKNOWN
    per_node = [_node_shapes(n, which) for n in layer._inbound_nodes]
    return per_node[0] if len({str(s) for s in per_node}) == 1 else _UNKNOWN


def _shape_text(shape) -> str:
    if shape is _UNKNOWN:
        return "?"
    return str(shape).replace("{", r"\{").replace("}", r"\}")


# tf_keras labels an activation with its function's __name__, which differs from the Keras name for these
_FUNCTION_NAMES = {"log_softmax": "log_softmax_v2", "silu": "swish"}


def _activation_name(layer) -> str | None:
    if not hasattr(layer, "activation"):
        return None
    name = serialize_activation(layer.activation, keras_major=2)
    if isinstance(name, dict):
        config = name.get("config")
        name = config if isinstance(config, str) else (config or {}).get("name") or name.get("class_name")
    return _FUNCTION_NAMES.get(str(name), str(name))


def _label(layer, name: str, class_name: str, opts: dict) -> str:
    label = class_name
    if opts["show_layer_activations"]:
        activation = _activation_name(layer)
        if activation is not None:
            label = f"{{{label}|{activation}}}"
    if opts["show_layer_names"]:
        label = f"{name}|{label}"
    if opts["show_dtype"]:
        label = f"{label}|{layer.dtype if layer.dtype is not None else '?'}"
    if opts["show_shapes"]:
        inputs = _shape_text(_layer_shapes(layer, "input"))
        outputs = _shape_text(_layer_shapes(layer, "output"))
        label = f"{{{label}}}|{{input:|output:}}|{{{{{inputs}}}|{{{outputs}}}}}"
    if opts["show_trainable"]:
        label = f"{'T' if layer.trainable else 'NT'}|{label}"
    return label


# ---------------------------------------------------------------------------------------------- graph


def _add_edge(dot, src: str, dst: str) -> None:
    if not dot.get_edge(src, dst):
        dot.add_edge(_pydot().Edge(src, dst))


def _layers_in_order(model) -> list[Layer]:
    """The model's layers as tf_keras lists them for plotting (a Sequential's InputLayer included)."""
    return list(model._graph.layers)


def model_to_dot(model, show_shapes: bool = False, show_dtype: bool = False, show_layer_names: bool = True,
                 rankdir: str = "TB", expand_nested: bool = False, dpi: int = 96, subgraph: bool = False,
                 show_layer_activations: bool = False, show_trainable: bool = False):
    """The model as a `pydot.Dot` (a `pydot.Cluster` with `subgraph=True`), as `tf_keras.utils.model_to_dot`."""
    pydot = _pydot()
    if not getattr(model, "built", False):
        raise GraphError("the model has not been built yet; build it or call it on data before plotting",
                         layer=getattr(model, "name", None))
    opts = {"show_shapes": show_shapes, "show_dtype": show_dtype, "show_layer_names": show_layer_names,
            "show_layer_activations": show_layer_activations, "show_trainable": show_trainable}
    if subgraph:
        dot = pydot.Cluster(style="dashed", graph_name=model.name)
        dot.set("label", model.name)
        dot.set("labeljust", "l")
    else:
        dot = pydot.Dot()
        dot.set("rankdir", rankdir)
        dot.set("concentrate", True)
        dot.set("dpi", dpi)
        dot.set_node_defaults(shape="record")
    if not _is_functional(model):  # a subclassed model: one box
        dot.add_node(pydot.Node(str(id(model)), label=model.name))
        return dot

    def nested_dot(inner):
        return model_to_dot(inner, show_shapes, show_dtype, show_layer_names, rankdir, expand_nested,
                            subgraph=True, show_layer_activations=show_layer_activations,
                            show_trainable=show_trainable)

    first: dict[int, Any] = {}  # id(nested model) -> first and last node of its cluster
    last: dict[int, Any] = {}

    def add_cluster(nested) -> None:
        cluster = nested_dot(nested)
        nodes = cluster.get_nodes()
        first[id(nested)], last[id(nested)] = nodes[0], nodes[-1]
        dot.add_subgraph(cluster)

    layers = _layers_in_order(model)
    for layer in layers:
        name, class_name = layer.name, _class_name(layer)
        inner = layer.layer if isinstance(layer, Wrapper) else None
        if inner is not None:
            if expand_nested and _is_functional(inner):
                add_cluster(inner)
            else:
                name = f"{name}({inner.name})"
                class_name = f"{class_name}({_class_name(inner)})"
        if expand_nested and _is_functional(layer):
            add_cluster(layer)
        else:
            dot.add_node(pydot.Node(str(id(layer)), label=_label(layer, name, class_name, opts)))

    own_nodes = {id(n) for n in model._graph.nodes}
    for layer in layers:
        for node in layer._inbound_nodes:
            if id(node) not in own_nodes:
                continue
            for value in node.inputs:
                _connect(dot, value.node.layer, layer, expand_nested, first, last)
    return dot


def _connect(dot, src: Layer, dst: Layer, expand_nested: bool, first: dict, last: dict) -> None:
    """An edge from `src` to `dst`, into/out of their clusters where they are expanded nested models."""
    src_id, dst_id = str(id(src)), str(id(dst))
    if not expand_nested:
        _add_edge(dot, src_id, dst_id)
    elif _is_functional(src):
        _add_edge(dot, last[id(src)].get_name(), first[id(dst)].get_name() if _is_functional(dst) else dst_id)
    elif _is_wrapped_model(src):
        _add_edge(dot, last[id(src.layer)].get_name(), dst_id)
    elif _is_functional(dst):
        _add_edge(dot, src_id, first[id(dst)].get_name())
    elif _is_wrapped_model(dst):
        _add_edge(dot, src_id, dst_id)
        _add_edge(dot, dst_id, first[id(dst.layer)].get_name())
    else:
        _add_edge(dot, src_id, dst_id)


def graph_stats(dot) -> dict[str, int]:
    """How many layer boxes and edges a DOT graph holds, its clusters included."""
    layers = edges = 0
    stack = [dot]
    while stack:
        graph = stack.pop()
        layers += sum(n.get_name() not in ("node", "edge", "graph") for n in graph.get_nodes())
        edges += len(graph.get_edges())
        stack.extend(graph.get_subgraphs())
    return {"layers": layers, "edges": edges}


# ---------------------------------------------------------------------------------------------- output


def output_format(to_file: str | os.PathLike) -> str:
    """The format a file name asks for: its extension without the dot (png when it has none, as tf_keras)."""
    ext = os.path.splitext(os.fspath(to_file))[1]
    return ext[1:].lower() if ext else "png"


def write_dot(dot, to_file: str | os.PathLike) -> None:
    """Write the graph text (no Graphviz needed), atomically."""
    with atomic_write(to_file, "w") as f:
        f.write(dot.to_string())


def render(dot, fmt: str, to_file: str | os.PathLike) -> bytes:
    """The graph laid out and rendered by Graphviz's `dot` program in format `fmt` (png, svg, pdf, ...)."""
    program = shutil.which("dot")
    if program is None:
        raise GraphvizNotFoundError(
            f"writing {fmt} needs the Graphviz 'dot' program, which is not installed (not on PATH); install "
            "Graphviz (`apt-get install graphviz`, `brew install graphviz`) or write a .dot file", file=to_file)
    result = subprocess.run([program, f"-T{fmt}"], input=dot.to_string().encode("utf-8"), capture_output=True,
                            check=False)
    if result.returncode != 0:
        message = result.stderr.decode("utf-8", "replace").strip().splitlines()
        raise ExportError(f"Graphviz could not write format '{fmt}': {message[0] if message else 'failed'}",
                          file=to_file)
    return result.stdout


def plot_model(model, to_file: str | os.PathLike = "model.png", show_shapes: bool = False,
               show_dtype: bool = False, show_layer_names: bool = True, rankdir: str = "TB",
               expand_nested: bool = False, dpi: int = 96, show_layer_activations: bool = False,
               show_trainable: bool = False):
    """Draw the model to `to_file` as `tf_keras.utils.plot_model` does; the format follows the extension.

    `.dot`/`.gv` write the graph text and need no Graphviz; any other format (png, svg, pdf, ...) is rendered
    by Graphviz's `dot` and raises `GraphvizNotFoundError` without it. Written atomically. Returns an
    IPython `Image` of a png/jpeg/gif when IPython is installed, as tf_keras does; None otherwise.
    """
    dot = model_to_dot(model, show_shapes=show_shapes, show_dtype=show_dtype, show_layer_names=show_layer_names,
                       rankdir=rankdir, expand_nested=expand_nested, dpi=dpi,
                       show_layer_activations=show_layer_activations, show_trainable=show_trainable)
    fmt = output_format(to_file)
    if fmt in DOT_FORMATS:
        write_dot(dot, to_file)
        return None
    data = render(dot, fmt, to_file)
    with atomic_write(to_file, "wb") as f:
        f.write(data)
    if fmt not in ("png", "jpg", "jpeg", "gif"):
        return None
    try:
        from IPython import display
    except ImportError:
        return None
    return display.Image(filename=os.fspath(to_file))
