"""A compiled model's training state in the whole-model `.h5` file, as tf_keras writes and reads it: the
`training_config` attribute (loss, metrics, loss weights, the optimizer's config) and the `optimizer_weights`
group (the optimizer's variables in its own order), so that `load_model` recompiles and training resumes where it
stopped. Files from any Keras writer are read: Keras 2 configs (legacy optimizers, `lr`), TF 2.11+
(`Custom>Adam`), Keras 3 (`module`/`registered_name` forms). Keras 3's `.keras` archives carry the same state as
`compile_config` plus the optimizer's variables under `optimizer/vars`: `recompile_keras3` reads it and
`keras3_compiled_state` produces it for kconvert's `.keras` writer; `keras3_h5_training_state` gives what Keras 3's
legacy `.h5` holds and `keras3_optimizer_variables` what its `save_weights` stores.
"""

from __future__ import annotations

import warnings

import numpy as np

from .. import losses as losses_mod
from .. import metrics as metrics_mod
from .. import optimizers as optimizers_mod
from ..errors import KConvertError


def _optimizer_config(optimizer) -> dict:
    config = {"class_name": type(optimizer).__name__, "config": optimizer.get_config()}
    if optimizer.dialect == "tf_keras":  # tf_keras 2.11+ registers its optimizers as Custom>Name
        config["class_name"] = f"Custom>{config['class_name']}"
    return config


def _loss_entry(spec):
    if spec is None or isinstance(spec, str):
        return spec
    return losses_mod.serialize(spec)


def _metric_entry(metric):
    return metrics_mod.serialize(metric)


def training_config(model) -> dict | None:
    """The `training_config` tf_keras would write for `model` (None when it is not compiled); a model compiled
    from a file and not trained since writes the file's own configuration back."""
    compiled = getattr(model, "_compiled", None)
    if compiled is None:
        return None
    if compiled.from_file is not None:
        return compiled.from_file[0]
    cfg = getattr(model, "compiled_config", None) or {}
    loss = cfg.get("loss")
    if isinstance(loss, dict):
        loss = {k: _loss_entry(v) for k, v in loss.items()}
    elif isinstance(loss, (list, tuple)):
        loss = [_loss_entry(v) for v in loss]
    else:
        loss = _loss_entry(loss)
    if compiled.metrics is not None:  # built: the resolved metric objects, per output, as tf_keras records them
        metrics = [[_metric_entry(m) for _, m, weighted in entries if not weighted] for entries in compiled.metrics]
        weighted = [[_metric_entry(m) for _, m, w in entries if w] for entries in compiled.metrics]
        weighted = weighted if any(weighted) else None
    else:  # never trained: what the user gave, as tf_keras writes it then
        metrics, weighted = _user_metrics(cfg.get("metrics")), _user_metrics(cfg.get("weighted_metrics"))
    return {"loss": loss, "metrics": metrics, "weighted_metrics": weighted, "loss_weights": cfg.get("loss_weights"),
            "optimizer_config": _optimizer_config(compiled.optimizer)}


def _user_metrics(spec):
    if spec is None or isinstance(spec, str):
        return spec
    if isinstance(spec, dict):
        return {k: _user_metrics(v) for k, v in spec.items()}
    if isinstance(spec, (list, tuple)):
        return [_user_metrics(v) for v in spec]
    return _metric_entry(spec)


def optimizer_weights(model) -> list[tuple[str, np.ndarray]] | None:
    """(name, value) of the optimizer's variables, as `optimizer_weights` holds them (None before any step)."""
    compiled = getattr(model, "_compiled", None)
    if compiled is not None and compiled.from_file is not None:
        return compiled.from_file[1]
    if compiled is None or not getattr(compiled.optimizer, "_built", False):
        return None
    return [(w.name, np.asarray(w.value)) for w in compiled.optimizer.variables()]


def _dialect(keras_version: str | None, optimizer_config: dict) -> str | None:
    """Which Keras's optimizer rules a file's optimizer follows."""
    name = str(optimizer_config.get("class_name", ""))
    if name.startswith("Custom>"):
        return "tf_keras"
    inner = optimizer_config.get("config") or {}
    if inner.get("is_legacy_optimizer") is False or "jit_compile" in inner:
        return "tf_keras"
    major = int(str(keras_version or "2").split(".")[0] or 2) if str(keras_version or "2")[0].isdigit() else 2
    if major >= 3:
        return "keras3"
    return "legacy"


def _loss_from(entry):
    if entry is None or isinstance(entry, str):
        return entry
    if isinstance(entry, dict) and "class_name" in entry:
        return losses_mod.deserialize(entry)
    if isinstance(entry, dict):
        return {k: _loss_from(v) for k, v in entry.items()}
    if isinstance(entry, list):
        return [_loss_from(v) for v in entry]
    return entry


def _metrics_from(entry):
    if entry is None:
        return None
    if isinstance(entry, dict) and "class_name" not in entry:  # by output name
        return {k: _metrics_from(v) for k, v in entry.items()}
    if isinstance(entry, list):
        return [_metrics_from(v) for v in entry]
    return metrics_mod.deserialize(entry) if isinstance(entry, dict) else entry


def recompile(model, config: dict, saved_optimizer_weights, keras_version: str | None, file: str) -> bool:
    """Compile `model` from a file's training_config and restore its optimizer state; a configuration kconvert
    cannot read is a warning and the model stays uncompiled (as Keras warns for missing configs)."""
    try:
        opt_config = config.get("optimizer_config")
        optimizer = optimizers_mod.deserialize(opt_config, dialect=_dialect(keras_version, opt_config)) \
            if opt_config else "rmsprop"
        model.compile(optimizer=optimizer, loss=_loss_from(config.get("loss")),
                      metrics=_metrics_from(config.get("metrics")),
                      loss_weights=config.get("loss_weights"),
                      weighted_metrics=_metrics_from(config.get("weighted_metrics")))
    except (KConvertError, ValueError, TypeError, KeyError) as e:
        warnings.warn(f"{file}: the training configuration could not be restored ({e}); the model is not "
                      "compiled", stacklevel=3)
        return False
    model._compiled.from_file = (config, saved_optimizer_weights)
    if saved_optimizer_weights:
        try:
            opt = model._compiled.optimizer
            values = [np.asarray(v) for _, v in saved_optimizer_weights]
            if len(values) == len(opt.variables()) and int(values[0]) == 0:
                return True  # saved before its first step: only the iteration count and learning rate, as compiled
            opt.build(model.trainable_weights)
            opt.set_weights(values)
        except (KConvertError, ValueError, TypeError) as e:
            warnings.warn(f"{file}: the optimizer state could not be restored ({e}); training restarts it",
                          stacklevel=3)
    return True


# ---------------------------------------------------------------------------------------------- Keras 3 archives


def _keras3_entry(entry, serialize):
    """A loss/metric spec as Keras 3's `compile_config` holds it: names as given, functions by name, objects
    serialized with Keras 3's config keys (no tf_keras `fn`; reduction "auto" is Keras 3's "sum_over_batch_size")."""
    if entry is None or isinstance(entry, str):
        return entry
    if isinstance(entry, dict):
        return {k: _keras3_entry(v, serialize) for k, v in entry.items()}
    if isinstance(entry, (list, tuple)):
        return [_keras3_entry(v, serialize) for v in entry]
    out = serialize(entry)
    if out.get("class_name") == "function":
        return out["config"]
    config = {k: v for k, v in out["config"].items() if k != "fn"}
    if config.get("reduction") == "auto":
        config["reduction"] = "sum_over_batch_size"
    return {**out, "config": config}


def _keras3_twin(optimizer):
    """The optimizer as a Keras 3 one (same hyperparameters, state and update rules), or None for the legacy
    (Keras 2) optimizers, whose rules (`decay`, epsilon placement, Nadam's schedule) Keras 3 does not have."""
    if optimizer.dialect == "keras3":
        return optimizer
    if optimizer.dialect == "legacy":
        return None
    config = {k: v for k, v in optimizer.get_config().items() if k not in ("jit_compile", "is_legacy_optimizer")}
    if not config.get("use_ema"):
        config["ema_overwrite_frequency"] = None  # tf_keras's RMSprop defaults it to 100, Keras 3 to None
    twin = type(optimizer).from_config(config, dialect="keras3")
    if optimizer._built:
        twin.build(optimizer._weights)
        twin.iterations = optimizer.iterations
        twin._slots = {key: [v.copy() for v in optimizer._slots[key]] for key in twin._slots}
        twin._extra = {key: np.array(v) for key, v in optimizer._extra.items()}
    return twin


def _keras3_compiled(model, target: str, stacklevel: int):
    """(the optimizer as Keras 3's, the compile arguments as Keras 3 records them) of a compiled model; None with a
    warning when its optimizer follows the legacy Keras 2 rules (the `target` is then written without them)."""
    twin = _keras3_twin(model._compiled.optimizer)
    if twin is None:
        warnings.warn(f"model {model.name}: its optimizer follows the legacy Keras 2 rules, which Keras 3 does not "
                      f"have; the {target} is written without the training configuration", stacklevel=stacklevel)
        return None
    cfg = getattr(model, "compiled_config", None) or {}
    return twin, {"loss": _keras3_entry(cfg.get("loss"), losses_mod.serialize),
                  "loss_weights": cfg.get("loss_weights"),
                  "metrics": _keras3_entry(cfg.get("metrics"), metrics_mod.serialize),
                  "weighted_metrics": _keras3_entry(cfg.get("weighted_metrics"), metrics_mod.serialize),
                  "run_eagerly": False, "steps_per_execution": 1, "jit_compile": False}


def keras3_compiled_state(model) -> tuple[dict, tuple[str, list[np.ndarray]]] | None:
    """(compile_config, (optimizer name, its variables in Keras 3's `optimizer/vars` order)) that Keras 3 writes into
    a `.keras` archive for `model`'s compiled state (an optimizer before its first step has only its iteration count
    and learning rate); None when there is none to write, or when the model was compiled from a Keras 3 archive and
    not trained since (the archive's own state is written back)."""
    compiled = getattr(model, "_compiled", None)
    if compiled is None:
        return None
    if compiled.from_file is not None and getattr(model, "_keras3_compile_config", None) is not None:
        return None
    found = _keras3_compiled(model, ".keras archive", stacklevel=5)
    if found is None:
        return None
    twin, entries = found
    compile_config = {"optimizer": optimizers_mod.serialize(twin), **entries}
    return compile_config, (twin.name, [np.asarray(w.value) for w in twin.variables()])


def keras3_optimizer_variables(model) -> tuple[str, list[np.ndarray]] | None:
    """(optimizer name, its current variables in Keras 3's order) as Keras 3's `save_weights` stores them under
    `optimizer/vars`; None for a model that is not compiled (or whose optimizer Keras 3 does not have)."""
    if getattr(model, "_compiled", None) is None:
        return None
    found = _keras3_compiled(model, "weights file", stacklevel=4)
    if found is None:
        return None
    twin = found[0]
    return twin.name, [np.asarray(w.value) for w in twin.variables()]


def _legacy_form(entry):
    """A Keras 3 `compile_config` entry as Keras 3's legacy `.h5` writer serializes it: objects as
    `{"class_name", "config"}` (no `module` / `registered_name`), names and functions as strings."""
    if isinstance(entry, dict) and "class_name" in entry:
        return {"class_name": entry["class_name"], "config": entry.get("config")}
    if isinstance(entry, dict):
        return {k: _legacy_form(v) for k, v in entry.items()}
    if isinstance(entry, (list, tuple)):
        return [_legacy_form(v) for v in entry]
    return entry


def _major(keras_version) -> int:
    head = str(keras_version or "").split(".")[0]
    return int(head) if head.isdigit() else 0


def keras3_h5_training_state(model, variable_paths: dict[int, str] | None = None
                             ) -> tuple[dict | None, list[tuple[str, np.ndarray]] | None] | None:
    """(training_config, optimizer_weights) that Keras 3's legacy `.h5` writer stores for a compiled `model`:
    `model._compile_config` less the optimizer, plus `optimizer_config` (registered class name and Keras 3 config),
    and `optimizer.variables` by their paths (`sgd/iteration`, `sgd/learning_rate`, `sgd/<var>_momentum`, ...;
    `variable_paths` maps id(weight) to its Keras 3 path, `seq/dense/kernel`, for the slot names).
    None when the model is not compiled; a model compiled from a Keras 3 `.h5` and not trained since gives the
    file's own state back."""
    compiled = getattr(model, "_compiled", None)
    if compiled is None:
        return None
    if (compiled.from_file is not None and getattr(model, "_keras3_compile_config", None) is None
            and _major(getattr(model, "_source_keras_version", None)) >= 3):
        return compiled.from_file
    found = _keras3_compiled(model, "Keras 3 .h5 file", stacklevel=5)
    if found is None:
        return None, None
    twin, entries = found
    config = {**_legacy_form(entries),
              "optimizer_config": {"class_name": type(twin).__name__, "config": twin.get_config()}}
    return config, [(w.name, np.asarray(w.value)) for w in twin.variables(variable_paths)]


def recompile_keras3(model, compile_config: dict, optimizer_state, file: str) -> bool:
    """Compile `model` from a Keras 3 archive's `compile_config` and restore the optimizer variables saved in the
    archive's weights (`optimizer/vars/<i>`, in Keras 3's order)."""
    config = {"loss": compile_config.get("loss"), "metrics": compile_config.get("metrics"),
              "weighted_metrics": compile_config.get("weighted_metrics"),
              "loss_weights": compile_config.get("loss_weights"), "optimizer_config": compile_config.get("optimizer")}
    saved = None
    if optimizer_state is not None and optimizer_state.vars:
        saved = [(f"optimizer/vars/{i}", v) for i, v in enumerate(optimizer_state.vars)]
    return recompile(model, config, saved, "3", file)
