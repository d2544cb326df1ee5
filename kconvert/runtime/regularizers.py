"""Weight regularizers and constraints as the training step applies them, from the forms layer configs hold them in
(None, a name like 'l2', a Keras config dict, or an object with `__call__`), with tf_keras's defaults and formulas.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import ConfigError

# the weight names (the last part of `layer/<name>:0`) whose regularizer/constraint argument has another name
_ARG_NAMES = {"recurrent_kernel": "recurrent", "depthwise_kernel": "depthwise", "pointwise_kernel": "pointwise"}


def _config(identifier) -> tuple[str, dict]:
    if isinstance(identifier, str):
        return identifier, {}
    if isinstance(identifier, dict) and "class_name" in identifier:
        return identifier["class_name"], dict(identifier.get("config") or {})
    raise ConfigError(f"cannot interpret {identifier!r} as a regularizer or constraint")


def _l1l2(l1: float = 0.0, l2: float = 0.0, **_: Any) -> Callable:
    def penalty(w):
        total = 0.0
        if l1:
            total = total + np.float32(l1) * np.sum(np.abs(w))
        if l2:
            total = total + np.float32(l2) * np.sum(np.square(w))
        return total
    return penalty


# tf_keras's defaults: l1()/l2() 0.01, L1L2() 0.0 each
_REGULARIZERS: dict[str, Callable[..., Callable]] = {
    "l1": lambda **c: _l1l2(l1=c.get("l1", 0.01)), "L1": lambda **c: _l1l2(l1=c.get("l1", 0.01)),
    "l2": lambda **c: _l1l2(l2=c.get("l2", 0.01)), "L2": lambda **c: _l1l2(l2=c.get("l2", 0.01)),
    "l1_l2": lambda **c: _l1l2(c.get("l1", 0.01), c.get("l2", 0.01)),
    "L1L2": lambda **c: _l1l2(c.get("l1", 0.0), c.get("l2", 0.0)),
}


def regularizer(identifier) -> Callable | None:
    """The penalty function `f(weight) -> scalar` of a regularizer argument (None for none)."""
    if identifier is None:
        return None
    if callable(identifier) and not isinstance(identifier, (str, dict)):
        return identifier
    name, config = _config(identifier)
    make = _REGULARIZERS.get(name)
    if make is None:
        raise ConfigError(f"unknown regularizer '{name}'")
    return make(**config)


def _norm(w, axis) -> np.ndarray:
    return np.sqrt(np.sum(np.square(w), axis=axis, keepdims=True))


_EPS = 1e-7  # tf_keras backend.epsilon()


def _max_norm(max_value: float = 2.0, axis: Any = 0, **_: Any) -> Callable:
    def apply(w):
        norms = _norm(w, axis)
        return w * (np.clip(norms, 0, max_value) / (_EPS + norms))
    return apply


def _min_max_norm(min_value: float = 0.0, max_value: float = 1.0, rate: float = 1.0, axis: Any = 0,
                  **_: Any) -> Callable:
    def apply(w):
        norms = _norm(w, axis)
        desired = rate * np.clip(norms, min_value, max_value) + (1 - rate) * norms
        return w * (desired / (_EPS + norms))
    return apply


def _unit_norm(axis: Any = 0, **_: Any) -> Callable:
    return lambda w: w / (_EPS + _norm(w, axis))


def _non_neg(**_: Any) -> Callable:
    return lambda w: w * (w >= 0).astype(w.dtype)


_CONSTRAINTS: dict[str, Callable[..., Callable]] = {
    "max_norm": _max_norm, "MaxNorm": _max_norm, "maxnorm": _max_norm,
    "min_max_norm": _min_max_norm, "MinMaxNorm": _min_max_norm,
    "unit_norm": _unit_norm, "UnitNorm": _unit_norm,
    "non_neg": _non_neg, "NonNeg": _non_neg, "nonneg": _non_neg,
}


def constraint(identifier) -> Callable | None:
    """The projection `f(weight) -> weight` of a constraint argument (None for none)."""
    if identifier is None:
        return None
    if callable(identifier) and not isinstance(identifier, (str, dict)):
        return identifier
    name, config = _config(identifier)
    make = _CONSTRAINTS.get(name)
    if make is None:
        raise ConfigError(f"unknown constraint '{name}'")
    return make(**config)


def weight_argument(layer, weight, kind: str):
    """A layer's `<name>_regularizer` / `<name>_constraint` argument for one of its weights (None if unset)."""
    short = weight.name.rsplit("/", 1)[-1].split(":")[0]
    for name in (short, _ARG_NAMES.get(short, short)):
        value = getattr(layer, f"{name}_{kind}", None)
        if value is not None:
            return value
    return None
