"""NaN/Inf in loaded weights: a corrupted file whose payload still parses (bit flips in float data) is noticed.

By default each offending weight set is reported in one `KConvertWarning`; with `strict=True` it is a
`NonFiniteWeightsError` naming the file and the first layer. Arrays are scanned in blocks, so the check holds no
copy of a large weight.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import numpy as np

from ..errors import KConvertWarning, NonFiniteWeightsError

__all__ = ["check_finite", "nonfinite_count"]

_BLOCK = 1 << 18  # values per scanned block (a 256 KB mask at a time)


def nonfinite_count(array) -> int:
    """How many NaN/Inf values a float array holds (0 for integer arrays)."""
    a = np.asarray(array)
    if a.dtype.kind not in "fc" or a.size == 0:
        return 0
    flat = a.reshape(-1)
    return int(sum(flat.size - np.count_nonzero(np.isfinite(flat[i:i + _BLOCK])) for i in range(0, flat.size, _BLOCK)))


def check_finite(named: Iterable[tuple[str | None, str, object]], file: str, strict: bool = False) -> None:
    """Warn (or raise with `strict`) when any of the (layer, weight name, array) triples holds NaN or Inf."""
    bad = []
    for layer, name, array in named:
        n = nonfinite_count(array)
        if n:
            bad.append((layer, name, n))
    if not bad:
        return
    listed = ", ".join(f"{name} ({n})" for _, name, n in bad[:5]) + (", ..." if len(bad) > 5 else "")
    message = f"{len(bad)} weight array(s) hold NaN or Inf values: {listed} (a corrupted file?)"
    if strict:
        raise NonFiniteWeightsError(message, file=file, layer=bad[0][0])
    warnings.warn(f"{file}: {message}; pass strict=True to refuse such files", KConvertWarning, stacklevel=3)


def model_weights(model) -> list[tuple[str | None, str, object]]:
    """(layer, weight name, array) for every weight of a model (or layer) that holds its value already."""
    layers = getattr(model, "layers", None) or [model]
    return [(layer.name, w.name, w.value) for layer in layers for w in getattr(layer, "weights", [])
            if not w.deferred]
