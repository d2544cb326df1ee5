"""A ReLU right before max pooling runs after it instead, on the pooled (smaller) tensor.

ReLU is monotone, so max(relu(a), relu(b)) = relu(max(a, b)): the values are the same, and so are the gradients
(in a window whose maximum is positive, the same first tap holds it either way; in any other window the
gradient is zero both ways, since ReLU's derivative is zero there). With 2x2 pooling the ReLU's forward pass
and its backward mask touch a quarter of the elements: the MNIST CNN of benchmarks/train_vs_keras.py runs its
two ReLUs over 1.6 MB and 0.8 MB instead of 6.4 MB and 3.2 MB each step.

`plan(graph)` finds the pairs: a node whose layer ends in a plain ReLU (a convolution with
`activation="relu"`, `Activation("relu")`, `ReLU()` with its defaults), whose only use is one max-pooling node,
whose output is not a model output and whose layer has no activity regularizer (that would see the value
before the ReLU). The producer then runs without its ReLU (the call `_linear_call` finds in the `LINEAR_CALLS` registry) and
the pooling node applies it.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

from .. import ops
from ..ir import Graph, Node
from ..layers.activation_layers import ReLU
from ..layers.convolutional import _Conv
from ..layers.core import Activation
from ..layers.pooling import _Pooling

LINEAR_CALLS: dict[type, Callable] = {}  # layer class -> fn(layer): its call without the final ReLU, or None


def linear_call_for(cls: type):
    """Register `fn(layer) -> callable | None` for `cls` and its subclasses (the nearest registered class in
    the method resolution order applies). `fn` must return None for a layer whose `call` is not `cls.call`: a
    subclass with its own `call` may compute something else."""
    def register(fn):
        LINEAR_CALLS[cls] = fn
        return fn
    return register


def _identity(inputs, **_):
    return inputs


@linear_call_for(_Conv)
def _conv(layer):
    return layer._linear if type(layer).call is _Conv.call and layer._act is ops.relu else None


@linear_call_for(Activation)
def _activation(layer):
    return _identity if type(layer).call is Activation.call and layer._act is ops.relu else None


@linear_call_for(ReLU)
def _relu_layer(layer):
    plain = layer.max_value is None and layer.negative_slope == 0.0 and layer.threshold == 0.0
    return _identity if type(layer).call is ReLU.call and plain else None


def _linear_call(layer) -> Callable | None:
    for cls in type(layer).__mro__:
        if cls in LINEAR_CALLS:
            return LINEAR_CALLS[cls](layer)
    return None


def _is_max_pool(layer) -> bool:
    return isinstance(layer, _Pooling) and layer.mode == "max" and type(layer).call is _Pooling.call


class Plan:
    """Which nodes of a graph run without their ReLU (`linear`: node id -> call) and which apply it after
    pooling (`relu_after`: node ids)."""

    def __init__(self, graph: Graph):
        self.size = len(graph.nodes)
        self.linear: dict[int, Callable] = {}
        self.relu_after: set[int] = set()
        uses: dict[int, list[Node]] = {}
        for node in graph.nodes:
            for v in node.inputs:
                uses.setdefault(id(v), []).append(node)
        outputs = {id(v) for v in graph.outputs}
        for node in graph.nodes:
            if node.is_input or len(node.outputs) != 1 or id(node.outputs[0]) in outputs:
                continue
            users = uses.get(id(node.outputs[0]), [])
            if len(users) != 1 or not _is_max_pool(users[0].layer) or len(users[0].inputs) != 1:
                continue
            layer = node.layer
            if getattr(layer, "activity_regularizer", None) is not None:
                continue
            call = _linear_call(layer)
            if call is not None:
                self.linear[id(node)] = call
                self.relu_after.add(id(users[0]))


_plans: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def plan(graph: Graph) -> Plan:
    """The pairs of `graph` (cached while its nodes stay the same)."""
    found = _plans.get(graph)
    if found is None or found.size != len(graph.nodes):
        found = _plans[graph] = Plan(graph)
    return found


def relu(x):
    """The deferred ReLU, applied to the pooled output."""
    return ops.relu(x)
