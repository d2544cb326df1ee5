"""The layer vocabulary: each layer's config, weights in Keras order, output shape and numpy `call`."""

from ..custom_objects import current_custom_objects
from . import (
    activation_layers,
    applications,
    attention,
    caffe_elementwise,
    caffe_forks,
    caffe_normalization,
    caffe_pooling,
    caffe_shapes,
    caffe_ssd,
    conv_recurrent,
    convolutional,
    core,
    embedding,
    keras3_ops,
    lambda_layer,
    legacy_merge,
    locally_connected,
    masking,
    merging,
    normalization,
    pooling,
    preprocessing,
    recurrent,
    regularization,
    reshaping,
    tf_op_layers,
    wrappers,
)
from .base import LAYERS, Layer, Weight, get_layer_class, keras_dialect, register_layer
from .core import Activation, Dense, Input, InputLayer


def __getattr__(name):
    """`kconvert.layers.Conv2D` and friends: any registered layer class by name."""
    if name in LAYERS:
        return LAYERS[name]
    raise AttributeError(f"module 'kconvert.layers' has no attribute '{name}'")


def deserialize(config: dict, custom_objects: dict | None = None) -> Layer:
    """A layer from `{'class_name': ..., 'config': ...}` (Keras's `layers.deserialize`).

    Classes are looked up in `custom_objects`, then open `custom_object_scope`s and registered objects.
    """
    objects = {**current_custom_objects(), **(custom_objects or {})}
    cls = get_layer_class(config["class_name"], objects, (config.get("config") or {}).get("name"))
    return cls.from_config(config.get("config") or {})


def serialize(layer: Layer) -> dict:
    return {"class_name": type(layer).__name__, "config": layer.get_config()}


__all__ = ["LAYERS", "Layer", "Weight", "Input", "InputLayer", "Dense", "Activation", "get_layer_class",
           "keras_dialect", "register_layer", "deserialize", "serialize",
           # the modules themselves are imported for their @register_layer side effect
           "activation_layers", "applications", "attention", "caffe_elementwise", "caffe_forks", "caffe_normalization", "caffe_pooling", "caffe_shapes", "caffe_ssd", "conv_recurrent", "convolutional", "core",
           "embedding", "keras3_ops", "lambda_layer", "legacy_merge", "locally_connected", "masking", "merging", "normalization", "pooling",
           "preprocessing", "recurrent", "regularization", "reshaping", "tf_op_layers", "wrappers"]
