"""Metrics as `keras.metrics` has them: functions (per-sample values) and stateful `Metric` classes.

A `Metric` keeps float32 state (`variables()`: `total:0`, `count:0`, as tf_keras names them) across
`update_state` calls; `result()` is the weighted mean so far. Sample weights broadcast as tf_keras's
`Reduce.update_state` does them. `resolve_accuracy` is the rule by which `compile` turns the string
'accuracy'/'acc' into binary, categorical or sparse categorical accuracy, and `display_name` the name
Keras prints for it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from . import losses
from .custom_objects import get_custom_object
from .errors import ConfigError
from .layers.base import Weight
from .losses import squeeze_or_expand_dimensions

__all__ = ["Metric", "Mean", "Sum", "MeanMetricWrapper", "Accuracy", "BinaryAccuracy", "CategoricalAccuracy",
           "SparseCategoricalAccuracy", "TopKCategoricalAccuracy", "SparseTopKCategoricalAccuracy",
           "MeanSquaredError", "MeanAbsoluteError", "AUC", "accuracy", "binary_accuracy", "categorical_accuracy",
           "sparse_categorical_accuracy", "top_k_categorical_accuracy", "sparse_top_k_categorical_accuracy",
           "get", "serialize", "deserialize", "resolve_accuracy", "compile_metric", "display_name"]

_F32 = np.float32


# ---------------------------------------------------------------------------------------------- functions


def _labels(x) -> np.ndarray:
    return np.asarray(x)


def accuracy(y_true, y_pred) -> np.ndarray:
    """1.0 where y_true equals y_pred, element-wise."""
    y_true, y_pred = _labels(y_true), _labels(y_pred)
    if y_true.dtype != y_pred.dtype:
        y_pred = y_pred.astype(y_true.dtype)
    return (y_true == y_pred).astype(_F32)


def _binary_matches(y_true, y_pred, threshold: float = 0.5) -> np.ndarray:
    """(y_pred > threshold) == y_true, element-wise (what the BinaryAccuracy class averages)."""
    y_pred = _labels(y_pred)
    y_pred = (y_pred > y_pred.dtype.type(threshold)).astype(y_pred.dtype)
    return (_labels(y_true) == y_pred).astype(_F32)


def binary_accuracy(y_true, y_pred, threshold: float = 0.5) -> np.ndarray:
    """Mean over the last axis of (y_pred > threshold) == y_true."""
    return np.mean(_binary_matches(y_true, y_pred, threshold), axis=-1)


def _squeeze_last(matches: np.ndarray) -> np.ndarray:
    return np.squeeze(matches, -1) if matches.ndim > 1 and matches.shape[-1] == 1 else matches


def _sparse_matches(y_true, y_pred) -> np.ndarray:
    """tf_keras's `sparse_categorical_matches`: argmax(y_pred) == y_true, shaped like y_true."""
    y_true, y_pred = _labels(y_true), _labels(y_pred)
    shape = y_true.shape
    squeezed = y_true.ndim == y_pred.ndim
    if squeezed:
        y_true = np.squeeze(y_true, -1)
    predicted = np.argmax(y_pred, axis=-1).astype(y_true.dtype)
    matches = (y_true == predicted).astype(_F32)
    return matches.reshape(shape) if squeezed else matches


def categorical_accuracy(y_true, y_pred) -> np.ndarray:
    """1.0 where the argmax of y_pred is the argmax of the one-hot y_true."""
    return _categorical_matches(y_true, y_pred)


def sparse_categorical_accuracy(y_true, y_pred) -> np.ndarray:
    """1.0 where the argmax of y_pred is the integer label y_true (labels of shape (N, 1) give (N,))."""
    return _squeeze_last(_sparse_matches(y_true, y_pred))


def _categorical_matches(y_true, y_pred) -> np.ndarray:
    return _sparse_matches(np.argmax(_labels(y_true), axis=-1), y_pred)


def _in_top_k(y_pred: np.ndarray, targets: np.ndarray, k: int) -> np.ndarray:
    """TF's `in_top_k`: fewer than k classes score strictly higher than the target (ties count as in)."""
    target_scores = np.take_along_axis(y_pred, targets[:, None], axis=-1)
    higher = np.sum(y_pred > target_scores, axis=-1)
    finite = np.all(np.isfinite(y_pred), axis=-1)
    return (higher < k) & finite & (targets >= 0) & (targets < y_pred.shape[-1])


def _sparse_top_k_matches(y_true, y_pred, k: int = 5) -> np.ndarray:
    """tf_keras's `sparse_top_k_categorical_matches`, shaped like y_true."""
    y_true, y_pred = _labels(y_true), _labels(y_pred)
    shape = y_true.shape
    if y_pred.ndim > 2:
        y_pred = y_pred.reshape(-1, y_pred.shape[-1])
    matches = _in_top_k(y_pred, y_true.reshape(-1).astype(np.int64), k).astype(_F32)
    return matches.reshape(shape) if len(shape) > 1 else matches


def sparse_top_k_categorical_accuracy(y_true, y_pred, k: int = 5) -> np.ndarray:
    """1.0 where the integer label is among the k highest predictions (labels of shape (N, 1) give (N,))."""
    return _squeeze_last(_sparse_top_k_matches(y_true, y_pred, k))


def _top_k_matches(y_true, y_pred, k: int = 5) -> np.ndarray:
    return _sparse_top_k_matches(np.argmax(_labels(y_true), axis=-1), y_pred, k)


def top_k_categorical_accuracy(y_true, y_pred, k: int = 5) -> np.ndarray:
    """1.0 where the one-hot label's class is among the k highest predictions."""
    return _top_k_matches(y_true, y_pred, k)


_FUNCTIONS: dict[str, Callable] = {
    f.__name__: f for f in (accuracy, binary_accuracy, categorical_accuracy, sparse_categorical_accuracy,
                            top_k_categorical_accuracy, sparse_top_k_categorical_accuracy)}
# loss functions are metric functions too (tf_keras's metrics module exports them with their aliases)
_LOSS_NAMES = ("mean_squared_error", "mse", "MSE", "mean_absolute_error", "mae", "MAE",
               "mean_absolute_percentage_error", "mape", "MAPE", "mean_squared_logarithmic_error", "msle", "MSLE",
               "binary_crossentropy", "categorical_crossentropy", "sparse_categorical_crossentropy", "hinge",
               "squared_hinge", "categorical_hinge", "kl_divergence", "kld", "KLD", "kullback_leibler_divergence",
               "poisson", "log_cosh", "logcosh", "cosine_similarity")
_FUNCTIONS.update({name: getattr(losses, name) for name in _LOSS_NAMES})
mse = MSE = losses.mean_squared_error
mae = MAE = losses.mean_absolute_error


# ---------------------------------------------------------------------------------------------- classes


class Metric:
    """Base of the stateful metrics: `update_state`, `result`, `reset_state`; calling one updates it and returns
    the result."""

    def __init__(self, name: str | None = None, dtype: str = "float32"):
        self.name = name or type(self).__name__.lower()
        self.dtype = str(np.dtype(dtype or "float32"))
        self._state: dict[str, Weight] = {}

    def add_weight(self, name: str, shape=(), initializer: float = 0.0) -> Weight:
        w = Weight(f"{name}:0", np.full(shape, initializer, dtype=self.dtype), trainable=False)
        self._state[name] = w
        return w

    def variables(self) -> list[Weight]:
        """The state, in tf_keras's order and names."""
        return list(self._state.values())

    def update_state(self, *args, **kwargs) -> None:
        raise NotImplementedError

    def result(self) -> np.ndarray:
        raise NotImplementedError

    def reset_state(self) -> None:
        for w in self._state.values():
            w.value = np.zeros_like(w.value)

    reset_states = reset_state

    def __call__(self, *args, **kwargs) -> np.ndarray:
        self.update_state(*args, **kwargs)
        return self.result()

    def get_config(self) -> dict:
        return {"name": self.name, "dtype": self.dtype}

    @classmethod
    def from_config(cls, config: dict) -> Metric:
        return cls(**config)


def _broadcast_weights(values: np.ndarray, sample_weight) -> tuple[np.ndarray, np.ndarray]:
    """tf_keras's `Reduce.update_state` weighting: squeeze/expand the weights by one trailing axis, broadcast
    them to the values, or else average the values over their trailing axes. Returns (weighted values, weights)."""
    values, _, sample_weight = squeeze_or_expand_dimensions(values, None, np.asarray(sample_weight, values.dtype))
    try:
        sample_weight = np.broadcast_to(sample_weight, values.shape)
    except ValueError:
        values = np.mean(values, axis=tuple(range(sample_weight.ndim, values.ndim)))
    return values * sample_weight, sample_weight


class Reduce(Metric):
    """Accumulates the sum of values and, for a mean, their count (or the sum of their weights)."""

    def __init__(self, reduction: str, name: str | None = None, dtype: str = "float32"):
        super().__init__(name=name, dtype=dtype)
        self.reduction = reduction
        self.total = self.add_weight("total")
        if reduction in ("sum_over_batch_size", "weighted_mean"):
            self.count = self.add_weight("count")

    def update_state(self, values, sample_weight=None) -> None:
        values = np.asarray(values).astype(self.dtype)
        weights = None
        if sample_weight is not None:
            values, weights = _broadcast_weights(values, sample_weight)
        self.total.value = self.total.value + np.sum(values, dtype=self.dtype)
        if self.reduction == "sum":
            return
        if self.reduction == "weighted_mean" and weights is not None:
            count = np.sum(weights, dtype=self.dtype)
        else:
            count = np.dtype(self.dtype).type(values.size)
        self.count.value = self.count.value + count

    def result(self) -> np.ndarray:
        if self.reduction == "sum":
            return self.total.value
        count = self.count.value
        return self.total.value / count if count else np.zeros((), self.dtype)


class Sum(Reduce):
    """The (weighted) sum of the values."""

    def __init__(self, name: str = "sum", dtype: str = "float32"):
        super().__init__("sum", name=name, dtype=dtype)


class Mean(Reduce):
    """The (weighted) mean of the values."""

    def __init__(self, name: str = "mean", dtype: str = "float32"):
        super().__init__("weighted_mean", name=name, dtype=dtype)


class MeanMetricWrapper(Mean):
    """The mean of `fn(y_true, y_pred, **kwargs)` over everything seen."""

    def __init__(self, fn: Callable, name: str | None = None, dtype: str = "float32", **kwargs: Any):
        super().__init__(name=name or fn.__name__, dtype=dtype)
        self._fn = fn
        self._fn_kwargs = kwargs

    def update_state(self, y_true, y_pred, sample_weight=None) -> None:
        y_true = np.asarray(y_true).astype(self.dtype, copy=False)
        y_pred = np.asarray(y_pred).astype(self.dtype, copy=False)  # the same array: a softmax output's logits stay known
        y_pred, y_true, _ = squeeze_or_expand_dimensions(y_pred, y_true)
        matches = self._fn(y_true, y_pred, **self._fn_kwargs)
        super().update_state(matches, sample_weight=sample_weight)

    def get_config(self) -> dict:
        config = {**super().get_config(), **self._fn_kwargs}
        if type(self) is MeanMetricWrapper:
            config["fn"] = self._fn.__name__
        return config

    @classmethod
    def from_config(cls, config: dict) -> Metric:
        config = dict(config)
        if cls is MeanMetricWrapper:
            fn = config.pop("fn")
            return cls(get(fn) if isinstance(fn, str) else fn, **config)
        config.pop("fn", None)
        return cls(**config)


_CLASSES: dict[str, type] = {"Mean": Mean, "Sum": Sum, "MeanMetricWrapper": MeanMetricWrapper}


def _wrapper(class_name: str, fn: Callable, default_name: str, **defaults: Any) -> type:
    """A MeanMetricWrapper subclass with Keras's constructor (`name`, `dtype` and fn's keyword arguments)."""

    def __init__(self, name: str = default_name, dtype: str = "float32", **kwargs: Any):
        unknown = set(kwargs) - set(defaults)
        if unknown:
            raise ConfigError(f"unknown arguments for metric {class_name}: {sorted(unknown)}")
        MeanMetricWrapper.__init__(self, fn, name=name, dtype=dtype, **{**defaults, **kwargs})

    cls = type(class_name, (MeanMetricWrapper,), {"__init__": __init__, "__module__": __name__,
                                                   "__doc__": f"The mean of `{fn.__name__}` (tf_keras "
                                                              f"`metrics.{class_name}`)."})
    _CLASSES[class_name] = cls
    return cls


Accuracy = _wrapper("Accuracy", accuracy, "accuracy")
# the classes average tf_keras's element-wise `*_matches` (not the functions, which squeeze or average the last axis)
BinaryAccuracy = _wrapper("BinaryAccuracy", _binary_matches, "binary_accuracy", threshold=0.5)
CategoricalAccuracy = _wrapper("CategoricalAccuracy", _categorical_matches, "categorical_accuracy")
SparseCategoricalAccuracy = _wrapper("SparseCategoricalAccuracy", _sparse_matches, "sparse_categorical_accuracy")
TopKCategoricalAccuracy = _wrapper("TopKCategoricalAccuracy", _top_k_matches, "top_k_categorical_accuracy", k=5)
SparseTopKCategoricalAccuracy = _wrapper("SparseTopKCategoricalAccuracy", _sparse_top_k_matches,
                                         "sparse_top_k_categorical_accuracy", k=5)
MeanSquaredError = _wrapper("MeanSquaredError", losses.mean_squared_error, "mean_squared_error")
MeanAbsoluteError = _wrapper("MeanAbsoluteError", losses.mean_absolute_error, "mean_absolute_error")


class AUC(Metric):
    """Area under the ROC or PR curve from confusion counts at `num_thresholds` evenly spaced thresholds, as
    tf_keras computes it (bucketed counts, Riemann sums or Davis & Goadrich's PR interpolation). Single-label
    only: `multi_label=True` and explicit `thresholds` are not supported."""

    def __init__(self, num_thresholds: int = 200, curve: str = "ROC", summation_method: str = "interpolation",
                 name: str | None = None, dtype: str | None = None, thresholds=None, multi_label: bool = False,
                 num_labels=None, label_weights=None, from_logits: bool = False):
        if thresholds is not None or multi_label or label_weights is not None or num_labels is not None:
            raise ConfigError("AUC: explicit thresholds, multi_label, num_labels and label_weights are not supported")
        if num_thresholds <= 1:
            raise ConfigError(f"AUC: num_thresholds must be an integer > 1, got {num_thresholds}")
        curve, summation_method = str(curve).upper(), str(summation_method).lower()
        if curve not in ("ROC", "PR") or summation_method not in ("interpolation", "minoring", "majoring"):
            raise ConfigError(f"AUC: unsupported curve {curve!r} or summation_method {summation_method!r}")
        super().__init__(name=name or "auc", dtype=dtype or "float32")
        self.num_thresholds, self.curve, self.summation_method = num_thresholds, curve, summation_method
        self._from_logits = from_logits
        for kind in ("true_positives", "true_negatives", "false_positives", "false_negatives"):
            self.add_weight(kind, shape=(num_thresholds,))

    @property
    def thresholds(self) -> list[float]:
        inner = [(i + 1) * 1.0 / (self.num_thresholds - 1) for i in range(self.num_thresholds - 2)]
        return [0.0 - losses.EPSILON] + inner + [1.0 + losses.EPSILON]

    def update_state(self, y_true, y_pred, sample_weight=None) -> None:
        y_true = np.asarray(y_true).astype(self.dtype)
        y_pred = np.asarray(y_pred).astype(self.dtype)
        if self._from_logits:
            y_pred = 1.0 / (1.0 + np.exp(-y_pred))
        weights = np.ones((), self.dtype) if sample_weight is None else np.asarray(sample_weight, self.dtype)
        y_pred, y_true, weights = squeeze_or_expand_dimensions(y_pred, y_true, weights)
        weights = np.broadcast_to(weights, y_pred.shape).reshape(-1)
        y_true = (y_true != 0).astype(self.dtype).reshape(-1)
        y_pred = np.clip(y_pred, 0.0, 1.0).reshape(-1)
        n = self.num_thresholds
        buckets = np.maximum(np.ceil(y_pred * (n - 1)).astype(np.int64) - 1, 0)
        tp = np.cumsum(np.bincount(buckets, y_true * weights, n)[::-1])[::-1].astype(self.dtype)
        fp = np.cumsum(np.bincount(buckets, (1 - y_true) * weights, n)[::-1])[::-1].astype(self.dtype)
        state = self._state
        for key, value in (("true_positives", tp), ("false_positives", fp), ("true_negatives", fp[0] - fp),
                           ("false_negatives", tp[0] - tp)):
            state[key].value = state[key].value + value

    @staticmethod
    def _div(a, b):
        return np.divide(a, b, out=np.zeros_like(a), where=b != 0)

    def _interpolate_pr_auc(self, tp, fp, fn) -> np.ndarray:
        dtp = tp[:-1] - tp[1:]
        p = tp + fp
        dp = p[:-1] - p[1:]
        slope = self._div(dtp, np.maximum(dp, 0))
        intercept = tp[1:] - slope * p[1:]
        both = (p[:-1] > 0) & (p[1:] > 0)
        ratio = np.where(both, self._div(p[:-1], np.maximum(p[1:], 0)), 1.0).astype(tp.dtype)
        with np.errstate(divide="ignore", invalid="ignore"):
            increment = self._div(slope * (dtp + intercept * np.log(ratio)), np.maximum(tp[1:] + fn[1:], 0))
        return np.sum(increment)

    def result(self) -> np.ndarray:
        tp, tn, fp, fn = (self._state[k].value for k in ("true_positives", "true_negatives", "false_positives",
                                                        "false_negatives"))
        if self.curve == "PR" and self.summation_method == "interpolation":
            return self._interpolate_pr_auc(tp, fp, fn)
        recall = self._div(tp, tp + fn)
        if self.curve == "ROC":
            x, y = self._div(fp, fp + tn), recall
        else:
            x, y = recall, self._div(tp, tp + fp)
        heights = {"interpolation": (y[:-1] + y[1:]) / 2.0, "minoring": np.minimum(y[:-1], y[1:]),
                   "majoring": np.maximum(y[:-1], y[1:])}[self.summation_method]
        return np.sum((x[:-1] - x[1:]) * heights)

    def get_config(self) -> dict:
        return {**super().get_config(), "num_thresholds": self.num_thresholds, "curve": self.curve,
                "summation_method": self.summation_method, "multi_label": False, "num_labels": None,
                "label_weights": None, "from_logits": self._from_logits}


_CLASSES["AUC"] = AUC


# ---------------------------------------------------------------------------------------------- lookup


def serialize(metric) -> dict:
    """tf_keras's `metrics.serialize` form."""
    if isinstance(metric, Metric):
        return {"module": "keras.metrics", "class_name": type(metric).__name__, "config": metric.get_config(),
                "registered_name": None}
    return losses.serialize(metric)


def deserialize(config, custom_objects: dict | None = None) -> Any:
    """A metric function or object from a name or a config dict of any Keras writer."""
    custom_objects = custom_objects or {}
    if isinstance(config, str):
        obj = custom_objects.get(config) or _FUNCTIONS.get(config) or _CLASSES.get(config) or get_custom_object(config)
        if obj is None:
            raise ConfigError(f"unknown metric {config!r}")
        return obj() if isinstance(obj, type) else obj
    if not isinstance(config, dict) or "class_name" not in config:
        raise ConfigError(f"cannot read metric configuration {config!r}")
    class_name, inner = config["class_name"], config.get("config")
    if class_name == "function":
        return deserialize(inner, custom_objects)
    name = config.get("registered_name") or class_name
    cls = (custom_objects.get(name) or custom_objects.get(class_name) or _CLASSES.get(class_name)
           or get_custom_object(name))
    if cls is None:
        raise ConfigError(f"unknown metric {class_name!r}")
    return cls.from_config(dict(inner or {}))


def get(identifier) -> Any:
    """`keras.metrics.get`: a name (function or class), a config dict, or a callable."""
    if isinstance(identifier, (str, dict)):
        return deserialize(identifier)
    if callable(identifier):
        return identifier
    raise ConfigError(f"could not interpret metric identifier {identifier!r}")


_ACCURACY = ("accuracy", "acc")
_CROSSENTROPY = ("crossentropy", "ce")


def _loss_name(loss) -> str | None:
    if isinstance(loss, str):
        obj = losses.get(loss)
        loss = obj
    if isinstance(loss, losses.LossFunctionWrapper):
        return loss.fn.__name__
    return getattr(loss, "__name__", None)


def resolve_accuracy(loss, output_shape, y_true_shape=None, metric: str = "accuracy") -> Callable:
    """The function Keras uses for the metric string 'accuracy'/'acc' (or 'crossentropy'/'ce') on one output.

    With `y_true_shape` (tf_keras, Keras 3 — they decide from the first batch): binary when the output's last
    axis is 1, sparse categorical when the labels have lower rank than the output or a last axis of 1 against a
    wider output, categorical otherwise; the loss plays no part. Without it (multi-backend Keras 1/2, which
    decides at compile time): binary when the output's last axis is 1 or the loss is binary_crossentropy,
    sparse when the loss is sparse_categorical_crossentropy, categorical otherwise.
    """
    kind = str(metric).lower()
    if kind not in _ACCURACY + _CROSSENTROPY:
        raise ConfigError(f"resolve_accuracy: {metric!r} is not 'accuracy', 'acc', 'crossentropy' or 'ce'")
    out_last = tuple(output_shape)[-1]
    if y_true_shape is not None:
        y_true_shape = tuple(y_true_shape)
        binary = out_last == 1
        sparse = len(y_true_shape) < len(tuple(output_shape)) or (y_true_shape[-1] == 1 and (out_last or 2) > 1)
    else:
        name = _loss_name(loss)
        binary = out_last == 1 or name == "binary_crossentropy"
        sparse = name == "sparse_categorical_crossentropy"
    if kind in _ACCURACY:
        return binary_accuracy if binary else sparse_categorical_accuracy if sparse else categorical_accuracy
    return (losses.binary_crossentropy if binary else losses.sparse_categorical_crossentropy if sparse
            else losses.categorical_crossentropy)


def compile_metric(metric, loss=None, output_shape=None, y_true_shape=None) -> Metric | None:
    """A user's metric (string, function or Metric) as the Metric object `compile` tracks, named as tf_keras
    names it: the string as written, else the function's name."""
    if metric is None or isinstance(metric, Metric):
        return metric
    if isinstance(metric, str) and metric.lower() in _ACCURACY + _CROSSENTROPY:
        if output_shape is None:
            raise ConfigError(f"metric {metric!r} needs the output shape to be resolved")
        fn = resolve_accuracy(loss, output_shape, y_true_shape, metric)
    else:
        fn = get(metric)
        if isinstance(fn, Metric):
            return fn
    name = metric if isinstance(metric, str) else getattr(metric, "__name__", None)
    if name is None:
        raise ConfigError(f"metric should be a callable, received {metric!r}")
    return MeanMetricWrapper(fn, name=name)


def display_name(metric, keras_version: str | None = None) -> str:
    """The name Keras prints and records in History for a metric string: multi-backend Keras before 2.3 (and
    Keras 1) print 'acc' for 'accuracy'/'acc' and 'ce' for 'crossentropy'/'ce'; Keras 2.3+, tf.keras and
    Keras 3 print what the user wrote."""
    if not isinstance(metric, str):
        return getattr(metric, "name", None) or metric.__name__
    if keras_version is not None:
        major_minor = tuple(int(p) for p in (keras_version.split(".") + ["0"])[:2] if p.isdigit())
        if major_minor < (2, 3):
            if metric in _ACCURACY:
                return "acc"
            if metric in _CROSSENTROPY:
                return "ce"
    return metric
