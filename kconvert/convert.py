"""Conversions between formats, as library calls: `keras_to_onnx`, `caffe_to_keras`, `caffe_to_onnx`.

onnx and the lowerings are imported by the functions that use them: `kconvert caffe2keras` never loads them.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from .models import Model, load_model

if TYPE_CHECKING:
    import onnx


def keras_to_onnx(model_or_path, path: str | os.PathLike | None = None, opset: int | None = None,
                  batch: int | None = None, inputs_as_nchw: bool = False, *, weights: str | None = None,
                  custom_objects: dict | None = None, safe_mode: bool = True, optimize: bool = True,
                  external_data: bool | None = None, progress=None, dynamic: bool = False,
                  stream: bool = False) -> onnx.ModelProto:
    """The ONNX model of a Keras model (a kconvert Model or a `.h5`/`.keras`/JSON/YAML path); written to `path` if given.

    `opset` defaults to 17 (`onnx_lowering.DEFAULT_OPSET`); `batch` fixes the batch dimension (symbolic "N" by
    default); `inputs_as_nchw` declares channels_last image
    inputs channels-first; `weights` loads a weights file into a config-only model; `safe_mode=False` allows
    Lambda bytecode; `dynamic` makes sequence lengths and spatial sizes symbolic where the model allows (a
    warning says why not otherwise). The export passes onnx.checker (full check) and strict shape inference.
    `stream` (with `path`) writes large weights to the file as they are lowered instead of holding the whole
    model in memory; the returned proto then keeps only their name, type and dims (the data is in the file).
    """
    from .converters.onnx_lowering import DEFAULT_OPSET, check_proto, lower_model
    from .formats.onnx_file import too_big_for_protobuf, write_onnx

    opset = DEFAULT_OPSET if opset is None else opset
    model = _model_of(model_or_path, weights, custom_objects, safe_mode)
    if dynamic:
        model = _dynamic_or_fixed(model, opset, batch, inputs_as_nchw, optimize)
    if stream and path is not None:
        return _stream_to_onnx(model, path, external_data, dict(opset=opset, batch=batch, optimize=optimize,
                                                                inputs_as_nchw=inputs_as_nchw, progress=progress))
    proto = lower_model(model, opset=opset, batch=batch, inputs_as_nchw=inputs_as_nchw, optimize=optimize,
                        progress=progress, check=False)
    # serialize once: the checker and the file take the same bytes
    serialized = None if external_data or too_big_for_protobuf(proto) else proto.SerializeToString()
    check_proto(proto, serialized)
    if path is not None:
        write_onnx(proto, path, external_data=external_data, serialized=serialized)
    return proto


def _model_of(model_or_path, weights, custom_objects, safe_mode: bool) -> Model:
    """`model_or_path` as a Model: a file loaded (uncompiled), with `weights` loaded into it when given."""
    if isinstance(model_or_path, Model):
        return model_or_path
    model = load_model(os.fspath(model_or_path), custom_objects=custom_objects, compile=False, safe_mode=safe_mode)
    if weights:
        model.load_weights(weights)
    return model


def _stream_to_onnx(model: Model, path, external_data: bool | None, options: dict) -> onnx.ModelProto:
    from .converters.onnx_lowering import check_proto, lower_model
    from .formats.onnx_file import EXTERNAL_DATA_THRESHOLD
    from .formats.onnx_stream import StreamedOnnx

    if external_data is None:  # the weights decide: the lowered constants are about as large
        external_data = sum(w.dtype.itemsize * int(np.prod(w.shape)) for w in model.weights) > \
            EXTERNAL_DATA_THRESHOLD
    out = StreamedOnnx(path, external=external_data)
    try:
        proto = lower_model(model, check=False, stream=out, **options)
        check_proto(proto, stubs=out.streamed)
        out.finish(proto)
    except BaseException:
        out.abort()
        raise
    return proto


def _dynamic_or_fixed(model: Model, opset, batch, inputs_as_nchw, optimize) -> Model:
    import warnings

    from .converters.onnx_lowering import lower_model
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


# ---------------------------------------------------------------------------------------------- Caffe


def caffe_to_keras(prototxt: str | os.PathLike, caffemodel: str | os.PathLike | None = None,
                   data_format: str = "channels_last", input_shape: tuple | None = None, progress=None,
                   strict: bool = False) -> Model:
    """The kconvert Model of a Caffe deploy net (with its caffemodel's weights, or the architecture only).

    Native Keras layers wherever they compute exactly what Caffe computes, kconvert's Caffe layers otherwise; the
    model predicts, saves (`.h5` for tf_keras, `.keras` for Keras 3) and trains like any other. `input_shape`
    (N, C, H, W) replaces the shape the prototxt gives its first input. NaN/Inf in the blobs warn, or raise
    NonFiniteWeightsError with `strict=True`.
    """
    from .converters.caffe_net import caffe_net_to_model
    from .formats.caffe import deploy_net, read_prototxt
    from .formats.caffe.caffemodel import read_caffemodel

    net = deploy_net(read_prototxt(os.fspath(prototxt)), file=os.fspath(prototxt))
    if input_shape is not None:
        _set_input_shape(net, input_shape, os.fspath(prototxt))
    weights = read_caffemodel(os.fspath(caffemodel), strict=strict).by_name() if caffemodel is not None else None
    return caffe_net_to_model(net, weights, data_format=data_format, file=os.fspath(prototxt), progress=progress)


def caffe_to_onnx(prototxt: str | os.PathLike, caffemodel: str | os.PathLike, path: str | os.PathLike | None = None,
                  opset: int | None = None, batch: int | None = None, input_shape: tuple | None = None,
                  stream: bool = False) -> onnx.ModelProto:
    """The ONNX model of a Caffe net, NCHW like Caffe (no layout Transposes); written to `path` if given
    (`stream`: weights written as they are converted, see `keras_to_onnx`)."""
    model = caffe_to_keras(prototxt, caffemodel, data_format="channels_first", input_shape=input_shape)
    return keras_to_onnx(model, path, opset=opset, batch=batch, stream=stream)


def _set_input_shape(net, shape: tuple, file: str) -> None:
    from .errors import ConfigError

    first = next((la for la in net.layer if la.type == "Input"), None)
    if first is None:
        raise ConfigError("the net has no Input layer whose shape --input-shape could set", file=file)
    del first.input_param.shape[:]
    first.input_param.shape.add().dim.extend(int(d) for d in shape)


def keras_to_caffe(model_or_path, prototxt: str | os.PathLike, caffemodel: str | os.PathLike | None = None, *,
                   weights: str | None = None, custom_objects: dict | None = None, safe_mode: bool = True):
    """Write a Keras model (a kconvert Model or a Keras file) as a Caffe deploy prototxt and, if given a path, its
    caffemodel (blobs streamed one layer at a time). Layers Caffe cannot compute exactly raise ExportError naming
    them. Returns the NetParameter written."""
    from .converters.caffe_export import model_to_caffe
    from .formats.atomic import atomic_paths
    from .formats.caffe import write_prototxt
    from .formats.caffe.caffemodel import write_caffemodel

    model = _model_of(model_or_path, weights, custom_objects, safe_mode)
    exporter = model_to_caffe(model)
    if caffemodel is None:
        write_prototxt(exporter.net, prototxt)
        return exporter.net
    # both files are written before either is renamed into place: a failure leaves the old pair untouched
    with atomic_paths(caffemodel, prototxt) as (caffemodel_tmp, prototxt_tmp):
        write_caffemodel(caffemodel_tmp, exporter.layer_blobs(), version=2, name=exporter.net.name)
        write_prototxt(exporter.net, prototxt_tmp)
    return exporter.net
