"""Per-dialect rewriting of layer config entries into the Keras 2 (tf.keras) form the layers take.

`normalize_entry(entry, major)` is called on every `{'class_name', 'config'}` entry before the layer class
is looked up. Keras 2 entries pass through unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

# (major version) -> list of rewriters applied in order; each takes and returns an entry dict
NORMALIZERS: dict[int, list[Callable[[dict], dict]]] = {}


def normalize_entry(entry: dict, major: int) -> dict:
    for fn in NORMALIZERS.get(major, []):
        entry = fn(entry)
    return entry
