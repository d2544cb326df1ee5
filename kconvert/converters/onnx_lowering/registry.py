"""Per-layer lowering functions, found by layer class (tf2onnx-style handler registry)."""

from __future__ import annotations

from collections.abc import Callable

from ...errors import ExportError

LOWERINGS: dict[str, Callable] = {}


def lowers(*class_names: str, handles_mask: bool = False) -> Callable:
    """Register `fn(ctx, layer, inputs, node) -> list[TensorRef]` for the named layer classes.

    With `handles_mask`, the lowering reads its inputs' `mask` and sets its outputs' masks itself; otherwise
    a masked input reaching a layer whose `call` takes a mask is an ExportError, and masks pass through
    layers that pass them in Keras.
    """
    def deco(fn: Callable) -> Callable:
        fn.handles_mask = handles_mask
        for name in class_names:
            LOWERINGS[name] = fn
        return fn
    return deco


def lowering_for(layer) -> Callable | None:
    """The lowering of the layer's class, or of the nearest base class when the subclass keeps its `call`."""
    own = type(layer)
    for cls in own.__mro__:
        fn = LOWERINGS.get(cls.__name__)
        if fn is not None:
            return fn if cls is own or getattr(own, "call", None) is getattr(cls, "call", None) else None
    return None


def unsupported(layer, what: str) -> ExportError:
    """The error for a layer option ONNX lowering does not cover."""
    return ExportError(f"{type(layer).__name__}: {what} cannot be lowered to ONNX", layer=layer.name)
