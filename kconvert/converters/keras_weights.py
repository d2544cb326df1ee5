"""Weights from a Keras HDF5 structure onto a model's layers, and back, with Keras's exact semantics."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from ..errors import WeightsError
from ..layers import Layer
from .weight_preprocess import preprocess_weights


def legacy_weights(layer: Layer) -> list:
    """A layer's weights in the order Keras HDF5 files store them: trainable, then non-trainable."""
    return layer.trainable_weights + layer.non_trainable_weights


def weight_groups(layers: Sequence[Layer]) -> list[tuple[str, list[tuple[str, np.ndarray]]]]:
    """(layer name, [(weight name, array)]) per layer, as `model_weights` holds them; a deferred weight is passed
    as itself, for the writer to `produce()` when it writes that dataset."""
    return [(la.name, [(w.name, w if w.deferred else w.value) for w in legacy_weights(la)]) for la in layers]


def _assign(layer: Layer, arrays: Sequence[np.ndarray], file, saved_name: str,
            skip_mismatch: bool = False) -> None:
    own = legacy_weights(layer)
    for w, value in zip(own, arrays):
        value = np.asarray(value)
        if value.shape != w.shape:
            if value.size == int(np.prod(w.shape)) and value.ndim == 0:
                value = value.reshape(w.shape)
            elif skip_mismatch:
                warnings.warn(f"{file}: skipping weight '{w.name}' of layer '{layer.name}': shape {value.shape} "
                              f"in the file, {w.shape} in the model", stacklevel=3)
                continue
            else:
                raise WeightsError(f"weight '{w.name}' has shape {w.shape} in the model but {value.shape} in the "
                                   f"file (saved layer '{saved_name}')", file=file, layer=layer.name)
        w.assign(value)


def _saved_arrays(layer: Layer, saved: list, version, backend) -> list[np.ndarray]:
    return preprocess_weights(layer, [a for _, a in saved], version, backend)


def load_topological(layers: Sequence[Layer], saved: dict[str, list], layer_names: Sequence[str],
                     file=None, original_keras_version: str | None = None,
                     original_backend: str | None = None) -> None:
    """Keras's default `load_weights`: pair layers with weights and saved layers with weights by position.

    Arrays written by another Keras version or backend are first rewritten (`weight_preprocess`).
    """
    targets = [la for la in layers if legacy_weights(la)]
    sources = [n for n in layer_names if saved.get(n)]
    if len(targets) != len(sources):
        raise WeightsError(f"the file has weights for {len(sources)} layers but the model has {len(targets)} "
                           f"layers with weights", file=file)
    converted = []
    for layer, name in zip(targets, sources):
        arrays = _saved_arrays(layer, saved[name], original_keras_version, original_backend)
        if len(arrays) != len(legacy_weights(layer)):
            raise WeightsError(f"expects {len(legacy_weights(layer))} weights, but the saved layer '{name}' has "
                               f"{len(arrays)}", file=file, layer=layer.name)
        converted.append(arrays)
    for layer, name, arrays in zip(targets, sources, converted):
        _assign(layer, arrays, file, name)


def load_by_name(layers: Sequence[Layer], saved: dict[str, list], file=None, skip_mismatch: bool = False,
                 original_keras_version: str | None = None, original_backend: str | None = None) -> None:
    """`load_weights(by_name=True)`: top-level layers take the saved weights of the layer with their name."""
    for layer in layers:
        if layer.name not in saved:
            continue
        arrays = _saved_arrays(layer, saved[layer.name], original_keras_version, original_backend)
        own = legacy_weights(layer)
        if len(arrays) != len(own):
            if skip_mismatch:
                warnings.warn(f"{file}: skipping layer '{layer.name}': it expects {len(own)} weights, the file has "
                              f"{len(arrays)}", stacklevel=2)
                continue
            raise WeightsError(f"expects {len(own)} weights, but the saved layer has {len(arrays)}",
                               file=file, layer=layer.name)
        _assign(layer, arrays, file, layer.name, skip_mismatch)
