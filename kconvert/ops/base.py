"""The op registry: each primitive op is one class holding its numpy kernel, gradient and ONNX emission."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

OPS: dict[str, type[Op]] = {}


class Op:
    """A primitive tensor operation.

    `forward` is the numpy kernel. `backward(grad, inputs, output, **attrs)` returns one gradient per
    input (None where the input is not differentiable). `to_onnx(builder, inputs, **attrs)` emits ONNX
    nodes computing the op from the named `inputs` and returns the output's name. Ops that do not
    (yet) have a gradient or an emission simply leave the defaults, which raise.
    """

    name: ClassVar[str] = ""

    @staticmethod
    def forward(*inputs: np.ndarray, **attrs: Any) -> np.ndarray:
        raise NotImplementedError

    @staticmethod
    def backward(grad: np.ndarray, inputs: tuple, output: np.ndarray, **attrs: Any) -> tuple:
        raise NotImplementedError("no gradient defined")

    @staticmethod
    def to_onnx(builder, inputs: list[str], **attrs: Any) -> str:
        raise NotImplementedError("no ONNX emission defined")


def register(cls: type[Op]) -> type[Op]:
    """Class decorator adding an op to the registry under `cls.name`."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    OPS[cls.name] = cls
    return cls


def traceable(fn: Callable) -> Callable:
    """Hand a call with a traced value among its first two arguments to the ONNX tracer
    (converters/onnx_lowering/trace.py), for ops whose numpy kernel cannot be traced (masked assignment,
    im2col views) or that have a native ONNX op.

    A traced value's class has `__kconvert_trace__(value, name, fn, args, kwargs)`; for arrays `fn` runs as is.
    """
    name = fn.__name__

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        for a in args[:2]:
            hook = getattr(type(a), "__kconvert_trace__", None)
            if hook is not None:
                return hook(a, name, fn, args, kwargs)
        return fn(*args, **kwargs)

    return wrapper


def get(name: str) -> type[Op]:
    return OPS[name]


def unbroadcast(grad: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum a broadcast gradient back down to `shape` (numpy broadcasting rules)."""
    while grad.ndim > len(shape):
        grad = grad.sum(axis=0)
    for axis, size in enumerate(shape):
        if size == 1 and grad.shape[axis] != 1:
            grad = grad.sum(axis=axis, keepdims=True)
    return grad
