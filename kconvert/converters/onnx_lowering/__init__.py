"""IR -> ONNX: one lowering function per layer type (registry), layout bookkeeping, graph passes."""

from . import (  # noqa: F401 - every module that registers lowerings
    applications,
    attention,
    caffe_elementwise_shapes,
    caffe_forks,
    caffe_pooling_normalization,
    caffe_ssd,
    conv,
    conv_recurrent,
    core,
    locally_connected,
    merging,
    normalization,
    pooling,
    preprocessing,
    recurrent,
    reshaping,
    wrappers,
)
from .export import DEFAULT_OPSET, check_proto, lower_model
from .opsets import MIN_OPSET, max_opset
from .registry import LOWERINGS, lowering_for, lowers

__all__ = ["DEFAULT_OPSET", "LOWERINGS", "MIN_OPSET", "check_proto", "lower_model", "lowering_for", "lowers",
           "max_opset"]
