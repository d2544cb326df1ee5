"""`Model.summary()`: the table tf.keras 2.x prints, line for line."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .layers import InputLayer


def _readable_size(n_bytes: float) -> str:
    for unit in ["Byte", "KB", "MB", "GB", "TB", "PB"]:
        if n_bytes / 1024 < 1:
            return f"{n_bytes:.2f} {unit}"
        n_bytes /= 1024
    return f"{n_bytes:.2f} PB"


def _count(weights) -> tuple[int, int]:
    params = sum(int(np.prod(w.shape)) for w in weights)
    size = sum(int(np.prod(w.shape)) * np.dtype(w.value.dtype).itemsize for w in weights)
    return params, size


def _is_sequential_like(model) -> bool:
    if type(model).__name__ == "Sequential" or not model._is_graph_network:
        return True
    by_depth: dict[int, list] = {}
    for node in model._graph.nodes:
        by_depth.setdefault(model._graph.depth[id(node)], []).append(node)
    for nodes in by_depth.values():
        if len(nodes) > 1 or (len(nodes) == 1 and len(nodes[0].inputs) > 1):
            return False
    model_nodes = {id(n) for n in model._graph.nodes}
    return all(sum(id(n) in model_nodes for n in la._inbound_nodes) <= 1 for la in model.layers)


def _output_shape(layer):
    try:
        shape = layer.output_shape
    except Exception:  # noqa: BLE001 - tf.keras prints "multiple" whenever the shape is ill-defined
        return "multiple"
    return [shape] if isinstance(layer, InputLayer) else shape


def _class_name(layer) -> str:
    if getattr(layer, "_is_graph_network", False) and type(layer).__name__ == "Model":
        return "Functional"  # tf.keras builds every functional model as the class Functional
    return type(layer).__name__


def _node_index(layer, node) -> int:
    # tf.keras does not count a functional model's construction node among its call nodes
    index = layer._inbound_nodes.index(node)
    return index - 1 if getattr(layer, "_is_graph_network", False) else index


def print_summary(model, line_length: int | None = None, positions=None,
                  print_fn: Callable[[str], None] | None = None) -> None:
    """Print the summary table of `model` as tf.keras does."""
    print_fn = print_fn or print
    sequential_like = _is_sequential_like(model)
    if sequential_like:
        line_length = line_length or 65
        positions = positions or [0.45, 0.85, 1.0]
        header = ["Layer (type)", "Output Shape", "Param #"]
    else:
        line_length = line_length or 98
        positions = positions or [0.3, 0.6, 0.70, 1.0]
        header = ["Layer (type)", "Output Shape", "Param #", "Connected to"]
    if positions[-1] <= 1:
        positions = [int(line_length * p) for p in positions]
    model_nodes = {id(n) for n in model._graph.nodes} if model._graph else set()

    def print_row(fields):
        left = [str(x) for x in fields]
        while any(left):
            line = ""
            for col in range(len(left)):
                start = positions[col - 1] if col > 0 else 0
                last = col == len(positions) - 1
                space = 0 if last else 2
                cutoff = positions[col] - start - space - (0 if last else 1)
                fit = left[col][:cutoff]
                cuts = [fit.find(x) + len(x) for x in ("),", "},", "],", "',") if fit.find(x) >= 0]
                if cuts:
                    cutoff = min(cuts)
                    fit = fit[:cutoff]
                if col == 0:
                    line += " "
                line += fit + " " * space
                left[col] = left[col][cutoff:]
                line += " " * (positions[col] - len(line))
            print_fn(line)

    print_fn(f'Model: "{model.name}"')
    print_fn("_" * line_length)
    print_row(header)
    print_fn("=" * line_length)
    layers = model.layers
    for layer in layers:
        fields = [f"{layer.name} ({_class_name(layer)})", _output_shape(layer),
                  layer.count_params() if layer.built else "0 (unused)"]
        if not sequential_like:
            conns = []
            for node in layer._inbound_nodes:
                if id(node) not in model_nodes:
                    continue
                for v in node.inputs:
                    src = v.node.layer
                    conns.append(f"{src.name}[{_node_index(src, v.node)}][{v.tensor_index}]")
            fields.append(conns)
        print_row(fields)
        print_fn(" " * line_length)
    print_fn("=" * line_length)
    trainable, t_size = _count(model.trainable_weights)
    non_trainable, n_size = _count(model.non_trainable_weights)
    print_fn(f"Total params: {trainable + non_trainable} ({_readable_size(t_size + n_size)})")
    print_fn(f"Trainable params: {trainable} ({_readable_size(t_size)})")
    print_fn(f"Non-trainable params: {non_trainable} ({_readable_size(n_size)})")
    print_fn("_" * line_length)
