"""The numpy engine: evaluates an IR graph node by node with each layer's numpy `call`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..ir import Graph, Node
from . import deferred_relu

_MASK_ACCEPTERS: dict[type, bool] = {}
_TRAINING_ACCEPTERS: dict[type, bool] = {}


def _accepts(cls: type, name: str, cache: dict) -> bool:
    if cls not in cache:
        import inspect

        params = inspect.signature(cls.call).parameters
        cache[cls] = name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    return cache[cls]


def run_node(node: Node, values: list, masks: list, training: bool = False,
             call: Callable | None = None) -> tuple[list, list]:
    """Run one layer call on arrays (`call` in place of the layer's own); returns (outputs, output masks)."""
    layer = node.layer
    args = node.call_args(values)
    kwargs: dict[str, Any] = {k: v for k, v in node.kwargs.items() if not k.startswith("_")}
    kwargs.pop("mask", None)
    kwargs.pop("training", None)
    mask_arg = node.call_args(masks) if any(m is not None for m in masks) else None
    if mask_arg is not None and _accepts(type(layer), "mask", _MASK_ACCEPTERS):
        kwargs["mask"] = mask_arg
    if training and _accepts(type(layer), "training", _TRAINING_ACCEPTERS):
        kwargs["training"] = True
    call = call or layer.call
    out = call(args, **layer._call_kwargs(kwargs)) if kwargs else call(args)
    outs = list(out) if isinstance(out, (list, tuple)) else [out]
    out_mask = layer.compute_mask(args, mask_arg)
    out_masks = list(out_mask) if isinstance(out_mask, (list, tuple)) else [out_mask] * len(outs)
    return outs, out_masks


def run_graph(graph: Graph, feeds: Sequence[np.ndarray], training: bool = False,
              masks: Sequence | None = None, observe=None) -> tuple[list, list]:
    """Evaluate `graph` on input arrays (in graph input order); returns (outputs, output masks). A ReLU right
    before max pooling runs after it (runtime/deferred_relu.py).

    `observe(node, outputs)` is called after each layer call (the training step collects activity
    regularization there)."""
    mask_env: dict[int, Any] = {}
    for v, m in zip(graph.inputs, masks or [None] * len(graph.inputs)):
        mask_env[id(v)] = m

    fused = deferred_relu.plan(graph)

    def step(node: Node, values: list) -> list:
        outs, out_masks = run_node(node, values, [mask_env.get(id(v)) for v in node.inputs], training,
                                   fused.linear.get(id(node)))
        if id(node) in fused.relu_after:
            outs = [deferred_relu.relu(o) for o in outs]
        for v, m in zip(node.outputs, out_masks):
            mask_env[id(v)] = m
        if observe is not None:
            observe(node, outs)
        return outs

    outputs = graph.evaluate(list(feeds), step)
    return outputs, [mask_env.get(id(v)) for v in graph.outputs]


def iter_batches(n: int, batch_size: int):
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


def predict(graph: Graph, feeds: Sequence[np.ndarray], batch_size: int = 32) -> list[np.ndarray]:
    """Run the graph over inputs in batches of `batch_size` and concatenate the outputs."""
    n = len(feeds[0]) if feeds else 0
    if n == 0:
        return run_graph(graph, feeds)[0]
    chunks: list[list[np.ndarray]] = []
    for sl in iter_batches(n, batch_size):
        chunks.append(run_graph(graph, [f[sl] for f in feeds])[0])
    if len(chunks) == 1:
        return chunks[0]
    return [np.concatenate([c[i] for c in chunks], axis=0) for i in range(len(chunks[0]))]
