"""TensorFlow ops that tf.keras wrapped into layers automatically, and calls with tensors in any argument.

`TFOpLambda` / `SlicingOpLambda` (TF >= 2.4) name a TensorFlow API symbol (`math.add`, `nn.relu`, `reshape`,
`__operators__.getitem`, ...) and take the op's other arguments from the inbound node's call kwargs, where
tensors appear as `[layer, node, tensor]` and a constant first argument as `_CONSTANT_VALUE`.
`TensorFlowOpLayer` (TF 2.0-2.3) carries a serialized NodeDef with its constant inputs.
Each supported symbol / op is a numpy function found through a registry; any other raises a ConfigError
naming it.
They are `CallArgsLayer`s (call_args.py): TF ops take tensors in any argument.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import ops
from ..errors import ConfigError
from ..ops.array_module import const
from .base import register_layer
from .call_args import CallArgsLayer, Spec, map_structure, unpack_call_args

# ---------------------------------------------------------------------------------------------- TF functions

TF_FUNCTIONS: dict[str, Callable] = {}


def tf_function(*names: str) -> Callable[[Callable], Callable]:
    """Register a numpy implementation of a TensorFlow API symbol; its parameters carry TF's names."""

    def deco(fn):
        for n in names:
            TF_FUNCTIONS[n] = fn
        return fn

    return deco


def _tensor_dtype(*args):
    for a in args:
        if isinstance(a, np.ndarray):
            return a.dtype
    return None


def _as(v, dtype):
    """A constant argument as an array of the tensor's dtype (TensorFlow converts constants that way)."""
    if isinstance(v, np.ndarray) or dtype is None:
        return np.asarray(v)
    return np.asarray(v, dtype=dtype)


def _pair(x, y):
    dtype = _tensor_dtype(x, y)
    return _as(x, dtype), _as(y, dtype)


def _binary(fn: Callable) -> Callable:
    def op(x, y, name=None):
        a, b = _pair(x, y)
        return fn(a, b)

    return op


def _unary(fn: Callable, arg: str = "x") -> Callable:
    def op(*args, name=None, **kwargs):
        x = args[0] if args else kwargs.pop(arg)
        if kwargs:
            raise TypeError(f"unexpected arguments {sorted(kwargs)}")
        x = np.asarray(x)
        return np.asarray(fn(x)).astype(x.dtype, copy=False) if x.dtype.kind == "f" else np.asarray(fn(x))

    return op


for _names, _fn in [
    (("math.add", "__operators__.add", "add", "math.add_v2"), np.add),
    (("math.subtract", "subtract"), np.subtract),
    (("math.multiply", "multiply"), np.multiply),
    (("math.maximum", "maximum"), np.maximum),
    (("math.minimum", "minimum"), np.minimum),
    (("math.squared_difference",), lambda a, b: np.square(a - b)),
    (("math.floormod", "math.mod", "floormod", "mod"), np.mod),
    (("math.floordiv", "compat.v1.floor_div", "floordiv", "floor_div"), np.floor_divide),
    (("math.pow", "pow"), np.power),
    (("math.greater",), np.greater), (("math.greater_equal",), np.greater_equal),
    (("math.less",), np.less), (("math.less_equal",), np.less_equal),
    (("math.equal", "equal"), np.equal), (("math.not_equal", "not_equal"), np.not_equal),
    (("math.logical_and",), np.logical_and), (("math.logical_or",), np.logical_or),
    (("math.logical_xor",), np.logical_xor),
]:
    tf_function(*_names)(_binary(_fn))


def _truediv(a, b):
    if a.dtype.kind in "iu":  # TensorFlow divides integers of up to 32 bits in float64
        a, b = a.astype(np.float64), b.astype(np.float64)
    return np.true_divide(a, b)


def _divide_no_nan(a, b):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b == 0, np.zeros((), a.dtype), a / np.where(b == 0, np.ones((), b.dtype), b)).astype(a.dtype)


tf_function("math.truediv", "math.divide", "divide", "truediv", "realdiv", "math.real_div")(_binary(_truediv))
tf_function("math.divide_no_nan", "div_no_nan")(_binary(_divide_no_nan))


def _relu6(x):
    return np.clip(x, 0, 6)


for _names, _fn, _arg in [
    (("math.negative", "negative"), np.negative, "x"),
    (("math.abs", "abs"), np.abs, "x"),
    (("math.square", "square"), np.square, "x"),
    (("math.sqrt", "sqrt"), np.sqrt, "x"),
    (("math.rsqrt", "rsqrt"), ops.rsqrt, "x"),
    (("math.exp", "exp"), np.exp, "x"),
    (("math.log", "log"), np.log, "x"),
    (("math.log1p",), np.log1p, "x"),
    (("math.expm1",), np.expm1, "x"),
    (("math.reciprocal",), np.reciprocal, "x"),
    (("math.sign", "sign"), np.sign, "x"),
    (("math.floor", "floor"), np.floor, "x"),
    (("math.ceil",), np.ceil, "x"),
    (("math.round", "round"), np.round, "x"),  # banker's rounding, as TensorFlow
    (("math.sin",), np.sin, "x"), (("math.cos",), np.cos, "x"),
    (("math.tanh", "tanh", "nn.tanh"), np.tanh, "x"),
    (("math.sigmoid", "sigmoid", "nn.sigmoid"), ops.sigmoid, "x"),
    (("math.erf",), ops.erf, "x"),
    (("math.softplus", "nn.softplus"), ops.softplus, "features"),
    (("math.softsign", "nn.softsign"), ops.softsign, "features"),
    (("math.logical_not",), np.logical_not, "x"),
    (("nn.relu",), ops.relu, "features"),
    (("nn.relu6",), _relu6, "features"),
    (("nn.elu",), ops.elu, "features"),
    (("nn.selu",), ops.selu, "features"),
    (("identity", "stop_gradient"), lambda x: x, "input"),
]:
    tf_function(*_names)(_unary(_fn, _arg))


@tf_function("nn.gelu")
def _gelu(features, approximate=False, name=None):
    return ops.gelu(np.asarray(features), approximate=bool(approximate))


@tf_function("nn.silu", "nn.swish")
def _silu(features, beta=1.0, name=None):
    x = np.asarray(features)
    return (x * ops.sigmoid(x * const(beta, x.dtype, like=x))).astype(x.dtype, copy=False)


@tf_function("nn.leaky_relu")
def _leaky_relu(features, alpha=0.2, name=None):
    x = np.asarray(features)
    return np.where(x > 0, x, const(alpha, x.dtype, like=x) * x).astype(x.dtype, copy=False)


@tf_function("nn.softmax", "math.softmax")
def _softmax(logits, axis=None, name=None, dim=None):
    x = np.asarray(logits)
    axis = dim if axis is None else axis
    return ops.softmax(x, -1 if axis is None else axis).astype(x.dtype, copy=False)


@tf_function("nn.log_softmax", "math.log_softmax")
def _log_softmax(logits, axis=None, name=None, dim=None):
    x = np.asarray(logits)
    return ops.log_softmax(x, -1 if axis is None else axis).astype(x.dtype, copy=False)


@tf_function("math.l2_normalize", "nn.l2_normalize", "linalg.l2_normalize")
def _l2_normalize(x, axis=None, epsilon=1e-12, name=None, dim=None):
    x = np.asarray(x)
    axis = dim if axis is None else axis
    axes = tuple(axis) if isinstance(axis, (list, tuple)) else axis
    sq = np.sum(np.square(x), axis=axes, keepdims=True)
    return (x * ops.rsqrt(np.maximum(sq, const(epsilon, x.dtype)))).astype(x.dtype, copy=False)


def _dtype_name(dtype) -> str:
    if isinstance(dtype, dict):  # a serialized tf.DType
        dtype = dtype.get("config", {}).get("name", dtype.get("name"))
    name = str(dtype)
    return {"float": "float32", "double": "float64", "half": "float16"}.get(name, name)


@tf_function("cast", "dtypes.cast")
def _cast(x, dtype, name=None):
    x = np.asarray(x)
    name = _dtype_name(dtype)
    if name == "bfloat16":
        raise ValueError("casting to bfloat16 is not supported")
    out = x.astype(name)
    if x.dtype.kind == "f" and out.dtype.kind in "iu":
        out = np.trunc(x).astype(name)
    return out


@tf_function("clip_by_value")
def _clip_by_value(t, clip_value_min, clip_value_max, name=None):
    x = np.asarray(t)
    return np.minimum(np.maximum(x, _as(clip_value_min, x.dtype)), _as(clip_value_max, x.dtype))


def _axes(axis, keep_dims=None, reduction_indices=None):
    axis = reduction_indices if axis is None else axis
    if axis is None:
        return None
    if isinstance(axis, np.ndarray):
        axis = axis.tolist()
    return tuple(axis) if isinstance(axis, (list, tuple)) else int(axis)


def _reduction(fn: Callable) -> Callable:
    def op(input_tensor, axis=None, keepdims=None, name=None, reduction_indices=None, keep_dims=None):
        x = np.asarray(input_tensor)
        keep = bool(keepdims if keepdims is not None else (keep_dims or False))
        out = np.asarray(fn(x, axis=_axes(axis, reduction_indices=reduction_indices), keepdims=keep))
        return out.astype(x.dtype, copy=False) if x.dtype.kind == "f" else out

    return op


for _names, _fn in [
    (("math.reduce_mean", "reduce_mean", "compat.v1.reduce_mean"), np.mean),
    (("math.reduce_sum", "reduce_sum", "compat.v1.reduce_sum"), np.sum),
    (("math.reduce_max", "reduce_max", "compat.v1.reduce_max"), np.max),
    (("math.reduce_min", "reduce_min", "compat.v1.reduce_min"), np.min),
    (("math.reduce_prod", "reduce_prod", "compat.v1.reduce_prod"), np.prod),
    (("math.reduce_any", "reduce_any", "compat.v1.reduce_any"), np.any),
    (("math.reduce_all", "reduce_all", "compat.v1.reduce_all"), np.all),
    (("math.reduce_variance",), np.var), (("math.reduce_std",), np.std),
    (("math.reduce_logsumexp", "reduce_logsumexp", "compat.v1.reduce_logsumexp"),
     lambda x, axis, keepdims: ops.logsumexp(x, axis=axis, keepdims=keepdims)),
]:
    tf_function(*_names)(_reduction(_fn))


def _arg_extreme(fn):
    def op(input, axis=None, output_type="int64", name=None, dimension=None):  # noqa: A002 - TF's name
        x = np.asarray(input)
        axis = dimension if axis is None else axis
        return fn(x, axis=0 if axis is None else int(axis)).astype(_dtype_name(output_type))

    return op


tf_function("math.argmax", "argmax")(_arg_extreme(np.argmax))
tf_function("math.argmin", "argmin")(_arg_extreme(np.argmin))


@tf_function("math.cumsum", "cumsum")
def _cumsum(x, axis=0, exclusive=False, reverse=False, name=None):
    x = np.asarray(x)
    y = np.flip(x, axis) if reverse else x
    out = np.cumsum(y, axis=axis, dtype=x.dtype)
    if exclusive:
        out = np.concatenate([np.zeros_like(np.take(out, [0], axis)), np.take(out, range(out.shape[axis] - 1), axis)],
                             axis)
    return np.flip(out, axis) if reverse else out


@tf_function("reshape")
def _reshape(tensor, shape, name=None):
    return np.reshape(tensor, [int(s) for s in np.asarray(shape).reshape(-1)])


@tf_function("compat.v1.transpose", "transpose", "linalg.matrix_transpose", "linalg.transpose")
def _transpose(a, perm=None, name=None, conjugate=False):
    x = np.asarray(a)
    if perm is None:
        return np.transpose(x)
    return np.transpose(x, [int(p) for p in np.asarray(perm).reshape(-1)])


@tf_function("concat")
def _concat(values, axis, name=None):
    values = list(values) if isinstance(values, (list, tuple)) else [values]
    dtype = _tensor_dtype(*values)
    return np.concatenate([_as(v, dtype) for v in values], axis=int(axis))


@tf_function("stack")
def _stack(values, axis=0, name=None):
    dtype = _tensor_dtype(*values)
    return np.stack([_as(v, dtype) for v in values], axis=int(axis))


@tf_function("unstack")
def _unstack(value, num=None, axis=0, name=None):
    x = np.asarray(value)
    return [np.take(x, i, axis=int(axis)) for i in range(x.shape[int(axis)])]


@tf_function("split")
def _split(value, num_or_size_splits, axis=0, num=None, name=None):
    x = np.asarray(value)
    if isinstance(num_or_size_splits, (int, np.integer)):
        return np.split(x, int(num_or_size_splits), axis=int(axis))
    sizes = [int(s) for s in num_or_size_splits]
    if -1 in sizes:
        sizes[sizes.index(-1)] = x.shape[int(axis)] - (sum(sizes) + 1)
    return np.split(x, np.cumsum(sizes)[:-1], axis=int(axis))


@tf_function("expand_dims", "compat.v1.expand_dims")
def _expand_dims(input, axis=None, name=None, dim=None):  # noqa: A002
    return np.expand_dims(input, int(dim if axis is None else axis))


@tf_function("compat.v1.squeeze", "squeeze")
def _squeeze(input, axis=None, name=None, squeeze_dims=None):  # noqa: A002
    axis = squeeze_dims if axis is None else axis
    x = np.asarray(input)
    if axis is None or axis == []:
        return np.squeeze(x)
    return np.squeeze(x, axis=tuple(axis) if isinstance(axis, (list, tuple)) else int(axis))


@tf_function("tile")
def _tile(input, multiples, name=None):  # noqa: A002
    return np.tile(input, [int(m) for m in np.asarray(multiples).reshape(-1)])


@tf_function("linalg.matmul", "matmul")
def _matmul(a, b, transpose_a=False, transpose_b=False, adjoint_a=False, adjoint_b=False, a_is_sparse=False,
            b_is_sparse=False, output_type=None, grad_a=False, grad_b=False, name=None):
    a, b = _pair(a, b)
    if transpose_a or adjoint_a:
        a = np.swapaxes(a, -1, -2)
    if transpose_b or adjoint_b:
        b = np.swapaxes(b, -1, -2)
    return np.matmul(a, b)


@tf_function("where", "where_v2")
def _where(condition, x=None, y=None, name=None):
    if x is None and y is None:
        raise ValueError("tf.where with only a condition (indices of true elements) is not supported")
    x, y = _pair(x, y)
    return np.where(np.asarray(condition, bool), x, y)


@tf_function("compat.v1.shape", "shape")
def _shape(input, out_type="int32", name=None, optimize=True):  # noqa: A002
    return np.asarray(np.shape(input), dtype=_dtype_name(out_type or "int32"))


def _like(value):
    def op(input, dtype=None, name=None, optimize=True):  # noqa: A002
        x = np.asarray(input)
        return np.full(x.shape, value, dtype=_dtype_name(dtype) if dtype is not None else x.dtype)

    return op


TF_FUNCTIONS.update({"ones_like": _like(1), "compat.v1.ones_like": _like(1), "zeros_like": _like(0),
                     "compat.v1.zeros_like": _like(0)})


@tf_function("math.add_n", "add_n")
def _add_n(inputs, name=None):
    out = np.asarray(inputs[0])
    for v in inputs[1:]:
        out = out + _as(v, out.dtype)
    return out


@tf_function("pad", "compat.v1.pad")
def _pad(tensor, paddings, mode="CONSTANT", constant_values=0, name=None):
    x = np.asarray(tensor)
    pads = [tuple(int(v) for v in p) for p in np.asarray(paddings).reshape(-1, 2)]
    mode = str(mode).upper()
    if mode == "CONSTANT":
        return np.pad(x, pads, constant_values=const(constant_values, x.dtype))
    if mode == "REFLECT":
        return np.pad(x, pads, mode="reflect")
    if mode == "SYMMETRIC":
        return np.pad(x, pads, mode="symmetric")
    raise ValueError(f"unknown padding mode '{mode}'")


@tf_function("gather", "compat.v1.gather")
def _gather(params, indices, validate_indices=None, axis=None, batch_dims=0, name=None):
    if batch_dims:
        raise ValueError("tf.gather with batch_dims is not supported")
    idx = np.asarray(indices)
    return np.take(np.asarray(params), idx.astype(np.intp), axis=0 if axis is None else int(axis))


@tf_function("nn.bias_add")
def _bias_add(value, bias, data_format=None, name=None):
    x, b = _pair(value, bias)
    if data_format is not None and str(data_format).startswith("NC"):
        return x + b.reshape((1, -1) + (1,) * (x.ndim - 2))
    return x + b


def strided_slice_index(begin, end, strides=None, begin_mask=0, end_mask=0, ellipsis_mask=0, new_axis_mask=0,
                        shrink_axis_mask=0) -> tuple:
    """The numpy index that `tf.strided_slice` with these arguments selects."""
    begin = [int(v) for v in np.asarray(begin).reshape(-1)]
    end = [int(v) for v in np.asarray(end).reshape(-1)]
    strides = [1] * len(begin) if strides is None else [int(v) for v in np.asarray(strides).reshape(-1)]
    index: list = []
    for i, (b, e, s) in enumerate(zip(begin, end, strides)):
        bit = 1 << i
        if ellipsis_mask & bit:
            index.append(Ellipsis)
        elif new_axis_mask & bit:
            index.append(None)
        elif shrink_axis_mask & bit:
            index.append(b)
        else:
            index.append(slice(None if begin_mask & bit else b, None if end_mask & bit else e, s))
    return tuple(index)


@tf_function("strided_slice")
def _strided_slice(input_, begin, end, strides=None, begin_mask=0, end_mask=0, ellipsis_mask=0, new_axis_mask=0,
                   shrink_axis_mask=0, var=None, name=None):
    index = strided_slice_index(begin, end, strides, int(begin_mask), int(end_mask), int(ellipsis_mask),
                                int(new_axis_mask), int(shrink_axis_mask))
    return np.asarray(np.asarray(input_)[index])


@tf_function("slice")
def _slice(input_, begin, size, name=None):
    x = np.asarray(input_)
    begin = [int(v) for v in np.asarray(begin).reshape(-1)]
    size = [int(v) for v in np.asarray(size).reshape(-1)]
    return x[tuple(slice(b, x.shape[i] if s == -1 else b + s) for i, (b, s) in enumerate(zip(begin, size)))]


def _slice_item(item):
    """One element of a serialized `slice_spec` as a numpy index element."""
    if isinstance(item, dict):
        if item.get("class_name") == "__ellipsis__":
            return Ellipsis
        if set(item) <= {"start", "stop", "step"}:
            return slice(*(None if item.get(k) is None else int(np.asarray(item[k])) for k in ("start", "stop", "step")))
        raise ValueError(f"unsupported slice element {item!r}")
    if item is Ellipsis or item == "...":
        return Ellipsis
    if item is None:
        return None
    if isinstance(item, np.ndarray) and item.dtype == bool:
        raise ValueError("boolean mask indexing is not supported")
    return int(np.asarray(item))


@tf_function("__operators__.getitem")
def _getitem(tensor, slice_spec, var=None):
    spec = slice_spec if isinstance(slice_spec, (list, tuple)) else [slice_spec]
    return np.asarray(np.asarray(tensor)[tuple(_slice_item(s) for s in spec)])


# ---------------------------------------------------------------------------------------------- shape inference


def infer_specs(fn: Callable[[Any, dict], Any], first, kwargs):
    """Output Spec(s) of `fn(first, kwargs)` by running it on arrays of ones.

    Unknown dimensions get two different stand-in sizes; output dimensions that differ between the two runs
    are unknown. A function that fails for small stand-ins (a reshape to (-1, k)) is retried with larger ones.
    """
    runs = []
    for sizes in ((2, 3), (60, 120)):
        try:
            runs = [_run_on_ones(fn, first, kwargs, s) for s in sizes]
            break
        except (ValueError, IndexError, TypeError) as e:
            err = e
    if not runs:
        raise err
    a, b = runs
    multi = isinstance(a, list)
    a, b = (a, b) if multi else ([a], [b])
    specs = [Spec(tuple(d if d == e else None for d, e in zip(x.shape, y.shape)), str(x.dtype)) for x, y in zip(a, b)]
    return specs if multi else specs[0]


def _run_on_ones(fn, first, kwargs, size):
    def fill(s):
        if isinstance(s, Spec):
            return np.ones(tuple(size if d is None else d for d in s.shape), dtype=s.dtype)
        return s

    with np.errstate(all="ignore"):
        out = fn(map_structure(first, fill), map_structure(kwargs, fill))
    return [np.asarray(o) for o in out] if isinstance(out, (list, tuple)) else np.asarray(out)


# ---------------------------------------------------------------------------------------------- layers


@register_layer()
class TFOpLambda(CallArgsLayer):
    """A TensorFlow API function applied to tensors (tf.keras >= 2.4 wraps `tf.*` calls and Python operators)."""

    keras_module = "tf_keras.src.layers.core.tf_op_layer"
    registered_name = "TFOpLambda"
    preserve_input_structure = True

    def __init__(self, function: str, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(function, str):
            raise ConfigError(f"{type(self).__name__} needs the name of a TensorFlow function, got {function!r}",
                              layer=self.name)
        symbol = function[3:] if function.startswith("tf.") else function
        if symbol not in TF_FUNCTIONS:
            raise ConfigError(f"the TensorFlow function 'tf.{symbol}' is not supported by kconvert; supported: "
                              f"{', '.join(sorted(TF_FUNCTIONS))}", layer=self.name)
        self.function = function
        self._fn = TF_FUNCTIONS[symbol]

    def build_args(self, first, kwargs) -> None:
        pass

    def _apply(self, first, kwargs):
        kwargs = {k: v for k, v in kwargs.items() if k != "name"}
        try:
            return self._fn(first, **kwargs)
        except TypeError as e:
            raise ConfigError(f"cannot call tf.{self.function} with arguments {sorted(kwargs)}: {e}",
                              layer=self.name) from e

    def output_specs(self, first, kwargs):
        return infer_specs(self._apply, first, kwargs)

    @unpack_call_args
    def call(self, inputs, **kwargs):
        kwargs.pop("mask", None)
        kwargs.pop("training", None)
        return self._apply(inputs, kwargs)

    def compute_mask(self, inputs, mask=None):
        return None

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable, "dtype": self._dtype_config, "function": self.function}


@register_layer()
class SlicingOpLambda(TFOpLambda):
    """`x[...]` on a KerasTensor: `tf.__operators__.getitem` with the serialized `slice_spec`."""

    registered_name = "SlicingOpLambda"


# ---------------------------------------------------------------------------------------------- TensorFlowOpLayer

_DT = {"DT_FLOAT": "float32", "DT_DOUBLE": "float64", "DT_HALF": "float16", "DT_INT32": "int32",
       "DT_INT64": "int64", "DT_INT16": "int16", "DT_INT8": "int8", "DT_UINT8": "uint8", "DT_BOOL": "bool",
       "DT_UINT16": "uint16", "DT_UINT32": "uint32", "DT_UINT64": "uint64"}


def _attr(attrs: dict, name: str, default: Any = None) -> Any:
    """A NodeDef attr value in its JSON (MessageToDict) form as a Python value."""
    a = attrs.get(name)
    if a is None:
        return default
    if "i" in a:
        return int(a["i"])
    if "f" in a:
        return float(a["f"])
    if "b" in a:
        return bool(a["b"])
    if "type" in a:
        return _DT.get(a["type"], a["type"])
    if "s" in a:
        return base64.b64decode(a["s"]).decode()
    if "list" in a:
        lst = a["list"]
        if "i" in lst:
            return [int(v) for v in lst["i"]]
        if "f" in lst:
            return [float(v) for v in lst["f"]]
        return []
    return default


RAW_OPS: dict[str, Callable[[list, dict], Any]] = {}


def raw_op(*names: str) -> Callable[[Callable], Callable]:
    """Register a numpy implementation of a TensorFlow graph op: fn(inputs, attrs)."""

    def deco(fn):
        for n in names:
            RAW_OPS[n] = fn
        return fn

    return deco


def _via(symbol: str, *attr_args: tuple[str, str, Any]) -> Callable:
    """A raw op computed by a registered TF function on its inputs (and some attrs as keyword arguments)."""
    fn = TF_FUNCTIONS[symbol]

    def op(inputs, attrs):
        return fn(*inputs, **{kw: _attr(attrs, a, d) for a, kw, d in attr_args})

    return op


for _op, _sym in [("Identity", "identity"), ("StopGradient", "identity"), ("Relu", "nn.relu"),
                  ("Relu6", "nn.relu6"), ("Elu", "nn.elu"), ("Selu", "nn.selu"), ("Sigmoid", "math.sigmoid"),
                  ("Tanh", "math.tanh"), ("Exp", "math.exp"), ("Log", "math.log"), ("Log1p", "math.log1p"),
                  ("Sqrt", "math.sqrt"), ("Rsqrt", "math.rsqrt"), ("Square", "math.square"), ("Neg", "math.negative"),
                  ("Abs", "math.abs"), ("Sign", "math.sign"), ("Floor", "math.floor"), ("Ceil", "math.ceil"),
                  ("Round", "math.round"), ("Reciprocal", "math.reciprocal"), ("Inv", "math.reciprocal"),
                  ("Softplus", "math.softplus"), ("Softsign", "math.softsign"), ("Erf", "math.erf"),
                  ("Sin", "math.sin"), ("Cos", "math.cos"), ("LogicalNot", "math.logical_not"),
                  ("Add", "math.add"), ("AddV2", "math.add"), ("Sub", "math.subtract"), ("Mul", "math.multiply"),
                  ("RealDiv", "math.truediv"), ("Div", "math.truediv"), ("FloorDiv", "math.floordiv"),
                  ("FloorMod", "math.floormod"), ("Pow", "math.pow"), ("Maximum", "math.maximum"),
                  ("Minimum", "math.minimum"), ("SquaredDifference", "math.squared_difference"),
                  ("Greater", "math.greater"), ("GreaterEqual", "math.greater_equal"), ("Less", "math.less"),
                  ("LessEqual", "math.less_equal"), ("Equal", "math.equal"), ("NotEqual", "math.not_equal"),
                  ("LogicalAnd", "math.logical_and"), ("LogicalOr", "math.logical_or"),
                  ("DivNoNan", "math.divide_no_nan"), ("Reshape", "reshape"), ("Transpose", "transpose"),
                  ("ExpandDims", "expand_dims"), ("Tile", "tile"), ("Slice", "slice"), ("ZerosLike", "zeros_like"),
                  ("OnesLike", "ones_like"), ("ClipByValue", "clip_by_value"), ("Pad", "pad"), ("PadV2", "pad"),
                  ("Softmax", "nn.softmax"), ("LogSoftmax", "nn.log_softmax")]:
    raw_op(_op)(_via(_sym))

raw_op("LeakyRelu")(_via("nn.leaky_relu", ("alpha", "alpha", 0.2)))
raw_op("Squeeze")(_via("squeeze", ("squeeze_dims", "axis", None)))
raw_op("Cast")(_via("cast", ("DstT", "dtype", "float32")))
raw_op("Shape")(_via("shape", ("out_type", "out_type", "int32")))
raw_op("MatMul")(_via("linalg.matmul", ("transpose_a", "transpose_a", False), ("transpose_b", "transpose_b", False)))
raw_op("BatchMatMul", "BatchMatMulV2", "BatchMatMulV3")(
    _via("linalg.matmul", ("adj_x", "adjoint_a", False), ("adj_y", "adjoint_b", False)))
raw_op("ArgMax")(_via("math.argmax", ("output_type", "output_type", "int64")))
raw_op("ArgMin")(_via("math.argmin", ("output_type", "output_type", "int64")))
raw_op("Select", "SelectV2")(_via("where"))


@raw_op("BiasAdd", "BiasAddV1")
def _raw_bias_add(inputs, attrs):
    return _bias_add(*inputs, data_format=_attr(attrs, "data_format", "NHWC"))


@raw_op("ConcatV2")
def _raw_concat_v2(inputs, attrs):
    return _concat(inputs[:-1], int(np.asarray(inputs[-1])))


@raw_op("Concat")
def _raw_concat(inputs, attrs):
    return _concat(inputs[1:], int(np.asarray(inputs[0])))


@raw_op("Pack")
def _raw_pack(inputs, attrs):
    return _stack(inputs, _attr(attrs, "axis", 0))


@raw_op("AddN")
def _raw_add_n(inputs, attrs):
    return _add_n(inputs)


@raw_op("MirrorPad")
def _raw_mirror_pad(inputs, attrs):
    return _pad(inputs[0], inputs[1], mode=_attr(attrs, "mode", "REFLECT"))


@raw_op("StridedSlice")
def _raw_strided_slice(inputs, attrs):
    masks = {m: _attr(attrs, m, 0) for m in ("begin_mask", "end_mask", "ellipsis_mask", "new_axis_mask",
                                              "shrink_axis_mask")}
    return _strided_slice(inputs[0], inputs[1], inputs[2], inputs[3], **masks)


@raw_op("GatherV2")
def _raw_gather(inputs, attrs):
    if _attr(attrs, "batch_dims", 0):
        raise ValueError("GatherV2 with batch_dims is not supported")
    return _gather(inputs[0], inputs[1], axis=int(np.asarray(inputs[2])))


def _reduce_raw(symbol):
    fn = TF_FUNCTIONS[symbol]

    def op(inputs, attrs):
        axis = np.asarray(inputs[1]).tolist()
        return fn(inputs[0], axis=axis, keepdims=_attr(attrs, "keep_dims", False))

    return op


for _op, _sym in [("Mean", "math.reduce_mean"), ("Sum", "math.reduce_sum"), ("Max", "math.reduce_max"),
                  ("Min", "math.reduce_min"), ("Prod", "math.reduce_prod"), ("Any", "math.reduce_any"),
                  ("All", "math.reduce_all")]:
    raw_op(_op)(_reduce_raw(_sym))


def _constant(value: Any) -> Any:
    """A TensorFlowOpLayer constant as saved: a plain value, or Keras's `__numpy__` object (tf.keras >= 2.13)."""
    if isinstance(value, dict) and value.get("class_name") in ("__numpy__", "__tensor__"):
        cfg = value.get("config", {})
        return np.asarray(cfg.get("value"), dtype=cfg.get("dtype"))
    if isinstance(value, dict):
        raise ValueError(f"unsupported constant {str(value)[:80]}")
    return value


@register_layer()
class TensorFlowOpLayer(CallArgsLayer):
    """One TensorFlow graph op wrapped by tf.keras 2.0-2.3 (`node_def` with its constant inputs `constants`)."""

    keras_module = "tf_keras.src.engine.base_layer"
    registered_name = "TensorFlowOpLayer"
    _PREFIX = "tf_op_layer_"

    def __init__(self, node_def, name=None, constants=None, trainable=True, dtype=None, **kwargs):
        if not isinstance(name, str) or not name:
            raise ConfigError("TensorFlowOpLayer needs a name", layer=name)
        super().__init__(name=self._PREFIX + name, trainable=trainable, dtype=dtype, **kwargs)
        if not isinstance(node_def, dict):
            raise ConfigError("TensorFlowOpLayer: only the JSON form of `node_def` is supported", layer=self.name)
        self.node_def = node_def
        self.op = node_def.get("op")
        if self.op not in RAW_OPS:
            raise ConfigError(f"the TensorFlow op '{self.op}' is not supported by kconvert; supported: "
                              f"{', '.join(sorted(RAW_OPS))}", layer=self.name)
        self.constants = dict(constants or {})
        try:
            self._constants = {int(i): _constant(v) for i, v in self.constants.items()}
        except (TypeError, ValueError) as e:
            raise ConfigError(f"malformed constants of a TensorFlowOpLayer: {e}", layer=self.name) from e
        self._attrs = dict(node_def.get("attr") or {})
        self.built = True  # as in tf.keras: no weights, and no build config is written

    def build_args(self, first, kwargs) -> None:
        pass

    def _apply(self, first, kwargs=None):
        inputs = list(first) if isinstance(first, (list, tuple)) else [first]
        for index in sorted(self._constants):
            inputs.insert(index, self._constants[index])
        return RAW_OPS[self.op](inputs, self._attrs)

    def output_specs(self, first, kwargs):
        return infer_specs(self._apply, first, kwargs)

    @unpack_call_args
    def call(self, inputs, **kwargs):
        return self._apply(inputs)

    def compute_mask(self, inputs, mask=None):
        return None

    def get_config(self):
        return {"name": self.name[len(self._PREFIX):], "trainable": self.trainable, "dtype": self._dtype_config,
                "node_def": self.node_def, "constants": self.constants}
