"""Losses as `keras.losses` has them: functions (per-sample values) and `Loss` classes (reduced, weighted).

The numerics follow tf_keras 2.x: crossentropies clip probabilities to [1e-7, 1 - 1e-7] (Keras's `epsilon()`),
`binary_crossentropy` adds that epsilon inside its logarithms, `sparse_categorical_crossentropy` takes the log
of the clipped probabilities as logits (so it renormalises by their sum), and a `Loss` object reduces as
tf_keras's `LossFunctionWrapper` + `compute_weighted_loss` do: labels and predictions whose ranks differ by one
lose a trailing 1, sample weights of shape (N,), (N, 1) or (N, T) are squeezed/expanded to the per-sample
losses and broadcast, and SUM_OVER_BATCH_SIZE divides the weighted sum by the number of loss elements.

Everything is written with plain numpy calls, so a loss called on autodiff `Var`s is differentiable.

Keras 3 differs (not followed here yet): its `binary_crossentropy` has no epsilon inside the logarithms, and its
reductions include "mean_with_sample_weight".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from . import ops
from .custom_objects import get_custom_object
from .errors import ConfigError
from .ops import logits
from .ops.array_module import full, module_of, to_device

EPSILON = 1e-7

__all__ = ["EPSILON", "Reduction", "Loss", "LossFunctionWrapper", "get", "serialize", "deserialize",
           "compute_weighted_loss", "squeeze_or_expand_dimensions"]


class Reduction:
    """Keras's `losses.Reduction` (ReductionV2) values."""

    AUTO = "auto"
    NONE = "none"
    SUM = "sum"
    SUM_OVER_BATCH_SIZE = "sum_over_batch_size"

    @classmethod
    def all(cls) -> tuple[str, ...]:
        return (cls.AUTO, cls.NONE, cls.SUM, cls.SUM_OVER_BATCH_SIZE)


# ---------------------------------------------------------------------------------------------- helpers

_FUNCTIONS: dict[str, Callable] = {}


def _register(*aliases: str) -> Callable:
    def deco(fn: Callable) -> Callable:
        for name in (fn.__name__, *aliases):
            _FUNCTIONS[name] = fn
        return fn

    return deco


def _float(x, dtype=None):
    """x as a floating array (a Var stays a Var): y_pred's dtype, or float32."""
    if hasattr(x, "dtype") and hasattr(x, "astype"):
        if dtype is None:
            return x if np.issubdtype(x.dtype, np.floating) else x.astype(np.float32)
        return x if x.dtype == dtype else x.astype(dtype)
    return np.asarray(x, dtype=dtype or np.float32)


def _pair(y_true, y_pred):
    y_pred = _float(y_pred)
    return _float(y_true, y_pred.dtype), y_pred


def _ndim(x) -> int:
    return len(np.shape(x))


def squeeze_or_expand_dimensions(y_pred, y_true=None, sample_weight=None):
    """tf_keras's `losses_utils.squeeze_or_expand_dimensions`: drop a trailing 1 where the ranks of y_pred and
    y_true differ by one (unless y_true is a class index per sample), then squeeze or expand sample_weight by
    one trailing axis to y_pred's rank. Returns (y_pred, y_true, sample_weight)."""
    if y_true is not None:
        diff = _ndim(y_pred) - _ndim(y_true)
        if diff != 1 or np.shape(y_pred)[-1] == 1:
            if diff == 1 and np.shape(y_pred)[-1] == 1:
                y_pred = np.squeeze(y_pred, -1)
            elif diff == -1 and np.shape(y_true)[-1] == 1:
                y_true = np.squeeze(y_true, -1)
    if sample_weight is not None and _ndim(sample_weight) > 0:
        diff = _ndim(sample_weight) - _ndim(y_pred)
        if diff == 1:
            sample_weight = np.squeeze(sample_weight, -1)
        elif diff == -1:
            sample_weight = np.expand_dims(sample_weight, -1)
    return y_pred, y_true, sample_weight


def compute_weighted_loss(losses, sample_weight=None, reduction: str = Reduction.SUM_OVER_BATCH_SIZE):
    """Weight per-sample `losses` and reduce them as tf_keras's `compute_weighted_loss`."""
    if reduction not in Reduction.all():
        raise ConfigError(f"invalid loss reduction {reduction!r}; expected one of {Reduction.all()}")
    if reduction == Reduction.AUTO:
        reduction = Reduction.SUM_OVER_BATCH_SIZE
    losses = _float(losses)
    if sample_weight is None:
        sample_weight = full((), 1, losses.dtype, like=losses)
    sample_weight = _float(sample_weight, losses.dtype)
    losses, _, sample_weight = squeeze_or_expand_dimensions(losses, None, sample_weight)
    weighted = losses * sample_weight
    if reduction == Reduction.NONE:
        return weighted
    total = np.sum(weighted)
    if reduction == Reduction.SUM:
        return total
    size = int(np.size(weighted))
    return total / losses.dtype.type(size) if size else total * 0


def _apply_valid_mask(losses, sample_weight, mask, reduction: str):
    """tf_keras's `apply_valid_mask`: masked-out entries weigh 0 and the mean runs over the valid ones."""
    if mask is None:
        return sample_weight
    mask = mask.astype(losses.dtype)
    if reduction in (Reduction.AUTO, Reduction.SUM_OVER_BATCH_SIZE):
        valid = mask.sum()
        mask = mask * (losses.dtype.type(mask.size) / valid) if valid else mask
    if sample_weight is None:
        return mask
    sample_weight = _float(sample_weight, losses.dtype)
    _, _, sample_weight = squeeze_or_expand_dimensions(losses, None, sample_weight)
    return sample_weight * mask


# ---------------------------------------------------------------------------------------------- functions


@_register("mse", "MSE")
def mean_squared_error(y_true, y_pred):
    y_true, y_pred = _pair(y_true, y_pred)
    return np.mean(np.square(y_pred - y_true), axis=-1)


@_register("mae", "MAE")
def mean_absolute_error(y_true, y_pred):
    y_true, y_pred = _pair(y_true, y_pred)
    return np.mean(np.abs(y_pred - y_true), axis=-1)


@_register("mape", "MAPE")
def mean_absolute_percentage_error(y_true, y_pred):
    y_true, y_pred = _pair(y_true, y_pred)
    diff = np.abs((y_true - y_pred) / np.maximum(np.abs(y_true), EPSILON))
    return 100.0 * np.mean(diff, axis=-1)


@_register("msle", "MSLE")
def mean_squared_logarithmic_error(y_true, y_pred):
    y_true, y_pred = _pair(y_true, y_pred)
    first = np.log(np.maximum(y_pred, EPSILON) + 1.0)
    second = np.log(np.maximum(y_true, EPSILON) + 1.0)
    return np.mean(np.square(first - second), axis=-1)


def _signed_labels(y_true):
    """Keras's `_maybe_convert_labels`: labels that are all 0 or 1 become -1/1."""
    values = np.asarray(y_true.data if hasattr(y_true, "node") else y_true)
    if np.all((values == 0) | (values == 1)):
        return 2.0 * y_true - 1.0
    return y_true


@_register()
def hinge(y_true, y_pred):
    y_true, y_pred = _pair(y_true, y_pred)
    y_true = _signed_labels(y_true)
    return np.mean(np.maximum(1.0 - y_true * y_pred, 0.0), axis=-1)


@_register()
def squared_hinge(y_true, y_pred):
    y_true, y_pred = _pair(y_true, y_pred)
    y_true = _signed_labels(y_true)
    return np.mean(np.square(np.maximum(1.0 - y_true * y_pred, 0.0)), axis=-1)


@_register()
def categorical_hinge(y_true, y_pred):
    y_true, y_pred = _pair(y_true, y_pred)
    pos = np.sum(y_true * y_pred, axis=-1)
    neg = np.max((1.0 - y_true) * y_pred, axis=-1)
    return np.maximum(neg - pos + 1.0, 0.0)


@_register("huber_loss")
def huber(y_true, y_pred, delta: float = 1.0):
    y_true, y_pred = _pair(y_true, y_pred)
    error = y_pred - y_true
    abs_error = np.abs(error)
    delta = y_pred.dtype.type(delta)
    quadratic = 0.5 * np.square(error)
    linear = delta * abs_error - 0.5 * np.square(delta)
    return np.mean(np.where(abs_error <= delta, quadratic, linear), axis=-1)


@_register("logcosh")
def log_cosh(y_true, y_pred):
    y_true, y_pred = _pair(y_true, y_pred)
    x = y_pred - y_true
    # x + softplus(-2x) - log 2, softplus written stably as max(z, 0) + log1p(exp(-|z|))
    z = -2.0 * x
    softplus = np.maximum(z, 0.0) + np.log1p(np.exp(-np.abs(z)))
    return np.mean(x + softplus - y_pred.dtype.type(np.log(2.0)), axis=-1)


@_register("kld", "KLD", "kullback_leibler_divergence")
def kl_divergence(y_true, y_pred):
    y_true, y_pred = _pair(y_true, y_pred)
    y_true = np.clip(y_true, EPSILON, 1.0)
    y_pred = np.clip(y_pred, EPSILON, 1.0)
    return np.sum(y_true * np.log(y_true / y_pred), axis=-1)


@_register()
def poisson(y_true, y_pred):
    y_true, y_pred = _pair(y_true, y_pred)
    return np.mean(y_pred - y_true * np.log(y_pred + EPSILON), axis=-1)


def _l2_normalize(x, axis: int):
    return x / np.sqrt(np.maximum(np.sum(np.square(x), axis=axis, keepdims=True), 1e-12))


@_register("cosine_proximity")
def cosine_similarity(y_true, y_pred, axis: int = -1):
    y_true, y_pred = _pair(y_true, y_pred)
    return -np.sum(_l2_normalize(y_true, axis) * _l2_normalize(y_pred, axis), axis=axis)


def _sigmoid_xent_with_logits(labels, logits):
    return np.maximum(logits, 0.0) - logits * labels + np.log1p(np.exp(-np.abs(logits)))


@_register()
def binary_crossentropy(y_true, y_pred, from_logits: bool = False, label_smoothing: float = 0.0, axis: int = -1):
    y_pred, from_logits = logits.resolve(y_pred, from_logits, "binary_crossentropy")
    y_true, y_pred = _pair(y_true, y_pred)
    if label_smoothing:
        y_true = y_true * (1.0 - label_smoothing) + 0.5 * label_smoothing
    if from_logits:
        bce = _sigmoid_xent_with_logits(y_true, y_pred)
    else:
        out = np.clip(y_pred, EPSILON, 1.0 - EPSILON)
        bce = -(y_true * np.log(out + EPSILON) + (1.0 - y_true) * np.log(1.0 - out + EPSILON))
    return np.mean(bce, axis=axis)


@_register()
def categorical_crossentropy(y_true, y_pred, from_logits: bool = False, label_smoothing: float = 0.0,
                             axis: int = -1):
    y_pred, from_logits = logits.resolve(y_pred, from_logits, "categorical_crossentropy")
    y_true, y_pred = _pair(y_true, y_pred)
    if label_smoothing:
        num_classes = np.asarray(np.shape(y_true)[axis], y_pred.dtype)
        y_true = y_true * (1.0 - label_smoothing) + label_smoothing / num_classes
    if from_logits:
        return -np.sum(y_true * ops.log_softmax(y_pred, axis=axis), axis=axis)
    out = y_pred / np.sum(y_pred, axis=axis, keepdims=True)
    out = np.clip(out, EPSILON, 1.0 - EPSILON)
    return -np.sum(y_true * np.log(out), axis=axis)


def _sparse_xent(y_true, y_pred, from_logits: bool, ignore_class: int | None, axis: int):
    """(per-sample losses, valid mask or None) as tf_keras's backend `sparse_categorical_crossentropy`."""
    y_pred, from_logits = logits.resolve(y_pred, from_logits, "sparse_categorical_crossentropy")
    y_pred = _float(y_pred)
    if not from_logits:
        y_pred = np.log(np.clip(y_pred, EPSILON, 1.0 - EPSILON))
    rank = _ndim(y_pred)
    axis %= rank
    if axis != rank - 1:
        y_pred = np.moveaxis(y_pred, axis, -1)
    labels = np.asarray(y_true.data if hasattr(y_true, "node") else y_true).astype(np.int64)
    out_shape = np.shape(y_pred)[:-1]
    if labels.ndim != rank - 1:
        labels = labels.reshape(-1)
    labels = labels.reshape(out_shape)
    valid = None
    if ignore_class is not None:
        valid = labels != ignore_class
        labels = np.where(valid, labels, 0)
    classes = to_device(np.arange(np.shape(y_pred)[-1]), module_of(labels))
    onehot = (labels[..., None] == classes).astype(y_pred.dtype)
    losses = -np.sum(onehot * ops.log_softmax(y_pred, axis=-1), axis=-1)
    if valid is not None:
        losses = np.where(valid, losses, y_pred.dtype.type(0))
    return losses, valid


@_register()
def sparse_categorical_crossentropy(y_true, y_pred, from_logits: bool = False, axis: int = -1,
                                    ignore_class: int | None = None):
    return _sparse_xent(y_true, y_pred, from_logits, ignore_class, axis)[0]


# ---------------------------------------------------------------------------------------------- classes


class Loss:
    """Base of the loss classes: `__call__(y_true, y_pred, sample_weight=None)` reduces `call`'s losses."""

    def __init__(self, reduction: str = Reduction.AUTO, name: str | None = None, **kwargs: Any):
        kwargs.pop("dtype", None)  # Keras 3 configs carry the compute dtype
        if kwargs:
            raise ConfigError(f"unknown arguments for loss {type(self).__name__}: {sorted(kwargs)}")
        if reduction not in Reduction.all():
            raise ConfigError(f"invalid loss reduction {reduction!r}; expected one of {Reduction.all()}")
        self.reduction = reduction
        self.name = name

    def call(self, y_true, y_pred):
        raise NotImplementedError

    def _call_masked(self, y_true, y_pred):
        return self.call(y_true, y_pred), None

    def __call__(self, y_true, y_pred, sample_weight=None):
        losses, mask = self._call_masked(y_true, y_pred)
        reduction = Reduction.SUM_OVER_BATCH_SIZE if self.reduction == Reduction.AUTO else self.reduction
        sample_weight = _apply_valid_mask(_float(losses), sample_weight, mask, reduction)
        return compute_weighted_loss(losses, sample_weight, reduction)

    def get_config(self) -> dict:
        return {"reduction": self.reduction, "name": self.name}

    @classmethod
    def from_config(cls, config: dict) -> Loss:
        return cls(**config)


class LossFunctionWrapper(Loss):
    """A loss function with fixed keyword arguments, as a `Loss`."""

    def __init__(self, fn: Callable, reduction: str = Reduction.AUTO, name: str | None = None, **kwargs: Any):
        super().__init__(reduction=reduction, name=name)
        self.fn = fn
        self._fn_kwargs = kwargs

    def _call_masked(self, y_true, y_pred):
        y_pred = _float(y_pred)
        y_pred, y_true, _ = squeeze_or_expand_dimensions(y_pred, y_true)
        return self.fn(y_true, y_pred, **self._fn_kwargs), None

    def call(self, y_true, y_pred):
        return self._call_masked(y_true, y_pred)[0]

    def get_config(self) -> dict:
        return {**super().get_config(), **self._fn_kwargs, "fn": self.fn.__name__}

    @classmethod
    def from_config(cls, config: dict) -> Loss:
        config = dict(config)
        config.pop("fn", None)  # Keras 3 / saving v3 name the wrapped function; the class implies it
        return cls(**config)


_CLASSES: dict[str, type] = {}


def _loss_class(fn: Callable, default_name: str, **defaults: Any) -> type:
    """A `LossFunctionWrapper` subclass around `fn` with Keras's constructor arguments and defaults."""

    def __init__(self, reduction: str = Reduction.AUTO, name: str = default_name, **kwargs: Any):
        kwargs.pop("dtype", None)
        kwargs.pop("fn", None)
        unknown = set(kwargs) - set(defaults)
        if unknown:
            raise ConfigError(f"unknown arguments for loss {type(self).__name__}: {sorted(unknown)}")
        LossFunctionWrapper.__init__(self, fn, reduction=reduction, name=name, **{**defaults, **kwargs})

    return __init__


def _define(class_name: str, fn: Callable, default_name: str, **defaults: Any) -> type:
    cls = type(class_name, (LossFunctionWrapper,), {
        "__init__": _loss_class(fn, default_name, **defaults),
        "__doc__": f"`{fn.__name__}` as a Loss (tf_keras `losses.{class_name}`).",
        "__module__": __name__,
    })
    cls.from_config = classmethod(lambda c, config: c(**config))
    _CLASSES[class_name] = cls
    return cls


MeanSquaredError = _define("MeanSquaredError", mean_squared_error, "mean_squared_error")
MeanAbsoluteError = _define("MeanAbsoluteError", mean_absolute_error, "mean_absolute_error")
MeanAbsolutePercentageError = _define("MeanAbsolutePercentageError", mean_absolute_percentage_error,
                                      "mean_absolute_percentage_error")
MeanSquaredLogarithmicError = _define("MeanSquaredLogarithmicError", mean_squared_logarithmic_error,
                                      "mean_squared_logarithmic_error")
BinaryCrossentropy = _define("BinaryCrossentropy", binary_crossentropy, "binary_crossentropy",
                             from_logits=False, label_smoothing=0.0, axis=-1)
CategoricalCrossentropy = _define("CategoricalCrossentropy", categorical_crossentropy, "categorical_crossentropy",
                                  from_logits=False, label_smoothing=0.0, axis=-1)
Hinge = _define("Hinge", hinge, "hinge")
SquaredHinge = _define("SquaredHinge", squared_hinge, "squared_hinge")
CategoricalHinge = _define("CategoricalHinge", categorical_hinge, "categorical_hinge")
Poisson = _define("Poisson", poisson, "poisson")
LogCosh = _define("LogCosh", log_cosh, "log_cosh")
KLDivergence = _define("KLDivergence", kl_divergence, "kl_divergence")
Huber = _define("Huber", huber, "huber_loss", delta=1.0)
CosineSimilarity = _define("CosineSimilarity", cosine_similarity, "cosine_similarity", axis=-1)


class SparseCategoricalCrossentropy(LossFunctionWrapper):
    """`sparse_categorical_crossentropy` as a Loss; entries labelled `ignore_class` are left out of the mean."""

    def __init__(self, from_logits: bool = False, ignore_class: int | None = None,
                 reduction: str = Reduction.AUTO, name: str = "sparse_categorical_crossentropy", **kwargs: Any):
        kwargs.pop("dtype", None)
        kwargs.pop("fn", None)
        axis = kwargs.pop("axis", -1)
        if kwargs:
            raise ConfigError(f"unknown arguments for loss SparseCategoricalCrossentropy: {sorted(kwargs)}")
        super().__init__(sparse_categorical_crossentropy, reduction=reduction, name=name, from_logits=from_logits,
                         ignore_class=ignore_class)
        self._axis = axis

    def _call_masked(self, y_true, y_pred):
        y_pred = _float(y_pred)
        y_pred, y_true, _ = squeeze_or_expand_dimensions(y_pred, y_true)
        return _sparse_xent(y_true, y_pred, self._fn_kwargs["from_logits"], self._fn_kwargs["ignore_class"],
                            self._axis)

    @classmethod
    def from_config(cls, config: dict) -> Loss:
        return cls(**config)


_CLASSES["SparseCategoricalCrossentropy"] = SparseCategoricalCrossentropy


# ---------------------------------------------------------------------------------------------- lookup


def serialize(loss) -> dict:
    """tf_keras's `losses.serialize`: {"module", "class_name", "config", "registered_name"}; a plain function is
    serialized as tf_keras does it ({"class_name": "function", "config": <its name>})."""
    if isinstance(loss, Loss):
        return {"module": "keras.losses", "class_name": type(loss).__name__, "config": loss.get_config(),
                "registered_name": None}
    name = getattr(loss, "__name__", None)
    if name is None:
        raise ConfigError(f"cannot serialize loss {loss!r}")
    return {"module": "builtins", "class_name": "function", "config": name, "registered_name": "function"}


def _lookup(name: str):
    if name in _FUNCTIONS:
        return _FUNCTIONS[name]
    if name in _CLASSES:
        return _CLASSES[name]
    custom = get_custom_object(name)
    if custom is not None:
        return custom
    raise ConfigError(f"unknown loss {name!r}")


def deserialize(config, custom_objects: dict | None = None) -> Any:
    """A loss from a name or from any Keras writer's dict form (tf_keras legacy, registered 'Package>Name',
    Keras 3's {"module", "class_name", "config", "registered_name"}); a class name without config makes an
    instance with Keras's defaults."""
    custom_objects = custom_objects or {}
    if isinstance(config, str):
        obj = custom_objects.get(config) or _lookup(config)
        return obj() if isinstance(obj, type) else obj
    if not isinstance(config, dict) or "class_name" not in config:
        raise ConfigError(f"cannot read loss configuration {config!r}")
    class_name, inner = config["class_name"], config.get("config")
    if class_name == "function":  # Keras 3: a plain function, config = its name
        return deserialize(inner, custom_objects)
    name = config.get("registered_name") or class_name
    obj = custom_objects.get(name) or custom_objects.get(class_name)
    if obj is None:
        try:
            obj = _lookup(class_name)
        except ConfigError:
            obj = _lookup(name)
    if isinstance(obj, type):
        return obj.from_config(dict(inner or {})) if hasattr(obj, "from_config") else obj(**(inner or {}))
    return obj


def get(identifier) -> Any:
    """`keras.losses.get`: None, a name, a config dict or a callable."""
    if identifier is None:
        return None
    if isinstance(identifier, (str, dict)):
        return deserialize(identifier)
    if callable(identifier):
        return identifier
    raise ConfigError(f"could not interpret loss identifier {identifier!r}")


def is_categorical_crossentropy(loss) -> bool:
    """True for `categorical_crossentropy` in any of its forms (Keras uses this to pick the accuracy)."""
    return (isinstance(loss, CategoricalCrossentropy) or loss is categorical_crossentropy
            or (isinstance(loss, LossFunctionWrapper) and loss.fn is categorical_crossentropy)
            or loss in ("categorical_crossentropy", "CategoricalCrossentropy"))


globals().update({name: fn for name, fn in _FUNCTIONS.items() if name.isidentifier() and name not in globals()})
__all__ += sorted(_CLASSES) + sorted(n for n in _FUNCTIONS if n.isidentifier())
