"""compile, fit, evaluate and the *_on_batch calls, as tf_keras 2.x's `Model` runs them, on the numpy engine.

A train step runs the model's graph in training mode on a gradient tape (autodiff.py), adds the weighted
per-output losses and the regularization penalties, differentiates the total w.r.t. the trainable weights and
lets the optimizer apply the gradients; constraints then project the weights. Losses and metrics are tracked as
tf_keras does: `loss` is the mean of the batch totals weighted by batch size, each output's loss likewise, and
metric objects accumulate across the epoch. Names in the logs follow tf_keras: `loss`, `<output>_loss` and
`<output>_<metric>` for several outputs, `val_` for validation.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

from .. import losses as losses_mod
from .. import metrics as metrics_mod
from .. import optimizers as optimizers_mod
from ..errors import ConfigError
from ..ops import array_module, logits
from . import autodiff, regularizers
from .blas_threads import StepThreads
from .callbacks import CallbackList
from .data_adapter import DataHandler, unpack_x_y_sample_weight


def _per_output(spec, names: list[str], what: str, default=None) -> list:
    """A compile argument (loss, loss_weights) for each output: one value for all, a list in output order, or a
    dict by output name."""
    if isinstance(spec, dict):
        _check_names(spec, names, what)
        return [spec.get(n, default) for n in names]
    if isinstance(spec, (list, tuple)):
        if len(spec) != len(names):
            raise ConfigError(f"{what} has {len(spec)} entries for {len(names)} outputs")
        return list(spec)
    return [spec] * len(names)


def _per_output_metrics(spec, names: list[str]) -> list[list]:
    """tf_keras's metrics argument: a list for every output, a list of lists in output order, or a dict."""
    if isinstance(spec, dict):
        _check_names(spec, names, "metrics")
        return [_as_list(spec.get(n)) for n in names]
    items = _as_list(spec)
    if items and all(isinstance(m, (list, tuple)) for m in items):
        if len(items) != len(names):
            raise ConfigError(f"metrics has {len(items)} lists for {len(names)} outputs")
        return [list(m) for m in items]
    return [list(items) for _ in names]


def _check_names(spec: dict, names: list[str], what: str) -> None:
    unknown = set(spec) - set(names)
    if unknown:
        raise ConfigError(f"{what} for unknown outputs {sorted(unknown)}; the outputs are {names}")


class Compiled:
    """What `compile` sets up: the optimizer, each output's loss and weight, and the metrics (built on the first
    batch, when the label shapes decide what 'accuracy' means)."""

    def __init__(self, model, optimizer="rmsprop", loss=None, metrics=None, loss_weights=None,
                 weighted_metrics=None):
        self.model = model
        self.optimizer = optimizers_mod.get(optimizer)
        self.output_names = list(model.output_names)
        self.loss_specs = _per_output(loss, self.output_names, "loss")
        self.losses = [None if s is None else _loss_object(s) for s in self.loss_specs]
        weights = _per_output(loss_weights, self.output_names, "loss_weights", 1.0)
        self.loss_weights = [1.0 if w is None else float(w) for w in weights]
        self.metric_specs = _per_output_metrics(metrics, self.output_names)
        self.weighted_specs = _per_output_metrics(weighted_metrics, self.output_names)
        self.loss_tracker = metrics_mod.Mean(name="loss")
        multi = len(self.output_names) > 1
        self.output_loss_trackers = [metrics_mod.Mean(name=f"{n}_loss") if multi and self.losses[i] is not None
                                     else None for i, n in enumerate(self.output_names)]
        self.metrics: list[list] | None = None  # per output: (log name, Metric, weighted)
        self.from_file: tuple | None = None  # (training_config, optimizer_weights) a load compiled from, untrained
        self.threads = StepThreads()  # BLAS threads per step, measured (runtime/blas_threads.py)

    def build_metrics(self, ys: list, outs: list) -> None:
        multi = len(self.output_names) > 1
        built = []
        for i, name in enumerate(self.output_names):
            entries = []
            for specs, weighted in ((self.metric_specs[i], False), (self.weighted_specs[i], True)):
                for spec in specs:
                    metric = metrics_mod.compile_metric(spec, self.loss_specs[i], np.shape(outs[i]),
                                                        np.shape(ys[i]) if ys[i] is not None else None)
                    shown = metrics_mod.display_name(spec) if isinstance(spec, str) else metric.name
                    entries.append((f"{name}_{shown}" if multi else shown, metric, weighted))
            built.append(entries)
        self.metrics = built

    def reset(self) -> None:
        self.loss_tracker.reset_state()
        for t in self.output_loss_trackers:
            if t is not None:
                t.reset_state()
        for entries in self.metrics or []:
            for _, m, _ in entries:
                m.reset_state()

    # ------------------------------------------------------------------ losses
    def total_loss(self, ys: list, outs: list, sws: list, extra: list) -> tuple[Any, list]:
        """The weighted sum of the outputs' losses plus `extra` penalties, and each output's loss."""
        total, per_output = 0.0, []
        for i, loss in enumerate(self.losses):
            if loss is None or ys[i] is None:
                per_output.append(None)
                continue
            value = loss(ys[i], outs[i], sws[i])
            per_output.append(value)
            total = total + self.loss_weights[i] * value
        for penalty in extra:
            total = total + penalty
        return total, per_output

    def update(self, ys: list, outs: list, sws: list, total, per_output: list) -> None:
        batch = len(outs[0])
        if any(array_module.on_device(_value(o)) for o in outs):  # a device step: the metrics run on the host,
            host = _to_host                                         # with only what they read copied back
        else:
            host = _value
        self.loss_tracker.update_state(host(total), sample_weight=batch)
        for tracker, value in zip(self.output_loss_trackers, per_output):
            if tracker is not None and value is not None:
                tracker.update_state(host(value), sample_weight=batch)
        if self.metrics is None:
            self.build_metrics(ys, outs)
        if host is _to_host and any(self.metrics):
            ys, outs, sws = ([None if v is None else host(v) for v in vs] for vs in (ys, outs, sws))
        for i, entries in enumerate(self.metrics):
            for _, metric, weighted in entries:
                if ys[i] is not None:
                    metric.update_state(ys[i], outs[i], sws[i] if weighted else None)  # as tf_keras: only weighted_metrics see sample weights

    def logs(self) -> dict:
        out = {"loss": float(self.loss_tracker.result())}
        for tracker in self.output_loss_trackers:
            if tracker is not None:
                out[tracker.name] = float(tracker.result())
        for entries in self.metrics or []:
            for name, metric, _ in entries:
                out[name] = float(np.asarray(metric.result()))
        return out

    def metric_names(self) -> list[str]:
        names = ["loss"] + [t.name for t in self.output_loss_trackers if t is not None]
        return names + [n for entries in self.metrics or [] for n, _, _ in entries]


def _as_list(spec) -> list:
    if spec is None:
        return []
    return list(spec) if isinstance(spec, (list, tuple)) else [spec]


def _loss_object(spec):
    """A compile loss as a reducing Loss object (functions are wrapped as tf_keras's LossFunctionWrapper)."""
    obj = losses_mod.get(spec)
    if isinstance(obj, losses_mod.Loss):
        return obj
    if not callable(obj):
        raise ConfigError(f"could not interpret loss {spec!r}")
    name = spec if isinstance(spec, str) else getattr(obj, "__name__", "loss")
    return losses_mod.LossFunctionWrapper(obj, name=name)


def _to_host(x) -> np.ndarray:
    return array_module.to_host(_value(x))


def _value(x) -> np.ndarray:
    data = getattr(x, "data", x) if autodiff._is_var(x) else x
    return np.asarray(data)


def _as_list_of(data, n: int) -> list:
    if n == 1 and not isinstance(data, (list, tuple)):
        return [data]
    if data is None:
        return [None] * n
    return list(data)


# ---------------------------------------------------------------------------------------------- steps


def _penalties(model) -> list:
    """The regularization penalty of every trainable weight with a regularizer (on the tape's values)."""
    out = []
    for layer in _all_layers(model):
        if not getattr(layer, "trainable", True):
            continue
        for w in layer.trainable_weights:
            fn = regularizers.regularizer(regularizers.weight_argument(layer, w, "regularizer"))
            if fn is not None:
                out.append(fn(w.value))
    return out


def _all_layers(model) -> list:
    layers = []
    for layer in getattr(model, "layers", []):
        inner = getattr(layer, "layers", None)
        layers.extend(_all_layers(layer) if inner is not None and hasattr(layer, "_graph") else [layer])
    return layers


def _constrain(model) -> None:
    for layer in _all_layers(model):
        for w in layer.trainable_weights:
            fn = regularizers.constraint(regularizers.weight_argument(layer, w, "constraint"))
            if fn is not None:
                w.value = np.asarray(fn(w.value), dtype=w.dtype)


@contextlib.contextmanager
def _placed(model, compiled: Compiled, *batch) -> Iterator[tuple]:
    """A step on the `array_module.device` block's module: the model's weights and the optimizer's state there
    (moved once, they stay until something outside a step reads them); yields `batch` (x, y, sample weights)
    moved there too."""
    module = array_module.current()
    if module is np:
        yield batch
        return
    with array_module.step(module):
        for w in model.weights:
            w.place(module)
        compiled.optimizer.place(module)
        yield tuple(array_module.to_module(v, module) for v in batch)


def train_step(model, compiled: Compiled, x, y, sample_weight) -> dict:
    """One optimizer step on one batch; returns the running logs."""
    with _placed(model, compiled, x, y, sample_weight) as batch:
        return _train_step(model, compiled, *batch)


def _train_step(model, compiled: Compiled, x, y, sample_weight) -> dict:
    compiled.from_file = None  # the state now moves on from the file's
    n_out = len(compiled.output_names)
    ys, sws = _as_list_of(y, n_out), _as_list_of(sample_weight, n_out)
    seen: dict = {}
    activity = _activity_regularizers(model)

    def observe(node, outs):
        fn = activity.get(id(node.layer))
        if fn is not None:
            seen.setdefault("activity", []).extend(fn(o) / np.float32(len(o)) for o in outs)

    def loss_fn(outputs):
        outs = _as_list_of(outputs, n_out)
        total, per_output = compiled.total_loss(ys, outs, sws, _penalties(model) + seen.get("activity", []))
        seen["outs"], seen["total"], seen["per_output"] = outs, total, per_output
        return total

    with logits.tracking():  # the crossentropy losses and metrics read a softmax/sigmoid output's logits
        _, grads = autodiff.gradients(model, x, loss_fn, training=True, observe=observe if activity else None)
        compiled.optimizer.apply_gradients([(g, w) for w, g in grads.items()])
        _constrain(model)
        outs = [_value(o) for o in seen["outs"]]
        compiled.update(ys, outs, sws, seen["total"], seen["per_output"])
    return compiled.logs()


def _activity_regularizers(model) -> dict:
    out = {}
    for layer in _all_layers(model):
        fn = regularizers.regularizer(getattr(layer, "activity_regularizer", None))
        if fn is not None:
            out[id(layer)] = fn
    return out


def test_step(model, compiled: Compiled, x, y, sample_weight) -> dict:
    """One evaluation step on one batch; returns the running logs."""
    with _placed(model, compiled, x, y, sample_weight) as batch:
        return _test_step(model, compiled, *batch)


def _test_step(model, compiled: Compiled, x, y, sample_weight) -> dict:
    n_out = len(compiled.output_names)
    ys, sws = _as_list_of(y, n_out), _as_list_of(sample_weight, n_out)
    from .numpy_engine import run_graph

    activity = _activity_regularizers(model)
    penalties = _penalties(model)

    def observe(node, outs):
        fn = activity.get(id(node.layer))
        if fn is not None:
            penalties.extend(fn(o) / np.float32(len(o)) for o in outs)

    model._ensure_built(x)
    with logits.tracking():
        outs = run_graph(model._graph, model._standardize_inputs(x), observe=observe if activity else None)[0]
        total, per_output = compiled.total_loss(ys, outs, sws, penalties)
        compiled.update(ys, outs, sws, total, per_output)
    return compiled.logs()


# ---------------------------------------------------------------------------------------------- loops

_LEGACY_FIT = {"nb_epoch": "epochs", "samples_per_epoch": "steps_per_epoch", "nb_val_samples": "validation_steps"}


def legacy_kwargs(kwargs: dict, renames: dict, dropped: tuple = ("show_accuracy",)) -> dict:
    """Keras 1 keyword names mapped to today's (with a deprecation warning); unknown keywords are an error."""
    out = {}
    for key, value in kwargs.items():
        if key in renames:
            warnings.warn(f"`{key}` is deprecated, use `{renames[key]}`", DeprecationWarning, stacklevel=3)
            out[renames[key]] = value
        elif key in dropped:
            warnings.warn(f"`{key}` is deprecated and ignored (metrics are set in compile)", DeprecationWarning,
                          stacklevel=3)
        else:
            raise TypeError(f"unknown keyword argument '{key}'")
    return out


def _require_compiled(model):
    compiled = getattr(model, "_compiled", None)
    if compiled is None:
        raise ConfigError("You must compile your model before training/testing. Use `model.compile(optimizer, "
                          "loss)`.", layer=model.name)
    if all(loss is None for loss in compiled.losses):
        raise ConfigError("the model was compiled without a loss; compile it with one to train or evaluate",
                          layer=model.name)
    return compiled


def fit(model, x=None, y=None, batch_size=None, epochs=1, verbose=1, callbacks=None, validation_split=0.0,
        validation_data=None, shuffle=True, class_weight=None, sample_weight=None, initial_epoch=0,
        steps_per_epoch=None, validation_steps=None, validation_batch_size=None, validation_freq=1):
    """`Model.fit` as tf_keras 2.x runs it; returns the History callback."""
    from .data_adapter import split_validation

    compiled = _require_compiled(model)
    (x, y, sample_weight), validation_data = split_validation(x, y, sample_weight, validation_split,
                                                              validation_data)
    handler = DataHandler(x, y, sample_weight, batch_size=batch_size, steps_per_epoch=steps_per_epoch,
                          initial_epoch=initial_epoch, epochs=epochs, shuffle=shuffle, class_weight=class_weight,
                          input_names=model.input_names, output_names=model.output_names)
    cbs = callbacks if isinstance(callbacks, CallbackList) else CallbackList(
        callbacks, add_history=True, add_progbar=verbose != 0, model=model, verbose=verbose, epochs=epochs,
        steps=handler.inferred_steps)
    model.stop_training = False
    cbs.on_train_begin()
    training_logs = None
    logs: dict = {}
    for epoch, steps in handler.epochs():
        compiled.reset()
        cbs.on_epoch_begin(epoch)
        for step, batch in steps:
            cbs.on_train_batch_begin(step)
            bx, by, bsw = unpack_x_y_sample_weight(batch)
            with compiled.threads.step():
                logs = train_step(model, compiled, bx, by, bsw)
            cbs.on_train_batch_end(step + 1, logs)
            if model.stop_training:
                break
        epoch_logs = copy.copy(logs)
        if validation_data is not None and _should_eval(epoch, validation_freq):
            vx, vy, vsw = validation_data
            val_logs = evaluate(model, vx, vy, batch_size=validation_batch_size or batch_size, sample_weight=vsw,
                                steps=validation_steps, verbose=0, return_dict=True, _internal=True)
            epoch_logs.update({"val_" + k: v for k, v in val_logs.items()})
        cbs.on_epoch_end(epoch, epoch_logs)
        training_logs = epoch_logs
        if model.stop_training:
            break
    cbs.on_train_end(logs=training_logs)
    return model.history


def _should_eval(epoch: int, freq) -> bool:
    if isinstance(freq, int):
        return (epoch + 1) % freq == 0
    return (epoch + 1) in freq


def evaluate(model, x=None, y=None, batch_size=None, verbose=1, sample_weight=None, steps=None, callbacks=None,
             return_dict=False, _internal: bool = False):
    """`Model.evaluate`: the loss and metrics over the data (a scalar, a list, or a dict with return_dict)."""
    compiled = _require_compiled(model)
    handler = DataHandler(x, y, sample_weight, batch_size=batch_size, steps_per_epoch=steps, shuffle=False,
                          input_names=model.input_names, output_names=model.output_names)
    cbs = callbacks if isinstance(callbacks, CallbackList) else CallbackList(
        callbacks, add_progbar=verbose != 0 and not _internal, model=model, verbose=verbose, epochs=1,
        steps=handler.inferred_steps)
    compiled.reset()
    cbs.on_test_begin()
    logs: dict = {}
    for _, steps_iter in handler.epochs():
        for step, batch in steps_iter:
            cbs.on_test_batch_begin(step)
            bx, by, bsw = unpack_x_y_sample_weight(batch)
            with compiled.threads.current():
                logs = test_step(model, compiled, bx, by, bsw)
            cbs.on_test_batch_end(step + 1, logs)
    cbs.on_test_end(logs)
    if return_dict:
        return dict(logs)
    values = [logs[n] for n in compiled.metric_names() if n in logs]
    return values[0] if len(values) == 1 else values


def train_on_batch(model, x, y=None, sample_weight=None, class_weight=None, reset_metrics=True,
                   return_dict=False):
    compiled = _require_compiled(model)
    if class_weight:
        from .data_adapter import class_weight_fn

        x, y, sample_weight = class_weight_fn(class_weight)(x, y, sample_weight)
    if reset_metrics:
        compiled.reset()
    with compiled.threads.step():
        logs = train_step(model, compiled, x, y, sample_weight)
    return _batch_result(compiled, logs, return_dict)


def test_on_batch(model, x, y=None, sample_weight=None, reset_metrics=True, return_dict=False):
    compiled = _require_compiled(model)
    if reset_metrics:
        compiled.reset()
    with compiled.threads.current():
        logs = test_step(model, compiled, x, y, sample_weight)
    return _batch_result(compiled, logs, return_dict)


def _batch_result(compiled: Compiled, logs: dict, return_dict: bool):
    if return_dict:
        return dict(logs)
    values = [logs[n] for n in compiled.metric_names() if n in logs]
    return values[0] if len(values) == 1 else values


def compile_model(model, optimizer="rmsprop", loss=None, metrics=None, loss_weights=None, weighted_metrics=None,
                  **kwargs) -> Compiled:
    """Set up training for `model` (what `Model.compile` calls)."""
    for key in ("run_eagerly", "steps_per_execution", "jit_compile", "sample_weight_mode", "target_tensors",
                "pss_evaluation_shards", "auto_scale_loss"):
        kwargs.pop(key, None)
    if kwargs:
        raise TypeError(f"compile() got unexpected keyword arguments {sorted(kwargs)}")
    return Compiled(model, optimizer, loss, metrics, loss_weights, weighted_metrics)


