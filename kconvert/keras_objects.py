"""Real-Keras implementations of the kconvert-only objects that kconvert writes into Keras files.

Where the target Keras has no native layer for something kconvert reads (LocallyConnected in Keras 3, Keras 1's
`Merge`, Keras 2's hard_sigmoid inside Keras 3 recurrent layers), kconvert's writers emit the object with its full
config under the name returned here: `kconvert>Name` in Keras 3 files, the plain class name in tf_keras files.

    keras.saving.load_model(path, custom_objects=kconvert.keras_objects("keras3"))
    tf_keras.models.load_model(path, custom_objects=kconvert.keras_objects("tf_keras"))

The classes are defined when asked for, so kconvert itself never imports Keras or TensorFlow.
"""

from __future__ import annotations

import functools
import itertools
from typing import Any

from .errors import KConvertError

__all__ = ["keras_objects"]

_MERGE_MODES = ("sum", "mul", "ave", "max", "concat", "dot", "cos")
_EPSILON = 1e-7  # Keras 1's K.epsilon(), used by Merge(mode="cos")


def keras_objects(target: str = "keras3") -> dict[str, Any]:
    """`custom_objects` for loading kconvert-written files in real Keras: `target` is "keras3" or "tf_keras"."""
    if target not in ("keras3", "tf_keras"):
        raise KConvertError(f"keras_objects: unknown target {target!r}; use 'keras3' or 'tf_keras'")
    return dict(_objects(target))


@functools.cache
def _objects(target: str) -> dict[str, Any]:
    """Defined (and registered with Keras 3) once per process."""
    from .real_keras import build_all

    if target == "keras3":
        import keras

        return {**_keras3_objects(keras), **build_all(keras, target)}
    import tf_keras

    return {"Merge": _merge_class(tf_keras.layers.Layer, _TfKerasOps(tf_keras.backend), None),
            **build_all(tf_keras, target)}


class _TfKerasOps:
    """The few tensor operations Merge needs, with the names of `keras.ops`, on tf_keras's backend."""

    def __init__(self, backend):
        self.k = backend

    def add(self, a, b):
        return a + b

    def multiply(self, a, b):
        return a * b

    def maximum(self, a, b):
        return self.k.maximum(a, b)

    def concatenate(self, xs, axis):
        return self.k.concatenate(xs, axis=axis)

    def sum(self, x, axis, keepdims):
        return self.k.sum(x, axis=axis, keepdims=keepdims)

    def sqrt(self, x):
        return self.k.sqrt(x)


def _keras3_objects(keras) -> dict[str, Any]:
    ops = keras.ops
    register = keras.saving.register_keras_serializable

    def hard_sigmoid_keras2(x):
        """Keras 2's hard_sigmoid: clip(0.2 x + 0.5, 0, 1) (Keras 3's is relu6(x + 3) / 6)."""
        return ops.clip(0.2 * x + 0.5, 0.0, 1.0)

    hard_sigmoid_keras2.__name__ = "HardSigmoidKeras2"
    lc1, lc2 = (_locally_connected_class(keras, rank) for rank in (1, 2))
    merge = _merge_class(keras.layers.Layer, ops, register(package="kconvert", name="Merge"))
    return {"kconvert>LocallyConnected1D": lc1, "kconvert>LocallyConnected2D": lc2, "kconvert>Merge": merge,
            "kconvert>HardSigmoidKeras2": hard_sigmoid_keras2}


def _locally_connected_class(keras, rank: int) -> type:
    """tf.keras's LocallyConnected{rank}D with implementation=1 and padding='valid', for Keras 3."""
    ops = keras.ops

    class LocallyConnected(keras.layers.Layer):
        def __init__(self, filters, kernel_size, strides=1, padding="valid", data_format=None, activation=None,
                     use_bias=True, kernel_initializer="glorot_uniform", bias_initializer="zeros",
                     kernel_regularizer=None, bias_regularizer=None, activity_regularizer=None,
                     kernel_constraint=None, bias_constraint=None, implementation=1, **kwargs):
            super().__init__(activity_regularizer=activity_regularizer, **kwargs)
            if implementation != 1 or str(padding).lower() != "valid":
                raise ValueError(f"kconvert's LocallyConnected{rank}D implements implementation=1 with "
                                 f"padding='valid' only, got implementation={implementation}, padding={padding!r}")
            self.filters = int(filters)
            self.kernel_size = _ntuple(kernel_size, rank)
            self.strides = _ntuple(strides, rank)
            self.padding = "valid"
            self.data_format = data_format or "channels_last"
            self.activation = keras.activations.get(activation)
            self.use_bias = bool(use_bias)
            self.kernel_initializer = keras.initializers.get(kernel_initializer)
            self.bias_initializer = keras.initializers.get(bias_initializer)
            self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
            self.bias_regularizer = keras.regularizers.get(bias_regularizer)
            self.kernel_constraint = keras.constraints.get(kernel_constraint)
            self.bias_constraint = keras.constraints.get(bias_constraint)
            self.implementation = 1

        def _spatial(self, input_shape):
            first = self.data_format == "channels_first"
            return (tuple(input_shape[2:]) if first else tuple(input_shape[1:-1]),
                    input_shape[1] if first else input_shape[-1])

        def build(self, input_shape):
            spatial, channels = self._spatial(input_shape)
            self.output_spatial = tuple((n - k) // s + 1 for n, k, s in zip(spatial, self.kernel_size, self.strides))
            positions = 1
            window = channels
            for n, k in zip(self.output_spatial, self.kernel_size):
                positions, window = positions * n, window * k
            self.kernel = self.add_weight(name="kernel", shape=(positions, window, self.filters),
                                          initializer=self.kernel_initializer, regularizer=self.kernel_regularizer,
                                          constraint=self.kernel_constraint)
            self.bias = (self.add_weight(name="bias", shape=(*self.output_spatial, self.filters),
                                         initializer=self.bias_initializer, regularizer=self.bias_regularizer,
                                         constraint=self.bias_constraint) if self.use_bias else None)

        def call(self, inputs):
            first = self.data_format == "channels_first"
            patches = []
            for pos in itertools.product(*(range(n) for n in self.output_spatial)):
                window = tuple(slice(p * s, p * s + k) for p, s, k in zip(pos, self.strides, self.kernel_size))
                index = (slice(None), slice(None), *window) if first else (slice(None), *window, slice(None))
                patches.append(ops.reshape(inputs[index], (1, ops.shape(inputs)[0], -1)))
            out = ops.matmul(ops.concatenate(patches, axis=0), self.kernel)  # (positions, batch, filters)
            out = ops.reshape(ops.transpose(out, (1, 0, 2)), (-1, *self.output_spatial, self.filters))
            if first:
                out = ops.transpose(out, (0, rank + 1, *range(1, rank + 1)))
            if self.use_bias:  # tf.keras's bias_add reshapes (not transposes) the bias for channels_first
                shape = (1, self.filters, *self.output_spatial) if first else (1, *self.output_spatial, self.filters)
                out = out + ops.reshape(self.bias, shape)
            return self.activation(out)

        def compute_output_shape(self, input_shape):
            if self.data_format == "channels_first":
                return (input_shape[0], self.filters, *self.output_spatial)
            return (input_shape[0], *self.output_spatial, self.filters)

        def get_config(self):
            ser = keras.saving.serialize_keras_object
            return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                    "strides": self.strides, "padding": self.padding, "data_format": self.data_format,
                    "activation": keras.activations.serialize(self.activation), "use_bias": self.use_bias,
                    "kernel_initializer": ser(self.kernel_initializer), "bias_initializer": ser(self.bias_initializer),
                    "kernel_regularizer": ser(self.kernel_regularizer), "bias_regularizer": ser(self.bias_regularizer),
                    "kernel_constraint": ser(self.kernel_constraint), "bias_constraint": ser(self.bias_constraint),
                    "implementation": self.implementation}

    name = f"LocallyConnected{rank}D"
    LocallyConnected.__name__ = LocallyConnected.__qualname__ = name
    return keras.saving.register_keras_serializable(package="kconvert", name=name)(LocallyConnected)


def _ntuple(value, n: int) -> tuple[int, ...]:
    return (int(value),) * n if isinstance(value, int) else tuple(int(v) for v in value)


def _merge_class(base: type, ops, register) -> type:
    """Keras 1's Merge called on a list of tensors, with a named mode (dot and cos: 2-D inputs)."""

    class Merge(base):
        def __init__(self, layers=None, mode="sum", concat_axis=-1, dot_axes=-1, output_shape=None,
                     output_mask=None, arguments=None, **kwargs):
            for key in ("mode_type", "output_shape_type", "output_mask_type", "branch_weights_in_merge"):
                kwargs.pop(key, None)
            super().__init__(**kwargs)
            if layers or mode not in _MERGE_MODES:
                raise ValueError(f"kconvert's Merge takes a list of tensors and one of the modes {_MERGE_MODES}; "
                                 f"got mode={mode!r}" + (" with merged models" if layers else ""))
            self.mode = mode
            self.concat_axis = int(concat_axis)
            self.dot_axes = dot_axes

        def build(self, input_shape):
            if self.mode in ("dot", "cos") and (len(input_shape) != 2 or any(len(s) != 2 for s in input_shape)):
                raise ValueError(f"kconvert's Merge(mode={self.mode!r}) merges two 2-D tensors")
            self.built = True

        def call(self, inputs):
            xs = list(inputs)
            if self.mode in ("sum", "ave"):
                out = xs[0]
                for x in xs[1:]:
                    out = ops.add(out, x)
                return out / len(xs) if self.mode == "ave" else out
            if self.mode in ("mul", "max"):
                fn = ops.multiply if self.mode == "mul" else ops.maximum
                out = xs[0]
                for x in xs[1:]:
                    out = fn(out, x)
                return out
            if self.mode == "concat":
                return ops.concatenate(xs, axis=self.concat_axis)
            a, b = xs

            def dot(u, v):
                return ops.sum(ops.multiply(u, v), axis=1, keepdims=True)

            if self.mode == "dot":
                return dot(a, b)
            norms = ops.sqrt(ops.multiply(dot(a, a), dot(b, b)))
            return dot(a, b) / ops.maximum(norms, _EPSILON)

        def compute_output_shape(self, input_shape):
            if self.mode in ("dot", "cos"):
                return (input_shape[0][0], 1)
            if self.mode == "concat":
                out = list(input_shape[0])
                sizes = [s[self.concat_axis] for s in input_shape]
                out[self.concat_axis] = None if None in sizes else sum(sizes)
                return tuple(out)
            return tuple(input_shape[0])

        def get_config(self):
            return {**super().get_config(), "mode": self.mode, "concat_axis": self.concat_axis,
                    "dot_axes": self.dot_axes}

    return register(Merge) if register is not None else Merge
