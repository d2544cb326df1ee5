"""Layer wrappers: Bidirectional and TimeDistributed.

Configs and weight names follow tf_keras 2.x (`bidirectional/forward_lstm/lstm_cell/kernel:0`,
`time_distributed/kernel:0`); a wrapper's weights are its inner layers' (forward then backward). Layers read from
a Keras 3 config follow Keras 3 where it differs (the names of the forward/backward copies, TimeDistributed's
output mask), and `keras3_state` gives Keras 3's paths (`<layer>/forward_layer/cell/vars`, `<layer>/layer/vars`).
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np

from ..errors import ConfigError, KConvertError
from .base import Layer, get_layer_class, is_shape_list, keras_dialect, register_layer


def _plain(shape):
    if shape is None:
        return None
    return [list(s) for s in shape] if is_shape_list(shape) else list(shape)


def serialize_layer(layer: Layer) -> dict:
    """A wrapped layer as tf_keras's `serialize_keras_object` writes it (module, registered name, build shape)."""
    class_name = type(layer).__name__
    if class_name == "Sequential":
        module, registered = "keras", None
    elif getattr(layer, "_is_graph_network", False):
        class_name, module, registered = "Functional", "tf_keras.src.engine.functional", "Functional"
    else:
        module = getattr(type(layer), "keras_module", "keras.layers")
        registered = getattr(type(layer), "registered_name", None)
    entry: dict[str, Any] = {"module": module, "class_name": class_name, "config": layer.get_config(),
                             "registered_name": registered}
    if layer.built and layer._build_input_shape is not None:
        entry["build_config"] = {"input_shape": _plain(layer._build_input_shape)}
    return entry


def deserialize_layer(entry: Any, custom_objects: dict | None = None, owner: str | None = None) -> Layer:
    """The layer of a wrapper's `layer` / `backward_layer` config entry (or the layer itself)."""
    if isinstance(entry, Layer):
        return entry
    if not isinstance(entry, dict) or not isinstance(entry.get("class_name"), str):
        raise ConfigError(f"the wrapped layer must be a {{'class_name', 'config'}} entry, got {str(entry)[:80]}",
                          layer=owner)
    config = entry.get("config")
    cls = get_layer_class(entry["class_name"], custom_objects, config.get("name") if isinstance(config, dict) else None)
    if not isinstance(config, dict):
        raise ConfigError(f"the config of the wrapped {entry['class_name']} must be a dict", layer=owner)
    if hasattr(cls, "from_config_with_objects"):
        return cls.from_config_with_objects(dict(config), custom_objects or {})
    if "custom_objects" in inspect.signature(cls.from_config).parameters:  # nested models
        return cls.from_config(dict(config), custom_objects=custom_objects)
    try:
        return cls.from_config(dict(config))
    except KConvertError:
        raise
    except (TypeError, ValueError, KeyError) as e:
        raise ConfigError(f"invalid {entry['class_name']} config: {e}", layer=config.get("name")) from e


def _recreate(layer: Layer, name: str, go_backwards: bool | None = None) -> Layer:
    """A fresh copy of `layer` from its config (as tf_keras and Keras 3 make the forward/backward layers)."""
    config = dict(layer.get_config(), name=name)
    if go_backwards is not None:
        config["go_backwards"] = go_backwards
    with keras_dialect(layer._keras_major):
        return type(layer).from_config(config)


def _removeprefix(name: str, prefix: str) -> str:
    return name[len(prefix):] if name.startswith(prefix) else name


class Wrapper(Layer):
    """A layer around another layer (tf_keras `Wrapper`): its weights are the inner layers'."""

    def __init__(self, layer: Layer, **kwargs):
        if not isinstance(layer, Layer):
            raise ConfigError(f"{type(self).__name__} wraps a layer, got {type(layer).__name__}",
                              layer=kwargs.get("name"))
        super().__init__(**kwargs)
        self.layer = layer

    def _sublayers(self) -> list[Layer]:
        return [self.layer]

    @property
    def trainable_weights(self):
        if not self.trainable:
            return []
        return [w for la in self._sublayers() for w in la.trainable_weights]

    @property
    def non_trainable_weights(self):
        if not self.trainable:
            return [w for la in self._sublayers() for w in la.weights]
        return [w for la in self._sublayers() for w in la.non_trainable_weights]

    def keras3_state(self):
        return [], {"layer": self.layer}

    @staticmethod
    def _prefix_weights(layer: Layer, old: str, new: str) -> None:
        for w in layer.weights:
            w.name = new + _removeprefix(w.name, old)

    def get_config(self):
        return {**super().get_config(), "layer": serialize_layer(self.layer)}

    @classmethod
    def from_config_with_objects(cls, config: dict, custom_objects: dict) -> Layer:
        config = dict(config)
        config["layer"] = deserialize_layer(config.get("layer"), custom_objects, config.get("name"))
        if config.get("backward_layer") is not None:
            config["backward_layer"] = deserialize_layer(config["backward_layer"], custom_objects, config.get("name"))
        return cls(**config)

    @classmethod
    def from_config(cls, config: dict) -> Layer:
        return cls.from_config_with_objects(config, {})


# ---------------------------------------------------------------------------------------------- Bidirectional

_MERGE = {
    "concat": lambda a, b: np.concatenate([a, b], axis=-1),
    "sum": lambda a, b: a + b,
    "ave": lambda a, b: (a + b) / 2,
    "mul": lambda a, b: a * b,
}


@register_layer()
class Bidirectional(Wrapper):
    """Runs a recurrent layer forwards and a copy backwards over the sequence, and merges the two outputs.

    With `merge_mode=None` the two outputs are returned separately; with `return_state` the forward states
    follow, then the backward states. Initial states are split in halves (forward, backward).
    """

    def __init__(self, layer: Layer, merge_mode: str | None = "concat", backward_layer: Layer | None = None,
                 num_constants: int = 0, **kwargs):
        super().__init__(layer, **kwargs)
        if merge_mode not in (*_MERGE, None):
            raise ConfigError(f"invalid merge mode {merge_mode!r}; expected one of concat, sum, mul, ave or None",
                              layer=self.name)
        if num_constants:
            raise ConfigError("Bidirectional with constants is not supported", layer=self.name)
        keras3 = self._keras_major >= 3
        go_backwards = getattr(layer, "go_backwards", None)
        self.forward_layer = _recreate(layer, "forward_" + (_removeprefix(layer.name, "forward_") if keras3
                                                              else layer.name))
        self._backward_layer_config = None
        if backward_layer is None:
            self.backward_layer = _recreate(layer, "backward_" + (_removeprefix(layer.name, "backward_") if keras3
                                                                    else layer.name),
                                            go_backwards=None if go_backwards is None else not go_backwards)
        else:
            self._backward_layer_config = serialize_layer(backward_layer)
            self.backward_layer = backward_layer
            if not keras3:  # tf_keras renames a given backward layer too; Keras 3 keeps its name
                backward_layer.name = "backward_" + backward_layer.name
        self._verify()
        for sub in (self.forward_layer, self.backward_layer):  # both Kerases: masked outputs of sequences are 0
            if hasattr(sub, "zero_output_for_mask"):
                sub.zero_output_for_mask = sub.return_sequences
        self.merge_mode = merge_mode
        self.stateful = bool(getattr(layer, "stateful", False))
        self.return_sequences = bool(getattr(layer, "return_sequences", False))
        self.return_state = bool(getattr(layer, "return_state", False))
        self.supports_masking = True

    def _verify(self) -> None:
        fw, bw = self.forward_layer, self.backward_layer
        if getattr(fw, "go_backwards", None) == getattr(bw, "go_backwards", None):
            raise ConfigError("the forward and backward layers must have different `go_backwards` values",
                              layer=self.name)
        for attr in ("stateful", "return_sequences", "return_state"):
            if getattr(fw, attr, None) != getattr(bw, attr, None):
                raise ConfigError(f"the forward and backward layers must have the same `{attr}`, got "
                                  f"{getattr(fw, attr, None)} and {getattr(bw, attr, None)}", layer=self.name)

    def _sublayers(self):
        return [self.forward_layer, self.backward_layer]

    def keras3_state(self):
        return [], {"forward_layer": self.forward_layer, "backward_layer": self.backward_layer}

    @staticmethod
    def _halves(inputs, several: bool) -> tuple[Any, Any]:
        """(forward inputs, backward inputs): the initial states after the sequence are split in halves."""
        if several:
            if len(inputs) == 1:
                return inputs[0], inputs[0]
            x, states = inputs[0], list(inputs[1:])
            if len(states) % 2:
                raise ConfigError("the initial states of a Bidirectional layer are the forward layer's states "
                                  "followed by the backward layer's: an even number")
            half = len(states) // 2
            return [x, *states[:half]], [x, *states[half:]]
        return inputs, inputs

    def build(self, input_shape):
        fw, bw = self._halves(input_shape, is_shape_list(input_shape))
        for sub, shape in ((self.forward_layer, fw), (self.backward_layer, bw)):
            sub._maybe_build(shape)
            self._prefix_weights(sub, "", f"{self.name}/")

    def __call__(self, inputs, initial_state=None, **kwargs):
        if initial_state is not None:
            inputs = [*(inputs if isinstance(inputs, (list, tuple)) else [inputs]), *initial_state]
        return super().__call__(inputs, **kwargs)

    def call(self, inputs, mask=None, training=None, initial_state=None):
        if initial_state is not None:
            inputs = [*(inputs if isinstance(inputs, (list, tuple)) else [inputs]), *initial_state]
        if isinstance(mask, (list, tuple)):
            mask = mask[0] if mask else None
        fw_in, bw_in = self._halves(inputs, isinstance(inputs, (list, tuple)))
        kwargs = {"mask": mask} if mask is not None else {}
        y = self.forward_layer.call(fw_in, **self.forward_layer._call_kwargs(kwargs))
        y_rev = self.backward_layer.call(bw_in, **self.backward_layer._call_kwargs(kwargs))
        states: list = []
        if self.return_state:
            states = [*y[1:], *y_rev[1:]]
            y, y_rev = y[0], y_rev[0]
        if self.return_sequences:
            y_rev = np.flip(y_rev, axis=0 if getattr(self.forward_layer, "time_major", False) else 1)
        output = [y, y_rev] if self.merge_mode is None else [_MERGE[self.merge_mode](y, y_rev)]
        return [*output, *states] if self.return_state or self.merge_mode is None else output[0]

    def compute_output_shape(self, input_shape):
        fw, _ = self._halves(input_shape, is_shape_list(input_shape))
        shape = self.forward_layer.compute_output_shape(fw)
        states: list = []
        if self.return_state:
            shape, states = tuple(shape[0]), [tuple(s) for s in shape[1:]]
        shape = tuple(shape)
        if self.merge_mode == "concat":
            shape = (*shape[:-1], None if shape[-1] is None else 2 * shape[-1])
        outputs = [shape, shape] if self.merge_mode is None else [shape]
        if self.return_state or self.merge_mode is None:
            return outputs + states + states
        return outputs[0]

    def compute_output_layout(self, input_layouts, output_shape):
        return None

    def compute_mask(self, inputs, mask=None):
        if isinstance(mask, (list, tuple)):
            mask = mask[0] if mask else None
        out = mask if self.return_sequences else None
        outputs = [out, out] if self.merge_mode is None else [out]
        if self.return_state:
            return outputs + [None] * (2 * getattr(self.forward_layer, "n_states", 0))
        return outputs if self.merge_mode is None else out

    def reset_states(self, states=None) -> None:
        if not self.stateful:
            raise ConfigError("reset_states() needs a stateful layer (stateful=True)", layer=self.name)
        if states is None:
            self.forward_layer.reset_states()
            self.backward_layer.reset_states()
        else:
            half = len(states) // 2
            self.forward_layer.reset_states(states[:half])
            self.backward_layer.reset_states(states[half:])

    reset_state = reset_states

    def get_config(self):
        config = {**super().get_config(), "merge_mode": self.merge_mode}
        if self._backward_layer_config is not None:
            config["backward_layer"] = self._backward_layer_config
        return config


# ---------------------------------------------------------------------------------------------- TimeDistributed


@register_layer()
class TimeDistributed(Wrapper):
    """Applies the inner layer to every timestep: (N, T, ...) is folded to (N*T, ...) and back.

    Masks: the inner layer gets the folded mask when it takes one. The output mask is the inner layer's
    folded back (tf_keras; an all-None inner mask gives the input mask reduced to (N, T)), or the input mask
    unchanged for a layer read from a Keras 3 config, as each Keras computes it.
    """

    def __init__(self, layer: Layer, **kwargs):
        super().__init__(layer, **kwargs)
        self.supports_masking = True

    @staticmethod
    def _fold(a: np.ndarray) -> np.ndarray:
        return a.reshape((a.shape[0] * a.shape[1], *a.shape[2:]))

    @staticmethod
    def _child_shape(input_shape) -> tuple:
        shape = tuple(input_shape)
        if len(shape) < 3:
            raise ValueError(f"TimeDistributed needs inputs of at least 3 dimensions (batch, time, ...), got {shape}")
        return (shape[0], *shape[2:])

    def build(self, input_shape):
        inner = self.layer
        was_built = inner.built
        inner._maybe_build(self._child_shape(input_shape))
        if not was_built and not getattr(inner, "_is_graph_network", False):
            self._prefix_weights(inner, f"{inner.name}/", f"{self.name}/")  # tf_keras: 'time_distributed/kernel:0'

    def call(self, inputs, mask=None, training=None):
        x = np.asarray(inputs)
        n, t = x.shape[:2]
        kwargs: dict[str, Any] = {}
        if mask is not None:
            kwargs["mask"] = self._fold(np.asarray(mask))
        if training:
            kwargs["training"] = True
        y = self.layer(self._fold(x), **kwargs)
        if isinstance(y, (list, tuple)):
            return [np.reshape(v, (n, t, *np.shape(v)[1:])) for v in y]
        return np.reshape(y, (n, t, *np.shape(y)[1:]))

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape)
        out = self.layer.compute_output_shape(self._child_shape(shape))
        if is_shape_list(out):
            return [(s[0], shape[1], *s[1:]) for s in out]
        return (out[0], shape[1], *out[1:])

    def compute_output_layout(self, input_layouts, output_shape):
        return None

    def compute_mask(self, inputs, mask=None):
        if self._keras_major >= 3:
            return mask
        x = np.asarray(inputs)
        n, t = x.shape[:2]
        inner = self.layer.compute_mask(self._fold(x), None if mask is None else self._fold(np.asarray(mask)))
        if inner is None:
            if mask is None:
                return None
            mask = np.asarray(mask)
            return mask.reshape(n, t, -1).any(axis=-1) if mask.ndim > 2 else mask
        return np.reshape(inner, (n, t, *np.shape(inner)[1:]))
