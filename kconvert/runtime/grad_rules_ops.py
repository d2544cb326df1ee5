"""Gradient rules of the traceable kconvert.ops functions that have no `Op.backward` next to their kernel.

The others (conv, conv_transpose, max_pool, avg_pool, resize, gather) take theirs from the op class
(`autodiff.op_backward_rule`); every non-traceable op is differentiated through the numpy calls its kernel
makes.
"""

from __future__ import annotations

import math

import numpy as np

from .grad_rules import op_rule


@op_rule("sigmoid")
def _sigmoid(out, needs, x):
    return lambda g: (g * out * (1 - out),)


@op_rule("softmax")
def _softmax(out, needs, x, axis=-1):
    return lambda g: (out * (g - np.sum(g * out, axis=axis, keepdims=True)), None)


@op_rule("log_softmax")
def _log_softmax(out, needs, x, axis=-1):
    return lambda g: (g - np.exp(out) * np.sum(g, axis=axis, keepdims=True), None)


@op_rule("erf")
def _erf(out, needs, x):
    return lambda g: (g * (2 / math.sqrt(math.pi)) * np.exp(-np.square(x)),)
