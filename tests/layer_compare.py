"""Helpers for the layer tests: build a layer in tf_keras and in kconvert with the same weights, compare."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import numpy as np
from conftest import assert_close

import kconvert.layers


def _json_default(o):
    if isinstance(o, (np.ndarray, np.generic)):
        return o.tolist()
    if isinstance(o, Mapping):  # tf_keras's tracking wrappers (DictWrapper, ListWrapper)
        return dict(o)
    if isinstance(o, (tuple, Sequence)):
        return list(o)
    raise TypeError(f"not JSON serializable: {o!r}")


def json_round_trip(config: dict) -> dict:
    """A config as it reads back from a model JSON file (tuples become lists, numpy scalars floats)."""
    return json.loads(json.dumps(config, default=_json_default))


def random_weights(tf_layer, rng) -> list[np.ndarray]:
    """Random values for a layer's weights, variances kept positive, in get_weights order."""
    out = []
    for w in tf_layer.weights:
        shape = tuple(w.shape)
        if "variance" in w.name or "stddev" in w.name:
            out.append(rng.uniform(0.5, 2.0, shape).astype(np.float32))
        else:
            out.append(rng.normal(0.0, 1.0, shape).astype(np.float32))
    return out


def _to_tf(x):
    import tensorflow as tf

    if isinstance(x, (list, tuple)):
        return [tf.constant(v) for v in x]
    return tf.constant(x)


def _shapes(x):
    if isinstance(x, (list, tuple)):
        return [(None, *np.shape(v)[1:]) for v in x]
    return (None, *np.shape(x)[1:])


def compare_layer(tf_layer, inputs, rng=None, call_kwargs: dict | None = None, set_random: bool = True,
                  rtol_scale: float = 1.0, from_unbuilt: bool = False):
    """Run `tf_layer` and its kconvert twin (deserialized from tf_layer's JSON config) on `inputs`.

    Asserts equal outputs, equal configs after building, equal weight names/shapes and output shapes.
    Returns (kconvert layer, kconvert output, tf_keras output).
    """
    call_kwargs = call_kwargs or {}
    unbuilt = json_round_trip(tf_layer.get_config())
    tf_layer(_to_tf(inputs))  # builds inside the layer's name scope (weight names 'layer/gamma:0')
    if set_random and tf_layer.weights:
        tf_layer.set_weights(random_weights(tf_layer, rng if rng is not None else np.random.default_rng(0)))
    weights = tf_layer.get_weights()
    config = unbuilt if from_unbuilt else json_round_trip(tf_layer.get_config())
    ours = kconvert.layers.deserialize({"class_name": type(tf_layer).__name__, "config": config})
    ours._maybe_build(_shapes(inputs))
    assert [w.name for w in ours.weights] == [w.name for w in tf_layer.weights]
    assert [w.trainable for w in ours.weights] == [w.trainable for w in tf_layer.weights]
    ours.set_weights(weights)
    ref = tf_layer(_to_tf(inputs), **call_kwargs)
    ref = [r.numpy() for r in ref] if isinstance(ref, (list, tuple)) else ref.numpy()
    out = ours(inputs, **call_kwargs)
    assert np.asarray(out).dtype == np.asarray(ref).dtype, (np.asarray(out).dtype, np.asarray(ref).dtype)
    assert_close(out, ref, rtol_scale, what=type(tf_layer).__name__)
    assert json_round_trip(ours.get_config()) == json_round_trip(tf_layer.get_config())
    tf_shape = tf_layer.compute_output_shape(_shapes(inputs))
    tf_shape = tuple(tf_shape.as_list()) if hasattr(tf_shape, "as_list") else tuple(tf_shape)
    assert tuple(ours.compute_output_shape(_shapes(inputs))) == tf_shape
    return ours, out, ref


def compare_unbuilt_config(tf_layer, ours):
    """Configs of two freshly constructed (unbuilt) layers agree after a JSON round trip."""
    assert json_round_trip(ours.get_config()) == json_round_trip(tf_layer.get_config())
