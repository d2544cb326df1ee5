"""kconvert: move trained networks between Keras and Caffe and out to ONNX; run and fine-tune them."""

__version__ = "0.1.0"

from . import errors, layers, ops  # noqa: E402

__all__ = ["errors", "layers", "ops", "__version__"]
