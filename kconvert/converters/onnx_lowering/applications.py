"""Lowerings of the layers Keras's applications define: CustomScaleLayer (Inception-ResNet), LayerScale (ConvNeXt)."""

from __future__ import annotations

import numpy as np

from .core import elementwise_input, keras_param, same_layout
from .registry import lowers, unsupported


@lowers("CustomScaleLayer")
def custom_scale(ctx, layer, ins, node):
    if len(ins) != 2 or ins[0].ndim != ins[1].ndim:
        raise unsupported(layer, "inputs other than two of the same rank")
    perm = ctx.common_perm(ins)
    a, b = (ctx.as_perm(r, perm) for r in ins)
    y = ctx.node("Add", [a.name, ctx.node("Mul", [b.name, ctx.const(np.float32(layer.scale), "scale")])])
    return [same_layout(a, y)]


@lowers("LayerScale")
def layer_scale(ctx, layer, ins, node):
    x = elementwise_input(ctx, ins[0])
    return [same_layout(x, ctx.node("Mul", [x.name, ctx.const(keras_param(layer.gamma.value, x), "gamma")]))]
