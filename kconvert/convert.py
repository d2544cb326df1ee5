"""Conversions between formats, as library calls: `keras_to_onnx` (more pairs come with the Caffe issues)."""

from __future__ import annotations

import os

import onnx

from .converters.onnx_lowering import DEFAULT_OPSET, check_proto, lower_model
from .formats.onnx_file import too_big_for_protobuf, write_onnx
from .models import Model, load_model


def keras_to_onnx(model_or_path, path: str | os.PathLike | None = None, opset: int = DEFAULT_OPSET,
                  batch: int | None = None, inputs_as_nchw: bool = False, *, weights: str | None = None,
                  custom_objects: dict | None = None, safe_mode: bool = True, optimize: bool = True,
                  external_data: bool | None = None, progress=None, dynamic: bool = False) -> onnx.ModelProto:
    """The ONNX model of a Keras model (a kconvert Model or a `.h5`/`.keras`/JSON/YAML path); written to `path` if given.

    `batch` fixes the batch dimension (symbolic "N" by default); `inputs_as_nchw` declares channels_last image
    inputs channels-first; `weights` loads a weights file into a config-only model; `safe_mode=False` allows
    Lambda bytecode; `dynamic` makes sequence lengths and spatial sizes symbolic where the model allows (a
    warning says why not otherwise). The export passes onnx.checker (full check) and strict shape inference.
    """
    model = model_or_path
    if not isinstance(model, Model):
        model = load_model(os.fspath(model_or_path), custom_objects=custom_objects, compile=False,
                           safe_mode=safe_mode)
        if weights:
            model.load_weights(weights)
    if dynamic:
        model = _dynamic_or_fixed(model, opset, batch, inputs_as_nchw, optimize)
    proto = lower_model(model, opset=opset, batch=batch, inputs_as_nchw=inputs_as_nchw, optimize=optimize,
                        progress=progress, check=False)
    # serialize once: the checker and the file take the same bytes
    serialized = None if external_data or too_big_for_protobuf(proto) else proto.SerializeToString()
    check_proto(proto, serialized)
    if path is not None:
        write_onnx(proto, path, external_data=external_data, serialized=serialized)
    return proto


def _dynamic_or_fixed(model: Model, opset, batch, inputs_as_nchw, optimize) -> Model:
    import warnings

    from .errors import ExportError

    clone, reason = dynamic_clone(model)
    if reason is None:
        try:
            lower_model(clone, opset=opset, batch=batch, inputs_as_nchw=inputs_as_nchw, optimize=optimize,
                        check=False)
            return clone
        except ExportError as e:
            reason = str(e)
    warnings.warn(f"kconvert: --dynamic: keeping the input sizes fixed: {reason}", stacklevel=3)
    return model


def dynamic_clone(model: Model) -> tuple[Model, str | None]:
    """A copy of `model` whose inputs have symbolic sequence/spatial sizes, or (model, reason) when it needs them fixed.

    The feature/channel axis stays fixed (the last one, or axis 1 in a channels_first model); token inputs
    (rank 2, integer or feeding an Embedding) get a symbolic length.
    """
    from .errors import KConvertError
    from .models import clone_config, model_from_config

    channels_first = any(getattr(la, "data_format", None) == "channels_first" for la in model.layers)
    config = clone_config(model)
    changed = False
    for entry in _input_entries(config):
        shape = entry.get("batch_input_shape") or entry.get("batch_shape")
        if not shape or len(shape) < 2:
            continue
        keep = {1} if channels_first and len(shape) > 2 else {len(shape) - 1}
        if len(shape) == 2 and (str(entry.get("dtype", "float32")).startswith("int") or _feeds_embedding(model)):
            keep = set()
        new = [d if (i == 0 or i in keep) else None for i, d in enumerate(shape)]
        if new != list(shape):
            entry["batch_input_shape" if "batch_input_shape" in entry else "batch_shape"] = new
            changed = True
    if not changed:
        return model, "the model has no fixed sequence or spatial size"
    try:
        clone = model_from_config(config)
        clone.set_weights(model.get_weights())
    except (KConvertError, ValueError, TypeError) as e:
        return model, f"the model needs its input sizes fixed ({e})"
    return clone, None


def _input_entries(config: dict):
    inner = config.get("config", {})
    layers = inner.get("layers", []) if isinstance(inner, dict) else inner
    for layer in layers:
        cfg = layer.get("config", {})
        if layer.get("class_name") == "InputLayer" or "batch_input_shape" in cfg or "batch_shape" in cfg:
            yield cfg
            if config.get("class_name") == "Sequential":
                break


def _feeds_embedding(model: Model) -> bool:
    return any(type(la).__name__ == "Embedding" for la in model.layers)
