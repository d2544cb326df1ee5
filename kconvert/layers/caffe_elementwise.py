"""Caffe's elementwise layers with no exact Keras layer: Power, Exp, Log, Threshold, Clip, AbsVal and Eltwise.

Each computes in float32 in the order Caffe's CPU code does (src/caffe/layers/<type>_layer.cpp), so results
agree with Caffe to the last bits where the operations are the same. None has weights. They are layout-free
(elementwise), so they take no `data_format`.

Caffe maps the rest of its neuron layers to native Keras layers: BNLL is `softplus`, ReLU with
`negative_slope` is LeakyReLU, PReLU/ELU/Sigmoid/TanH are their Keras namesakes.
"""

from __future__ import annotations

import numpy as np

from .. import ops
from ..errors import ConfigError
from .base import Layer, is_shape_list, register_layer


def kconvert_object(cls: type) -> type:
    """Register a kconvert-only layer, written into Keras 3 files as the `kconvert>Name` object that
    `kconvert.keras_objects("keras3")` provides (tf_keras files record the plain class name)."""
    cls.keras3_module = "kconvert.keras_objects"
    cls.registered_name = f"kconvert>{cls.__name__}"
    return register_layer()(cls)


def _float(value, name: str, layer: str | None) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"`{name}` must be a number, got {value!r}", layer=layer) from None


def _f32(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float32)


class _Elementwise(Layer):
    """One input, the same shape out."""

    supports_masking = True

    def compute_output_shape(self, input_shape):
        return input_shape


@kconvert_object
class Power(_Elementwise):
    """Caffe Power: y = (shift + scale·x)^power.

    As Caffe, when power·scale == 0 the input is ignored: y = 1 if power == 0 else shift^power.
    """

    def __init__(self, power: float = 1.0, scale: float = 1.0, shift: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.power = _float(power, "power", self.name)
        self.scale = _float(scale, "scale", self.name)
        self.shift = _float(shift, "shift", self.name)

    def constant(self) -> float | None:
        """The output value when Caffe ignores the input, else None."""
        if np.float32(self.power) * np.float32(self.scale) != 0:
            return None
        return 1.0 if self.power == 0 else float(np.power(np.float32(self.shift), np.float32(self.power)))

    def call(self, inputs):
        x = _f32(inputs)
        const = self.constant()
        if const is not None:
            return np.full(x.shape, const, np.float32)
        if self.scale != 1:
            x = ops.multiply(x, np.float32(self.scale))
        if self.shift != 0:
            x = ops.add(x, np.float32(self.shift))
        if self.power != 1:
            x = ops.power(x, np.float32(self.power))
        return x

    def get_config(self):
        return {**super().get_config(), "power": self.power, "scale": self.scale, "shift": self.shift}


def _log_base(base: float, layer: Layer) -> np.float32:
    """ln(base) as Caffe computes it in float32; base -1 stands for e."""
    if base == -1:
        return np.float32(1.0)
    if not base > 0:
        raise ConfigError(f"base must be strictly positive (or -1 for e), got {base}", layer=layer.name)
    return np.log(np.float32(base))


@kconvert_object
class CaffeExp(_Elementwise):
    """Caffe Exp: y = base^(shift + scale·x), base -1 meaning e.

    Computed as Caffe does: y = exp(ln(base)·scale · x) · base^shift.
    """

    def __init__(self, base: float = -1.0, scale: float = 1.0, shift: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.base = _float(base, "base", self.name)
        self.scale = _float(scale, "scale", self.name)
        self.shift = _float(shift, "shift", self.name)
        _log_base(self.base, self)

    def factors(self) -> tuple[np.float32, np.float32]:
        """(inner, outer): y = outer · exp(inner · x)."""
        inner = np.float32(_log_base(self.base, self) * np.float32(self.scale))
        if self.shift == 0:
            outer = np.float32(1.0)
        elif self.base == -1:
            outer = np.exp(np.float32(self.shift))
        else:
            outer = np.power(np.float32(self.base), np.float32(self.shift))
        return inner, np.float32(outer)

    def call(self, inputs):
        x = _f32(inputs)
        inner, outer = self.factors()
        y = ops.exp(x if inner == 1 else ops.multiply(x, inner))
        return y if outer == 1 else ops.multiply(y, outer)

    def get_config(self):
        return {**super().get_config(), "base": self.base, "scale": self.scale, "shift": self.shift}


@kconvert_object
class CaffeLog(_Elementwise):
    """Caffe Log: y = log_base(shift + scale·x), base -1 meaning e; computed as ln(shift + scale·x) / ln(base)."""

    def __init__(self, base: float = -1.0, scale: float = 1.0, shift: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.base = _float(base, "base", self.name)
        self.scale = _float(scale, "scale", self.name)
        self.shift = _float(shift, "shift", self.name)
        _log_base(self.base, self)

    def base_scale(self) -> np.float32:
        return np.float32(np.float32(1.0) / _log_base(self.base, self))

    def call(self, inputs):
        x = _f32(inputs)
        if self.scale != 1:
            x = ops.multiply(x, np.float32(self.scale))
        if self.shift != 0:
            x = ops.add(x, np.float32(self.shift))
        y = ops.log(x)
        k = self.base_scale()
        return y if k == 1 else ops.multiply(y, k)

    def get_config(self):
        return {**super().get_config(), "base": self.base, "scale": self.scale, "shift": self.shift}


@kconvert_object
class CaffeThreshold(_Elementwise):
    """Caffe Threshold: y = 1 where x > threshold, else 0 (float)."""

    def __init__(self, threshold: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.threshold = _float(threshold, "threshold", self.name)

    def call(self, inputs):
        return ops.cast(ops.greater(_f32(inputs), np.float32(self.threshold)), np.float32)

    def get_config(self):
        return {**super().get_config(), "threshold": self.threshold}


@kconvert_object
class CaffeClip(_Elementwise):
    """Caffe Clip: y = max(min, min(x, max))."""

    def __init__(self, min: float, max: float, **kwargs):  # noqa: A002 - Caffe's parameter names
        super().__init__(**kwargs)
        self.min = _float(min, "min", self.name)
        self.max = _float(max, "max", self.name)

    def call(self, inputs):
        return ops.maximum(np.float32(self.min), ops.minimum(_f32(inputs), np.float32(self.max)))

    def get_config(self):
        return {**super().get_config(), "min": self.min, "max": self.max}


@kconvert_object
class AbsVal(_Elementwise):
    """Caffe AbsVal: y = |x|."""

    def call(self, inputs):
        return ops.abs(_f32(inputs))


ELTWISE_OPERATIONS = ("prod", "sum", "max")  # Caffe's EltwiseOp enum values 0, 1, 2


def eltwise_operation(value, layer: str | None = None) -> str:
    """'sum', 'prod' or 'max' from a name in any case or Caffe's enum number."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and 0 <= int(value) < 3:
        return ELTWISE_OPERATIONS[int(value)]
    name = str(value).lower()
    if name not in ELTWISE_OPERATIONS:
        raise ConfigError(f"operation must be one of 'sum', 'prod', 'max' (or 0, 1, 2), got {value!r}", layer=layer)
    return name


@kconvert_object
class CaffeEltwise(Layer):
    """Caffe Eltwise on a list of same-shape inputs: 'sum' (Σ coeff_i·x_i, coefficients 1 by default), 'prod' or 'max'.

    As in Caffe, `coeff` (one per input) applies to 'sum' only; 'prod' refuses it and 'max' ignores it.
    """

    def __init__(self, operation="sum", coeff=None, **kwargs):
        super().__init__(**kwargs)
        self.operation = eltwise_operation(operation, self.name)
        if coeff is not None:  # Caffe's empty `coeff` list means no coefficients
            coeff = [_float(c, "coeff", self.name) for c in (coeff if isinstance(coeff, (list, tuple)) else [coeff])]
            coeff = coeff or None
        if coeff is not None:
            if self.operation == "prod":
                raise ConfigError("Eltwise takes coefficients for 'sum' only, not 'prod'", layer=self.name)
        self.coeff = coeff

    def build(self, input_shape):
        if not is_shape_list(input_shape):
            raise ValueError(f"CaffeEltwise is called on a list of inputs, got one of shape {input_shape}")
        if self.coeff is not None and len(self.coeff) != len(input_shape):
            raise ValueError(f"{len(self.coeff)} coefficients for {len(input_shape)} inputs (one per input)")
        self.compute_output_shape(input_shape)

    def compute_output_shape(self, input_shape):
        out = list(input_shape[0])
        for shape in input_shape[1:]:
            if len(shape) != len(out):
                raise ValueError(f"inputs of different shapes: {tuple(input_shape[0])} and {tuple(shape)}")
            for i, d in enumerate(shape):
                if out[i] is None:
                    out[i] = d
                elif d is not None and d != out[i]:
                    raise ValueError(f"inputs of different shapes: {tuple(input_shape[0])} and {tuple(shape)}")
        return tuple(out)

    def compute_mask(self, inputs, mask=None):
        return None

    def call(self, inputs):
        xs = [_f32(x) for x in inputs]
        if self.operation == "prod":
            y = xs[0]
            for x in xs[1:]:
                y = ops.multiply(y, x)
            return y
        if self.operation == "max":
            y = xs[0]
            for x in xs[1:]:
                y = ops.maximum(y, x)
            return y
        coeff = self.coeff or [1.0] * len(xs)
        y = np.zeros(xs[0].shape, np.float32)  # Caffe: top = 0, then top += coeff_i · x_i (axpy) per input
        for c, x in zip(coeff, xs):
            y = ops.add(y, x if c == 1 else ops.multiply(np.float32(c), x))
        return y

    def get_config(self):
        return {**super().get_config(), "operation": self.operation, "coeff": self.coeff}
