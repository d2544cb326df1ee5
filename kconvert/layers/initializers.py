"""Weight initializers, named and serialized as tf.keras names and serializes them."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..custom_objects import get_custom_object

_RNG = np.random.default_rng()


def set_seed(seed: int | None) -> None:
    """Seed the generator used by every initializer without an explicit seed."""
    global _RNG
    _RNG = np.random.default_rng(seed)


def _fans(shape: tuple) -> tuple[float, float]:
    if len(shape) < 1:
        return 1.0, 1.0
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = math.prod(shape[:-2])
    return shape[-2] * receptive, shape[-1] * receptive


class Initializer:
    """Callable `(shape, dtype) -> array` with a tf.keras-compatible config."""

    class_name = "Initializer"
    defaults: dict[str, Any] = {}

    def __init__(self, **config):
        self.config = {**self.defaults, **config}

    def rng(self):
        seed = self.config.get("seed")
        return np.random.default_rng(seed) if seed is not None else _RNG

    def __call__(self, shape: tuple, dtype: str = "float32") -> np.ndarray:
        raise NotImplementedError

    def get_config(self) -> dict:
        return dict(self.config)

    def serialize(self) -> dict:
        return {"module": "keras.initializers", "class_name": self.class_name, "config": self.get_config(),
                "registered_name": None}


INITIALIZERS: dict[str, type[Initializer]] = {}


def _register(*aliases):
    def deco(cls):
        for a in (cls.class_name, *aliases):
            INITIALIZERS[a] = cls
        return cls
    return deco


@_register("zeros", "zero")
class Zeros(Initializer):
    class_name = "Zeros"

    def __call__(self, shape, dtype="float32"):
        return np.zeros(shape, dtype)


@_register("ones", "one")
class Ones(Initializer):
    class_name = "Ones"

    def __call__(self, shape, dtype="float32"):
        return np.ones(shape, dtype)


@_register("constant")
class Constant(Initializer):
    class_name = "Constant"
    defaults = {"value": 0}

    def __call__(self, shape, dtype="float32"):
        return np.full(shape, self.config["value"], dtype)


@_register("random_normal", "normal")
class RandomNormal(Initializer):
    class_name = "RandomNormal"
    defaults = {"mean": 0.0, "stddev": 0.05, "seed": None}

    def __call__(self, shape, dtype="float32"):
        return self.rng().normal(self.config["mean"], self.config["stddev"], shape).astype(dtype)


@_register("random_uniform", "uniform")
class RandomUniform(Initializer):
    class_name = "RandomUniform"
    defaults = {"minval": -0.05, "maxval": 0.05, "seed": None}

    def __call__(self, shape, dtype="float32"):
        return self.rng().uniform(self.config["minval"], self.config["maxval"], shape).astype(dtype)


@_register("truncated_normal")
class TruncatedNormal(Initializer):
    class_name = "TruncatedNormal"
    defaults = {"mean": 0.0, "stddev": 0.05, "seed": None}

    def __call__(self, shape, dtype="float32"):
        return _truncated(self.rng(), shape, self.config["stddev"], self.config["mean"]).astype(dtype)


def _truncated(rng, shape, stddev, mean=0.0):
    x = rng.normal(0.0, 1.0, shape)
    bad = np.abs(x) > 2
    while bad.any():
        x[bad] = rng.normal(0.0, 1.0, int(bad.sum()))
        bad = np.abs(x) > 2
    return mean + stddev * x


@_register("variance_scaling")
class VarianceScaling(Initializer):
    class_name = "VarianceScaling"
    defaults = {"scale": 1.0, "mode": "fan_in", "distribution": "truncated_normal", "seed": None}

    def __call__(self, shape, dtype="float32"):
        fan_in, fan_out = _fans(shape)
        mode = self.config["mode"]
        n = fan_in if mode == "fan_in" else fan_out if mode == "fan_out" else (fan_in + fan_out) / 2
        scale = self.config["scale"] / max(1.0, n)
        dist = self.config["distribution"]
        if dist in ("truncated_normal", "normal"):
            return _truncated(self.rng(), shape, math.sqrt(scale) / 0.87962566103423978).astype(dtype)
        if dist == "untruncated_normal":
            return self.rng().normal(0.0, math.sqrt(scale), shape).astype(dtype)
        limit = math.sqrt(3.0 * scale)
        return self.rng().uniform(-limit, limit, shape).astype(dtype)


def _vs(name, alias, scale, mode, distribution):
    cls = type(name, (VarianceScaling,), {"class_name": name, "defaults": {"seed": None}})

    def __call__(self, shape, dtype="float32"):
        vs = VarianceScaling(scale=scale, mode=mode, distribution=distribution, seed=self.config.get("seed"))
        return vs(shape, dtype)

    cls.__call__ = __call__
    return _register(alias)(cls)


GlorotUniform = _vs("GlorotUniform", "glorot_uniform", 1.0, "fan_avg", "uniform")
GlorotNormal = _vs("GlorotNormal", "glorot_normal", 1.0, "fan_avg", "truncated_normal")
HeUniform = _vs("HeUniform", "he_uniform", 2.0, "fan_in", "uniform")
HeNormal = _vs("HeNormal", "he_normal", 2.0, "fan_in", "truncated_normal")
LecunUniform = _vs("LecunUniform", "lecun_uniform", 1.0, "fan_in", "uniform")
LecunNormal = _vs("LecunNormal", "lecun_normal", 1.0, "fan_in", "truncated_normal")


@_register("orthogonal")
class Orthogonal(Initializer):
    class_name = "Orthogonal"
    defaults = {"gain": 1.0, "seed": None}

    def __call__(self, shape, dtype="float32"):
        rows = math.prod(shape[:-1]) if len(shape) > 1 else 1
        cols = shape[-1]
        a = self.rng().normal(0.0, 1.0, (max(rows, cols), min(rows, cols)))
        q, r = np.linalg.qr(a)
        q *= np.sign(np.diag(r))
        if rows < cols:
            q = q.T
        return (self.config["gain"] * q[:rows, :cols]).reshape(shape).astype(dtype)


@_register("identity")
class Identity(Initializer):
    class_name = "Identity"
    defaults = {"gain": 1.0}

    def __call__(self, shape, dtype="float32"):
        return (self.config["gain"] * np.eye(*shape)).astype(dtype)


class _FromCallable(Initializer):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def __call__(self, shape, dtype="float32"):
        return np.asarray(self.fn(shape, dtype), dtype=dtype)

    def serialize(self):
        return getattr(self.fn, "__name__", "custom")


def _from_name(name: Any, config: dict, custom: Any = None) -> Initializer:
    """A built-in initializer class, or a custom object (class or function) known by that name."""
    custom = custom if custom is not None else get_custom_object(name if isinstance(name, str) else None)
    if isinstance(custom, type):
        custom = custom(**config)
    if isinstance(custom, Initializer):
        return custom
    if callable(custom):
        return _FromCallable(custom)
    cls = INITIALIZERS.get(name)
    if cls is None:
        raise ValueError(f"unknown initializer '{name}'; if it is a custom initializer, pass it as "
                         f"custom_objects={{'{name}': ...}}")
    return cls(**config)


def get(identifier: Any) -> Initializer:
    """An Initializer from a name, a `{class_name, config}` dict (any Keras dialect), an instance or a callable."""
    if isinstance(identifier, Initializer):
        return identifier
    if identifier is None:
        return Zeros()
    if isinstance(identifier, str):
        return _from_name(identifier, {})
    if isinstance(identifier, dict):
        name = identifier.get("class_name")
        custom = get_custom_object(identifier.get("registered_name"))
        return _from_name(name, identifier.get("config") or {}, custom)
    if callable(identifier):
        return _FromCallable(identifier)
    raise ValueError(f"cannot interpret {identifier!r} as an initializer")


def serialize(identifier: Any) -> Any:
    """The tf.keras config form of an initializer argument; dicts from files are kept as they were."""
    if isinstance(identifier, dict):
        return identifier
    return get(identifier).serialize()
