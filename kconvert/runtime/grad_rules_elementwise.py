"""Gradient rules of numpy's elementwise ufuncs (arithmetic, exponentials, activations' building blocks),
and of `matmul` (a ufunc in numpy 2). Each rule returns the gradient of every input, summed back over the axes
numpy broadcast it along.

Ties of maximum/minimum follow TensorFlow: between two tracked tensors the first one wins (`x >= y`); against
a constant the constant wins, so `np.maximum(x, 0)` has ReLU's zero gradient at 0.
"""

from __future__ import annotations

import math

import numpy as np

from ..ops import gemm
from .grad_rules import masked, ufunc_rule, unbroadcast_to


def _shape(v) -> tuple:
    return np.shape(v)


def _unary(derivative):
    """A rule for y = f(x) with dy/dx = derivative(x, y)."""
    def rule(out, needs, x):
        return lambda g: (g * derivative(x, out),)
    return rule


def _register_unary(names: str, derivative) -> None:
    ufunc_rule(*names.split())(_unary(derivative))


_register_unary("negative", lambda x, y: -1)
_register_unary("positive conjugate", lambda x, y: 1)
_register_unary("absolute fabs", lambda x, y: np.sign(x))
_register_unary("exp", lambda x, y: y)
_register_unary("exp2", lambda x, y: y * math.log(2.0))
_register_unary("expm1", lambda x, y: y + 1)
_register_unary("log", lambda x, y: 1 / x)
_register_unary("log2", lambda x, y: 1 / (x * math.log(2.0)))
_register_unary("log10", lambda x, y: 1 / (x * math.log(10.0)))
_register_unary("log1p", lambda x, y: 1 / (1 + x))
_register_unary("sqrt", lambda x, y: 0.5 / y)
_register_unary("cbrt", lambda x, y: 1 / (3 * y * y))
_register_unary("square", lambda x, y: 2 * x)
_register_unary("reciprocal", lambda x, y: -(y * y))
_register_unary("tanh", lambda x, y: 1 - y * y)
_register_unary("sin", lambda x, y: np.cos(x))
_register_unary("cos", lambda x, y: -np.sin(x))
_register_unary("tan", lambda x, y: 1 + y * y)
_register_unary("arctan", lambda x, y: 1 / (1 + x * x))
_register_unary("arcsin", lambda x, y: 1 / np.sqrt(1 - x * x))
_register_unary("arccos", lambda x, y: -1 / np.sqrt(1 - x * x))
_register_unary("sinh", lambda x, y: np.cosh(x))
_register_unary("cosh", lambda x, y: np.sinh(x))
_register_unary("arcsinh", lambda x, y: 1 / np.sqrt(x * x + 1))
_register_unary("arctanh", lambda x, y: 1 / (1 - x * x))
_register_unary("expit", lambda x, y: y * (1 - y))  # scipy.special.expit
_register_unary("erf", lambda x, y: (2 / math.sqrt(math.pi)) * np.exp(-x * x))  # scipy.special.erf


@ufunc_rule("sign", "floor", "ceil", "rint", "trunc", "floor_divide", "heaviside")
def _piecewise_constant(out, needs, *inputs):
    return None  # zero gradient almost everywhere (TensorFlow's rule too): the result is a constant


@ufunc_rule("add")
def _add(out, needs, a, b):
    return lambda g: (unbroadcast_to(g, _shape(a)) if needs[0] else None,
                      unbroadcast_to(g, _shape(b)) if needs[1] else None)


@ufunc_rule("subtract")
def _subtract(out, needs, a, b):
    return lambda g: (unbroadcast_to(g, _shape(a)) if needs[0] else None,
                      unbroadcast_to(-g, _shape(b)) if needs[1] else None)


@ufunc_rule("multiply")
def _multiply(out, needs, a, b):
    return lambda g: (unbroadcast_to(g * b, _shape(a)) if needs[0] else None,
                      unbroadcast_to(g * a, _shape(b)) if needs[1] else None)


@ufunc_rule("divide", "true_divide")
def _divide(out, needs, a, b):
    def vjp(g):
        gb = g / b
        return (unbroadcast_to(gb, _shape(a)) if needs[0] else None,
                unbroadcast_to(-gb * out, _shape(b)) if needs[1] else None)
    return vjp


@ufunc_rule("power", "float_power")
def _power(out, needs, a, b):
    def vjp(g):
        ga = gb = None
        if needs[0]:
            with np.errstate(divide="ignore", invalid="ignore"):
                ga = unbroadcast_to(g * b * np.power(a, np.subtract(b, 1)), _shape(a))
        if needs[1]:
            with np.errstate(divide="ignore", invalid="ignore"):
                ln = np.where(np.asarray(a) > 0, np.log(np.where(np.asarray(a) > 0, a, 1)), 0)
            gb = unbroadcast_to(g * out * ln, _shape(b))
        return ga, gb
    return vjp


@ufunc_rule("remainder", "fmod")
def _remainder(out, needs, a, b):
    def vjp(g):
        q = (np.asarray(a) - out) / b  # the integer quotient numpy used
        return (unbroadcast_to(g, _shape(a)) if needs[0] else None,
                unbroadcast_to(-g * q, _shape(b)) if needs[1] else None)
    return vjp


def _select(first_wins):
    """maximum / minimum: the gradient goes to the operand that was selected."""
    def rule(out, needs, a, b):
        def vjp(g):
            if needs[0] and needs[1]:
                mask_a = first_wins(a, b, True)
                return (unbroadcast_to(masked(mask_a, g), _shape(a)),
                        unbroadcast_to(masked(mask_a, g, keep=False), _shape(b)))
            if needs[0]:
                return unbroadcast_to(masked(first_wins(a, b, False), g), _shape(a)), None
            return None, unbroadcast_to(masked(first_wins(b, a, False), g), _shape(b))
        return vjp
    return rule


ufunc_rule("maximum", "fmax")(_select(lambda a, b, tie: np.greater_equal(a, b) if tie else np.greater(a, b)))
ufunc_rule("minimum", "fmin")(_select(lambda a, b, tie: np.less_equal(a, b) if tie else np.less(a, b)))


@ufunc_rule("logaddexp")
def _logaddexp(out, needs, a, b):
    return lambda g: (unbroadcast_to(g * np.exp(np.subtract(a, out)), _shape(a)) if needs[0] else None,
                      unbroadcast_to(g * np.exp(np.subtract(b, out)), _shape(b)) if needs[1] else None)


@ufunc_rule("hypot")
def _hypot(out, needs, a, b):
    return lambda g: (unbroadcast_to(g * a / out, _shape(a)) if needs[0] else None,
                      unbroadcast_to(g * b / out, _shape(b)) if needs[1] else None)


@ufunc_rule("clip")
def _clip_ufunc(out, needs, x, lo, hi):
    def vjp(g):
        inside = np.ones(np.shape(x), bool)
        if lo is not None:
            inside &= np.greater_equal(x, lo)
        if hi is not None:
            inside &= np.less_equal(x, hi)
        return unbroadcast_to(masked(inside, g), _shape(x)), None, None
    return vjp


@ufunc_rule("matmul")
def _matmul(out, needs, a, b):
    a, b = np.asarray(a), np.asarray(b)

    def vjp(g):
        ga = gb = None
        if b.ndim == 1 and a.ndim == 1:
            return (g * b if needs[0] else None), (g * a if needs[1] else None)
        if b.ndim == 1:
            if needs[0]:
                ga = unbroadcast_to(g[..., None] * b, a.shape)
            if needs[1]:
                gb = np.tensordot(a, g, axes=(list(range(a.ndim - 1)), list(range(g.ndim))))
            return ga, gb
        if a.ndim == 1:
            if needs[0]:
                ga = unbroadcast_to(np.matmul(g[..., None, :], np.swapaxes(b, -1, -2))[..., 0, :], a.shape)
            if needs[1]:
                gb = unbroadcast_to(a[:, None] * g[..., None, :], b.shape)
            return ga, gb
        if needs[0]:
            ga = unbroadcast_to(gemm.matmul(g, np.swapaxes(b, -1, -2)), a.shape)
        if needs[1]:
            if a.ndim == 2 and b.ndim == 2:
                gb = gemm.matmul(a.T, g)
            elif b.ndim == 2:  # shared weights: fold the batch axes into one GEMM
                gb = gemm.matmul(a.reshape(-1, a.shape[-1]).T, g.reshape(-1, g.shape[-1]))
            else:
                gb = unbroadcast_to(np.matmul(np.swapaxes(a, -1, -2), g), b.shape)
        return ga, gb
    return vjp
