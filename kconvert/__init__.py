"""kconvert: move trained networks between Keras and Caffe and out to ONNX; run and fine-tune them."""

__version__ = "0.1.0"

# models registers Model/Functional/Sequential with the layer registry
from . import backend, callbacks, datasets, errors, layers, losses, metrics, models, ops, optimizers, utils  # noqa: E402, F401
from .custom_objects import custom_object_scope, get_custom_objects, register_keras_serializable  # noqa: E402
from .keras_objects import keras_objects  # noqa: E402
from .layers import Input  # noqa: E402
from .models import Model, Sequential, load_model, model_from_json, model_from_yaml  # noqa: E402
from .ops.array_module import device  # noqa: E402

__all__ = ["backend", "errors", "layers", "ops", "models", "Input", "Model", "Sequential", "load_model",
           "model_from_json", "model_from_yaml", "custom_object_scope", "get_custom_objects",
           "register_keras_serializable", "keras_objects", "device", "__version__"]
