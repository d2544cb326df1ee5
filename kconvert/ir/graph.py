"""The IR graph: symbolic values, the nodes (layer calls) that produce them, and graphs of nodes.

A `Value` is a symbolic tensor (Keras's KerasTensor): shape with `None` for unknown dims, dtype, and
layout (`"NHWC"`-style string for spatial tensors, None otherwise). A `Node` is one call of a layer on
values. A `Graph` is the set of nodes between given input and output values, in topological order,
with Keras's ordering of layers by depth.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..errors import GraphError


class Value:
    """A symbolic tensor: the `tensor_index`-th output of `node`."""

    __slots__ = ("shape", "dtype", "layout", "node", "tensor_index", "name")

    def __init__(self, shape: Sequence[int | None], dtype: str = "float32", layout: str | None = None,
                 node: Node | None = None, tensor_index: int = 0, name: str | None = None):
        self.shape = tuple(None if d is None else int(d) for d in shape)
        self.dtype = dtype
        self.layout = layout
        self.node = node
        self.tensor_index = tensor_index
        self.name = name

    @property
    def keras_history(self) -> tuple[Any, int, int]:
        """(layer, node_index, tensor_index), as Keras names a tensor's origin."""
        return self.node.layer, self.node.node_index, self.tensor_index

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __repr__(self) -> str:
        origin = f" from {self.node.layer.name}" if self.node is not None else ""
        return f"<Value shape={self.shape} dtype={self.dtype}{origin}>"


class Node:
    """One call of `layer` on `inputs` (flat list of Values; `nested` tells if the call got a list)."""

    def __init__(self, layer, inputs: Sequence[Value], nested: bool = False, kwargs: dict | None = None):
        self.layer = layer
        self.inputs = list(inputs)
        self.nested = nested
        self.kwargs = dict(kwargs or {})
        self.outputs: list[Value] = []
        layer._inbound_nodes.append(self)

    @property
    def node_index(self) -> int:
        return self.layer._inbound_nodes.index(self)

    @property
    def is_input(self) -> bool:
        return not self.inputs

    @property
    def parents(self) -> list[Node]:
        return [v.node for v in self.inputs if v.node is not None]

    def call_args(self, values: list):
        """Arrange evaluated input values the way the layer's `call` expects them."""
        return list(values) if self.nested else values[0]

    def __repr__(self) -> str:
        return f"<Node {self.layer.name}#{self.node_index}>"


class Graph:
    """Nodes between `inputs` and `outputs` in topological order; raises GraphError if invalid."""

    def __init__(self, inputs: Sequence[Value], outputs: Sequence[Value]):
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        for v in self.inputs + self.outputs:
            if not isinstance(v, Value) or v.node is None:
                raise GraphError(f"model inputs and outputs must be symbolic tensors, got {v!r}")
        self.nodes, self.layers, self.depth = _map_graph(self.inputs, self.outputs)

    def node_keys(self) -> set[tuple[str, int]]:
        return {(n.layer.name, n.node_index) for n in self.nodes}

    def evaluate(self, feeds: Sequence, run_node: Callable[[Node, list], list]) -> list:
        """Run the graph: `run_node(node, input_values) -> output_values` for each node in order."""
        env: dict[int, Any] = {}
        for v, x in zip(self.inputs, feeds):
            env[id(v)] = x
        for node in self.nodes:
            if node.is_input:
                continue
            if all(id(v) in env for v in node.outputs) and node.outputs:
                continue
            outs = run_node(node, [env[id(v)] for v in node.inputs])
            for v, y in zip(node.outputs, outs):
                env[id(v)] = y
        return [env[id(v)] for v in self.outputs]


def _map_graph(inputs: list[Value], outputs: list[Value]):
    """Keras's `_map_graph_network`: nodes by decreasing depth, layers by depth then discovery order."""
    finished: set[int] = set()
    in_progress: set[int] = set()
    order: list[Node] = []
    layer_indices: dict[int, int] = {}
    layers_by_id: dict[int, Any] = {}
    input_ids = {id(v) for v in inputs}

    def visit(value: Value):
        node = value.node
        if id(node) in finished:
            return
        if id(node) in in_progress:
            raise GraphError(f"the graph has a cycle through layer '{node.layer.name}'", layer=node.layer.name)
        if id(node.layer) not in layer_indices:
            layer_indices[id(node.layer)] = len(layer_indices)
            layers_by_id[id(node.layer)] = node.layer
        in_progress.add(id(node))
        if id(value) not in input_ids:
            if node.is_input:
                raise GraphError(
                    f"output depends on input '{node.layer.name}', which is not among the model's inputs",
                    layer=node.layer.name)
            for parent in node.inputs:
                visit(parent)
        in_progress.discard(id(node))
        finished.add(id(node))
        order.append(node)

    # Iterative deepening would avoid recursion limits; graphs deeper than ~900 layers are rare.
    for v in outputs:
        visit(v)

    # tf.keras's depth rule: a node's depth is at least its layer's depth (shared layers), and a parent
    # node is one deeper than its deepest child.
    nodes_by_id = {id(n): n for n in order}
    node_depth: dict[int, int] = {}
    layer_depth: dict[int, int] = {}
    for node in reversed(order):
        d = max(node_depth.setdefault(id(node), 0), layer_depth.get(id(node.layer), 0))
        layer_depth[id(node.layer)] = d
        node_depth[id(node)] = d
        for parent in node.parents:
            if id(parent) in nodes_by_id:
                node_depth[id(parent)] = max(d + 1, node_depth.get(id(parent), 0))
    nodes = sorted(order, key=lambda n: -node_depth[id(n)])  # stable: parents before children
    layers = sorted(layers_by_id.values(), key=lambda la: (-layer_depth[id(la)], layer_indices[id(la)]))
    return nodes, layers, node_depth


def check_unique_names(layers: Sequence[Any]) -> None:
    """Keras requires unique layer names within one model."""
    seen: set[str] = set()
    for layer in layers:
        if layer.name in seen:
            raise GraphError(f"the layer name '{layer.name}' is used more than once in the model", layer=layer.name)
        seen.add(layer.name)
