"""`Model.predict`'s default engine: the model lowered to ONNX and run by onnxruntime, cached per weights version."""

from __future__ import annotations

import threading
import warnings

import numpy as np

from .errors import KConvertError

RUNTIMES = ("onnx", "numpy")


class OnnxPredictor:
    """Holds one model's onnxruntime session; re-exports when the graph or any weight changes.

    A model the lowering cannot express (a layer without an ONNX form, a stateful RNN whose state must
    persist between calls) is predicted by the numpy engine instead, with one warning naming the reason.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._key = None
        self._session = None
        self.reason: str | None = None  # why the numpy engine is used, when it is

    def __deepcopy__(self, memo) -> OnnxPredictor:
        return OnnxPredictor()  # a copied model builds its own session

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()

    def session(self, model, device: str = "auto", opset: int | None = None):
        """The cached session for the model's current weights, or None when the model cannot run on ONNX."""
        key = (id(model._graph), _weights_key(model), device, opset)
        with self._lock:
            if key == self._key:
                return self._session
            self._session, self.reason = self._build(model, device, opset)
            self._key = key
            if self.reason is not None:
                warnings.warn(f"kconvert: model '{model.name}' runs on the numpy engine: {self.reason}",
                              RuntimeWarning, stacklevel=4)
            return self._session

    @staticmethod
    def _build(model, device, opset):
        from .converters.onnx_lowering import DEFAULT_OPSET, lower_model
        from .runtime.onnx_session import OnnxSession

        stateful = [la.name for la in _all_layers(model) if getattr(la, "stateful", False)]
        if stateful:
            return None, f"stateful layer '{stateful[0]}' keeps its state between predict calls"
        try:
            proto = lower_model(model, opset=opset or DEFAULT_OPSET, check=False)
            return OnnxSession(proto, device=device), None
        except KConvertError as e:
            return None, str(e)


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "_graph") and getattr(layer, "_graph", None) is not None:
            yield from _all_layers(layer)
        inner = getattr(layer, "layer", None) or getattr(layer, "forward_layer", None)
        if inner is not None:
            yield inner


def _weights_key(model) -> tuple:
    return tuple(w.stamp for w in model.weights)


def predict_onnx(session, feeds: list[np.ndarray], batch_size: int | None) -> list[np.ndarray]:
    """Run the session over the inputs in chunks of `batch_size` (32 as in Keras when not given)."""
    return session.predict(feeds, batch_size=batch_size or 32)
