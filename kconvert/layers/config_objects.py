"""Regularizers and constraints as configuration: kept, and serialized, in tf.keras's form.

Inference does not use them; the training runtime interprets them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_REGULARIZER_NAMES = {"l1": ("L1", {"l1": 0.01}), "l2": ("L2", {"l2": 0.01}),
                      "l1_l2": ("L1L2", {"l1": 0.01, "l2": 0.01})}
# name -> (class name, tf.keras default config)
_CONSTRAINT_NAMES = {"max_norm": ("MaxNorm", {"max_value": 2, "axis": 0}), "non_neg": ("NonNeg", {}),
                     "unit_norm": ("UnitNorm", {"axis": 0}),
                     "min_max_norm": ("MinMaxNorm", {"min_value": 0.0, "max_value": 1.0, "rate": 1.0, "axis": 0}),
                     "radial_constraint": ("RadialConstraint", {})}


def _f32(v: float) -> float:
    # tf.keras stores regularization factors as float32 and serializes them back as Python floats
    return float(np.float32(v))


def serialize_regularizer(identifier: Any) -> Any:
    """tf.keras config of a regularizer argument (None, a name like 'l2', or a config dict)."""
    if identifier is None or isinstance(identifier, dict):
        return identifier
    if isinstance(identifier, str):
        if identifier not in _REGULARIZER_NAMES:
            raise ValueError(f"unknown regularizer '{identifier}'")
        cls, cfg = _REGULARIZER_NAMES[identifier]
        return {"module": "keras.regularizers", "class_name": cls, "config": {k: _f32(v) for k, v in cfg.items()},
                "registered_name": None}
    if hasattr(identifier, "get_config"):
        return {"module": "keras.regularizers", "class_name": type(identifier).__name__,
                "config": identifier.get_config(), "registered_name": None}
    raise ValueError(f"cannot interpret {identifier!r} as a regularizer")


def serialize_constraint(identifier: Any) -> Any:
    """tf.keras config of a constraint argument."""
    if identifier is None or isinstance(identifier, dict):
        return identifier
    if isinstance(identifier, str):
        if identifier not in _CONSTRAINT_NAMES:
            raise ValueError(f"unknown constraint '{identifier}'")
        cls, cfg = _CONSTRAINT_NAMES[identifier]
        return {"module": "keras.constraints", "class_name": cls, "config": dict(cfg), "registered_name": None}
    if hasattr(identifier, "get_config"):
        return {"module": "keras.constraints", "class_name": type(identifier).__name__,
                "config": identifier.get_config(), "registered_name": None}
    raise ValueError(f"cannot interpret {identifier!r} as a constraint")


def weight_args_config(layer: Any, names: tuple[str, ...], activity: bool = False,
                       extra_initializers: tuple[str, ...] = ()) -> dict:
    """The `<name>_initializer/_regularizer/_constraint` config keys of a layer's weights, in tf.keras order.

    tf.keras lists all initializers, then the regularizers (and `activity_regularizer`), then the constraints.
    """
    from . import initializers

    config = {f"{n}_initializer": initializers.serialize(getattr(layer, f"{n}_initializer"))
              for n in (*names, *extra_initializers)}
    config.update({f"{n}_regularizer": serialize_regularizer(getattr(layer, f"{n}_regularizer")) for n in names})
    if activity:
        config["activity_regularizer"] = serialize_regularizer(layer.activity_regularizer)
    config.update({f"{n}_constraint": serialize_constraint(getattr(layer, f"{n}_constraint")) for n in names})
    return config
