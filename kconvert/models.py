"""The Keras-compatible model API: `Model`, `Sequential`, `load_model`, `model_from_json`, ..."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from .converters import keras1, keras1_weights, keras3_config, keras3_weights, keras_config, keras_weights  # noqa: F401 - keras1: dialect hooks
from .errors import ConfigError, FormatError, GraphError, KConvertError, ShapeError
from .formats.finite_weights import check_finite, model_weights
from .ir import Graph, Node, Value, check_unique_names
from .layers import InputLayer, Layer, register_layer
from .layers.base import weights_follow
from .layers.core import Input
from .runtime import numpy_engine

# ---------------------------------------------------------------------------------------------- Model


@register_layer("Functional")
class Model(Layer):
    """A graph of layers between symbolic inputs and outputs (Keras's functional `Model`)."""

    runtime = "onnx"  # predict's engine: "onnx" (onnxruntime) or "numpy" (the reference engine)
    device = "auto"  # onnxruntime's device for predict: "auto", "cpu", "cuda" or "tensorrt"
    _predictor = None

    def __init__(self, inputs=None, outputs=None, name: str | None = None, trainable: bool = True, **kwargs):
        super().__init__(name=name, trainable=trainable, **kwargs)
        self._is_graph_network = False
        self._graph: Graph | None = None
        self._layers: list[Layer] = []
        self.compiled_config: dict | None = None
        self.optimizer_weights: list | None = None
        if inputs is not None or outputs is not None:
            if inputs is None or outputs is None:
                raise GraphError("Model needs both inputs and outputs", layer=self.name)
            self._init_graph(inputs, outputs)

    def _init_graph(self, inputs, outputs) -> None:
        self._nested_inputs = inputs
        self._nested_outputs = outputs
        if isinstance(inputs, dict):
            in_list = list(inputs.values())
        else:
            in_list = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        out_list = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
        self._graph = Graph(in_list, out_list)
        check_unique_names(self._graph.layers)
        self._layers = self._graph.layers
        self._is_graph_network = True
        self.built = True
        self._build_input_shape = [v.shape for v in in_list] if len(in_list) > 1 else in_list[0].shape
        node = Node(self, in_list, nested=len(in_list) > 1)
        node.outputs = out_list

    # ------------------------------------------------------------------ structure
    @property
    def layers(self) -> list[Layer]:
        return list(self._layers)

    @property
    def inputs(self) -> list[Value]:
        return list(self._graph.inputs) if self._graph else []

    @property
    def outputs(self) -> list[Value]:
        return list(self._graph.outputs) if self._graph else []

    @property
    def input_names(self) -> list[str]:
        return [v.node.layer.name for v in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [v.node.layer.name for v in self.outputs]

    def get_layer(self, name: str | None = None, index: int | None = None) -> Layer:
        """A layer by name or by index in `layers`."""
        if index is not None:
            if index >= len(self.layers):
                raise ValueError(f"asked for layer {index} but the model has {len(self.layers)} layers")
            return self.layers[index]
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise ValueError(f"no such layer: {name}; existing layers are {[la.name for la in self.layers]}")

    # ------------------------------------------------------------------ weights (Keras ordering rules)
    @property
    def trainable_weights(self) -> list:
        if not self.trainable:
            return []
        return _dedup(w for la in self.layers for w in la.trainable_weights)

    @property
    def non_trainable_weights(self) -> list:
        if not self.trainable:
            return _dedup(w for la in self.layers for w in la.trainable_weights + la.non_trainable_weights)
        return _dedup(w for la in self.layers for w in la.non_trainable_weights)

    @property
    def weights(self) -> list:
        # tf.keras lists a model's weights layer by layer (each layer trainable then non-trainable)
        return _dedup(w for la in self.layers for w in la.weights)

    # ------------------------------------------------------------------ computing
    def build(self, input_shape) -> None:
        if not self._is_graph_network:
            raise GraphError("a subclassed model cannot be built without inputs", layer=self.name)

    def compute_output_shape(self, input_shape):
        shapes = input_shape if isinstance(input_shape, list) and len(self.inputs) > 1 else [input_shape]

        def step(node, in_shapes):
            s = node.layer.compute_output_shape(node.call_args(in_shapes))
            return s if isinstance(s, list) and s and isinstance(s[0], (tuple, list)) else [s]

        out = self._graph.evaluate([tuple(s) for s in shapes], step)
        return out if len(out) > 1 else out[0]

    def compute_output_layout(self, input_layouts, output_shape):
        layouts = [v.layout for v in self.outputs]
        return layouts if len(layouts) > 1 else layouts[0]

    def call(self, inputs, training: bool = False, mask=None):
        feeds = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        masks = list(mask) if isinstance(mask, (list, tuple)) else [mask] * len(feeds)
        outs, self._last_masks = numpy_engine.run_graph(self._graph, feeds, training, masks)
        return outs if len(outs) > 1 else outs[0]

    def compute_mask(self, inputs, mask=None):
        masks = getattr(self, "_last_masks", None)
        if not masks:
            return None
        return masks if len(masks) > 1 else masks[0]

    def _standardize_inputs(self, x) -> list[np.ndarray]:
        names = self.input_names
        if isinstance(x, dict):
            missing = [n for n in names if n not in x]
            if missing:
                raise ConfigError(f"predict() got a dict without the inputs {missing}", layer=self.name)
            arrays = [x[n] for n in names]
        elif isinstance(x, (list, tuple)) and (len(names) > 1 or (len(x) == 1 and hasattr(x[0], "shape"))):
            arrays = list(x)  # one input may come as a list of one array, as Keras accepts it
        else:
            arrays = [x]
        if len(arrays) != len(names):
            raise ConfigError(f"the model has {len(names)} inputs, got {len(arrays)} arrays", layer=self.name)
        out = []
        for a, v in zip(arrays, self.inputs):
            a = np.asarray(a)
            if a.dtype.kind == "f" or v.dtype.startswith("float"):
                a = a.astype(v.dtype if v.dtype.startswith("float") else np.float32, copy=False)
            if a.ndim != len(v.shape) or any(d is not None and d != s for d, s in zip(v.shape[1:], a.shape[1:])):
                raise ShapeError(f"input '{v.node.layer.name}' expects shape {v.shape}, got {a.shape}",
                                 layer=v.node.layer.name)
            out.append(a)
        return out

    def predict(self, x, batch_size: int | None = None, verbose: Any = 0, steps=None, callbacks=None,
                runtime: str | None = None, device: str | None = None, **kwargs):
        """Run the model on numpy input(s) in batches; a list of arrays for several outputs.

        `runtime="onnx"` (the default, see `Model.runtime`) runs the model lowered to ONNX in onnxruntime on
        `device` ("auto", "cpu", "cuda", "tensorrt"); `runtime="numpy"` runs the numpy reference engine.
        """
        self._ensure_built(x)
        feeds = self._standardize_inputs(x)
        outs = self._run(feeds, batch_size, runtime, device)
        return outs if len(outs) > 1 else outs[0]

    def _run(self, feeds: list[np.ndarray], batch_size: int | None, runtime: str | None = None,
             device: str | None = None) -> list[np.ndarray]:
        from .onnx_predict import RUNTIMES, predict_onnx, predictor_for

        runtime = runtime or self.runtime
        if runtime not in RUNTIMES:
            raise ConfigError(f"runtime must be one of {RUNTIMES}, got {runtime!r}", layer=self.name)
        if feeds and any(getattr(la, "mixes_batch", False) for la in self.layers):
            batch_size = max(len(feeds[0]), 1)  # its output is not per sample: run the batch whole (SSD detections)
        if runtime == "onnx":
            session = predictor_for(self).session(self, device or self.device)
            outs = predict_onnx(session, feeds, batch_size) if session is not None else None
            if outs is not None:
                return outs
        return numpy_engine.predict(self._graph, feeds, batch_size or 32)

    def reset_states(self) -> None:
        """Reset the state of every stateful layer (recurrent layers with stateful=True), nested ones too."""
        for layer in self.layers:
            if hasattr(layer, "reset_states"):
                layer.reset_states()

    def predict_on_batch(self, x):
        self._ensure_built(x)
        feeds = self._standardize_inputs(x)
        outs = self._run(feeds, max(len(feeds[0]), 1) if feeds else None)
        return outs if len(outs) > 1 else outs[0]

    def to_onnx(self, path=None, opset: int | None = None, batch: int | None = None,
                inputs_as_nchw: bool = False, **kwargs):
        """The model as an ONNX ModelProto (see `kconvert.convert.keras_to_onnx`); written to `path` if given."""
        from .convert import keras_to_onnx
        from .converters.onnx_lowering import DEFAULT_OPSET

        return keras_to_onnx(self, path, opset=opset or DEFAULT_OPSET, batch=batch, inputs_as_nchw=inputs_as_nchw,
                             **kwargs)

    def __call__(self, inputs, **kwargs):
        if not self._is_graph_network:
            self._ensure_built(inputs)
        return super().__call__(inputs, **kwargs)

    def _ensure_built(self, x) -> None:
        if not self._is_graph_network:
            raise GraphError("the model has no inputs yet", layer=self.name)

    # ------------------------------------------------------------------ config
    def get_config(self) -> dict:
        return keras_config.functional_config(self)

    @classmethod
    def from_config(cls, config: dict, custom_objects: dict | None = None) -> Model:
        return keras_config.model_from_config({"class_name": "Functional", "config": config}, custom_objects)

    def to_json(self, keras_version: str | None = None, **kwargs) -> str:
        """The model config as JSON, with tf.keras's envelope (`keras_version`, `backend`); with
        `keras_version="3"` the Keras 3 form (`keras.models.model_from_json` reads it)."""
        from .formats.keras_text import dump_json

        if _keras3(keras_version):
            return dump_json(keras3_config.model_to_keras3_config(keras3_config.prepare_for_keras3(self)), **kwargs)
        return dump_json(self._envelope(), **kwargs)

    def to_yaml(self, **kwargs) -> str:
        from .formats.keras_text import dump_yaml

        return dump_yaml(self._envelope())

    def _envelope(self) -> dict:
        return {**keras_config.model_to_config(self), "keras_version": keras_config.KERAS_VERSION,
                "backend": "tensorflow"}

    # ------------------------------------------------------------------ training configuration
    def compile(self, optimizer="rmsprop", loss=None, metrics=None, loss_weights=None, weighted_metrics=None,
                **kwargs) -> None:
        """Configure training as Keras does: an optimizer (name, config or object), the loss(es) (one for every
        output, a list, or a dict by output name), metrics and loss weights likewise."""
        from .runtime import training

        self._compiled = training.compile_model(self, optimizer, loss, metrics, loss_weights, weighted_metrics,
                                                **kwargs)
        self.optimizer = self._compiled.optimizer
        self.compiled_config = {"optimizer": optimizer, "loss": loss, "metrics": metrics,
                                "loss_weights": loss_weights, "weighted_metrics": weighted_metrics}
        self.stop_training = False

    @property
    def metrics_names(self) -> list[str]:
        compiled = getattr(self, "_compiled", None)
        return compiled.metric_names() if compiled is not None else []

    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose=1, callbacks=None, validation_split=0.0,
            validation_data=None, shuffle=True, class_weight=None, sample_weight=None, initial_epoch=0,
            steps_per_epoch=None, validation_steps=None, validation_batch_size=None, validation_freq=1, **kwargs):
        """Train as `keras.Model.fit` (arrays, a generator or a `kconvert.utils.Sequence`); returns the History.
        Keras 1 names (`nb_epoch`, `samples_per_epoch`, `nb_val_samples`) work with a DeprecationWarning."""
        from .runtime import training

        for key, value in training.legacy_kwargs(kwargs, training._LEGACY_FIT).items():
            if key == "epochs":
                epochs = value
            elif key == "steps_per_epoch":
                steps_per_epoch = value
            elif key == "validation_steps":
                validation_steps = value
        return training.fit(self, x, y, batch_size, epochs, verbose, callbacks, validation_split, validation_data,
                            shuffle, class_weight, sample_weight, initial_epoch, steps_per_epoch, validation_steps,
                            validation_batch_size, validation_freq)

    def evaluate(self, x=None, y=None, batch_size=None, verbose=1, sample_weight=None, steps=None, callbacks=None,
                 return_dict=False, **kwargs):
        """The loss and metrics over the data, as `keras.Model.evaluate`."""
        from .runtime import training

        training.legacy_kwargs(kwargs, {})
        return training.evaluate(self, x, y, batch_size, verbose, sample_weight, steps, callbacks, return_dict)

    def train_on_batch(self, x, y=None, sample_weight=None, class_weight=None, reset_metrics=True,
                       return_dict=False):
        from .runtime import training

        return training.train_on_batch(self, x, y, sample_weight, class_weight, reset_metrics, return_dict)

    def test_on_batch(self, x, y=None, sample_weight=None, reset_metrics=True, return_dict=False):
        from .runtime import training

        return training.test_on_batch(self, x, y, sample_weight, reset_metrics, return_dict)

    def fit_generator(self, generator, steps_per_epoch=None, epochs=1, **kwargs):
        """The Keras 2 name of `fit` on a generator."""
        return self.fit(generator, steps_per_epoch=steps_per_epoch, epochs=epochs, **kwargs)

    def evaluate_generator(self, generator, steps=None, **kwargs):
        return self.evaluate(generator, steps=steps, **kwargs)

    def predict_generator(self, generator, steps=None, **kwargs):
        from .runtime.data_adapter import unpack_x_y_sample_weight

        outs = []
        for i, batch in enumerate(generator):
            if steps is not None and i >= steps:
                break
            outs.append(self.predict_on_batch(unpack_x_y_sample_weight(batch)[0]))
        if outs and isinstance(outs[0], list):
            return [np.concatenate(parts) for parts in zip(*outs)]
        return np.concatenate(outs)

    # ------------------------------------------------------------------ saving / loading
    def save(self, filepath, overwrite: bool = True, include_optimizer: bool = True, save_format: str | None = None,
             keras_version: str | None = None, **kwargs) -> None:
        """Write a whole-model file: `.keras` is the Keras 3 archive (`keras.saving.load_model` reads it); `.h5` is
        the tf.keras 2 layout (`tf_keras.models.load_model`), or with `keras_version="3"` Keras 3's legacy `.h5`."""
        from .formats.keras_h5 import write_keras_h5

        path = os.fspath(filepath)
        fmt = save_format or ("keras" if path.endswith(".keras") else
                              "h5" if path.endswith((".h5", ".hdf5", ".keras2")) else None)
        if fmt not in ("h5", "hdf5", "keras"):
            raise FormatError("kconvert writes .keras archives (Keras 3) and whole-model HDF5 files (.h5); "
                              "give the file one of those extensions", file=path)
        if not overwrite and os.path.exists(path):
            raise FormatError("the file exists and overwrite=False", file=path)
        if fmt == "keras" or _keras3(keras_version):
            _save_keras3(self, path, archive=fmt == "keras", include_optimizer=include_optimizer)
            return
        training_config, optimizer_weights = self._training_state() if include_optimizer else (None, None)
        write_keras_h5(path, layer_weights=keras_weights.weight_groups(self.layers),
                       model_config=keras_config.model_to_config(self, legacy=True), training_config=training_config,
                       optimizer_weights=optimizer_weights,
                       keras_version=keras_config.KERAS_VERSION, backend="tensorflow")

    def _training_state(self) -> tuple[dict | None, list | None]:
        """(training_config, optimizer_weights) to save: the compiled state, or what a loaded file carried."""
        if getattr(self, "_compiled", None) is not None:
            from .runtime import training_config

            return training_config.training_config(self), training_config.optimizer_weights(self)
        return getattr(self, "_training_config", None), self.optimizer_weights

    def save_weights(self, filepath, overwrite: bool = True, save_format: str | None = None, **kwargs) -> None:
        """Write the weights: `*.weights.h5` in Keras 3's layout (with the compiled optimizer's variables, as
        `keras.Model.save_weights` writes them), any other name as tf_keras's HDF5 (layer weights only)."""
        from .formats.keras_h5 import write_keras_h5

        path = os.fspath(filepath)
        if not overwrite and os.path.exists(path):
            raise FormatError("the file exists and overwrite=False", file=path)
        if path.endswith(".weights.h5"):  # Keras 3's layout, as keras.Model.save_weights writes it
            from .formats.keras3_weights import StateGroup, write_keras3_weights
            from .runtime import training_config

            # compiled: the optimizer's current variables, as Keras 3 writes them; else what a loaded file carried
            optimizer = getattr(self, "_keras3_optimizer_state", None)
            if getattr(self, "_compiled", None) is not None:
                state = training_config.keras3_optimizer_variables(self)
                optimizer = None if state is None else StateGroup(vars=state[1], name=state[0], has_vars=True)
            write_keras3_weights(path, keras3_weights.model_state(keras3_config.prepare_for_keras3(self), optimizer))
            return
        write_keras_h5(path, layer_weights=keras_weights.weight_groups(self.layers),
                       keras_version=keras_config.KERAS_VERSION, backend="tensorflow")

    def load_weights(self, filepath, by_name: bool = False, skip_mismatch: bool = False,
                     source_backend: str | None = None, strict: bool = False, **kwargs) -> None:
        """Load HDF5 weights: by position (Keras's default) or, with `by_name=True`, by layer name.

        `source_backend` ('tensorflow', 'theano', 'cntk') overrides the backend inferred for the file.
        NaN/Inf in the loaded weights warn (KConvertWarning), or raise NonFiniteWeightsError with `strict=True`.
        """
        self._load_weights_from(filepath, by_name, skip_mismatch, source_backend, **kwargs)
        check_finite(model_weights(self), os.fspath(filepath), strict)

    def _load_weights_from(self, filepath, by_name: bool, skip_mismatch: bool, source_backend: str | None,
                           **kwargs) -> None:
        from .formats.detect import detect_format
        from .formats.keras_h5 import read_keras_h5

        path = os.fspath(filepath)
        kind = "keras3_weights_h5" if path.endswith(".weights.json") else detect_format(path)
        if kind in ("keras3_weights_h5", "keras_zip"):  # Keras 3's layout: variables by saved path
            if by_name:
                raise ConfigError("by_name=True is for legacy HDF5 weight files; Keras 3 weights load by path",
                                  file=path)
            self._ensure_built(None)
            _load_keras3_weights(self, path, kind)
            return
        if kind not in ("keras_h5_model", "keras_h5_weights"):
            raise FormatError(f"load_weights reads Keras HDF5 weight files; this file is '{kind}'", file=path)
        if skip_mismatch and not by_name:
            raise ConfigError("skip_mismatch=True is only valid together with by_name=True", file=path)
        h5 = read_keras_h5(path)
        self._ensure_built(None)
        try:
            origin = {"original_keras_version": h5.original_keras_version,
                      "original_backend": keras1_weights.source_backend(h5, source_backend)}
            if by_name:
                keras_weights.load_by_name(keras1_weights.by_name_layers(self.layers, h5), h5.layer_weights, path,
                                           skip_mismatch, **origin)
            else:
                keras_weights.load_topological(keras1_weights.topological_layers(self.layers, h5), h5.layer_weights,
                                               h5.layer_names, path, **origin)
        except KConvertError as e:
            raise e.with_context(file=path) from None

    # ------------------------------------------------------------------ summary
    def summary(self, line_length: int | None = None, positions=None, print_fn=None, expand_nested: bool = False,
                show_trainable: bool = False, layer_range=None) -> None:
        """Print tf.keras's summary table."""
        from .summary import print_summary

        print_summary(self, line_length=line_length, positions=positions, print_fn=print_fn)


def _dedup(weights) -> list:
    seen: set[int] = set()
    out = []
    for w in weights:
        if id(w) not in seen:
            seen.add(id(w))
            out.append(w)
    return out


# ---------------------------------------------------------------------------------------------- Sequential


@register_layer()
class Sequential(Model):
    """A linear stack of layers; built as soon as the input shape is known."""

    def __init__(self, layers: Sequence[Layer] | None = None, name: str | None = None, **kwargs):
        super().__init__(name=name, **kwargs)
        self._stack: list[Layer] = []
        self._input_layer: InputLayer | None = None
        for layer in layers or []:
            self.add(layer)

    def _all_layers(self) -> list[Layer]:
        return ([self._input_layer] if self._input_layer is not None else []) + list(self._stack)

    def predict_proba(self, x, batch_size: int = 32, verbose: int = 0):
        """Keras 1/2's Sequential.predict_proba: the predictions (probabilities from a softmax/sigmoid head)."""
        return self.predict(x, batch_size=batch_size, verbose=verbose)

    def predict_classes(self, x, batch_size: int = 32, verbose: int = 0):
        """Keras 1/2's Sequential.predict_classes: argmax over the last axis, or `> 0.5` for one output unit."""
        proba = self.predict(x, batch_size=batch_size, verbose=verbose)
        if proba.shape[-1] > 1:
            return proba.argmax(axis=-1)
        return (proba > 0.5).astype("int32")

    @property
    def layers(self) -> list[Layer]:
        return list(self._stack)

    def add(self, layer: Layer) -> None:
        """Append a layer; the model is (re)built when its input shape is known."""
        if isinstance(layer, Value):
            layer = layer.node.layer
        if not isinstance(layer, Layer):
            raise ConfigError(f"Sequential.add expects a layer, got {type(layer).__name__}", layer=self.name)
        if isinstance(layer, InputLayer):
            if self._stack or self._input_layer is not None:
                raise ConfigError("an InputLayer can only be the first layer of a Sequential", layer=layer.name)
            self._input_layer = layer
            return
        if any(la.name == layer.name for la in self._stack):
            raise GraphError(f"all layers in a Sequential model should have unique names; '{layer.name}' is "
                             f"already there", layer=layer.name)
        self._stack.append(layer)
        if self._input_layer is None and len(self._stack) == 1:
            shape = layer._batch_input_shape
            if shape is None and isinstance(layer, Model) and layer._is_graph_network and len(layer.inputs) == 1:
                shape = layer.inputs[0].shape
            if shape is not None:
                self._input_layer = InputLayer(batch_input_shape=shape, name=f"{layer.name}_input",
                                               dtype=layer._dtype_config if isinstance(layer._dtype_config, str)
                                               else None)
        if self._input_layer is not None or _own_inputs(self._stack[0]) is not None:
            self._rebuild()

    def pop(self) -> None:
        if not self._stack:
            raise ConfigError("there are no layers to pop", layer=self.name)
        layer = self._stack.pop()
        if layer._inbound_nodes:
            layer._inbound_nodes.pop()
        if self._input_layer is not None and self._stack:
            self._rebuild()

    def _rebuild(self) -> None:
        own = _own_inputs(self._stack[0]) if self._input_layer is None else None
        if own is not None:  # a first layer that brings its model inputs (Keras 1's Merge of models)
            inputs, x = own
            rest = self._stack[1:]
        else:
            inputs = x = self._input_layer._inbound_nodes[0].outputs[0]
            rest = self._stack
        for layer in rest:
            node = _node_on(layer, x)
            if node is not None:
                out = node.outputs
                x = out[0] if len(out) == 1 else list(out)
            else:
                x = layer(x)
            if isinstance(x, list):
                raise GraphError("layers in a Sequential model must have a single output", layer=layer.name)
        self._inbound_nodes = []
        self._init_graph(inputs, x)
        self._layers = self._all_layers()

    def build(self, input_shape=None) -> None:
        if input_shape is None:
            raise GraphError("Sequential.build needs an input shape", layer=self.name)
        if self._input_layer is None:
            self._input_layer = InputLayer(batch_input_shape=tuple(input_shape),
                                           name=f"{self._stack[0].name}_input" if self._stack else None)
            if self._stack:
                self._rebuild()
        self.built = True

    def _ensure_built(self, x) -> None:
        if self._is_graph_network:
            return
        if x is None or not self._stack:
            raise GraphError("the Sequential model has no input shape yet: give the first layer input_shape= "
                             "or call build()", layer=self.name)
        first = x[0] if isinstance(x, (list, tuple)) else x
        shape = (None, *np.asarray(first).shape[1:])
        self.build(shape)

    def get_config(self) -> dict:
        return keras_config.sequential_config(self)

    @classmethod
    def from_config(cls, config, custom_objects: dict | None = None) -> Sequential:
        return keras_config.model_from_config({"class_name": "Sequential", "config": config}, custom_objects)


def _own_inputs(layer: Layer):
    """(inputs, output) of a layer that starts a Sequential with inputs of its own, else None."""
    fn = getattr(layer, "sequential_inputs_outputs", None)
    return fn() if fn is not None else None


def _node_on(layer: Layer, x: Value):
    """An existing node of `layer` whose single input is `x` (so rebuilding does not add nodes)."""
    for node in layer._inbound_nodes:
        if len(node.inputs) == 1 and node.inputs[0] is x:
            return node
    return None


# ---------------------------------------------------------------------------------------------- loading


def model_from_config(config: dict, custom_objects: dict | None = None, safe_mode: bool = True) -> Layer:
    """A model (or layer) from a `{'class_name', 'config'}` dict."""
    return keras_config.model_from_config(config, custom_objects, safe_mode=safe_mode)


def model_from_json(json_string: str, custom_objects: dict | None = None, safe_mode: bool = True) -> Layer:
    """A model from `Model.to_json()` text of any tf.keras / Keras 2 writer."""
    from .formats.keras_text import load_config_text

    return keras_config.model_from_config(load_config_text(json_string, "json"), custom_objects,
                                          safe_mode=safe_mode)


def model_from_yaml(yaml_string: str, custom_objects: dict | None = None, safe_mode: bool = True) -> Layer:
    """A model from Keras YAML (read safely: only the `!!python/tuple` tag is accepted)."""
    from .formats.keras_text import load_config_text

    return keras_config.model_from_config(load_config_text(yaml_string, "yaml"), custom_objects,
                                          safe_mode=safe_mode)


def load_model(filepath, custom_objects: dict | None = None, compile: bool = True, safe_mode: bool = True,
               source_backend: str | None = None, strict: bool = False, **kwargs) -> Model:
    """Load a whole-model Keras `.h5` file (or a JSON/YAML config, architecture only).

    `source_backend` ('tensorflow', 'theano', 'cntk') overrides the backend inferred for the file's weights.
    NaN/Inf in the loaded weights warn (KConvertWarning), or raise NonFiniteWeightsError with `strict=True`.
    """
    model = _load_model(filepath, custom_objects, compile, safe_mode, source_backend, **kwargs)
    check_finite(model_weights(model), os.fspath(filepath), strict)
    return model


def _load_model(filepath, custom_objects: dict | None, compile: bool, safe_mode: bool, source_backend: str | None,
                **kwargs) -> Model:
    from .formats.detect import detect_format
    from .formats.keras_h5 import read_keras_h5
    from .formats.keras_text import read_config_file

    path = os.fspath(filepath)
    kind = detect_format(path)
    try:
        if kind in ("json", "yaml"):
            return keras_config.model_from_config(read_config_file(path), custom_objects, safe_mode=safe_mode)
        if kind in ("keras_h5_weights", "keras3_weights_h5"):
            raise FormatError("this is a weights-only file (save_weights); build the model and call "
                              "model.load_weights() on it", file=path)
        if kind == "keras_zip":
            return _load_keras_archive(path, custom_objects, safe_mode, compile)
        if kind != "keras_h5_model":
            raise FormatError(f"kconvert cannot load a model from this file yet (detected '{kind}')", file=path)
        h5 = read_keras_h5(path)
        if h5.model_config is None:
            raise FormatError("the file has no model_config", file=path)
        with weights_follow():  # every weight is assigned from the file just below
            model = keras_config.model_from_config(h5.model_config, custom_objects, keras_version=h5.keras_version,
                                                   safe_mode=safe_mode)
        layers = model.layers if isinstance(model, Model) else [model]
        if isinstance(model, Model) and keras3_config.keras_major(h5.keras_version) >= 3:
            layers = keras3_weights.keras3_layers(model)  # the file lists the layers in Keras 3's order
        keras_weights.load_topological(keras1_weights.topological_layers(layers, h5), h5.layer_weights,
                                       h5.layer_names, path, original_keras_version=h5.original_keras_version,
                                       original_backend=keras1_weights.source_backend(h5, source_backend))
        if isinstance(model, Model):
            model._training_config = h5.training_config
            model.optimizer_weights = h5.optimizer_weights
            model._source_keras_version = h5.keras_version
            if compile and h5.training_config:
                from .runtime.training_config import recompile

                recompile(model, h5.training_config, h5.optimizer_weights, h5.keras_version, path)
        return model
    except KConvertError as e:
        raise e.with_context(file=path) from None


def _keras3(keras_version) -> bool:
    return keras_version is not None and keras3_config.keras_major(keras_version) >= 3


def _save_keras3(model: Model, path: str, archive: bool, include_optimizer: bool) -> None:
    """A `.keras` archive, or Keras 3's legacy `.h5`, of `model` (layers Keras 3 lacks rewritten natively)."""
    from .formats.keras3_weights import StateGroup
    from .formats.keras_h5 import write_keras_h5
    from .formats.keras_zip import KERAS3_VERSION, write_keras_zip
    from .runtime import training_config

    ready = keras3_config.prepare_for_keras3(model)
    if archive:
        config = keras3_config.model_to_keras3_config(ready)
        optimizer = getattr(model, "_keras3_optimizer_state", None)
        compiled = training_config.keras3_compiled_state(model) if include_optimizer else None
        if compiled is not None and "compile_config" in config:  # compiled in kconvert: its own state
            config["compile_config"], state = compiled
            optimizer = None if state is None else StateGroup(vars=state[1], name=state[0], has_vars=True)
        elif not include_optimizer or optimizer is None or "compile_config" not in config:
            optimizer = None
            if "compile_config" in config:
                config["compile_config"] = {}
        write_keras_zip(path, config, keras3_weights.model_state(ready, optimizer))
        return
    layers = ready.layers if isinstance(ready, Model) else [ready]
    if isinstance(ready, Model):
        layers = keras3_weights.keras3_layers(ready)
    training, opt_weights = None, None
    if include_optimizer:  # the compiled state; uncompiled, what a Keras 3 .h5 it came from carried
        paths = keras3_weights.variable_paths(keras3_weights.keras3_layers(model), model) \
            if isinstance(model, Model) else None
        state = training_config.keras3_h5_training_state(model, paths)
        if state is not None:
            training, opt_weights = state
        elif keras3_config.keras_major(getattr(model, "_source_keras_version", None)) >= 3:
            training, opt_weights = getattr(model, "_training_config", None), model.optimizer_weights
    write_keras_h5(path, layer_weights=keras3_weights.legacy_weight_groups(layers, ready if isinstance(ready, Model)
                                                                           else None),
                   model_config=keras3_config.model_to_keras3_config(ready, legacy=True),
                   training_config=training, optimizer_weights=opt_weights,
                   keras_version=KERAS3_VERSION, backend="tensorflow")


def _load_keras3_weights(model: Model, path: str, kind: str) -> None:
    from .formats.keras3_weights import read_keras3_weights
    from .formats.keras_zip import read_keras_zip

    try:
        tree = read_keras_zip(path).weights if kind == "keras_zip" else read_keras3_weights(path)
        if tree is None:
            raise FormatError("the archive holds no weights", file=path)
        keras3_weights.load_model_state(model, tree, path)
    except KConvertError as e:
        raise e.with_context(file=path) from None
    if "optimizer" in tree.children:
        model._keras3_optimizer_state = tree.children["optimizer"]


def _load_keras_archive(path: str, custom_objects: dict | None, safe_mode: bool, compile: bool = True) -> Layer:
    from .formats.keras_zip import read_keras_zip

    archive = read_keras_zip(path)
    model = keras_config.model_from_config(archive.config, custom_objects, keras_version=archive.keras_version or "3",
                                           safe_mode=safe_mode)
    if archive.weights is not None:
        keras3_weights.load_model_state(model, archive.weights, path)
        if "optimizer" in archive.weights.children:
            model._keras3_optimizer_state = archive.weights.children["optimizer"]
    model._source_keras_version = archive.keras_version
    compile_config = getattr(model, "_keras3_compile_config", None)
    if compile and compile_config and isinstance(model, Model):
        from .runtime.training_config import recompile_keras3

        recompile_keras3(model, compile_config, getattr(model, "_keras3_optimizer_state", None), path)
    return model


def clone_config(model: Model) -> dict:
    """A deep copy of the model's config through JSON (what `to_json` would write)."""
    return json.loads(model.to_json())


__all__ = ["Model", "Sequential", "Input", "load_model", "model_from_json", "model_from_yaml",
           "model_from_config"]
