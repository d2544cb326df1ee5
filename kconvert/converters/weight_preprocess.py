"""Rewriting saved weight arrays written by other Keras versions/backends into this layer's layout.

`preprocess_weights(layer, arrays, original_keras_version, original_backend)` runs on each layer's saved
arrays before they are assigned (Keras's `preprocess_weights_for_loading`). Keras 2 arrays pass through.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

# rewriters tried in order: fn(layer, arrays, original_keras_version, original_backend) -> arrays
PREPROCESSORS: list[Callable] = []


def preprocess_weights(layer, arrays: Sequence[np.ndarray], original_keras_version: str | None,
                       original_backend: str | None) -> list[np.ndarray]:
    arrays = list(arrays)
    for fn in PREPROCESSORS:
        arrays = fn(layer, arrays, original_keras_version, original_backend)
    return arrays
