"""Optimizers as `keras.optimizers` has them, updating kconvert `Weight`s in place with Keras's exact rules.

Three dialects, one per kind of Keras that may have written a model file (`dialect=`):

- ``"tf_keras"`` (the default): tf_keras 2.11+ `tf_keras.optimizers.*`. Clipping is exclusive (clipnorm, else
  global_clipnorm, else clipvalue), `weight_decay` is applied before the update, `variables()` is
  `iteration:0` then the slots in creation order (`Adam/m/<var>:0`, `Adam/v/<var>:0` interleaved per weight).
- ``"legacy"``: tf_keras's `optimizers.legacy` (OptimizerV2: TF 2.0-2.10, and what tf_keras builds from a
  config without `is_legacy_optimizer`, i.e. Keras 2 files). It has `decay` (lr / (1 + decay * iterations)),
  applies clipvalue, clipnorm and global_clipnorm in turn, and differs in numerics: RMSprop without momentum and
  Adagrad put epsilon outside the square root, Nadam's momentum schedule is 0.96 ** (decay * t) with
  `decay` = schedule_decay (0.004). `variables()` is `Adam/iter:0`, then one slot kind for every weight in turn
  (`Adam/<var>/m:0` ... `Adam/<var>/v:0` ...). Passing `decay` (or `lr`) without a dialect picks it.
- ``"keras3"``: Keras 3. Its update rules equal tf_keras's for these optimizers (checked against its source;
  `tests/test_optimizers.py` runs both); it differs in `variables()` (`adam/iteration`, `adam/learning_rate`,
  then `adam/<var_path>_momentum`, `..._velocity`; SGD has no slot without momentum; Nadam's `u_product` last)
  and in `get_config` (snake-case names, `loss_scale_factor`, `gradient_accumulation_steps`).

All arithmetic is float32, in the order the reference writes it, so that results agree to rounding.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from .custom_objects import get_custom_object
from .errors import ConfigError
from .layers.base import Weight
from .ops.array_module import full, is_array, to_device
from .runtime.blockwise import blockwise

__all__ = ["Optimizer", "SGD", "RMSprop", "Adagrad", "Adadelta", "Adam", "Adamax", "Nadam", "AdamW", "get",
           "serialize", "deserialize", "schedules", "DIALECTS"]

DIALECTS = ("tf_keras", "legacy", "keras3")
_F32 = np.float32


def _snake(name: str) -> str:
    """Keras 3's `to_snake_case`."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


# ---------------------------------------------------------------------------------------------- schedules


class LearningRateSchedule:
    """Base of learning-rate schedules: `schedule(step) -> float32 learning rate`."""

    def __call__(self, step) -> np.float32:
        raise NotImplementedError

    def get_config(self) -> dict:
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: dict) -> LearningRateSchedule:
        return cls(**config)


class _StepDecay(LearningRateSchedule):
    """The schedules of (initial_learning_rate, decay_steps, decay_rate, staircase): `_rate(p)` with p = step /
    decay_steps (floored with `staircase`)."""

    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase: bool = False, name=None):
        self.initial_learning_rate, self.decay_steps, self.decay_rate = initial_learning_rate, decay_steps, decay_rate
        self.staircase, self.name = staircase, name

    def __call__(self, step) -> np.float32:
        p = _F32(step) / _F32(self.decay_steps)
        if self.staircase:
            p = np.floor(p)
        return self._rate(p)

    def _rate(self, p) -> np.float32:
        raise NotImplementedError

    def get_config(self) -> dict:
        return {"initial_learning_rate": self.initial_learning_rate, "decay_steps": self.decay_steps,
                "decay_rate": self.decay_rate, "staircase": self.staircase, "name": self.name}


class ExponentialDecay(_StepDecay):
    """lr * decay_rate ** (step / decay_steps) (floored with `staircase`)."""

    def _rate(self, p) -> np.float32:
        return _F32(self.initial_learning_rate) * np.power(_F32(self.decay_rate), p)


class InverseTimeDecay(_StepDecay):
    """lr / (1 + decay_rate * step / decay_steps) (floored with `staircase`)."""

    def _rate(self, p) -> np.float32:
        return _F32(self.initial_learning_rate) / (_F32(1) + _F32(self.decay_rate) * p)


class PiecewiseConstantDecay(LearningRateSchedule):
    """values[i] while boundaries[i-1] < step <= boundaries[i]."""

    def __init__(self, boundaries, values, name=None):
        if len(boundaries) != len(values) - 1:
            raise ConfigError(f"PiecewiseConstantDecay needs one value more than boundaries, got {len(boundaries)} "
                              f"boundaries and {len(values)} values")
        self.boundaries, self.values, self.name = boundaries, values, name

    def __call__(self, step) -> np.float32:
        index = int(np.searchsorted(np.asarray(self.boundaries), step, side="left"))
        return _F32(self.values[index])

    def get_config(self) -> dict:
        return {"boundaries": self.boundaries, "values": self.values, "name": self.name}


class CosineDecay(LearningRateSchedule):
    """Cosine decay from the initial rate (or from `warmup_target` after a linear warmup) down to alpha * rate."""

    def __init__(self, initial_learning_rate, decay_steps, alpha=0.0, name=None, warmup_target=None,
                 warmup_steps=0):
        self.initial_learning_rate, self.decay_steps, self.alpha, self.name = (initial_learning_rate, decay_steps,
                                                                               alpha, name)
        self.warmup_target, self.warmup_steps = warmup_target, warmup_steps

    def _decay(self, step, decay_steps, decay_from):
        fraction = step / decay_steps
        cosine = _F32(0.5) * (_F32(1.0) + np.cos(_F32(math.pi) * fraction))
        return decay_from * ((1 - self.alpha) * cosine + self.alpha)

    def __call__(self, step) -> np.float32:
        initial, decay_steps, step = _F32(self.initial_learning_rate), _F32(self.decay_steps), _F32(step)
        if self.warmup_target is None:
            return _F32(self._decay(np.minimum(step, decay_steps), decay_steps, initial))
        target, warmup = _F32(self.warmup_target), _F32(self.warmup_steps)
        step = np.minimum(step, decay_steps + warmup)
        if step < warmup:
            return _F32((target - initial) * (step / warmup) + initial)
        return _F32(self._decay(step - warmup, decay_steps, target))

    def get_config(self) -> dict:
        return {"initial_learning_rate": self.initial_learning_rate, "decay_steps": self.decay_steps,
                "alpha": self.alpha, "name": self.name, "warmup_target": self.warmup_target,
                "warmup_steps": self.warmup_steps}


_SCHEDULES = {c.__name__: c for c in (ExponentialDecay, InverseTimeDecay, PiecewiseConstantDecay, CosineDecay)}


class _Schedules:
    """`kconvert.optimizers.schedules`, as `keras.optimizers.schedules`."""

    LearningRateSchedule = LearningRateSchedule
    ExponentialDecay = ExponentialDecay
    InverseTimeDecay = InverseTimeDecay
    PiecewiseConstantDecay = PiecewiseConstantDecay
    CosineDecay = CosineDecay

    @staticmethod
    def serialize(schedule: LearningRateSchedule) -> dict:
        return {"module": "keras.optimizers.schedules", "class_name": type(schedule).__name__,
                "config": schedule.get_config(), "registered_name": None}

    @staticmethod
    def deserialize(config: dict) -> LearningRateSchedule:
        name = config.get("class_name")
        cls = _SCHEDULES.get(name) or get_custom_object(config.get("registered_name") or name)
        if cls is None:
            raise ConfigError(f"unknown learning rate schedule {name!r}")
        return cls.from_config(dict(config.get("config") or {}))


schedules = _Schedules()


# ---------------------------------------------------------------------------------------------- clipping


def _clip_by_norm(g: np.ndarray, clip: float) -> np.ndarray:
    l2sum = np.sum(np.square(g))
    l2norm = np.sqrt(l2sum) if l2sum > 0 else l2sum
    return g * g.dtype.type(clip) / np.maximum(l2norm, g.dtype.type(clip))


def _clip_by_global_norm(grads: list, clip: float) -> list:
    present = [g for g in grads if g is not None]
    use_norm = np.sqrt(sum(np.sum(np.square(g)) for g in present)) if present else _F32(0)
    clip = _F32(clip)
    scale = clip * np.minimum(_F32(1) / use_norm, _F32(1) / clip) if use_norm else _F32(1)
    return [None if g is None else g * scale.astype(g.dtype) for g in grads]


# ---------------------------------------------------------------------------------------------- base


class Optimizer:
    """Base of the optimizers: hyperparameters, clipping, weight decay, slots and their Keras names.

    Subclasses declare `_slot_groups()` (slot kinds created together, interleaved per weight, in tf_keras's
    order), the names of their slots in the other dialects, and `_update(g, w, slots, lr, step)` returning the
    new weight value and assigning new slot arrays into `slots`.
    """

    _legacy_names: dict[str, str] = {}
    _keras3_names: dict[str, str] = {}
    _hyper: tuple[str, ...] = ()  # constructor arguments in tf_keras's get_config order
    _legacy_float32: tuple[str, ...] = ()  # hyperparameters legacy get_config reports as np.float32
    _uses_decay = True  # legacy `decay` scales the learning rate (not Nadam's, which is its momentum schedule's)

    def __init__(self, name: str, learning_rate=0.001, weight_decay=None, clipnorm=None, clipvalue=None,
                 global_clipnorm=None, use_ema=False, ema_momentum=0.99, ema_overwrite_frequency=None,
                 jit_compile=True, dialect: str | None = None, **kwargs: Any):
        kwargs.pop("is_legacy_optimizer", None)
        for key in ("loss_scale_factor", "gradient_accumulation_steps"):  # Keras 3 keys, defaults only
            if kwargs.pop(key, None) is not None:
                raise ConfigError(f"optimizer {name}: '{key}' is not supported")
        lr = kwargs.pop("lr", None)
        if lr is not None:
            warnings.warn("`lr` is deprecated, use `learning_rate`", DeprecationWarning, stacklevel=3)
            learning_rate = lr
        decay = kwargs.pop("decay", None)
        if kwargs:
            raise ConfigError(f"optimizer {name}: unknown arguments {sorted(kwargs)}")
        if dialect is None:
            dialect = "legacy" if (decay is not None or lr is not None) else "tf_keras"
        if dialect not in DIALECTS:
            raise ConfigError(f"optimizer {name}: dialect must be one of {DIALECTS}, got {dialect!r}")
        if decay and dialect != "legacy":
            raise ConfigError(f"optimizer {name}: `decay` belongs to the legacy (Keras 2) optimizers; use a "
                              "LearningRateSchedule, or dialect='legacy'")
        if clipnorm is not None and global_clipnorm is not None:
            raise ConfigError(f"optimizer {name}: at most one of clipnorm and global_clipnorm can be set")
        if use_ema and dialect != "tf_keras":
            raise ConfigError(f"optimizer {name}: use_ema=True (a moving average of the weights) is supported with "
                              "tf_keras's rules only")
        if isinstance(learning_rate, dict):
            learning_rate = schedules.deserialize(learning_rate)
        self.dialect = dialect
        self.name = name if dialect != "keras3" or name != type(self).__name__ else _snake(name)
        self.learning_rate = learning_rate
        self.decay = float(decay or 0.0)
        self.weight_decay, self.clipnorm, self.clipvalue, self.global_clipnorm = (weight_decay, clipnorm, clipvalue,
                                                                                  global_clipnorm)
        self.use_ema, self.ema_momentum, self.ema_overwrite_frequency = use_ema, ema_momentum, ema_overwrite_frequency
        self.jit_compile = jit_compile
        self._exclude_ids: set[int] = set()
        self._exclude_names: list[str] = []
        self._built = False
        self._weights: list[Weight] = []
        self._index: dict[int, int] = {}
        self._slots: dict[str, list[np.ndarray]] = {}
        self._extra: dict[str, np.ndarray] = {}  # scalar state outside the per-weight slots (Nadam)
        self.iterations = 0

    # -- learning rate

    @property
    def learning_rate(self):
        """The current learning rate (a schedule's value at `iterations`); assignable when not a schedule."""
        if isinstance(self._learning_rate, LearningRateSchedule):
            return _F32(self._learning_rate(self.iterations))
        return self._learning_rate

    @learning_rate.setter
    def learning_rate(self, value) -> None:
        if isinstance(getattr(self, "_learning_rate", None), LearningRateSchedule) and not isinstance(
                value, LearningRateSchedule):
            raise ConfigError(f"optimizer {self.name} was created with a LearningRateSchedule; its learning rate "
                              "is not settable")
        self._learning_rate = value if isinstance(value, LearningRateSchedule) else _F32(value)

    lr = learning_rate

    def _current_lr(self) -> np.float32:
        lr = _F32(self.learning_rate)
        if self.dialect == "legacy" and self.decay > 0 and self._uses_decay:
            lr = lr / (_F32(1.0) + _F32(self.decay) * _F32(self.iterations))
        return lr

    # -- building and variables

    def _slot_groups(self) -> list[tuple[str, ...]]:
        raise NotImplementedError

    def _slot_init(self, key: str) -> float:
        return 0.0

    def build(self, weights: Iterable[Weight]) -> None:
        """Create the slots for `weights` (done by the first `apply_gradients`; a loader calls it before
        `set_weights` to restore a saved optimizer state)."""
        if self._built:
            return
        self._weights = list(weights)
        self._index = {id(w): i for i, w in enumerate(self._weights)}
        for group in self._all_slot_groups():
            for key in group:
                self._slots[key] = [w.value.copy() if key == "average" else
                                    full(w.shape, self._slot_init(key), w.dtype, like=w.value)
                                    for w in self._weights]
        self._build_extra()
        self._built = True

    def _build_extra(self) -> None:
        pass

    def place(self, module) -> None:
        """Move the slots and extra state to `module`'s device (numpy: the host), where the weights now live."""
        for key, arrays in self._slots.items():
            self._slots[key] = [to_device(a, module) for a in arrays]
        for key, value in self._extra.items():
            if is_array(value):
                self._extra[key] = to_device(value, module)

    def _all_slot_groups(self) -> list[tuple[str, ...]]:
        """tf_keras's base `build` creates the weights' moving averages (use_ema) before the subclass's slots."""
        return ([("average",)] if self.use_ema else []) + self._slot_groups()

    def _var_name(self, w: Weight, paths: dict[int, str] | None = None) -> str:
        if paths and id(w) in paths:
            return paths[id(w)]
        return w.name[:-2] if w.name.endswith(":0") else w.name

    def _slot_order(self) -> list[tuple[str, int]]:
        """(slot key, weight index) in the dialect's creation order."""
        groups = self._all_slot_groups()
        if self.dialect == "legacy":
            return [(key, i) for group in groups for key in group for i in range(len(self._weights))]
        return [(key, i) for group in groups for i in range(len(self._weights)) for key in group]

    def _slot_name(self, key: str, w: Weight, paths: dict[int, str] | None = None) -> str:
        var = self._var_name(w, paths)
        if self.dialect == "legacy":
            return f"{self.name}/{var}/{self._legacy_names.get(key, key)}:0"
        if self.dialect == "keras3":
            return f"{self.name}/{var.replace('/', '_')}_{self._keras3_names.get(key, key)}"
        return f"{self.name}/{key}/{var}:0"

    def _extra_variables(self) -> list[tuple[str, str, int]]:
        """(name, key into _extra, position: 0 after iteration, -1 at the end)."""
        return []

    def variables(self, variable_paths: dict[int, str] | None = None) -> list[Weight]:
        """The optimizer's state as Keras saves it (`optimizer_weights`), in the writer's order and names;
        `variable_paths` (id(weight) -> Keras 3 path, `seq/dense/kernel`) overrides the names the slots derive from."""
        if self.dialect == "legacy":
            head = [Weight(f"{self.name}/iter:0", np.asarray(self.iterations, np.int64), trainable=False)]
        elif self.dialect == "keras3":
            head = [Weight(f"{self.name}/iteration", np.asarray(self.iterations, np.int64), trainable=False)]
            if not self._keras3_schedule():  # Keras 3 keeps no learning_rate variable for a schedule
                head.append(Weight(f"{self.name}/learning_rate", np.asarray(self.learning_rate, np.float32),
                                   trainable=False))
        else:
            head = [Weight("iteration:0", np.asarray(self.iterations, np.int64), trainable=False)]
        extras = [(Weight(n, self._extra[k], trainable=False), pos) for n, k, pos in self._extra_variables()]
        head += [w for w, pos in extras if pos == 0]
        slots = [Weight(self._slot_name(key, self._weights[i], variable_paths), self._slots[key][i], trainable=False)
                 for key, i in self._slot_order()]
        return head + slots + [w for w, pos in extras if pos == -1]

    def _keras3_schedule(self) -> bool:
        return isinstance(getattr(self, "_learning_rate", None), LearningRateSchedule)

    def get_weights(self) -> list[np.ndarray]:
        """Copies of the state (the slots are updated in place)."""
        return [np.array(w.value) for w in self.variables()]

    def set_weights(self, values: list) -> None:
        """Restore a state saved by `get_weights`/`variables()` (the optimizer must be built)."""
        if not self._built:
            raise ConfigError(f"optimizer {self.name}: call build(weights) before set_weights")
        current = self.variables()
        if len(values) != len(current):
            raise ConfigError(f"optimizer {self.name}: expected {len(current)} state arrays "
                              f"({', '.join(w.name for w in current)}), got {len(values)}")
        for w, v in zip(current, values):
            if np.shape(v) != w.shape:
                raise ConfigError(f"optimizer {self.name}: state '{w.name}' has shape {w.shape}, got {np.shape(v)}")
        values = [np.asarray(v) for v in values]
        self.iterations = int(values[0])
        pos = 1 + (self.dialect == "keras3" and not self._keras3_schedule())
        extras = self._extra_variables()
        for _, key, where in extras:
            if where == 0:
                self._extra[key] = values[pos].astype(self._extra[key].dtype)
                pos += 1
        for key, i in self._slot_order():
            self._slots[key][i] = values[pos].astype(self._weights[i].dtype)
            pos += 1
        for _, key, where in extras:
            if where == -1:
                self._extra[key] = values[pos].astype(self._extra[key].dtype)
                pos += 1

    # -- applying gradients

    def exclude_from_weight_decay(self, var_list=None, var_names=None) -> None:
        """Leave these weights (or those whose name matches one of `var_names`) out of weight decay."""
        if self._built:
            raise ConfigError("exclude_from_weight_decay() must be called before the optimizer is built")
        self._exclude_ids = {id(w) for w in var_list or ()}
        self._exclude_names = list(var_names or ())

    def _decays(self, w: Weight) -> bool:
        return id(w) not in self._exclude_ids and not any(re.search(n, w.name) for n in self._exclude_names)

    def _clip(self, grads: list) -> list:
        if self.dialect == "legacy":  # OptimizerV2: every configured transform, in this order
            if self.clipvalue is not None:
                grads = [None if g is None else np.clip(g, -self.clipvalue, self.clipvalue) for g in grads]
            if self.clipnorm is not None:
                grads = [None if g is None else _clip_by_norm(g, self.clipnorm) for g in grads]
            if self.global_clipnorm is not None:
                grads = _clip_by_global_norm(grads, self.global_clipnorm)
            return grads
        if self.clipnorm and self.clipnorm > 0:
            return [None if g is None else _clip_by_norm(g, self.clipnorm) for g in grads]
        if self.global_clipnorm and self.global_clipnorm > 0:
            return _clip_by_global_norm(grads, self.global_clipnorm)
        if self.clipvalue and self.clipvalue > 0:
            return [None if g is None else np.clip(g, -self.clipvalue, self.clipvalue) for g in grads]
        return grads

    def apply_gradients(self, grads_and_vars: Iterable) -> int:
        """Apply one step: `grads_and_vars` pairs (gradient array or None, Weight). Returns the iteration count."""
        pairs = list(grads_and_vars)
        if not pairs:
            return self.iterations
        self.build([w for _, w in pairs])
        for _, w in pairs:
            if id(w) not in self._index:
                raise ConfigError(f"optimizer {self.name} was built for other weights than '{w.name}'; build it "
                                  "with the full list of trainable weights")
        pairs = [(g, w) for g, w in pairs if g is not None]
        if not pairs:
            return self.iterations
        grads = self._clip([np.asarray(g, dtype=w.dtype) for g, w in pairs])
        lr = self._current_lr()
        if self.weight_decay is not None and self.dialect != "legacy":
            wd = _F32(self.weight_decay)
            for _, w in pairs:
                if self._decays(w):
                    w.value = w.value - w.value * wd * lr
        self._begin_step()
        for g, (_, w) in zip(grads, pairs):
            i = self._index[id(w)]
            slots = {key: self._slots[key][i] for key in self._slots}
            new = self._update(g, w.value, slots, lr.astype(w.dtype), self.iterations)
            for key, value in slots.items():
                self._slots[key][i] = value
            w.value = np.asarray(new, dtype=w.dtype)
        if self.use_ema:
            self._update_moving_averages([w for _, w in pairs])
        self.iterations += 1
        return self.iterations

    def _update_moving_averages(self, weights: list[Weight]) -> None:
        averages = self._slots["average"]
        for w in weights:
            i = self._index[id(w)]
            averages[i] = self.ema_momentum * averages[i] + (1 - self.ema_momentum) * w.value
        if self.ema_overwrite_frequency and (self.iterations + 1) % self.ema_overwrite_frequency == 0:
            self.finalize_variable_values(weights)

    def finalize_variable_values(self, weights: list[Weight]) -> None:
        """With use_ema, give the weights their moving averages (as Keras does at the end of `fit`)."""
        if self.use_ema:
            for w in weights:
                w.value = self._slots["average"][self._index[id(w)]].copy()

    def _begin_step(self) -> None:
        pass

    def _update(self, g, w, slots: dict, lr, step: int):
        raise NotImplementedError

    def minimize(self, loss: Callable, var_list: list[Weight]) -> int:
        """Differentiate `loss(*values)` (written with numpy/ops) w.r.t. the weights' values and apply."""
        from .runtime.autodiff import value_and_grad

        _, grads = value_and_grad(loss, [w.value for w in var_list])
        return self.apply_gradients(zip(grads, var_list))

    # -- configuration

    def _hyper_config(self) -> dict:
        return {k: getattr(self, k) for k in self._hyper}

    def _lr_config(self):
        if isinstance(self._learning_rate, LearningRateSchedule):
            return schedules.serialize(self._learning_rate)
        if self.dialect == "keras3":
            return float(self._learning_rate)
        return _F32(self._learning_rate)

    def get_config(self) -> dict:
        """The config dict the dialect's Keras writes for this optimizer."""
        if self.dialect == "legacy":
            config = {"name": self.name, "learning_rate": self._lr_config(), "decay": self.decay}
            for k, v in self._hyper_config().items():
                config[k] = _F32(v) if k in self._legacy_float32 else v
            for key in ("clipnorm", "global_clipnorm", "clipvalue"):
                if getattr(self, key) is not None:
                    config[key] = getattr(self, key)
            return config
        base = {"name": self.name}
        if self.dialect == "keras3":
            base["learning_rate"] = self._lr_config()
        base.update({"weight_decay": self.weight_decay, "clipnorm": self.clipnorm,
                     "global_clipnorm": self.global_clipnorm, "clipvalue": self.clipvalue, "use_ema": self.use_ema,
                     "ema_momentum": self.ema_momentum, "ema_overwrite_frequency": self.ema_overwrite_frequency})
        if self.dialect == "keras3":
            base.update({"loss_scale_factor": None, "gradient_accumulation_steps": None})
        else:
            base.update({"jit_compile": False, "is_legacy_optimizer": False, "learning_rate": self._lr_config()})
        return {**base, **self._hyper_config()}

    @classmethod
    def from_config(cls, config: dict, dialect: str | None = None) -> Optimizer:
        """An optimizer from its config; the dialect is inferred from the config's keys unless given."""
        config = dict(config)
        if dialect is None:
            dialect = _infer_dialect(config)
        if isinstance(config.get("learning_rate"), dict):
            config["learning_rate"] = schedules.deserialize(config["learning_rate"])
        return cls(dialect=dialect, **config)


def _infer_dialect(config: dict) -> str:
    """As tf_keras decides between its optimizers: `is_legacy_optimizer` False means the 2.11+ optimizer; a
    non-empty config without it is a legacy one. Keras 3's own keys mark its configs."""
    if "is_legacy_optimizer" in config:
        return "legacy" if config["is_legacy_optimizer"] else "tf_keras"
    if "loss_scale_factor" in config or "gradient_accumulation_steps" in config:
        return "keras3"
    return "legacy" if config else "tf_keras"


# ---------------------------------------------------------------------------------------------- optimizers


class SGD(Optimizer):
    """Gradient descent with momentum and Nesterov momentum."""

    _hyper = ("momentum", "nesterov")
    _legacy_names = {"m": "momentum"}
    _keras3_names = {"m": "momentum"}
    _legacy_float32 = ("momentum",)

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, name="SGD", **kwargs):
        super().__init__(name=name, learning_rate=learning_rate, **kwargs)
        if not 0 <= momentum <= 1:
            raise ConfigError(f"optimizer {name}: momentum must be in [0, 1], got {momentum}")
        self.momentum, self.nesterov = momentum, nesterov

    def _slot_groups(self):
        if self.momentum == 0 and self.dialect != "tf_keras":
            return []
        return [("m",)]

    def _update(self, g, w, slots, lr, step):
        if "m" not in slots:
            return w - g * lr
        momentum = w.dtype.type(self.momentum)
        new = np.empty_like(w)

        def step_block(g, w, m, new):  # m = m * momentum - g * lr (in place: the slot is ours), new = w + m
            scaled = g * lr
            m *= momentum
            m -= scaled
            if self.nesterov:
                scaled = np.negative(scaled, out=scaled)
                scaled += m * momentum
                np.add(w, scaled, out=new)
            else:
                np.add(w, m, out=new)

        g = np.ascontiguousarray(g)
        blockwise(step_block, g, w, slots["m"], new)
        return new


class RMSprop(Optimizer):
    """RMSprop, optionally with momentum and centered."""

    _hyper = ("rho", "momentum", "epsilon", "centered")
    _legacy_names = {"velocity": "rms", "average_gradient": "mg"}
    _legacy_float32 = ("rho", "momentum")

    def __init__(self, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False, name="RMSprop",
                 **kwargs):
        if kwargs.get("dialect") != "keras3":
            kwargs.setdefault("ema_overwrite_frequency", 100)
        super().__init__(name=name, learning_rate=learning_rate, **kwargs)
        self.rho, self.momentum, self.epsilon, self.centered = rho, momentum, epsilon, centered

    def _slot_groups(self):
        groups = [("velocity",)]
        if self.momentum > 0:
            groups.append(("momentum",))
        if self.centered:
            groups.append(("average_gradient",))
        return groups

    def _update(self, g, w, slots, lr, step):
        rho = self.rho
        v = rho * slots["velocity"] + (1 - rho) * np.square(g)
        slots["velocity"] = v
        denominator = v
        if self.centered:
            avg = rho * slots["average_gradient"] + (1 - rho) * g
            slots["average_gradient"] = avg
            denominator = v - np.square(avg)
        if self.dialect == "legacy" and self.momentum == 0:
            return w - lr * g / (np.sqrt(denominator) + w.dtype.type(self.epsilon))
        increment = lr * g / np.sqrt(denominator + w.dtype.type(self.epsilon))
        if self.momentum > 0:
            mom = w.dtype.type(self.momentum) * slots["momentum"] + increment
            slots["momentum"] = mom
            return w - mom
        return w - increment


class Adagrad(Optimizer):
    """Adagrad."""

    _hyper = ("initial_accumulator_value", "epsilon")

    def __init__(self, learning_rate=0.001, initial_accumulator_value=0.1, epsilon=1e-7, name="Adagrad", **kwargs):
        super().__init__(name=name, learning_rate=learning_rate, **kwargs)
        self.initial_accumulator_value, self.epsilon = initial_accumulator_value, epsilon

    def _slot_groups(self):
        return [("accumulator",)]

    def _slot_init(self, key):
        return self.initial_accumulator_value

    def _update(self, g, w, slots, lr, step):
        acc = slots["accumulator"] + g * g
        slots["accumulator"] = acc
        eps = w.dtype.type(self.epsilon)
        if self.dialect == "legacy":
            return w - lr * g / (np.sqrt(acc) + eps)
        return w - lr * g / np.sqrt(acc + eps)


class Adadelta(Optimizer):
    """Adadelta."""

    _hyper = ("rho", "epsilon")
    _legacy_names = {"accumulated_grad": "accum_grad", "accumulated_delta_var": "accum_var"}
    _legacy_float32 = ("rho",)

    def __init__(self, learning_rate=0.001, rho=0.95, epsilon=1e-7, name="Adadelta", **kwargs):
        super().__init__(name=name, learning_rate=learning_rate, **kwargs)
        self.rho, self.epsilon = rho, epsilon

    def _slot_groups(self):
        return [("accumulated_grad", "accumulated_delta_var")]

    def _update(self, g, w, slots, lr, step):
        rho, eps = self.rho, w.dtype.type(self.epsilon)
        acc_g = rho * slots["accumulated_grad"] + (1 - rho) * g * g
        slots["accumulated_grad"] = acc_g
        delta = -np.sqrt(slots["accumulated_delta_var"] + eps) * g / np.sqrt(acc_g + eps)
        slots["accumulated_delta_var"] = rho * slots["accumulated_delta_var"] + (1 - rho) * delta * delta
        return w + lr * delta


class Adam(Optimizer):
    """Adam, optionally AMSGrad."""

    _hyper = ("beta_1", "beta_2", "epsilon", "amsgrad")
    _keras3_names = {"m": "momentum", "v": "velocity", "vhat": "velocity_hat"}
    _legacy_float32 = ("beta_1", "beta_2")

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False,
                 adaptive_epsilon=False, name="Adam", **kwargs):
        super().__init__(name=name, learning_rate=learning_rate, **kwargs)
        self.beta_1, self.beta_2, self.epsilon, self.amsgrad = beta_1, beta_2, epsilon, amsgrad
        self.adaptive_epsilon = adaptive_epsilon

    def _slot_groups(self):
        return [("m", "v")] + ([("vhat",)] if self.amsgrad else [])

    def _update(self, g, w, slots, lr, step):
        dt = w.dtype.type
        t = dt(step + 1)
        b1p, b2p = np.power(dt(self.beta_1), t), np.power(dt(self.beta_2), t)
        alpha = lr * np.sqrt(1 - b2p) / (1 - b1p)
        eps = dt(self.epsilon) * np.sqrt(1 - b2p) if self.adaptive_epsilon else dt(self.epsilon)
        one_b1, one_b2 = 1 - self.beta_1, 1 - self.beta_2
        new = np.empty_like(w)

        def step_block(g, w, m, v, new, *vhat):  # the slots in place (they are ours), block by block
            step = g - m
            step *= one_b1
            m += step  # m + (g - m) * (1 - beta_1)
            step = np.square(g, out=step)
            step -= v
            step *= one_b2
            v += step  # v + (g**2 - v) * (1 - beta_2)
            if vhat:
                v = np.maximum(vhat[0], v, out=vhat[0])
            den = np.sqrt(v, out=step)
            den += eps
            num = m * alpha
            num /= den
            np.subtract(w, num, out=new)  # w - (m * alpha) / (sqrt(v) + eps)

        extra = (slots["vhat"],) if self.amsgrad else ()
        blockwise(step_block, np.ascontiguousarray(g), w, slots["m"], slots["v"], new, *extra)
        return new


class AdamW(Adam):
    """Adam with decoupled weight decay (`weight_decay`, default 0.004)."""

    _hyper = ("weight_decay", "beta_1", "beta_2", "epsilon", "amsgrad")

    def __init__(self, learning_rate=0.001, weight_decay=0.004, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                 amsgrad=False, name="AdamW", **kwargs):
        if weight_decay is None:
            raise ConfigError(f"optimizer {name}: weight_decay must be a float")
        if kwargs.get("dialect") == "legacy" or kwargs.get("decay") is not None:
            raise ConfigError(f"optimizer {name}: AdamW has no legacy (Keras 2) form")
        super().__init__(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon,
                         amsgrad=amsgrad, name=name, weight_decay=weight_decay, **kwargs)


class Adamax(Optimizer):
    """Adamax (Adam with the infinity norm)."""

    _hyper = ("beta_1", "beta_2", "epsilon")
    _legacy_names = {"u": "v"}
    _keras3_names = {"m": "momentum", "u": "norm"}
    _legacy_float32 = ("beta_1", "beta_2")

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, name="Adamax", **kwargs):
        super().__init__(name=name, learning_rate=learning_rate, **kwargs)
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon

    def _slot_groups(self):
        return [("m", "u")]

    def _update(self, g, w, slots, lr, step):
        dt = w.dtype.type
        b1p = np.power(dt(self.beta_1), dt(step + 1))
        m = slots["m"] + (g - slots["m"]) * (1 - self.beta_1)
        u = np.maximum(self.beta_2 * slots["u"], np.abs(g))
        slots["m"], slots["u"] = m, u
        return w - (lr * m) / ((1 - b1p) * (u + dt(self.epsilon)))


class Nadam(Optimizer):
    """Nadam (Adam with Nesterov momentum and Dozat's momentum schedule)."""

    _hyper = ("beta_1", "beta_2", "epsilon")
    _keras3_names = {"m": "momentum", "v": "velocity"}
    _legacy_float32 = ("beta_1", "beta_2")
    _uses_decay = False  # legacy Nadam's `decay` is the momentum schedule's, not the learning rate's

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, name="Nadam", **kwargs):
        # legacy Nadam takes its schedule decay from `schedule_decay` (default 0.004) and drops `decay`
        decay, schedule_decay = kwargs.pop("decay", None), kwargs.pop("schedule_decay", None)
        dialect = kwargs.pop("dialect", None)
        if dialect is None and (decay is not None or schedule_decay is not None or "lr" in kwargs):
            dialect = "legacy"
        super().__init__(name=name, learning_rate=learning_rate, dialect=dialect, **kwargs)
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon
        if self.dialect == "legacy":
            self.decay = 0.004 if schedule_decay is None else float(schedule_decay)

    def _slot_groups(self):
        return [("m", "v")]

    def _build_extra(self):
        self._extra["u_product"] = np.ones((), self._weights[0].dtype if self._weights else np.float32)

    def _extra_variables(self):
        if self.dialect == "legacy":
            return [(f"{self.name}/momentum_cache:0", "u_product", 0)]
        if self.dialect == "keras3":
            return [(f"{self.name}/variable", "u_product", -1)]
        return []

    def _schedule(self, t):
        exponent = t * np.float32(self.decay) if self.dialect == "legacy" else t
        return np.float32(self.beta_1) * (np.float32(1.0) - np.float32(0.5) * np.power(np.float32(0.96), exponent))

    def _begin_step(self):
        t = np.float32(self.iterations + 1)
        self._u_t, self._u_t_1 = self._schedule(t), self._schedule(t + 1)
        self._extra["u_product"] = (self._extra["u_product"] * self._u_t).astype(np.float32)

    def _update(self, g, w, slots, lr, step):
        dt = w.dtype.type
        u_t, u_t_1 = dt(self._u_t), dt(self._u_t_1)
        u_product_t = dt(self._extra["u_product"])
        u_product_t_1 = u_product_t * u_t_1
        b2p = np.power(dt(self.beta_2), dt(step + 1))
        m = slots["m"] + (g - slots["m"]) * (1 - self.beta_1)
        v = slots["v"] + (np.square(g) - slots["v"]) * (1 - self.beta_2)
        slots["m"], slots["v"] = m, v
        m_hat = u_t_1 * m / (1 - u_product_t_1) + (1 - u_t) * g / (1 - u_product_t)
        v_hat = v / (1 - b2p)
        return w - (m_hat * lr) / (np.sqrt(v_hat) + dt(self.epsilon))


# ---------------------------------------------------------------------------------------------- lookup

_CLASSES: dict[str, type] = {c.__name__.lower(): c for c in (SGD, RMSprop, Adagrad, Adadelta, Adam, Adamax, Nadam,
                                                            AdamW)}
_CLASSES.update({"experimentaladadelta": Adadelta, "experimentaladagrad": Adagrad, "experimentaladam": Adam,
                 "experimentalsgd": SGD})


def _class_for(class_name: str, registered_name: str | None = None) -> type:
    for name in (registered_name, class_name):
        if not name:
            continue
        short = name.split(">")[-1]  # 'Custom>Adam' (tf_keras 2.11+), 'keras.optimizers>Adam'
        cls = _CLASSES.get(short.lower())
        if cls is not None and (name == short or name.split(">")[0] in ("Custom", "keras", "keras.optimizers",
                                                                       "Addons")):
            return cls
        custom = get_custom_object(name)
        if custom is not None:
            return custom
    raise ConfigError(f"unknown optimizer {class_name!r}")


def serialize(optimizer: Optimizer) -> dict:
    """{"module", "class_name", "config", "registered_name"} as tf_keras (and Keras 3) write it."""
    return {"module": "keras.optimizers", "class_name": type(optimizer).__name__,
            "config": optimizer.get_config(), "registered_name": None}


def deserialize(config: dict, dialect: str | None = None, custom_objects: dict | None = None) -> Optimizer:
    """An optimizer from any Keras writer's {"class_name", "config"} form (Keras 2 names and `lr`, TF 2.11+
    'Custom>Adam' names, Keras 3's module/registered_name form); class names match case-insensitively."""
    if not isinstance(config, dict) or "class_name" not in config:
        raise ConfigError(f"cannot read optimizer configuration {config!r}")
    name = config["class_name"]
    cls = (custom_objects or {}).get(name) or _class_for(name, config.get("registered_name"))
    inner = dict(config.get("config") or {})
    if dialect is None and "module" in config and "registered_name" in config and (
            "jit_compile" not in inner and "is_legacy_optimizer" not in inner):
        dialect = "keras3"
    if isinstance(cls, type) and issubclass(cls, Optimizer):
        return cls.from_config(inner, dialect=dialect)
    return cls.from_config(inner) if hasattr(cls, "from_config") else cls(**inner)


def get(identifier, dialect: str | None = None) -> Optimizer:
    """`keras.optimizers.get`: an Optimizer, a name ('sgd', 'adam', ...) or a config dict."""
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, str):
        return deserialize({"class_name": identifier, "config": {}}, dialect=dialect)
    if isinstance(identifier, dict):
        return deserialize(identifier, dialect=dialect)
    raise ConfigError(f"could not interpret optimizer identifier {identifier!r}")
