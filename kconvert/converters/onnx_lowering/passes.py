"""Graph passes run on the IR before lowering: drop inference identities, fold BatchNormalization into Conv/Dense.

A pass never changes the user's model: it returns a plan (nodes to skip, per-layer affine corrections) that the
lowering applies while it emits the ONNX graph.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# layers that compute the identity at inference (Dropout family, noise, random augmentation, regularizers)
INFERENCE_IDENTITIES = {
    "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise", "GaussianDropout",
    "AlphaDropout", "ActivityRegularization",
}
# layers whose kernel's last axis is the output channel and that a following BatchNormalization can fold into
FOLDABLE = {"Conv1D", "Conv2D", "Conv3D", "DepthwiseConv1D", "DepthwiseConv2D", "SeparableConv1D",
            "SeparableConv2D", "Dense"}


@dataclass
class Plan:
    dropped: set = field(default_factory=set)  # ids of nodes whose output is their input
    folded: dict = field(default_factory=dict)  # id(layer) -> (scale, shift) applied to the layer's output channels


def plan_passes(graph) -> Plan:
    """Run every pass over `graph` and its nested models."""
    plan = Plan()
    _plan_graph(graph, plan)
    return plan


def _plan_graph(graph, plan: Plan) -> None:
    consumers = _consumers(graph)
    for node in graph.nodes:
        layer = node.layer
        inner = getattr(layer, "_graph", None)
        if inner is not None and hasattr(layer, "_is_graph_network"):
            _plan_graph(inner, plan)
            continue
        if node.is_input:
            continue
        if _is_identity(layer) and len(node.inputs) == 1 and len(node.outputs) == 1:
            plan.dropped.add(id(node))
        elif type(layer).__name__ == "BatchNormalization" and _fold_batchnorm(node, consumers, plan):
            plan.dropped.add(id(node))


def _is_identity(layer) -> bool:
    name = type(layer).__name__
    if name == "Activation":
        return getattr(layer, "activation", None) in ("linear", None)
    if any(c.__name__ == "_InferenceIdentity" for c in type(layer).__mro__):  # random augmentation layers
        return True
    return name in INFERENCE_IDENTITIES and type(layer).call is _registered_call(name)


def _registered_call(name: str):
    from ...layers.base import LAYERS

    cls = LAYERS.get(name)
    return getattr(cls, "call", None)


def _consumers(graph) -> dict[int, int]:
    counts: dict[int, int] = {}
    for node in graph.nodes:
        for v in node.inputs:
            counts[id(v)] = counts.get(id(v), 0) + 1
    for v in graph.outputs:
        counts[id(v)] = counts.get(id(v), 0) + 1
    return counts


def _fold_batchnorm(bn_node, consumers: dict, plan: Plan) -> bool:
    """Fold an inference BatchNormalization into the Conv/Dense feeding only it: y*s + t with s, t per channel."""
    bn = bn_node.layer
    if len(bn_node.inputs) != 1:
        return False
    src = bn_node.inputs[0]
    prev = src.node.layer if src.node is not None else None
    if prev is None or type(prev).__name__ not in FOLDABLE or id(prev) in plan.folded:
        return False
    if len(prev._inbound_nodes) != 1 or consumers.get(id(src), 0) != 1:
        return False
    if getattr(prev, "activation", None) not in (None, "linear") or getattr(prev, "_act", None) is None:
        return False
    if getattr(prev._act, "__name__", "") != "linear":
        return False
    axes = getattr(bn, "_axes", None) or [a % len(src.shape) for a in np.atleast_1d(bn.axis)]
    channel_axis = (len(src.shape) - 1) if getattr(prev, "data_format", "channels_last") == "channels_last" \
        else 1
    if list(axes) != [channel_axis] or getattr(bn, "renorm", False) or getattr(bn, "virtual_batch_size", None):
        return False
    gamma = bn.gamma.value if bn.gamma is not None else 1.0
    beta = bn.beta.value if bn.beta is not None else 0.0
    mean, var = bn.moving_mean.value, bn.moving_variance.value
    scale = (gamma / np.sqrt(var.astype(np.float64) + bn.epsilon)).astype(np.float64)
    shift = beta - mean * scale
    plan.folded[id(prev)] = (scale.reshape(-1), np.asarray(shift, np.float64).reshape(-1))
    return True
