"""Keras 1 keyword names accepted by the layer constructors, as Keras 2's `keras/legacy/interfaces.py` took them.

`Dense(output_dim=10, init="uniform")` builds `Dense(units=10, kernel_initializer="uniform")`, each rename with a
DeprecationWarning naming the old and the new argument. `Layer.__init_subclass__` applies `convert` once per
construction, with the table of the most derived kconvert class that has one. The rename tables are shared with
the reader of Keras 1 config files (`converters/keras1.py`).
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from ..errors import ConfigError

DATA_FORMATS = {"th": "channels_first", "tf": "channels_last", "default": None}
IMPLEMENTATION = {"cpu": 1, "mem": 1, "gpu": 2}  # Keras 2 maps cpu -> 0, which tf.keras runs as 1
RECURRENT_RENAMES = {"output_dim": "units", "init": "kernel_initializer", "inner_init": "recurrent_initializer",
                     "inner_activation": "recurrent_activation", "W_regularizer": "kernel_regularizer",
                     "U_regularizer": "recurrent_regularizer", "b_regularizer": "bias_regularizer",
                     "W_constraint": "kernel_constraint", "U_constraint": "recurrent_constraint",
                     "b_constraint": "bias_constraint", "dropout_W": "dropout", "dropout_U": "recurrent_dropout"}


def weight_renames(kernel: str = "kernel") -> dict[str, str]:
    """init, W_/b_regularizer, W_/b_constraint, bias -> <kernel>_initializer, ..., use_bias."""
    return {"init": f"{kernel}_initializer", "W_regularizer": f"{kernel}_regularizer",
            "b_regularizer": "bias_regularizer", "W_constraint": f"{kernel}_constraint",
            "b_constraint": "bias_constraint", "bias": "use_bias"}


_FORMAT = {"dim_ordering": "data_format"}
_CONV = {"nb_filter": "filters", "subsample": "strides", "border_mode": "padding", **_FORMAT, **weight_renames()}
_POOL2D = {"border_mode": "padding", **_FORMAT}

# class name -> {Keras 1 keyword: Keras 2 keyword}
RENAMES: dict[str, dict[str, str]] = {
    "Dense": {"output_dim": "units", **weight_renames()},
    "Conv1D": {"nb_filter": "filters", "filter_length": "kernel_size", "subsample_length": "strides",
               "border_mode": "padding", "atrous_rate": "dilation_rate", **weight_renames()},
    "Conv2D": {**_CONV, "atrous_rate": "dilation_rate"},
    "Conv3D": _CONV,
    "Conv2DTranspose": _CONV,
    "SeparableConv2D": {k: v for k, v in _CONV.items() if k not in ("init", "W_regularizer", "W_constraint")},
    "LocallyConnected1D": {"nb_filter": "filters", "filter_length": "kernel_size", "subsample_length": "strides",
                           "border_mode": "padding", **weight_renames()},
    "LocallyConnected2D": _CONV,
    "MaxPooling1D": {"pool_length": "pool_size", "stride": "strides", "border_mode": "padding"},
    "AveragePooling1D": {"pool_length": "pool_size", "stride": "strides", "border_mode": "padding"},
    **{n: _POOL2D for n in ("MaxPooling2D", "AveragePooling2D", "MaxPooling3D", "AveragePooling3D")},
    **{n: _FORMAT for n in ("GlobalMaxPooling2D", "GlobalAveragePooling2D", "GlobalMaxPooling3D",
                            "GlobalAveragePooling3D", "UpSampling2D", "UpSampling3D", "ZeroPadding2D",
                            "ZeroPadding3D", "Cropping2D", "Cropping3D")},
    "UpSampling1D": {"length": "size"},
    "Dropout": {"p": "rate"},
    "SpatialDropout1D": {"p": "rate"},
    "SpatialDropout2D": {"p": "rate", **_FORMAT},
    "SpatialDropout3D": {"p": "rate", **_FORMAT},
    "GaussianDropout": {"p": "rate"},
    "GaussianNoise": {"sigma": "stddev"},
    "Embedding": {"init": "embeddings_initializer", "W_regularizer": "embeddings_regularizer",
                  "W_constraint": "embeddings_constraint"},
    "PReLU": {"init": "alpha_initializer"},
    "BatchNormalization": {"beta_init": "beta_initializer", "gamma_init": "gamma_initializer"},
    **{n: {**RECURRENT_RENAMES, "consume_less": "implementation"} for n in ("SimpleRNN", "GRU", "LSTM")},
}
# the Keras 1 values of renamed keywords, by the new keyword
_VALUES: dict[str, dict[Any, Any]] = {"data_format": DATA_FORMATS, "implementation": IMPLEMENTATION}


_OWN_FILES = {os.path.abspath(__file__), os.path.join(os.path.dirname(os.path.abspath(__file__)), "base.py")}


def _caller_level() -> int:
    """The `stacklevel` of the first frame outside this module and the constructor hook: the user's call."""
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename) in _OWN_FILES:
        frame, level = frame.f_back, level + 1
    return level


def _warn(cls: str, old: str, new: str) -> None:
    warnings.warn(f"{cls}: the Keras 1 argument `{old}` is deprecated, use `{new}`", DeprecationWarning,
                  stacklevel=_caller_level())


def _conv_kernel(cls: str, args: list, kwargs: dict, dims: tuple[str, ...]) -> list:
    """Keras 1 kernel sizes as separate numbers (`Conv2D(32, 3, 3)`, `nb_row=`, `nb_col=`) -> kernel_size."""
    n = len(dims)
    if len(args) == n + 1 and all(isinstance(a, int) for a in args[1:]):
        taken = [k for k in ("padding", "strides", "data_format") if k in kwargs]
        if taken:  # as Keras 2: ambiguous with Conv2D(filters, kernel_size, strides) of today
            raise ConfigError(f"{cls} got {n} integer positional sizes and {taken}; pass kernel_size as a tuple",
                              layer=kwargs.get("name"))
        _warn(cls, "/".join(dims), "kernel_size")
        return [args[0], tuple(args[1:])]
    given = [d for d in dims if d in kwargs]
    if given:
        if len(given) + max(len(args) - 1, 0) != n or "kernel_size" in kwargs:
            raise ConfigError(f"{cls} got the Keras 1 sizes {given} without the others or with kernel_size",
                              layer=kwargs.get("name"))
        _warn(cls, "/".join(dims), "kernel_size")
        kwargs["kernel_size"] = (*args[1:], *(kwargs.pop(d) for d in given))
        return args[:1]
    return args


def _recurrent(cls: str, args: list, kwargs: dict) -> list:
    if "forget_bias_init" in kwargs:
        _warn(cls, "forget_bias_init", "unit_forget_bias")
        kwargs["unit_forget_bias"] = kwargs.pop("forget_bias_init") == "one"
    return _input_length(cls, args, kwargs, warn=False)  # tf.keras's RNN still takes them, silently


def _input_length(cls: str, args: list, kwargs: dict, warn: bool = True) -> list:
    """input_dim / input_length -> input_shape=(input_length, input_dim)."""
    if "input_shape" not in kwargs and ("input_length" in kwargs or "input_dim" in kwargs):
        shape = (kwargs.pop("input_length", None), kwargs.pop("input_dim", None))
        if warn:
            _warn(cls, "input_dim/input_length", "input_shape")
        kwargs["input_shape"] = shape
    return args


def _embedding(cls: str, args: list, kwargs: dict) -> list:
    if "dropout" in kwargs:
        kwargs.pop("dropout")
        warnings.warn(f"{cls}: Keras 2 dropped the Keras 1 argument `dropout`; apply SpatialDropout1D after the "
                      "Embedding for the same effect", DeprecationWarning, stacklevel=_caller_level())
    return args


def _batch_norm(cls: str, args: list, kwargs: dict) -> list:
    if "mode" in kwargs:
        mode = kwargs.pop("mode")
        if mode != 0:
            raise ConfigError(f"{cls}(mode={mode}) has no Keras 2 equivalent: Keras 2 kept only mode=0",
                              layer=kwargs.get("name"))
        warnings.warn(f"{cls}: the Keras 1 argument `mode` is deprecated (mode=0 is the only mode)",
                      DeprecationWarning, stacklevel=_caller_level())
    return args


_PRE = {
    "Conv1D": _input_length,
    "Conv2D": lambda c, a, k: _conv_kernel(c, a, k, ("nb_row", "nb_col")),
    "Conv2DTranspose": lambda c, a, k: _conv_kernel(c, a, k, ("nb_row", "nb_col")),
    "SeparableConv2D": lambda c, a, k: _conv_kernel(c, a, k, ("nb_row", "nb_col")),
    "LocallyConnected2D": lambda c, a, k: _conv_kernel(c, a, k, ("nb_row", "nb_col")),
    "Conv3D": lambda c, a, k: _conv_kernel(c, a, k, ("kernel_dim1", "kernel_dim2", "kernel_dim3")),
    "SimpleRNN": _recurrent, "GRU": _recurrent, "LSTM": _recurrent,
    "Embedding": _embedding,
    "BatchNormalization": _batch_norm,
}


def table_for(cls: type) -> str | None:
    """The class name whose table applies to `cls`: the most derived kconvert layer class that has one."""
    for klass in cls.__mro__:
        if klass.__name__ in RENAMES and klass.__module__.startswith("kconvert.layers"):
            return klass.__name__
    return None


def convert(name: str, args: tuple, kwargs: dict, positional: Sequence[str] = ()) -> tuple[tuple, dict]:
    """Constructor arguments of the layer class `name` with Keras 1 keywords renamed (each with a warning);
    `positional` names the constructor's positional parameters (a renamed keyword must not fill one twice)."""
    renames = RENAMES[name]
    pre = _PRE.get(name)
    if not (pre or set(kwargs) & set(renames)):
        return args, kwargs
    kwargs = dict(kwargs)
    if "init" in kwargs and name == "SeparableConv2D":
        init = kwargs.pop("init")
        _warn(name, "init", "depthwise_initializer/pointwise_initializer")
        kwargs.setdefault("depthwise_initializer", init)
        kwargs.setdefault("pointwise_initializer", init)
    args = list(args)
    if pre is not None:
        args = pre(name, args, kwargs)
    for old, new in renames.items():
        if old not in kwargs:
            continue
        if new in kwargs or new in positional[:len(args)]:
            raise ConfigError(f"{name} got both the Keras 1 argument `{old}` and `{new}`", layer=kwargs.get("name"))
        _warn(name, old, new)
        value = kwargs.pop(old)
        table = _VALUES.get(new) if isinstance(value, str) else None
        kwargs[new] = table.get(value, value) if table else value
    return tuple(args), kwargs


__all__ = ["RENAMES", "DATA_FORMATS", "IMPLEMENTATION", "RECURRENT_RENAMES", "weight_renames", "table_for",
           "convert"]
