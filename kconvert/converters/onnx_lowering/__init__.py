"""IR -> ONNX: one lowering function per layer type (registry), layout bookkeeping, graph passes."""

from . import attention, conv, core, merging, misc, normalization, pooling, recurrent, reshaping, wrappers  # noqa: F401 - they register lowerings
from .export import DEFAULT_OPSET, check_proto, lower_model
from .opsets import MIN_OPSET, max_opset
from .registry import LOWERINGS, lowering_for, lowers

__all__ = ["DEFAULT_OPSET", "LOWERINGS", "MIN_OPSET", "check_proto", "lower_model", "lowering_for", "lowers",
           "max_opset"]
