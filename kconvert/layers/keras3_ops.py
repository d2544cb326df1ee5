"""Keras 3 operations applied to symbolic tensors (`x + y`, `x * 2.0`, `keras.ops.mean(x, axis=1)`, ...).

Keras 3 writes them into a functional config's `layers` list as `{module: "keras.src.ops.numpy" | "keras.src.ops.nn",
class_name, config: {name, <the op's constructor arguments>}}`, with every positional call argument (tensors and
constants alike) in the inbound node's `args`. Each supported operation class is one kconvert layer, registered by
`@keras3_op`: a numpy function of the call arguments (tensors as arrays) and the constructor arguments. The layer
is called with the list of positional arguments as its first argument (`CallArgsLayer`), so constants keep their
place. `from_tf_op` gives the Keras 3 operation that computes what a tf.keras `TFOpLambda` computes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .. import ops
from ..errors import ConfigError
from .base import register_layer
from .call_args import CallArgsLayer, unpack_call_args
from .tf_op_layers import _slice_item, infer_specs

KERAS3_OPS: dict[str, type] = {}  # Keras 3 operation class name -> kconvert layer class


class Keras3Op(CallArgsLayer):
    """Base of the Keras 3 operation layers: `call([arg0, arg1, ...], **kwargs)` applies `op`."""

    keras3_operation = True
    keras3_module = "keras.src.ops.numpy"
    keras3_class_name = "Operation"
    registered_name = "Operation"
    op_params: tuple[tuple[str, Any], ...] = ()  # constructor arguments, in Keras 3's config order, with defaults
    supports_masking = False

    def __init__(self, name: str | None = None, **kwargs):
        params = {k: kwargs.pop(k, default) for k, default in self.op_params}
        super().__init__(name=name, **kwargs)
        self.params = params

    keras3_operation = True  # Keras 3 saves no state for operations (they are not in `model.layers`)

    @staticmethod
    def op(*args, **kwargs):  # replaced per class by the registered function
        raise NotImplementedError

    def _apply(self, args, kwargs):
        args = args if isinstance(args, (list, tuple)) else [args]
        kwargs = {k: v for k, v in kwargs.items() if k not in ("mask", "training")}
        try:
            out = type(self).op(*args, **self.params, **kwargs)
        except TypeError as e:
            raise ConfigError(f"cannot apply the Keras 3 operation {self.keras3_class_name} to these arguments: {e}",
                              layer=self.name) from e
        out = np.asarray(out)
        arrays = [a for a in _arrays(args) if a.dtype.kind == "f"]
        if out.dtype == np.float64 and arrays and all(a.dtype != np.float64 for a in arrays):
            out = out.astype(arrays[0].dtype)  # Python float constants are weak in Keras 3
        return out

    def _maybe_build_args(self, first, kwargs) -> None:
        self.built = True  # nothing to build; its arguments are any structure of tensors and constants

    def output_specs(self, first, kwargs):
        return infer_specs(self._apply, first, kwargs)

    @unpack_call_args
    def call(self, inputs, **kwargs):
        return self._apply(inputs, kwargs)

    def compute_mask(self, inputs, mask=None):
        return None

    def get_config(self) -> dict:
        """Keras 3's config of the operation: its name, then its constructor arguments."""
        return {"name": self.name, **self.params}


def _arrays(x) -> list:
    if isinstance(x, np.ndarray):
        return [x]
    if isinstance(x, (list, tuple)):
        return [a for v in x for a in _arrays(v)]
    return []


def keras3_op(class_name: str, module: str = "numpy", params: tuple[tuple[str, Any], ...] = ()):
    """Register `fn(*args, **params)` as the kconvert layer for the Keras 3 operation `class_name`."""

    def deco(fn: Callable) -> Callable:
        cls = type(f"Keras3{class_name}", (Keras3Op,), {
            "__doc__": f"Keras 3's `keras.src.ops.{module}.{class_name}` operation.",
            "__module__": __name__, "keras3_module": f"keras.src.ops.{module}", "keras3_class_name": class_name,
            "registered_name": class_name, "op_params": params, "op": staticmethod(fn)})
        register_layer()(cls)
        KERAS3_OPS[class_name] = cls
        return fn

    return deco


def _axis(axis):
    return tuple(axis) if isinstance(axis, list) else axis


_AXIS_KEEPDIMS = (("axis", None), ("keepdims", False))
_AXIS_KEEPDIMS_INITIAL = (*_AXIS_KEEPDIMS, ("initial", None))

for _name, _fn in [("Add", np.add), ("Subtract", np.subtract), ("Multiply", np.multiply),
                   ("Maximum", np.maximum), ("Minimum", np.minimum), ("Power", np.power),
                   ("Divide", np.true_divide), ("TrueDivide", np.true_divide)]:
    keras3_op(_name)(lambda x, y, _f=_fn: _f(np.asarray(x), np.asarray(y)))

for _name, _fn in [("Negative", np.negative), ("Absolute", np.abs), ("Exp", np.exp), ("Log", np.log),
                   ("Sqrt", np.sqrt), ("Square", np.square), ("Tanh", np.tanh)]:
    keras3_op(_name)(lambda x, _f=_fn: _f(np.asarray(x)))

for _name, _fn in [("Mean", np.mean), ("Sum", np.sum)]:
    keras3_op(_name, params=_AXIS_KEEPDIMS)(
        lambda x, axis=None, keepdims=False, _f=_fn: _f(np.asarray(x), axis=_axis(axis), keepdims=keepdims))

for _name, _fn in [("Max", np.max), ("Min", np.min)]:
    keras3_op(_name, params=_AXIS_KEEPDIMS_INITIAL)(
        lambda x, axis=None, keepdims=False, initial=None, _f=_fn: _f(
            np.asarray(x), axis=_axis(axis), keepdims=keepdims, **({} if initial is None else {"initial": initial})))


@keras3_op("Relu", "nn")
def _relu(x):
    return ops.relu(np.asarray(x))


@keras3_op("Relu6", "nn")
def _relu6(x):
    return np.clip(np.asarray(x), 0, 6)


@keras3_op("Sigmoid", "nn")
def _sigmoid(x):
    return ops.sigmoid(np.asarray(x))


@keras3_op("Silu", "nn")
def _silu(x):
    x = np.asarray(x)
    return x * ops.sigmoid(x)


@keras3_op("HardSigmoid", "nn")
def _hard_sigmoid(x):
    x = np.asarray(x)
    return np.clip(x + 3, 0, 6) / 6  # Keras 3: relu6(x + 3) / 6


@keras3_op("HardSilu", "nn")
def _hard_silu(x):
    x = np.asarray(x)
    return x * _hard_sigmoid(x)


@keras3_op("Softmax", "nn", params=(("axis", -1),))
def _softmax(x, axis=-1):
    x = np.asarray(x)
    return ops.softmax(x, axis)


@keras3_op("Reshape", params=(("newshape", None),))
def _reshape(x, newshape=None):
    return np.reshape(np.asarray(x), newshape)


@keras3_op("Transpose", params=(("axes", None),))
def _transpose(x, axes=None):
    return np.transpose(np.asarray(x), axes)


@keras3_op("Concatenate", params=(("axis", 0),))
def _concatenate(xs, axis=0):
    return np.concatenate([np.asarray(x) for x in xs], axis=axis)


@keras3_op("Stack", params=(("axis", 0),))
def _stack(xs, axis=0):
    return np.stack([np.asarray(x) for x in xs], axis=axis)


@keras3_op("ExpandDims", params=(("axis", None),))
def _expand_dims(x, axis=None):
    return np.expand_dims(np.asarray(x), _axis(axis))


@keras3_op("Squeeze", params=(("axis", None),))
def _squeeze(x, axis=None):
    return np.squeeze(np.asarray(x), _axis(axis))


@keras3_op("GetItem")
def _get_item(x, key):
    key = key if isinstance(key, (list, tuple)) else [key]
    return np.asarray(np.asarray(x)[tuple(k if isinstance(k, slice) else _slice_item(k) for k in key)])


# ---------------------------------------------------------------------------------------------- from tf.keras

# TFOpLambda function -> (Keras 3 operation, the TF argument names of its tensor arguments, {TF name: Keras 3
# name} of its constructor arguments)
_BINARY = ("x", "y")
TF_TO_KERAS3: dict[str, tuple[str, tuple[str, ...], dict[str, str]]] = {
    **{f: ("Add", _BINARY, {}) for f in ("__operators__.add", "math.add", "add", "math.add_v2")},
    **{f: ("Subtract", _BINARY, {}) for f in ("math.subtract", "subtract", "__operators__.sub")},
    **{f: ("Multiply", _BINARY, {}) for f in ("math.multiply", "multiply", "__operators__.mul")},
    **{f: ("TrueDivide", _BINARY, {}) for f in ("math.truediv", "math.divide", "divide", "truediv",
                                                 "__operators__.truediv")},
    "math.maximum": ("Maximum", _BINARY, {}), "math.minimum": ("Minimum", _BINARY, {}),
    **{f"math.{f}": (k, ("x",), {}) for f, k in (("negative", "Negative"), ("abs", "Absolute"), ("exp", "Exp"),
                                                 ("log", "Log"), ("sqrt", "Sqrt"), ("square", "Square"),
                                                 ("sigmoid", "Sigmoid"), ("tanh", "Tanh"))},
    "nn.relu": ("Relu", ("features",), {}), "nn.relu6": ("Relu6", ("features",), {}),
    "nn.sigmoid": ("Sigmoid", ("x",), {}), "nn.tanh": ("Tanh", ("x",), {}),
    "nn.swish": ("Silu", ("features",), {}), "nn.silu": ("Silu", ("features",), {}),
    "nn.softmax": ("Softmax", ("logits",), {"axis": "axis"}),
    **{f"math.reduce_{f}": (k, ("input_tensor",), {"axis": "axis", "keepdims": "keepdims"})
       for f, k in (("mean", "Mean"), ("sum", "Sum"), ("max", "Max"), ("min", "Min"))},
    "reshape": ("Reshape", ("tensor",), {"shape": "newshape"}),
    **{f: ("Transpose", ("a",), {"perm": "axes"}) for f in ("transpose", "compat.v1.transpose")},
    "concat": ("Concatenate", ("values",), {"axis": "axis"}),
    "expand_dims": ("ExpandDims", ("input",), {"axis": "axis"}),
    **{f: ("Squeeze", ("input",), {"axis": "axis"}) for f in ("squeeze", "compat.v1.squeeze")},
    "__operators__.getitem": ("GetItem", ("tensor", "slice_spec"), {}),
}
_IGNORED_TF_ARGS = {"name", "var"}


def from_tf_op(function: str, first: Any, kwargs: dict, name: str) -> tuple[Keras3Op, list, dict] | None:
    """(the Keras 3 operation, its positional call arguments, its call kwargs) computing the TFOpLambda call
    `tf.<function>(first, **kwargs)` (tensors stay as they are given), or None if kconvert knows no mapping."""
    symbol = function[3:] if function.startswith("tf.") else function
    spec = TF_TO_KERAS3.get(symbol)
    if spec is None:
        return None
    class_name, tensor_args, param_names = spec
    given = dict(kwargs)
    if given.get("conjugate") is False:  # transpose of real numbers
        given.pop("conjugate")
    if given.get("squeeze_dims") is not None and given.get("axis") is None:  # compat.v1.squeeze's old name
        given["axis"] = given.pop("squeeze_dims")
    given.pop("squeeze_dims", None)
    given.setdefault(tensor_args[0], first)
    extra = set(given) - set(tensor_args) - set(param_names) - _IGNORED_TF_ARGS
    if extra or any(a not in given for a in tensor_args):
        return None
    args = [given[a] for a in tensor_args]
    if class_name == "GetItem":
        spec_ = args[1] if isinstance(args[1], (list, tuple)) else [args[1]]
        args[1] = [_slice_item(s) for s in spec_]
    params = {new: given[old] for old, new in param_names.items() if old in given}
    if class_name == "Concatenate":
        args, params = [list(args[0])], {"axis": params.get("axis", 0)}
    if class_name in ("Max", "Min", "Mean", "Sum") and isinstance(params.get("axis"), tuple):
        params["axis"] = list(params["axis"])
    return KERAS3_OPS[class_name](name=name, **params), args, {}
