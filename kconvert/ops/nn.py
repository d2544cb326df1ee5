"""Activation-style nonlinearities and normalisation helpers."""

from __future__ import annotations

import math

import numpy as np

from . import array_module, ufuncs
from .array_module import on_device
from .base import traceable
from .logits import mark


def relu(x, negative_slope=0.0, max_value=None, threshold=0.0):
    """Keras ReLU (`backend.relu`): x where x > threshold (0 elsewhere), capped at max_value, minus
    negative_slope * relu(threshold - x)."""
    x = np.asarray(x)
    if threshold != 0.0:
        y = np.where(x > threshold, x, 0).astype(x.dtype, copy=False)
    else:
        y = ufuncs.call(np.maximum, x, 0)  # a Var or an ONNX Sym takes the call through its own protocol
    if max_value is not None:
        y = np.clip(y, 0, max_value)
    if negative_slope != 0.0:
        y = y - negative_slope * np.maximum(threshold - x, 0)
    return y.astype(x.dtype, copy=False)


@traceable
def sigmoid(x):
    # stable for large |x|: 1 / (1 + e^-x) where x >= 0, e^x / (1 + e^x) elsewhere, one e^-|x| for both
    e = np.exp(-np.abs(x))
    d = 1.0 + e
    return mark(np.where(x >= 0, 1.0 / d, e / d), x)


@traceable
def softmax(x, axis=-1):
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return mark(e / np.sum(e, axis=axis, keepdims=True), x)


@traceable
def log_softmax(x, axis=-1):
    s = x - np.max(x, axis=axis, keepdims=True)
    return s - np.log(np.sum(np.exp(s), axis=axis, keepdims=True))


def softplus(x):
    return (np.logaddexp(0, x)).astype(x.dtype, copy=False)


def softsign(x):
    return x / (1 + np.abs(x))


def elu(x, alpha=1.0):
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0))).astype(x.dtype, copy=False)


def selu(x):
    alpha, scale = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946
    return (scale * elu(x, alpha)).astype(x.dtype, copy=False)


_erf = np.vectorize(math.erf, otypes=[np.float64])


@traceable
def erf(x):
    if on_device(x):
        return array_module.special("erf", x)
    try:
        from scipy.special import erf as sp_erf  # optional; far faster than the vectorised fallback
    except ImportError:  # pragma: no cover - depends on the environment
        sp_erf = _erf
    return sp_erf(x).astype(np.asarray(x).dtype, copy=False)


def gelu(x, approximate=False):
    if approximate:
        c = np.sqrt(2.0 / np.pi).astype(x.dtype)
        return (0.5 * x * (1.0 + np.tanh(c * (x + 0.044715 * x**3)))).astype(x.dtype, copy=False)
    return (0.5 * x * (1.0 + erf(x / np.sqrt(2.0).astype(x.dtype)))).astype(x.dtype, copy=False)


def l2_normalize(x, axis=-1, epsilon=1e-12):
    sq = np.sum(np.square(x), axis=axis, keepdims=True)
    return x / np.sqrt(np.maximum(sq, epsilon))
