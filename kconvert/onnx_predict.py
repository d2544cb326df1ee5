"""`Model.predict`'s default engine: the model lowered to ONNX and run by onnxruntime, cached per weights version."""

from __future__ import annotations

import threading
import warnings

import numpy as np

from .errors import KConvertError

RUNTIMES = ("onnx", "numpy")


class OnnxPredictor:
    """Holds one model's onnxruntime session; re-exports when the graph or any weight changes.

    A model the lowering cannot express (Python control flow on values in a custom layer) is predicted by the
    numpy engine instead, with one warning naming the reason.
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

        try:
            proto = lower_model(model, opset=opset or DEFAULT_OPSET, check=False)
            session = OnnxSession(proto, device=device)
            session.state_slots = _state_slots(model, session)
            return session, None
        except KConvertError as e:
            return None, str(e)


_PREDICTOR_LOCK = threading.Lock()


def predictor_for(model) -> OnnxPredictor:
    """The model's OnnxPredictor, made once even when several threads predict at the same time."""
    predictor = model._predictor
    if predictor is None:
        with _PREDICTOR_LOCK:
            if model._predictor is None:
                model._predictor = OnnxPredictor()
            predictor = model._predictor
    return predictor


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


def predict_onnx(session, feeds: list[np.ndarray], batch_size: int | None) -> list[np.ndarray] | None:
    """Run the session over the inputs in chunks of `batch_size` (32 as in Keras when not given).

    A stateful model runs batch after batch of its fixed size, feeding each RNN's state in and storing the
    state that comes out, as Keras's stateful predict does; None when the inputs do not divide into its batch
    (the numpy engine then raises Keras's error).
    """
    slots = getattr(session, "state_slots", None)
    if not slots:
        return session.predict(feeds, batch_size=batch_size or 32)
    batch = session.fixed_batch()
    n = len(feeds[0])
    if not batch or n % batch:
        return None
    names = session.input_names[:len(feeds)]
    chunks = []
    for start in range(0, n, batch):
        run_feeds = {name: x[start:start + batch] for name, x in zip(names, feeds)}
        for slot in slots:
            run_feeds[slot.input] = slot.current(batch)
        outs = dict(zip(session.output_names, session.run(run_feeds)))
        for slot in slots:
            slot.store(outs.pop(slot.output))
        chunks.append(list(outs.values()))
    return [np.concatenate([c[i] for c in chunks]) for i in range(len(chunks[0]))]


class _StateSlot:
    """One recurrent state of a stateful layer: the graph input it is fed to and the output it comes back on."""

    def __init__(self, input_name: str, output_name: str, layer, index: int):
        self.input, self.output, self.layer, self.index = input_name, output_name, layer, index

    def current(self, batch: int) -> np.ndarray:
        states = getattr(self.layer, "_states", None)
        if states is None:
            return np.zeros((batch, self.layer.units), np.float32)
        return np.ascontiguousarray(states[self.index], dtype=np.float32)

    def store(self, value: np.ndarray) -> None:
        if self.layer._states is None:
            self.layer._states = [np.zeros_like(value) for _ in range(self.layer.n_states)]
        self.layer._states[self.index] = np.array(value, copy=True)


def _state_slots(model, session) -> list[_StateSlot]:
    """The state inputs the lowering added (`<layer>/[forward_|backward_]state_<h|c>_in`), matched to layers."""
    import re

    by_name = {la.name: la for la in _all_layers(model)}
    slots = []
    for name in session.input_names:
        owner_name, _, tail = name.rpartition("/")
        match = re.fullmatch(r"(forward_|backward_)?state_([hc])_in", tail)
        if not match or owner_name not in by_name:
            continue
        owner = by_name[owner_name]
        layer = getattr(owner, f"{match.group(1)}layer") if match.group(1) else owner
        slots.append(_StateSlot(name, name[:-len("_in")] + "_out", layer, "hc".index(match.group(2))))
    return slots
